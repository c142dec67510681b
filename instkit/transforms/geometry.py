"""Geometry on compact masks: polygons, crop-local bitmaps and keypoints moved by a homography.

A geometric transform that maps the plane projectively (flips, transposes, 90-degree turns,
rotations, affine maps, perspective, resizes, crops, pads) is one 3x3 matrix. instkit learns it
from albumentationsx itself: control points go through the transform as keypoints, with the
image, and the matrix that maps them is solved for (and checked on spare points). Then:

- polygon vertices are mapped exactly (pixel-edge coordinates, see ``instkit.masks``) and
  clipped to the output frame; a polygon stays a polygon;
- a bitmap is resampled only over the output window its box maps to, with nearest-neighbour
  sampling at the same positions albumentationsx's dense mask warp samples: an axis-aligned map
  (flip, crop, pad, resize) by index arithmetic, anything else by ``cv2.warpAffine`` /
  ``cv2.warpPerspective`` on the crop;
- keypoints (albumentationsx's pixel-centre ``xy``) are mapped by the same matrix.

Nothing here allocates more than one object's window at a time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

from instkit.masks import BitmapMask, MaskItem, PolygonMask, tight_bitmap

_EMPTY = BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0))
# Largest distance (px) of a check point from where the solved map puts it (albumentationsx
# returns keypoints as float32).
_RESIDUAL_PX = 0.02


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Homography:
    """A projective map between two frames, in pixel-edge coordinates.

    ``matrix`` maps ``(x, y, 1)`` of the input frame (pixel ``(r, c)`` covers ``[c, c+1)`` x
    ``[r, r+1)``) to the output frame of size ``out_size`` ``(H, W)``.
    """

    matrix: np.ndarray
    out_size: tuple[int, int]

    @property
    def centre_matrix(self) -> np.ndarray:
        """The same map in pixel-centre coordinates (OpenCV's and albumentationsx's keypoints)."""
        return _shift(-0.5, -0.5) @ self.matrix @ _shift(0.5, 0.5)

    @property
    def is_affine(self) -> bool:
        m = self.matrix
        return m[2, 0] == 0.0 and m[2, 1] == 0.0 and m[2, 2] == 1.0

    @property
    def is_identity(self) -> bool:
        return bool((self.matrix == np.eye(3)).all())

    @property
    def reflects(self) -> bool:
        """True when the map mirrors the plane (an odd number of reflections)."""
        m = self.matrix
        return float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) < 0

    def axis_aligned(self) -> tuple[float, float, float, float] | None:
        """``(sx, tx, sy, ty)`` when the map is ``x' = sx x + tx, y' = sy y + ty``, else None."""
        m = self.matrix
        if not self.is_affine or abs(m[0, 1]) > 1e-9 or abs(m[1, 0]) > 1e-9:
            return None
        return float(m[0, 0]), float(m[0, 2]), float(m[1, 1]), float(m[1, 2])

    @classmethod
    def identity(cls, size: tuple[int, int]) -> Homography:
        return cls(np.eye(3), (int(size[0]), int(size[1])))

    @classmethod
    def scale_translate(cls, sx: float, tx: float, sy: float, ty: float,
                        out_size: tuple[int, int]) -> Homography:
        return cls(np.array([[sx, 0.0, tx], [0.0, sy, ty], [0.0, 0.0, 1.0]]),
                   (int(out_size[0]), int(out_size[1])))


def control_points(size: tuple[int, int]) -> np.ndarray:
    """Pixel-centre points that pin a homography of a frame of ``size`` and check it.

    The four corner pixels' centres determine it; three inner points check it."""
    h, w = size
    xm, ym = (w - 1) / 2.0, (h - 1) / 2.0
    return np.array([
        [0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0],
        [xm, ym], [(w - 1) / 4.0, 3 * (h - 1) / 4.0], [3 * (w - 1) / 4.0, (h - 1) / 3.0],
    ], dtype=np.float64)


# Solved maps by their control points: a pipeline draws the same few maps again and again
# (a flip, a resize from each common image size), and a solve costs more than the warp.
_SOLVED: dict[tuple[bytes, bytes, tuple[int, int]], Homography | None] = {}
_SOLVED_MAX = 4096


def solve_homography(src_centre: np.ndarray, dst_centre: np.ndarray,
                     out_size: tuple[int, int]) -> Homography | None:
    """The homography that maps the control points, or None if no homography maps them all
    (the transform is not projective: elastic, grid distortion, ...)."""
    src = np.asarray(src_centre, np.float64)
    dst = np.asarray(dst_centre, np.float64)
    if len(src) < 4 or len(dst) != len(src) or not np.isfinite(dst).all():
        return None
    key = (src.tobytes(), dst.tobytes(), (int(out_size[0]), int(out_size[1])))
    if key in _SOLVED:
        return _SOLVED[key]
    solved = _solve(src, dst, out_size)
    if solved is not None:
        solved.matrix.setflags(write=False)  # shared by every later draw of the same map
    if len(_SOLVED) >= _SOLVED_MAX:
        _SOLVED.pop(next(iter(_SOLVED)))  # oldest first
    _SOLVED[key] = solved
    return solved


def resize_map(size: tuple[int, int], out_size: tuple[int, int]) -> Homography:
    """The map of a resize from ``size`` to ``out_size`` (H, W): what ``solve_homography``
    finds for it, without the control points (each scale the correctly rounded quotient, as
    the snapped solution's rational is)."""
    (h, w), (oh, ow) = size, out_size
    return Homography.scale_translate(ow / w, 0.0, oh / h, 0.0, (oh, ow))


def _solve(src: np.ndarray, dst: np.ndarray, out_size: tuple[int, int]) -> Homography | None:
    if np.array_equal(src, dst):  # not applied this time: the identity, nothing to solve
        return Homography.identity(out_size)
    # four corners pin it (OpenCV's direct solve); the other points check it
    centre = cv2.getPerspectiveTransform(src[:4].astype(np.float32), dst[:4].astype(np.float32))
    if abs(centre[2, 2]) < 1e-12:
        return None
    centre = centre / centre[2, 2]
    mapped = _apply(centre, src)
    if not np.isfinite(mapped).all() or np.abs(mapped - dst).max() > _RESIDUAL_PX:
        return None
    matrix = _shift(0.5, 0.5) @ centre @ _shift(-0.5, -0.5)
    limit = int(max(np.abs(src).max(), np.abs(dst).max(), 1.0)) + 2
    return Homography(_snap(matrix, limit), (int(out_size[0]), int(out_size[1])))


def _snap(matrix: np.ndarray, limit: int) -> np.ndarray:
    """Remove the float32 noise albumentationsx's keypoints carry from an axis-aligned map.

    Such a map (flip, crop, pad, resize, and their products) has rational entries: a scale
    ``p / q`` with ``q`` at most the frame size, and a shift that is a multiple of ``1 / q``.
    Snapping them makes the index arithmetic of ``warp_bitmap`` sample exactly the pixels that
    OpenCV's resize samples. Other maps are only cleared of near-zero entries."""
    out = matrix.copy()
    out[np.abs(out) < 1e-7] = 0.0
    if abs(out[2, 0]) < 1e-9 and abs(out[2, 1]) < 1e-9 and abs(out[2, 2] - 1.0) < 1e-9:
        out[2] = (0.0, 0.0, 1.0)
    if abs(out[0, 1]) > 1e-6 or abs(out[1, 0]) > 1e-6 or np.abs(out[2, :2]).max() > 1e-9:
        return out
    out[0, 1] = out[1, 0] = 0.0
    out[2] = (0.0, 0.0, 1.0)
    for axis in (0, 1):
        scale = Fraction(float(out[axis, axis])).limit_denominator(limit)
        if abs(float(scale) - out[axis, axis]) > 1e-6 * max(1.0, abs(float(scale))):
            continue
        out[axis, axis] = float(scale)
        step = Fraction(1, scale.denominator)
        shift = Fraction(round(out[axis, 2] / float(step))) * step
        if abs(float(shift) - out[axis, 2]) < 2e-3:
            out[axis, 2] = float(shift)
    return out


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if pts.size == 0:
        return pts.copy()
    out = pts @ matrix[:2, :2].T + matrix[:2, 2]
    if matrix[2, 0] != 0.0 or matrix[2, 1] != 0.0 or matrix[2, 2] != 1.0:
        w = pts @ matrix[2, :2] + matrix[2, 2]
        out = out / w[:, None]
    return out


def map_points_edge(h: Homography, points: np.ndarray) -> np.ndarray:
    return _apply(h.matrix, points)


def map_points_centre(h: Homography, points: np.ndarray) -> np.ndarray:
    return _apply(h.centre_matrix, points)


# --- polygons ---------------------------------------------------------------------------------


def clip_part(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Sutherland-Hodgman clip of one polygon part (``(P, 2)``) to ``[0, W] x [0, H]``.

    The clip region is convex, so the result covers exactly the part's pixels inside the frame
    (a concave part may gain edges along the frame border, which enclose no area)."""
    pts = np.asarray(points, np.float64)
    for axis, limit, keep_low in ((0, 0.0, False), (0, width, True), (1, 0.0, False),
                                  (1, height, True)):
        n = len(pts)
        if n == 0:
            break
        values = pts[:, axis]
        inside = values <= limit if keep_low else values >= limit
        if inside.all():
            continue
        if not inside.any():
            return np.zeros((0, 2))
        nxt = np.empty_like(pts)
        nxt[:-1], nxt[-1] = pts[1:], pts[0]
        nxt_inside = np.empty_like(inside)
        nxt_inside[:-1], nxt_inside[-1] = inside[1:], inside[0]
        crossing = inside != nxt_inside
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (limit - values) / (nxt[:, axis] - values)
            cut = pts + t[:, None] * (nxt - pts)
        # each vertex emits itself (if inside), then the crossing of its edge (if any)
        candidates = np.stack([pts, cut], axis=1).reshape(-1, 2)
        keep = np.stack([inside, crossing], axis=1).reshape(-1)
        pts = candidates[keep]
        pts[np.flatnonzero(keep) % 2 == 1, axis] = limit  # crossings lie on the line exactly
    return pts


def _mask_matrix(h: Homography) -> np.ndarray:
    """The map polygons follow, so that they land on the pixels albumentationsx's dense masks do.

    albumentationsx resizes masks with OpenCV's ``INTER_NEAREST``, which samples source pixel
    ``floor(j * in / out)`` for output pixel ``j``: not centre-aligned. For an axis with a
    positive scale ``s != 1`` (``1 / s = p / q`` in lowest terms) that puts the mask, on average,
    ``0.5 - s / (2q)`` output pixels right of (below) the exact map. Polygons take the same
    offset, so the two mask forms and albumentationsx's masks agree; every other map (flips,
    crops, pads, rotations, affine, perspective: centre-aligned sampling) is used as it is."""
    aligned = h.axis_aligned()
    if aligned is None:
        return h.matrix
    matrix = h.matrix.copy()
    for axis, scale in ((0, aligned[0]), (1, aligned[2])):
        if scale > 0 and abs(scale - 1.0) > 1e-12:
            matrix[axis, 2] += 0.5 - scale / (2 * _inverse_denominator(scale))
    return matrix


@functools.lru_cache(maxsize=4096)
def _inverse_denominator(scale: float) -> int:
    """``q`` of ``1 / scale = p / q`` in lowest terms (a pipeline meets the same few scales)."""
    return (1 / Fraction(scale).limit_denominator(1 << 20)).denominator


def warp_polygons(items: list[PolygonMask], h: Homography, sampling: str = "opencv"
                  ) -> list[tuple[PolygonMask | None, np.ndarray]]:
    """``warp_polygon`` for many polygons with one matrix product for all their vertices.

    ``sampling="opencv"`` places them where albumentationsx's masks land (``_mask_matrix``);
    ``"centre"`` maps them exactly (instkit's own Mosaic and CopyAndPaste, whose images are
    resampled centre-aligned)."""
    if not items:
        return []
    parts = [part for item in items for part in item.parts]
    counts = np.array([part.size // 2 for part in parts])
    matrix = _mask_matrix(h) if sampling == "opencv" else h.matrix
    mapped = _apply(matrix, np.concatenate(parts).reshape(-1, 2))
    out_h, out_w = h.out_size
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo = np.minimum.reduceat(mapped, starts, axis=0)
    hi = np.maximum.reduceat(mapped, starts, axis=0)
    inside = (lo[:, 0] >= 0) & (lo[:, 1] >= 0) & (hi[:, 0] <= out_w) & (hi[:, 1] <= out_h)
    first_parts = np.cumsum([0] + [len(item.parts) for item in items[:-1]])
    extents = np.concatenate([np.minimum.reduceat(lo, first_parts, axis=0),
                              np.maximum.reduceat(hi, first_parts, axis=0)], axis=1)
    results: list[tuple[PolygonMask | None, np.ndarray]] = []
    p = 0
    for item, extent in zip(items, extents, strict=True):
        n = len(item.parts)
        kept: list[np.ndarray] = []
        for q in range(p, p + n):
            part = mapped[starts[q] : starts[q] + counts[q]]
            if not inside[q]:
                if hi[q, 0] <= 0 or hi[q, 1] <= 0 or lo[q, 0] >= out_w or lo[q, 1] >= out_h:
                    continue
                part = clip_part(part, out_w, out_h)
                if len(part) < 3 or _area(part) <= 1e-9:
                    continue
            kept.append(part.reshape(-1))
        results.append((PolygonMask._trusted(tuple(kept)) if kept else None, extent))
        p += n
    return results


def warp_polygon(item: PolygonMask, h: Homography, sampling: str = "opencv"
                 ) -> tuple[PolygonMask | None, np.ndarray]:
    """Map and clip a polygon; returns the clipped polygon (None when nothing is left in the
    frame) and the unclipped ``xyxy`` extent of the mapped polygon (for visibility)."""
    return warp_polygons([item], h, sampling)[0]


def _area(part: np.ndarray) -> float:
    x, y = part[:, 0], part[:, 1]
    cross = float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]))
    return 0.5 * abs(cross + float(x[-1] * y[0] - y[-1] * x[0]))


# --- bitmaps ----------------------------------------------------------------------------------


def bitmap_extent(item: BitmapMask, h: Homography) -> np.ndarray:
    """Unclipped ``xyxy`` extent of the mapped bitmap box (its four corners, pixel edges)."""
    y0, x0 = item.offset
    bh, bw = item.bitmap.shape
    corners = np.array([[x0, y0], [x0 + bw, y0], [x0 + bw, y0 + bh], [x0, y0 + bh]], np.float64)
    mapped = map_points_edge(h, corners)
    return np.array([mapped[:, 0].min(), mapped[:, 1].min(), mapped[:, 0].max(),
                     mapped[:, 1].max()])


def _axis_sources(start: int, stop: int, scale: float, shift: float, length: int,
                  sampling: str = "opencv") -> np.ndarray:
    """Source index sampled for each output index in ``[start, stop)`` along one axis of the
    map ``x' = scale * x + shift`` (pixel edges), as OpenCV's nearest resize and a flip sample
    it; -1 where the output pixel falls outside the source."""
    j = np.arange(start, stop, dtype=np.float64)
    if scale > 0 and sampling == "centre":
        src = np.floor((j + 0.5 - shift) / scale + 1e-9)
    elif scale > 0:
        # cv2.resize(INTER_NEAREST) samples floor(j * (1 / (out / in))) of a source that
        # starts at -shift / scale (a crop offset): the same double arithmetic, then the offset.
        inverse = 1.0 / float(Fraction(scale).limit_denominator(1 << 20))
        origin = -shift * inverse
        if abs(origin - round(origin)) < 1e-6:
            src = np.floor(j * inverse) + round(origin)
        else:
            src = np.floor((j - shift) * inverse + 1e-9)
    else:
        src = np.round((j + 0.5 - shift) / scale - 0.5)
    src = src.astype(np.int64)
    src[(src < 0) | (src >= length)] = -1
    return src


def warp_bitmap(item: BitmapMask, h: Homography, interpolation: int = cv2.INTER_NEAREST,
                sampling: str = "opencv") -> tuple[BitmapMask, np.ndarray]:
    """Resample a bitmap over the output window its box maps to; returns the tight result and
    the unclipped extent of its mapped box."""
    extent = bitmap_extent(item, h)
    bh, bw = item.bitmap.shape
    if bh == 0 or bw == 0:
        return _EMPTY, extent
    out_h, out_w = h.out_size
    x0 = max(0, int(np.floor(extent[0])) - 1)
    y0 = max(0, int(np.floor(extent[1])) - 1)
    x1 = min(out_w, int(np.ceil(extent[2])) + 1)
    y1 = min(out_h, int(np.ceil(extent[3])) + 1)
    if x1 <= x0 or y1 <= y0:
        return _EMPTY, extent
    oy, ox = item.offset
    aligned = h.axis_aligned()
    if aligned is not None and interpolation == cv2.INTER_NEAREST:
        sx, tx, sy, ty = aligned
        cols = _axis_sources(x0, x1, sx, tx, ox + bw, sampling) - ox
        rows = _axis_sources(y0, y1, sy, ty, oy + bh, sampling) - oy
        cols[(cols < 0) | (cols >= bw)] = -1
        rows[(rows < 0) | (rows >= bh)] = -1
        col_at, row_at = np.flatnonzero(cols >= 0), np.flatnonzero(rows >= 0)
        if not col_at.size or not row_at.size:
            return _EMPTY, extent
        window = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        # the map is monotonic, so the sampled rows and columns are each one run: rows then
        # columns by plain gathers (a 2-D ``ix_`` gather is about 6x slower)
        r0, r1, c0, c1 = row_at[0], row_at[-1] + 1, col_at[0], col_at[-1] + 1
        window[r0:r1, c0:c1] = item.bitmap[rows[r0:r1]][:, cols[c0:c1]]
    else:
        local = _shift(-x0, -y0) @ h.centre_matrix @ _shift(ox, oy)
        src = np.ascontiguousarray(item.bitmap, dtype=np.uint8)
        if h.is_affine:
            window = cv2.warpAffine(src, local[:2], (x1 - x0, y1 - y0), flags=interpolation,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:
            window = cv2.warpPerspective(src, local, (x1 - x0, y1 - y0), flags=interpolation,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return tight_bitmap(window, (y0, x0)), extent


def warp_item(item: MaskItem, h: Homography, sampling: str = "opencv"
              ) -> tuple[MaskItem | None, np.ndarray]:
    """Map one compact mask; polygons stay polygons, the rest become tight bitmaps.

    Returns ``(item or None when nothing is left in the frame, unclipped extent xyxy)``."""
    if isinstance(item, PolygonMask):
        return warp_polygon(item, h, sampling)
    if not isinstance(item, BitmapMask):
        raise TypeError(f"warp_item takes polygons and bitmaps, got {type(item).__name__}")
    out, extent = warp_bitmap(item, h, sampling=sampling)
    return (None if out.bitmap.size == 0 else out), extent


def visible_fraction(extent: np.ndarray, size: tuple[int, int]) -> float:
    """Share of an unclipped box that lies inside a frame of ``size`` (H, W)."""
    h, w = size
    full = max(0.0, extent[2] - extent[0]) * max(0.0, extent[3] - extent[1])
    if full <= 0:
        return 0.0
    cw = max(0.0, min(extent[2], w) - max(extent[0], 0.0))
    ch = max(0.0, min(extent[3], h) - max(extent[1], 0.0))
    return cw * ch / full


__all__ = [
    "Homography",
    "bitmap_extent",
    "clip_part",
    "control_points",
    "map_points_centre",
    "map_points_edge",
    "resize_map",
    "solve_homography",
    "visible_fraction",
    "warp_bitmap",
    "warp_item",
    "warp_polygon",
    "warp_polygons",
]

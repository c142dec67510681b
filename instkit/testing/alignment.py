"""Alignment checks for instance-segmentation transforms (public API).

``check_alignment(transform, samples=..., max_examples=...)`` runs a transform on given samples
and on hypothesis-generated ones and reports every violated invariant with a shrunk example and
the seed that reproduces it (``violation.reproduce(transform)``). ``assert_aligned(before,
transform_or_after)`` does the same for one sample in your own tests.

A transform is any callable ``transform(sample, *, seed=None) -> Sample``. Mixing transforms
(``needs_pool`` and ``with_pool(samples)``, as ``Augment`` with Mosaic / CopyAndPaste) are bound
to a pool, and their partners are probed too.

Row invariants, per annotation id and judged relative to the input (what the input already had is
not the transform's fault):

- ``unique_ids``: ids are unique in the output (also after Mosaic / CopyAndPaste);
- ``label`` / ``crowd``: an id present before and after keeps its label / crowd flag;
- ``box_is_mask_box``: a box the transform produced is its mask's tight box (a row whose box and
  mask geometry both came through unchanged keeps whatever box its input had, e.g. COCO's);
- ``mask_not_empty``: no surviving mask is empty (unless it was empty in the input);
- ``keypoints_inside``: a keypoint the transform moved lies inside the image or has visibility 0;
- ``accounting``: every input id either survives or is recorded in ``meta.drops``, not both;
- ``deterministic``: the same seed gives the same output, and the same rows on the probe images.

Probe invariants (the transform is run on probe images, see ``instkit.testing.probe``):

- ``probe_code``: under each output mask the probe carries that row's code (its own instance, or
  what covered it in the input) on at least ``min_fraction`` of the judged pixels (edge pixels,
  where interpolation blends codes, are not judged);
- ``probe_label``: the instance whose code fills the mask has the row's label and crowd flag (rows
  mixed in from partners included);
- ``probe_keypoint``: each visible keypoint lands on its own marker (on its flip partner's marker
  when the probe shows the image was mirrored);
- ``probe_offset``: the image is not displaced against the masks (the codes agree clearly better
  with the masks when shifted by 2 px or more).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instkit.sample import Sample
from instkit.testing.probe import (
    UNKNOWN,
    Codebook,
    Decoded,
    ProbePool,
    blank,
    decode,
    erode,
    render,
)

Transform = Callable[..., Sample]

#: fraction of a mask's judged pixels that must carry its code
MIN_FRACTION = 0.9
#: fewest judged pixels under a mask for ``probe_code`` to judge it
MIN_PIXELS = 4
#: Chebyshev distance (px) around a keypoint searched for its marker
KEYPOINT_RADIUS = 2
#: fewest mask pixels (covered by one row, away from the border) for ``probe_offset`` to judge
OFFSET_MIN_PIXELS = 300
#: mask pixels (evenly subsampled) that ``probe_offset`` compares under each shift
OFFSET_SAMPLE = 20000
#: ``probe_offset`` is judged only where no mask was enlarged more than this
MAX_OFFSET_SCALE = 1.5
PROBE_INVARIANTS = ("probe_code", "probe_label", "probe_keypoint", "probe_offset")


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with what reproduces it: ``transform(example, seed=seed)``."""

    invariant: str
    message: str
    image_id: int | None = None
    annotation_id: int | None = None
    seed: int | None = None
    example: Sample | None = field(default=None, repr=False, compare=False)
    command: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = [f"image_id={self.image_id}"] if self.image_id is not None else []
        if self.annotation_id is not None:
            where.append(f"annotation id={self.annotation_id}")
        if self.seed is not None:
            where.append(f"seed={self.seed}")
        if self.example is not None:
            where.append(f"{len(self.example.instances)} row(s) in the example")
        return f"[{self.invariant}] {self.message} ({', '.join(where)})"

    def reproduce(self, transform: Transform, *, pool: Sequence[Sample] | None = None,
                  min_fraction: float = MIN_FRACTION) -> list[Violation]:
        """Run the check again on ``example`` with ``seed``: the violations it gives now."""
        if self.example is None:
            raise ValueError("this violation carries no example")
        return check_sample(transform, self.example, self.seed or 0, pool=pool,
                            min_fraction=min_fraction)


@dataclass
class AlignmentReport:
    """What ``check_alignment`` found: ``violations`` (empty when aligned) and counts."""

    violations: list[Violation] = field(default_factory=list)
    samples_checked: int = 0
    instances_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def invariants(self) -> set[str]:
        return {v.invariant for v in self.violations}

    def to_text(self, limit: int = 20) -> str:
        head = (f"alignment: {self.samples_checked} samples, {self.instances_checked} instances, "
                f"{len(self.violations)} violation(s)")
        lines = [head]
        for v in self.violations[:limit]:
            lines.append(f"  {v}")
            if v.command:
                lines.append(f"    reproduce: {v.command}")
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if self.violations:
            raise AssertionError(self.to_text())


# --- row invariants ----------------------------------------------------------------------------


def find_violations(before: Sample, after: Sample, *, seed: int | None = None) -> list[Violation]:
    """Every row invariant ``after`` breaks with respect to its input ``before``."""
    out: list[Violation] = []
    image_id = before.image_id

    def add(invariant: str, message: str, annotation_id: int | None = None) -> None:
        out.append(Violation(invariant, message, image_id, annotation_id, seed, before))

    src, dst = before.instances, after.instances
    ids = [int(i) for i in dst.ids]
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            add("unique_ids", f"id {i} appears more than once after the transform", i)
        seen.add(i)
    source_row = {int(i): r for r, i in enumerate(src.ids)}
    for r, i in enumerate(ids):
        if i in source_row:
            j = source_row[i]
            if int(src.labels[j]) != int(dst.labels[r]):
                add("label", f"label changed from {int(src.labels[j])} to {int(dst.labels[r])}", i)
            if bool(src.iscrowd[j]) != bool(dst.iscrowd[r]):
                add("crowd", f"crowd flag changed from {bool(src.iscrowd[j])} to "
                    f"{bool(dst.iscrowd[r])}", i)
    if dst.masks is not None and len(dst):
        tight = dst.masks.boxes()
        area = dst.masks.area()
        src_tight = src.masks.boxes() if src.masks is not None else None
        src_area = src.masks.area() if src.masks is not None else None
        for r, i in enumerate(ids):
            s: int | None = source_row.get(i)
            unchanged = (s is not None and src_tight is not None
                         and np.array_equal(src_tight[s], tight[r]))
            if area[r] == 0:
                if not (unchanged and src_area is not None and s is not None and src_area[s] == 0):
                    add("mask_not_empty", "the mask is empty", i)
            elif np.allclose(tight[r], dst.boxes[r], atol=1e-3):
                continue
            elif unchanged and s is not None and np.array_equal(src.boxes[s], dst.boxes[r]):
                continue  # box and mask geometry passed through: the input's box is not ours
            else:
                add("box_is_mask_box", f"box {np.round(dst.boxes[r], 2).tolist()} is not the "
                    f"mask's tight box {tight[r].tolist()}", i)
    if dst.keypoints is not None and len(dst):
        h, w = dst.image_size
        kp = dst.keypoints
        outside = (kp[..., 0] < 0) | (kp[..., 0] >= w) | (kp[..., 1] < 0) | (kp[..., 1] >= h)
        bad = outside & (kp[..., 2] > 0)
        for row in np.flatnonzero(bad.any(axis=1)):
            s = source_row.get(ids[row])
            if (s is not None and src.keypoints is not None and src.image_size == dst.image_size
                    and np.array_equal(src.keypoints[s], kp[row])):
                continue  # the input's keypoints, passed through unchanged
            add("keypoints_inside", f"keypoints {np.flatnonzero(bad[row]).tolist()} lie outside "
                f"the {h}x{w} image but are marked visible", ids[row])
    new_drops = after.meta.drops[len(before.meta.drops):]
    dropped = [int(d.annotation_id) for d in new_drops]
    survived = set(ids) & set(source_row)
    for i in source_row:
        if i not in survived and i not in dropped:
            add("accounting", "the instance disappeared without a recorded drop", i)
        if i in survived and i in dropped:
            add("accounting", "the instance survived but is also recorded as dropped", i)
    for i in dropped:
        if i not in source_row:
            add("accounting", "a drop is recorded for an id that was not in the input", i)
    return out


def _same(a: Sample, b: Sample) -> bool:
    return bool(np.array_equal(a.image, b.image)) and a.instances == b.instances


# --- probes ------------------------------------------------------------------------------------


def _pool_of(transform: Any) -> Sequence[Sample] | None:
    if not getattr(transform, "needs_pool", False):
        return None
    pool = getattr(transform, "pool", None)
    return pool if pool is not None and len(pool) > 0 else None


class _Probe:
    """Runs one transform on the probe images of one sample and decodes the outputs."""

    def __init__(self, transform: Transform, sample: Sample, seed: int,
                 pool: Sequence[Sample] | None) -> None:
        self.sample = sample
        self.seed = seed
        self.book = Codebook()
        self.pool = None if pool is None else ProbePool(pool, self.book)
        self.transform = transform
        self.outputs: dict[str | int, Sample] = {}
        self.drew_differently = False

    def _run(self, run: str | int, image: np.ndarray) -> Sample:
        if self.pool is not None:
            self.pool.run = run
        before = list(self.pool.accessed) if self.pool is not None else []
        transform = self.transform
        if self.pool is not None:  # bound afresh each run: a transform may cache its partners
            transform = transform.with_pool(self.pool)  # type: ignore[attr-defined]
        out = transform(self.sample.replace(image=image), seed=self.seed)
        if self.pool is not None and run not in ("white", "black") and \
                self.pool.accessed != before:
            self.drew_differently = True
        self.outputs[run] = out
        return out

    def run(self) -> Decoded:
        self._run("white", blank(self.sample, "white"))
        self._run("black", blank(self.sample, "black"))
        primary = self.book.paint(0, self.sample)
        if self.pool is not None:
            self.pool.paint_accessed()  # codes are fixed before the bit runs
        planes = [self._run(bit, render(primary, bit)).image for bit in range(self.book.bits)]
        white, black = self.outputs["white"].image, self.outputs["black"].image
        return decode(white, black, planes)


def _describe(book: Codebook, code: int) -> str:
    if code == UNKNOWN:
        return ("no probe pixel (padding or fill, or an image the checker could not paint: a "
                "mixing transform must take its partners from with_pool)")
    if code in (0, 1):
        return "background"
    entity = book.entity(code)
    if entity is None:
        return f"an unassigned code {code} (mixed colours)"
    sample = book.samples[entity.source]
    where = "" if entity.source == 0 else f" of pool image {sample.image_id}"
    ann = int(sample.instances.ids[entity.row])
    label = int(sample.instances.labels[entity.row])
    if entity.keypoint >= 0:
        return f"the marker of keypoint {entity.keypoint} of annotation {ann}{where}"
    return f"annotation {ann}{where} (label {label})"


def _flip_partner(sample: Sample, label: int, k: int) -> int:
    table = sample.meta.categories
    if table is None:
        return k
    try:
        pairs = table.flip_pairs(label)
    except (IndexError, KeyError, ValueError):
        return k
    for a, b in pairs:
        if a == k:
            return b
        if b == k:
            return a
    return k


def _orientation(book: Codebook, decoded: Decoded, key: int, inst: Any,
                 rows: Sequence[tuple[int, int]]) -> int:
    """+1 / -1 when the probe's markers show source ``key`` was mapped without / with a mirror,
    0 when it cannot tell.

    Each output row ``(r, source row)`` of the source contributes its markers found near its own
    box (a pool image drawn twice shows its codes twice); positions are centred per row, so the
    fit is of the shared linear part (its determinant's sign is the mirror)."""
    painted = book.sources.get(key)
    if painted is None or painted.marker_codes.size == 0:
        return 0
    src_kp = painted.sample.instances.keypoints
    assert src_kp is not None
    codes = decoded.codes
    h, w = codes.shape
    boxes = inst.boxes
    stacked_a, stacked_b = [], []
    for r, src_row in rows:
        x0, y0, x1, y1 = (float(v) for v in boxes[r])
        margin = max(4.0, 0.25 * max(x1 - x0, y1 - y0))
        ya, yb = max(int(y0 - margin), 0), min(int(y1 + margin) + 1, h)
        xa, xb = max(int(x0 - margin), 0), min(int(x1 + margin) + 1, w)
        if ya >= yb or xa >= xb:
            continue
        # only pure pixels inside a marker: a stray pixel decoded from a blend of other codes can
        # carry any code
        window = np.where(decoded.clean[ya:yb, xa:xb] & ~decoded.blend[ya:yb, xa:xb],
                          codes[ya:yb, xa:xb], UNKNOWN)
        pairs_a, pairs_b = [], []
        for j in np.flatnonzero(painted.marker_codes[src_row] >= 0):
            code = int(painted.marker_codes[src_row, j])
            entity = book.entity(code)
            if entity is None or not entity.intact:
                continue
            ys, xs = np.nonzero(window == code)
            if len(ys) == 0:
                continue
            pairs_a.append(src_kp[src_row, j, :2])
            pairs_b.append((xs.mean() + xa, ys.mean() + ya))
        if len(pairs_a) >= 2:
            a = np.asarray(pairs_a, np.float64)
            b = np.asarray(pairs_b, np.float64)
            stacked_a.append(a - a.mean(axis=0))
            stacked_b.append(b - b.mean(axis=0))
    if not stacked_a:
        return 0
    a = np.concatenate(stacked_a)
    b = np.concatenate(stacked_b)
    if len(a) < 3 or np.linalg.svd(a, compute_uv=False)[-1] < 2.0:  # (nearly) collinear
        return 0
    m, *_ = np.linalg.lstsq(a, b, rcond=None)
    residual = float(np.linalg.norm(a @ m - b)) / max(float(np.linalg.norm(b)), 1e-9)
    det = float(np.linalg.det(m))
    scale = float(np.abs(m).max()) ** 2
    if residual > 0.25 or scale == 0 or abs(det) < 0.05 * scale:
        return 0  # the markers do not agree on one linear map: do not guess
    return 1 if det > 0 else -1


def _expected_entities(book: Codebook, probe: _Probe, out: Sample) -> list[list[int]]:
    """Per output row, the instance codes it may come from (empty: unknown origin)."""
    primary = book.sources[0]
    by_id = {int(i): int(primary.instance_codes[r]) for r, i in enumerate(primary.sample.instances.ids)}
    inst = out.instances
    extras = inst.extras
    src_img = extras.get("source_image_id")
    src_ann = extras.get("source_annotation_id")
    pool_index: dict[tuple[int, int], list[int]] = {}
    for key, painted in book.sources.items():
        if key == 0:
            continue
        image_id = int(painted.sample.image_id)
        for r, i in enumerate(painted.sample.instances.ids):
            if painted.instance_codes[r] >= 0:
                pool_index.setdefault((image_id, int(i)), []).append(int(painted.instance_codes[r]))
    seen: set[int] = set()
    result: list[list[int]] = []
    for r, i in enumerate(int(v) for v in inst.ids):
        if i in by_id and i not in seen:
            seen.add(i)
            result.append([by_id[i]] if by_id[i] >= 0 else [])
            continue
        seen.add(i)
        if src_img is not None and src_ann is not None:
            try:
                origin = (int(src_img[r]), int(src_ann[r]))
            except (TypeError, ValueError):
                origin = (-1, -1)
            result.append(pool_index.get(origin, []))
        else:
            result.append([])
    return result


def probe_violations(transform: Transform, sample: Sample, after: Sample, seed: int, *,
                     pool: Sequence[Sample] | None = None,
                     min_fraction: float = MIN_FRACTION) -> list[Violation]:
    """Run ``transform`` on probe images of ``sample`` (and of the pool samples it draws) with
    ``seed`` and check the decoded images against ``after`` (its output on the real image)."""
    out: list[Violation] = []
    image_id = sample.image_id

    def add(invariant: str, message: str, annotation_id: int | None = None) -> None:
        out.append(Violation(invariant, message, image_id, annotation_id, seed, sample))

    probe = _Probe(transform, sample, seed, pool)
    decoded = probe.run()
    book = probe.book
    for run, result in probe.outputs.items():
        if result.image.shape != after.image.shape or result.instances != after.instances:
            add("deterministic", f"the probe image (run {run!r}) gave different rows or a "
                "different image size with the same seed: the transform ignores the seed or its "
                "geometry depends on pixel values")
            return out
    if probe.drew_differently:
        add("deterministic", "the probe runs drew different pool samples with the same seed")
        return out
    inst = after.instances
    if len(inst) == 0:
        return out
    codes, clean = decoded.codes, decoded.clean
    owner_of = book.owner_table()

    def owners(values: np.ndarray) -> np.ndarray:
        result = np.full(values.shape, -1, np.int64)
        ok = (values >= 0) & (values < len(owner_of))
        result[ok] = owner_of[values[ok]]
        return result

    expected = _expected_entities(book, probe, after)
    h, w = inst.image_size
    cover = np.zeros((h, w), np.int32)
    owner_map = np.full((h, w), -1, np.int64)
    row_owner: list[int] = []
    scale = 0.0  # the largest enlargement of a row's mask (how far the input's grid shows)
    if inst.masks is not None:
        items = inst.masks.to_bitmaps().items
        for r, item in enumerate(items):
            i = int(inst.ids[r])
            bitmap = item.bitmap  # type: ignore[union-attr]
            y0, x0 = item.offset  # type: ignore[union-attr]
            bh, bw = bitmap.shape
            window = (slice(y0, y0 + bh), slice(x0, x0 + bw))
            judged = codes[window][bitmap & clean[window]]
            row_owner.append(-1)
            # interior pixels only (3x3 inside the mask): a structure a pixel or two thick does
            # not survive the image's interpolation or blending, while a nearest-neighbour mask
            # keeps it
            inner = erode(bitmap)
            if inner.sum() < MIN_PIXELS:
                continue
            mine = owners(judged)
            candidates = expected[r]
            sources = [book.entity(c) for c in candidates]
            if candidates and all(e is not None and e.solid for e in sources):
                allowed = np.unique(np.concatenate([book.entity(c).allowed  # type: ignore[union-attr]
                                                    for c in candidates]))
                # a pixel agrees when its code is within 1 px (interpolation, half-pixel
                # conventions); a 2 px displacement is probe_offset's
                pure = inner & ~decoded.blend[window]
                if pure.sum() < MIN_PIXELS:
                    continue
                near = _dilate(_isin_window(codes, (y0, x0), bitmap.shape, allowed))[pure]
                fraction = float(near.mean())
                if fraction < min_fraction:
                    where = _window(codes, (y0, x0), bitmap.shape)[1:-1, 1:-1][pure][~near]
                    values, counts = np.unique(where, return_counts=True)
                    most = int(values[np.argmax(counts)])
                    add("probe_code", f"{fraction:.0%} of the mask's {near.size} inner pixels carry "
                        f"its code within 1 px (needs {min_fraction:.0%}); most of the rest show "
                        f"{_describe(book, most)}", i)
                    continue
            # whose geometry is it: the expected instance, else the one whose code fills the mask
            if candidates:
                own = [int(np.count_nonzero(mine == c)) for c in candidates]
                top = candidates[int(np.argmax(own))]
            else:
                every = owners(codes[window][bitmap])
                valid = every[every >= 0]
                if valid.size == 0:
                    values, counts = np.unique(codes[window][bitmap], return_counts=True)
                    add("probe_code", "the mask shows no instance's code (mostly "
                        f"{_describe(book, int(values[np.argmax(counts)]))})", i)
                    continue
                top = int(np.bincount(valid).argmax())
            entity = book.entity(top)
            if entity is None:
                continue
            if not candidates and entity.solid:
                pure = inner & ~decoded.blend[window]
                if pure.sum() < MIN_PIXELS:
                    continue
                near = _dilate(_isin_window(codes, (y0, x0), bitmap.shape, entity.allowed))[pure]
                if float(near.mean()) < min_fraction:
                    add("probe_code", f"the mask carries no one instance's code: "
                        f"{float(near.mean()):.0%} of it shows {_describe(book, top)} within 1 px "
                        f"(needs {min_fraction:.0%})", i)
                    continue
            src = book.samples[entity.source].instances
            label, crowd = int(src.labels[entity.row]), bool(src.iscrowd[entity.row])
            if label != int(inst.labels[r]) or crowd != bool(inst.iscrowd[r]):
                add("probe_label", f"the mask is the geometry of {_describe(book, top)}"
                    f"{', a crowd' if crowd else ''}, but the row says label "
                    f"{int(inst.labels[r])}{', crowd' if bool(inst.iscrowd[r]) else ''}", i)
                continue
            row_owner[r] = top
            cover[window] += bitmap
            owner_map[window][bitmap] = top
            if entity.area:
                scale = max(scale, float(np.sqrt(bitmap.sum() / entity.area)))
    if scale <= MAX_OFFSET_SCALE:
        # enlarged more, a polygon rasterised at the output and the input's rasterisation in the
        # image differ by up to half an input pixel: that many output pixels, and not a bug
        out.extend(_offset_violations(book, codes, decoded.blend, cover, owner_map, owners,
                                      image_id, seed, sample))
    # which source's output rows cover each pixel: a keypoint under an object mixed in from
    # another image is occluded, not misplaced
    source_map = np.full((h, w), -1, np.int64)
    if inst.masks is not None:
        for r, item in enumerate(inst.masks.to_bitmaps().items):
            if row_owner[r] >= 0:
                bitmap = item.bitmap  # type: ignore[union-attr]
                y0, x0 = item.offset  # type: ignore[union-attr]
                bh, bw = bitmap.shape
                source_map[y0:y0 + bh, x0:x0 + bw][bitmap] = book.entity(row_owner[r]).source  # type: ignore[union-attr]
    if inst.keypoints is not None and inst.keypoints.shape[1] and row_owner:
        by_source: dict[int, list[tuple[int, int]]] = {}
        for r, top in enumerate(row_owner):
            if top >= 0:
                entity = book.entity(top)
                assert entity is not None
                by_source.setdefault(entity.source, []).append((r, entity.row))
        orientation = {key: _orientation(book, decoded, key, inst, rows)
                       for key, rows in by_source.items()}
        for r in range(len(inst)):
            top = row_owner[r] if r < len(row_owner) else -1
            if top < 0:
                continue
            entity = book.entity(top)
            assert entity is not None
            painted = book.sources[entity.source]
            if painted.marker_codes.shape[1] != inst.keypoints.shape[1]:
                continue
            near_mask = None
            if inst.masks is not None:
                item = inst.masks.to_bitmaps().items[r]

                def near_mask(cy: int, cx: int, item: Any = item) -> bool:
                    """The keypoint's whole search window lies inside the row's mask."""
                    y0, x0 = item.offset
                    bh, bw = item.bitmap.shape
                    ya, xa = cy - KEYPOINT_RADIUS - y0, cx - KEYPOINT_RADIUS - x0
                    yb, xb = cy + KEYPOINT_RADIUS + 1 - y0, cx + KEYPOINT_RADIUS + 1 - x0
                    if ya < 0 or xa < 0 or yb > bh or xb > bw:
                        return False
                    return bool(item.bitmap[ya:yb, xa:xb].all())
            out.extend(_keypoint_violations(book, codes, inst, r, entity.row, painted,
                                            orientation[entity.source], add, source_map,
                                            near_mask))
    return out


def _keypoint_violations(book: Codebook, codes: np.ndarray, inst: Any, r: int, src_row: int,
                         painted: Any, orientation: int, add: Callable[..., None],
                         source_map: np.ndarray,
                         near_mask: Callable[[int, int], bool] | None = None) -> list[Violation]:
    h, w = inst.image_size
    kp = inst.keypoints[r]
    label = int(painted.sample.instances.labels[src_row])
    for k in range(kp.shape[0]):
        x, y, v = (float(t) for t in kp[k])
        cx, cy = int(round(x)), int(round(y))
        if v <= 0 or not (0 <= cx < w and 0 <= cy < h):
            continue
        if source_map[cy, cx] not in (-1, painted.key):
            continue  # covered by an object from another image (a paste, a Mosaic neighbour)
        if painted.key != 0 and near_mask is not None and not near_mask(cy, cx):
            continue  # a pasted object brings only its mask's pixels (blended at the edge)
        partner = _flip_partner(painted.sample, label, k)
        options = [k] if orientation > 0 else [partner] if orientation < 0 else [k, partner]
        wanted = [int(painted.marker_codes[src_row, j]) for j in options]
        entities = [book.entity(c) for c in wanted if c >= 0]
        if not entities or not all(e is not None and e.intact for e in entities):
            continue  # the input shows no (intact) marker for it: cannot be judged
        window = codes[max(cy - KEYPOINT_RADIUS, 0):cy + KEYPOINT_RADIUS + 1,
                       max(cx - KEYPOINT_RADIUS, 0):cx + KEYPOINT_RADIUS + 1]
        if np.isin(window, wanted).any():
            continue
        values, counts = np.unique(window, return_counts=True)
        found = int(values[np.argmax(counts)])
        expect = (f"keypoint {options[0]}'s marker" if len(options) == 1 else
                  f"the marker of keypoint {k} or {partner}")
        mirrored = " (the probe shows the image was mirrored)" if orientation < 0 else ""
        add("probe_keypoint", f"keypoint {k} at ({x:.1f}, {y:.1f}) lands on "
            f"{_describe(book, found)}, not on {expect}{mirrored}", int(inst.ids[r]))
    return []


def _window(codes: np.ndarray, offset: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """``codes`` over a box and a 1 px margin (UNKNOWN beyond the image)."""
    y0, x0 = offset
    bh, bw = shape
    h, w = codes.shape
    out = np.full((bh + 2, bw + 2), UNKNOWN, codes.dtype)
    ys, xs = max(y0 - 1, 0), max(x0 - 1, 0)
    ye, xe = min(y0 + bh + 1, h), min(x0 + bw + 1, w)
    out[ys - (y0 - 1):ye - (y0 - 1), xs - (x0 - 1):xe - (x0 - 1)] = codes[ys:ye, xs:xe]
    return out


def _isin_window(codes: np.ndarray, offset: tuple[int, int], shape: tuple[int, ...],
                 allowed: np.ndarray) -> np.ndarray:
    return np.isin(_window(codes, offset, shape), allowed)


def _dilate(hit: np.ndarray) -> np.ndarray:
    """3x3 dilation of a margin-padded window, returned without the margin."""
    h, w = hit.shape[0] - 2, hit.shape[1] - 2
    out = np.zeros((h, w), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= hit[dy:dy + h, dx:dx + w]
    return out


def _offset_violations(book: Codebook, codes: np.ndarray, blend: np.ndarray, cover: np.ndarray,
                       owner_map: np.ndarray, owners: Callable[[np.ndarray], np.ndarray],
                       image_id: int, seed: int, sample: Sample) -> list[Violation]:
    """Is the image displaced against the masks? Compare agreement under shifts up to 2 px."""
    valid = cover == 1
    if int(valid.sum()) < OFFSET_MIN_PIXELS:
        return []
    pad = 2
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    ya, yb = max(int(rows[0]) - pad, 0), int(rows[-1]) + pad + 1
    xa, xb = max(int(cols[0]) - pad, 0), int(cols[-1]) + pad + 1
    codes, blend, valid = codes[ya:yb, xa:xb], blend[ya:yb, xa:xb], valid[ya:yb, xa:xb]
    owner_map = owner_map[ya:yb, xa:xb]
    decoded_owner = owners(codes)
    decoded_owner[blend] = -8  # a blend agrees with nothing, at every shift alike
    decoded_owner[codes == UNKNOWN] = -9
    h, w = codes.shape
    padded = np.pad(decoded_owner, pad, constant_values=-9)
    width = w + 2 * pad
    ys, xs = np.nonzero(valid)
    step = max(1, len(ys) // OFFSET_SAMPLE)  # an even subsample keeps the ratios, costs less
    ys, xs = ys[::step], xs[::step]
    expect = owner_map[ys, xs]
    flat = padded.ravel()
    base_index = (ys + pad) * width + (xs + pad)
    # the same pixels for every shift: those whose every shifted read lands on a probe pixel
    # (else a shift towards padding would drop exactly the pixels that disagree)
    seen_by_shift: dict[tuple[int, int], np.ndarray] = {}
    common = np.ones(expect.shape, bool)
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            seen = flat[base_index + dy * width + dx]
            seen_by_shift[(dy, dx)] = seen
            common &= seen != -9
    if int(common.sum()) < min(OFFSET_MIN_PIXELS, len(common)):
        return []
    ratios = {shift: float((seen[common] != expect[common]).mean())
              for shift, seen in seen_by_shift.items()}
    base = ratios.get((0, 0))
    if base is None:
        return []
    far = {s: v for s, v in ratios.items() if max(abs(s[0]), abs(s[1])) == pad}
    if not far:
        return []
    (dy, dx), best = min(far.items(), key=lambda item: item[1])
    # a real displacement of 2 px or more reads clearly better at 2 px than at every shift of
    # 0 or 1 px (a half-pixel convention or a thin structure does not)
    near = min(v for s, v in ratios.items() if max(abs(s[0]), abs(s[1])) < pad)
    if best < 0.5 * near and near - best > 0.02:
        return [Violation("probe_offset", f"the image is displaced against the masks: codes "
                          f"disagree with {base:.0%} of the mask pixels, {best:.0%} when the image "
                          f"is read {dx:+d} px in x, {dy:+d} px in y", image_id, None, seed, sample)]
    return []


# --- running -----------------------------------------------------------------------------------


def check_sample(transform: Transform, sample: Sample, seed: int, *,
                 pool: Sequence[Sample] | None = None, probe: bool = True,
                 min_fraction: float = MIN_FRACTION) -> list[Violation]:
    """Run ``transform`` twice on ``sample`` with ``seed``, then on its probe images; check every
    invariant. ``pool`` (or the transform's own) feeds mixing transforms."""
    mixing = getattr(transform, "needs_pool", False)
    if pool is not None and mixing and _pool_of(transform) is not pool:
        transform = transform.with_pool(pool)  # type: ignore[attr-defined]
    probe_pool = (pool if pool is not None else _pool_of(transform)) if mixing else None
    first = transform(sample, seed=seed)
    violations = find_violations(sample, first, seed=seed)
    second = transform(sample, seed=seed)
    if not _same(first, second):
        violations.append(Violation("deterministic", "the same seed gave a different output",
                                    sample.image_id, None, seed, sample))
        return violations
    if probe:
        violations.extend(probe_violations(transform, sample, first, seed, pool=probe_pool,
                                           min_fraction=min_fraction))
    return violations


def shrink(transform: Transform, violation: Violation, *, pool: Sequence[Sample] | None = None,
           min_fraction: float = MIN_FRACTION, budget: int = 12) -> Violation:
    """The same violation on the fewest rows found (greedy: the offending row alone, then halves).

    Returns ``violation`` with its ``example`` replaced by the smaller sample that still breaks the
    invariant (with the same seed), and its message from that example.
    """
    sample, seed = violation.example, violation.seed
    if sample is None or seed is None or len(sample.instances) <= 1:
        return violation

    def attempt(rows: np.ndarray) -> Violation | None:
        smaller = sample.replace(instances=sample.instances[rows])
        for v in check_sample(transform, smaller, seed, pool=pool, min_fraction=min_fraction):
            if v.invariant == violation.invariant:
                return v
        return None

    best = violation
    keep = np.arange(len(sample.instances))
    if violation.annotation_id is not None:
        rows = np.flatnonzero(sample.instances.ids == violation.annotation_id)
        if len(rows):
            budget -= 1
            found = attempt(rows)
            if found is not None:
                return found
    while len(keep) > 1 and budget > 0:
        halves = (keep[: len(keep) // 2], keep[len(keep) // 2:])
        for half in halves:
            budget -= 1
            found = attempt(half)
            if found is not None:
                best, keep = found, half
                break
        else:
            break
    return best


def check_alignment(
    transform: Transform,
    samples: Sequence[Sample] = (),
    max_examples: int = 25,
    *,
    seed: int = 0,
    generated: bool = True,
    num_keypoints: int | None = 3,
    max_side: int = 96,
    max_instances: int = 6,
    probe: bool = True,
    min_fraction: float = MIN_FRACTION,
    shrink_examples: bool = True,
    pool: Sequence[Sample] | None = None,
    command: Callable[[Violation], str | None] | None = None,
) -> AlignmentReport:
    """Check ``transform`` on ``samples`` (sample ``i`` with seed ``seed + i``) and on
    ``max_examples`` hypothesis-generated samples.

    A mixing transform (``needs_pool``) without a pool of its own is bound to ``pool``, else to
    ``samples`` (else to synthetic samples). The first violation of each invariant is shrunk
    (``shrink``); every violation carries its example and seed, and ``command(violation)`` (when
    given) the command line that reproduces it.
    """
    report = AlignmentReport()
    real = list(samples)
    if getattr(transform, "needs_pool", False):
        pool = pool if pool is not None else _pool_of(transform)
        if pool is None:
            pool = real
        if not pool:
            from instkit.synthetic import make_samples

            pool = make_samples(4, seed=seed, image_size=(64, 64))
    else:
        pool = None
    found: list[Violation] = []
    for index, sample in enumerate(real):
        found.extend(check_sample(transform, sample, seed + index, pool=pool, probe=probe,
                                  min_fraction=min_fraction))
        report.samples_checked += 1
        report.instances_checked += len(sample.instances)
    if generated and max_examples > 0:
        found.extend(_run_generated(transform, report, max_examples, num_keypoints, max_side,
                                    max_instances, probe, min_fraction, pool))
    shrunk: set[str] = set()
    seen: set[tuple[Any, ...]] = set()
    for v in found:
        key = (v.invariant, v.message, v.image_id, v.annotation_id, v.seed)
        if key in seen:  # hypothesis may draw the same example more than once
            continue
        seen.add(key)
        if shrink_examples and v.invariant not in shrunk:
            shrunk.add(v.invariant)
            v = shrink(transform, v, pool=pool, min_fraction=min_fraction)
        if command is not None:
            v = Violation(v.invariant, v.message, v.image_id, v.annotation_id, v.seed, v.example,
                          command(v))
        report.violations.append(v)
    return report


def assert_aligned(before: Sample, transform_or_after: Transform | Sample, *, seed: int = 0,
                   pool: Sequence[Sample] | None = None,
                   min_fraction: float = MIN_FRACTION) -> None:
    """Raise ``AssertionError`` listing every invariant broken (for pytest).

    ``assert_aligned(sample, transform)`` runs the transform with ``seed`` and checks the row and
    probe invariants; ``assert_aligned(sample, output)`` checks only the row invariants of a given
    output (without the transform there is nothing to run the probe images through).
    """
    if isinstance(transform_or_after, Sample):
        violations = find_violations(before, transform_or_after)
    else:
        violations = check_sample(transform_or_after, before, seed, pool=pool,
                                  min_fraction=min_fraction)
    AlignmentReport(violations, 1, len(before.instances)).raise_if_failed()


def _run_generated(
    transform: Transform, report: AlignmentReport, max_examples: int,
    num_keypoints: int | None, max_side: int, max_instances: int, probe: bool,
    min_fraction: float, pool: Sequence[Sample] | None,
) -> list[Violation]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from instkit.testing import strategies as st_inst

    found: list[Violation] = []

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=(Phase.explicit, Phase.reuse, Phase.generate),
              suppress_health_check=list(HealthCheck))
    @given(st_inst.samples(max_side=max_side, max_instances=max_instances,
                           num_keypoints=num_keypoints), st.integers(0, 2**31 - 1))
    def run(sample: Sample, seed: int) -> None:
        found.extend(check_sample(transform, sample, seed, pool=pool, probe=probe,
                                  min_fraction=min_fraction))
        report.samples_checked += 1
        report.instances_checked += len(sample.instances)

    run()
    return found


def reproduce_command(program: str, violation: Violation, extra: Sequence[str] = ()) -> str:
    """``program --image-id I --seed S [--annotation-ids a,b]`` for a violation on a real sample."""
    parts = [program, *extra, "--image-id", str(violation.image_id), "--seed", str(violation.seed)]
    if violation.example is not None:
        parts += ["--annotation-ids", ",".join(str(int(i)) for i in violation.example.instances.ids)
                  or "none"]
    return " ".join(shlex.quote(p) if p != program else p for p in parts)


__all__ = ["PROBE_INVARIANTS", "AlignmentReport", "Violation", "assert_aligned",
           "check_alignment", "check_sample", "find_violations", "probe_violations",
           "reproduce_command", "shrink"]

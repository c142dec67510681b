"""Probe images: every instance painted with a code of its own, decoded after a transform.

A probe run replaces a sample's image (and those of the pool samples a mixing transform draws)
with a synthetic one and runs the transform with the same seed. Codes are binary and written one
bit per run, in grey (R = G = B), so that they survive photometric transforms:

- two reference runs paint everything white, then everything black; per output pixel they give
  what white and black became (``W``, ``B``). Pixels where ``W`` and ``B`` agree came from no
  input pixel (padding, fill) and are *unknown*;
- run ``b`` paints each pixel white where bit ``b`` of its code is set; the output pixel reads 1
  when it is nearer to ``W`` than to ``B``.

Any pixelwise monotone colour change applied alike in every run (brightness, contrast, gamma,
hue / saturation / value shifts, RGB shifts, grayscale, additive noise drawn from the seed) keeps
every bit, and a pure code pixel comes out exactly as the references do. A blend of codes
(interpolation, paste blending) leaves some bit between the references: such pixels are marked
``blend`` and not judged.

Codes: 0 and 1 are the background (8 px tiles of both, which keeps each run's mean near grey for
image-mean-dependent contrast), then one code per instance (painted by decreasing area, so small
objects stay visible on top of large ones) and one per visible keypoint
(a small square marker painted last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instkit.sample import Sample

BACKGROUND = (0, 1)
UNKNOWN = -1
TILE = 8
#: least difference (summed over RGB) between the white and black reference runs at a pixel that
#: came from the input image; below it the pixel is padding or fill
MIN_CONTRAST = 60
#: least share of inner pixels for an input mask to count as solid (judged by ``probe_code``)
SOLID = 0.5


@dataclass
class Entity:
    """What one code stands for: an instance region (``keypoint == -1``) or a keypoint marker."""

    code: int
    source: int  # 0: the checked sample; i + 1: pool sample i
    row: int
    keypoint: int = -1
    allowed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    intact: bool = True  # a marker whose centre still shows its own code in the probe
    solid: bool = True  # most of the input mask is inner pixels (3x3 inside it)
    area: int = 0  # input mask pixels
    owner: int = -1  # the instance code a marker belongs to (its own code for an instance)


@dataclass
class PaintedSource:
    sample: Sample
    key: int
    code_map: np.ndarray
    instance_codes: np.ndarray  # (N,) code of each row, -1 for a row not painted (empty mask)
    marker_codes: np.ndarray  # (N, K) code of each visible keypoint's marker, -1 when none


class Codebook:
    """Codes of every source painted in one check (the sample and the pool samples it drew)."""

    def __init__(self) -> None:
        self.entities: list[Entity] = []
        self.sources: dict[int, PaintedSource] = {}
        self.samples: dict[int, Sample] = {}

    def paint(self, key: int, sample: Sample) -> PaintedSource:
        if key not in self.sources:
            self.sources[key] = self._paint(key, sample)
        return self.sources[key]

    @property
    def bits(self) -> int:
        top = max(2 + len(self.entities), 2)
        return max(1, int(top - 1).bit_length())

    def entity(self, code: int) -> Entity | None:
        index = code - 2
        return self.entities[index] if 0 <= index < len(self.entities) else None

    def owner_table(self) -> np.ndarray:
        """code -> owning instance code (markers map to their instance; background -> -2)."""
        table = np.full(1 << self.bits, -3, np.int64)
        table[list(BACKGROUND)] = -2
        for e in self.entities:
            table[e.code] = e.owner
        return table

    def _new(self, source: int, row: int, keypoint: int = -1) -> Entity:
        entity = Entity(2 + len(self.entities), source, row, keypoint)
        self.entities.append(entity)
        return entity

    def _paint(self, key: int, sample: Sample) -> PaintedSource:
        inst = sample.instances
        h, w = inst.image_size
        code_map = ((np.arange(h)[:, None] // TILE + np.arange(w)[None, :] // TILE) % 2
                    ).astype(np.int64)
        n = len(inst)
        codes = np.full(n, -1, np.int64)
        regions: list[tuple[np.ndarray, tuple[int, int]] | None] = [None] * n
        if n and inst.masks is not None:
            items = inst.masks.to_bitmaps().items
            area = np.array([int(np.count_nonzero(getattr(it, "bitmap", np.zeros(0))))
                             for it in items])
            order = sorted(range(n), key=lambda r: (-area[r], r))
            for r in order:
                item = items[r]
                bitmap = item.bitmap  # type: ignore[union-attr]
                if not bitmap.any():
                    continue
                entity = self._new(key, r)
                entity.owner = entity.code
                codes[r] = entity.code
                y0, x0 = item.offset  # type: ignore[union-attr]
                bh, bw = bitmap.shape
                code_map[y0:y0 + bh, x0:x0 + bw][bitmap] = entity.code
                regions[r] = (bitmap, (y0, x0))
        elif n:  # box-only rows: their boxes, so that keypoint markers sit on their instance
            for r in np.argsort(-(inst.boxes[:, 2] - inst.boxes[:, 0]) *
                                (inst.boxes[:, 3] - inst.boxes[:, 1]), kind="stable"):
                x0, y0, x1, y1 = (int(round(float(v))) for v in inst.boxes[r])
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
                if x1 <= x0 or y1 <= y0:
                    continue
                entity = self._new(key, int(r))
                entity.owner = entity.code
                codes[r] = entity.code
                code_map[y0:y1, x0:x1] = entity.code
        k = 0 if inst.keypoints is None else inst.keypoints.shape[1]
        markers = np.full((n, k), -1, np.int64)
        if k:
            assert inst.keypoints is not None
            radius = marker_radius((h, w))
            centres: list[tuple[Entity, int, int]] = []
            for r in range(n):
                for j in range(k):
                    x, y, v = (float(t) for t in inst.keypoints[r, j])
                    cx, cy = int(round(x)), int(round(y))
                    if v <= 0 or not (0 <= cx < w and 0 <= cy < h):
                        continue
                    entity = self._new(key, r, j)
                    entity.owner = int(codes[r]) if codes[r] >= 0 else entity.code
                    markers[r, j] = entity.code
                    code_map[max(cy - radius, 0):cy + radius + 1,
                             max(cx - radius, 0):cx + radius + 1] = entity.code
                    centres.append((entity, cy, cx))
            for entity, cy, cx in centres:
                entity.intact = bool(code_map[cy, cx] == entity.code)
                entity.allowed = np.array([entity.code], np.int64)
        for r in range(n):  # what the input shows under each mask: the row and what covers it
            found = self.entity(int(codes[r])) if codes[r] >= 0 else None
            if found is None:
                continue
            entity = found
            region = regions[r]
            if region is None:
                entity.allowed = np.array([entity.code], np.int64)
                continue
            bitmap, (y0, x0) = region
            bh, bw = bitmap.shape
            entity.allowed = np.unique(code_map[y0:y0 + bh, x0:x0 + bw][bitmap])
            # a mask made of strands and specks a pixel or two wide has no shape a resampled
            # image keeps: its output is not judged (relative to the input)
            entity.solid = bool(erode(bitmap).sum() >= SOLID * bitmap.sum())
            entity.area = int(bitmap.sum())
        self.samples[key] = sample
        return PaintedSource(sample, key, code_map, codes, markers)


def erode(bitmap: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood lies inside ``bitmap``."""
    padded = np.pad(bitmap, 1, constant_values=False)
    h, w = bitmap.shape
    out = bitmap.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out &= padded[dy:dy + h, dx:dx + w]
    return out


def marker_radius(size: tuple[int, int]) -> int:
    return max(1, min(size) // 160)


def render(source: PaintedSource, run: str | int) -> np.ndarray:
    """The probe image of one run: ``"white"``, ``"black"`` or bit number ``run``."""
    h, w = source.code_map.shape
    if run == "white":
        return np.full((h, w, 3), 255, np.uint8)
    if run == "black":
        return np.zeros((h, w, 3), np.uint8)
    plane = ((source.code_map >> int(run)) & 1).astype(np.uint8)
    plane *= 255
    out = np.empty((h, w, 3), np.uint8)
    out[...] = plane[:, :, None]
    return out


def blank(sample: Sample, run: str | int) -> np.ndarray:
    """A reference image before codes are assigned (white or black)."""
    h, w = sample.image_size
    value = 255 if run == "white" else 0
    return np.full((h, w, 3), value, np.uint8)


class ProbePool(Sequence[Sample]):
    """A pool whose samples come back as probe images of the current run.

    Pool samples are painted on first access, so only those a mixing transform draws get codes.
    ``name`` and ``annotation_file`` are forwarded, so that the transform labels the rows it mixes
    in exactly as it does with the real pool.
    """

    def __init__(self, pool: Sequence[Sample], book: Codebook) -> None:
        self._pool = pool
        self._book = book
        self.run: str | int = "white"
        self.accessed: list[int] = []

    def __len__(self) -> int:
        return len(self._pool)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        real = self._pool[i]
        if i not in self.accessed:
            self.accessed.append(i)
        if self.run in ("white", "black") and (i + 1) not in self._book.sources:
            return real.replace(image=blank(real, self.run))
        painted = self._book.paint(i + 1, real)
        return real.replace(image=render(painted, self.run))

    def paint_accessed(self) -> None:
        for i in self.accessed:
            self._book.paint(i + 1, self._pool[i])

    def __getattr__(self, name: str) -> Any:
        if name in ("name", "annotation_file"):
            return getattr(self._pool, name)
        raise AttributeError(name)


@dataclass
class Decoded:
    codes: np.ndarray  # (H, W) int64 code, UNKNOWN where no input pixel landed
    clean: np.ndarray  # (H, W) bool: the 3x3 neighbourhood shows one code
    blend: np.ndarray  # (H, W) bool: some bit lies in the middle half between the references


def decode(white: np.ndarray, black: np.ndarray, planes: Sequence[np.ndarray]) -> Decoded:
    """Per-pixel codes from the reference runs and one output image per bit."""
    w = _rgb_sum(white)
    b = _rgb_sum(black)
    known = (w - b) >= MIN_CONTRAST
    mid = w + b
    span = w - b
    codes = np.zeros(w.shape, np.int64)
    blend = np.zeros(w.shape, bool)
    for bit, plane in enumerate(planes):
        value = 2 * _rgb_sum(plane)
        codes |= ((value > mid).astype(np.int64) << bit)
        # a pure code pixel maps exactly like a reference; a blend of several codes
        # (interpolation, paste blending) leaves some bit between them
        blend |= np.abs(value - mid) < span // 2
    codes[~known] = UNKNOWN
    blend &= known
    return Decoded(codes, uniform_3x3(codes), blend)


def _rgb_sum(image: np.ndarray) -> np.ndarray:
    """R + G + B as int32 (two adds: a reduction over a 3-long last axis is slow)."""
    out = np.add(image[..., 0], image[..., 1], dtype=np.int32)
    out += image[..., 2]
    return out


def uniform_3x3(codes: np.ndarray) -> np.ndarray:
    padded = np.pad(codes, 1, mode="edge")
    h, w = codes.shape
    out = np.ones((h, w), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            out &= padded[dy:dy + h, dx:dx + w] == codes
    return out


__all__ = ["Codebook", "Decoded", "Entity", "PaintedSource", "ProbePool", "decode", "render"]

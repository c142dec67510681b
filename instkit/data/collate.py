"""``Collator``: a list of ``Sample``s -> model-ready tensors, built on the target device.

Work split (as timm's prefetch loader does it): the host packs a batch in uint8 with compact
mask crops (``instkit.data.packing``), the packed buffer goes to the device in one pinned,
non-blocking copy, and the device resizes, pads and normalises the images and pastes each mask
crop straight into the grid the model supervises: one slice copy per instance (rows and columns
picked from the crop first when the grid is resized), so the work grows with object area, never
with grid area times instance count. Images stay uint8 until one float pass at their own size
normalises them, and the resize (only when the size changes; OpenCV's bilinear kernel on the
CPU) writes the output once. With ``defer_images=True`` a model batch keeps them packed uint8
(and the masks as crops) until ``batch.to(device)`` builds the float images and mask
grids on that device: a DataLoader worker then sends a quarter of the bytes, and the host does
none of that work.

Targets:

- ``"maskrcnn"`` -> ``MaskRCNNBatch`` (a 2-tuple ``(images, targets)``, torchvision's detection
  API): ``images`` list of float32 ``(3, H, W)`` in [0, 1] (the model normalises), ``targets``
  list of dicts ``boxes`` float32 ``(N, 4)`` xyxy absolute, ``labels`` int64 (instkit label + 1;
  0 is background), ``masks`` uint8 ``(N, H, W)``, ``image_id`` int64 scalar, ``area`` float32,
  ``iscrowd`` int64, ``orig_size`` / ``size`` int64 ``(2,)``.
- ``"rfdetr"`` -> ``RfDetrBatch`` (a dict, so ``model(**batch)`` works): ``pixel_values``
  float32 ``(B, 3, Hp, Wp)`` normalised, ``pixel_mask`` int64 ``(B, Hp, Wp)``, ``labels`` list of
  dicts as ``RfDetrImageProcessor`` gives them (``class_labels`` = instkit label, ``boxes``
  normalised cxcywh over the padded canvas, ``masks`` bool, ``area``, ``iscrowd``, ``image_id``
  ``(1,)``, ``orig_size``, ``size``). Masks are built at ``mask_stride`` (default 4, the model's
  ``mask_downsample_ratio``): ``(N, Hp // 4, Wp // 4)``, each cell the value of the full-size
  processor mask at the cell centre (nearest-exact), which is what the loss samples.
- ``"keypointrcnn"`` -> ``KeypointRCNNBatch`` (``(images, targets)`` as for Mask R-CNN, for
  torchvision's Keypoint R-CNN): ``boxes``, ``labels`` (instkit label + 1), ``keypoints`` float32
  ``(N, K, 3)`` x, y in resized pixels and visibility (COCO's 0/1/2; 0 is not supervised),
  ``image_id``, ``area``, ``iscrowd``, ``annotation_ids``, ``orig_size``, ``size``; no masks.
- ``"instances"`` -> ``InstanceBatch``: normalised padded images plus per-image padded
  ``(B, Nmax, ...)`` columns (``keypoints`` ``(B, Nmax, K, 3)`` when the samples have them) and,
  on demand, instkit ``Instances`` in the resized frame.

Resizing follows the transformers processor: ``size`` is ``None`` (keep), ``(h, w)``, or a dict
with ``height``/``width``, ``shortest_edge``/``longest_edge`` or ``max_height``/``max_width``;
images use bilinear interpolation (no antialias) after rescaling to [0, 1], masks nearest-exact.
Every batch carries ``info`` (``BatchInfo``): image ids, original and resized sizes, and the
instances dropped with their reason.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from instkit.data import buffers
from instkit.data.packing import (
    FLOAT_COLUMNS,
    I_BH,
    I_BW,
    I_ID,
    I_IMAGE,
    I_LABEL,
    I_OFFSET,
    I_X0,
    I_Y0,
    IM_COUNT,
    IM_H,
    IM_ID,
    IM_OFFSET,
    IM_START,
    IM_W,
    INT_COLUMNS,
    CollateError,
    PackedBatch,
    pack_samples,
)
from instkit.errors import InstkitError, require
from instkit.sample import Drop, Sample

torch = require("torch", "torch")
F = torch.nn.functional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TARGETS = ("maskrcnn", "rfdetr", "instances", "keypointrcnn")
# Pixels pasted per vectorised chunk of ``paste_masks``: bounds its int64 scratch (about 15
# tensors of this length).
_PASTE_CHUNK = 1 << 22


@dataclass
class BatchInfo:
    """What a batch is made of: map predictions back and see what was dropped."""

    image_ids: list[int]
    orig_sizes: list[tuple[int, int]]
    sizes: list[tuple[int, int]]
    padded_size: tuple[int, int] | None
    drops: list[tuple[int, int, Drop]] = field(default_factory=list)
    bytes_to_device: int = 0

    def drop_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, drop in self.drops:
            counts[drop.reason] = counts.get(drop.reason, 0) + 1
        return counts


def _move(value: Any, device: Any, non_blocking: bool) -> Any:
    """A tensor on ``device``; anything else as it is."""
    return value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value


class MaskRCNNBatch(tuple):
    """``(images, targets)`` for torchvision's Mask R-CNN, with ``.info``.

    From ``Collator("maskrcnn", defer_images=True)`` the images stay packed uint8 and the masks
    as crops (``pending``) until ``.to(device)`` builds them on that device, or until the batch
    is first read (then built where it is). Either way the values are the immediate collator's.
    """

    info: BatchInfo
    pending: DeferredTorchvision | None = None

    def __new__(cls, images: list[Any], targets: list[dict[str, Any]], info: BatchInfo,
                pending: DeferredTorchvision | None = None) -> MaskRCNNBatch:
        obj = super().__new__(cls, (images, targets))
        obj.info = info
        obj.pending = pending
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # DataLoader workers pickle batches, still deferred
        return (type(self), (tuple.__getitem__(self, 0), tuple.__getitem__(self, 1), self.info,
                             self.pending))

    def _ready(self) -> None:
        pending = self.pending
        if pending is None:
            return
        images, masks = pending.build(pending.region.device)
        # filled in place: the tuple's lists are the ones every reader gets
        tuple.__getitem__(self, 0)[:] = images
        if masks is not None:
            for target, mask in zip(tuple.__getitem__(self, 1), masks, strict=True):
                target["masks"] = mask
        self.pending = None

    # unpacking (``images, targets = batch``) goes through __iter__ for a tuple subclass
    def __getitem__(self, key: Any) -> Any:
        self._ready()
        return tuple.__getitem__(self, key)

    def __iter__(self) -> Any:
        self._ready()
        return tuple.__iter__(self)

    def __repr__(self) -> str:
        self._ready()
        return f"{type(self).__name__}{tuple.__repr__(self)}"

    @property
    def images(self) -> list[Any]:
        return self[0]

    @property
    def targets(self) -> list[dict[str, Any]]:
        return self[1]

    def to(self, device: Any, non_blocking: bool = False) -> MaskRCNNBatch:
        """The batch on ``device``; deferred images and masks are built there."""
        device = torch.device(device)
        move = functools.partial(_move, device=device, non_blocking=non_blocking)
        targets = [{k: move(v) for k, v in target.items()}
                   for target in tuple.__getitem__(self, 1)]
        if self.pending is not None:
            images, masks = self.pending.build(device, non_blocking)
            if masks is not None:
                for target, mask in zip(targets, masks, strict=True):
                    target["masks"] = mask
        else:
            images = [move(image) for image in tuple.__getitem__(self, 0)]
        return type(self)(images, targets, self.info)


class KeypointRCNNBatch(MaskRCNNBatch):
    """``(images, targets)`` for torchvision's Keypoint R-CNN, with ``.info``."""


@dataclass
class DeferredTorchvision:
    """A Mask R-CNN / Keypoint R-CNN batch's images still packed as uint8 and its masks as
    crops: ``build(device)`` makes the float32 images in [0, 1] and the uint8 mask grids there
    (``Collator(defer_images=True)``)."""

    region: Any  # uint8 tensor: each image (h, w, 3), one after the other
    offsets: list[int]
    orig: list[tuple[int, int]]
    sizes: list[tuple[int, int]]
    crops: Any | None  # uint8 crop region; None: no masks (Keypoint R-CNN)
    ints: np.ndarray  # (N, INT_COLUMNS) instance table on the host
    image_ids: list[int]
    counts: list[int]
    starts: list[int]
    host_images: list[np.ndarray] | None = None  # the images, when not in ``region``

    def build(self, device: Any, non_blocking: bool = False) -> tuple[list[Any], list[Any] | None]:
        """``(images, masks)`` on ``device`` (``masks`` None without crops)."""
        region = self.region.to(device, non_blocking=non_blocking)
        sources = (self.host_images if self.host_images is not None
                   else _image_views(region, self.offsets, self.orig))
        images = _float_images(sources, self.sizes, region.device)
        if self.crops is None:
            return images, None
        crops = self.crops.to(device, non_blocking=non_blocking)
        return images, _maskrcnn_masks(crops, self.ints, self.orig, self.sizes, self.image_ids,
                                       self.counts, self.starts, region.device)


@dataclass
class DeferredImages:
    """An RF-DETR batch's images still packed as uint8 and its masks as crops, with what it
    takes to finish them: ``build(device)`` resizes, normalises and pads the images there and
    samples the masks at the stride (``Collator(defer_images=True)``)."""

    region: Any  # uint8 tensor: each image (h, w, 3), one after the other
    offsets: list[int]
    orig: list[tuple[int, int]]
    sizes: list[tuple[int, int]]
    padded: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    masks: DeferredStrideMasks | None = None

    def build(self, device: Any, non_blocking: bool = False) -> tuple[Any, Any, Any]:
        """``(pixel_values, pixel_mask, masks)`` on ``device``: float32 normalised, int64, and
        the ``(N, Hm, Wm)`` bool masks (None when the batch carries none)."""
        region = self.region.to(device, non_blocking=non_blocking)
        pixel_values, pixel_mask, written = _start_pixel_tensors(
            _image_views(region, self.offsets, self.orig), self.sizes, self.padded, self.mean,
            self.std, region.device)
        try:  # the masks are made while the images are written
            masks = None if self.masks is None else self.masks.build(
                region.device, self.orig, self.sizes, self.padded, non_blocking)
        finally:
            written()
        return pixel_values, pixel_mask, masks


@dataclass
class DeferredStrideMasks:
    """A batch's masks as crops, to be sampled at the stride onto the padded canvas (its
    images' sizes are ``DeferredImages``')."""

    crops: Any  # uint8 crop region
    ints: np.ndarray  # (N, INT_COLUMNS) instance table on the host
    grid: tuple[int, int]
    starts: list[int]
    counts: list[int]

    def build(self, device: Any, orig: list[tuple[int, int]], sizes: list[tuple[int, int]],
              padded: tuple[int, int], non_blocking: bool = False) -> Any:
        crops = self.crops.to(device, non_blocking=non_blocking)
        return _stride_masks(crops, self.ints, self.grid, self.starts, self.counts, orig, sizes,
                             padded, crops.device)


def _stride_masks(crops: Any, ints: np.ndarray, grid: tuple[int, int], starts: Sequence[int],
                  counts: Sequence[int], orig: Sequence[tuple[int, int]],
                  sizes: Sequence[tuple[int, int]], padded: tuple[int, int], device: Any) -> Any:
    """Every instance's bool mask ``(N, *grid)`` sampling its image's padded canvas."""
    n = int(ints.shape[0])
    masks = _mask_grids((n, *grid), torch.bool, device, f"the batch's {n} instance masks",
                        _STRIDE_HINT)
    paste_crops(crops, ints, [(masks[starts[b] : starts[b] + counts[b]], starts[b], counts[b])
                              for b in range(len(sizes))], orig, sizes, [padded] * len(sizes))
    return masks


_STRIDE_HINT = ("lower the resized size (size=...) or build masks at a stride (mask_stride=4, "
                "what RF-DETR's loss samples)")


class RfDetrBatch(dict):
    """``pixel_values``, ``pixel_mask``, ``labels`` for ``model(**batch)``, with ``.info``.

    From ``Collator("rfdetr", defer_images=True)`` the images stay packed uint8 and the masks
    as crops (``pending``) until the batch is moved with ``.to(device)``, which builds
    ``pixel_values``, ``pixel_mask`` and each label's ``masks`` on that device, or until the
    batch is first read as a dict (then built where the batch is). Either way the values are
    those of the immediate collator.
    """

    info: BatchInfo
    pending: DeferredImages | None = None

    def _ready(self) -> None:
        pending = self.pending
        if pending is None:
            return
        pixel_values, pixel_mask, masks = pending.build(pending.region.device)
        labels = dict.pop(self, "labels")
        _attach_masks(labels, masks, pending)
        dict.update(self, pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
        self.pending = None

    # every read as a dict sees the built tensors (``model(**batch)`` included: with __iter__
    # overridden, CPython unpacks through keys() and __getitem__)
    def __getitem__(self, key: Any) -> Any:
        self._ready()
        return dict.__getitem__(self, key)

    def __iter__(self) -> Any:
        self._ready()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._ready()
        return dict.__len__(self)

    def __contains__(self, key: object) -> bool:
        self._ready()
        return dict.__contains__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._ready()
        return dict.get(self, key, default)

    def keys(self) -> Any:
        self._ready()
        return dict.keys(self)

    def values(self) -> Any:
        self._ready()
        return dict.values(self)

    def items(self) -> Any:
        self._ready()
        return dict.items(self)

    def __repr__(self) -> str:
        self._ready()
        return dict.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:  # DataLoader workers pickle batches, still deferred
        return (_rebuild_rfdetr, (dict(dict.items(self)), self.info, self.pending))

    def to(self, device: Any, non_blocking: bool = False) -> RfDetrBatch:
        """The batch on ``device``; deferred images are resized and normalised there."""
        device = torch.device(device)
        move = functools.partial(_move, device=device, non_blocking=non_blocking)
        labels = [{k: move(v) for k, v in target.items()}
                  for target in dict.__getitem__(self, "labels")]
        if self.pending is not None:
            pixel_values, pixel_mask, masks = self.pending.build(device, non_blocking)
            _attach_masks(labels, masks, self.pending)
        else:
            pixel_values = move(dict.__getitem__(self, "pixel_values"))
            pixel_mask = move(dict.__getitem__(self, "pixel_mask"))
        return _rebuild_rfdetr({"pixel_values": pixel_values, "pixel_mask": pixel_mask,
                                "labels": labels}, self.info, None)


def _attach_masks(labels: list[dict[str, Any]], masks: Any, pending: DeferredImages) -> None:
    """Each image's rows of the deferred masks, as the immediate collator's ``masks`` key."""
    if masks is None or pending.masks is None:
        return
    for label, start, count in zip(labels, pending.masks.starts, pending.masks.counts,
                                   strict=True):
        label["masks"] = masks[start : start + count]


def _rebuild_rfdetr(content: dict[str, Any], info: BatchInfo,
                    pending: DeferredImages | None) -> RfDetrBatch:
    batch = RfDetrBatch(content)
    batch.info = info
    batch.pending = pending
    return batch


@dataclass
class InstanceBatch:
    """A padded batch: images ``(B, 3, Hp, Wp)`` normalised and per-instance ``(B, Nmax, ...)``.

    ``labels`` is -1 and ``valid`` False in padding rows; boxes are xyxy absolute in the resized
    image; masks bool ``(B, Nmax, Hm, Wm)`` at ``mask_stride`` over the padded canvas.
    """

    pixel_values: Any
    pixel_mask: Any
    boxes: Any
    labels: Any
    masks: Any
    valid: Any
    iscrowd: Any
    ids: Any
    info: BatchInfo
    mask_stride: int = 1
    keypoints: Any = None  # (B, Nmax, K, 3) x, y, visibility in the resized frame, or None

    def instances(self) -> list[Any]:
        """The batch as instkit ``Instances`` (host, numpy), one per image, in the resized frame.

        Needs ``mask_stride=1`` so that masks are at image resolution.
        """
        from instkit.instances import Instances
        from instkit.masks import Masks

        if self.mask_stride != 1:
            raise ValueError("instances() needs masks at image resolution: use mask_stride=1")
        out = []
        valid = self.valid.cpu().numpy()
        for b, (h, w) in enumerate(self.info.sizes):
            rows = np.flatnonzero(valid[b])
            dense = self.masks[b, rows, :h, :w].cpu().numpy()
            out.append(Instances(
                image_size=(h, w),
                boxes=self.boxes[b, rows].cpu().numpy(),
                labels=self.labels[b, rows].cpu().numpy(),
                masks=Masks.from_dense(dense),
                iscrowd=self.iscrowd[b, rows].cpu().numpy(),
                ids=self.ids[b, rows].cpu().numpy(),
                keypoints=(None if self.keypoints is None
                           else self.keypoints[b, rows].cpu().numpy()),
            ))
        return out

    def to(self, device: Any) -> InstanceBatch:
        moved = {k: getattr(self, k).to(device) for k in
                 ("pixel_values", "pixel_mask", "boxes", "labels", "masks", "valid", "iscrowd",
                  "ids")}
        return InstanceBatch(**moved, info=self.info, mask_stride=self.mask_stride,
                             keypoints=None if self.keypoints is None else self.keypoints.to(device))


def resized_size(size: tuple[int, int], spec: Any) -> tuple[int, int]:
    """Output ``(h, w)`` of an image of ``size`` under a size spec (the processor's rules)."""
    height, width = size
    if spec is None:
        return height, width
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ValueError(f"size must be (height, width), got {spec!r}")
        return int(spec[0]), int(spec[1])
    if not isinstance(spec, Mapping):
        raise ValueError(f"size must be None, (height, width) or a dict, got {spec!r}")
    if spec.get("shortest_edge") and spec.get("longest_edge"):
        short, max_size = int(spec["shortest_edge"]), int(spec["longest_edge"])
        raw = None
        lo, hi = float(min(height, width)), float(max(height, width))
        if hi / lo * short > max_size:
            raw = max_size * lo / hi
            short = int(round(raw))
        if (height <= width and height == short) or (width <= height and width == short):
            return height, width
        if width < height:
            return (int(raw * height / width) if raw is not None else int(short * height / width),
                    short)
        return short, (int(raw * width / height) if raw is not None else int(short * width / height))
    if spec.get("max_height") and spec.get("max_width"):
        scale = min(spec["max_height"] / height, spec["max_width"] / width)
        return int(height * scale), int(width * scale)
    if spec.get("height") and spec.get("width"):
        return int(spec["height"]), int(spec["width"])
    raise ValueError("size dict needs 'height'/'width', 'shortest_edge'/'longest_edge' or "
                     f"'max_height'/'max_width'; got {dict(spec)!r}")


def _nearest_map(length_in: int, length_out: int, device: Any) -> Any:
    """Source index of every output index under torch's nearest-exact resize, int64."""
    if length_in == length_out:
        return torch.arange(length_out, device=device)
    ramp = torch.arange(length_in, device=device, dtype=torch.float32).view(1, 1, -1)
    return F.interpolate(ramp, size=length_out, mode="nearest-exact").view(-1).long()


def _axis_maps(orig: Sequence[int], resized: Sequence[int], canvas: Sequence[int], grid: Sequence[int],
               device: Any) -> tuple[Any, int]:
    """Per image, the original-image index sampled by every grid index; padding gets a sentinel.

    Returned flat ``(B * G,)`` with image ``b`` offset by ``b * stride_value`` so that the whole
    thing is sorted (``searchsorted`` then finds every instance's range at once).
    """
    g_max = max(grid)
    sentinel = max(orig) + 1
    step = sentinel + 1
    maps = []
    for b, (n_in, n_res, n_canvas, n_grid) in enumerate(zip(orig, resized, canvas, grid, strict=True)):
        to_res = _nearest_map(n_canvas, n_grid, device)  # grid -> canvas (== resized frame)
        src = _nearest_map(n_in, n_res, device)  # resized -> original
        inside = to_res < n_res
        values = torch.full((g_max,), sentinel, dtype=torch.long, device=device)
        values[:n_grid] = torch.where(inside, src[to_res.clamp(max=n_res - 1)], sentinel)
        maps.append(values + b * step)
    return torch.cat(maps), step


def paste_masks(
    crops: Any, ints: Any, grid_sizes: Sequence[tuple[int, int]], orig_sizes: Sequence[tuple[int, int]],
    resized_sizes: Sequence[tuple[int, int]], canvas_sizes: Sequence[tuple[int, int]],
    out_offsets: Any, total: int,
) -> Any:
    """Paste every instance's crop into its image's grid, vectorised over the batch.

    The per-pixel int64 gather/scatter that ``paste_crops`` replaced (about 30x slower on a
    CPU); kept as the reference it is tested against.

    ``crops``: flat uint8 crop region; ``ints``: ``(N, 8)`` instance table; per image the grid
    ``(gh, gw)`` sampling a canvas ``(ch, cw)`` whose top-left ``resized`` part holds the image
    resized from ``orig``. Returns a flat bool tensor of ``total`` cells; instance ``n``'s grid
    starts at ``out_offsets[n]``.
    """
    device = crops.device
    canvas = torch.zeros(total, dtype=torch.bool, device=device)
    n = ints.shape[0]
    if n == 0:
        return canvas
    rows, rstep = _axis_maps([s[0] for s in orig_sizes], [s[0] for s in resized_sizes],
                             [s[0] for s in canvas_sizes], [g[0] for g in grid_sizes], device)
    cols, cstep = _axis_maps([s[1] for s in orig_sizes], [s[1] for s in resized_sizes],
                             [s[1] for s in canvas_sizes], [g[1] for g in grid_sizes], device)
    gh_max = max(g[0] for g in grid_sizes)
    gw_max = max(g[1] for g in grid_sizes)
    image = ints[:, I_IMAGE]
    y0, x0 = ints[:, I_Y0], ints[:, I_X0]
    bh, bw = ints[:, I_BH], ints[:, I_BW]
    r0 = torch.searchsorted(rows, y0 + image * rstep) - image * gh_max
    r1 = torch.searchsorted(rows, y0 + bh + image * rstep) - image * gh_max
    c0 = torch.searchsorted(cols, x0 + image * cstep) - image * gw_max
    c1 = torch.searchsorted(cols, x0 + bw + image * cstep) - image * gw_max
    empty = (bh == 0) | (bw == 0)
    hr = torch.where(empty, 0, (r1 - r0).clamp(min=0))
    wr = torch.where(empty, 0, (c1 - c0).clamp(min=0))
    count = hr * wr
    grid_w = torch.as_tensor([g[1] for g in grid_sizes], device=device)[image]
    base_rows = y0 + image * rstep
    base_cols = x0 + image * cstep
    offset = ints[:, I_OFFSET]
    bounds = torch.cumsum(count, 0).cpu().numpy()
    start = 0
    while start < n:
        # instances [start, stop) with at most _PASTE_CHUNK pixels (at least one instance)
        before = bounds[start - 1] if start else 0
        stop = int(np.searchsorted(bounds, before + _PASTE_CHUNK, side="right"))
        stop = max(stop, start + 1)
        chunk = slice(start, stop)
        cnt = count[chunk]
        pixels = int(bounds[stop - 1] - before)
        start = stop
        if pixels == 0:
            continue
        which = torch.repeat_interleave(torch.arange(cnt.numel(), device=device), cnt,
                                        output_size=pixels)
        first = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(pixels, device=device) - first[which]
        width = wr[chunk][which]
        ry = torch.div(local, width, rounding_mode="floor")
        rx = local - ry * width
        gr = r0[chunk][which] + ry
        gc = c0[chunk][which] + rx
        img = image[chunk][which]
        sy = rows[img * gh_max + gr] - base_rows[chunk][which]
        sx = cols[img * gw_max + gc] - base_cols[chunk][which]
        values = crops[offset[chunk][which] + sy * bw[chunk][which] + sx]
        target = out_offsets[chunk][which] + gr * grid_w[chunk][which] + gc
        canvas[target] = values.bool()
    return canvas


@functools.lru_cache(maxsize=512)
def _source_index(n_in: int, n_res: int, n_canvas: int, n_grid: int) -> tuple[np.ndarray, bool]:
    """Per grid index, the original-image index it samples; ``n_in`` (past every index) in
    the padding. Non-decreasing, so an instance's grid range is two ``searchsorted`` calls.

    The grid samples the canvas (nearest-exact), whose top-left ``n_res`` cells hold the image
    resized from ``n_in`` (nearest-exact). Also returns whether the map is the identity over
    the image (no resize, no stride): then a crop goes in unchanged at its own offset.
    """
    to_res = _nearest_map(n_canvas, n_grid, "cpu").numpy()
    src = _nearest_map(n_in, n_res, "cpu").numpy()
    index = np.where(to_res < n_res, src[np.minimum(to_res, n_res - 1)], n_in)
    index.setflags(write=False)
    return index, n_in == n_res and n_canvas == n_grid


def paste_crops(
    crops: Any, ints: np.ndarray, dests: Sequence[tuple[Any, int, int]],
    orig_sizes: Sequence[tuple[int, int]], resized_sizes: Sequence[tuple[int, int]],
    canvas_sizes: Sequence[tuple[int, int]],
) -> None:
    """Write every instance's crop into its image's grid: one slice copy per instance.

    ``crops``: flat uint8 0/1 crop region (a tensor); ``ints``: ``(N, 8)`` int64 instance table
    (numpy). ``dests[b]`` is ``(grid, first, count)``: image ``b``'s instances ``first ..
    first + count - 1`` go to ``grid[0 .. count - 1]``, a zeroed ``(count_or_more, gh, gw)``
    bool or uint8 tensor sampling a canvas of ``canvas_sizes[b]`` whose top-left part holds the
    image resized from ``orig_sizes[b]`` to ``resized_sizes[b]``. Each output cell is the crop
    pixel its centre falls on (nearest-exact twice), exactly what ``paste_masks`` computes.
    """
    cpu = crops.device.type == "cpu"
    flat = crops.numpy() if cpu else crops  # numpy slicing costs a fraction of torch's per call
    for b, (grid, first, count) in enumerate(dests):
        if count == 0:
            continue
        target = grid.numpy() if cpu else grid
        gh, gw = int(grid.shape[1]), int(grid.shape[2])
        (h, w), (rh, rw), (ch, cw) = orig_sizes[b], resized_sizes[b], canvas_sizes[b]
        rows, rows_same = _source_index(h, rh, ch, gh)
        cols, cols_same = _source_index(w, rw, cw, gw)
        table = ints[first : first + count]
        y0s, x0s, bhs, bws = (table[:, k] for k in (I_Y0, I_X0, I_BH, I_BW))
        # each crop's first and last grid row / column sampling it, for all crops at once
        r0s, r1s = ((y0s, y0s + bhs) if rows_same else
                    (np.searchsorted(rows, y0s), np.searchsorted(rows, y0s + bhs)))
        c0s, c1s = ((x0s, x0s + bws) if cols_same else
                    (np.searchsorted(cols, x0s), np.searchsorted(cols, x0s + bws)))
        for slot, (y0, x0, bh, bw, offset, r0, r1, c0, c1) in enumerate(zip(
                *(column.tolist() for column in (y0s, x0s, bhs, bws, table[:, I_OFFSET], r0s,
                                                 r1s, c0s, c1s)), strict=True)):
            if bh == 0 or bw == 0 or r0 == r1 or c0 == c1:
                continue
            crop = flat[offset : offset + bh * bw].reshape(bh, bw)
            if not rows_same:
                crop = crop[rows[r0:r1] - y0]
            if not cols_same:
                crop = crop[:, cols[c0:c1] - x0]
            target[slot, r0:r1, c0:c1] = crop


def _available_bytes() -> int | None:
    """Memory the kernel says can be allocated without swapping (Linux), else None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _empty(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """``torch.empty``; on the host from memory reused across batches (``instkit.data.buffers``:
    fresh pages cost as much as writing the batch)."""
    if torch.device(device).type == "cpu":
        return buffers.host_empty(shape, dtype)
    return torch.empty(shape, dtype=dtype, device=device)


def _zeros(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    if torch.device(device).type == "cpu":
        return buffers.host_zeros(shape, dtype)
    return torch.zeros(shape, dtype=dtype, device=device)


def _mask_grids(shape: tuple[int, ...], dtype: Any, device: Any, what: str, hint: str) -> Any:
    """A zeroed mask tensor, or a ``CollateError`` saying what to change when it cannot fit.

    On the host the size is checked against the memory available first: Linux overcommits, so a
    too-large allocation would otherwise succeed and the process be killed while zeroing it.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = int(np.prod(shape, dtype=np.float64)) * itemsize
    message = (f"{what} need {need / 2**30:.2f} GiB ({' x '.join(str(v) for v in shape)} "
               f"{str(dtype).replace('torch.', '')})")
    if torch.device(device).type == "cpu":
        available = _available_bytes()
        if available is not None and need > available:
            raise CollateError(f"{message}, more than the {available / 2**30:.2f} GiB of memory "
                               f"available: {hint}")
    try:
        return _zeros(shape, dtype, device)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        raise CollateError(f"{message}, which cannot be allocated on {device}: {hint}") from None


def write_images(images: Sequence[Any], sizes: Sequence[tuple[int, int]],
                 mean: Sequence[float], std: Sequence[float], outs: Sequence[Any]) -> None:
    """Write each uint8 ``(h, w, 3)`` image (an array, or a view of a packed batch on the
    outputs' device), resized to ``sizes[b]`` and normalised (``(x / 255 - mean) / std``),
    into the float32 ``(3, rh, rw)`` view ``outs[b]``.

    One float pass per image at its original size, then the bilinear resize (half-pixel
    centres, no antialias: what the processor does) writes the output once. Normalising
    before the resize gives the same values (the resize is linear, its weights sum to 1) on a
    quarter of the pixels when upscaling; an image whose size does not change is not resized.
    On the CPU OpenCV does both, plane by plane, in place (split + ``addWeighted``: about 1.5x
    torch's transpose + ``addcmul``; ``resize``: over 10x torch's bilinear kernel, within 1e-5
    of it).
    """
    if not outs:
        return
    device = outs[0].device
    if device.type == "cpu":
        scale = [1.0 / (255.0 * float(s)) for s in std]
        bias = [-float(m) / float(s) for m, s in zip(mean, std, strict=True)]
        for source, (rh, rw), out in zip(images, sizes, outs, strict=True):
            planes = cv2.split(np.asarray(source))
            h, w = planes[0].shape
            target = out.numpy()
            same = (rh, rw) == (h, w)
            for c in range(3):
                dst = target[c] if same else np.empty((h, w), np.float32)
                done = _into(cv2.addWeighted(planes[c], scale[c], planes[c], 0.0, bias[c],
                                             dst=dst, dtype=cv2.CV_32F), dst)
                if not same:
                    _into(cv2.resize(done, (rw, rh), dst=target[c],
                                     interpolation=cv2.INTER_LINEAR), target[c])
        return
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    scale_t = 1.0 / (255.0 * std_t)
    bias_t = -torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1) / std_t
    for source, (rh, rw), out in zip(images, sizes, outs, strict=True):
        # channel transpose in uint8 first: the float pass then reads memory in order
        image = torch.as_tensor(source, device=device).permute(2, 0, 1).contiguous()
        if tuple(image.shape[1:]) == (rh, rw):
            torch.addcmul(bias_t, image, scale_t, out=out)
            continue
        small = torch.addcmul(bias_t, image, scale_t)
        out.copy_(F.interpolate(small[None], size=(rh, rw), mode="bilinear",
                                align_corners=False, antialias=False)[0])


def _image_views(region: Any, offsets: Sequence[int], orig: Sequence[tuple[int, int]]
                 ) -> list[Any]:
    """Each packed image of a batch's region as a uint8 ``(h, w, 3)`` view (no copy)."""
    return [region[start : start + h * w * 3].view(h, w, 3)
            for start, (h, w) in zip(offsets, orig, strict=True)]


def _into(done: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target`` holding OpenCV's result (it writes into ``dst`` in place when it can)."""
    if not np.shares_memory(done, target):
        target[...] = done
    return target


def _start_pixel_tensors(images: Sequence[Any], sizes: Sequence[tuple[int, int]],
                         padded: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                         device: Any) -> tuple[Any, Any, Callable[[], None]]:
    """``pixel_values`` float32 ``(B, 3, Hp, Wp)`` and ``pixel_mask`` int64 ``(B, Hp, Wp)``,
    every element written once (the images' corners by ``write_images``, the rest here), and
    the call that waits until they are written (on the host the caller can do other work
    meanwhile)."""
    batch = len(sizes)
    hp, wp = padded
    pixel_values = _empty((batch, 3, hp, wp), torch.float32, device)
    pixel_mask = _empty((batch, hp, wp), torch.int64, device)

    def one_image(b: int) -> None:
        h, w = sizes[b]
        write_images(images[b : b + 1], sizes[b : b + 1], mean, std,
                     [pixel_values[b, :, :h, :w]])
        if device.type == "cpu":
            # each pixel_mask row is one pattern, copied (about a quarter faster than filling its
            # two parts row by row: this tensor is 40% of the batch's bytes)
            row = np.zeros(wp, np.int64)
            row[:w] = 1
            mask = pixel_mask[b].numpy()
            mask[:h] = row
            mask[h:] = 0
            values = pixel_values[b].numpy()
            values[:, h:, :] = 0
            values[:, :h, w:] = 0
            return
        pixel_mask[b, :h, :w] = 1
        for view in (pixel_values[b], pixel_mask[b][None]):
            view[:, h:, :].zero_()
            view[:, :h, w:].zero_()

    return pixel_values, pixel_mask, _each_image(one_image, batch, device)


@dataclass
class _StartedPixels:
    """``pixel_values`` / ``pixel_mask`` whose writing started before the batch was packed."""

    images: list[np.ndarray]
    padded: tuple[int, int]
    pixel_values: Any
    pixel_mask: Any
    wait: Callable[[], None]

    def matches(self, packed: PackedBatch, padded: tuple[int, int]) -> bool:
        """Whether they are this batch's: the same image arrays, read where they are."""
        host = packed.host_images
        return (host is not None and padded == self.padded and len(host) == len(self.images)
                and all(a is b for a, b in zip(host, self.images, strict=True)))


_EXECUTORS: dict[tuple[int, int], Any] = {}


def _written() -> None:
    """The wait of work already done."""


def _each_image(work: Callable[[int], None], count: int, device: Any
                ) -> Callable[[], None]:
    """Start ``work(b)`` for every image and return the call that waits for all of them; on the
    host spread over torch's intra-op thread count (OpenCV and torch release the GIL: about 10%
    faster than OpenCV's own threads on one image after another), inline with one thread
    (DataLoader workers) or on an accelerator."""
    threads = min(torch.get_num_threads(), count) if device.type == "cpu" else 1
    if threads <= 1:
        for b in range(count):
            work(b)
        return _written
    from concurrent.futures import ThreadPoolExecutor

    key = (os.getpid(), threads)  # a forked process gets its own threads
    if key not in _EXECUTORS:
        _EXECUTORS[key] = ThreadPoolExecutor(threads, thread_name_prefix="instkit-collate")
    futures = [_EXECUTORS[key].submit(work, b) for b in range(count)]

    def wait() -> None:
        for future in futures:
            future.result()  # raises what the image's work raised

    return wait


class Collator:
    """Collate ``Sample``s into model inputs and targets on ``device`` (see the module docstring).

    ``collator(samples)`` packs and finishes in one go. In a DataLoader with workers, use
    ``collate_fn=collator.pack`` (host work in the workers) and ``collator.finish(packed)`` in the
    training loop (device work in the main process); ``pin_memory=True`` pins the packed buffer.

    Parameters: ``size`` (see ``resized_size``), ``mask_stride`` (default 4 for ``"rfdetr"``,
    1 otherwise), ``image_mean`` / ``image_std`` (ImageNet by default; Mask R-CNN targets are not
    normalised, as torchvision's model does it), ``pad_size`` (fixed ``(h, w)`` canvas instead of
    the largest image of the batch), ``crowd`` (``"drop"`` for the model targets, as torchvision's
    reference and the transformers processor do; ``"keep"`` by default for ``"instances"``),
    ``drop_empty_masks``, ``defer_images`` (model targets: images stay packed uint8 in the batch,
    Mask R-CNN's masks as crops, until ``batch.to(device)`` builds ``pixel_values`` /
    ``pixel_mask``, or the float images and uint8 mask grids, on that device).
    """

    def __init__(
        self,
        target: str = "maskrcnn",
        device: str | Any = "cpu",
        *,
        size: Any = None,
        mask_stride: int | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        pad_size: tuple[int, int] | None = None,
        crowd: str | None = None,
        drop_empty_masks: bool = False,
        defer_images: bool = False,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.device = torch.device(device)
        self.size = size
        if mask_stride is None:
            mask_stride = 4 if target == "rfdetr" else 1
        if target == "maskrcnn" and mask_stride != 1:
            raise ValueError("Mask R-CNN targets are full resolution: mask_stride must be 1")
        if int(mask_stride) < 1:
            raise ValueError(f"mask_stride must be >= 1, got {mask_stride}")
        self.mask_stride = int(mask_stride)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.pad_size = None if pad_size is None else (int(pad_size[0]), int(pad_size[1]))
        self.crowd = crowd or ("keep" if target == "instances" else "drop")
        self.drop_empty_masks = drop_empty_masks
        if defer_images and target == "instances":
            raise ValueError("defer_images is for the model targets (maskrcnn, rfdetr, "
                             "keypointrcnn), not 'instances'")
        self.defer_images = bool(defer_images)
        resized_size((1, 1), size)  # fail early on a bad spec

    def __repr__(self) -> str:
        return (f"Collator(target={self.target!r}, device={str(self.device)!r}, size={self.size!r}, "
                f"mask_stride={self.mask_stride})")

    # host side -------------------------------------------------------------------------------

    def pack(self, items: Sequence[Any]) -> PackedBatch:
        """Host half: samples -> ``PackedBatch`` (safe in DataLoader workers).

        In a worker the batch is written in shared memory that the worker reuses once the main
        process has let go of the previous batch in it (``instkit.data.buffers``): sending it
        copies nothing and touches no fresh page."""
        return self._pack(items, "pooled")

    def _pack(self, items: Sequence[Any], shared_as: str | bool,
              copy_images: bool = True) -> PackedBatch:
        return self._pack_samples([_as_sample(item, i) for i, item in enumerate(items)],
                                  shared_as, copy_images)

    def _pack_samples(self, samples: list[Sample], shared_as: str | bool,
                      copy_images: bool = True) -> PackedBatch:
        if not samples:
            raise CollateError("cannot collate an empty batch")
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        from torch.utils.data import get_worker_info

        in_worker = get_worker_info() is not None
        return pack_samples(samples, crowd=self.crowd, drop_empty_masks=self.drop_empty_masks,
                            need_masks=self.target != "keypointrcnn",
                            pin=pin and not in_worker, shared=shared_as if in_worker else False,
                            copy_images=copy_images)

    def __call__(self, items: Sequence[Any]) -> Any:
        # a whole batch made in a worker crosses as tensors, which torch sends from fresh
        # shared memory; images finished on the host are read from where they are, not copied
        # into the batch first
        on_host = self.device.type == "cpu" and not self.defer_images
        samples = [_as_sample(item, i) for i, item in enumerate(items)]
        started = self._start_host_pixels(samples) if on_host else None
        try:
            packed = self._pack_samples(samples, True, copy_images=not on_host)
        except BaseException:
            if started is not None:
                started.wait()
            raise
        return self._finish(packed, started)

    def _start_host_pixels(self, samples: list[Sample]) -> _StartedPixels | None:
        """RF-DETR / instance batches on the host: start writing ``pixel_values`` and
        ``pixel_mask`` on the other threads before packing, which is one thread's work (rasterising
        polygons, cutting crops) that would otherwise leave the rest of the cores idle. None where
        anything is unusual (packing then says what, and the images start after it)."""
        if self.target not in ("rfdetr", "instances") or torch.get_num_threads() < 2:
            return None
        images = []
        for sample in samples:
            try:
                image = np.asarray(sample.image)
            except InstkitError:  # an unreadable file: packing names the sample
                return None
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                return None
            images.append(np.ascontiguousarray(image))
        sizes = [resized_size((int(im.shape[0]), int(im.shape[1])), self.size) for im in images]
        if not images or any(h <= 0 or w <= 0 for h, w in sizes):
            return None
        try:
            padded = self._padded_size(sizes)
        except CollateError:
            return None
        pixel_values, pixel_mask, wait = _start_pixel_tensors(
            images, sizes, padded, self.image_mean, self.image_std, self.device)
        return _StartedPixels(images, padded, pixel_values, pixel_mask, wait)

    # device side -----------------------------------------------------------------------------

    def finish(self, packed: PackedBatch) -> Any:
        """Device half: ``PackedBatch`` -> the target's batch on ``self.device``."""
        return self._finish(packed, None)

    def _finish(self, packed: PackedBatch, started: _StartedPixels | None) -> Any:
        device = self.device
        non_blocking = device.type == "cuda" and packed.buffer.is_pinned()
        buffer = packed.buffer.to(device, non_blocking=non_blocking)
        n = packed.num_instances
        ints_end = n * 8 * INT_COLUMNS
        table_end = packed.table_bytes
        ints = buffer[:ints_end].view(torch.int64).view(n, INT_COLUMNS)
        floats = buffer[ints_end:table_end].view(torch.float64).view(n, FLOAT_COLUMNS)
        image_region = buffer[table_end : table_end + packed.image_bytes]
        crops = buffer[table_end + packed.image_bytes :]
        table = packed.images
        orig = [(int(r[IM_H]), int(r[IM_W])) for r in table]
        sizes = [resized_size(s, self.size) for s in orig]
        for b, (h, w) in enumerate(sizes):
            if h <= 0 or w <= 0:
                raise CollateError(f"resized size {(h, w)} is empty",
                                   _where(b, int(table[b, IM_ID])))
        padded = (self._padded_size(sizes) if self.target not in ("maskrcnn", "keypointrcnn")
                  else None)
        info = BatchInfo(
            image_ids=[int(v) for v in table[:, IM_ID]], orig_sizes=orig, sizes=sizes,
            padded_size=padded, drops=list(packed.drops), bytes_to_device=packed.nbytes,
        )
        # boxes: clipped xyxy in original pixels -> resized pixels
        scale = torch.tensor(
            [[w2 / w1, h2 / h1, w2 / w1, h2 / h1] for (h1, w1), (h2, w2) in zip(orig, sizes, strict=True)],
            dtype=torch.float32, device=device)
        image_of = ints[:, I_IMAGE]
        boxes = floats[:, :4].float() * scale[image_of]
        area_scale = (scale[:, 0] * scale[:, 1])[image_of]
        area = floats[:, 4].float() * area_scale
        if self.target == "keypointrcnn":
            return self._keypointrcnn(packed, ints, image_region, orig, sizes, boxes, area, info)
        if self.target == "maskrcnn":
            return self._maskrcnn(packed, ints, image_region, crops, orig, sizes, boxes, area, info)
        return self._padded(packed, ints, image_region, crops, orig, sizes, padded, boxes, area,
                            info, started)

    def _padded_size(self, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        high = max(s[0] for s in sizes)
        wide = max(s[1] for s in sizes)
        if self.pad_size is None:
            return high, wide
        if self.pad_size[0] < high or self.pad_size[1] < wide:
            raise CollateError(f"pad_size {self.pad_size} is smaller than a resized image "
                               f"({high}, {wide})")
        return self.pad_size

    def _maskrcnn(self, packed: PackedBatch, ints: Any, region: Any, crops: Any,
                  orig: list[tuple[int, int]], sizes: list[tuple[int, int]], boxes: Any, area: Any,
                  info: BatchInfo) -> MaskRCNNBatch:
        deferred = _deferred_torchvision(packed, region, crops, orig, sizes)
        if self.defer_images:
            targets = _torchvision_targets(packed, ints, boxes, area, orig, sizes, region.device,
                                           lambda b, rows: {})
            return MaskRCNNBatch([], targets, info, deferred)
        images, masks = deferred.build(region.device)
        assert masks is not None
        targets = _torchvision_targets(packed, ints, boxes, area, orig, sizes, region.device,
                                       lambda b, rows: {"masks": masks[b]})
        return MaskRCNNBatch(images, targets, info)

    def _padded(self, packed: PackedBatch, ints: Any, region: Any, crops: Any,
                orig: list[tuple[int, int]], sizes: list[tuple[int, int]],
                padded: tuple[int, int] | None, boxes: Any, area: Any, info: BatchInfo,
                started: _StartedPixels | None = None) -> Any:
        assert padded is not None
        device = region.device
        table = packed.images
        batch = len(sizes)
        hp, wp = padded
        offsets = [int(v) for v in table[:, IM_OFFSET]]
        s = self.mask_stride
        grid = (hp // s, wp // s) if s > 1 else (hp, wp)
        if grid[0] == 0 or grid[1] == 0:
            raise CollateError(f"padded size {padded} is smaller than mask_stride {s}")
        n = packed.num_instances
        counts = [int(c) for c in table[:, IM_COUNT]]
        starts = [int(v) for v in table[:, IM_START]]
        deferred = None
        if self.defer_images:  # RF-DETR: images uint8 and masks as crops until the device
            deferred = DeferredImages(
                region, offsets, orig, sizes, padded, self.image_mean, self.image_std,
                DeferredStrideMasks(crops, _host_ints(packed), grid, starts, counts))
            images_written = _written
        elif started is not None and started.matches(packed, padded):
            # already being written (since before packing)
            pixel_values, pixel_mask = started.pixel_values, started.pixel_mask
            images_written = started.wait
        else:  # the images are written (on the host by other threads) while the masks are made
            if started is not None:
                started.wait()
            sources = (packed.host_images if packed.host_images is not None
                       else _image_views(region, offsets, orig))
            pixel_values, pixel_mask, images_written = _start_pixel_tensors(
                sources, sizes, padded, self.image_mean, self.image_std, device)
        try:
            if self.target == "rfdetr":
                masks = None if deferred is not None else _stride_masks(
                    crops, _host_ints(packed), grid, starts, counts, orig, sizes, padded, device)
            else:
                n_max = max(counts) if batch else 0
                pad_masks = _mask_grids(
                    (batch, n_max, *grid), torch.bool, device,
                    f"the batch's padded masks ({batch} images x {n_max} slots)", _STRIDE_HINT)
                paste_crops(crops, _host_ints(packed),
                            [(pad_masks[b], starts[b], counts[b]) for b in range(batch)],
                            orig, sizes, [padded] * batch)
        finally:
            images_written()
        iscrowd = torch.as_tensor(packed.iscrowd, device=device).long()
        labels_all = ints[:, I_LABEL]
        if self.target == "rfdetr":
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            cy = (boxes[:, 1] + boxes[:, 3]) / 2
            bw = boxes[:, 2] - boxes[:, 0]
            bh = boxes[:, 3] - boxes[:, 1]
            norm = torch.stack([cx / wp, cy / hp, bw / wp, bh / hp], dim=1)
            labels = []
            for b in range(batch):
                start, count = int(table[b, IM_START]), int(table[b, IM_COUNT])
                rows = slice(start, start + count)
                labels.append({
                    "size": torch.tensor(padded, dtype=torch.int64, device=device),
                    "image_id": torch.tensor([int(table[b, IM_ID])], dtype=torch.int64,
                                             device=device),
                    "class_labels": labels_all[rows],
                    "boxes": norm[rows],
                    "area": area[rows],
                    "iscrowd": iscrowd[rows],
                    "orig_size": torch.tensor(orig[b], dtype=torch.int64, device=device),
                    **({} if masks is None else {"masks": masks[rows]}),
                })
            if deferred is not None:
                return _rebuild_rfdetr({"labels": labels}, info, deferred)
            return _rebuild_rfdetr({"pixel_values": pixel_values, "pixel_mask": pixel_mask,
                                    "labels": labels}, info, None)
        slot = torch.as_tensor(
            np.concatenate([np.arange(c) for c in counts]) if n else np.zeros(0, np.int64),
            device=device, dtype=torch.long)
        image_of = ints[:, I_IMAGE]
        pad_boxes = torch.zeros((batch, n_max, 4), dtype=torch.float32, device=device)
        pad_labels = torch.full((batch, n_max), -1, dtype=torch.int64, device=device)
        valid = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
        pad_crowd = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
        pad_ids = torch.full((batch, n_max), -1, dtype=torch.int64, device=device)
        pad_boxes[image_of, slot] = boxes
        pad_labels[image_of, slot] = labels_all
        valid[image_of, slot] = True
        pad_crowd[image_of, slot] = iscrowd.bool()
        pad_ids[image_of, slot] = ints[:, I_ID]
        pad_keypoints = None
        keypoints = _keypoints(packed, orig, sizes, device)
        if keypoints is not None:
            pad_keypoints = torch.zeros((batch, n_max, keypoints.shape[1], 3), dtype=torch.float32,
                                        device=device)
            pad_keypoints[image_of, slot] = keypoints
        return InstanceBatch(pixel_values, pixel_mask, pad_boxes, pad_labels, pad_masks, valid,
                             pad_crowd, pad_ids, info, s, pad_keypoints)

    def _keypointrcnn(self, packed: PackedBatch, ints: Any, region: Any,
                      orig: list[tuple[int, int]], sizes: list[tuple[int, int]], boxes: Any,
                      area: Any, info: BatchInfo) -> KeypointRCNNBatch:
        device = region.device
        table = packed.images
        keypoints = _keypoints(packed, orig, sizes, device)
        if keypoints is None:
            if packed.num_instances:
                b = int(ints[0, I_IMAGE])
                raise CollateError("Keypoint R-CNN targets need keypoints, but the samples' "
                                   "instances have none", _where(b, int(table[b, IM_ID])))
            keypoints = torch.zeros((0, 0, 3), dtype=torch.float32, device=device)
        own = lambda b, rows: {"keypoints": keypoints[rows]}  # noqa: E731
        targets = _torchvision_targets(packed, ints, boxes, area, orig, sizes, device, own)
        deferred = _deferred_torchvision(packed, region, None, orig, sizes)
        if self.defer_images:
            return KeypointRCNNBatch([], targets, info, deferred)
        images, _ = deferred.build(device)
        return KeypointRCNNBatch(images, targets, info)


def _deferred_torchvision(packed: PackedBatch, region: Any, crops: Any | None,
                          orig: list[tuple[int, int]], sizes: list[tuple[int, int]]
                          ) -> DeferredTorchvision:
    table = packed.images
    return DeferredTorchvision(
        region, [int(v) for v in table[:, IM_OFFSET]], orig, sizes, crops, _host_ints(packed),
        [int(v) for v in table[:, IM_ID]], [int(c) for c in table[:, IM_COUNT]],
        [int(v) for v in table[:, IM_START]], packed.host_images)


def _float_images(images: Sequence[Any], sizes: Sequence[tuple[int, int]], device: Any
                  ) -> list[Any]:
    """``(3, h, w)`` float32 images in [0, 1] (not normalised: torchvision's models do it)."""
    outs = [_empty((3, h, w), torch.float32, device) for h, w in sizes]

    def one_image(b: int) -> None:
        write_images(images[b : b + 1], sizes[b : b + 1], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                     outs[b : b + 1])

    _each_image(one_image, len(sizes), device)()
    return outs


def _maskrcnn_masks(crops: Any, ints: np.ndarray, orig: Sequence[tuple[int, int]],
                    sizes: Sequence[tuple[int, int]], image_ids: Sequence[int],
                    counts: Sequence[int], starts: Sequence[int], device: Any) -> list[Any]:
    """Each image's uint8 ``(N, h, w)`` full-resolution masks, pasted from the crops."""
    masks = [_mask_grids(
        (counts[b], h, w), torch.uint8, device,
        f"Mask R-CNN targets of image {image_ids[b]} (batch index {b})",
        "Mask R-CNN takes one full-resolution uint8 mask per instance; lower the "
        "resized size (size=...), split the image into tiles, or use "
        'Collator("rfdetr") / Collator("instances", mask_stride=4) for masks at a stride')
        for b, (h, w) in enumerate(sizes)]
    paste_crops(crops, ints, [(masks[b], starts[b], counts[b]) for b in range(len(sizes))],
                orig, sizes, sizes)
    return masks


def _torchvision_targets(packed: PackedBatch, ints: Any, boxes: Any, area: Any,
                         orig: list[tuple[int, int]], sizes: list[tuple[int, int]], device: Any,
                         own: Callable[[int, slice], dict[str, Any]]) -> list[dict[str, Any]]:
    """torchvision detection targets, one dict per image: ``boxes``, ``labels`` (+1: 0 is
    background), the model's own fields (``own(image index, rows)``: ``masks``,
    ``keypoints``), ``image_id``, ``area``, ``iscrowd``, ``annotation_ids``, ``orig_size`` and
    ``size``."""
    table = packed.images
    iscrowd = torch.as_tensor(packed.iscrowd, device=device).long()
    targets = []
    for b, (h, w) in enumerate(sizes):
        start, count = int(table[b, IM_START]), int(table[b, IM_COUNT])
        rows = slice(start, start + count)
        targets.append({
            "boxes": boxes[rows],
            "labels": ints[rows, I_LABEL] + 1,
            **own(b, rows),
            "image_id": torch.tensor(int(table[b, IM_ID]), dtype=torch.int64, device=device),
            "area": area[rows],
            "iscrowd": iscrowd[rows],
            "annotation_ids": ints[rows, I_ID],
            "orig_size": torch.tensor(orig[b], dtype=torch.int64, device=device),
            "size": torch.tensor((h, w), dtype=torch.int64, device=device),
        })
    return targets


def _keypoints(packed: PackedBatch, orig: list[tuple[int, int]], sizes: list[tuple[int, int]],
               device: Any) -> Any:
    """The kept instances' keypoints ``(N, K, 3)`` on ``device``, x and y scaled to the resized
    image as the boxes are (torchvision's ``resize_keypoints``), visibility kept; or None."""
    if packed.keypoints is None:
        return None
    keypoints = torch.as_tensor(packed.keypoints, device=device).float().clone()
    if len(keypoints):
        scale = torch.tensor([[w2 / w1, h2 / h1] for (h1, w1), (h2, w2) in
                              zip(orig, sizes, strict=True)], dtype=torch.float32, device=device)
        image_of = torch.as_tensor(_host_ints(packed)[:, I_IMAGE], device=device)
        keypoints[:, :, :2] *= scale[image_of][:, None, :]
    return keypoints


def _host_ints(packed: PackedBatch) -> np.ndarray:
    """The ``(N, 8)`` instance table read from the host buffer (no device round trip)."""
    n = packed.num_instances
    host = packed.buffer[: n * 8 * INT_COLUMNS].numpy()
    return host.view(np.int64).reshape(n, INT_COLUMNS)


def _where(index: int, image_id: int) -> Any:
    from instkit.errors import Location

    return Location(sample_index=index, image_id=image_id)


def _where_index(index: int) -> Any:
    from instkit.errors import Location

    return Location(sample_index=index)


def _as_sample(item: Any, index: int) -> Sample:
    if isinstance(item, Sample):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("sample"), Sample):
        return item["sample"]
    raise CollateError(f"expected an instkit Sample (or a dict with a 'sample'), got "
                       f"{type(item).__name__}", _where_index(index))


__all__ = ["BatchInfo", "Collator", "DeferredImages", "InstanceBatch", "KeypointRCNNBatch", "MaskRCNNBatch",
           "RfDetrBatch", "paste_crops", "paste_masks", "resized_size"]

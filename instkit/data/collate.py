"""``Collator``: a list of ``Sample``s -> model-ready tensors, built on the target device.

Work split (as timm's prefetch loader does it): the host packs a batch in uint8 with compact
mask crops (``instkit.data.packing``), the packed buffer goes to the device in one pinned,
non-blocking copy, and the device resizes, pads and normalises the images and pastes the mask
crops straight into the grid the model supervises, vectorised over every instance of the batch.

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
- ``"instances"`` -> ``InstanceBatch``: normalised padded images plus per-image padded
  ``(B, Nmax, ...)`` columns and, on demand, instkit ``Instances`` in the resized frame.

Resizing follows the transformers processor: ``size`` is ``None`` (keep), ``(h, w)``, or a dict
with ``height``/``width``, ``shortest_edge``/``longest_edge`` or ``max_height``/``max_width``;
images use bilinear interpolation (no antialias) after rescaling to [0, 1], masks nearest-exact.
Every batch carries ``info`` (``BatchInfo``): image ids, original and resized sizes, and the
instances dropped with their reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
from instkit.errors import require
from instkit.sample import Drop, Sample

torch = require("torch", "torch")
F = torch.nn.functional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TARGETS = ("maskrcnn", "rfdetr", "instances")
# Pixels pasted per vectorised chunk: bounds the int64 scratch (about 15 tensors of this length).
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


class MaskRCNNBatch(tuple):
    """``(images, targets)`` for torchvision's Mask R-CNN, with ``.info``."""

    info: BatchInfo

    def __new__(cls, images: list[Any], targets: list[dict[str, Any]], info: BatchInfo
                ) -> MaskRCNNBatch:
        obj = super().__new__(cls, (images, targets))
        obj.info = info
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # DataLoader workers pickle batches
        return (MaskRCNNBatch, (self[0], self[1], self.info))

    @property
    def images(self) -> list[Any]:
        return self[0]

    @property
    def targets(self) -> list[dict[str, Any]]:
        return self[1]


class RfDetrBatch(dict):
    """``pixel_values``, ``pixel_mask``, ``labels`` for ``model(**batch)``, with ``.info``."""

    info: BatchInfo


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
            ))
        return out

    def to(self, device: Any) -> InstanceBatch:
        moved = {k: getattr(self, k).to(device) for k in
                 ("pixel_values", "pixel_mask", "boxes", "labels", "masks", "valid", "iscrowd",
                  "ids")}
        return InstanceBatch(**moved, info=self.info, mask_stride=self.mask_stride)


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
    ``drop_empty_masks``.
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
        resized_size((1, 1), size)  # fail early on a bad spec

    def __repr__(self) -> str:
        return (f"Collator(target={self.target!r}, device={str(self.device)!r}, size={self.size!r}, "
                f"mask_stride={self.mask_stride})")

    # host side -------------------------------------------------------------------------------

    def pack(self, items: Sequence[Any]) -> PackedBatch:
        """Host half: samples -> ``PackedBatch`` (safe in DataLoader workers)."""
        samples = [_as_sample(item, i) for i, item in enumerate(items)]
        if not samples:
            raise CollateError("cannot collate an empty batch")
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        from torch.utils.data import get_worker_info

        return pack_samples(samples, crowd=self.crowd, drop_empty_masks=self.drop_empty_masks,
                            pin=pin and get_worker_info() is None)

    def __call__(self, items: Sequence[Any]) -> Any:
        return self.finish(self.pack(items))

    # device side -----------------------------------------------------------------------------

    def finish(self, packed: PackedBatch) -> Any:
        """Device half: ``PackedBatch`` -> the target's batch on ``self.device``."""
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
        padded = self._padded_size(sizes) if self.target != "maskrcnn" else None
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
        if self.target == "maskrcnn":
            return self._maskrcnn(packed, ints, image_region, crops, orig, sizes, boxes, area, info)
        return self._padded(packed, ints, image_region, crops, orig, sizes, padded, boxes, area,
                            info)

    def _padded_size(self, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        high = max(s[0] for s in sizes)
        wide = max(s[1] for s in sizes)
        if self.pad_size is None:
            return high, wide
        if self.pad_size[0] < high or self.pad_size[1] < wide:
            raise CollateError(f"pad_size {self.pad_size} is smaller than a resized image "
                               f"({high}, {wide})")
        return self.pad_size

    def _images(self, packed: PackedBatch, region: Any, orig: list[tuple[int, int]],
                sizes: list[tuple[int, int]], out: Any = None) -> dict[int, Any]:
        """Resized images, grouped by size so that each group is one resize call.

        With ``out`` (``(B, 3, Hp, Wp)``), images are normalised straight into its top-left
        corners; otherwise ``(3, h, w)`` float32 images in [0, 1] are returned by batch index.
        Rescaling is folded into the normalisation after the (linear) resize: one pass less.
        """
        device = region.device
        groups: dict[tuple[int, int, int, int], list[int]] = {}
        for b, (o, s) in enumerate(zip(orig, sizes, strict=True)):
            groups.setdefault((*o, *s), []).append(b)
        std = torch.tensor(self.image_std, device=device).view(3, 1, 1)
        scale = 1.0 / (255.0 * std)
        bias = -torch.tensor(self.image_mean, device=device).view(3, 1, 1) / std
        result: dict[int, Any] = {}
        for (h, w, rh, rw), members in groups.items():
            images = torch.empty((len(members), 3, h, w), dtype=torch.float32, device=device)
            for k, b in enumerate(members):
                start = int(packed.images[b, IM_OFFSET])
                images[k].copy_(region[start : start + h * w * 3].view(h, w, 3).permute(2, 0, 1))
            if (rh, rw) != (h, w) or self.size is not None:
                images = F.interpolate(images, size=(rh, rw), mode="bilinear",
                                       align_corners=False, antialias=False)
            for k, b in enumerate(members):
                if out is not None:
                    torch.addcmul(bias, images[k], scale, out=out[b, :, :rh, :rw])
                else:
                    target = torch.empty((3, rh, rw), dtype=torch.float32, device=device)
                    result[b] = torch.mul(images[k], 1.0 / 255.0, out=target)
        return result

    def _maskrcnn(self, packed: PackedBatch, ints: Any, region: Any, crops: Any,
                  orig: list[tuple[int, int]], sizes: list[tuple[int, int]], boxes: Any, area: Any,
                  info: BatchInfo) -> MaskRCNNBatch:
        device = region.device
        table = packed.images
        images = self._images(packed, region, orig, sizes)
        counts = table[:, IM_COUNT]
        per_instance_cells = np.repeat([h * w for h, w in sizes], counts)
        offsets_np = np.concatenate(([0], np.cumsum(per_instance_cells)))
        out_offsets = torch.as_tensor(offsets_np[:-1], device=device)
        canvas = paste_masks(crops, ints, sizes, orig, sizes, sizes, out_offsets,
                             int(offsets_np[-1]))
        iscrowd = torch.as_tensor(packed.iscrowd, device=device).long()
        targets = []
        for b, (h, w) in enumerate(sizes):
            start, count = int(table[b, IM_START]), int(table[b, IM_COUNT])
            rows = slice(start, start + count)
            masks = canvas[int(offsets_np[start]) : int(offsets_np[start + count])]
            targets.append({
                "boxes": boxes[rows],
                "labels": ints[rows, I_LABEL] + 1,
                "masks": masks.view(count, h, w).to(torch.uint8),
                "image_id": torch.tensor(int(table[b, IM_ID]), dtype=torch.int64, device=device),
                "area": area[rows],
                "iscrowd": iscrowd[rows],
                "annotation_ids": ints[rows, I_ID],
                "orig_size": torch.tensor(orig[b], dtype=torch.int64, device=device),
                "size": torch.tensor((h, w), dtype=torch.int64, device=device),
            })
        return MaskRCNNBatch([images[b] for b in range(len(sizes))], targets, info)

    def _padded(self, packed: PackedBatch, ints: Any, region: Any, crops: Any,
                orig: list[tuple[int, int]], sizes: list[tuple[int, int]],
                padded: tuple[int, int] | None, boxes: Any, area: Any, info: BatchInfo) -> Any:
        assert padded is not None
        device = region.device
        table = packed.images
        batch = len(sizes)
        hp, wp = padded
        full = all(s == (hp, wp) for s in sizes)
        make = torch.empty if full else torch.zeros
        pixel_values = make((batch, 3, hp, wp), dtype=torch.float32, device=device)
        self._images(packed, region, orig, sizes, out=pixel_values)
        pixel_mask = make((batch, hp, wp), dtype=torch.int64, device=device)
        if full:
            pixel_mask.fill_(1)
        else:
            for b, (h, w) in enumerate(sizes):
                pixel_mask[b, :h, :w] = 1
        s = self.mask_stride
        grid = (hp // s, wp // s) if s > 1 else (hp, wp)
        if grid[0] == 0 or grid[1] == 0:
            raise CollateError(f"padded size {padded} is smaller than mask_stride {s}")
        cells = grid[0] * grid[1]
        n = packed.num_instances
        out_offsets = torch.arange(n, device=device) * cells
        canvas = paste_masks(crops, ints, [grid] * batch, orig, sizes, [padded] * batch,
                             out_offsets, n * cells)
        masks = canvas.view(n, grid[0], grid[1])
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
                    "masks": masks[rows],
                })
            result = RfDetrBatch(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
            result.info = info
            return result
        counts = table[:, IM_COUNT]
        n_max = int(counts.max()) if batch else 0
        slot = torch.as_tensor(
            np.concatenate([np.arange(c) for c in counts]) if n else np.zeros(0, np.int64),
            device=device, dtype=torch.long)
        image_of = ints[:, I_IMAGE]
        pad_boxes = torch.zeros((batch, n_max, 4), dtype=torch.float32, device=device)
        pad_labels = torch.full((batch, n_max), -1, dtype=torch.int64, device=device)
        pad_masks = torch.zeros((batch, n_max, *grid), dtype=torch.bool, device=device)
        valid = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
        pad_crowd = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
        pad_ids = torch.full((batch, n_max), -1, dtype=torch.int64, device=device)
        pad_boxes[image_of, slot] = boxes
        pad_labels[image_of, slot] = labels_all
        pad_masks[image_of, slot] = masks
        valid[image_of, slot] = True
        pad_crowd[image_of, slot] = iscrowd.bool()
        pad_ids[image_of, slot] = ints[:, I_ID]
        return InstanceBatch(pixel_values, pixel_mask, pad_boxes, pad_labels, pad_masks, valid,
                             pad_crowd, pad_ids, info, s)


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


__all__ = ["BatchInfo", "Collator", "InstanceBatch", "MaskRCNNBatch", "RfDetrBatch",
           "paste_masks", "resized_size"]

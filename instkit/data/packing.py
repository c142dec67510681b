"""Host side of the collator: samples -> one flat uint8 buffer (worker-safe, no torch device).

A batch is packed as::

    buffer = [instance ints (N, 8) int64 | instance floats (N, 5) float64 | images | mask crops]

- instance ints, per kept instance: image index in the batch, crop ``y0``, ``x0``, ``bh``,
  ``bw``, crop byte offset (into the crop region), label, annotation id;
- instance floats: the box ``x0, y0, x1, y1`` (absolute, original image pixels, clipped to the
  image) and the mask's pixel area;
- images: each ``(H, W, 3)`` uint8 RGB, C order, one after the other;
- mask crops: each instance's mask as a crop-local ``(bh, bw)`` uint8 0/1 array at its
  ``(y0, x0)`` in the original image. Polygons are rasterised by pycocotools to RLE (exactly,
  one C call per image), RLEs are decoded over the columns they touch only, bitmaps are copied. Memory grows with object area, never with
  image area times instance count.

Per-image facts (sizes, offsets, image ids) stay in a small numpy table on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instkit.data import buffers
from instkit.errors import ImageError, InstkitError, Location
from instkit.masks import (
    BitmapMask,
    MaskError,
    decode_rle_counts,
    rle_crop,
    rle_crops_by_height,
)
from instkit.masks import rle_crops as masks_rle_crops
from instkit.sample import Drop, Sample

INT_COLUMNS = 8
FLOAT_COLUMNS = 5
# instance int columns
I_IMAGE, I_Y0, I_X0, I_BH, I_BW, I_OFFSET, I_LABEL, I_ID = range(INT_COLUMNS)
# image table columns
IM_H, IM_W, IM_OFFSET, IM_START, IM_COUNT, IM_ID = range(6)


class CollateError(InstkitError, ValueError):
    """A sample that cannot be collated; the message names its index in the batch and image_id."""


@dataclass
class PackedBatch:
    """One batch packed on the host; picklable, so DataLoader workers can return it.

    ``buffer`` is a 1-D uint8 torch tensor (pinned by ``pin_memory()``, which DataLoader calls
    when ``pin_memory=True``). ``images``: int64 ``(B, 6)`` numpy table (``H, W``, byte offset
    in the image region, first instance row, instance count, image_id).
    """

    buffer: Any
    images: np.ndarray
    num_instances: int
    image_bytes: int
    crop_bytes: int
    iscrowd: np.ndarray
    drops: list[tuple[int, int, Drop]] = field(default_factory=list)
    # (N, K, 3) float32 x, y, visibility of the kept instances, original pixels; None when no
    # sample has keypoints (a sample without them, in a batch with them: visibility 0)
    keypoints: np.ndarray | None = None
    # the pooled shared-memory segment behind ``buffer`` (``instkit.data.buffers``): the worker's
    # ``Segment``, or in the main process the ``Received`` (worker pid, segment) it came in
    segment: Any = field(default=None, repr=False, compare=False)
    # the images themselves, when they were not copied into ``buffer`` (``copy_images=False``:
    # a batch finished on the host, in the process that packed it); ``image_bytes`` is then 0
    host_images: list[np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        state = {name: getattr(self, name) for name in _STATE}
        if isinstance(self.segment, buffers.Segment):
            reach = buffers.send(self.segment)
            if reach is not None:  # the receiver maps the segment: nothing is copied
                sender = buffers.Received(self.segment.pid, self.segment.ident)
                return _rebuild_from_segment, (*reach, self.segment.capacity, self.nbytes,
                                               sender, state)
        return _rebuild, (self.buffer, state)

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.buffer.numel())

    @property
    def table_bytes(self) -> int:
        return self.num_instances * 8 * (INT_COLUMNS + FLOAT_COLUMNS)

    def pin_memory(self) -> PackedBatch:
        if not self.buffer.is_pinned():
            self.buffer = self.buffer.pin_memory()
        return self


_STATE = ("images", "num_instances", "image_bytes", "crop_bytes", "iscrowd", "drops",
          "keypoints", "host_images")


def _rebuild(buffer: Any, state: dict[str, Any]) -> PackedBatch:
    return PackedBatch(buffer, **state)


def _rebuild_from_segment(wrapped_fd: Any, worker_fd: int, capacity: int, nbytes: int,
                          sender: buffers.Received, state: dict[str, Any]) -> PackedBatch:
    return PackedBatch(buffers.receive(wrapped_fd, worker_fd, sender, capacity, nbytes), **state,
                       segment=sender)


def _as_rgb(image: Any, index: int, image_id: int) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise CollateError(f"image must be uint8, got {array.dtype}",
                           Location(sample_index=index, image_id=image_id))
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 4:
        return array[:, :, :3]
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    raise CollateError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape "
                       f"{array.shape}", Location(sample_index=index, image_id=image_id))


def mask_crop(item: Any, counts: bytes | None, size: tuple[int, int]
              ) -> tuple[np.ndarray, int, int]:
    """One mask as ``(crop uint8 (bh, bw), y0, x0)``: bitmaps as stored, the rest from RLE."""
    if isinstance(item, BitmapMask):
        if item.bitmap.size == 0 or not item.bitmap.any():
            return np.zeros((0, 0), np.uint8), 0, 0
        return _crop_tuple(item)
    if counts is None:
        raise TypeError(f"unknown mask item {type(item).__name__}")
    return _crop_tuple(rle_crop(counts, size))


def rle_crops(counts: Sequence[bytes], size: tuple[int, int]) -> list[tuple[np.ndarray, int, int]]:
    """``mask_crop`` of many compressed RLEs of one image (``masks.rle_crops``: one vectorised
    decode for all of them)."""
    return [_crop_tuple(crop) for crop in masks_rle_crops(counts, size)]


def _crop_tuple(crop: BitmapMask) -> tuple[np.ndarray, int, int]:
    """A box-tight ``BitmapMask`` (an empty one is ``(0, 0)`` at ``(0, 0)``) as packed:
    ``(uint8 crop, y0, x0)``."""
    return crop.bitmap.view(np.uint8), int(crop.offset[0]), int(crop.offset[1])


def _decode_crops(counts: list[bytes], heights: list[int], owners: list[Location]
                  ) -> list[tuple[np.ndarray, int, int]]:
    """The batch's RLE masks as ``(crop, y0, x0)``, in one pass; a refused string is named by
    its image (``owners[i]``: where string ``i`` comes from)."""
    if not counts:
        return []
    try:
        crops = rle_crops_by_height(counts, np.asarray(heights, dtype=np.int64))
    except MaskError as exc:
        for one, where in zip(counts, owners, strict=True):
            try:
                decode_rle_counts(one)  # what the batch decoder refused first
            except MaskError as inner:
                raise CollateError(f"a mask cannot be decoded: {inner}", where) from None
        raise CollateError(f"a mask cannot be decoded: {exc}") from None
    return [_crop_tuple(crop) for crop in crops]


def pack_samples(
    samples: Sequence[Sample],
    *,
    crowd: str = "drop",
    drop_empty_masks: bool = False,
    need_masks: bool = True,
    pin: bool = False,
    shared: bool | str = False,
    copy_images: bool = True,
) -> PackedBatch:
    """Pack samples into one flat buffer (see the module docstring).

    ``copy_images=False``: the images stay where they are (``PackedBatch.host_images``) instead
    of being copied into the buffer; for a batch finished on the host by the process that packs
    it, which then reads each image once, from where it is.

    ``shared``: write the buffer in shared memory (in a DataLoader worker, so that sending it
    copies nothing): ``True`` fresh shared memory, ``"pooled"`` one of the worker's reused
    segments (``instkit.data.buffers``; for batches that cross as a ``PackedBatch``).

    Instances are dropped, and recorded as ``(sample index, image_id, Drop)``, when they are
    crowd regions (``crowd="drop"``), when their box clipped to the image has no area
    (``degenerate_box``, as torchvision's reference and the transformers processor do) and, with
    ``drop_empty_masks``, when their mask has no pixel (``empty_mask``).
    """
    import torch

    if crowd not in ("drop", "keep"):
        raise ValueError(f"crowd must be 'drop' or 'keep', got {crowd!r}")
    images: list[np.ndarray] = []
    image_rows: list[list[int]] = []
    int_rows: list[np.ndarray] = []
    float_rows: list[np.ndarray] = []
    crowd_rows: list[np.ndarray] = []
    keypoint_rows: list[tuple[int, int, int, np.ndarray | None]] = []
    crops: list[np.ndarray] = []
    drops: list[tuple[int, int, Drop]] = []
    image_offset = 0
    crop_offset = 0
    start = 0
    staged: list[tuple[int, Sample, int, np.ndarray, np.ndarray, np.ndarray, list[int]]] = []
    pending_counts: list[bytes] = []
    pending_heights: list[int] = []
    pending_owners: list[Location] = []
    for index, sample in enumerate(samples):
        if not isinstance(sample, Sample):
            raise CollateError(f"expected an instkit Sample, got {type(sample).__name__}",
                               Location(sample_index=index))
        image_id = int(sample.image_id)
        where = Location(sample_index=index, image_id=image_id)
        try:
            image = _as_rgb(sample.image, index, image_id)
        except ImageError as exc:
            raise CollateError(exc.message, Location(file=exc.location.file,
                                                     sample_index=index, image_id=image_id)) from None
        h, w = int(image.shape[0]), int(image.shape[1])
        inst = sample.instances
        if (h, w) != tuple(inst.image_size):
            raise CollateError(f"image is {h}x{w} (HxW) but its instances are for "
                               f"{inst.image_size[0]}x{inst.image_size[1]}", where)
        masks = inst.masks
        if need_masks and masks is None and len(inst):
            raise CollateError("this target needs masks, but the sample's instances have none",
                               where)
        boxes = inst.boxes.astype(np.float64)
        if not np.isfinite(boxes).all():
            raise CollateError("a box has a NaN or infinite coordinate", where)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        reasons = np.where(keep, "", "degenerate_box").astype(object)
        if crowd == "drop":
            reasons[inst.iscrowd & keep] = "crowd"
            keep &= ~inst.iscrowd
        rows = np.flatnonzero(keep)
        coded: list[int] = []
        if masks is not None:
            # Polygons go through pycocotools' full-image RLE (one C call for the image, exact
            # to the bit); the batch's strings are then decoded together, each over its own
            # columns only.
            items = masks.items
            sub = masks[rows]
            coded = [j for j, r in enumerate(rows) if not isinstance(items[r], BitmapMask)]
            if coded:
                pending_counts.extend(sub[coded].rle_counts())
                pending_heights.extend([h] * len(coded))
                pending_owners.extend([where] * len(coded))
        staged.append((index, sample, image_id, boxes, reasons, rows, coded))
        images.append(image)
    decoded_all = _decode_crops(pending_counts, pending_heights, pending_owners)
    cursor = 0
    for index, sample, image_id, boxes, reasons, rows, coded in staged:
        inst = sample.instances
        masks = inst.masks
        h, w = int(images[index].shape[0]), int(images[index].shape[1])
        if masks is not None:
            items = masks.items
            decoded = dict(zip(coded, decoded_all[cursor : cursor + len(coded)], strict=True))
            cursor += len(coded)
            kept_crops = [decoded[j] if j in decoded else mask_crop(items[r], None, (h, w))
                          for j, r in enumerate(rows)]
        else:
            kept_crops = [(np.zeros((0, 0), np.uint8), 0, 0)] * len(rows)
        areas = np.array([np.count_nonzero(c[0]) for c in kept_crops], dtype=np.float64)
        if drop_empty_masks and masks is not None and (areas == 0).any():
            empty = areas == 0
            reasons[rows[empty]] = "empty_mask"
            rows = rows[~empty]
            kept_crops = [c for c, e in zip(kept_crops, empty, strict=True) if not e]
            areas = areas[~empty]
        for r in np.flatnonzero(reasons != ""):
            drops.append((index, image_id, Drop(int(inst.ids[r]), str(reasons[r]),
                                                int(inst.labels[r]), "collate")))
        n = len(rows)
        ints = np.zeros((n, INT_COLUMNS), dtype=np.int64)
        ints[:, I_IMAGE] = index
        ints[:, I_LABEL] = inst.labels[rows]
        ints[:, I_ID] = inst.ids[rows]
        for j, (crop, y0, x0) in enumerate(kept_crops):
            ints[j, I_Y0], ints[j, I_X0] = y0, x0
            ints[j, I_BH], ints[j, I_BW] = crop.shape
            ints[j, I_OFFSET] = crop_offset
            crop_offset += crop.size
            crops.append(crop)
        floats = np.zeros((n, FLOAT_COLUMNS), dtype=np.float64)
        floats[:, :4] = boxes[rows]
        floats[:, 4] = areas
        int_rows.append(ints)
        float_rows.append(floats)
        crowd_rows.append(inst.iscrowd[rows])
        keypoint_rows.append((index, image_id, len(rows),
                              None if inst.keypoints is None or not inst.keypoints.shape[1]
                              else inst.keypoints[rows]))
        image_rows.append([h, w, image_offset, start, n, image_id])
        image_offset += h * w * 3 if copy_images else 0
        start += n
    num = start
    table_bytes = num * 8 * (INT_COLUMNS + FLOAT_COLUMNS)
    total = table_bytes + image_offset + crop_offset
    segment = None
    if shared:
        # in a DataLoader worker: written straight into shared memory, so sending the batch to
        # the main process copies nothing
        if shared == "pooled":
            tensor, segment = buffers.batch_buffer(total)
        else:
            tensor = torch.empty(0, dtype=torch.uint8).set_(
                torch.UntypedStorage._new_shared(max(total, 1)))[:total]
    elif pin:
        tensor = torch.empty(total, dtype=torch.uint8, pin_memory=True)
    else:  # reused host memory (a fresh buffer can pay a page fault per 4 KiB written)
        tensor = buffers.host_empty((total,), torch.uint8)
    buffer = tensor.numpy()
    if num:
        buffer[: num * 8 * INT_COLUMNS].view(np.int64)[:] = np.concatenate(int_rows).reshape(-1)
        buffer[num * 8 * INT_COLUMNS : table_bytes].view(np.float64)[:] = (
            np.concatenate(float_rows).reshape(-1))
    position = table_bytes
    for image in images if copy_images else ():
        size = image.size
        buffer[position : position + size].reshape(image.shape)[:] = image
        position += size
    for crop in crops:
        size = crop.size
        if size:
            buffer[position : position + size] = crop.reshape(-1)
            position += size
    image_table = np.asarray(image_rows, dtype=np.int64).reshape(-1, 6)
    iscrowd = np.concatenate(crowd_rows) if crowd_rows else np.zeros(0, dtype=bool)
    return PackedBatch(tensor, image_table, num, image_offset, crop_offset, iscrowd, drops,
                       _stack_keypoints(keypoint_rows, num), segment,
                       None if copy_images else [np.ascontiguousarray(im) for im in images])


def _stack_keypoints(rows: list[tuple[int, int, int, np.ndarray | None]], num: int
                     ) -> np.ndarray | None:
    """The kept instances' keypoints as one ``(N, K, 3)`` array; samples without keypoints
    give visibility 0 rows; two numbers of keypoints in one batch are refused."""
    counts = sorted({kp.shape[1] for _, _, _, kp in rows if kp is not None})
    if not counts:
        return None
    if len(counts) > 1:
        index, image_id = next((i, d) for i, d, _, kp in rows
                               if kp is not None and kp.shape[1] == counts[-1])
        raise CollateError(f"samples of one batch have {counts} keypoints per instance; one "
                           "batch takes one keypoint layout",
                           Location(sample_index=index, image_id=image_id))
    k = counts[0]
    parts = [np.zeros((n, k, 3), np.float32) if kp is None else kp.astype(np.float32, copy=False)
             for _, _, n, kp in rows]
    return np.concatenate(parts).reshape(num, k, 3)

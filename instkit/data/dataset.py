"""``InstanceDataset``: a torch ``Dataset`` of ``Sample``s over any instkit source.

Sources: a ``CocoDataset`` (its annotations live in a few flat numpy arrays, so forked
DataLoader workers share them copy-on-write instead of each holding a copy of the annotation
file), a Hugging Face ``datasets.Dataset`` in the Transformers guide's layout (Arrow, memory
mapped; rows decoded on access through ``instkit.io.hf``), an ``HFDataset``, or any sequence of
``Sample``s. Images load lazily in ``__getitem__``, in the worker that asks for them.

Augmentation is reproducible: an instkit transform (one that takes ``seed=``) is called with a
seed derived from ``(seed, epoch, index)``, so a sample's augmentation depends on neither the
worker that made it nor the order of the batches. The epoch lives in shared memory, so
``set_epoch`` reaches persistent workers too. A mixing transform (``needs_pool``) is bound to
the dataset's source with ``with_pool`` once, so its partners come from the same data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from instkit.errors import InstkitError, Location, require
from instkit.sample import Sample

if TYPE_CHECKING:
    import torch
else:  # at run time, a clear error naming the extra when torch is missing
    torch = require("torch", "torch")


class DatasetError(InstkitError, ValueError):
    """A source or transform that does not give ``Sample``s; names the index and image_id."""


def _is_hf_dataset(source: Any) -> bool:
    module = type(source).__module__ or ""
    return module.startswith("datasets.") and hasattr(source, "features")


def _accepts_seed(transform: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def leading_resize(transform: Any) -> tuple[int, int] | None:
    """``(height, width)`` when ``transform``'s first step is a fixed-size resize
    (albumentationsx ``Resize`` inside an instkit ``Augment``, e.g. the ``evaluation`` preset)."""
    steps = getattr(transform, "transforms", None)
    if not steps:
        return None
    first = steps[0]
    if type(first).__name__ == "Resize" and getattr(first, "p", 1.0) >= 1.0:
        height, width = getattr(first, "height", None), getattr(first, "width", None)
        if isinstance(height, int) and isinstance(width, int):
            return height, width
    return None


def reduced_sample(sample: Sample, at_least: tuple[int, int]) -> Sample:
    """``sample`` with its JPEG decoded at 1/2, 1/4 or 1/8 scale (the smallest keeping both
    sides at least ``at_least``) and its instances mapped to that image; ``sample`` itself when
    its image is already loaded, is not a JPEG, or is not at least twice that size.

    The decoder averages k x k pixel blocks, so pixel ``(r, c)`` of the reduced image covers
    ``[c k, (c + 1) k) x [r k, (r + 1) k)`` of the original: masks, boxes and keypoints are
    scaled by the reduced size over the original (``ceil(W / k) / W`` across, exactly ``1/k``
    when k divides the side; otherwise the far edge is off by under one original pixel).
    Polygons stay polygons (scaled exactly), RLE and bitmap masks become bitmaps sampled at
    the reduced pixels' centres.
    """
    from instkit.masks import BitmapMask, Masks, PolygonMask, rle_crop
    from instkit.sample import load_image
    from instkit.transforms.geometry import Homography, map_points_centre, warp_item, warp_polygons

    if sample.image_loaded or sample.image_path is None:
        return sample
    h, w = sample.image_size
    if h < 2 * at_least[0] or w < 2 * at_least[1]:
        return sample
    image, notes = load_image(sample.image_path, at_least=at_least)
    if image.shape[:2] == (h, w):
        return sample
    rh, rw = int(image.shape[0]), int(image.shape[1])
    sx, sy = rw / w, rh / h
    move = Homography.scale_translate(sx, 0.0, sy, 0.0, (rh, rw))
    inst = sample.instances
    masks = None
    if inst.masks is not None:
        items = list(inst.masks.items)
        polygons = [i for i, item in enumerate(items) if isinstance(item, PolygonMask)]
        others = [i for i in range(len(items)) if i not in set(polygons)]
        counts = inst.masks[others].rle_counts() if any(
            not isinstance(items[i], BitmapMask) for i in others) else []
        out: list[Any] = list(items)
        shapes = [item for item in items if isinstance(item, PolygonMask)]
        for i, (item, _) in zip(polygons, warp_polygons(shapes, move, "centre"), strict=True):
            out[i] = item if item is not None else BitmapMask(np.zeros((0, 0), bool), (0, 0))
        for j, i in enumerate(others):
            source = items[i] if isinstance(items[i], BitmapMask) else rle_crop(counts[j], (h, w))
            moved, _ = warp_item(source, move, "centre")
            out[i] = moved if moved is not None else BitmapMask(np.zeros((0, 0), bool), (0, 0))
        masks = Masks(out, (rh, rw))
    keypoints = None
    if inst.keypoints is not None:
        keypoints = inst.keypoints.copy()
        flat = keypoints[:, :, :2].reshape(-1, 2).astype(np.float64)
        keypoints[:, :, :2] = map_points_centre(move, flat).reshape(keypoints.shape[0], -1, 2)
    boxes = inst.boxes * np.array([sx, sy, sx, sy], np.float32)
    moved_instances = inst.replace(image_size=(rh, rw), boxes=boxes, masks=masks,
                                   keypoints=keypoints)
    meta = sample.meta.copy()
    meta.notes.extend(notes)
    return Sample.from_array(image, moved_instances, sample.image_id, meta)


def apply_transform(transform: Any, sample: Sample, seed: int | None, where: Location) -> Sample:
    """``transform(sample)`` (with ``seed=`` when given), checked to give a ``Sample``."""
    out = transform(sample) if seed is None else transform(sample, seed=seed)
    if not isinstance(out, Sample):
        raise DatasetError(f"the transform returned a {type(out).__name__}, not a Sample", where)
    return out


def derive_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])
               .generate_state(1)[0])


class InstanceDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> ``Sample`` (transformed). See the module docstring.

    ``source``: ``CocoDataset``, ``datasets.Dataset`` (guide layout), ``HFDataset`` or a sequence
    of ``Sample``s. ``transform``: ``transform(sample, *, seed=...) -> Sample`` (an instkit
    transform) or any ``transform(sample) -> Sample``. ``categories`` is used for HF datasets.
    ``reduced_decode``: ``True`` decodes JPEGs at 1/2, 1/4 or 1/8 scale when the transform
    starts with a resize to under half the image (``leading_resize``), ``(h, w)`` for any
    transform whose output needs at least that much; see ``reduced_sample``.
    """

    def __init__(self, source: Any, transform: Callable[..., Sample] | None = None, *,
                 seed: int = 0, categories: Any = None,
                 reduced_decode: bool | tuple[int, int] = False) -> None:
        if _is_hf_dataset(source):
            from instkit.io.hf import read_hf

            source = read_hf(source, categories=categories)
        if not isinstance(source, Sequence) and not (
                hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise TypeError(f"InstanceDataset needs a sequence of Samples, a CocoDataset or a "
                            f"datasets.Dataset; got {type(source).__name__}")
        self.source = source
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        if transform is not None and getattr(transform, "needs_pool", False):
            transform = transform.with_pool(source)  # type: ignore[attr-defined]
        self.transform = transform
        self._seeded = transform is not None and _accepts_seed(transform)
        if isinstance(reduced_decode, tuple):
            self.decode_at_least: tuple[int, int] | None = (int(reduced_decode[0]),
                                                            int(reduced_decode[1]))
        else:
            self.decode_at_least = leading_resize(transform) if reduced_decode else None

    @property
    def categories(self) -> Any:
        return getattr(self.source, "categories", None)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (seen by persistent workers too)."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        if isinstance(index, (np.integer, torch.Tensor)):
            index = int(index)
        if not isinstance(index, int):
            raise TypeError(f"index an InstanceDataset with an int, got {type(index).__name__}")
        sample = self.source[index]
        if not isinstance(sample, Sample):
            raise DatasetError(f"the source gave a {type(sample).__name__}, not a Sample",
                               Location(sample_index=index))
        if self.decode_at_least is not None:
            sample = reduced_sample(sample, self.decode_at_least)
        if self.transform is None:
            return sample
        seed = derive_seed(self.seed, self.epoch, index) if self._seeded else None
        return apply_transform(self.transform, sample, seed,
                               Location(sample_index=index, image_id=sample.image_id))

    def __repr__(self) -> str:
        return (f"InstanceDataset({self.source!r}, transform={self.transform!r}, "
                f"seed={self.seed}, epoch={self.epoch})")


def hf_transform(transform: Callable[..., Sample] | None = None, categories: Any = None,
                 *, seed: int | None = None) -> Callable[[Mapping[str, list[Any]]], dict[str, Any]]:
    """A function for ``datasets.Dataset.with_transform``: a batch of guide-layout rows ->
    ``{"sample": [Sample, ...]}`` (optionally transformed). ``Collator`` accepts these items::

        ds = ds.with_transform(hf_transform(train_default()))
        loader = DataLoader(ds, batch_size=8, collate_fn=Collator("rfdetr"))
    """
    from instkit.io.hf import hf_row_to_sample

    seeded = transform is not None and _accepts_seed(transform)

    def apply(batch: Mapping[str, list[Any]]) -> dict[str, Any]:
        columns = list(batch)
        length = len(batch[columns[0]]) if columns else 0
        samples = []
        for k in range(length):
            row = {c: batch[c][k] for c in columns}
            sample = hf_row_to_sample(row, categories)
            if transform is not None:
                if seeded and seed is not None:
                    sample = transform(sample, seed=derive_seed(seed, 0, int(sample.image_id)))
                else:
                    sample = transform(sample)
            samples.append(sample)
        return {"sample": samples}

    return apply


__all__ = ["DatasetError", "InstanceDataset", "derive_seed", "hf_transform", "leading_resize",
           "reduced_sample"]

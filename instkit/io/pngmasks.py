"""Per-instance binary PNG masks: ``images/<name>``, ``masks/<stem>/<ann_id>_<category_id>[_crowd].png``
(0 background, 255 object, image-sized) and ``categories.json`` (COCO ``categories``). ``<name>``
keeps the image's folders (``images/a/1.jpg``, ``masks/a/1/``), so no two images merge.

Masks are exact (pixels). Not stored: keypoints (counted as ``keypoints_dropped``), the file's
own bbox/area (recomputed from the mask on reading), polygon vertices (masks come back as bitmaps).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from instkit.categories import Categories
from instkit.errors import FormatError, InstkitError, Location
from instkit.instances import Instances
from instkit.io.files import staged_folder
from instkit.io.yolo import IMAGE_SUFFIXES, OutputNames, image_ids, save_image
from instkit.masks import Masks, tight_bitmap
from instkit.sample import Sample, SampleMeta, open_image

_NAME = re.compile(r"^(?P<ann>-?\d+)_(?P<cat>-?\d+)(?P<crowd>_crowd)?\.png$")


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """An ``(H, W)`` bool mask as an 8-bit PNG, 0 and 255."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path)


def read_mask_png(path: Path, size: tuple[int, int], where: Location) -> np.ndarray:
    """A binary PNG -> ``(H, W)`` bool (any non-zero pixel is the object)."""

    if not path.is_file():
        raise FormatError(f"mask file not found: {path}", where)
    with open_image(path, where) as image:
        array = np.asarray(image.convert("L"))
    if array.shape != tuple(size):
        raise FormatError(f"mask {path.name} is {array.shape[0]}x{array.shape[1]} (HxW), the image "
                          f"{size[0]}x{size[1]}", where)
    return array > 0


def write_pngmasks(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
                   categories: Categories | None = None) -> dict[str, int]:
    """Write images, one PNG per instance mask and ``categories.json``; returns counts.

    The folder is written beside ``out_dir`` and renamed in when complete."""
    with staged_folder(out_dir) as out:
        return _write_pngmasks(samples, out, categories)


def _write_pngmasks(samples: Iterable[Sample], out: Path, categories: Categories | None) -> dict[str, int]:
    categories = categories or getattr(samples, "categories", None)
    counts = {"images": 0, "objects": 0, "keypoints_dropped": 0}
    names = OutputNames()
    for sample in samples:
        categories = categories or sample.meta.categories
        if categories is None:
            raise InstkitError("write_pngmasks needs categories")
        name = names.claim(sample)
        save_image(sample, out / "images" / name)
        folder = out / "masks" / PurePosixPath(name).with_suffix("")
        inst = sample.instances
        if inst.masks is None:
            raise InstkitError("PNG masks need masks", Location(image_id=sample.image_id))
        if inst.keypoints is not None:
            counts["keypoints_dropped"] += int((inst.keypoints[:, :, 2] > 0).any(axis=1).sum())
        dense = inst.masks.to_dense()
        for i in range(len(inst)):
            suffix = "_crowd" if inst.iscrowd[i] else ""
            cat = categories.id_of(int(inst.labels[i]))
            write_mask_png(dense[i], folder / f"{int(inst.ids[i])}_{cat}{suffix}.png")
            counts["objects"] += 1
        counts["images"] += 1
    if categories is None:
        raise InstkitError("write_pngmasks needs categories")
    (out / "categories.json").write_text(json.dumps(categories.to_coco()))
    return counts


def read_pngmasks(root: str | os.PathLike[str]) -> list[Sample]:
    """Read a folder written by ``write_pngmasks``; image ids are the numeric stems where all are
    numeric and distinct, else 1..N in path order. Images in sub-folders of ``images/`` keep their
    relative path as ``file_name`` (their masks are in the same sub-folders of ``masks/``)."""
    from instkit.io.files import load_json

    base = Path(root)
    categories = Categories.from_coco(load_json(base / "categories.json"), file=str(base / "categories.json"))
    images = sorted(p for p in (base / "images").rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    samples = []
    for image, image_id in zip(images, image_ids(images), strict=True):
        with open_image(image, Location(file=str(image))) as opened:
            width, height = opened.size
        relative = image.relative_to(base / "images")
        folder = base / "masks" / relative.with_suffix("")
        files = sorted(folder.glob("*.png"), key=lambda p: p.name) if folder.is_dir() else []
        items, labels, ids, crowd = [], [], [], []
        for path in files:
            where = Location(file=str(path), image_id=image_id)
            match = _NAME.match(path.name)
            if not match:
                raise FormatError("mask file name must be <annotation_id>_<category_id>[_crowd].png", where)
            if not categories.has_id(int(match["cat"])):
                raise FormatError(f"unknown category id {match['cat']}", where)
            items.append(tight_bitmap(read_mask_png(path, (height, width), where)))
            labels.append(categories.label_of(int(match["cat"])))
            ids.append(int(match["ann"]))
            crowd.append(bool(match["crowd"]))
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        masks = Masks([items[i] for i in order], (height, width))
        instances = Instances(image_size=(height, width), masks=masks,
                              labels=np.asarray(labels, dtype=np.int64)[order],
                              ids=np.asarray(ids, dtype=np.int64)[order],
                              iscrowd=np.asarray(crowd, dtype=bool)[order])
        meta = SampleMeta(source=str(base), file_name=relative.as_posix(), original_size=(height, width),
                          categories=categories)
        samples.append(Sample(instances, image_id, meta, str(image)))
    return samples


__all__ = ["read_mask_png", "read_pngmasks", "write_mask_png", "write_pngmasks"]

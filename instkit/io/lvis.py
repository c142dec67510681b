"""LVIS (Gupta et al., CVPR 2019): COCO instances plus the federated-annotation fields.

What LVIS adds to COCO, and how instkit keeps it:

- images: ``neg_category_ids`` (categories verified absent) and ``not_exhaustive_category_ids``
  (categories annotated but maybe not every instance): kept in each sample's
  ``meta.extra["coco_image"]`` (as ``read_coco`` keeps every extra image field) and written back;
  ``instkit.lvis.evaluate_lvis`` uses them. LVIS v1 images have no ``file_name``, only
  ``coco_url``: the file name is taken as its last two parts (``val2017/000000397133.jpg``,
  relative to ``images``, as detectron2 does) and left out again on writing.
- categories: ``frequency`` (``r``/``c``/``f``: rare, common, frequent), ``synset``,
  ``synonyms``, ``def``, ``image_count``, ``instance_count``: kept in ``Category.extra``.
- annotations have no ``iscrowd`` (0 on reading).

``save_lvis`` writes what a source without them lacks: each image's two lists (empty:
``image_lists_added``) and each category's ``frequency`` from the number of images it appears
in, by the LVIS rule (1-10 rare, 11-100 common, more frequent: ``frequency_computed``), with
``image_count`` / ``instance_count``. Crowd regions are written as ordinary objects (``crowd``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from instkit.categories import Categories, Category
from instkit.errors import FormatError, InstkitError, Location, show_value
from instkit.io.coco import CocoDataset
from instkit.io.files import atomic_write, load_json
from instkit.sample import Sample

IMAGE_LISTS = ("neg_category_ids", "not_exhaustive_category_ids")
FREQUENCIES = ("r", "c", "f")


def file_name_from_url(url: str) -> str:
    """``http://images.cocodataset.org/val2017/000000397133.jpg`` -> ``val2017/000000397133.jpg``."""
    return "/".join(PurePosixPath(url.split("?")[0]).parts[-2:])


def frequency_of(image_count: int) -> str:
    """LVIS's frequency tag for a category in ``image_count`` training images."""
    return "r" if image_count <= 10 else "c" if image_count <= 100 else "f"


def _check(document: Any, file: str) -> None:
    """LVIS's own fields: the image lists hold known category ids; frequencies are r/c/f."""
    if not isinstance(document, dict):
        return  # read_coco says what is wrong
    categories = document.get("categories")
    known = {c["id"] for c in categories if isinstance(c, dict) and isinstance(c.get("id"), int)} \
        if isinstance(categories, list) else set()
    for k, category in enumerate(categories if isinstance(categories, list) else []):
        if isinstance(category, dict) and "frequency" in category \
                and category["frequency"] not in FREQUENCIES:
            raise FormatError(f"frequency must be one of r, c, f, got "
                              f"{show_value(category['frequency'])}",
                              Location(file=file, json_path=f"categories[{k}].frequency"))
    images = document.get("images")
    for k, image in enumerate(images if isinstance(images, list) else []):
        if not isinstance(image, dict):
            continue
        image_id = image.get("id") if isinstance(image.get("id"), int) else None
        for key in IMAGE_LISTS:
            if key not in image:
                continue
            value = image[key]
            at = Location(file=file, json_path=f"images[{k}].{key}", image_id=image_id)
            if not isinstance(value, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise FormatError(f"{key} must be a list of category ids, got "
                                  f"{show_value(value)}", at)
            unknown = [v for v in value if v not in known]
            if unknown:
                raise FormatError(f"{key} names unknown category id(s) {unknown[:5]}", at)
        if "file_name" not in image and isinstance(image.get("coco_url"), str):
            image["file_name"] = file_name_from_url(image["coco_url"])


def read_lvis(path: str | os.PathLike[str], images: str | os.PathLike[str] | None = None, *,
              strict: bool = True) -> CocoDataset:
    """Read an LVIS file (v0.5 or v1) as a ``CocoDataset``; ``images`` is the folder the file
    names are relative to (default: the file's folder; for LVIS v1, the folder holding COCO's
    ``train2017/`` and ``val2017/``; ``images/`` beside the file when the images are there, as
    ``save_lvis`` writes them). Errors name the file, JSON path and image id."""
    from instkit.validate import rules

    file = os.fspath(path)
    document = rules.load_document(file)
    _check(document, file)
    with open(file, "rb") as handle:
        raw = handle.read()
    if images is not None and not Path(images).is_dir():
        raise InstkitError("image folder not found", Location(file=os.fspath(images)))
    from instkit.io.registry import images_beside

    root = os.fspath(images) if images is not None else str(Path(file).resolve().parent)
    dataset = CocoDataset(document, file=file, image_root=root, strict=strict, raw=raw)
    return images_beside(dataset, Path(file)) if images is None else dataset


class _Completed:
    """The samples with LVIS's image lists added where missing, counting images, objects and
    the per-category image and instance counts."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._samples = samples
        self.counts = {"images": 0, "objects": 0, "crowd": 0, "image_lists_added": 0}
        self.images_per_label: Counter[int] = Counter()
        self.objects_per_label: Counter[int] = Counter()
        self.derived: set[int] = set()

    def __iter__(self) -> Iterator[Sample]:
        for sample in self._samples:
            inst = sample.instances
            self.counts["images"] += 1
            self.counts["objects"] += len(inst)
            self.counts["crowd"] += int(inst.iscrowd.sum())
            labels = inst.labels.tolist()
            self.objects_per_label.update(labels)
            self.images_per_label.update(set(labels))
            image = dict(sample.meta.extra.get("coco_image", {}))
            missing = [key for key in IMAGE_LISTS if key not in image]
            if missing:
                self.counts["image_lists_added"] += 1
                for key in missing:
                    image[key] = []
                meta = sample.meta.copy()
                meta.extra["coco_image"] = image
                sample = sample.replace(meta=meta)
            url = image.get("coco_url")
            if isinstance(url, str) and sample.meta.file_name == file_name_from_url(url):
                self.derived.add(int(sample.image_id))
            yield sample


def lvis_categories(categories: Categories, images_per_label: Counter[int],
                    objects_per_label: Counter[int]) -> tuple[Categories, int]:
    """``categories`` with ``frequency`` (and the two counts) added where missing; returns the
    table and how many frequencies were computed."""
    computed = 0
    out = []
    for label, category in enumerate(categories):
        extra = dict(category.extra)
        if "frequency" not in extra:
            extra["frequency"] = frequency_of(images_per_label.get(label, 0))
            computed += 1
        extra.setdefault("image_count", int(images_per_label.get(label, 0)))
        extra.setdefault("instance_count", int(objects_per_label.get(label, 0)))
        out.append(Category(id=category.id, name=category.name,
                            supercategory=category.supercategory, keypoints=category.keypoints,
                            skeleton=category.skeleton, extra=extra))
    return Categories(out), computed


def save_lvis(samples: Iterable[Sample], path: str | os.PathLike[str],
              categories: Categories | None = None, *,
              images_dir: str | os.PathLike[str] | None = None,
              mask_format: str = "auto") -> dict[str, int]:
    """Write an LVIS file (and the images under ``images_dir``, default ``images/`` beside it,
    which must be new or empty) atomically; returns counts (see the module docstring)."""
    from instkit.io.coco import write_coco
    from instkit.io.registry import ImageCopier, distinct_names, document_fields, images_folder_for

    target = Path(path)
    out_images = images_folder_for(target, images_dir)
    categories = categories or getattr(samples, "categories", None)
    copier = ImageCopier(distinct_names(samples), out_images)
    completed = _Completed(copier)
    write_coco(completed, target, categories, mask_format=mask_format, **document_fields(samples))
    # The categories' frequencies need the counts of the whole pass: the table is finished after
    # it, and the file rewritten once (with the file names LVIS v1 does not have left out).
    document = load_json(target)
    table = categories or Categories.from_coco(document["categories"], file=str(target))
    finished, computed = lvis_categories(table, completed.images_per_label,
                                         completed.objects_per_label)
    document["categories"] = finished.to_coco()
    for image in document["images"]:
        if image["id"] in completed.derived:
            del image["file_name"]
    with atomic_write(target) as handle:
        json.dump(document, handle, allow_nan=False, separators=(",", ":"))
    return {**completed.counts, "empty_masks_dropped": copier.empty_masks_dropped,
            "frequency_computed": computed}


__all__ = ["file_name_from_url", "frequency_of", "lvis_categories", "read_lvis", "save_lvis"]

"""Opening datasets for the loops, and checking a dataset's classes against a model's."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import InstkitError, Location
from instkit.sample import Sample
from instkit.sample import categories_of as sample_categories


def open_dataset(path: str | os.PathLike[str], images: str | os.PathLike[str] | None = None,
                 *, split: str | None = None) -> Sequence[Sample]:
    """A dataset in any format of ``instkit.io.registry`` (detected): a COCO/LVIS annotation
    file (images under ``images``, default: beside the file), a Hugging Face folder written by
    ``save_to_disk`` (``split``), YOLO-seg (``split``), LabelMe, CVAT, SA-1B..."""
    from instkit.io import registry

    location = Location(file=os.fspath(path))
    target = Path(path)
    if not target.exists():
        raise InstkitError("dataset not found", location)
    if images is not None and not Path(images).is_dir():
        raise InstkitError("image folder not found", Location(file=os.fspath(images)))
    return registry.open(target, images=images, split=split)


def categories_of(data: Any) -> Categories:
    found = sample_categories(data)
    if found is None:
        raise InstkitError("the dataset carries no category table")
    return found


def label_map(model_categories: Categories, data_categories: Categories,
              where: str | None = None) -> np.ndarray:
    """Model label -> dataset label (``-1`` for a model class the dataset lacks).

    Raises when the dataset has a class the model does not know (by category id and name).
    """
    unknown = []
    for category in data_categories:
        if not model_categories.has_id(category.id) or \
                model_categories[model_categories.label_of(category.id)].name != category.name:
            unknown.append(f"{category.id}:{category.name}")
    if unknown:
        known = ", ".join(f"{c.id}:{c.name}" for c in model_categories)
        raise InstkitError(
            f"the dataset has {len(unknown)} class(es) the model does not know: "
            f"{', '.join(unknown[:10])}{'...' if len(unknown) > 10 else ''} (the model knows {known})",
            Location(file=where))
    mapping = np.full(len(model_categories), -1, dtype=np.int64)
    for label, category in enumerate(model_categories):
        if data_categories.has_id(category.id):
            mapping[label] = data_categories.label_of(category.id)
    return mapping


def check_image_files(data: Any, flag: str, role: str) -> None:
    """Raise before any model is built when the images of a COCO dataset are not where its
    ``file_name``s point (the usual cause: the image folder is not beside the annotation file)."""
    image_path = getattr(data, "image_path", None)
    if image_path is None:  # a Hugging Face dataset carries its images
        return
    missing = []
    for index in range(len(data)):
        path = image_path(index)
        if path is None or not os.path.isfile(path):
            missing.append(str(path))
    if missing:
        root = getattr(data, "image_root", None)
        raise InstkitError(
            f"{len(missing)} of {len(data)} {role} images not found under {root} (first: "
            f"{missing[0]}); pass the folder the file_names are relative to with {flag}",
            Location(file=getattr(data, "file", None)))

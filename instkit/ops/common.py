"""What the dataset operations share: the drop log, per-class counts, reading and writing COCO.

Every operation returns a result object with ``as_dict()`` (JSON-ready) and ``to_text()``; every
image or annotation it leaves out is counted in a ``DropLog`` under a reason, with its ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import InstkitError, Location
from instkit.sample import Sample

TEXT_EXAMPLES = 10  # ids shown per reason in text; JSON lists them all


@dataclass
class DropLog:
    """Images and annotations left out, by reason; each with the ids it concerns."""

    images: dict[str, list[int]] = field(default_factory=dict)
    annotations: dict[str, list[int]] = field(default_factory=dict)

    def image(self, reason: str, image_id: int) -> None:
        self.images.setdefault(reason, []).append(int(image_id))

    def annotation(self, reason: str, annotation_ids: Iterable[int]) -> None:
        ids = [int(i) for i in annotation_ids]
        if ids:
            self.annotations.setdefault(reason, []).extend(ids)

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.images.values())

    @property
    def num_annotations(self) -> int:
        return sum(len(v) for v in self.annotations.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": {reason: {"count": len(ids), "ids": ids}
                       for reason, ids in sorted(self.images.items())},
            "annotations": {reason: {"count": len(ids), "ids": ids}
                            for reason, ids in sorted(self.annotations.items())},
        }

    def text_lines(self) -> list[str]:
        lines: list[str] = []
        for kind, table in (("images", self.images), ("annotations", self.annotations)):
            for reason, ids in sorted(table.items()):
                shown = ", ".join(str(i) for i in ids[:TEXT_EXAMPLES])
                more = f", ... (+{len(ids) - TEXT_EXAMPLES})" if len(ids) > TEXT_EXAMPLES else ""
                lines.append(f"  dropped {len(ids):>6} {kind:<11} {reason}  [{shown}{more}]")
        if not lines:
            lines.append("  nothing dropped")
        return lines


def class_counts(samples: Iterable[Sample], categories: Categories) -> dict[str, dict[str, int]]:
    """Per category name: ``images`` holding it and its ``instances`` (crowds included)."""
    images = np.zeros(len(categories), dtype=np.int64)
    instances = np.zeros(len(categories), dtype=np.int64)
    for sample in samples:
        labels = sample.instances.labels
        if labels.size:
            instances += np.bincount(labels, minlength=len(categories))
            images[np.unique(labels)] += 1
    return {category.name: {"images": int(images[label]), "instances": int(instances[label])}
            for label, category in enumerate(categories)}


def read_input(path: str | os.PathLike[str], images: str | os.PathLike[str] | None = None,
               *, strict: bool = True) -> Any:
    """A COCO file as a ``CocoDataset`` (images resolved in ``images``, else beside the file)."""
    from instkit.io.coco import read_coco

    return read_coco(path, images, strict=strict)


def write_samples(samples: Sequence[Sample], path: str | os.PathLike[str], categories: Categories,
                  *, inputs: Sequence[str | os.PathLike[str] | None], source: Any = None,
                  info: Any = None, licenses: Any = None, renumber_ids: bool = False) -> Path:
    """Write ``samples`` as COCO at ``path``, atomically, refusing to write over an input.

    ``source``: the ``CocoDataset`` they came from, whose ``info``, ``licenses`` and other
    top-level keys are kept (``info`` / ``licenses`` given here win)."""
    from instkit.io.coco import write_coco
    from instkit.io.files import refuse_overwrite

    refuse_overwrite([path], list(inputs), what="output")
    return write_coco(
        samples, path, categories,
        info=info if info is not None else getattr(source, "info", None),
        licenses=licenses if licenses is not None else getattr(source, "licenses", None),
        extra_fields=getattr(source, "extra_fields", None) or {}, renumber_ids=renumber_ids)


def relabel(sample: Sample, label_map: np.ndarray, categories: Categories) -> Sample:
    """``sample`` with its labels sent through ``label_map`` (old label -> new label)."""
    inst = sample.instances
    meta = sample.meta.copy()
    meta.categories = categories
    new_labels = label_map[inst.labels] if len(inst) else inst.labels
    return sample.replace(instances=inst.replace(labels=new_labels), meta=meta)


def parse_ratios(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` -> ``{"train": 0.8, ...}`` (normalised to sum 1)."""
    ratios: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not name:
            raise InstkitError(f"ratio {part!r} is not NAME=VALUE (e.g. train=0.8)")
        if name in ratios:
            raise InstkitError(f"split {name!r} is named twice in {text!r}")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise InstkitError(f"split name {name!r}: use letters, digits, '-', '_' or '.'")
        try:
            number = float(value)
        except ValueError:
            raise InstkitError(f"ratio of {name!r} is not a number: {value!r}") from None
        if not number > 0 or not np.isfinite(number):
            raise InstkitError(f"ratio of {name!r} must be a positive number, got {value!r}")
        ratios[name] = number
    if not ratios:
        raise InstkitError(f"no ratios in {text!r} (e.g. train=0.8,val=0.1,test=0.1)")
    total = sum(ratios.values())
    if all(v <= 1 for v in ratios.values()) and abs(total - 1) > 1e-6:
        # Fractions that do not sum to 1 are more likely a typo than weights.
        raise InstkitError(f"ratios {text!r} sum to {total:g}, not 1 (give fractions that sum "
                           "to 1, or weights such as train=8,val=1,test=1)")
    return {name: value / total for name, value in ratios.items()}


def image_location(sample: Sample) -> Location:
    return Location(file=sample.meta.source, image_id=int(sample.image_id))


__all__ = ["DropLog", "class_counts", "parse_ratios", "read_input", "relabel", "write_samples"]

"""Keep a subset of a COCO dataset: by class, area, crowd flag, image size, validation finding.

Image-level rules go first (a dropped image takes its annotations with it, counted under
``in-dropped-image``), then each annotation is judged by the first rule it fails, then images
left without annotations are kept or dropped (``empty``). Every dropped item is counted with
its reason and id.

Findings are those of the validation rulebook (``instkit.validate.rules``, codes in
docs/validate.md): ``drop_findings_in`` runs the same checks as ``instkit validate`` and says
which images and annotations carry a finding with one of the given codes. A file with
error-level findings is read leniently only when every such code is named (the lenient reader
leaves those items out); an error that is not named stops the filter, as ``read_coco`` would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import InstkitError
from instkit.ops.common import DropLog, class_counts, relabel
from instkit.sample import Sample

IMAGE_FILE_CODES = frozenset({"image-missing", "image-unreadable", "image-size-mismatch"})
_ENTRY = re.compile(r"^(images|annotations|categories)\[(\d+)\]")


@dataclass
class FindingDrops:
    """What ``drop_findings_in`` found: the images and annotations to drop, by code."""

    dataset: Any
    codes: list[str] = field(default_factory=list)  # the codes asked for
    images: dict[int, str] = field(default_factory=dict)  # image id -> code
    annotations: dict[int, str] = field(default_factory=dict)  # annotation id -> code
    read_drops: DropLog = field(default_factory=DropLog)  # left out by the lenient reader
    not_applicable: dict[str, int] = field(default_factory=dict)  # code -> findings on neither


def drop_findings_in(path: str | os.PathLike[str], codes: Iterable[str],
                     images: str | os.PathLike[str] | None = None, *,
                     workers: int | None = None) -> FindingDrops:
    """Read a COCO file and find the images and annotations with a finding in ``codes``.

    Image-file codes (``image-missing``, ``image-unreadable``, ``image-size-mismatch``) check the
    files in ``images`` (default: beside the annotation file)."""
    from pathlib import Path

    from instkit.io.coco import read_coco
    from instkit.validate.checks import check_document as check_with_files
    from instkit.validate.rules import RULES, check_document, load_document

    wanted = set(codes)
    unknown = sorted(wanted - set(RULES))
    if unknown:
        raise InstkitError(f"unknown finding code(s) {', '.join(unknown)}; the codes are listed "
                           "in docs/validate.md (instkit validate --format json shows them)")
    file = os.fspath(path)
    document = load_document(file)
    raw = Path(file).read_bytes()
    findings, _ = check_document(document, file=file, raw=raw)
    blocking: dict[str, int] = {}
    for finding in findings:
        if finding.severity == "error" and finding.code not in wanted:
            blocking[finding.code] = blocking.get(finding.code, 0) + 1
    if blocking:
        listed = ", ".join(f"{code} ({n})" for code, n in sorted(blocking.items()))
        raise InstkitError(f"{file} has errors the filter was not asked to drop: {listed}; add "
                           "--drop-finding CODE for each, or repair it with instkit validate --fix")
    lenient = any(f.severity == "error" for f in findings)
    dataset = read_coco(file, images, strict=not lenient)
    result = FindingDrops(dataset, sorted(wanted))
    for problem in getattr(dataset, "problems", []):
        match = _ENTRY.match(problem.location.json_path or "")
        reason = f"finding:{problem.code}" if problem.code in wanted \
            else f"finding:{problem.code} (follows from a dropped item)"
        if match and match.group(1) == "images":
            result.read_drops.image(reason, _id_at(document, "images", int(match.group(2))))
        elif match and match.group(1) == "annotations":
            result.read_drops.annotation(
                reason, [_id_at(document, "annotations", int(match.group(2)))])
        elif match:
            result.not_applicable[problem.code] = result.not_applicable.get(problem.code, 0) + 1
    if wanted & IMAGE_FILE_CODES:
        root = os.fspath(images) if images is not None else dataset.image_root
        findings, _ = check_with_files(document, file=file, raw=raw, images_dir=root,
                                       workers=workers)
    for finding in findings:
        if finding.code not in wanted or finding.severity == "error" and finding.code \
                not in IMAGE_FILE_CODES:
            continue  # error-level document findings: left out by the lenient reader above
        match = _ENTRY.match(finding.location.json_path or "")
        if match and match.group(1) == "annotations":
            result.annotations.setdefault(_id_at(document, "annotations", int(match.group(2))),
                                          finding.code)
        elif match and match.group(1) == "images":
            result.images.setdefault(_id_at(document, "images", int(match.group(2))), finding.code)
        else:
            result.not_applicable[finding.code] = result.not_applicable.get(finding.code, 0) + 1
    return result


def _id_at(document: Any, key: str, index: int) -> int:
    entry = document[key][index]
    value = entry.get("id") if isinstance(entry, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else -1


@dataclass
class FilterResult:
    samples: list[Sample]
    categories: Categories
    input_counts: dict[str, int]
    drops: DropLog
    criteria: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    output: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": "filter",
            "criteria": self.criteria,
            "input": self.input_counts,
            "kept": {"images": len(self.samples),
                     "annotations": sum(len(s.instances) for s in self.samples),
                     "categories": len(self.categories)},
            "dropped": self.drops.as_dict(),
            "per_class": class_counts(self.samples, self.categories),
            "notes": self.notes,
            "output": self.output,
        }

    def to_text(self) -> str:
        kept_ann = sum(len(s.instances) for s in self.samples)
        lines = [f"instkit filter: kept {len(self.samples)} of {self.input_counts['images']} "
                 f"images, {kept_ann} of {self.input_counts['annotations']} annotations"]
        shown = {k: v for k, v in self.criteria.items() if v not in (None, [], (), "keep", False)}
        if shown:
            lines.append("  criteria: " + "; ".join(f"{k}={v}" for k, v in shown.items()))
        lines += self.drops.text_lines()
        lines += [f"  note: {n}" for n in self.notes]
        if self.output:
            lines.append(f"  wrote {self.output}")
        return "\n".join(lines)


def _resolve_names(names: Sequence[str], categories: Categories, option: str) -> set[int]:
    known = {c.name: label for label, c in enumerate(categories)}
    missing = [n for n in names if n not in known]
    if missing:
        raise InstkitError(f"{option}: no category named {', '.join(map(repr, missing))} "
                           f"(categories: {', '.join(sorted(known)[:30])}"
                           f"{' ...' if len(known) > 30 else ''})")
    return {known[n] for n in names}


def _areas(sample: Sample) -> np.ndarray:
    """The COCO ``area`` of each annotation (the file's), else the mask's, else the box's."""
    inst = sample.instances
    area = np.full(len(inst), np.nan)
    file_area = inst.extras.get("coco_area")
    if file_area is not None:
        area = np.asarray(file_area, dtype=np.float64).copy()
    missing = np.isnan(area)
    if missing.any():
        if inst.masks is not None:
            area[missing] = inst.masks.area()[missing]
        else:
            boxes = inst.boxes.astype(np.float64)
            area[missing] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[missing]
    return area


def _mark(why: np.ndarray, rule: np.ndarray, reason: str) -> None:
    """Give ``reason`` to the rows that break ``rule`` and have no reason yet (first wins)."""
    why[(why == "") & rule] = reason


def filter_dataset(
    dataset: Sequence[Sample], *,
    keep_classes: Sequence[str] = (), drop_classes: Sequence[str] = (),
    min_area: float | None = None, max_area: float | None = None, crowd: str = "keep",
    min_width: int | None = None, min_height: int | None = None,
    max_width: int | None = None, max_height: int | None = None,
    findings: FindingDrops | None = None, empty: str = "keep",
    prune_categories: bool = False, categories: Categories | None = None,
) -> FilterResult:
    """Keep the images and annotations that pass every rule (see the module docstring).

    ``keep_classes`` / ``drop_classes``: category names. ``min_area`` / ``max_area``: COCO area
    (pixels; ``min <= area < max``, as COCO's area ranges). ``crowd``: ``keep`` / ``drop`` /
    ``only``. ``min_width`` ... ``max_height``: image size in pixels. ``findings``: from
    ``drop_findings_in``. ``empty``: images without annotations after filtering, ``keep`` /
    ``drop``. ``prune_categories``: leave the categories the class rules removed out of the
    output's table (ids unchanged)."""
    if crowd not in ("keep", "drop", "only"):
        raise InstkitError(f"crowd must be keep, drop or only, got {crowd!r}")
    if empty not in ("keep", "drop"):
        raise InstkitError(f"empty must be keep or drop, got {empty!r}")
    if keep_classes and drop_classes:
        raise InstkitError("give classes to keep or classes to drop, not both")
    if min_area is not None and max_area is not None and not min_area < max_area:
        raise InstkitError(f"min_area {min_area} must be below max_area {max_area}")
    cats = categories or getattr(dataset, "categories", None)
    if cats is None:
        raise InstkitError("filter_dataset needs the categories (pass categories=...)")
    kept_labels: set[int] | None = None
    if keep_classes:
        kept_labels = _resolve_names(keep_classes, cats, "--keep-class")
    elif drop_classes:
        kept_labels = set(range(len(cats))) - _resolve_names(drop_classes, cats, "--drop-class")
    out_categories = cats
    label_map: np.ndarray | None = None
    if prune_categories and kept_labels is not None:
        order = sorted(kept_labels)
        out_categories = Categories([cats[label] for label in order])
        label_map = np.full(len(cats), -1, dtype=np.int64)
        label_map[order] = np.arange(len(order))
    drops = DropLog()
    if findings is not None:
        for code, ids in findings.read_drops.images.items():
            for image_id in ids:
                drops.image(code, image_id)
        for code, ids in findings.read_drops.annotations.items():
            drops.annotation(code, ids)
    in_images = drops.num_images
    in_annotations = drops.num_annotations
    kept: list[Sample] = []
    for sample in dataset:
        inst = sample.instances
        in_images += 1
        in_annotations += len(inst)
        height, width = sample.image_size
        reason: str | None = None
        if findings is not None and int(sample.image_id) in findings.images:
            reason = f"finding:{findings.images[int(sample.image_id)]}"
        elif min_width is not None and width < min_width:
            reason = "image-narrower-than-min-width"
        elif min_height is not None and height < min_height:
            reason = "image-lower-than-min-height"
        elif max_width is not None and width > max_width:
            reason = "image-wider-than-max-width"
        elif max_height is not None and height > max_height:
            reason = "image-higher-than-max-height"
        if reason is not None:
            drops.image(reason, int(sample.image_id))
            drops.annotation(f"in-dropped-image ({reason})", inst.ids)
            continue
        why = np.full(len(inst), "", dtype=object)

        if findings is not None and findings.annotations:
            for i, annotation_id in enumerate(inst.ids.tolist()):
                if annotation_id in findings.annotations:
                    why[i] = f"finding:{findings.annotations[annotation_id]}"
        if kept_labels is not None:
            _mark(why, ~np.isin(inst.labels, sorted(kept_labels)), "class")
        if crowd == "drop":
            _mark(why, inst.iscrowd, "crowd")
        elif crowd == "only":
            _mark(why, ~inst.iscrowd, "not-crowd")
        if min_area is not None or max_area is not None:
            area = _areas(sample)
            if min_area is not None:
                _mark(why, area < min_area, "area-below-min")
            if max_area is not None:
                _mark(why, area >= max_area, "area-at-or-above-max")
        for reason in sorted(set(why.tolist()) - {""}):
            drops.annotation(reason, inst.ids[why == reason])
        keep = why == ""
        if not keep.all():
            sample = sample.replace(instances=inst[keep])
        if len(sample.instances) == 0 and empty == "drop":
            drops.image("no-annotations-in-input" if len(inst) == 0 else "no-annotations-left",
                        int(sample.image_id))
            continue
        if label_map is not None:
            sample = relabel(sample, label_map, out_categories)
        kept.append(sample)
    criteria = {"keep_classes": list(keep_classes), "drop_classes": list(drop_classes),
                "min_area": min_area, "max_area": max_area, "crowd": crowd,
                "min_width": min_width, "min_height": min_height, "max_width": max_width,
                "max_height": max_height, "empty": empty, "prune_categories": prune_categories,
                "drop_findings": findings.codes if findings is not None else []}
    notes = []
    if findings is not None:
        notes += [f"{n} {code} finding(s) are on neither an image nor an annotation: not used"
                  for code, n in sorted(findings.not_applicable.items())]
    return FilterResult(kept, out_categories, {"images": in_images, "annotations": in_annotations},
                        drops, criteria, notes)


__all__ = ["FilterResult", "FindingDrops", "IMAGE_FILE_CODES", "drop_findings_in",
           "filter_dataset"]

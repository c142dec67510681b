"""The per-image JSON label schema of the task spec: ``labels/<stem>.json`` holding the image
(``image``, ``image_id``, ``width``, ``height``) and ``instances``, each
``{"type": "instance", "class_id", "class_name", "bbox", "mask_path" | "polygon"}``.

``bbox`` is COCO ``[x, y, width, height]`` in pixels; ``class_id`` the dataset's category id.
``write_labelschema`` writes every mask as a binary PNG (``masks/<stem>/<id>.png``, exact) and adds
``id``, ``area`` and ``iscrowd`` (and ``keypoints`` where present) to each instance;
``read_labelschema`` keeps all of them (the file's bbox and area as ``read_coco`` keeps them) and
also reads ``polygon`` (``[[x, y], ...]``, one part). ``<stem>`` keeps the image's folders
(``labels/a/1.json`` for ``images/a/1.jpg``), so no two images merge. ``categories.json`` keeps
the whole table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import FormatError, InstkitError, Location
from instkit.instances import Instances
from instkit.io.coco import sample_annotations
from instkit.io.files import load_json, safe_join, staged_folder
from instkit.io.pngmasks import read_mask_png, write_mask_png
from instkit.io.yolo import OutputNames, save_image
from instkit.masks import MaskItem, Masks, PolygonMask, tight_bitmap
from instkit.sample import Sample, SampleMeta, open_image


def write_labelschema(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
                      categories: Categories | None = None) -> dict[str, int]:
    """Write the label schema (labels, PNG masks, images, ``categories.json``); returns counts.

    The folder is written beside ``out_dir`` and renamed in when complete."""
    with staged_folder(out_dir) as out:
        return _write_labelschema(samples, out, categories)


def _write_labelschema(samples: Iterable[Sample], out: Path, categories: Categories | None) -> dict[str, int]:
    categories = categories or getattr(samples, "categories", None)
    counts = {"images": 0, "objects": 0}
    names = OutputNames()
    for sample in samples:
        categories = categories or sample.meta.categories
        if categories is None:
            raise InstkitError("write_labelschema needs categories")
        name = names.claim(sample)
        stem = PurePosixPath(name).with_suffix("").as_posix()
        save_image(sample, out / "images" / name)
        inst = sample.instances
        dense = inst.masks.to_dense() if inst.masks is not None else None
        objects: list[dict[str, Any]] = []
        for i, ann in enumerate(sample_annotations(sample, categories)):
            entry: dict[str, Any] = {
                "type": "instance", "id": ann["id"], "class_id": ann["category_id"],
                "class_name": categories[int(inst.labels[i])].name, "bbox": ann["bbox"],
                "area": ann["area"], "iscrowd": ann["iscrowd"],
            }
            if dense is not None:
                relative = f"masks/{stem}/{ann['id']}.png"
                write_mask_png(dense[i], out / relative)
                entry["mask_path"] = relative
            if "keypoints" in ann:
                entry["keypoints"] = ann["keypoints"]
            objects.append(entry)
            counts["objects"] += 1
        h, w = sample.image_size
        label = {"image": f"images/{name}", "image_id": int(sample.image_id), "width": w,
                 "height": h, "instances": objects}
        label_file = out / "labels" / f"{stem}.json"
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text(json.dumps(label))
        counts["images"] += 1
    if categories is None:
        raise InstkitError("write_labelschema needs categories")
    (out / "categories.json").write_text(json.dumps(categories.to_coco()))
    return counts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bbox(value: Any, at: Location) -> list[float]:
    """The file's ``[x, y, width, height]``; NaNs where the instance has none."""
    if value is None:
        return [math.nan] * 4
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)
            and value[2] >= 0 and value[3] >= 0):
        raise FormatError(f"'bbox' must be [x, y, width, height] of finite numbers with width and "
                          f"height >= 0, got {value!r}", at)
    return [float(v) for v in value]


def _keypoints(value: Any, at: Location) -> np.ndarray:
    if not (isinstance(value, list) and len(value) % 3 == 0 and all(_is_number(v) for v in value)):
        raise FormatError(f"'keypoints' must be [x1, y1, v1, x2, ...] (a multiple of 3 finite "
                          f"numbers), got {str(value)[:80]}", at)
    return np.asarray(value, dtype=np.float32).reshape(-1, 3)


def _file_name(image_path: str, base: Path) -> str:
    """The image's path relative to ``images/`` (else to the root), ``/`` separated."""
    path = Path(image_path)
    for folder in (base.resolve() / "images", base.resolve()):
        if folder in path.parents:
            return path.relative_to(folder).as_posix()
    return path.name


def read_labelschema(root: str | os.PathLike[str]) -> list[Sample]:
    """Read ``labels/**/*.json`` (paths in them are relative to ``root`` and must stay inside it).

    The file's ``bbox`` (and ``area``) are kept as the instances' boxes and ``coco_bbox`` /
    ``coco_area`` extras, as ``read_coco`` keeps them; ``keypoints`` become the keypoints column
    (visibility 0 where an instance has none)."""
    base = Path(root)
    label_files = sorted((base / "labels").rglob("*.json"))
    cat_file = base / "categories.json"
    categories = Categories.from_coco(load_json(cat_file), file=str(cat_file)) if cat_file.is_file() else None
    documents = [(path, load_json(path)) for path in label_files]
    if categories is None:  # from the labels themselves
        seen: dict[int, str] = {}
        for _, doc in documents:
            for obj in doc.get("instances", []) if isinstance(doc, dict) else []:
                if isinstance(obj, dict) and isinstance(obj.get("class_id", 0), int):
                    seen.setdefault(int(obj.get("class_id", 0)),
                                    str(obj.get("class_name", obj.get("class_id"))))
        categories = Categories(Category(id=k, name=v) for k, v in sorted(seen.items()))
    samples = []
    for k, (path, doc) in enumerate(documents):
        where = Location(file=str(path))
        if not isinstance(doc, dict) or not isinstance(doc.get("instances", []), list):
            raise FormatError("a label file must be an object with an 'instances' list", where)
        image_path = safe_join(base, doc.get("image") or "", where)
        width, height = doc.get("width"), doc.get("height")
        if not (isinstance(width, int) and isinstance(height, int)):
            with open_image(image_path, Location(file=image_path)) as opened:
                width, height = opened.size
        size = (int(height), int(width))
        image_id = doc.get("image_id", k + 1)
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise FormatError(f"'image_id' must be an integer, got {image_id!r}", where)
        items: list[MaskItem] = []
        labels, ids, crowd, boxes, areas = [], [], [], [], []
        keypoints: list[np.ndarray | None] = []
        for n, obj in enumerate(doc.get("instances", [])):
            at = Location(file=str(path), json_path=f"instances[{n}]", image_id=image_id)
            if not isinstance(obj, dict) or obj.get("type", "instance") != "instance":
                raise FormatError("an instance must be an object with type 'instance'", at)
            cat = obj.get("class_id")
            if not isinstance(cat, int) or not categories.has_id(cat):
                raise FormatError(f"unknown class_id {cat!r}", at)
            if obj.get("mask_path"):
                mask = read_mask_png(Path(safe_join(base, obj["mask_path"], at)), size, at)
                items.append(tight_bitmap(mask))
            elif obj.get("polygon"):
                try:
                    coords = np.asarray(obj["polygon"], dtype=np.float64).reshape(-1)
                    items.append(PolygonMask.from_coords([coords]))
                except (ValueError, TypeError) as exc:
                    raise FormatError(f"'polygon' must be [[x, y], ...]: {exc}", at) from None
            else:
                raise FormatError("an instance needs 'mask_path' or 'polygon'", at)
            labels.append(categories.label_of(cat))
            ids.append(int(obj.get("id", n + 1)))
            crowd.append(bool(obj.get("iscrowd", 0)))
            boxes.append(_bbox(obj.get("bbox"), at))
            area = obj.get("area")
            areas.append(float(area) if area is not None and _is_number(area) else math.nan)
            keypoints.append(_keypoints(obj["keypoints"], at) if obj.get("keypoints") is not None
                             else None)
        count = len(labels)
        masks = Masks(items, size)
        file_bbox = np.asarray(boxes, dtype=np.float64).reshape(count, 4)
        xyxy = np.concatenate([file_bbox[:, :2], file_bbox[:, :2] + file_bbox[:, 2:]], axis=1)
        missing = np.isnan(xyxy).any(axis=1)
        if missing.any():
            xyxy[missing] = masks[np.flatnonzero(missing)].boxes()
        kp_column = None
        if any(kp is not None for kp in keypoints):
            k_max = max(kp.shape[0] for kp in keypoints if kp is not None)
            kp_column = np.zeros((count, k_max, 3), dtype=np.float32)
            for row, kp in enumerate(keypoints):
                if kp is not None:
                    kp_column[row, :kp.shape[0]] = kp
        instances = Instances(image_size=size, boxes=xyxy, masks=masks, keypoints=kp_column,
                              labels=np.asarray(labels, dtype=np.int64),
                              ids=np.asarray(ids, dtype=np.int64), iscrowd=np.asarray(crowd, dtype=bool),
                              extras={"coco_bbox": file_bbox,
                                      "coco_area": np.asarray(areas, dtype=np.float64)})
        meta = SampleMeta(source=str(path), file_name=_file_name(image_path, base), original_size=size,
                          categories=categories)
        samples.append(Sample(instances, int(image_id), meta, image_path))
    return samples


__all__ = ["read_labelschema", "write_labelschema"]

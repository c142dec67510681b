"""The per-image JSON label schema of the task spec: ``labels/<stem>.json`` holding the image
(``image``, ``image_id``, ``width``, ``height``) and ``instances``, each
``{"type": "instance", "class_id", "class_name", "bbox", "mask_path" | "polygon"}``.

``bbox`` is COCO ``[x, y, width, height]`` in pixels; ``class_id`` the dataset's category id.
``write_labelschema`` writes every mask as a binary PNG (``masks/<stem>/<id>.png``, exact) and adds
``id`` and ``iscrowd`` (and ``keypoints`` where present) to each instance; ``read_labelschema``
also reads ``polygon`` (``[[x, y], ...]``, one part). ``categories.json`` keeps the whole table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import FormatError, InstkitError, Location
from instkit.instances import Instances
from instkit.io.coco import sample_annotations
from instkit.io.files import load_json, safe_join
from instkit.io.pngmasks import read_mask_png, write_mask_png
from instkit.io.yolo import _new_dir, image_name, save_image
from instkit.masks import MaskItem, Masks, PolygonMask, tight_bitmap
from instkit.sample import Sample, SampleMeta


def write_labelschema(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
                      categories: Categories | None = None) -> dict[str, int]:
    out = _new_dir(out_dir)
    categories = categories or getattr(samples, "categories", None)
    counts = {"images": 0, "objects": 0}
    for sample in samples:
        categories = categories or sample.meta.categories
        if categories is None:
            raise InstkitError("write_labelschema needs categories")
        name = image_name(sample)
        stem = Path(name).stem
        save_image(sample, out / "images" / name)
        inst = sample.instances
        dense = inst.masks.to_dense() if inst.masks is not None else None
        objects: list[dict[str, Any]] = []
        for i, ann in enumerate(sample_annotations(sample, categories)):
            entry: dict[str, Any] = {
                "type": "instance", "id": ann["id"], "class_id": ann["category_id"],
                "class_name": categories[int(inst.labels[i])].name, "bbox": ann["bbox"],
                "iscrowd": ann["iscrowd"],
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
        (out / "labels").mkdir(parents=True, exist_ok=True)
        (out / "labels" / f"{stem}.json").write_text(json.dumps(label))
        counts["images"] += 1
    if categories is None:
        raise InstkitError("write_labelschema needs categories")
    (out / "categories.json").write_text(json.dumps(categories.to_coco()))
    return counts


def read_labelschema(root: str | os.PathLike[str]) -> list[Sample]:
    """Read ``labels/*.json`` (paths in them are relative to ``root`` and must stay inside it)."""
    base = Path(root)
    label_files = sorted((base / "labels").glob("*.json"))
    cat_file = base / "categories.json"
    categories = Categories.from_coco(load_json(cat_file), file=str(cat_file)) if cat_file.is_file() else None
    documents = [(path, load_json(path)) for path in label_files]
    if categories is None:  # from the labels themselves
        seen: dict[int, str] = {}
        for _, doc in documents:
            for obj in doc.get("instances", []) if isinstance(doc, dict) else []:
                seen.setdefault(int(obj.get("class_id", 0)), str(obj.get("class_name", obj.get("class_id"))))
        categories = Categories(Category(id=k, name=v) for k, v in sorted(seen.items()))
    samples = []
    for k, (path, doc) in enumerate(documents):
        where = Location(file=str(path))
        if not isinstance(doc, dict) or not isinstance(doc.get("instances", []), list):
            raise FormatError("a label file must be an object with an 'instances' list", where)
        image_path = safe_join(base, doc.get("image") or "", where)
        width, height = doc.get("width"), doc.get("height")
        if not (isinstance(width, int) and isinstance(height, int)):
            from PIL import Image

            with Image.open(image_path) as opened:
                width, height = opened.size
        size = (int(height), int(width))
        image_id = int(doc.get("image_id", k + 1))
        items: list[MaskItem] = []
        labels, ids, crowd, boxes = [], [], [], []
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
            boxes.append(obj.get("bbox"))
        masks = Masks(items, size)
        instances = Instances(image_size=size, masks=masks, labels=np.asarray(labels, dtype=np.int64),
                              ids=np.asarray(ids, dtype=np.int64), iscrowd=np.asarray(crowd, dtype=bool))
        meta = SampleMeta(source=str(path), file_name=os.path.basename(image_path), original_size=size,
                          categories=categories)
        samples.append(Sample(instances, image_id, meta, image_path))
    return samples


__all__ = ["read_labelschema", "write_labelschema"]

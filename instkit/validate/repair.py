"""``--fix``: a repaired copy of a COCO document, with every change listed.

What is repaired: invalid polygons are made valid with shapely and clipped to the image; bad
polygon parts (fewer than 3 points, odd counts, the 4-number trap, NaN) are removed; an RLE whose
size differs from the image is cropped or padded to it; bbox and area are recomputed from the mask
where they disagree with it; duplicate image, annotation and category ids are renumbered (an
annotation keeps pointing at the first holder of a duplicated id); keypoints outside the image or
with bad visibility are unlabelled, ``num_keypoints`` recounted; bad ``iscrowd`` set from the
geometry; images whose file is missing or unreadable, and annotations with no usable geometry or
pointing at unknown images or categories, are dropped (with their reason). Remaining NaN/Infinity
values become ``null``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from instkit.errors import FormatError, Location
from instkit.masks import decode_rle_counts, encode_rle_counts
from instkit.validate.checks import (
    AREA_TOLERANCE_FRACTION,
    AREA_TOLERANCE_PX,
    BBOX_TOLERANCE_FRACTION,
    BBOX_TOLERANCE_PX,
    OUTSIDE_TOLERANCE_PX,
    _open_image,
    is_finite_number,
    is_int,
    polygon_parts,
    rle_geometry,
)
from instkit.validate.report import Change


class _Changes:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.items: list[Change] = []

    def add(self, what: str, json_path: str, before: Any = None, after: Any = None, *,
            image_id: Any = None, annotation_id: Any = None) -> None:
        self.items.append(Change(what, Location(
            file=self.file, json_path=json_path,
            image_id=image_id if is_int(image_id) else None,
            annotation_id=annotation_id if is_int(annotation_id) else None,
        ), _jsonable(before), _jsonable(after)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    if isinstance(value, list) and len(value) > 12:
        return [_jsonable(v) for v in value[:12]] + ["..."]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _round_coords(coords: np.ndarray) -> list[float]:
    return [float(round(v, 2)) for v in coords.reshape(-1)]


def _fix_polygon_parts(parts: list[np.ndarray], size: tuple[int, int]) -> tuple[list[np.ndarray], list[str]]:
    """Make each part valid (shapely) and clip it to the image; returns parts and what was done."""
    import shapely
    from shapely.geometry import Polygon, box

    h, w = size
    frame = box(0, 0, w, h)
    done: list[str] = []
    out: list[np.ndarray] = []
    for part in parts:
        xy = part.reshape(-1, 2)
        shape = Polygon(xy)
        outside = (xy[:, 0].min() < -OUTSIDE_TOLERANCE_PX or xy[:, 1].min() < -OUTSIDE_TOLERANCE_PX
                   or xy[:, 0].max() > w + OUTSIDE_TOLERANCE_PX or xy[:, 1].max() > h + OUTSIDE_TOLERANCE_PX)
        if shape.is_valid and not outside:
            out.append(part)
            continue
        if not shape.is_valid:
            shape = shapely.make_valid(shape)
            done.append("made valid")
        if outside:
            shape = shape.intersection(frame)
            done.append("clipped to the image")
        for piece in _polygons_of(shape):
            coords = np.asarray(piece.exterior.coords, dtype=np.float64)[:-1]
            if len(coords) >= 3 and piece.area > 0:
                out.append(np.asarray(_round_coords(coords), dtype=np.float64))
    return out, done


def _polygons_of(geometry: Any) -> list[Any]:
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    if isinstance(geometry, MultiPolygon):
        return [g for g in geometry.geoms if not g.is_empty]
    return [p for g in getattr(geometry, "geoms", []) for p in _polygons_of(g)]


def _resize_rle(segmentation: dict[str, Any], size: tuple[int, int]) -> dict[str, Any] | None:
    """An RLE of another size cropped/padded (top-left anchored) to ``size``; ``None`` if broken."""
    rle_size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_int(v) and v > 0 for v in rle_size)):
        return None
    h0, w0 = rle_size
    if counts is None:  # nothing to decode
        return None
    try:
        runs = np.asarray(counts, dtype=np.int64) if isinstance(counts, list) else decode_rle_counts(counts)
    except Exception:  # noqa: BLE001 - any decoding failure means the RLE is hopeless
        return None
    if (runs < 0).any() or int(runs.sum()) != h0 * w0:
        return None
    compressed = encode_rle_counts(runs, (h0, w0))
    dense = mask_utils.decode({"size": [h0, w0], "counts": compressed})
    h, w = size
    canvas = np.zeros((h, w), dtype=np.uint8, order="F")
    canvas[: min(h, h0), : min(w, w0)] = dense[: min(h, h0), : min(w, w0)]
    encoded = mask_utils.encode(canvas)
    return {"size": [h, w], "counts": encoded["counts"].decode("ascii")}


def repair_document(document: Any, *, file: str | None = None, images_dir: str | None = None,
                    workers: int | None = None) -> tuple[dict[str, Any], list[Change]]:
    """A repaired deep copy of ``document`` and the list of changes made."""
    if not isinstance(document, dict):
        raise FormatError("cannot repair: the document is not a JSON object", Location(file=file, json_path="$"))
    doc = copy.deepcopy(document)
    changes = _Changes(file)
    _replace_nonfinite(doc, "", changes, top=True)
    categories = _fix_categories(doc, changes)
    images = _fix_images(doc, changes, images_dir, workers)
    _fix_annotations(doc, changes, images, categories)
    for index, ann in enumerate(doc["annotations"]):
        _replace_nonfinite(ann, f"annotations[{index}]", changes)
    return doc, changes.items


def _replace_nonfinite(value: Any, path: str, changes: _Changes, top: bool = False) -> Any:
    """NaN/Infinity outside the geometry and numbers that get recomputed become ``None``."""
    if top:
        for key in list(value):
            if key != "annotations":
                value[key] = _replace_nonfinite(value[key], key, changes)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        changes.add("non-finite value replaced by null", path, value, None)
        return None
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _replace_nonfinite(value[key], f"{path}.{key}", changes)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _replace_nonfinite(item, f"{path}[{index}]", changes)
    return value


def _int_ids(entries: list[Any]) -> list[int]:
    """The integer ``id`` of every object entry that has one."""
    return [e["id"] for e in entries if isinstance(e, dict) and is_int(e.get("id"))]


def _fix_categories(doc: dict[str, Any], changes: _Changes) -> dict[int, int]:
    entries = doc.get("categories")
    if not isinstance(entries, list):
        changes.add("categories set to an empty list", "categories", entries, [])
        doc["categories"] = []
        return {}
    kept: list[Any] = []
    table: dict[int, int] = {}
    next_id = max(_int_ids(entries), default=0) + 1
    for index, entry in enumerate(entries):
        path = f"categories[{index}]"
        if not isinstance(entry, dict) or not is_int(entry.get("id")):
            changes.add("category dropped (not an object with an integer id)", path, entry, None)
            continue
        if entry["id"] in table:
            changes.add("duplicate category id renumbered", f"{path}.id", entry["id"], next_id)
            entry["id"] = next_id
            next_id += 1
        if not isinstance(entry.get("name"), str):
            name = f"category_{entry['id']}"
            changes.add("category name set", f"{path}.name", entry.get("name"), name)
            entry["name"] = name
        keypoints = entry.get("keypoints")
        if keypoints is not None and not (isinstance(keypoints, list) and all(isinstance(k, str) for k in keypoints)):
            changes.add("invalid category keypoints removed", f"{path}.keypoints", keypoints, None)
            entry.pop("keypoints")
            keypoints = None
        table[entry["id"]] = len(keypoints or [])
        kept.append(entry)
    doc["categories"] = kept
    return table


def _fix_images(doc: dict[str, Any], changes: _Changes, images_dir: str | None,
                workers: int | None) -> dict[int, tuple[int, int]]:
    from instkit.errors import PathEscapeError
    from instkit.io.files import safe_join

    entries = doc.get("images")
    if not isinstance(entries, list):
        changes.add("images set to an empty list", "images", entries, [])
        doc["images"] = []
        return {}
    next_id = max(_int_ids(entries), default=0) + 1
    candidates: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        path = f"images[{index}]"
        if not isinstance(entry, dict) or not is_int(entry.get("id")):
            changes.add("image dropped (not an object with an integer id)", path, entry, None)
            continue
        if entry["id"] in seen:
            changes.add("duplicate image id renumbered (its annotations stay with the first)",
                        f"{path}.id", entry["id"], next_id, image_id=next_id)
            entry["id"] = next_id
            next_id += 1
        seen.add(entry["id"])
        if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
            changes.add("image dropped (no file_name)", path, entry.get("file_name"), None,
                        image_id=entry["id"])
            continue
        candidates.append((index, entry))
    actual: dict[int, tuple[str, str | None, tuple[int, int] | None]] = {}
    if images_dir is not None:
        paths: list[str | None] = []
        for _, entry in candidates:
            try:
                paths.append(safe_join(images_dir, entry["file_name"]))
            except PathEscapeError:
                paths.append(None)
        todo = [p for p in paths if p is not None]
        if workers and workers > 1 and len(todo) >= 32:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                opened = list(pool.map(_open_image, todo, chunksize=16))
        else:
            opened = [_open_image(p) for p in todo]
        it = iter(opened)
        for (_, entry), p in zip(candidates, paths, strict=True):
            actual[id(entry)] = ("escape", None, None) if p is None else next(it)
    kept: list[Any] = []
    table: dict[int, tuple[int, int]] = {}
    for index, entry in candidates:
        path = f"images[{index}]"
        image_id = entry["id"]
        status = actual.get(id(entry))
        if status is not None and status[0] != "ok":
            reason = {"escape": "its file_name leaves the image folder", "missing": "its file is missing",
                      "unreadable": "its file cannot be read"}[status[0]]
            changes.add(f"image dropped ({reason})", path, entry["file_name"], None, image_id=image_id)
            continue
        for key, position in (("width", 1), ("height", 0)):
            value = entry.get(key)
            real = status[2][position] if status is not None and status[2] else None
            if real is not None and value != real:
                changes.add(f"image {key} set to the file's", f"{path}.{key}", value, real, image_id=image_id)
                entry[key] = real
        if not (is_int(entry.get("width")) and entry["width"] > 0 and is_int(entry.get("height"))
                and entry["height"] > 0):
            changes.add("image dropped (no valid width/height; pass --images to read them)", path,
                        [entry.get("width"), entry.get("height")], None, image_id=image_id)
            continue
        table[image_id] = (entry["height"], entry["width"])
        kept.append(entry)
    doc["images"] = kept
    return table


def _fix_annotations(doc: dict[str, Any], changes: _Changes, images: dict[int, tuple[int, int]],
                     categories: dict[int, int]) -> None:
    entries = doc.get("annotations")
    if not isinstance(entries, list):
        changes.add("annotations set to an empty list", "annotations", entries, [])
        doc["annotations"] = []
        return
    next_id = max(_int_ids(entries), default=0) + 1
    seen: set[int] = set()
    kept: list[Any] = []
    for index, ann in enumerate(entries):
        path = f"annotations[{index}]"
        if not isinstance(ann, dict):
            changes.add("annotation dropped (not an object)", path, ann, None)
            continue
        image_id, ann_id = ann.get("image_id"), ann.get("id")

        def change(what: str, where: str, before: Any, after: Any,
                   _image: Any = image_id, _ann: dict[str, Any] = ann) -> None:
            changes.add(what, where, before, after, image_id=_image, annotation_id=_ann.get("id"))

        def drop(reason: str, _path: str = path, _id: Any = ann_id) -> None:
            change(f"annotation dropped ({reason})", _path, _id, None)

        if not is_int(image_id) or image_id not in images:
            drop(f"image_id {image_id!r} is not a known image")
            continue
        if not is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            drop(f"category_id {ann.get('category_id')!r} is not a known category")
            continue
        if not is_int(ann_id) or ann_id in seen:
            change("annotation id renumbered" if is_int(ann_id) else "annotation id assigned",
                   f"{path}.id", ann_id, next_id)
            ann["id"] = next_id
            next_id += 1
        if _fix_annotation(ann, path, images[image_id], categories[ann["category_id"]], change, drop):
            seen.add(ann["id"])
            kept.append(ann)
    doc["annotations"] = kept


def _fix_annotation(ann: dict[str, Any], path: str, size: tuple[int, int], keypoint_names: int,
                    change: Any, drop: Any) -> bool:
    h, w = size
    segmentation = ann.get("segmentation")
    rle: dict[str, Any] | None = None
    if isinstance(segmentation, list) and segmentation:
        parts = polygon_parts(segmentation, path, None, None, None)
        fixed, done = _fix_polygon_parts(parts, size)
        if len(parts) < len(segmentation):
            done.insert(0, f"{len(segmentation) - len(parts)} unusable part(s) removed")
        if not fixed:
            drop("no usable polygon part")
            return False
        if done:
            new = [p.tolist() for p in fixed]
            change("polygon " + ", ".join(done), f"{path}.segmentation", segmentation, new)
            ann["segmentation"] = new
        merged = mask_utils.frPyObjects([np.asarray(p, dtype=np.float64) for p in ann["segmentation"]], h, w)
        rle = mask_utils.merge(merged)
    elif isinstance(segmentation, dict):
        rle = rle_geometry(segmentation, size, path, None, None, None)
        if rle is None:
            resized = _resize_rle(segmentation, size)
            if resized is None:
                drop("RLE cannot be decoded or its counts do not sum to its size")
                return False
            change("RLE cropped/padded to the image size", f"{path}.segmentation.size",
                   segmentation.get("size"), [h, w])
            ann["segmentation"] = resized
            rle = {"size": [h, w], "counts": resized["counts"].encode("ascii")}
    elif segmentation is not None:
        drop(f"segmentation is {'an empty list' if segmentation == [] else type(segmentation).__name__}")
        return False
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        new_crowd = 1 if isinstance(segmentation, dict) else 0
        change("iscrowd set from the geometry", f"{path}.iscrowd", crowd, new_crowd)
        ann["iscrowd"] = new_crowd
    if rle is None:  # bbox only
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
            drop("neither a usable segmentation nor a usable bbox")
            return False
        x0, y0 = max(0.0, bbox[0]), max(0.0, bbox[1])
        x1, y1 = min(float(w), bbox[0] + bbox[2]), min(float(h), bbox[1] + bbox[3])
        if x1 <= x0 or y1 <= y0:
            drop("bbox is empty inside the image")
            return False
        new_box = [x0, y0, x1 - x0, y1 - y0]
        if new_box != bbox:
            change("bbox clipped to the image", f"{path}.bbox", bbox, new_box)
            ann["bbox"] = new_box
        return True
    area = int(mask_utils.area(rle))
    if area == 0:
        drop("the mask covers no pixel")
        return False
    box = [float(v) for v in mask_utils.toBbox(rle)]
    bbox = ann.get("bbox")
    ok_box = False
    if isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox) \
            and bbox[2] > 0 and bbox[3] > 0:
        mine = np.asarray([box[0], box[1], box[0] + box[2], box[1] + box[3]])
        theirs = np.asarray([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
        ok_box = bool(np.abs(mine - theirs).max()
                      <= BBOX_TOLERANCE_PX + BBOX_TOLERANCE_FRACTION * max(box[2], box[3]))
    if not ok_box:
        change("bbox recomputed from the mask", f"{path}.bbox", bbox, box)
        ann["bbox"] = box
    file_area = ann.get("area")
    quirk = ann.get("iscrowd") == 1 and isinstance(ann.get("segmentation"), dict)
    ok_area = is_finite_number(file_area) and (
        quirk or abs(float(file_area) - area) <= max(AREA_TOLERANCE_PX, AREA_TOLERANCE_FRACTION * area))
    if not ok_area:
        change("area recomputed from the mask", f"{path}.area", file_area, area)
        ann["area"] = area
    _fix_keypoints(ann, path, size, keypoint_names, change)
    return True


def _fix_keypoints(ann: dict[str, Any], path: str, size: tuple[int, int], names: int, change: Any) -> None:
    raw = ann.get("keypoints")
    if raw is None:
        return
    if not isinstance(raw, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        change("invalid keypoints removed", f"{path}.keypoints", raw, None)
        ann.pop("keypoints")
        ann.pop("num_keypoints", None)
        return
    values = [float(v) if isinstance(v, float) else v for v in raw]
    expected = 3 * names if names else len(values) - len(values) % 3
    if len(values) != expected:
        values = (values + [0] * expected)[:expected]
        change("keypoints padded/truncated to the category's keypoint count", f"{path}.keypoints",
               len(raw), expected)
    h, w = size
    unlabelled = []
    for k in range(0, len(values), 3):
        x, y, v = values[k : k + 3]
        finite = all(math.isfinite(t) for t in (x, y, v))
        bad = not finite or v not in (0, 1, 2) or (v > 0 and (x < 0 or y < 0 or x > w or y > h))
        if bad:
            values[k : k + 3] = [0, 0, 0]
            unlabelled.append(k // 3)
    if unlabelled:
        change("keypoints unlabelled (outside the image, bad visibility or NaN)", f"{path}.keypoints",
               unlabelled, [0, 0, 0])
    values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    ann["keypoints"] = values
    count = sum(1 for k in range(2, len(values), 3) if values[k] > 0)
    if "num_keypoints" in ann and ann["num_keypoints"] != count:
        change("num_keypoints recounted", f"{path}.num_keypoints", ann["num_keypoints"], count)
        ann["num_keypoints"] = count

"""``--fix``: a repaired copy of a COCO document, with every change listed.

What is repaired: invalid polygons are made valid with shapely (holes kept: a polygon with holes
becomes an RLE) and clipped to the image, each with the mask area before and after; bad
polygon parts (fewer than 3 points, odd counts, the 4-number trap, NaN) are removed; an RLE whose
size differs from the image is cropped or padded to it; bbox and area are recomputed from the mask
where they disagree with it; duplicate image, annotation and category ids are renumbered (an
annotation keeps pointing at the first holder of a duplicated id); keypoints outside the image or
with bad visibility are unlabelled, ``num_keypoints`` recounted; bad ``iscrowd`` set from the
geometry; images whose file is missing or unreadable, and annotations with no usable geometry or
pointing at unknown images or categories, are dropped (with their reason). Remaining NaN/Infinity
values become ``null``; free-form values nested beyond the limit are removed.

Then the repaired document is checked with the rulebook (``rules.check_document``) and whatever
still breaks an error-level rule is settled by code (``SETTLE``): a too-deep field is removed,
anything else drops its annotation, image or category with the code as the reason. So the output
is always one that ``read_coco(strict=True)`` accepts.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from instkit.errors import FormatError, InstkitError, Location, show_value
from instkit.masks import BitmapMask, Masks, PolygonMask, RLEMask, parse_coco_rle, rle_areas
from instkit.validate import rules
from instkit.validate.checks import _open_image
from instkit.validate.report import Change
from instkit.validate.rules import (
    AREA_TOLERANCE_FRACTION,
    AREA_TOLERANCE_PX,
    DEFAULT_LIMITS,
    OUTSIDE_TOLERANCE_PX,
    Limits,
    bbox_agrees,
    is_finite_number,
    is_int,
    polygon_parts,
    rle_geometry,
)

# A geometry repair that moves a mask's pixel count by more than max(5 px, 5%) says so in its
# change ("beyond the repair tolerance"); every geometry repair lists the area before and after.
REPAIR_AREA_TOLERANCE_PX = 5
REPAIR_AREA_TOLERANCE_FRACTION = 0.05


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


def _polygon_area(parts: list[np.ndarray], size: tuple[int, int]) -> int:
    return int(Masks([PolygonMask(tuple(parts))], size).area()[0]) if parts else 0


def _fix_polygon_parts(parts: list[np.ndarray], size: tuple[int, int]
                       ) -> tuple[list[np.ndarray], bytes | None, list[str]]:
    """Make each part valid (shapely) and clip it to the image.

    Returns ``(parts, rle, done)``: the polygon parts, or, when a valid piece has holes that a
    COCO polygon cannot hold, the compressed RLE of the exteriors minus the holes (``parts`` is
    then empty); ``done`` lists what was done."""
    import shapely
    from shapely.geometry import Polygon, box

    h, w = size
    frame = box(0, 0, w, h)
    done: list[str] = []
    out: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for part in parts:
        xy = part.reshape(-1, 2)
        shape = Polygon(xy)
        t = OUTSIDE_TOLERANCE_PX
        outside = (xy[:, 0].min() < -t or xy[:, 1].min() < -t
                   or xy[:, 0].max() > w + t or xy[:, 1].max() > h + t)
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
                for ring in piece.interiors:
                    inner = np.asarray(ring.coords, dtype=np.float64)[:-1]
                    if len(inner) >= 3:
                        holes.append(np.asarray(_round_coords(inner), dtype=np.float64))
    if not holes or not out:
        return out, None, list(dict.fromkeys(done))
    done.append("holes kept (written as RLE)")
    return [], _minus(out, holes, size), list(dict.fromkeys(done))


def _polygons_of(geometry: Any) -> list[Any]:
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    if isinstance(geometry, MultiPolygon):
        return [g for g in geometry.geoms if not g.is_empty]
    return [p for g in getattr(geometry, "geoms", []) for p in _polygons_of(g)]


def _minus(parts: list[np.ndarray], holes: list[np.ndarray], size: tuple[int, int]) -> bytes:
    """RLE of the union of ``parts`` minus the union of ``holes``, decoded only in their boxes."""
    outer, inner = Masks([PolygonMask(tuple(parts)), PolygonMask(tuple(holes))], size).to_bitmaps().items
    assert isinstance(outer, BitmapMask) and isinstance(inner, BitmapMask)
    bitmap = outer.bitmap.copy()
    (oy, ox), (iy, ix) = outer.offset, inner.offset
    ih, iw = inner.bitmap.shape
    y0, x0 = max(oy, iy), max(ox, ix)
    y1, x1 = min(oy + bitmap.shape[0], iy + ih), min(ox + bitmap.shape[1], ix + iw)
    if y1 > y0 and x1 > x0:
        bitmap[y0 - oy : y1 - oy, x0 - ox : x1 - ox] &= ~inner.bitmap[y0 - iy : y1 - iy, x0 - ix : x1 - ix]
    return Masks([BitmapMask(bitmap, outer.offset)], size).rle_counts()[0]


def _resize_rle(segmentation: dict[str, Any], size: tuple[int, int],
                limits: Limits) -> dict[str, Any] | None:
    """An RLE of another size cropped/padded (top-left anchored) to ``size``; ``None`` if broken.

    Only the mask's box is decoded, so the cost follows the object, not either image."""
    try:
        counts, _, _ = parse_coco_rle(segmentation, None, max_pixels=limits.max_image_pixels)
    except InstkitError:
        return None
    h0, w0 = (int(v) for v in segmentation["size"])
    item = Masks([RLEMask(counts)], (h0, w0)).to_bitmaps().items[0]
    assert isinstance(item, BitmapMask)
    h, w = size
    y0, x0 = item.offset
    bitmap = item.bitmap[: max(0, h - y0), : max(0, w - x0)]
    if bitmap.size == 0 or y0 >= h or x0 >= w:
        bitmap, (y0, x0) = np.zeros((0, 0), dtype=bool), (0, 0)
    resized = Masks([BitmapMask(np.ascontiguousarray(bitmap), (y0, x0))], size).rle_counts()[0]
    return {"size": [h, w], "counts": resized.decode("ascii")}


def repair_document(document: Any, *, file: str | None = None, images_dir: str | None = None,
                    workers: int | None = None, limits: Limits | None = None,
                    ) -> tuple[dict[str, Any], list[Change]]:
    """A repaired copy of ``document`` and the list of changes made; the copy passes every
    error-level rule (``read_coco(strict=True)`` accepts it)."""
    if not isinstance(document, dict):
        raise FormatError("cannot repair: the document is not a JSON object", Location(file=file, json_path="$"))
    limits = limits or DEFAULT_LIMITS
    changes = _Changes(file)
    doc = _copy_json(document, limits.max_json_depth + 8, changes)
    for key in list(doc):
        if key not in rules.DOCUMENT_LISTS and isinstance(doc[key], (list, dict)) \
                and rules.too_deep(doc[key], limits.max_json_depth):
            changes.add(f"'{key}' removed (nested deeper than {limits.max_json_depth} levels)",
                        key, "...", None)
            del doc[key]
    _replace_nonfinite(doc, changes)
    categories = _fix_categories(doc, changes)
    images = _fix_images(doc, changes, images_dir, workers, limits)
    _fix_annotations(doc, changes, images, categories, limits)
    for index, ann in enumerate(doc["annotations"]):
        _null_nonfinite(ann, f"annotations[{index}]", changes)
    _settle(doc, changes, limits, file)
    return doc, changes.items


def _copy_json(value: Any, max_depth: int, changes: _Changes) -> Any:
    """A copy of a JSON value made without recursion; containers deeper than ``max_depth``
    become ``None`` (a free-form field that deep is removed later anyway)."""
    def fresh(item: Any) -> Any:
        return {} if isinstance(item, dict) else [] if isinstance(item, list) else item

    root = fresh(value)
    stack: list[tuple[Any, Any, int, str]] = [(value, root, 1, "")]
    while stack:
        source, target, depth, path = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            where = (f"{path}.{key}" if path else str(key)) if isinstance(source, dict) else f"{path}[{key}]"
            if isinstance(item, (list, dict)):
                if depth >= max_depth:
                    changes.add(f"value removed (nested deeper than {max_depth} levels)", where, "...", None)
                    copy: Any = None
                else:
                    copy = fresh(item)
                    stack.append((item, copy, depth + 1, where))
            else:
                copy = item
            if isinstance(target, dict):
                target[key] = copy
            else:
                target.append(copy)
    return root


def _null_nonfinite(value: Any, path: str, changes: _Changes) -> None:
    """NaN/Infinity inside ``value`` (a dict or list) become ``None``; no recursion."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        keys = list(item) if isinstance(item, dict) else range(len(item))
        for key in keys:
            child = item[key]
            here = f"{where}.{key}" if isinstance(item, dict) else f"{where}[{key}]"
            if isinstance(child, float) and not math.isfinite(child):
                changes.add("non-finite value replaced by null", here, child, None)
                item[key] = None
            elif isinstance(child, (list, dict)):
                stack.append((child, here))


def _replace_nonfinite(doc: dict[str, Any], changes: _Changes) -> None:
    """NaN/Infinity outside the annotations become ``None`` (the annotations' own are fixed
    field by field first: a NaN bbox is recomputed, a NaN keypoint unlabelled...)."""
    for key in list(doc):
        if key == "annotations":
            continue
        value = doc[key]
        if isinstance(value, float) and not math.isfinite(value):
            changes.add("non-finite value replaced by null", key, value, None)
            doc[key] = None
        elif isinstance(value, (list, dict)):
            _null_nonfinite(value, key, changes)


_ENTRY = re.compile(r"^(images|annotations|categories)\[(\d+)\](?:\.(\w+))?")


def _settle(doc: dict[str, Any], changes: _Changes, limits: Limits, file: str | None) -> None:
    """Check the repaired document with the rulebook and settle what still breaks an
    error-level rule, by code (``SETTLE``): until no error is left."""
    for _ in range(8):
        findings, _ = rules.check_document(doc, file=file, warnings=False, limits=limits)
        errors = [f for f in findings if f.severity == "error"]
        if not errors:
            return
        dropped: dict[str, set[int]] = {"images": set(), "annotations": set(), "categories": set()}
        for finding in errors:
            match = _ENTRY.match(finding.location.json_path or "")
            if match is None:  # a document-level value: only a too-deep one can remain
                key = (finding.location.json_path or "").split(".")[0].split("[")[0]
                if key in doc and key not in rules.DOCUMENT_LISTS:
                    changes.add(f"'{key}' removed ({finding.code})", key, "...", None)
                    del doc[key]
                continue
            kind, index, field_name = match.group(1), int(match.group(2)), match.group(3)
            entry = doc[kind][index]
            if SETTLE.get(finding.code) == "remove-field" and field_name and isinstance(entry, dict) \
                    and field_name in entry and field_name not in _REQUIRED[kind]:
                changes.add(f"field '{field_name}' removed ({finding.code})",
                            f"{kind}[{index}].{field_name}", "...", None)
                del entry[field_name]
                continue
            if index not in dropped[kind]:
                dropped[kind].add(index)
                what = kind[:-1] if kind != "categories" else "category"
                changes.add(f"{what} dropped ({finding.code}: {finding.message})",
                            f"{kind}[{index}]", entry.get("id") if isinstance(entry, dict) else entry,
                            None)
        for kind, indices in dropped.items():
            if indices:
                doc[kind] = [e for i, e in enumerate(doc[kind]) if i not in indices]
    raise FormatError("the repair did not settle: errors remain after 8 rounds", Location(file=file))


# How the final pass settles an error that the field repairs left: remove the offending free-form
# field, or (every other code) drop the annotation, image or category that holds it.
SETTLE: dict[str, str] = {"json-too-deep": "remove-field", "json-nonfinite": "remove-field"}
_REQUIRED = {"images": rules.IMAGE_FIELDS, "annotations": rules.ANNOTATION_FIELDS,
             "categories": rules.CATEGORY_FIELDS | {"supercategory"}}


def _int_ids(entries: list[Any]) -> list[int]:
    """The integer ``id`` of every object entry that has one."""
    return [e["id"] for e in entries
            if isinstance(e, dict) and is_int(e.get("id")) and rules.in_int64(e["id"])]


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
                workers: int | None, limits: Limits = DEFAULT_LIMITS) -> dict[int, tuple[int, int]]:
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
        bad_name: list[str] = []
        if isinstance(entry.get("file_name"), str) and entry["file_name"]:
            rules.check_file_name(entry["file_name"],
                                  lambda code, *_, _bad=bad_name: _bad.append(code), "")
        if bad_name:
            changes.add(f"image dropped ({bad_name[0]})", f"{path}.file_name",
                        show_value(entry["file_name"]), None, image_id=entry["id"])
            continue
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
        if entry["width"] * entry["height"] > limits.max_image_pixels:
            changes.add(f"image dropped (image-too-large: more than {limits.max_image_pixels} "
                        "pixels)", path, [entry["width"], entry["height"]], None, image_id=image_id)
            continue
        table[image_id] = (entry["height"], entry["width"])
        kept.append(entry)
    doc["images"] = kept
    return table


def _fix_annotations(doc: dict[str, Any], changes: _Changes, images: dict[int, tuple[int, int]],
                     categories: dict[int, int], limits: Limits) -> None:
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
            drop(f"image_id {show_value(image_id)} is not a known image")
            continue
        if not is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            drop(f"category_id {show_value(ann.get('category_id'))} is not a known category")
            continue
        if not is_int(ann_id) or not rules.in_int64(ann_id) or ann_id in seen:
            change("annotation id renumbered" if is_int(ann_id) else "annotation id assigned",
                   f"{path}.id", show_value(ann_id) if is_int(ann_id) else ann_id, next_id)
            ann["id"] = next_id
            next_id += 1
        if _fix_annotation(ann, path, images[image_id], categories[ann["category_id"]], change, drop,
                           limits):
            seen.add(ann["id"])
            kept.append(ann)
    doc["annotations"] = kept


def _area_change(before: int, after: int, path: str, change: Any) -> None:
    """Every geometry repair lists the mask's pixel count before and after."""
    tolerance = max(REPAIR_AREA_TOLERANCE_PX, REPAIR_AREA_TOLERANCE_FRACTION * before)
    beyond = abs(after - before) > tolerance
    change("mask area changed beyond the repair tolerance (max(5 px, 5%)): check this mask"
           if beyond else "mask area after the geometry repair (within max(5 px, 5%))",
           f"{path}.segmentation", before, after)


def _fix_annotation(ann: dict[str, Any], path: str, size: tuple[int, int], keypoint_names: int,
                    change: Any, drop: Any, limits: Limits = DEFAULT_LIMITS) -> bool:
    h, w = size
    segmentation = ann.get("segmentation")
    rle: dict[str, Any] | None = None
    if isinstance(segmentation, list) and segmentation:
        parts = polygon_parts(segmentation, path, None, None, None, limits)
        fixed, holed, done = _fix_polygon_parts(parts, size)
        if len(parts) < len(segmentation):
            done.insert(0, f"{len(segmentation) - len(parts)} unusable part(s) removed")
        if not fixed and holed is None:
            drop("no usable polygon part")
            return False
        if done:
            before = _polygon_area(parts, size) if parts else 0
            if holed is not None:
                new: Any = {"size": [h, w], "counts": holed.decode("ascii")}
                after = int(Masks([RLEMask(holed)], size).area()[0])
            else:
                new = [p.tolist() for p in fixed]
                after = _polygon_area(fixed, size)
            change("polygon " + ", ".join(done), f"{path}.segmentation", segmentation, new)
            _area_change(before, after, path, change)
            ann["segmentation"] = new
        if isinstance(ann["segmentation"], dict):
            rle = {"size": [h, w], "counts": ann["segmentation"]["counts"].encode("ascii")}
        else:
            merged = mask_utils.frPyObjects([np.asarray(p, dtype=np.float64) for p in ann["segmentation"]], h, w)
            rle = mask_utils.merge(merged)
    elif isinstance(segmentation, dict):
        checked = rle_geometry(segmentation, size, path, None, None, None, limits)
        rle = checked[0] if checked is not None else None
        if rle is None:
            resized = _resize_rle(segmentation, size, limits)
            if resized is None:
                drop("RLE cannot be decoded or its counts do not sum to its size")
                return False
            change("RLE cropped/padded to the image size", f"{path}.segmentation.size",
                   segmentation.get("size"), [h, w])
            try:
                before = parse_coco_rle(segmentation, None, max_pixels=limits.max_image_pixels)[2]
            except InstkitError:
                before = 0
            ann["segmentation"] = resized
            rle = {"size": [h, w], "counts": resized["counts"].encode("ascii")}
            _area_change(before, int(rle_areas([rle])[0]), path, change)
    elif segmentation is not None:
        drop(f"segmentation is {'an empty list' if segmentation == [] else type(segmentation).__name__}")
        return False
    crowd = ann.get("iscrowd", 0)
    if not (is_int(crowd) and crowd in (0, 1)):
        new_crowd = 1 if isinstance(ann.get("segmentation"), dict) else 0
        change("iscrowd set from the geometry", f"{path}.iscrowd", crowd, new_crowd)
        ann["iscrowd"] = new_crowd
    if rle is None:  # bbox only
        bbox = ann.get("bbox")
        problems: list[str] = []
        usable = rules.check_bbox(bbox, lambda code, message, where: problems.append(code),
                                  "", limits, allow_empty=True)
        if usable is None:
            drop("neither a usable segmentation nor a usable bbox")
            return False
        x0, y0 = max(0.0, usable[0]), max(0.0, usable[1])
        x1, y1 = min(float(w), usable[0] + usable[2]), min(float(h), usable[1] + usable[3])
        if x1 <= x0 or y1 <= y0:
            drop("bbox is empty inside the image")
            return False
        new_box = [x0, y0, x1 - x0, y1 - y0]
        if new_box != bbox:
            change("bbox clipped to the image", f"{path}.bbox", bbox, new_box)
            ann["bbox"] = new_box
        _fix_area_field(ann, path, change)
        _fix_keypoints(ann, path, size, keypoint_names, change, limits)
        return True
    area = int(rle_areas([rle])[0])
    if area == 0:
        drop("the mask covers no pixel")
        return False
    box = [float(v) for v in mask_utils.toBbox(rle)]
    bbox = ann.get("bbox")
    if not bbox_agrees(bbox, box) or rules.check_bbox(bbox, lambda *a: None, "", limits) is None:
        change("bbox recomputed from the mask", f"{path}.bbox", bbox, box)
        ann["bbox"] = box
    file_area = ann.get("area")
    quirk = ann.get("iscrowd") == 1 and isinstance(ann.get("segmentation"), dict)
    ok_area = is_finite_number(file_area) and (
        quirk or abs(float(file_area) - area) <= max(AREA_TOLERANCE_PX, AREA_TOLERANCE_FRACTION * area))
    if not ok_area:
        change("area recomputed from the mask", f"{path}.area", file_area, area)
        ann["area"] = area
    _fix_keypoints(ann, path, size, keypoint_names, change, limits)
    return True


def _fix_area_field(ann: dict[str, Any], path: str, change: Any) -> None:
    """A bbox-only annotation's area: the box's when it is not a usable number."""
    area = ann.get("area")
    if area is not None and not is_finite_number(area):
        box = ann["bbox"]
        change("area set from the bbox", f"{path}.area", area, box[2] * box[3])
        ann["area"] = box[2] * box[3]


def _fix_keypoints(ann: dict[str, Any], path: str, size: tuple[int, int], names: int, change: Any,
                   limits: Limits = DEFAULT_LIMITS) -> None:
    raw = ann.get("keypoints")
    if raw is None:
        return
    if not isinstance(raw, list) or not rules.all_numbers(raw):
        change("invalid keypoints removed", f"{path}.keypoints", raw, None)
        ann.pop("keypoints")
        ann.pop("num_keypoints", None)
        return
    values: list[Any] = list(raw)
    expected = 3 * names if names else min(len(values) - len(values) % 3, 3 * limits.max_keypoints)
    if len(values) != expected:
        values = (values + [0] * expected)[:expected]
        change("keypoints padded/truncated to the category's keypoint count", f"{path}.keypoints",
               len(raw), expected)
    h, w = size
    unlabelled = []
    for k in range(0, len(values), 3):
        x, y, v = values[k : k + 3]
        usable = all(is_finite_number(t) and abs(t) <= limits.max_coordinate for t in (x, y, v))
        bad = not usable or v not in (0, 1, 2) or (v > 0 and (x < 0 or y < 0 or x > w or y > h))
        if bad:
            values[k : k + 3] = [0, 0, 0]
            unlabelled.append(k // 3)
    if unlabelled:
        change("keypoints unlabelled (outside the image, bad visibility, NaN or out of range)",
               f"{path}.keypoints", unlabelled, [0, 0, 0])
    values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    ann["keypoints"] = values
    count = sum(1 for k in range(2, len(values), 3) if values[k] > 0)
    if "num_keypoints" in ann and ann["num_keypoints"] != count:
        change("num_keypoints recounted", f"{path}.num_keypoints", ann["num_keypoints"], count)
        ann["num_keypoints"] = count

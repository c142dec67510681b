"""The checks: a walk over the raw JSON of a COCO file that never trusts it.

The walk works on documents the strict reader refuses. Per-annotation checks run in one Python
pass; rasterisation (pycocotools) and polygon validity (shapely) are batched per image and per
file; image files are opened in parallel worker processes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import pycocotools.mask as mask_utils

from instkit.errors import Location, MaskError, PathEscapeError
from instkit.io.files import safe_join
from instkit.masks import decode_rle_counts
from instkit.validate.report import CHECKS, Finding

# Tolerances, in pixels: COCO's bbox and area come from the polygon itself, the mask's from its
# rasterisation, so they differ by about half the outline. Real COCO files stay well inside these.
BBOX_TOLERANCE_PX = 4.0
BBOX_TOLERANCE_FRACTION = 0.05
AREA_TOLERANCE_PX = 5.0
AREA_TOLERANCE_FRACTION = 0.15
OUTSIDE_TOLERANCE_PX = 0.5


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    return is_number(value) and math.isfinite(value)


@dataclass
class Geometry:
    """A decoded annotation geometry: its compressed RLE, kind, and parts (for polygons)."""

    kind: str  # "polygon" | "rle"
    rle: dict[str, Any] | None = None
    parts: list[np.ndarray] = field(default_factory=list)


@dataclass
class Context:
    """What the walk learnt about the document; shared by the checks and the repair."""

    file: str | None
    images: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # id -> (h, w, index)
    categories: dict[int, int] = field(default_factory=dict)  # id -> number of keypoint names
    annotated_images: set[int] = field(default_factory=set)
    used_categories: set[int] = field(default_factory=set)


class Collector:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.findings: list[Finding] = []

    def add(self, code: str, message: str, *, json_path: str | None = None,
            image_id: Any = None, annotation_id: Any = None) -> None:
        severity = CHECKS[code][0]
        self.findings.append(Finding(code, severity, message, Location(
            file=self.file, json_path=json_path,
            image_id=image_id if is_int(image_id) else None,
            annotation_id=annotation_id if is_int(annotation_id) else None,
        )))


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# --- non-finite values -------------------------------------------------------------------------

_NONFINITE = re.compile(rb"(?<![\"\w])(-?Infinity|NaN)(?![\"\w])")


def find_nonfinite(raw: bytes, document: Any, out: Collector) -> None:
    """Report every NaN/Infinity with its JSON path (the text is searched first: cheap)."""
    if not _NONFINITE.search(raw):
        return

    def walk(value: Any, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            out.add("json-nonfinite", f"{value} is not a JSON number", json_path=path or "$")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(document, "")


# --- the document ------------------------------------------------------------------------------


def _top_level_list(document: dict[str, Any], key: str, out: Collector) -> list[Any] | None:
    """``document[key]`` when it is a list; otherwise report it missing or mistyped."""
    entries = document.get(key)
    if entries is None:
        out.add("schema-missing", f"the document has no '{key}' list", json_path=key)
        return None
    if not isinstance(entries, list):
        out.add("schema-type", f"'{key}' must be a list, got {_type_name(entries)}", json_path=key)
        return None
    return entries


def check_categories(document: dict[str, Any], ctx: Context, out: Collector) -> None:
    entries = _top_level_list(document, "categories", out)
    if entries is None:
        return
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        path = f"categories[{index}]"
        if not isinstance(entry, dict):
            out.add("schema-type", f"a category must be an object, got {_type_name(entry)}", json_path=path)
            continue
        cat_id = entry.get("id")
        if not is_int(cat_id):
            out.add("schema-type" if "id" in entry else "schema-missing",
                    f"category 'id' must be an integer, got {cat_id!r}", json_path=f"{path}.id")
            continue
        if cat_id in ctx.categories:
            out.add("duplicate-category-id", f"category id {cat_id} is used again", json_path=f"{path}.id")
            continue
        keypoints = entry.get("keypoints") or []
        if not isinstance(keypoints, list) or not all(isinstance(k, str) for k in keypoints):
            out.add("schema-type", "category 'keypoints' must be a list of names",
                    json_path=f"{path}.keypoints")
            keypoints = []
        ctx.categories[cat_id] = len(keypoints)
        name = entry.get("name")
        if not isinstance(name, str):
            out.add("schema-type" if "name" in entry else "schema-missing",
                    f"category 'name' must be a string, got {name!r}", json_path=f"{path}.name")
            continue
        if name in names:
            out.add("duplicate-category-name",
                    f"category name {name!r} is used by ids {names[name]} and {cat_id}",
                    json_path=f"{path}.name")
        else:
            names[name] = cat_id


def check_images(document: dict[str, Any], ctx: Context, out: Collector) -> list[tuple[int, str]]:
    """Image entries; returns ``(image_id, file_name)`` of those whose files can be checked."""
    entries = _top_level_list(document, "images", out)
    if entries is None:
        return []
    files: list[tuple[int, str]] = []
    for index, entry in enumerate(entries):
        path = f"images[{index}]"
        if not isinstance(entry, dict):
            out.add("schema-type", f"an image must be an object, got {_type_name(entry)}", json_path=path)
            continue
        image_id = entry.get("id")
        if not is_int(image_id):
            out.add("schema-missing" if "id" not in entry else "schema-type",
                    f"image 'id' must be an integer, got {image_id!r}", json_path=f"{path}.id")
            continue
        if image_id in ctx.images:
            out.add("duplicate-image-id", f"image id {image_id} is used again (first at "
                    f"images[{ctx.images[image_id][2]}])", json_path=f"{path}.id", image_id=image_id)
            continue
        width, height = entry.get("width"), entry.get("height")
        ok = True
        for key, value in (("width", width), ("height", height)):
            if not (is_int(value) and value > 0):
                out.add("schema-missing" if key not in entry else "schema-type",
                        f"image '{key}' must be a positive integer, got {value!r}",
                        json_path=f"{path}.{key}", image_id=image_id)
                ok = False
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            out.add("schema-missing" if "file_name" not in entry else "schema-type",
                    f"image 'file_name' must be a non-empty string, got {name!r}",
                    json_path=f"{path}.file_name", image_id=image_id)
        else:
            files.append((image_id, name))
        if ok and is_int(height) and is_int(width):  # ok implies both; restated to narrow types
            ctx.images[image_id] = (int(height), int(width), index)
    return files


def polygon_parts(segmentation: list[Any], path: str, image_id: Any, ann_id: Any,
                  out: Collector | None) -> list[np.ndarray]:
    """The usable parts of a polygon segmentation; problems with the others are reported."""

    def report(code: str, message: str, where: str) -> None:
        if out is not None:
            out.add(code, message, json_path=where, image_id=image_id, annotation_id=ann_id)

    parts: list[np.ndarray] = []
    for k, part in enumerate(segmentation):
        where = f"{path}.segmentation[{k}]"
        if not isinstance(part, list) or not all(is_number(v) for v in part):
            report("schema-type", "a polygon part must be a flat list of numbers", where)
            continue
        coords = np.asarray(part, dtype=np.float64)
        if not np.isfinite(coords).all():
            report("polygon-nonfinite", "a coordinate is NaN or infinite", where)
            continue
        if coords.size == 4:
            report("polygon-4-number-trap",
                   "part has 4 numbers (2 points); pycocotools would rasterise it as a box", where)
            continue
        if coords.size % 2:
            report("polygon-odd-coordinates", f"part has {coords.size} numbers, an odd count", where)
            continue
        if coords.size < 6:
            report("polygon-too-few-points", f"part has {coords.size // 2} point(s); 3 are needed", where)
            continue
        parts.append(coords)
    return parts


def rle_geometry(segmentation: dict[str, Any], size: tuple[int, int] | None, path: str,
                 image_id: Any, ann_id: Any, out: Collector | None) -> dict[str, Any] | None:
    """A compressed RLE dict of the annotation's RLE, or ``None`` when it is unusable."""

    def report(code: str, message: str, where: str = f"{path}.segmentation") -> None:
        if out is not None:
            out.add(code, message, json_path=where, image_id=image_id, annotation_id=ann_id)

    rle_size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_int(v) and v >= 0 for v in rle_size)):
        report("schema-type", f"RLE 'size' must be [height, width], got {rle_size!r}",
               f"{path}.segmentation.size")
        return None
    h, w = rle_size
    if isinstance(counts, list):
        if not all(is_int(c) and c >= 0 for c in counts):
            report("rle-invalid", "uncompressed RLE counts must be non-negative integers",
                   f"{path}.segmentation.counts")
            return None
        total = sum(counts)
    elif isinstance(counts, str):
        try:
            runs = decode_rle_counts(counts)
        except (MaskError, UnicodeEncodeError) as exc:
            report("rle-invalid", f"counts string cannot be decoded: {getattr(exc, 'message', exc)}",
                   f"{path}.segmentation.counts")
            return None
        if (runs < 0).any():
            report("rle-invalid", "counts decode to a negative run length", f"{path}.segmentation.counts")
            return None
        total = int(runs.sum())
    else:
        report("schema-type", f"RLE 'counts' must be a list or a string, got {_type_name(counts)}",
               f"{path}.segmentation.counts")
        return None
    if total != h * w:
        report("rle-counts-sum", f"counts sum to {total}, expected {h}*{w} = {h * w}",
               f"{path}.segmentation.counts")
        return None
    if size is not None and [h, w] != [size[0], size[1]]:
        report("rle-size-mismatch", f"RLE size [{h}, {w}] differs from the image's "
               f"[height, width] = [{size[0]}, {size[1]}]", f"{path}.segmentation.size")
        return None
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii")}


def check_annotations(document: dict[str, Any], ctx: Context, out: Collector,
                      progress: bool) -> None:
    entries = _top_level_list(document, "annotations", out)
    if entries is None:
        return
    seen: dict[int, int] = {}
    # Per image: (json index, annotation, geometry) of annotations to rasterise.
    pending: dict[int, list[tuple[int, dict[str, Any], Geometry]]] = {}
    iterator: Any = range(len(entries))
    if progress and len(entries) > 20000:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="annotations", unit="ann", leave=False)
    for index in iterator:
        ann = entries[index]
        path = f"annotations[{index}]"
        if not isinstance(ann, dict):
            out.add("schema-type", f"an annotation must be an object, got {_type_name(ann)}", json_path=path)
            continue
        geometry = check_annotation(ann, index, ctx, out, seen)
        if geometry is not None:
            pending.setdefault(ann["image_id"], []).append((index, ann, geometry))
    rasterise_and_compare(pending, ctx, out)


def check_annotation(ann: dict[str, Any], index: int, ctx: Context, out: Collector | None,
                     seen: dict[int, int]) -> Geometry | None:
    """Checks that need one annotation; returns its geometry when it can be rasterised."""
    path = f"annotations[{index}]"
    ann_id, image_id, cat_id = ann.get("id"), ann.get("image_id"), ann.get("category_id")

    def report(code: str, message: str, where: str) -> None:
        if out is not None:
            out.add(code, message, json_path=where, image_id=image_id, annotation_id=ann_id)

    if not is_int(ann_id):
        report("schema-missing" if "id" not in ann else "schema-type",
               f"annotation 'id' must be an integer, got {ann_id!r}", f"{path}.id")
    elif ann_id in seen:
        report("duplicate-annotation-id", f"annotation id {ann_id} is used again (first at "
               f"annotations[{seen[ann_id]}])", f"{path}.id")
    else:
        seen[ann_id] = index
    size: tuple[int, int] | None = None
    if not is_int(image_id):
        report("schema-missing" if "image_id" not in ann else "schema-type",
               f"'image_id' must be an integer, got {image_id!r}", f"{path}.image_id")
    elif image_id not in ctx.images:
        report("unknown-image", f"image_id {image_id} is not in 'images'", f"{path}.image_id")
    else:
        size = ctx.images[image_id][:2]
        ctx.annotated_images.add(image_id)
    keypoint_names: int | None = None
    if not is_int(cat_id):
        report("schema-missing" if "category_id" not in ann else "schema-type",
               f"'category_id' must be an integer, got {cat_id!r}", f"{path}.category_id")
    elif cat_id not in ctx.categories:
        report("unknown-category", f"category_id {cat_id} is not in 'categories'", f"{path}.category_id")
    else:
        keypoint_names = ctx.categories[cat_id]
        ctx.used_categories.add(cat_id)
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        report("iscrowd-invalid", f"iscrowd must be 0 or 1, got {crowd!r}", f"{path}.iscrowd")
    bbox = ann.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            report("schema-type", f"'bbox' must be [x, y, width, height], got {bbox!r:.60}", f"{path}.bbox")
        elif not all(math.isfinite(v) for v in bbox):
            pass  # reported as json-nonfinite
        elif bbox[2] <= 0 or bbox[3] <= 0:
            report("bbox-invalid", f"bbox width and height must be > 0, got {bbox}", f"{path}.bbox")
    area = ann.get("area")
    if area is not None and not is_number(area):
        report("schema-type", f"'area' must be a number, got {area!r:.60}", f"{path}.area")
    check_keypoints(ann, path, size, keypoint_names, report)
    segmentation = ann.get("segmentation")
    if segmentation is None:
        if bbox is None:
            report("schema-missing", "annotation has neither 'segmentation' nor 'bbox'", path)
        return None
    if isinstance(segmentation, list):
        if crowd == 1:
            report("iscrowd-geometry", "a crowd annotation (iscrowd=1) given as polygons; COCO "
                   "crowd regions are RLE", f"{path}.iscrowd")
        if not segmentation:
            report("mask-empty", "segmentation is an empty list", f"{path}.segmentation")
            return None
        parts = polygon_parts(segmentation, path, image_id, ann_id, out)
        if size is None:
            return None
        if not parts:
            if out is not None and all(isinstance(p, list) and not p for p in segmentation):
                report("mask-empty", "every polygon part is empty", f"{path}.segmentation")
            return None
        if len(parts) < len(segmentation):
            return None  # the bad parts are reported; comparing the rest would mislead
        return Geometry("polygon", parts=parts)
    if isinstance(segmentation, dict):
        rle = rle_geometry(segmentation, size, path, image_id, ann_id, out)
        if rle is None or size is None:
            return None
        return Geometry("rle", rle=rle)
    report("schema-type", f"'segmentation' must be a polygon list or an RLE object, got "
           f"{_type_name(segmentation)}", f"{path}.segmentation")
    return None


def check_keypoints(ann: dict[str, Any], path: str, size: tuple[int, int] | None,
                    names: int | None, report: Callable[[str, str, str], None]) -> None:
    raw = ann.get("keypoints")
    if raw is None:
        return
    if not isinstance(raw, list) or not all(is_number(v) for v in raw):
        report("schema-type", "'keypoints' must be a flat list of numbers [x, y, v, ...]",
               f"{path}.keypoints")
        return
    if names is not None and names and len(raw) != 3 * names:
        report("keypoints-count", f"'keypoints' has {len(raw)} numbers; the category names "
               f"{names} keypoints = {3 * names} numbers", f"{path}.keypoints")
        return
    if len(raw) % 3:
        report("keypoints-count", f"'keypoints' has {len(raw)} numbers, not a multiple of 3",
               f"{path}.keypoints")
        return
    values = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(values).all():
        return  # reported as json-nonfinite
    bad = ~np.isin(values[:, 2], (0, 1, 2))
    if bad.any():
        report("keypoints-visibility", f"visibility must be 0, 1 or 2; keypoint(s) "
               f"{np.flatnonzero(bad).tolist()} have {values[bad, 2].tolist()}", f"{path}.keypoints")
    labelled = values[:, 2] > 0
    num = ann.get("num_keypoints")
    if num is not None and num != int(labelled.sum()):
        report("num-keypoints-mismatch", f"num_keypoints is {num!r} but {int(labelled.sum())} "
               f"keypoints are labelled", f"{path}.num_keypoints")
    if size is not None and labelled.any():
        h, w = size
        xs, ys = values[labelled, 0], values[labelled, 1]
        outside = (xs < 0) | (ys < 0) | (xs > w) | (ys > h)
        if outside.any():
            which = np.flatnonzero(labelled)[outside].tolist()
            report("keypoints-outside-image", f"labelled keypoint(s) {which} lie outside the "
                   f"{w}x{h} image", f"{path}.keypoints")


def polygon_validity(parts: list[np.ndarray]) -> np.ndarray:
    """Shapely's ``is_valid`` of every part (closed ring), vectorised over all parts."""
    import shapely

    if not parts:
        return np.zeros(0, dtype=bool)
    rings = [np.concatenate([p.reshape(-1, 2), p[:2].reshape(1, 2)]) for p in parts]
    lengths = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    coords = np.concatenate(rings)
    ring_offsets = np.concatenate([[0], np.cumsum(lengths)])
    polygon_offsets = np.arange(len(parts) + 1, dtype=np.int64)
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords,
                                      (ring_offsets, polygon_offsets))
    return np.asarray(shapely.is_valid(geoms), dtype=bool)


def validity_reason(part: np.ndarray) -> str:
    import shapely
    from shapely.geometry import Polygon

    return str(shapely.is_valid_reason(Polygon(part.reshape(-1, 2))))


def rasterise_and_compare(
    pending: dict[int, list[tuple[int, dict[str, Any], Geometry]]], ctx: Context, out: Collector,
) -> None:
    all_parts: list[np.ndarray] = []
    owners: list[tuple[int, dict[str, Any], int]] = []
    for image_id, rows in pending.items():
        h, w = ctx.images[image_id][:2]
        polygon_parts_: list[np.ndarray] = []
        rles: list[dict[str, Any]] = []
        for index, ann, geometry in rows:
            if geometry.kind == "polygon":
                polygon_parts_.extend(geometry.parts)
                for k, part in enumerate(geometry.parts):
                    all_parts.append(part)
                    owners.append((index, ann, k))
        part_rles = mask_utils.frPyObjects(polygon_parts_, h, w) if polygon_parts_ else []
        start = 0
        for _index, _ann, geometry in rows:
            if geometry.kind == "polygon":
                group = part_rles[start : start + len(geometry.parts)]
                start += len(geometry.parts)
                geometry.rle = group[0] if len(group) == 1 else mask_utils.merge(group)
            rles.append(geometry.rle)  # type: ignore[arg-type]
        areas = mask_utils.area(rles)
        boxes = mask_utils.toBbox(rles)
        for (index, ann, geometry), area, box in zip(rows, areas, boxes, strict=True):
            compare_geometry(ann, index, geometry, int(area), box, (h, w), out)
    valid = polygon_validity(all_parts)
    for (index, ann, k), ok in zip(owners, valid, strict=True):
        if not ok:
            out.add("polygon-self-intersection", validity_reason(_part(ann, k)),
                    json_path=f"annotations[{index}].segmentation[{k}]",
                    image_id=ann.get("image_id"), annotation_id=ann.get("id"))


def _part(ann: dict[str, Any], k: int) -> np.ndarray:
    return np.asarray(ann["segmentation"][k], dtype=np.float64)


def compare_geometry(ann: dict[str, Any], index: int, geometry: Geometry, area: int,
                     box: np.ndarray, size: tuple[int, int], out: Collector) -> None:
    path = f"annotations[{index}]"
    image_id, ann_id = ann.get("image_id"), ann.get("id")

    def report(code: str, message: str, where: str) -> None:
        out.add(code, message, json_path=where, image_id=image_id, annotation_id=ann_id)

    if geometry.kind == "polygon":
        h, w = size
        xs = np.concatenate([p[0::2] for p in geometry.parts])
        ys = np.concatenate([p[1::2] for p in geometry.parts])
        t = OUTSIDE_TOLERANCE_PX
        if xs.min() < -t or ys.min() < -t or xs.max() > w + t or ys.max() > h + t:
            report("polygon-outside-image", f"vertices span x {xs.min():g}..{xs.max():g}, "
                   f"y {ys.min():g}..{ys.max():g}; the image is {w}x{h}", f"{path}.segmentation")
    if area == 0:
        report("mask-empty", "the mask covers no pixel (degenerate or outside the image)",
               f"{path}.segmentation")
        return
    file_area = ann.get("area")
    if is_finite_number(file_area):
        diff = abs(float(file_area) - area)
        if diff > max(AREA_TOLERANCE_PX, AREA_TOLERANCE_FRACTION * area):
            if ann.get("iscrowd") == 1 and geometry.kind == "rle":
                report("crowd-area-quirk", f"area {file_area:g} vs {area} mask pixels", f"{path}.area")
            else:
                report("area-mismatch", f"area {file_area:g} vs {area} mask pixels", f"{path}.area")
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox) \
            and bbox[2] > 0 and bbox[3] > 0:
        mine = np.asarray([box[0], box[1], box[0] + box[2], box[1] + box[3]])
        theirs = np.asarray([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
        tolerance = BBOX_TOLERANCE_PX + BBOX_TOLERANCE_FRACTION * max(float(box[2]), float(box[3]))
        if np.abs(mine - theirs).max() > tolerance:
            report("bbox-mismatch", f"bbox {[round(float(v), 2) for v in bbox]} vs the mask's "
                   f"tight box {[round(float(v), 2) for v in box]}", f"{path}.bbox")


# --- image files -------------------------------------------------------------------------------


def _open_image(path: str) -> tuple[str, str | None, tuple[int, int] | None]:
    """Worker: ``(status, message, (H, W) after EXIF orientation)``."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        return "missing", None, None
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
            width, height = image.size
            image.load()
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return "ok", None, (height, width)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return "unreadable", str(exc), None


def check_image_files(files: list[tuple[int, str]], images_dir: str, document: dict[str, Any],
                      ctx: Context, out: Collector, workers: int | None, progress: bool) -> None:
    paths: list[tuple[int, str, str]] = []
    index_of = {image_id: i for i, (image_id, _) in enumerate(files)}
    for image_id, name in files:
        try:
            paths.append((image_id, name, safe_join(images_dir, name)))
        except PathEscapeError as exc:
            out.add("image-path-escape", exc.message, json_path=_image_path(document, image_id, ctx),
                    image_id=image_id)
    del index_of
    results: Iterator[tuple[str, str | None, tuple[int, int] | None]]
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if workers > 1 and len(paths) >= 32:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_open_image, [p for _, _, p in paths], chunksize=16)
    else:
        pool = None
        results = map(_open_image, [p for _, _, p in paths])
    if progress and len(paths) >= 200:
        from tqdm import tqdm

        results = iter(tqdm(results, total=len(paths), desc="images", unit="img", leave=False))
    try:
        for (image_id, name, full), (status, message, size) in zip(paths, results, strict=True):
            where = _image_path(document, image_id, ctx)
            if status == "missing":
                out.add("image-missing", f"{name} not found in {images_dir}", json_path=where,
                        image_id=image_id)
            elif status == "unreadable":
                out.add("image-unreadable", f"{name}: {message}", json_path=where, image_id=image_id)
            elif image_id in ctx.images and size is not None and size != ctx.images[image_id][:2]:
                h, w = ctx.images[image_id][:2]
                out.add("image-size-mismatch", f"{name} is {size[1]}x{size[0]} (WxH, after EXIF "
                        f"orientation) but the entry says {w}x{h}", json_path=where, image_id=image_id)
            del full
    finally:
        if pool is not None:
            pool.shutdown()


def _image_path(document: dict[str, Any], image_id: int, ctx: Context) -> str:
    if image_id in ctx.images:
        return f"images[{ctx.images[image_id][2]}]"
    for index, entry in enumerate(document.get("images") or []):
        if isinstance(entry, dict) and entry.get("id") == image_id:
            return f"images[{index}]"
    return "images"


def check_document(document: Any, *, file: str | None = None, raw: bytes | None = None,
                   images_dir: str | None = None, workers: int | None = None,
                   progress: bool = False) -> tuple[list[Finding], Context]:
    """Every check of a parsed COCO document; ``raw`` (the file's bytes) locates NaN/Infinity."""
    out = Collector(file)
    ctx = Context(file)
    if raw is not None:
        find_nonfinite(raw, document, out)
    elif _has_nonfinite(document):
        find_nonfinite(b"NaN", document, out)
    if not isinstance(document, dict):
        out.add("schema-type", f"a COCO file must hold a JSON object, got {_type_name(document)}",
                json_path="$")
        return out.findings, ctx
    check_categories(document, ctx, out)
    files = check_images(document, ctx, out)
    check_annotations(document, ctx, out, progress)
    if images_dir is not None:
        check_image_files(files, images_dir, document, ctx, out, workers, progress)
    categories = document.get("categories")
    for index, entry in enumerate(categories if isinstance(categories, list) else []):
        if isinstance(entry, dict) and is_int(entry.get("id")) and entry["id"] not in ctx.used_categories:
            out.add("category-unused", f"category {entry['id']} ({entry.get('name')!r}) has no annotation",
                    json_path=f"categories[{index}]")
    for image_id, (_, _, index) in ctx.images.items():
        if image_id not in ctx.annotated_images:
            out.add("image-no-annotations", f"image {image_id} has no annotation",
                    json_path=f"images[{index}]", image_id=image_id)
    return out.findings, ctx


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False

"""LabelMe JSON (wkentaro/labelme): ``read_labelme`` and ``write_labelme``.

One JSON per image: ``version``, ``flags``, ``shapes``, ``imagePath`` (relative to the JSON),
``imageData`` (base64 image or null), ``imageHeight``, ``imageWidth``. A shape is ``label``,
``points`` (``[[x, y], ...]``), ``shape_type``, ``group_id``, ``flags``, ``description`` and, for
``shape_type: "mask"`` (labelme >= 5.3), ``mask``: a base64 PNG of the box crop whose top-left
pixel is ``points[0]``.

Objects. As labelme's own ``labelme2coco`` does, shapes with the same ``label`` and a non-null
``group_id`` are one object (their union); a shape without ``group_id`` is an object by itself.
Region shapes: ``polygon`` (a polygon part), ``rectangle`` (two corners -> a 4-point part),
``oriented_rectangle`` (4 points), ``circle`` (centre and a point on the rim; traced as a polygon
within 1 px, as ``labelme2coco`` does: ``circles_as_polygons``), ``mask`` (a bitmap, exact). An
object made only of polygon-like shapes is a polygon mask (its parts); one with a ``mask`` shape
is the union as a bitmap. ``point``, ``points``, ``line`` and ``linestrip`` are not regions: they
are kept in ``sample.meta.extra["labelme_other_shapes"]`` and written back, and counted
(``other_shapes``); so are shapes labelled ``__ignore__`` or ``_background_`` (``ignore_shapes``;
``labelme2coco`` leaves them out).

Keypoints, as labelme is used for pose: ``point`` shapes sharing an object's ``group_id`` (a
group whose regions have one label) are its keypoints, named by their labels (visibility 2); a
category's names come from ``instkit_keypoints.json`` (written by ``write_labelme``) and then in
order of first appearance. Written back as ``point`` shapes in the object's group; LabelMe has
no visibility, so ``v=1`` is read back as 2 (``keypoints_visibility_lost``).

Points are read as COCO polygon vertices (pixel-edge coordinates), the convention
``labelme2coco`` uses; LabelMe's own renderer (PIL) fills a polygon's edge pixels slightly
differently, by at most a pixel along the outline.

Round trips. Each object keeps its source shapes (``labelme_shapes`` extra); while its mask,
label and box are unchanged it is written back as those shapes exactly (type, flags,
description, group, extra keys). A changed object is written from its geometry: each polygon
part a ``polygon`` shape (parts share a ``group_id``), an RLE or bitmap mask a ``mask`` shape
(exact), a box-only object a ``rectangle``.

Categories: ``labels.txt`` beside the JSON files (labelme's convention: ``__ignore__`` and
``_background_`` first, then one name a line) fixes the order, ids 1..C; without it the names
found, sorted, get ids 1..C. Not stored: annotation ids (numbered 1..M on reading), ``iscrowd``
(``crowd``), category ids other than 1..C (``category_ids_renumbered``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeGuard

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import (
    FormatError,
    InstkitError,
    LimitError,
    Location,
    MaskError,
    PathEscapeError,
    show_value,
)
from instkit.instances import Instances
from instkit.io.files import load_json, safe_join, staged_folder
from instkit.io.images import copy_image, suffix_for
from instkit.io.registry import SampleList
from instkit.io.sa1b import EncodedImageSlot, InlineImage
from instkit.masks import (
    BitmapMask,
    MaskItem,
    Masks,
    PolygonMask,
    same_item,
    tight_bitmap,
    union_items,
)
from instkit.sample import Sample, SampleMeta, check_image_pixels, open_image

VERSION = "5.5.0"
REGION_TYPES = ("polygon", "rectangle", "oriented_rectangle", "circle", "mask")
OTHER_TYPES = ("point", "points", "line", "linestrip")
_POINT_COUNT = {"rectangle": 2, "circle": 2, "mask": 2, "oriented_rectangle": 4, "point": 1,
                "line": 2}
_RESERVED = ("label", "points", "group_id", "shape_type", "flags", "description", "mask")
_SKIP_LABELS = ("__ignore__", "_background_")
KEYPOINTS_FILE = "instkit_keypoints.json"


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_coordinates(points: np.ndarray, at: Location) -> None:
    """Coordinates within the rulebook's ``max_coordinate`` (checked before anything is traced
    or rasterised: pycocotools and the tracers work in C ints)."""
    from instkit.validate.rules import DEFAULT_LIMITS

    largest = float(np.abs(points).max()) if points.size else 0.0
    if largest > DEFAULT_LIMITS.max_coordinate:
        raise LimitError(f"a coordinate reaches {largest:g}, beyond "
                         f"+-{DEFAULT_LIMITS.max_coordinate:g}", at, code="coordinate-out-of-range")


def check_outline(part: np.ndarray, at: Location) -> None:
    """A polygon part whose outline stays within the rulebook's ``max_polygon_outline`` px."""
    from instkit.validate.rules import DEFAULT_LIMITS

    xy = part.reshape(-1, 2)
    outline = float(np.abs(xy - np.roll(xy, 1, axis=0)).max(axis=1).sum())
    if outline > DEFAULT_LIMITS.max_polygon_outline:
        raise LimitError(f"the polygon outline is {outline:.0f} px long, beyond the limit "
                         f"{DEFAULT_LIMITS.max_polygon_outline} px", at, code="polygon-too-large")


def circle_polygon(center: Sequence[float], rim: Sequence[float]) -> np.ndarray:
    """A circle as a polygon whose chords stay within 1 px of the arc (at least 12 vertices)."""
    cx, cy = float(center[0]), float(center[1])
    radius = math.hypot(float(rim[0]) - cx, float(rim[1]) - cy)
    vertices = 12 if radius <= 1.0 else max(12, int(math.pi / math.acos(1.0 - 1.0 / radius)))
    angles = (2.0 * math.pi / vertices) * np.arange(vertices)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).reshape(-1)


def _decode_mask_png(data: str, at: Location) -> np.ndarray:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"'mask' is not base64: {exc}", at) from None
    try:
        with open_image(io.BytesIO(raw), at) as image:
            array = np.asarray(image)
    except OSError as exc:
        raise FormatError(f"'mask' is not a PNG image: {exc}", at) from None
    if array.ndim == 3:
        array = array[..., 0]
    return array != 0


def encode_mask_png(mask: np.ndarray) -> str:
    """A bool mask as labelme stores it: a base64 PNG of 0/1 values."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _points(shape: dict[str, Any], at: Location) -> np.ndarray:
    points = shape.get("points")
    if not (isinstance(points, list) and points and all(
            isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points)):
        raise FormatError(f"'points' must be a non-empty list of [x, y] finite numbers, got "
                          f"{show_value(points)}", at)
    array = np.asarray(points, dtype=np.float64)
    check_coordinates(array, at)
    return array


def shape_region(shape: dict[str, Any], size: tuple[int, int], at: Location) -> MaskItem:
    """One region shape -> a single-part ``PolygonMask`` or a ``BitmapMask`` (image-clipped)."""
    kind = shape.get("shape_type") or "polygon"
    points = _points(shape, Location(**{**at.as_dict(), "json_path": f"{at.json_path}.points"}))
    expected = _POINT_COUNT.get(kind)
    if expected is not None and len(points) != expected:
        raise FormatError(f"a {kind} needs exactly {expected} points, got {len(points)}", at)
    if kind == "polygon":
        if len(points) < 3:
            raise FormatError(f"a polygon needs at least 3 points, got {len(points)}", at)
        check_outline(points, at)
        return PolygonMask((points.reshape(-1),))
    if kind == "rectangle":
        (x0, x1), (y0, y1) = sorted(points[:, 0]), sorted(points[:, 1])
        corners = np.asarray([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)
        check_outline(corners, at)
        return PolygonMask((corners,))
    if kind == "oriented_rectangle":
        check_outline(points, at)
        return PolygonMask((points.reshape(-1),))
    if kind == "circle":
        if np.array_equal(points[0], points[1]):
            raise FormatError("a circle whose centre and rim point are the same", at)
        radius = float(np.hypot(*(points[1] - points[0])))
        check_outline(np.asarray([points[0] - radius, points[0] + radius]), at)
        return PolygonMask((circle_polygon(points[0], points[1]),))
    if kind == "mask":
        data = shape.get("mask")
        if not isinstance(data, str):
            raise FormatError("a mask shape needs 'mask': a base64 PNG", at)
        crop = _decode_mask_png(data, Location(**{**at.as_dict(), "json_path": f"{at.json_path}.mask"}))
        x0, y0 = (int(round(v)) for v in points[0])
        h, w = size
        ys, xs = slice(max(y0, 0), min(y0 + crop.shape[0], h)), slice(max(x0, 0), min(x0 + crop.shape[1], w))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            return BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0))
        inside = crop[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        return tight_bitmap(inside, (ys.start, xs.start))
    raise FormatError(f"unknown shape_type {kind!r} (LabelMe has {', '.join(REGION_TYPES + OTHER_TYPES)})", at)


def shape_keypoints(points: list[dict[str, Any]], names: Sequence[str], k: int) -> np.ndarray:
    """``(k, 3)`` keypoints from ``point`` shapes named by ``names`` (visibility 2; 0 where the
    object has no point of that name)."""
    out = np.zeros((k, 3), dtype=np.float32)
    for shape in points:
        if shape["label"] in names:
            (x, y), = shape["points"][:1]
            out[list(names).index(shape["label"])] = (x, y, 2)
    return out


def _categories(folder: Path, documents: list[tuple[Path, Any]]) -> Categories:
    labels_file = folder / "labels.txt"
    if labels_file.is_file():
        names = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n and n not in _SKIP_LABELS]
        if len(set(names)) != len(names):
            raise FormatError("labels.txt names a label twice", Location(file=str(labels_file)))
        return Categories.from_names(names)
    found: set[str] = set()
    for _, doc in documents:
        shapes = doc.get("shapes") if isinstance(doc, dict) else None
        for shape in shapes if isinstance(shapes, list) else []:
            if isinstance(shape, dict) and isinstance(shape.get("label"), str) and \
                    shape["label"] not in _SKIP_LABELS and \
                    (shape.get("shape_type") or "polygon") in REGION_TYPES:
                found.add(shape["label"])
    return Categories.from_names(sorted(found))


def _region_groups(shapes: list[Any]) -> dict[int, set[str]]:
    """group_id -> the labels of the region shapes in that group."""
    found: dict[int, set[str]] = {}
    for shape in shapes:
        if isinstance(shape, dict) and isinstance(shape.get("group_id"), int) and \
                isinstance(shape.get("label"), str) and shape["label"] not in _SKIP_LABELS and \
                (shape.get("shape_type") or "polygon") in REGION_TYPES:
            found.setdefault(shape["group_id"], set()).add(shape["label"])
    return found


def keypoint_owner(shape: Any, regions: dict[int, set[str]]) -> str | None:
    """The label of the object a ``point`` shape is a keypoint of: the one region label of its
    group (labelme's pose convention: keypoints share the object's ``group_id``), else None."""
    if not isinstance(shape, dict) or (shape.get("shape_type") or "polygon") != "point" or \
            shape.get("label") in _SKIP_LABELS or not isinstance(shape.get("label"), str):
        return None
    group = shape.get("group_id")
    labels = regions.get(group, set()) if isinstance(group, int) else set()
    return next(iter(labels)) if len(labels) == 1 else None


def _keypoint_names(folder: Path, documents: list[tuple[Path, Any]],
                    categories: Categories) -> Categories:
    """``categories`` with each one's keypoint names: ``instkit_keypoints.json`` (written by
    ``write_labelme``) where present, else the point labels in order of first appearance."""
    sidecar = folder / KEYPOINTS_FILE
    names: dict[str, list[str]] = {}
    if sidecar.is_file():
        table = load_json(sidecar)
        if not (isinstance(table, dict) and all(
                isinstance(v, list) and all(isinstance(n, str) for n in v) for v in table.values())):
            raise FormatError("must map category names to lists of keypoint names",
                              Location(file=str(sidecar)))
        names = {str(k): list(v) for k, v in table.items()}
    for _, doc in documents:
        shapes = doc.get("shapes") if isinstance(doc, dict) else None
        shapes = shapes if isinstance(shapes, list) else []
        regions = _region_groups(shapes)
        for shape in shapes:
            owner = keypoint_owner(shape, regions)
            if owner is not None and shape["label"] not in names.setdefault(owner, []):
                names[owner].append(shape["label"])
    if not any(names.values()):
        return categories
    return Categories(Category(id=c.id, name=c.name, supercategory=c.supercategory,
                               keypoints=tuple(names.get(c.name, ())) or c.keypoints,
                               skeleton=c.skeleton, extra=c.extra) for c in categories)


def _image_file(doc: dict[str, Any], json_file: Path, root: Path, at: Location) -> str | None:
    """The image's path (inside ``root``), or None when ``imagePath`` names none."""
    name = doc.get("imagePath")
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise FormatError(f"'imagePath' must be a string, got {show_value(name)}", at)
    relative = PureWindowsPath(name).as_posix() if "\\" in name else name
    candidate = os.path.normpath(json_file.parent.resolve() / relative)
    return safe_join(root, os.path.relpath(candidate, root.resolve()),
                     Location(file=at.file, json_path="imagePath"))


def read_labelme(path: str | os.PathLike[str]) -> SampleList:
    """Read one LabelMe JSON file, or every ``*.json`` under a folder (files without
    ``shapes`` are skipped and counted in ``read_counts["files_skipped"]``)."""
    from instkit.io.yolo import image_ids

    target = Path(path)
    root = target.parent if target.is_file() else target
    files = [target] if target.is_file() else sorted(
        p for p in target.rglob("*.json") if not p.name.startswith("."))
    documents: list[tuple[Path, Any]] = []
    counts = {"files_skipped": 0, "circles_as_polygons": 0, "other_shapes": 0, "ignore_shapes": 0}
    for file in files:
        doc = load_json(file)
        if not isinstance(doc, dict) or "shapes" not in doc:
            if target.is_file():
                raise FormatError("a LabelMe file must be an object with 'shapes'",
                                  Location(file=str(file)))
            counts["files_skipped"] += 1
            continue
        documents.append((file, doc))
    categories = _keypoint_names(root, documents, _categories(root, documents))
    ids = image_ids([p for p, _ in documents])
    samples: list[Sample] = []
    next_id = 1
    for (file, doc), image_id in zip(documents, ids, strict=True):
        sample = _sample(file, doc, root, image_id, categories, next_id, counts)
        next_id += len(sample.instances)
        samples.append(sample)
    return SampleList(samples, categories, {k: v for k, v in counts.items() if v},
                      format="labelme")


def _sample(file: Path, doc: dict[str, Any], root: Path, image_id: int, categories: Categories,
            first_id: int, counts: dict[str, int]) -> Sample:
    where = Location(file=str(file), image_id=image_id)
    shapes = doc.get("shapes")
    if not isinstance(shapes, list):
        raise FormatError("'shapes' must be a list", Location(file=str(file), json_path="shapes"))
    inline = doc.get("imageData")
    try:
        image_path = _image_file(doc, file, root, where)
    except PathEscapeError:
        if not (isinstance(inline, str) and inline):
            raise
        image_path = None  # the inline image is the image; the path leaves the dataset
    height, width = doc.get("imageHeight"), doc.get("imageWidth")
    has_file = image_path is not None and os.path.isfile(image_path)
    encoded: bytes | None = None
    if isinstance(inline, str) and inline and not has_file:
        try:
            encoded = base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FormatError(f"'imageData' is not base64: {exc}",
                              Location(file=str(file), json_path="imageData")) from None
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        source: Any = io.BytesIO(encoded) if encoded is not None else image_path
        if source is None or (encoded is None and not has_file):
            raise FormatError("no imageHeight/imageWidth and no image to read the size from", where)
        with open_image(source, where) as opened:
            width, height = opened.size
    check_image_pixels((int(width), int(height)), where)
    size = (int(height), int(width))
    groups: dict[Any, list[int]] = {}
    other: list[dict[str, Any]] = []
    regions = _region_groups(shapes)
    attached: dict[int, list[int]] = {}  # group_id -> its keypoint shapes
    for n, shape in enumerate(shapes):
        at = Location(file=str(file), json_path=f"shapes[{n}]", image_id=image_id)
        if not isinstance(shape, dict):
            raise FormatError("a shape must be an object", at)
        label, kind, group = shape.get("label"), shape.get("shape_type") or "polygon", shape.get("group_id")
        if not isinstance(label, str):
            raise FormatError(f"'label' must be a string, got {show_value(label)}", at)
        if group is not None and (not isinstance(group, int) or isinstance(group, bool)):
            raise FormatError(f"'group_id' must be an integer or null, got {show_value(group)}", at)
        if keypoint_owner(shape, regions) is not None:
            if len(_points(shape, at)) != 1:
                raise FormatError(f"a point needs exactly 1 point, got {len(shape['points'])}", at)
            attached.setdefault(shape["group_id"], []).append(n)
            continue
        if kind in OTHER_TYPES or label in _SKIP_LABELS:
            _points(shape, at)
            other.append(shape)
            counts["ignore_shapes" if label in _SKIP_LABELS else "other_shapes"] += 1
            continue
        if kind not in REGION_TYPES:
            raise FormatError(f"unknown shape_type {kind!r} (LabelMe has "
                              f"{', '.join(REGION_TYPES + OTHER_TYPES)})", at)
        if not categories.names.count(label):
            raise FormatError(f"label {label!r} is not in the category table "
                              f"({'labels.txt' if (root / 'labels.txt').is_file() else 'labels found'})", at)
        key = (label, group) if group is not None else ("", n)
        groups.setdefault(key, []).append(n)
    items: list[MaskItem] = []
    labels: list[int] = []
    sources: list[list[dict[str, Any]]] = []
    num_keypoints = categories.num_keypoints
    keypoints = np.zeros((len(groups), num_keypoints, 3), dtype=np.float32)
    for row, (key, members) in enumerate(groups.items()):
        parts = []
        for n in members:
            at = Location(file=str(file), json_path=f"shapes[{n}]", image_id=image_id)
            try:
                parts.append(shape_region(shapes[n], size, at))
            except MaskError as exc:
                raise FormatError(exc.message, at) from None
            if (shapes[n].get("shape_type") or "polygon") == "circle":
                counts["circles_as_polygons"] += 1
        items.append(union_items(parts, size))
        label = categories.names.index(shapes[members[0]]["label"])
        labels.append(label)
        points = attached.get(key[1], []) if key[0] else []
        keypoints[row] = shape_keypoints([shapes[n] for n in points], categories[label].keypoints,
                                         num_keypoints)
        sources.append([shapes[n] for n in members + points])
    masks = Masks(items, size)
    n_obj = len(items)
    instances = Instances(image_size=size, masks=masks, labels=np.asarray(labels, dtype=np.int64),
                          ids=np.arange(first_id, first_id + n_obj, dtype=np.int64),
                          keypoints=keypoints if num_keypoints else None,
                          extras={"labelme_shapes": sources})
    extra: dict[str, Any] = {}
    kept = {k: v for k, v in doc.items() if k not in ("version", "shapes", "imagePath", "imageData",
                                                       "imageHeight", "imageWidth")}
    if kept:
        extra["labelme_document"] = kept
    if other:
        extra["labelme_other_shapes"] = other
    if image_path is not None:
        file_name = Path(image_path).relative_to(root.resolve()).as_posix() \
            if root.resolve() in Path(image_path).parents else Path(image_path).name
    else:  # only the inline image: named after the JSON, in its own format
        file_name = file.with_suffix(suffix_for(encoded) if encoded else ".png") \
            .relative_to(root).as_posix()
    meta = SampleMeta(source=str(file), file_name=file_name, original_size=size,
                      categories=categories, extra=extra)
    if encoded is not None:
        return Sample(instances, int(image_id), meta, None,
                      EncodedImageSlot(InlineImage(encoded, file_name), size))
    return Sample(instances, int(image_id), meta, image_path)


# --- writing ------------------------------------------------------------------------------------


def _is_point(shape: Any) -> bool:
    return isinstance(shape, dict) and (shape.get("shape_type") or "polygon") == "point"


def _unchanged(shapes: Any, item: MaskItem, label: str, keypoints: np.ndarray | None,
               names: Sequence[str], size: tuple[int, int]) -> bool:
    """Whether the object's source shapes still give its mask, label and keypoints."""
    if not isinstance(shapes, list) or not shapes or not all(isinstance(s, dict) for s in shapes):
        return False
    regions = [s for s in shapes if not _is_point(s)]
    points = [s for s in shapes if _is_point(s)]
    if not regions or any(s.get("label") != label for s in regions):
        return False
    try:
        parts = [shape_region(s, size, Location()) for s in regions]
        if keypoints is None:
            if points:
                return False
        elif not np.array_equal(shape_keypoints(points, names, keypoints.shape[0]), keypoints):
            return False
    except (FormatError, MaskError, KeyError, ValueError, TypeError):
        return False
    return same_item(union_items(parts, size), item)


def _plain(value: float) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else number


def sample_shapes(sample: Sample, categories: Categories, counts: dict[str, int]) -> list[dict[str, Any]]:
    """The LabelMe shapes of one sample (see the module docstring)."""
    inst = sample.instances
    masks = inst.masks
    sources = inst.extras.get("labelme_shapes")
    used_groups = {s.get("group_id") for column in (sources if sources is not None else [])
                   for s in (column or []) if isinstance(s, dict)}
    used_groups |= {s.get("group_id") for s in sample.meta.extra.get("labelme_other_shapes", [])}
    next_group = max([g for g in used_groups if isinstance(g, int)], default=0) + 1
    out: list[dict[str, Any]] = []
    counts["crowd"] += int(inst.iscrowd.sum())
    for i in range(len(inst)):
        category = categories[int(inst.labels[i])]
        label = category.name
        keypoints = inst.keypoints[i] if inst.keypoints is not None else None
        visible = [] if keypoints is None else [k for k in range(len(keypoints))
                                                 if keypoints[k, 2] > 0]
        base: dict[str, Any] = {"label": label, "description": "", "flags": {}, "mask": None}
        if masks is not None and sources is not None and _unchanged(
                sources[i], masks.items[i], label, keypoints, category.keypoints, inst.image_size):
            out.extend(dict(s) for s in sources[i])
            counts["objects"] += 1
            continue
        made: list[dict[str, Any]] = []
        if masks is None:
            x0, y0, x1, y1 = (_plain(v) for v in inst.boxes[i])
            made.append({**base, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle"})
        elif isinstance(masks.items[i], PolygonMask):
            for part in masks.items[i].parts:  # type: ignore[union-attr]
                made.append({**base, "shape_type": "polygon",
                             "points": [[_plain(x), _plain(y)] for x, y in part.reshape(-1, 2)]})
        else:
            bitmap, (y0, x0) = masks.crop_local(i)
            if bitmap.size == 0 or not bitmap.any():
                counts["empty_masks_dropped"] += 1
                continue
            h, w = bitmap.shape
            made.append({**base, "points": [[x0, y0], [x0 + w - 1, y0 + h - 1]],
                         "shape_type": "mask", "mask": encode_mask_png(bitmap)})
        # Shapes of one object share a group: its parts, and its keypoints (labelme's pose way).
        group = None
        if len(made) > 1 or visible:
            group, next_group = next_group, next_group + 1
        for shape in made:
            shape["group_id"] = group
        for k in visible if keypoints is not None else []:
            xyv = inst.keypoints[i, k]  # type: ignore[index]
            name = category.keypoints[k] if k < len(category.keypoints) else f"keypoint{k}"
            made.append({"label": name, "group_id": group, "description": "",
                         "points": [[_plain(xyv[0]), _plain(xyv[1])]],
                         "shape_type": "point", "flags": {}, "mask": None})
            counts["keypoints_visibility_lost"] += int(xyv[2] == 1)
        out.extend(made)
        counts["objects"] += 1
    out.extend(dict(s) for s in sample.meta.extra.get("labelme_other_shapes", []))
    return out


def write_labelme(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
                  categories: Categories | None = None) -> dict[str, int]:
    """Write each image and ``<stem>.json`` beside it (``<name>`` keeps the image's folders), and
    ``labels.txt``, in a new folder, atomically; returns counts."""
    from instkit.io.yolo import OutputNames

    categories = categories or getattr(samples, "categories", None)
    counts = {"images": 0, "objects": 0, "crowd": 0, "keypoints_visibility_lost": 0,
              "empty_masks_dropped": 0, "other_shapes": 0, "category_ids_renumbered": 0}
    with staged_folder(out_dir) as out:
        names = OutputNames()
        for sample in samples:
            categories = categories or sample.meta.categories
            if categories is None:
                raise InstkitError("write_labelme needs categories",
                                   Location(image_id=sample.image_id))
            name = names.claim(sample)
            copy_image(sample, out / name)
            counts["other_shapes"] += len(sample.meta.extra.get("labelme_other_shapes", []))
            h, w = sample.image_size
            document: dict[str, Any] = {"version": VERSION, "flags": {}}
            document.update(sample.meta.extra.get("labelme_document", {}))
            document.update({"shapes": sample_shapes(sample, categories, counts),
                             "imagePath": PurePosixPath(name).name, "imageData": None,
                             "imageHeight": int(h), "imageWidth": int(w)})
            label = out / PurePosixPath(name).with_suffix(".json")
            label.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False),
                             encoding="utf-8")
            counts["images"] += 1
        if categories is None:
            raise InstkitError("write_labelme needs categories")
        counts["category_ids_renumbered"] = sum(
            1 for label, c in enumerate(categories) if c.id != label + 1)
        (out / "labels.txt").write_text("\n".join([*_SKIP_LABELS, *categories.names]) + "\n",
                                        encoding="utf-8")
        if categories.num_keypoints:  # the keypoint order, which LabelMe has no place for
            table = {c.name: list(c.keypoints) for c in categories if c.keypoints}
            (out / KEYPOINTS_FILE).write_text(json.dumps(table, indent=2), encoding="utf-8")
    return counts


__all__ = ["check_coordinates", "check_outline", "circle_polygon", "encode_mask_png", "read_labelme", "sample_shapes", "shape_region",
           "write_labelme"]

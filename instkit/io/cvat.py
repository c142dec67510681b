"""CVAT for images 1.1 XML: ``read_cvat`` and ``write_cvat``.

The layout of CVAT's "CVAT for images" export: ``annotations.xml`` and ``images/``. The XML is
``<annotations><version>1.1</version><meta>...<labels><label><name>`` (under ``<task>``,
``<job>`` or ``<project>``) then one ``<image id name width height>`` per image holding shapes,
each with ``label``, ``occluded`` (0/1), ``z_order``, ``source``, optional ``group_id`` and
``<attribute name="...">value</attribute>`` children:

- ``<polygon points="x0,y0;x1,y1;...">``: a polygon part.
- ``<box xtl ytl xbr ybr [rotation]>``: read as its rectangle (a 4-point polygon; rotated about
  its centre by ``rotation`` degrees), so boxes and masks share one mask column.
- ``<mask rle="..." left top width height>``: CVAT's mask RLE: run lengths over the
  ``width x height`` crop at ``(left, top)`` in row-major order, alternating background and
  object and starting with background (``0`` first when the crop's first pixel is set). Exact.
- ``<ellipse cx cy rx ry [rotation]>``: traced as a polygon within 1 px (``ellipses_as_polygons``).
- ``<skeleton>`` sharing a ``group_id`` with an object's regions (of one label): that object's
  keypoints, one ``<points label>`` per point label of the skeleton (``<parent>`` in ``<meta>``,
  in that order; ``outside="1"`` -> visibility 0, ``occluded="1"`` -> 1, else 2). The region
  category gets the point names as keypoints and ``extra["cvat_skeleton"]``.
- ``<polyline>``, ``<points>``, ``<cuboid>``, other ``<skeleton>``s, ``<tag>``: not regions; kept
  beside the objects (``sample.meta.extra["cvat_other"]``, XML text), written back, counted
  (``other_shapes``).

A project export (``<image subset="Train" task_id>``, images under ``images/<subset>/``) reads
with ``file_name`` ``<subset>/<name>``, the subset in ``meta.extra["split"]``, and image ids the
images' positions (its frame ids repeat across subsets); labels with a ``<parent>`` (a
skeleton's points) are not classes.

Objects. Shapes with the same non-zero ``group_id`` in an image are one object, as CVAT's COCO
export groups them: the union of its regions (a polygon mask when all are polygons, else a
bitmap), its label the first region's, its box a grouped ``<box>``'s when it has one; a shape
without a group is an object by itself. ``occluded`` and ``z_order`` become the ``occluded``
(bool) and ``z_order`` (int) extras; other attributes the ``cvat_attributes`` extra (a dict).

Round trips. Each object keeps its source elements (``cvat_shapes`` extra); while its mask and
label are unchanged it is written back as those elements exactly. A changed object is written
from its geometry: each polygon part a ``<polygon>`` (parts share a ``group_id``), an RLE or
bitmap mask a ``<mask>`` (exact), a box-only object a ``<box>``. Not stored: annotation ids
(numbered 1..M on reading), ``iscrowd`` (``crowd``), category ids (labels are names; ids 1..C
in the ``<labels>`` order on reading: ``category_ids_renumbered``),
image ids (``<image id>`` is the frame index 0..N-1 on writing: ``image_ids_renumbered``).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import FormatError, InstkitError, Location, MaskError
from instkit.instances import Instances
from instkit.io.files import atomic_write, safe_join, same_file
from instkit.io.images import copy_image
from instkit.io.labelme import check_coordinates, check_outline
from instkit.io.registry import SampleList
from instkit.masks import (
    MaskItem,
    Masks,
    PolygonMask,
    same_item,
    tight_bitmap,
    union_items,
)
from instkit.sample import Sample, SampleMeta, check_image_pixels

REGIONS = ("polygon", "box", "mask", "ellipse")
OTHERS = ("polyline", "points", "cuboid", "skeleton", "tag")
_SHAPE_ATTRS = ("label", "occluded", "z_order", "source", "group_id", "points", "xtl", "ytl",
                "xbr", "ybr", "rotation", "rle", "left", "top", "width", "height", "cx", "cy",
                "rx", "ry")


def _number(element: ET.Element, name: str, at: Location, *, integer: bool = False) -> float:
    raw = element.get(name)
    if raw is None:
        raise FormatError(f"<{element.tag}> needs the attribute {name!r}", at)
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise FormatError(f"{name}={raw[:40]!r} is not {'an integer' if integer else 'a number'}",
                          at) from None
    if not math.isfinite(value):
        raise FormatError(f"{name}={raw!r} is not finite", at)
    return value


def _points(element: ET.Element, at: Location) -> np.ndarray:
    raw = element.get("points")
    if raw is None:
        raise FormatError(f"<{element.tag}> needs the attribute 'points'", at)
    try:
        pairs = [tuple(float(v) for v in pair.split(",")) for pair in raw.strip().split(";") if pair]
    except ValueError:
        raise FormatError(f"points={raw[:60]!r} is not 'x0,y0;x1,y1;...'", at) from None
    if any(len(p) != 2 for p in pairs) or not all(math.isfinite(v) for p in pairs for v in p):
        raise FormatError(f"points={raw[:60]!r} is not 'x0,y0;x1,y1;...' of finite numbers", at)
    array = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    check_coordinates(array, at)
    return array


def _rotated(corners: np.ndarray, degrees: float) -> np.ndarray:
    if not degrees:
        return corners
    centre = corners.mean(axis=0)
    angle = math.radians(degrees)
    rotation = np.asarray([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (corners - centre) @ rotation.T + centre


def decode_cvat_rle(counts: Sequence[int], width: int, height: int) -> np.ndarray:
    """CVAT's crop RLE -> ``(height, width)`` bool (row-major runs, background first)."""
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, np.asarray(counts, dtype=np.int64)).reshape(height, width)


def encode_cvat_rle(crop: np.ndarray) -> list[int]:
    """``(height, width)`` bool -> CVAT's crop RLE (row-major, background run first)."""
    flat = np.asarray(crop, dtype=bool).reshape(-1)
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def shape_region(element: ET.Element, size: tuple[int, int], at: Location) -> MaskItem:
    """One region element -> a single-part ``PolygonMask`` or a ``BitmapMask`` (image-clipped)."""
    tag = element.tag
    if tag == "polygon":
        points = _points(element, at)
        if len(points) < 3:
            raise FormatError(f"a polygon needs at least 3 points, got {len(points)}", at)
        check_outline(points, at)
        return PolygonMask((points.reshape(-1),))
    if tag == "box":
        x0, y0, x1, y1 = (_number(element, k, at) for k in ("xtl", "ytl", "xbr", "ybr"))
        if x1 < x0 or y1 < y0:
            raise FormatError(f"a box with xbr < xtl or ybr < ytl ({x0}, {y0}, {x1}, {y1})", at)
        corners = np.asarray([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
        check_coordinates(corners, at)
        check_outline(corners, at)
        rotation = _number(element, "rotation", at) if element.get("rotation") else 0.0
        return PolygonMask((_rotated(corners, rotation).reshape(-1),))
    if tag == "ellipse":
        cx, cy, rx, ry = (_number(element, k, at) for k in ("cx", "cy", "rx", "ry"))
        if rx <= 0 or ry <= 0:
            raise FormatError(f"an ellipse needs rx, ry > 0, got {rx}, {ry}", at)
        check_coordinates(np.asarray([cx - rx, cy - ry, cx + rx, cy + ry]), at)
        check_outline(np.asarray([cx - rx, cy - ry, cx + rx, cy + ry]), at)
        radius = max(rx, ry)
        vertices = 12 if radius <= 1.0 else max(12, int(math.pi / math.acos(1.0 - 1.0 / radius)))
        angles = (2.0 * math.pi / vertices) * np.arange(vertices)
        xy = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)
        centre = np.asarray([cx, cy])
        rotation = math.radians(_number(element, "rotation", at) if element.get("rotation")
                                else 0.0)
        turn = np.asarray([[math.cos(rotation), -math.sin(rotation)],
                           [math.sin(rotation), math.cos(rotation)]])
        return PolygonMask((((xy - centre) @ turn.T + centre).reshape(-1),))
    if tag == "mask":
        left, top, width, height = (int(_number(element, k, at, integer=True))
                                    for k in ("left", "top", "width", "height"))
        if width <= 0 or height <= 0:
            raise FormatError(f"a mask needs width, height > 0, got {width}, {height}", at)
        h, w = size
        if left < 0 or top < 0 or left + width > w or top + height > h:
            raise FormatError(f"the mask's box (left {left}, top {top}, width {width}, height "
                              f"{height}) leaves the {w}x{h} image", at)
        raw = element.get("rle")
        try:
            counts = [int(v) for v in (raw or "").split(",") if v.strip()]
        except ValueError:
            raise FormatError(f"rle={str(raw)[:60]!r} is not comma-separated integers", at) from None
        if any(c < 0 for c in counts) or sum(counts) != width * height:
            raise FormatError(f"rle runs sum to {sum(counts)}, expected width*height = "
                              f"{width}*{height} = {width * height} (non-negative runs)", at)
        return tight_bitmap(decode_cvat_rle(counts, width, height), (top, left))
    raise FormatError(f"<{tag}> is not a region (regions: {', '.join(REGIONS)})", at)


def _meta_labels(meta: ET.Element | None) -> list[Category]:
    """The classes of ``<meta>``; a skeleton label carries its points' names as keypoints (and
    ``extra["cvat_type"] = "skeleton"``); the point labels (``<parent>``) are not classes."""
    found: list[Category] = []
    if meta is None:
        return found
    seen: set[str] = set()
    points: dict[str, list[str]] = {}
    for labels in meta.iter("labels"):
        for label in labels.findall("label"):
            name = (label.findtext("name") or "").strip()
            parent = (label.findtext("parent") or "").strip()
            if parent:
                points.setdefault(parent, []).append(name)
                continue
            if not name or name in seen:
                continue
            seen.add(name)
            extra = {}
            color = (label.findtext("color") or "").strip()
            if color:
                extra["color"] = color
            if (label.findtext("type") or "").strip() == "skeleton":
                extra["cvat_type"] = "skeleton"
            found.append(Category(id=len(found) + 1, name=name, extra=extra))
    return [Category(id=c.id, name=c.name, keypoints=tuple(points.get(c.name, ())), extra=c.extra)
            for c in found]


def _group_of(element: ET.Element) -> int:
    group = element.get("group_id")
    try:
        return int(group) if group not in (None, "") else 0
    except ValueError:
        return 0  # reported where the element is read


def _skeleton_owners(images: list[ET.Element], categories: list[Category]) -> dict[str, str]:
    """Region label -> the skeleton label whose skeletons, grouped with its objects (CVAT's
    pose layout: a box or polygon and a skeleton sharing a ``group_id``), are their keypoints.
    A region label paired with two different skeletons keeps none."""
    skeletons = {c.name for c in categories if c.extra.get("cvat_type") == "skeleton"}
    owners: dict[str, str] = {}
    refused: set[str] = set()
    for image in images:
        regions: dict[int, set[str]] = {}
        for element in image:
            if element.tag in REGIONS and _group_of(element):
                regions.setdefault(_group_of(element), set()).add(element.get("label", ""))
        for element in image:
            labels = regions.get(_group_of(element), set())
            if element.tag != "skeleton" or element.get("label") not in skeletons or \
                    len(labels) != 1:
                continue
            (owner,) = labels
            if owners.setdefault(owner, element.get("label", "")) != element.get("label"):
                refused.add(owner)
    return {k: v for k, v in owners.items() if k not in refused}


def skeleton_keypoints(element: ET.Element, names: Sequence[str], at: Location) -> np.ndarray:
    """``(len(names), 3)`` keypoints of a ``<skeleton>``: each ``<points label>`` child at its
    name's index; ``outside="1"`` -> visibility 0, ``occluded="1"`` -> 1, else 2."""
    out = np.zeros((len(names), 3), dtype=np.float32)
    for child in element.findall("points"):
        name = child.get("label")
        if not isinstance(name, str) or name not in names or child.get("outside") == "1":
            continue
        xy = _points(child, at)
        if len(xy) != 1:
            raise FormatError(f"a skeleton point needs 1 point, got {len(xy)}", at)
        out[list(names).index(name)] = (xy[0, 0], xy[0, 1], 1 if child.get("occluded") == "1" else 2)
    return out


def read_cvat(path: str | os.PathLike[str], images: str | os.PathLike[str] | None = None
              ) -> SampleList:
    """Read a CVAT for images 1.1 XML file (or a folder holding ``annotations.xml``); images
    are looked up by ``<image name>`` under ``images`` (default: ``images/`` beside the file if
    it exists, else the file's folder)."""
    target = Path(path)
    file = target / "annotations.xml" if target.is_dir() else target
    if not file.is_file():
        raise FormatError("no CVAT annotations file", Location(file=str(file)))
    root_dir = Path(images) if images is not None else (
        file.parent / "images" if (file.parent / "images").is_dir() else file.parent)
    try:
        tree = ET.parse(file)
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: unknown encoding
        raise FormatError(f"invalid XML: {exc}", Location(file=str(file))) from None
    root = tree.getroot()
    if root.tag != "annotations":
        raise FormatError(f"the root element is <{root.tag}>, expected <annotations>",
                          Location(file=str(file)))
    version = (root.findtext("version") or "").strip()
    if version and version != "1.1":
        raise FormatError(f"CVAT XML version {version!r}; this reader knows 1.1",
                          Location(file=str(file), json_path="annotations/version"))
    if root.find("track") is not None:
        raise FormatError("this is CVAT for video (<track>); export as CVAT for images",
                          Location(file=str(file)))
    categories_list = _meta_labels(root.find("meta"))
    images_el = root.findall("image")
    if not categories_list:  # no <labels> in the meta: the labels used, sorted
        names = sorted({el.get("label", "") for image in images_el for el in image
                        if el.tag in REGIONS and el.get("label")})
        categories_list = [Category(id=i + 1, name=n) for i, n in enumerate(names)]
    owners = _skeleton_owners(images_el, categories_list)
    by_name = {c.name: c for c in categories_list}
    categories = Categories(
        Category(id=c.id, name=c.name, keypoints=by_name[owners[c.name]].keypoints,
                 extra={**c.extra, "cvat_skeleton": owners[c.name]})
        if c.name in owners else c for c in categories_list)
    label_of = {c.name: i for i, c in enumerate(categories)}
    counts = {"ellipses_as_polygons": 0, "other_shapes": 0}
    # A project export repeats frame ids across its subsets: ids are then the image's position.
    ids = [image.get("id") for image in images_el]
    unique = len(set(ids)) == len(ids)
    samples: list[Sample] = []
    next_id = 1
    for k, image in enumerate(images_el):
        sample = _sample(image, k, file, root_dir, categories, label_of, next_id, counts,
                         None if unique else k)
        next_id += len(sample.instances)
        samples.append(sample)
    return SampleList(samples, categories, {k: v for k, v in counts.items() if v}, format="cvat")


def _sample(image: ET.Element, k: int, file: Path, root_dir: Path, categories: Categories,
            label_of: dict[str, int], first_id: int, counts: dict[str, int],
            position_id: int | None) -> Sample:
    where = Location(file=str(file), json_path=f"image[{k}]")
    image_id = int(_number(image, "id", where, integer=True))
    if position_id is not None:
        image_id = position_id
    where = Location(file=str(file), json_path=f"image[{k}]", image_id=image_id)
    name = image.get("name")
    if not name:
        raise FormatError("<image> needs a 'name'", where)
    width = int(_number(image, "width", where, integer=True))
    height = int(_number(image, "height", where, integer=True))
    if width <= 0 or height <= 0:
        raise FormatError(f"image size must be positive, got {width}x{height}", where)
    check_image_pixels((width, height), where)
    size = (height, width)
    groups: dict[Any, list[int]] = {}
    other: list[str] = []
    children = list(image)
    region_labels: dict[int, set[str]] = {}
    for element in children:
        if element.tag in REGIONS and _group_of(element):
            region_labels.setdefault(_group_of(element), set()).add(element.get("label", ""))
    skeletons: dict[int, int] = {}  # group_id -> its skeleton element
    for n, element in enumerate(children):
        at = Location(file=str(file), json_path=f"image[{k}]/{element.tag}[{n}]",
                      image_id=image_id)
        if element.tag == "skeleton":  # the keypoints of the object it is grouped with?
            owner = region_labels.get(_group_of(element), set())
            label = next(iter(owner)) if len(owner) == 1 else None
            if label in label_of and _group_of(element) not in skeletons and \
                    categories[label_of[label]].extra.get("cvat_skeleton") == element.get("label"):
                skeletons[_group_of(element)] = n
                continue
        if element.tag in OTHERS:
            other.append(ET.tostring(element, encoding="unicode").strip())
            counts["other_shapes"] += 1
            continue
        if element.tag not in REGIONS:
            raise FormatError(f"unknown element <{element.tag}> in an <image>", at)
        label = element.get("label")
        if label not in label_of:
            raise FormatError(f"label {label!r} is not among the <meta> labels "
                              f"({', '.join(categories.names[:10])})", at)
        group = element.get("group_id")
        try:
            group_id = int(group) if group not in (None, "") else 0
        except ValueError:
            raise FormatError(f"group_id={group!r} is not an integer", at) from None
        groups.setdefault(("g", group_id) if group_id else ("s", n), []).append(n)
    items: list[MaskItem] = []
    labels: list[int] = []
    boxes: list[list[float]] = []
    occluded: list[bool] = []
    z_order: list[int] = []
    attributes: list[dict[str, str]] = []
    sources: list[list[str]] = []
    num_keypoints = categories.num_keypoints
    keypoints = np.zeros((len(groups), num_keypoints, 3), dtype=np.float32)
    for row, (key, members) in enumerate(groups.items()):
        regions = [n for n in members if children[n].tag != "box"] or members
        parts = []
        for n in regions:
            at = Location(file=str(file), json_path=f"image[{k}]/{children[n].tag}[{n}]",
                          image_id=image_id)
            try:
                parts.append(shape_region(children[n], size, at))
            except MaskError as exc:
                raise FormatError(exc.message, at) from None
            counts["ellipses_as_polygons"] += children[n].tag == "ellipse"
        item = union_items(parts, size)
        box = [math.nan] * 4
        grouped_boxes = [n for n in members if children[n].tag == "box" and n not in regions]
        if grouped_boxes:
            element = children[grouped_boxes[0]]
            at = Location(file=str(file), json_path=f"image[{k}]/box[{grouped_boxes[0]}]",
                          image_id=image_id)
            box = [_number(element, key, at) for key in ("xtl", "ytl", "xbr", "ybr")]
        first = children[regions[0]]
        at = Location(file=str(file), json_path=f"image[{k}]/{first.tag}[{regions[0]}]",
                      image_id=image_id)
        items.append(item)
        labels.append(label_of[first.get("label", "")])
        boxes.append(box)
        occluded.append(any(children[n].get("occluded") == "1" for n in members))
        z_order.append(int(_number(first, "z_order", at)) if first.get("z_order") else 0)
        attributes.append({a.get("name", ""): a.text or "" for n in members
                           for a in children[n].findall("attribute")})
        skeleton = skeletons.get(key[1]) if key[0] == "g" else None
        if skeleton is not None:
            names = categories[labels[-1]].keypoints
            keypoints[row, : len(names)] = skeleton_keypoints(children[skeleton], names, Location(
                file=str(file), json_path=f"image[{k}]/skeleton[{skeleton}]", image_id=image_id))
            members = [*members, skeleton]
        sources.append([ET.tostring(children[n], encoding="unicode").strip() for n in members])
    n_obj = len(items)
    masks = Masks(items, size)
    xyxy = np.asarray(boxes, dtype=np.float64).reshape(n_obj, 4)
    missing = np.isnan(xyxy).any(axis=1)
    if missing.any():
        xyxy[missing] = masks[np.flatnonzero(missing)].boxes()
    instances = Instances(image_size=size, boxes=xyxy, masks=masks,
                          keypoints=keypoints if num_keypoints else None,
                          labels=np.asarray(labels, dtype=np.int64),
                          ids=np.arange(first_id, first_id + n_obj, dtype=np.int64),
                          extras={"occluded": np.asarray(occluded, dtype=bool),
                                  "z_order": np.asarray(z_order, dtype=np.int64),
                                  "cvat_attributes": attributes, "cvat_shapes": sources})
    extra: dict[str, Any] = {}
    image_attrs = {key: value for key, value in image.attrib.items()
                   if key not in ("id", "name", "width", "height")}
    if image_attrs:
        extra["cvat_image"] = image_attrs
    if other:
        extra["cvat_other"] = other
    subset = image.get("subset")
    if subset:  # a project export: images/<subset>/<name>
        extra["split"] = subset
        name = f"{subset}/{name}"
    image_path = safe_join(root_dir, name, Location(file=str(file), json_path=f"image[{k}].name"))
    meta = SampleMeta(source=str(file), file_name=name, original_size=size,
                      categories=categories, extra=extra)
    return Sample(instances, image_id, meta, image_path)


# --- writing ------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{float(value):.2f}"


def _unchanged(sources: Any, item: MaskItem, category: Category, keypoints: np.ndarray | None,
               size: tuple[int, int]) -> bool:
    """Whether the object's source elements still give its mask, label and keypoints."""
    if not isinstance(sources, list) or not sources:
        return False
    try:
        elements = [ET.fromstring(text) for text in sources]
    except ET.ParseError:
        return False
    skeletons = [e for e in elements if e.tag == "skeleton"]
    elements = [e for e in elements if e.tag != "skeleton"]
    if not elements or any(e.get("label") != category.name for e in elements):
        return False
    regions = [e for e in elements if e.tag != "box"] or elements
    try:
        parts = [shape_region(e, size, Location()) for e in regions]
        if keypoints is None or not keypoints[:, 2].any():
            if skeletons and keypoints is None:
                return False
        elif len(skeletons) != 1 or not np.array_equal(skeleton_keypoints(
                skeletons[0], category.keypoints, Location()), keypoints[:len(category.keypoints)]):
            return False
    except (FormatError, MaskError):
        return False
    return same_item(union_items(parts, size), item)


def skeleton_label(category: Category) -> str:
    """The CVAT skeleton label that holds ``category``'s keypoints."""
    owner = category.extra.get("cvat_skeleton")
    return owner if isinstance(owner, str) else f"{category.name} skeleton"


def _skeleton_element(category: Category, keypoints: np.ndarray, group: int,
                      z: str) -> ET.Element:
    """A ``<skeleton>`` with one ``<points>`` per keypoint name (``outside`` where unlabelled)."""
    element = ET.Element("skeleton", {"label": skeleton_label(category), "source": "manual",
                                      "points": "", "z_order": z, "group_id": str(group)})
    for k in range(keypoints.shape[0]):
        name = category.keypoints[k] if k < len(category.keypoints) else f"keypoint{k}"
        x, y, v = (float(value) for value in keypoints[k])
        ET.SubElement(element, "points", {
            "label": name, "source": "manual", "outside": "1" if v <= 0 else "0",
            "occluded": "1" if v == 1 else "0", "points": f"{x!r},{y!r}", "z_order": z})
    return element


def _shape_elements(sample: Sample, categories: Categories, counts: dict[str, int],
                    next_group: list[int], skeletons_used: set[str]) -> list[ET.Element]:
    inst = sample.instances
    masks = inst.masks
    extras = inst.extras
    sources = extras.get("cvat_shapes")
    occluded = extras.get("occluded")
    z_order = extras.get("z_order")
    attributes = extras.get("cvat_attributes")
    counts["crowd"] += int(inst.iscrowd.sum())
    out: list[ET.Element] = []
    for i in range(len(inst)):
        category = categories[int(inst.labels[i])]
        label = category.name
        keypoints = inst.keypoints[i] if inst.keypoints is not None else None
        if masks is not None and sources is not None and \
                _unchanged(sources[i], masks.items[i], category, keypoints, inst.image_size):
            out.extend(ET.fromstring(text) for text in sources[i])
            counts["objects"] += 1
            continue
        common = {"label": label, "source": "manual",
                  "occluded": "1" if occluded is not None and bool(occluded[i]) else "0"}
        z = str(int(z_order[i])) if z_order is not None else "0"
        made: list[ET.Element] = []
        if masks is None:
            x0, y0, x1, y1 = inst.boxes[i].tolist()
            made.append(ET.Element("box", {**common, "xtl": _fmt(x0), "ytl": _fmt(y0),
                                           "xbr": _fmt(x1), "ybr": _fmt(y1), "z_order": z}))
        elif isinstance(masks.items[i], PolygonMask):
            parts = masks.items[i].parts  # type: ignore[union-attr]
            group = {}
            if len(parts) > 1:
                group = {"group_id": str(next_group[0])}
                next_group[0] += 1
            for part in parts:
                points = ";".join(f"{x!r},{y!r}" for x, y in part.reshape(-1, 2).tolist())
                made.append(ET.Element("polygon", {**common, "points": points, "z_order": z,
                                                   **group}))
        else:
            bitmap, (top, left) = masks.crop_local(i)
            if bitmap.size == 0 or not bitmap.any():
                counts["empty_masks_dropped"] += 1
                continue
            rle = ", ".join(str(v) for v in encode_cvat_rle(bitmap))
            made.append(ET.Element("mask", {**common, "rle": rle, "left": str(left),
                                            "top": str(top), "width": str(bitmap.shape[1]),
                                            "height": str(bitmap.shape[0]), "z_order": z}))
        for element in made:
            for name, value in (attributes[i] if attributes is not None and
                                isinstance(attributes[i], dict) else {}).items():
                child = ET.SubElement(element, "attribute", {"name": str(name)})
                child.text = str(value)
        if keypoints is not None and keypoints[:, 2].any():  # CVAT's pose layout: a skeleton
            given = made[0].get("group_id")                   # in the object's group
            shared = int(given) if given is not None else next_group[0]
            if given is None:
                next_group[0] += 1
                for element in made:
                    element.set("group_id", str(shared))
            made.append(_skeleton_element(category, keypoints, shared, z))
            skeletons_used.add(category.name)
        out.extend(made)
        counts["objects"] += 1
    return out


def write_cvat(samples: Iterable[Sample], path: str | os.PathLike[str],
               categories: Categories | None = None, *,
               images_dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Write ``path`` (``annotations.xml``) atomically and the images under ``images_dir``
    (default ``images/`` beside it, which must be new or empty); returns counts."""
    from instkit.io.registry import distinct_names, images_folder_for

    target = Path(path)
    out_images = images_folder_for(target, images_dir)
    categories = categories or getattr(samples, "categories", None)
    counts = {"images": 0, "objects": 0, "crowd": 0, "empty_masks_dropped": 0,
              "other_shapes": 0, "image_ids_renumbered": 0, "category_ids_renumbered": 0}
    skeletons_used: set[str] = set()  # categories whose keypoints were written as skeletons
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "name").text = "instkit export"
    size_el = ET.SubElement(task, "size")
    ET.SubElement(task, "mode").text = "annotation"
    labels_el = ET.SubElement(task, "labels")
    next_group = [1]
    for frame, sample in enumerate(distinct_names(samples)):
        if sample.meta.source and same_file(sample.meta.source, target):
            raise InstkitError(f"refusing to write over the input file {target}",
                               Location(file=str(target)))
        categories = categories or sample.meta.categories
        if categories is None:
            raise InstkitError("write_cvat needs categories", Location(image_id=sample.image_id))
        name = sample.meta.file_name or f"{sample.image_id:012d}.png"
        copy_image(sample, Path(safe_join(out_images, name)))
        h, w = sample.image_size
        image_attrs = {k: v for k, v in sample.meta.extra.get("cvat_image", {}).items()
                       if k not in ("id", "name", "width", "height")}
        subset = image_attrs.get("subset")
        if subset and name.startswith(f"{subset}/"):  # the image is under images/<subset>/
            name = name[len(subset) + 1:]
        attrs = {"id": str(frame), "name": name, **image_attrs}
        attrs.update({"width": str(int(w)), "height": str(int(h))})
        image_el = ET.SubElement(root, "image", attrs)
        counts["image_ids_renumbered"] += int(sample.image_id) != frame
        image_el.extend(_shape_elements(sample, categories, counts, next_group, skeletons_used))
        for text in sample.meta.extra.get("cvat_other", []):
            image_el.append(ET.fromstring(text))
            counts["other_shapes"] += 1
        counts["images"] += 1
    if categories is None:
        raise InstkitError("write_cvat needs categories")
    size_el.text = str(counts["images"])
    def add_label(name: str, kind: str, color: Any = None, parent: str | None = None) -> None:
        label_el = ET.SubElement(labels_el, "label")
        ET.SubElement(label_el, "name").text = name
        if isinstance(color, str):
            ET.SubElement(label_el, "color").text = color
        ET.SubElement(label_el, "type").text = kind
        ET.SubElement(label_el, "attributes")
        if parent is not None:
            ET.SubElement(label_el, "parent").text = parent

    names = set(categories.names)
    for label, category in enumerate(categories):
        skeleton = category.extra.get("cvat_type") == "skeleton"
        add_label(category.name, "skeleton" if skeleton else "any", category.extra.get("color"))
        counts["category_ids_renumbered"] += category.id != label + 1
        if skeleton:
            for point in category.keypoints:
                add_label(point, "points", parent=category.name)
    for category in categories:  # skeleton labels of keypoints that came from another format
        if category.name in skeletons_used and skeleton_label(category) not in names:
            add_label(skeleton_label(category), "skeleton")
            for k in range(categories.num_keypoints):
                point = category.keypoints[k] if k < len(category.keypoints) else f"keypoint{k}"
                add_label(point, "points", parent=skeleton_label(category))
    ET.indent(root, space="  ")
    with atomic_write(target, "wb") as handle:
        handle.write(b'<?xml version="1.0" encoding="utf-8"?>\n')
        handle.write(ET.tostring(root, encoding="utf-8"))
        handle.write(b"\n")
    return counts


__all__ = ["decode_cvat_rle", "encode_cvat_rle", "read_cvat", "shape_region", "write_cvat"]

"""The COCO rulebook: every rule of a COCO document, once, with its code, severity and error.

One walk over the raw JSON (``check_document``) applies every rule and reports each broken one as
a ``Finding`` (stable code, severity, message, location). The same walk serves everyone:

- ``instkit validate`` reports every finding;
- ``read_coco(strict=True)`` runs it with a strict ``Collector``, which raises the rule's leaf
  error class (``RULES[code].error``, with ``error.code``) at the first error-level finding, so a
  document that ``validate`` calls free of errors is exactly one that ``read_coco`` accepts;
- ``read_coco(strict=False)`` drops the images, annotations and categories with errors and
  records each finding by code;
- ``--fix`` repairs by code (``instkit.validate.repair``);
- the Hugging Face reader and the COCO results reader call the same value rules
  (``check_bbox``, ``polygon_parts``, ``instkit.masks.parse_coco_rle``, ``check_int``...).

Bounds come first: sizes, coordinates, counts and nesting are checked against ``Limits`` before
pycocotools, shapely or numpy conversions see a value (docs/validate.md lists the limits and why).
"""

from __future__ import annotations

import math
import posixpath
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import pycocotools.mask as mask_utils

from instkit import errors as E
from instkit.errors import InstkitError, Location, show_value
from instkit.masks import parse_coco_rle, rle_areas

# --- limits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Bounds checked before native code sees a value (pass ``limits=`` to override).

    - ``max_json_depth``: nesting of a free-form value (``info``, ``licenses``, unknown keys and
      fields). Python's JSON parser and every recursive walk fail near 1000 levels.
    - ``max_image_pixels``: ``width * height`` of an image or RLE. pycocotools' polygon
      rasteriser indexes pixels with a C ``int`` (``x * h + y``), so 2**31 - 1 is its ceiling.
    - ``max_coordinate``: ``|x|``, ``|y|`` of polygon vertices, bbox values and keypoints. 2**24
      is float32's exact-integer range (instkit's boxes are float32); pycocotools multiplies
      polygon coordinates by 5 into a C ``int``.
    - ``max_polygon_outline``: the summed L-infinity length, in pixels, of one annotation's
      polygon edges. pycocotools allocates about 80 bytes per pixel of outline (5x upsampled
      boundary points): the default caps one annotation near 340 MB.
    - ``max_keypoints``: keypoints of one instance (COCO-WholeBody has 133).
    """

    max_json_depth: int = 100
    max_image_pixels: int = 2**31 - 1
    max_coordinate: float = float(2**24)
    max_polygon_outline: int = 2**22
    max_keypoints: int = 1024


DEFAULT_LIMITS = Limits()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT64_MAX = sys.float_info.max

# --- the rules ---------------------------------------------------------------------------------

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Rule:
    """One rule: its stable ``code``, ``severity``, a one-line explanation and the error class
    that strict reading raises for it."""

    code: str
    severity: str
    explanation: str
    error: type[InstkitError]


def _table(*rows: tuple[str, str, str, type[InstkitError]]) -> dict[str, Rule]:
    return {code: Rule(code, severity, text, error) for code, severity, text, error in rows}


RULES: dict[str, Rule] = _table(
    ("json-parse", "error", "the file is not valid JSON (line and column given)", E.JSONParseError),
    ("json-nonfinite", "error", "NaN or Infinity: not standard JSON, most tools refuse it", E.NonFiniteError),
    ("json-too-deep", "error", "a free-form value is nested deeper than the limit", E.JSONDepthError),
    ("schema-type", "error", "a field has the wrong type or the document the wrong shape", E.SchemaError),
    ("schema-missing", "error", "a required field is missing", E.SchemaError),
    ("annotations-missing", "info", "the document has no 'annotations' list (read as images without annotations)", E.SchemaError),
    ("number-out-of-range", "error", "an id beyond int64, or a number beyond float64", E.LimitError),
    ("coordinate-out-of-range", "error", "a polygon, bbox or keypoint coordinate beyond +-max_coordinate", E.LimitError),
    ("image-too-large", "error", "width * height beyond max_image_pixels (pycocotools' C int)", E.LimitError),
    ("polygon-too-large", "error", "a polygon outline longer than max_polygon_outline pixels", E.LimitError),
    ("duplicate-image-id", "error", "two images share an id", E.DuplicateIdError),
    ("duplicate-annotation-id", "error", "two annotations share an id", E.DuplicateIdError),
    ("duplicate-category-id", "error", "two categories share an id", E.DuplicateIdError),
    ("duplicate-category-name", "warning", "two categories share a name", E.FormatError),
    ("unknown-image", "error", "an annotation points at an image id that does not exist", E.UnknownReferenceError),
    ("unknown-category", "error", "an annotation points at a category id that does not exist", E.UnknownReferenceError),
    ("file-name-invalid", "error", "a file_name with a NUL byte or a lone surrogate (not a file name)", E.FileNameError),
    ("image-path-escape", "error", "a file_name is absolute or its '..' leave the image folder", E.PathEscapeError),
    ("image-missing", "error", "the image file does not exist", E.ImageError),
    ("image-unreadable", "error", "the image file cannot be decoded", E.ImageError),
    ("image-size-mismatch", "error", "the image (after EXIF orientation) is not width x height", E.ImageError),
    ("polygon-too-few-points", "error", "a polygon part has fewer than 3 points", E.PolygonError),
    ("polygon-odd-coordinates", "error", "a polygon part has an odd number of coordinates", E.PolygonError),
    ("polygon-4-number-trap", "error", "a 4-number part: pycocotools reads it as a box, not a polygon", E.PolygonError),
    ("polygon-nonfinite", "error", "a polygon coordinate is NaN or infinite", E.PolygonError),
    ("polygon-self-intersection", "warning", "a polygon part is not simple (shapely says invalid)", E.PolygonError),
    ("polygon-outside-image", "warning", "polygon vertices lie outside the image", E.PolygonError),
    ("rle-size-mismatch", "error", "an RLE's size is not the image's [height, width]", E.RLEError),
    ("rle-counts-sum", "error", "an RLE's counts do not sum to height*width", E.RLEError),
    ("rle-invalid", "error", "an RLE's counts cannot be decoded (or pycocotools would decode them differently)", E.RLEError),
    ("mask-empty", "error", "the mask covers no pixel", E.EmptyMaskError),
    ("mask-missing", "error", "no segmentation while other annotations have one (masks are for all or none)", E.MissingMaskError),
    ("bbox-invalid", "error", "bbox is not [x, y, w, h] with w, h > 0", E.BoxError),
    ("bbox-mismatch", "warning", "bbox differs from the mask's tight box beyond tolerance", E.BoxError),
    ("area-mismatch", "warning", "area differs from the mask's pixel count beyond tolerance", E.FormatError),
    ("crowd-area-quirk", "info", "crowd area differs from its RLE pixel count (as in COCO's release)", E.FormatError),
    ("iscrowd-invalid", "error", "iscrowd is not the integer 0 or 1", E.CrowdFlagError),
    ("iscrowd-geometry", "warning", "iscrowd disagrees with the geometry (crowd polygon / multi-part)", E.CrowdFlagError),
    ("keypoints-count", "error", "keypoints length differs from 3 x the category's names (or exceeds max_keypoints)", E.KeypointError),
    ("keypoints-visibility", "error", "a keypoint visibility is not 0, 1 or 2", E.KeypointError),
    ("num-keypoints-mismatch", "warning", "num_keypoints differs from the count of labelled keypoints", E.KeypointError),
    ("keypoints-outside-image", "warning", "a labelled keypoint lies outside the image", E.KeypointError),
    ("category-unused", "info", "a category has no annotation", E.FormatError),
    ("image-no-annotations", "info", "an image has no annotation", E.FormatError),
    ("shard-categories-mismatch", "error", "a shard's category table differs from the first shard's", E.FormatError),
    ("shard-manifest-mismatch", "error", "a shard's samples or annotations differ from its manifest entry", E.FormatError),
    ("shard-unreadable", "error", "a shard cannot be read (missing, not a tar, cut short, a sample's members apart)", E.FormatError),
)

# code -> (severity, explanation): the form the report and the docs table use.
CHECKS: dict[str, tuple[str, str]] = {code: (r.severity, r.explanation) for code, r in RULES.items()}

# Tolerances, in pixels: COCO's bbox and area come from the polygon itself, the mask's from its
# rasterisation, so they differ by about half the outline. Real COCO files stay well inside these.
BBOX_TOLERANCE_PX = 4.0
BBOX_TOLERANCE_FRACTION = 0.05
AREA_TOLERANCE_PX = 5.0
AREA_TOLERANCE_FRACTION = 0.15
OUTSIDE_TOLERANCE_PX = 0.5

IMAGE_FIELDS = frozenset({"id", "file_name", "width", "height"})
CATEGORY_FIELDS = frozenset({"id", "name", "keypoints", "skeleton"})
ANNOTATION_FIELDS = frozenset({"id", "image_id", "category_id", "segmentation", "area", "bbox",
                               "iscrowd", "keypoints", "num_keypoints"})
DOCUMENT_LISTS = ("images", "annotations", "categories")


@dataclass(frozen=True)
class Finding:
    """One problem: a stable ``code``, its ``severity``, a one-line message and where it is."""

    code: str
    severity: str
    message: str
    location: Location = field(default_factory=Location)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "location": self.location.as_dict()}


def rule_error(code: str, message: str, location: Location | None = None) -> InstkitError:
    """The leaf error of rule ``code`` (``error.code == code``)."""
    return RULES[code].error(message, location, code=code)


# --- numbers -----------------------------------------------------------------------------------


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    return is_number(value) and abs(value) <= FLOAT64_MAX and math.isfinite(value)


def all_numbers(values: list[Any]) -> bool:
    """Every item an int or float (not bool, str, None or a container); C-speed on JSON lists."""
    kinds = set(map(type, values))
    return kinds <= {int, float} or all(is_number(v) for v in values)


def in_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels (iterative: no recursion)."""
    if not isinstance(value, (list, dict)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (list, dict)):
                stack.append((child, depth + 1))
    return False


def iter_nonfinite(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """``(json_path, value)`` of every NaN/Infinity inside ``value``, in document order."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                yield where or "$", item
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))


Report = Callable[[str, str, str], None]  # (code, message, json path): how rules report


# --- the collector -----------------------------------------------------------------------------


@dataclass
class Context:
    """What the walk learnt about the document; shared by the checks, the reader and the repair."""

    file: str | None
    limits: Limits = DEFAULT_LIMITS
    images: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # id -> (h, w, index)
    categories: dict[int, int] = field(default_factory=dict)  # id -> number of keypoint names
    annotated_images: set[int] = field(default_factory=set)
    used_categories: set[int] = field(default_factory=set)
    # Entries left out (lenient reading): list name -> indices in the file.
    skip: dict[str, set[int]] = field(default_factory=dict)
    image_files: list[tuple[int, str]] = field(default_factory=list)  # (id, usable file_name)
    # With a dict: each checked polygon annotation's parts (float64) and compressed RLE counts,
    # by its index in 'annotations' (the reader packs them instead of converting and
    # rasterising again).
    polygons: dict[int, tuple[list[np.ndarray], bytes]] | None = None
    # The file's bytes hold no 'true'/'false' token, so no value is a JSON boolean.
    no_booleans: bool = False


class Collector:
    """Collects findings; with ``strict=True`` raises the rule's error at the first error."""

    def __init__(self, file: str | None, *, strict: bool = False) -> None:
        self.file = file
        self.strict = strict
        self.findings: list[Finding] = []

    def add(self, code: str, message: str, *, json_path: str | None = None,
            image_id: Any = None, annotation_id: Any = None) -> None:
        rule = RULES[code]
        location = Location(
            file=self.file, json_path=json_path,
            image_id=image_id if is_int(image_id) and in_int64(image_id) else None,
            annotation_id=annotation_id if is_int(annotation_id) and in_int64(annotation_id) else None,
        )
        if self.strict and rule.severity == "error":
            raise rule.error(message, location, code=code)
        self.findings.append(Finding(code, rule.severity, message, location))


def raiser(file: str | None = None, *, image_id: Any = None, annotation_id: Any = None,
           sample_index: int | None = None) -> Report:
    """A ``Report`` that raises the rule's error at once: how the single-value rules are
    applied by readers that stop at the first problem (Hugging Face rows, COCO results)."""

    def report(code: str, message: str, where: str) -> None:
        if RULES[code].severity != "error":
            return
        raise rule_error(code, message, Location(
            file=file, json_path=where or None, sample_index=sample_index,
            image_id=image_id if is_int(image_id) and in_int64(image_id) else None,
            annotation_id=annotation_id if is_int(annotation_id) and in_int64(annotation_id) else None))

    return report


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# --- value rules (also used by the Hugging Face and results readers) ---------------------------

def check_id(value: Any, name: str, report: Report, where: str,
             present: bool = True) -> TypeGuard[int]:
    """An integer id within int64."""
    if not is_int(value):
        report("schema-type" if present else "schema-missing",
               f"{name} must be an integer, got {show_value(value)}", where)
        return False
    if not in_int64(int(value)):
        report("number-out-of-range", f"{name} {show_value(value)} is beyond int64", where)
        return False
    return True


def check_bbox(bbox: Any, report: Report, where: str, limits: Limits = DEFAULT_LIMITS, *,
               allow_empty: bool = False) -> list[float] | None:
    """``[x, y, w, h]``: four finite numbers within ``max_coordinate``, ``w, h > 0`` (``>= 0``
    with ``allow_empty``, as detection results may be). Returns floats, or None when broken."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all_numbers(bbox)):
        report("schema-type", f"'bbox' must be [x, y, width, height] numbers, got {show_value(bbox)}", where)
        return None
    if any(isinstance(v, float) and not math.isfinite(v) for v in bbox):
        return None  # reported as json-nonfinite
    if max(map(abs, bbox)) > limits.max_coordinate:  # exact for ints of any size
        report("coordinate-out-of-range", f"'bbox' {show_value(bbox)} has a value beyond "
               f"+-{limits.max_coordinate:g}", where)
        return None
    if (bbox[2] < 0 or bbox[3] < 0) if allow_empty else (bbox[2] <= 0 or bbox[3] <= 0):
        report("bbox-invalid", f"bbox width and height must be {'>= 0' if allow_empty else '> 0'}, "
               f"got {show_value(bbox)}", where)
        return None
    return [float(v) for v in bbox]


def _nonfinite_or_huge(values: list[Any]) -> str | None:
    """'nonfinite' / 'huge' when a number list has NaN/Infinity or an int beyond float64."""
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            return "nonfinite"
        if abs(v) > FLOAT64_MAX:
            return "huge"
    return None


def _number_part(part: Any, no_booleans: bool) -> np.ndarray | None:
    """A polygon part as float64 when it is a flat list of numbers, else None. With
    ``no_booleans`` (the document has no ``true``/``false`` token) NumPy's own inference
    decides (a flat list it makes ints or floats holds only numbers); otherwise each item's
    type is tested. Raises OverflowError for an integer beyond float64."""
    if type(part) is not list:
        return None
    if no_booleans:
        try:
            inferred = np.asarray(part)
        except (ValueError, TypeError):
            return None
        if inferred.ndim == 1 and inferred.dtype.kind in "fi":
            return inferred.astype(np.float64, copy=False)
        if inferred.dtype.kind != "O":  # strings, nested lists
            return None
    if not all_numbers(part):
        return None
    return np.asarray(part, dtype=np.float64)


def polygon_parts(segmentation: list[Any], path: str, image_id: Any, ann_id: Any,
                  out: Collector | None, limits: Limits = DEFAULT_LIMITS, *,
                  no_booleans: bool = False) -> list[np.ndarray]:
    """The usable parts of a polygon segmentation; problems with the others are reported.

    A part is a flat list of at least 3 (x, y) pairs of finite numbers within
    ``max_coordinate``; the annotation's summed outline must stay within
    ``max_polygon_outline`` (then no part is usable). ``no_booleans``: the document is known
    to hold no JSON ``true``/``false`` (``Context.no_booleans``), which makes the type test
    cheaper."""

    def report(code: str, message: str, where: str) -> None:
        if out is not None:
            out.add(code, message, json_path=where, image_id=image_id, annotation_id=ann_id)

    parts: list[np.ndarray] = []
    outline = bound = 0.0
    for k, part in enumerate(segmentation):
        where = f"{path}.segmentation[{k}]"
        try:
            coords = _number_part(part, no_booleans)
        except OverflowError:  # an integer beyond float64
            report("coordinate-out-of-range", f"a coordinate is beyond float64 (limit "
                   f"+-{limits.max_coordinate:g})", where)
            continue
        if coords is None:
            report("schema-type", "a polygon part must be a flat list of numbers", where)
            continue
        largest = float(np.abs(coords).max()) if coords.size else 0.0
        if not math.isfinite(largest):  # NaN or infinity somewhere (max propagates both)
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
        if largest > limits.max_coordinate:
            report("coordinate-out-of-range", f"a coordinate reaches {largest:g}, beyond "
                   f"+-{limits.max_coordinate:g}", where)
            continue
        # Each edge is at most 2 * largest long: a cheap bound, measured exactly when it is high.
        bound += coords.size * largest
        parts.append(coords)
    if bound > limits.max_polygon_outline:
        outline = sum(float(np.abs(xy - np.roll(xy, 1, axis=0)).max(axis=1).sum())
                      for xy in (p.reshape(-1, 2) for p in parts))
    if outline > limits.max_polygon_outline:
        report("polygon-too-large", f"the polygon outline is {outline:.0f} px long, beyond the "
               f"limit {limits.max_polygon_outline} px", f"{path}.segmentation")
        return []
    return parts


def rle_geometry(segmentation: dict[str, Any], size: tuple[int, int] | None, path: str,
                 image_id: Any, ann_id: Any, out: Collector | None,
                 limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], int] | None:
    """``({"size", "counts": bytes}, area)`` of a usable RLE; ``None`` when broken (reported)."""
    try:
        counts, _, area = parse_coco_rle(segmentation, size, max_pixels=limits.max_image_pixels)
    except InstkitError as exc:
        if out is not None and exc.code is not None:
            suffix = exc.location.json_path
            out.add(exc.code, exc.message,
                    json_path=f"{path}.segmentation" + (f".{suffix}" if suffix else ""),
                    image_id=image_id, annotation_id=ann_id)
        return None
    h, w = segmentation["size"]
    return {"size": [int(h), int(w)], "counts": counts}, area


def check_keypoints(raw: Any, where: str, size: tuple[int, int] | None, names: int | None,
                    report: Report, limits: Limits = DEFAULT_LIMITS,
                    num_keypoints: Any = None, num_where: str | None = None) -> np.ndarray | None:
    """Flat ``[x, y, v, ...]``: numbers, ``3 * names`` of them when the category names its
    keypoints (a multiple of 3 otherwise, at most ``max_keypoints``), finite, coordinates within
    ``max_coordinate``, visibility 0, 1 or 2. Returns ``(K, 3)`` float64 or None when broken.
    ``num_keypoints`` and labelled points outside the ``size`` image are warnings."""
    if not isinstance(raw, list) or not all_numbers(raw):
        report("schema-type", "'keypoints' must be a flat list of numbers [x, y, v, ...]", where)
        return None
    if names and len(raw) != 3 * names:
        report("keypoints-count", f"'keypoints' has {len(raw)} numbers; the category names "
               f"{names} keypoints = {3 * names} numbers", where)
        return None
    if len(raw) % 3:
        report("keypoints-count", f"'keypoints' has {len(raw)} numbers, not a multiple of 3", where)
        return None
    if len(raw) // 3 > limits.max_keypoints:
        report("keypoints-count", f"'keypoints' has {len(raw) // 3} points, more than the limit "
               f"{limits.max_keypoints}", where)
        return None
    bad = _nonfinite_or_huge(raw)
    if bad == "nonfinite":
        return None  # reported as json-nonfinite
    if bad == "huge":
        report("number-out-of-range", "'keypoints' has a number beyond float64", where)
        return None
    values = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
    if values.size and np.abs(values[:, :2]).max() > limits.max_coordinate:
        report("coordinate-out-of-range", f"a keypoint coordinate is beyond "
               f"+-{limits.max_coordinate:g}", where)
        return None
    wrong = ~np.isin(values[:, 2], (0, 1, 2))
    if wrong.any():
        report("keypoints-visibility", f"visibility must be 0, 1 or 2; keypoint(s) "
               f"{np.flatnonzero(wrong).tolist()[:10]} have {values[wrong, 2].tolist()[:10]}", where)
        return None
    labelled = values[:, 2] > 0
    if num_keypoints is not None and num_keypoints != int(labelled.sum()):
        report("num-keypoints-mismatch", f"num_keypoints is {show_value(num_keypoints)} but "
               f"{int(labelled.sum())} keypoints are labelled", num_where or where)
    if size is not None and labelled.any():
        h, w = size
        xs, ys = values[labelled, 0], values[labelled, 1]
        outside = (xs < 0) | (ys < 0) | (xs > w) | (ys > h)
        if outside.any():
            which = np.flatnonzero(labelled)[outside].tolist()[:10]
            report("keypoints-outside-image", f"labelled keypoint(s) {which} lie outside the "
                   f"{w}x{h} image", where)
    return values


def check_file_name(name: str, report: Report, where: str) -> bool:
    """A relative name that stays inside the image folder and can name a file."""
    if "\x00" in name:
        report("file-name-invalid", f"file_name {show_value(name)} has a NUL byte", where)
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        report("file-name-invalid", f"file_name {show_value(name)} has a lone surrogate "
               "(not encodable as UTF-8)", where)
        return False
    normal = posixpath.normpath(name.replace("\\", "/"))
    if posixpath.isabs(normal) or re.match(r"^[A-Za-z]:", normal) or normal == ".." \
            or normal.startswith("../"):
        report("image-path-escape", f"file_name {show_value(name)} is absolute or leaves the "
               "image folder", where)
        return False
    return True


# --- the document ------------------------------------------------------------------------------


def _top_level_list(document: dict[str, Any], key: str, out: Collector) -> list[Any] | None:
    """``document[key]`` when it is a list; otherwise report it missing or mistyped."""
    entries = document.get(key)
    if entries is None:
        if key == "annotations" and key not in document:
            out.add("annotations-missing", "the document has no 'annotations' list",
                    json_path=key)
            return None
        out.add("schema-missing", f"the document has no '{key}' list", json_path=key)
        return None
    if not isinstance(entries, list):
        out.add("schema-type", f"'{key}' must be a list, got {_type_name(entries)}", json_path=key)
        return None
    return entries


def _free_form(entry: dict[str, Any], known: frozenset[str], path: str, ctx: Context,
               report: Report) -> None:
    limit = ctx.limits.max_json_depth
    for key, value in entry.items():
        if key not in known and isinstance(value, (list, dict)) and too_deep(value, limit):
            report("json-too-deep", f"field {show_value(key)} nests deeper than {limit} levels",
                   f"{path}.{key}")


def check_categories(document: dict[str, Any], ctx: Context, out: Collector) -> None:
    entries = _top_level_list(document, "categories", out)
    if entries is None:
        return
    skip = ctx.skip.get("categories", set())
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if index in skip:
            continue
        path = f"categories[{index}]"

        def report(code: str, message: str, where: str) -> None:
            out.add(code, message, json_path=where)

        if not isinstance(entry, dict):
            report("schema-type", f"a category must be an object, got {_type_name(entry)}", path)
            continue
        cat_id = entry.get("id")
        if not check_id(cat_id, "category 'id'", report, f"{path}.id", "id" in entry):
            continue
        if cat_id in ctx.categories:
            report("duplicate-category-id", f"category id {cat_id} is used again", f"{path}.id")
            continue
        keypoints = entry.get("keypoints") or []
        if not isinstance(keypoints, list) or not all(isinstance(k, str) for k in keypoints):
            report("schema-type", "category 'keypoints' must be a list of names", f"{path}.keypoints")
            keypoints = []
        elif len(keypoints) > ctx.limits.max_keypoints:
            report("keypoints-count", f"category names {len(keypoints)} keypoints, more than "
                   f"the limit {ctx.limits.max_keypoints}", f"{path}.keypoints")
            keypoints = []
        skeleton = entry.get("skeleton") or []
        if not (isinstance(skeleton, list) and all(
                isinstance(e, list) and len(e) == 2 and all(is_int(v) and in_int64(v) for v in e)
                for e in skeleton)):
            report("schema-type", "category 'skeleton' must be a list of [a, b] integer pairs",
                   f"{path}.skeleton")
        _free_form(entry, CATEGORY_FIELDS, path, ctx, report)
        ctx.categories[cat_id] = len(keypoints)
        name = entry.get("name")
        if not isinstance(name, str):
            report("schema-type" if "name" in entry else "schema-missing",
                   f"category 'name' must be a string, got {show_value(name)}", f"{path}.name")
            continue
        if name in names:
            report("duplicate-category-name",
                   f"category name {show_value(name)} is used by ids {names[name]} and {cat_id}",
                   f"{path}.name")
        else:
            names[name] = cat_id


def check_images(document: dict[str, Any], ctx: Context, out: Collector) -> list[tuple[int, str]]:
    """Image entries; returns ``(image_id, file_name)`` of those whose files can be checked."""
    entries = _top_level_list(document, "images", out)
    if entries is None:
        return []
    skip = ctx.skip.get("images", set())
    limits = ctx.limits
    files: list[tuple[int, str]] = []
    first_index: dict[int, int] = {}
    for index, entry in enumerate(entries):
        if index in skip:
            continue
        path = f"images[{index}]"
        if not isinstance(entry, dict):
            out.add("schema-type", f"an image must be an object, got {_type_name(entry)}", json_path=path)
            continue
        image_id = entry.get("id")

        def report(code: str, message: str, where: str, _id: Any = image_id) -> None:
            out.add(code, message, json_path=where, image_id=_id)

        if not check_id(image_id, "image 'id'", report, f"{path}.id", "id" in entry):
            continue
        if image_id in first_index:
            report("duplicate-image-id", f"image id {image_id} is used again (first at "
                   f"images[{first_index[image_id]}])", f"{path}.id")
            continue
        first_index[image_id] = index
        width, height = entry.get("width"), entry.get("height")
        ok = True
        for key, value in (("width", width), ("height", height)):
            if not (is_int(value) and value > 0):
                report("schema-missing" if key not in entry else "schema-type",
                       f"image '{key}' must be a positive integer, got {show_value(value)}",
                       f"{path}.{key}")
                ok = False
        if ok and is_int(width) and is_int(height) and width * height > limits.max_image_pixels:
            report("image-too-large", f"image is {width}x{height} = {width * height} pixels, "
                   f"beyond the limit {limits.max_image_pixels}", path)
            ok = False
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            report("schema-missing" if "file_name" not in entry else "schema-type",
                   f"image 'file_name' must be a non-empty string, got {show_value(name)}",
                   f"{path}.file_name")
        elif check_file_name(name, report, f"{path}.file_name"):
            files.append((image_id, name))
        _free_form(entry, IMAGE_FIELDS, path, ctx, report)
        if ok and is_int(width) and is_int(height):  # ok implies both; restated to narrow types
            ctx.images[image_id] = (int(height), int(width), index)
    return files


@dataclass
class Geometry:
    """A checked annotation geometry: its kind, polygon parts, and (once known) RLE and area."""

    kind: str  # "polygon" | "rle"
    rle: dict[str, Any] | None = None
    parts: list[np.ndarray] = field(default_factory=list)
    area: int | None = None


def check_annotations(document: dict[str, Any], ctx: Context, out: Collector, *,
                      warnings: bool = True, progress: bool = False) -> None:
    entries = _top_level_list(document, "annotations", out)
    if entries is None:
        return
    skip = ctx.skip.get("annotations", set())
    seen: dict[int, int] = {}
    with_masks = any(isinstance(a, dict) and a.get("segmentation") is not None
                     for i, a in enumerate(entries) if i not in skip)
    # Per image: (json index, annotation, geometry) of annotations to rasterise.
    pending: dict[int, list[tuple[int, dict[str, Any], Geometry]]] = {}
    iterator: Any = range(len(entries))
    if progress and len(entries) > 20000:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="annotations", unit="ann", leave=False)
    for index in iterator:
        if index in skip:
            continue
        ann = entries[index]
        path = f"annotations[{index}]"
        if not isinstance(ann, dict):
            out.add("schema-type", f"an annotation must be an object, got {_type_name(ann)}", json_path=path)
            continue
        geometry = check_annotation(ann, index, ctx, out, seen, with_masks=with_masks)
        if geometry is not None:
            pending.setdefault(ann["image_id"], []).append((index, ann, geometry))
    rasterise_and_compare(pending, ctx, out, warnings=warnings)


def check_annotation(ann: dict[str, Any], index: int, ctx: Context, out: Collector | None,
                     seen: dict[int, int], *, with_masks: bool = False) -> Geometry | None:
    """Checks that need one annotation; returns its geometry when it can be rasterised."""
    path = f"annotations[{index}]"
    ann_id, image_id, cat_id = ann.get("id"), ann.get("image_id"), ann.get("category_id")
    limits = ctx.limits

    def report(code: str, message: str, where: str) -> None:
        if out is not None:
            out.add(code, message, json_path=where, image_id=image_id, annotation_id=ann_id)

    size: tuple[int, int] | None = None
    keypoint_names: int | None = None
    crowd = ann.get("iscrowd", 0)
    # The common well-formed header in a few type tests (ids found in 'images' and
    # 'categories' were checked there); anything else goes rule by rule, which reports it.
    if type(ann_id) is int and INT64_MIN <= ann_id <= INT64_MAX and ann_id not in seen \
            and type(image_id) is int and image_id in ctx.images \
            and type(cat_id) is int and cat_id in ctx.categories \
            and type(crowd) is int and (crowd == 0 or crowd == 1):
        seen[ann_id] = index
        size = ctx.images[image_id][:2]
        ctx.annotated_images.add(image_id)
        keypoint_names = ctx.categories[cat_id]
        ctx.used_categories.add(cat_id)
    else:
        if check_id(ann_id, "annotation 'id'", report, f"{path}.id", "id" in ann):
            if ann_id in seen:
                report("duplicate-annotation-id", f"annotation id {ann_id} is used again (first at "
                       f"annotations[{seen[ann_id]}])", f"{path}.id")
            else:
                seen[ann_id] = index
        if check_id(image_id, "'image_id'", report, f"{path}.image_id", "image_id" in ann):
            if image_id not in ctx.images:
                report("unknown-image", f"image_id {image_id} is not in 'images'", f"{path}.image_id")
            else:
                size = ctx.images[image_id][:2]
                ctx.annotated_images.add(image_id)
        if check_id(cat_id, "'category_id'", report, f"{path}.category_id", "category_id" in ann):
            if cat_id not in ctx.categories:
                report("unknown-category", f"category_id {cat_id} is not in 'categories'",
                       f"{path}.category_id")
            else:
                keypoint_names = ctx.categories[cat_id]
                ctx.used_categories.add(cat_id)
        if not (is_int(crowd) and crowd in (0, 1)):
            report("iscrowd-invalid", f"iscrowd must be the integer 0 or 1, got {show_value(crowd)}",
                   f"{path}.iscrowd")
    bbox = ann.get("bbox")
    if bbox is not None:
        check_bbox(bbox, report, f"{path}.bbox", limits)
    area = ann.get("area")
    if area is not None:
        if not is_number(area):
            report("schema-type", f"'area' must be a number, got {show_value(area)}", f"{path}.area")
        elif not isinstance(area, float) and abs(area) > FLOAT64_MAX:
            report("number-out-of-range", "'area' is beyond float64", f"{path}.area")
    raw_kp = ann.get("keypoints")
    if raw_kp is not None:
        check_keypoints(raw_kp, f"{path}.keypoints", size, keypoint_names, report, limits,
                        ann.get("num_keypoints"), f"{path}.num_keypoints")
    if not ann.keys() <= ANNOTATION_FIELDS:
        _free_form(ann, ANNOTATION_FIELDS, path, ctx, report)
    segmentation = ann.get("segmentation")
    if segmentation is None:
        if with_masks:
            report("mask-missing", "annotation has no segmentation while others in the file do",
                   f"{path}.segmentation")
        elif bbox is None:
            report("schema-missing", "annotation has neither 'segmentation' nor 'bbox'", path)
        return None
    if isinstance(segmentation, list):
        if crowd == 1:
            report("iscrowd-geometry", "a crowd annotation (iscrowd=1) given as polygons; COCO "
                   "crowd regions are RLE", f"{path}.iscrowd")
        if not segmentation:
            report("mask-empty", "segmentation is an empty list", f"{path}.segmentation")
            return None
        parts = polygon_parts(segmentation, path, image_id, ann_id, out, limits,
                              no_booleans=ctx.no_booleans)
        if size is None:
            return None
        if not parts:
            if all(isinstance(p, list) and not p for p in segmentation):
                report("mask-empty", "every polygon part is empty", f"{path}.segmentation")
            return None
        if len(parts) < len(segmentation):
            return None  # the bad parts are reported; comparing the rest would mislead
        return Geometry("polygon", parts=parts)
    if isinstance(segmentation, dict):
        checked = rle_geometry(segmentation, size, path, image_id, ann_id, out, limits)
        if checked is None or size is None:
            return None
        return Geometry("rle", rle=checked[0], area=checked[1])
    report("schema-type", f"'segmentation' must be a polygon list or an RLE object, got "
           f"{_type_name(segmentation)}", f"{path}.segmentation")
    return None


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
    *, warnings: bool = True,
) -> None:
    """Rasterise the checked geometries (pycocotools, batched per image): ``mask-empty`` always;
    with ``warnings``, also polygon validity and the bbox / area comparisons."""
    all_parts: list[np.ndarray] = []
    owners: list[tuple[int, dict[str, Any], int]] = []
    for image_id, rows in pending.items():
        h, w = ctx.images[image_id][:2]
        image_parts: list[np.ndarray] = []
        for index, ann, geometry in rows:
            if geometry.kind == "polygon":
                image_parts.extend(geometry.parts)
                if warnings:
                    all_parts.extend(geometry.parts)
                    owners.extend((index, ann, k) for k in range(len(geometry.parts)))
        part_rles = mask_utils.frPyObjects(image_parts, h, w) if image_parts else []
        part_areas = rle_areas(part_rles) if part_rles and not warnings else None
        start = 0
        keep = ctx.polygons
        for index, _ann, geometry in rows:
            if geometry.kind != "polygon":
                continue
            stop = start + len(geometry.parts)
            if warnings or keep is not None:
                group = part_rles[start:stop]
                geometry.rle = group[0] if len(group) == 1 else mask_utils.merge(group)
            if keep is not None:
                keep[index] = (geometry.parts, bytes(geometry.rle["counts"]))  # type: ignore[index]
            if not warnings:
                assert part_areas is not None
                geometry.area = int(part_areas[start:stop].max())  # > 0 iff the union is not empty
            start = stop
        if warnings:
            polygons = [g for _, _, g in rows if g.kind == "polygon"]
            areas = rle_areas([g.rle for g in polygons])  # type: ignore[misc]
            for geometry, area in zip(polygons, areas, strict=True):
                geometry.area = int(area)
            boxes = mask_utils.toBbox([g.rle for _, _, g in rows])
        for k, (index, ann, geometry) in enumerate(rows):
            if not geometry.area:
                out.add("mask-empty", "the mask covers no pixel (degenerate or outside the image)",
                        json_path=f"annotations[{index}].segmentation",
                        image_id=ann.get("image_id"), annotation_id=ann.get("id"))
                continue
            if warnings:
                compare_geometry(ann, index, geometry, int(geometry.area), boxes[k], (h, w), out)
    if not warnings:
        return
    valid = polygon_validity(all_parts)
    for j, ((index, ann, k), ok) in enumerate(zip(owners, valid, strict=True)):
        if not ok:
            out.add("polygon-self-intersection", validity_reason(all_parts[j]),
                    json_path=f"annotations[{index}].segmentation[{k}]",
                    image_id=ann.get("image_id"), annotation_id=ann.get("id"))


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
    file_area = ann.get("area")
    if is_finite_number(file_area):
        diff = abs(float(file_area) - area)
        if diff > max(AREA_TOLERANCE_PX, AREA_TOLERANCE_FRACTION * area):
            if ann.get("iscrowd") == 1 and geometry.kind == "rle":
                report("crowd-area-quirk", f"area {float(file_area):g} vs {area} mask pixels", f"{path}.area")
            else:
                report("area-mismatch", f"area {float(file_area):g} vs {area} mask pixels", f"{path}.area")
    bbox = ann.get("bbox")
    if bbox_agrees(bbox, box) is False and isinstance(bbox, list):
        report("bbox-mismatch", f"bbox {[round(float(v), 2) for v in bbox]} vs the mask's "
               f"tight box {[round(float(v), 2) for v in box]}", f"{path}.bbox")


def bbox_agrees(bbox: Any, box: Any) -> bool | None:
    """Whether a file's usable ``xywh`` bbox matches a mask's ``xywh`` box within tolerance
    (None when the bbox is not usable)."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)
            and bbox[2] > 0 and bbox[3] > 0):
        return None
    mine = np.asarray([box[0], box[1], box[0] + box[2], box[1] + box[3]], dtype=np.float64)
    theirs = np.asarray([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]], dtype=np.float64)
    tolerance = BBOX_TOLERANCE_PX + BBOX_TOLERANCE_FRACTION * max(float(box[2]), float(box[3]))
    return bool(np.abs(mine - theirs).max() <= tolerance)


# --- non-finite values and the whole document --------------------------------------------------

_NONFINITE_TOKEN = re.compile(rb"(?<![\"\w])(-?Infinity|NaN)(?![\"\w])")


def find_nonfinite(document: Any, out: Collector, raw: bytes | None = None) -> None:
    """Report every NaN/Infinity with its JSON path (and line/column when ``raw`` is given)."""
    if raw is not None and b"NaN" not in raw and b"Infinity" not in raw:
        return  # (a plain substring test first: the token regex is slow on big files)
    if raw is not None and not _NONFINITE_TOKEN.search(raw):
        return
    found = list(iter_nonfinite(document))
    if not found:
        return
    positions: list[tuple[int, int]] = []
    if raw is not None:
        tokens = list(_NONFINITE_TOKEN.finditer(raw))
        if len(tokens) == len(found):  # else a string holds the word: give paths only
            for match in tokens:
                line = raw.count(b"\n", 0, match.start()) + 1
                positions.append((line, match.start() - (raw.rfind(b"\n", 0, match.start()) + 1) + 1))
    for k, (path, value) in enumerate(found):
        token = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
        where = f" at line {positions[k][0]}, column {positions[k][1]}" if positions else ""
        out.add("json-nonfinite", f"{token}{where} is not a JSON number (JSON has no NaN or "
                "Infinity)", json_path=path)


def check_document(document: Any, *, file: str | None = None, raw: bytes | None = None,
                   strict: bool = False, warnings: bool = True, limits: Limits | None = None,
                   skip: dict[str, set[int]] | None = None, progress: bool = False,
                   keep_polygons: bool = False) -> tuple[list[Finding], Context]:
    """Every rule that needs no image file. ``strict`` raises the first error; ``warnings=False``
    skips the checks that can only give warnings or info (shapely validity, bbox/area
    comparisons, unused categories). ``raw`` (the file's bytes) locates NaN/Infinity.
    ``keep_polygons``: the context's ``polygons`` collects the checked, rasterised polygons."""
    out = Collector(file, strict=strict)
    ctx = Context(file, limits or DEFAULT_LIMITS, skip=skip or {},
                  polygons={} if keep_polygons else None)
    find_nonfinite(document, out, raw)
    ctx.no_booleans = raw is not None and b"true" not in raw and b"false" not in raw
    if not isinstance(document, dict):
        out.add("schema-type", f"a COCO file must hold a JSON object, got {_type_name(document)}",
                json_path="$")
        return out.findings, ctx
    for key, value in document.items():
        if key not in DOCUMENT_LISTS and isinstance(value, (list, dict)) \
                and too_deep(value, ctx.limits.max_json_depth):
            out.add("json-too-deep", f"{show_value(key)} nests deeper than "
                    f"{ctx.limits.max_json_depth} levels", json_path=str(key))
    check_categories(document, ctx, out)
    ctx.image_files = check_images(document, ctx, out)
    check_annotations(document, ctx, out, warnings=warnings, progress=progress)
    if warnings:
        categories = document.get("categories")
        skipped = ctx.skip.get("categories", set())
        for index, entry in enumerate(categories if isinstance(categories, list) else []):
            if index not in skipped and isinstance(entry, dict) and is_int(entry.get("id")) \
                    and entry["id"] not in ctx.used_categories:
                out.add("category-unused", f"category {entry['id']} ({show_value(entry.get('name'))}) "
                        "has no annotation", json_path=f"categories[{index}]")
        for image_id, (_, _, index) in ctx.images.items():
            if image_id not in ctx.annotated_images:
                out.add("image-no-annotations", f"image {image_id} has no annotation",
                        json_path=f"images[{index}]", image_id=image_id)
    return out.findings, ctx


def load_document(path: str) -> Any:
    """Parse a JSON file with NaN/Infinity kept as floats (the walk reports them); JSON nested
    too deeply for Python's parser is ``json-too-deep``."""
    from instkit.io.files import load_json

    try:
        return load_json(path, allow_nonfinite=True)
    except RecursionError:
        raise rule_error("json-too-deep", "JSON nested too deeply to parse (Python's parser "
                         "stops near 1000 levels)", Location(file=path)) from None


__all__ = ["CHECKS", "DEFAULT_LIMITS", "RULES", "SEVERITIES", "Collector", "Context", "Finding",
           "Geometry", "Limits", "Rule", "check_bbox", "check_document", "check_file_name",
           "check_id", "check_keypoints", "is_finite_number", "is_int", "is_number",
           "load_document", "polygon_parts", "raiser", "rle_geometry", "rule_error", "too_deep"]

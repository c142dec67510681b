"""COCO instance annotations: ``read_coco`` and ``write_coco``.

What is read: ``images`` (id, file_name, width, height, other fields kept), ``categories``
(gapped ids mapped to contiguous labels by ascending id, keypoint names and skeleton kept),
``annotations`` with polygon or RLE (compressed or uncompressed) ``segmentation``, ``bbox``
(COCO ``xywh``), ``area``, ``iscrowd``, ``keypoints`` / ``num_keypoints``, 64-bit ids and any other
fields. Everything is checked once at read time and packed into a few flat numpy arrays, so a
dataset shared with DataLoader workers is not copied into each of them; samples are built on
access and images are loaded lazily.

Extras carried by each sample's ``Instances``: ``coco_bbox`` (the file's ``xywh`` box, float64),
``coco_area`` (the file's area) and, where present, ``coco_fields`` (other annotation fields).
The writer uses the first two only while the instance's box still matches them, so geometry
changed by a transform is always written from the instance itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import FormatError, InstkitError, Location
from instkit.instances import Instances
from instkit.io.files import atomic_write, collector_paused, safe_join, same_file
from instkit.io.images import copy_image
from instkit.masks import (
    MaskItem,
    Masks,
    PolygonMask,
    RLEMask,
    decode_rle_counts,
    parse_coco_rle,
)
from instkit.sample import Drop, Sample, SampleMeta
from instkit.validate import rules

log = logging.getLogger(__name__)

_SEG_NONE, _SEG_POLYGON, _SEG_RLE, _SEG_RLE_UNCOMPRESSED = 0, 1, 2, 3
_DOCUMENT_KEYS = {"info", "licenses", "images", "annotations", "categories"}
_ENTRY = re.compile(r"^(images|annotations|categories)\[(\d+)\]")


@dataclass(frozen=True)
class CocoProblem:
    """A problem found while reading leniently: what was skipped, and why."""

    message: str
    location: Location
    code: str = ""  # the rule's check code (docs/validate.md)

    def __str__(self) -> str:
        where = self.location.describe()
        return f"{self.message} ({where})" if where else self.message


# Bound on the rasterised polygons a strict read keeps for evaluation (compressed RLE is
# about 2/3 of the polygons' own size): past it, evaluation rasterises them again.
POLYGON_RLE_CACHE_BYTES = 64 * 2**20


class _StringTable:
    """Strings packed into one byte buffer with offsets (no per-string Python objects)."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __getitem__(self, index: int) -> str:
        return self._buffer[self._offsets[index] : self._offsets[index + 1]].tobytes().decode()

    def raw(self, index: int) -> bytes:
        return self._buffer[self._offsets[index] : self._offsets[index + 1]].tobytes()


class CocoDataset(Sequence[Sample]):
    """An indexable collection of ``Sample``s read from a COCO file (see ``read_coco``)."""

    def __init__(
        self,
        document: Any,
        *,
        file: str | None = None,
        image_root: str | None = None,
        strict: bool = True,
        limits: rules.Limits | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.file = file
        self.image_root = image_root
        self._resolved_root: str | os.PathLike[str] | None = None
        self._resolved: dict[int, str] = {}  # image_path's, for _resolved_root
        self.strict = strict
        self.problems: list[CocoProblem] = []
        self._drops_by_image: dict[int, list[Drop]] = {}
        # Every rule lives in the rulebook: the strict walk raises the first error-level rule;
        # the lenient one leaves out what breaks one. What remains is packed without checks.
        skip: dict[str, set[int]] = {"images": set(), "annotations": set(), "categories": set()}
        dropped_keys: set[str] = set()
        polygons: dict[int, tuple[list[np.ndarray], bytes]] | None = None
        if strict:
            _, context = rules.check_document(document, file=file, raw=raw, strict=True,
                                              warnings=False, limits=limits, keep_polygons=True)
            polygons = context.polygons
        else:
            dropped_keys = self._leave_out(document, skip, limits, raw)
        self.info = document.get("info") if "info" not in dropped_keys else None
        self.licenses = document.get("licenses") if "licenses" not in dropped_keys else None
        # Top-level keys instkit does not read (scene_annotations, ...): written back as they are.
        self.extra_fields = {key: value for key, value in document.items()
                             if key not in _DOCUMENT_KEYS and key not in dropped_keys}
        categories = document.get("categories")
        self.categories = Categories.from_coco(
            [c for i, c in enumerate(categories) if i not in skip["categories"]]
            if isinstance(categories, list) else [], file=file)
        self._pack_images(document["images"], skip["images"])
        self._pack_annotations(document.get("annotations") or [], skip["annotations"],
                               polygons)
        if self.problems:
            log.warning(
                "%s: skipped %d problem(s) while reading leniently; see dataset.problems",
                file or "COCO document", len(self.problems),
            )

    # reading ---------------------------------------------------------------------------------

    def _leave_out(self, document: Any, skip: dict[str, set[int]], limits: rules.Limits | None,
                   raw: bytes | None) -> set[str]:
        """Lenient reading: leave out every image, annotation and category that breaks an
        error-level rule (then what pointed at them), recording each finding by code."""
        dropped_keys: set[str] = set()
        first: dict[int, rules.Finding] = {}
        for _ in range(16):
            findings, _ = rules.check_document(document, file=self.file, raw=raw, warnings=False,
                                               limits=limits, skip=skip)
            errors = [f for f in findings if f.severity == "error"
                      and not self._under(f.location.json_path or "$", skip, dropped_keys)]
            if not errors:
                break
            for finding in errors:
                path = finding.location.json_path or "$"
                match = _ENTRY.match(path)
                if match is None:
                    key = path.split(".")[0].split("[")[0]
                    if key in ("$", "images", "annotations", "categories"):
                        raise rules.rule_error(finding.code, finding.message, finding.location)
                    dropped_keys.add(key)
                else:
                    kind, index = match.group(1), int(match.group(2))
                    skip[kind].add(index)
                    if kind == "annotations":
                        first.setdefault(index, finding)
                self.problems.append(CocoProblem(finding.message, finding.location, finding.code))
        else:  # pragma: no cover - each round leaves something out, so this cannot loop forever
            raise FormatError("lenient reading did not settle", Location(file=self.file))
        images = document.get("images") if isinstance(document.get("images"), list) else []
        position = {e["id"]: n for n, e in enumerate(
            e for i, e in enumerate(images) if i not in skip["images"])}
        annotations = document.get("annotations") or []
        for index, finding in first.items():
            ann = annotations[index]
            if isinstance(ann, dict) and rules.is_int(ann.get("image_id")) \
                    and ann["image_id"] in position \
                    and rules.is_int(ann.get("id")) and rules.in_int64(ann["id"]):
                self._drops_by_image.setdefault(position[ann["image_id"]], []).append(
                    Drop(int(ann["id"]), finding.code, stage="read_coco", detail=finding.message))
        return dropped_keys

    @staticmethod
    def _under(path: str, skip: dict[str, set[int]], dropped_keys: set[str]) -> bool:
        match = _ENTRY.match(path)
        if match is not None:
            return int(match.group(2)) in skip[match.group(1)]
        return path.split(".")[0].split("[")[0] in dropped_keys

    def _pack_images(self, images: list[Any], skip: set[int]) -> None:
        ids: list[int] = []
        sizes: list[tuple[int, int]] = []
        names: list[str] = []
        extras: list[str] = []
        self._image_index: dict[int, int] = {}
        for k, entry in enumerate(images):
            if k in skip:
                continue
            self._image_index[entry["id"]] = len(ids)
            ids.append(entry["id"])
            sizes.append((entry["height"], entry["width"]))
            names.append(entry["file_name"])
            extra = {key: value for key, value in entry.items() if key not in rules.IMAGE_FIELDS}
            extras.append(json.dumps(extra) if extra else "")
        self._image_ids = np.asarray(ids, dtype=np.int64)
        self._image_sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self._file_names = _StringTable(names)
        self._image_extras = _StringTable(extras)

    def _pack_annotations(self, annotations: list[Any], skip: set[int],
                          polygons: dict[int, tuple[list[np.ndarray], bytes]] | None = None
                          ) -> None:
        """``polygons``: the strict check's parts and rasterised RLE of each polygon annotation
        (by index in ``annotations``): packed as they are; the RLEs are kept (up to a bound)
        for ``evaluation_columns``."""
        kept = [(k, ann) for k, ann in enumerate(annotations) if k not in skip]
        polygons = polygons or {}
        self._polygon_rles: _StringTable | None = None
        if polygons and sum(len(rle) for _, rle in polygons.values()) <= POLYGON_RLE_CACHE_BYTES:
            self._polygon_rles = _StringTable([polygons[k][1].decode("ascii") if k in polygons
                                               else "" for k, _ in kept])
        num_keypoints = max([self.categories.num_keypoints] + [
            len(ann["keypoints"]) // 3 for _, ann in kept if isinstance(ann.get("keypoints"), list)])
        self._num_keypoints = num_keypoints
        records: list[tuple[Any, ...]] = []
        ids: list[int] = []
        coords: list[np.ndarray] = []
        rles: list[bytes] = []
        fields: list[str] = []
        keypoints = np.zeros((len(kept), num_keypoints, 3), dtype=np.float32)
        any_segmentation = False
        part_count = 0
        nan_box = (math.nan,) * 4
        for row, (k, ann) in enumerate(kept):
            image_index = self._image_index[ann["image_id"]]
            label = self.categories.label_of(ann["category_id"])
            bbox = ann.get("bbox")
            box = tuple(float(v) for v in bbox) if bbox is not None else nan_box
            area = float(ann["area"]) if ann.get("area") is not None else math.nan
            segmentation = ann.get("segmentation")
            seg_kind, parts, rle_index = _SEG_NONE, 0, -1
            if isinstance(segmentation, list):
                seg_kind = _SEG_POLYGON
                checked = polygons.get(k)
                if checked is not None:
                    coords.extend(checked[0])
                else:
                    coords.extend(np.asarray(part, dtype=np.float64) for part in segmentation)
                parts = len(segmentation)
            elif isinstance(segmentation, dict):
                height, width = (int(v) for v in self._image_sizes[image_index])
                counts, uncompressed, _ = parse_coco_rle(segmentation, (height, width))
                seg_kind = _SEG_RLE_UNCOMPRESSED if uncompressed else _SEG_RLE
                rle_index = len(rles)
                rles.append(counts)
            any_segmentation |= seg_kind != _SEG_NONE
            raw_kp = ann.get("keypoints")
            if isinstance(raw_kp, list) and raw_kp:
                keypoints[row, : len(raw_kp) // 3] = np.asarray(raw_kp, dtype=np.float64).reshape(-1, 3)
            extra = {key: value for key, value in ann.items() if key not in rules.ANNOTATION_FIELDS}
            field_index = -1
            if extra:
                field_index = len(fields)
                fields.append(json.dumps(extra))
            ids.append(ann["id"])
            records.append((image_index, label, int(ann.get("iscrowd", 0)), *box, area, seg_kind,
                            part_count, part_count + parts, rle_index, field_index, k))
            part_count += parts
        # With no annotations at all there is nothing to say masks are absent: keep the column.
        self._has_masks = any_segmentation or not records
        table = np.asarray(records, dtype=np.float64).reshape(-1, 14)
        # ids up to 2**63 do not survive float64, so they are kept in their own int64 column.
        self._ann_image = table[:, 0].astype(np.int64)
        self._ann_ids = np.asarray(ids, dtype=np.int64)
        self._ann_labels = table[:, 1].astype(np.int64)
        self._ann_crowd = table[:, 2].astype(bool)
        self._ann_bbox = table[:, 3:7].copy()
        self._ann_area = table[:, 7].copy()
        self._ann_seg = table[:, 8].astype(np.uint8)
        self._ann_parts = table[:, 9:11].astype(np.int64)
        self._ann_rle = table[:, 11].astype(np.int64)
        self._ann_fields = table[:, 12].astype(np.int64)
        self._ann_json_index = table[:, 13].astype(np.int64)
        self._rles = _StringTable([r.decode("ascii") for r in rles])
        self._fields = _StringTable(fields)
        part_sizes = np.asarray([p.size for p in coords], dtype=np.int64)
        self._part_offsets = np.zeros(len(coords) + 1, dtype=np.int64)
        np.cumsum(part_sizes, out=self._part_offsets[1:])
        self._coords = np.concatenate(coords) if coords else np.zeros(0, dtype=np.float64)
        self._keypoints = keypoints
        self._order = np.argsort(self._ann_image, kind="stable")
        per_image = np.bincount(self._ann_image, minlength=len(self._image_ids))
        self._image_start = np.zeros(len(self._image_ids) + 1, dtype=np.int64)
        np.cumsum(per_image, out=self._image_start[1:])

    # the collection ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._image_ids)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index a CocoDataset with an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        return self._sample(int(index) % len(self))

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self._sample(index)

    def __repr__(self) -> str:
        return (
            f"CocoDataset({self.file or 'in memory'}: {len(self)} images, "
            f"{self.num_annotations} annotations, {len(self.categories)} categories"
            f"{f', {len(self.problems)} problems skipped' if self.problems else ''})"
        )

    def evaluation_columns(self, masks: bool) -> dict[str, Any] | None:
        """What COCO's evaluation reads of every annotation, in sample order, straight from the
        tables: ``image_id``, ``category_id``, ``id``, ``iscrowd`` (int64), ``area``, ``bbox``
        (``xywh``; the file's values, which ``sample_annotations`` keeps for unchanged samples)
        and with ``masks`` the ``segm`` regions (compressed RLE dicts, polygons rasterised as
        pycocotools' ``annToRLE`` does). None when an annotation has no ``bbox`` or ``area``
        (those come from the mask, through the samples)."""
        rows = self._order
        bbox = self._ann_bbox[rows]
        area = self._ann_area[rows]
        if np.isnan(bbox).any() or np.isnan(area).any() or (masks and (
                not self._has_masks or (self._ann_seg[rows] == _SEG_NONE).any())):
            return None
        image_index = self._ann_image[rows]
        columns: dict[str, Any] = {
            "image_id": self._image_ids[image_index],
            "category_id": np.asarray(self.categories.ids, dtype=np.int64)[self._ann_labels[rows]],
            "id": self._ann_ids[rows], "iscrowd": self._ann_crowd[rows].astype(np.int64),
            "area": area, "bbox": bbox.tolist(),
        }
        if masks:
            regions: list[dict[str, Any]] = []
            for index in range(len(self)):
                image_rows = rows[self._image_start[index] : self._image_start[index + 1]]
                height, width = (int(v) for v in self._image_sizes[index])
                items: list[MaskItem] = []
                cached = self._polygon_rles
                for row in image_rows:
                    if cached is not None and self._ann_seg[row] == _SEG_POLYGON:
                        items.append(RLEMask(cached.raw(int(row))))
                    else:
                        items.append(self._mask_item(int(row)))
                counts = Masks(items, (height, width)).rle_counts() if items else []
                regions.extend({"size": [height, width], "counts": c} for c in counts)
            columns["segm"] = regions
        return columns

    @property
    def num_annotations(self) -> int:
        return int(self._image_start[-1])

    @property
    def image_ids(self) -> np.ndarray:
        return self._image_ids.copy()

    def index_of(self, image_id: int) -> int:
        try:
            return self._image_index[int(image_id)]
        except KeyError:
            raise KeyError(f"no image with id {image_id} in {self.file or 'this dataset'}") from None

    def image_path(self, index: int) -> str | None:
        root = self.image_root
        if root is None:
            return None
        # resolved once per image (two realpaths are a tenth of a millisecond: a data loader
        # asks for every image every epoch); a new image_root starts over
        if self._resolved_root != root:
            self._resolved.clear()
            self._resolved_root = root
        path = self._resolved.get(index)
        if path is None:
            path = self._resolved[index] = safe_join(
                root, self._file_names[index],
                Location(file=self.file, json_path=f"images[{index}].file_name"))
        return path

    def _mask_item(self, row: int) -> MaskItem:
        """The mask of annotation ``row`` (a polygon, or RLE) from the packed tables."""
        kind = self._ann_seg[row]
        if kind == _SEG_POLYGON:
            start, stop = self._ann_parts[row]
            return PolygonMask._trusted(tuple(
                self._coords[self._part_offsets[p] : self._part_offsets[p + 1]]
                for p in range(start, stop)))
        return RLEMask(self._rles.raw(int(self._ann_rle[row])),
                       uncompressed=kind == _SEG_RLE_UNCOMPRESSED)

    def _sample(self, index: int) -> Sample:
        rows = self._order[self._image_start[index] : self._image_start[index + 1]]
        height, width = (int(v) for v in self._image_sizes[index])
        size = (height, width)
        image_id = int(self._image_ids[index])
        masks = None
        if self._has_masks:
            items: list[MaskItem] = []
            for row in rows:
                items.append(self._mask_item(int(row)))
            masks = Masks(items, size)
        bbox = self._ann_bbox[rows]
        boxes = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
        missing_box = np.isnan(boxes).any(axis=1)
        if missing_box.any():
            if masks is None:
                row = int(rows[np.flatnonzero(missing_box)[0]])
                raise FormatError(
                    "annotation has neither a bbox nor a segmentation",
                    Location(file=self.file,
                             json_path=f"annotations[{int(self._ann_json_index[row])}]",
                             image_id=image_id, annotation_id=int(self._ann_ids[row])),
                )
            boxes[missing_box] = masks[missing_box].boxes()
        extras: dict[str, Any] = {"coco_bbox": bbox, "coco_area": self._ann_area[rows]}
        field_rows = self._ann_fields[rows]
        if (field_rows >= 0).any():
            extras["coco_fields"] = [
                json.loads(self._fields[int(f)]) if f >= 0 else {} for f in field_rows
            ]
        instances = Instances(
            image_size=size,
            boxes=boxes,
            labels=self._ann_labels[rows],
            masks=masks,
            keypoints=self._keypoints[rows] if self._num_keypoints else None,
            iscrowd=self._ann_crowd[rows],
            ids=self._ann_ids[rows],
            extras=extras,
        )
        image_extra = self._image_extras[index]
        meta = SampleMeta(
            source=self.file,
            file_name=self._file_names[index],
            original_size=size,
            categories=self.categories,
            drops=list(self._drops_by_image.get(index, [])),
            extra={"coco_image": json.loads(image_extra)} if image_extra else {},
        )
        return Sample(instances, image_id, meta, self.image_path(index))


def read_coco(
    annotation_file: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    strict: bool = True,
    limits: rules.Limits | None = None,
) -> CocoDataset:
    """Read a COCO instances (or person keypoints) file.

    ``image_root`` is where ``file_name``s are resolved (default: the annotation file's folder);
    a name that is absolute or whose ``..`` leave it is refused, and one that resolves outside it
    (a symlink) when its image is loaded. The rules are those of ``instkit validate`` (the
    rulebook ``instkit.validate.rules``): ``strict=True`` raises the leaf error of the first
    error-level rule broken (``error.code`` names it), so a file that ``validate`` passes with no
    error is exactly a file this accepts; ``strict=False`` leaves out the images, annotations and
    categories that break one, lists the findings in ``dataset.problems`` (with their codes) and
    records each left-out annotation in its sample's ``meta.drops`` (``reason`` = the code).
    ``limits``: the bounds of ``instkit.validate.rules.Limits``.
    """
    path = os.fspath(annotation_file)
    root = os.fspath(image_root) if image_root is not None else str(Path(path).resolve().parent)
    with collector_paused():
        document = rules.load_document(path)
        with open(path, "rb") as handle:  # only searched for tokens (C speed)
            raw = handle.read()
        return CocoDataset(document, file=path, image_root=root, strict=strict, limits=limits,
                           raw=raw)


# --- writing ------------------------------------------------------------------------------------


def _short_float(value: float) -> float | int:
    """float32 values written with the fewest digits that read back to the same float32."""
    as_float = float(np.format_float_positional(np.float32(value), unique=True, trim="-"))
    return int(as_float) if as_float.is_integer() else as_float


def _segmentation_json(item: MaskItem, counts: bytes, size: tuple[int, int], mask_format: str,
                       masks: Masks, row: int) -> Any:
    if mask_format == "polygon" and not isinstance(item, PolygonMask):
        item = masks[row].to_polygons().items[0]
    if isinstance(item, PolygonMask) and mask_format != "rle":
        return [part.tolist() for part in item.parts]
    if isinstance(item, RLEMask) and item.uncompressed:
        return {"size": [size[0], size[1]], "counts": decode_rle_counts(counts).tolist()}
    return {"size": [size[0], size[1]], "counts": counts.decode("ascii")}


def sample_annotations(
    sample: Sample, categories: Categories, *, mask_format: str = "auto"
) -> list[dict[str, Any]]:
    """The COCO annotation objects of one sample."""
    inst = sample.instances
    n = len(inst)
    if n == 0:
        return []
    extras = inst.extras
    boxes64 = inst.boxes.astype(np.float64)
    file_bbox = extras.get("coco_bbox")
    file_area = extras.get("coco_area")
    masks = inst.masks
    counts = masks.rle_counts() if masks is not None else None
    mask_area = masks.area() if masks is not None else None
    fields = extras.get("coco_fields")
    out = []
    for i in range(n):
        box = boxes64[i]
        xywh: list[float | int] = [_short_float(box[0]), _short_float(box[1]),
                                   _short_float(box[2] - box[0]), _short_float(box[3] - box[1])]
        unchanged = False
        if file_bbox is not None and not np.isnan(file_bbox[i]).any():
            x, y, w, h = file_bbox[i]
            original = np.asarray([x, y, x + w, y + h], dtype=np.float32)
            if np.array_equal(original, inst.boxes[i]):
                xywh = [_plain(v) for v in file_bbox[i]]
                unchanged = True
        area: float | int
        if unchanged and file_area is not None and not math.isnan(file_area[i]):
            area = _plain(file_area[i])
        elif mask_area is not None:
            area = int(mask_area[i])
        else:
            area = _short_float((box[2] - box[0]) * (box[3] - box[1]))
        annotation: dict[str, Any] = {}
        if masks is not None and counts is not None:
            annotation["segmentation"] = _segmentation_json(
                masks.items[i], counts[i], inst.image_size, mask_format, masks, i)
        annotation.update({
            "area": area,
            "iscrowd": int(inst.iscrowd[i]),
            "image_id": int(sample.image_id),
            "bbox": xywh,
            "category_id": categories.id_of(int(inst.labels[i])),
            "id": int(inst.ids[i]),
        })
        if inst.keypoints is not None:
            category = categories[int(inst.labels[i])]
            k = len(category.keypoints) or inst.keypoints.shape[1]
            kp = inst.keypoints[i, :k]
            annotation["keypoints"] = [_plain(v) for v in kp.reshape(-1)]
            annotation["num_keypoints"] = int((kp[:, 2] > 0).sum())
        if inst.scores is not None:
            annotation["score"] = float(inst.scores[i])
        if fields is not None and isinstance(fields[i], dict):
            for key, value in fields[i].items():
                annotation.setdefault(key, value)
        out.append(annotation)
    return out


def _plain(value: Any) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else number


def write_coco(
    samples: Iterable[Sample],
    path: str | os.PathLike[str],
    categories: Categories | None = None,
    *,
    info: dict[str, Any] | None = None,
    licenses: list[Any] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    mask_format: str = "auto",
    renumber_ids: bool = False,
    extra_fields: dict[str, Any] | None = None,
) -> Path:
    """Write samples as a COCO file, atomically, never over one of its inputs.

    ``categories`` defaults to the samples' own (``dataset.categories`` for a ``CocoDataset``).
    ``mask_format``: ``"auto"`` keeps polygons as polygons and writes the other forms as RLE
    (uncompressed where the source was); ``"rle"`` writes compressed RLE throughout;
    ``"polygon"`` converts every mask to polygons (lossy: holes are filled). ``images_dir``
    also saves every sample's image there, named by its ``file_name`` (PNG for new ones).
    Annotation ids must be unique across the file; ``renumber_ids=True`` numbers them 1, 2, ...
    in order instead (for augmented copies, whose mixed-in rows repeat ids across samples).
    ``extra_fields``: top-level keys beyond info/licenses/images/annotations/categories
    (``scene_annotations``...), written as they are; a ``CocoDataset`` gives its own.
    """
    if mask_format not in ("auto", "rle", "polygon"):
        raise ValueError(f"mask_format must be 'auto', 'rle' or 'polygon', got {mask_format!r}")
    target = Path(path)
    if isinstance(samples, CocoDataset):
        categories = categories or samples.categories
        info = info if info is not None else samples.info
        licenses = licenses if licenses is not None else samples.licenses
        extra_fields = extra_fields if extra_fields is not None else samples.extra_fields
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen_images: set[int] = set()
    seen_ids: dict[int, int] = {}
    for position, sample in enumerate(samples):
        if sample.meta.source and same_file(sample.meta.source, target):
            raise InstkitError(f"refusing to write over the input file {target}",
                               Location(file=str(target)))
        cats = categories or sample.meta.categories
        if cats is None:
            raise InstkitError("write_coco needs categories: pass categories=...",
                               Location(sample_index=position, image_id=sample.image_id))
        categories = cats
        if sample.image_id in seen_images:
            raise InstkitError(f"two samples share image id {sample.image_id}",
                               Location(sample_index=position, image_id=sample.image_id))
        seen_images.add(sample.image_id)
        height, width = sample.image_size
        file_name = sample.meta.file_name or f"{sample.image_id:012d}.png"
        if images_dir is not None:
            copy_image(sample, safe_join(images_dir, file_name))
        image: dict[str, Any] = {"id": int(sample.image_id), "file_name": file_name,
                                 "width": int(width), "height": int(height)}
        for key, value in sample.meta.extra.get("coco_image", {}).items():
            image.setdefault(key, value)
        images.append(image)
        _refuse_empty_masks(sample, position)
        for annotation in sample_annotations(sample, categories, mask_format=mask_format):
            if renumber_ids:
                annotation["id"] = len(annotations) + 1
            if annotation["id"] in seen_ids:
                raise InstkitError(
                    f"annotation id {annotation['id']} is used twice (also in image "
                    f"{seen_ids[annotation['id']]})",
                    Location(sample_index=position, image_id=sample.image_id,
                             annotation_id=annotation["id"]),
                )
            seen_ids[annotation["id"]] = sample.image_id
            annotations.append(annotation)
    if categories is None:
        raise InstkitError("write_coco needs categories when there are no samples")
    document: dict[str, Any] = {}
    if info is not None:
        document["info"] = info
    if licenses is not None:
        document["licenses"] = licenses
    document.update({"images": images, "annotations": annotations,
                     "categories": categories.to_coco()})
    for key, value in (extra_fields or {}).items():
        if key not in document:
            document[key] = value
    with atomic_write(target) as handle:
        json.dump(document, handle, allow_nan=False, separators=(",", ":"))
    return target


def _empty_mask_rows(sample: Sample) -> np.ndarray:
    masks = sample.instances.masks
    if masks is None or len(masks) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(masks.area() == 0)


def _refuse_empty_masks(sample: Sample, position: int) -> None:
    empty = _empty_mask_rows(sample)
    if empty.size:
        ann_id = int(sample.instances.ids[empty[0]])
        raise InstkitError(
            f"{empty.size} annotation(s) of this image have a mask that covers no pixel (first: "
            f"id {ann_id}); COCO readers refuse them (rule mask-empty): leave them out first "
            "(instkit.io.coco.drop_empty_masks records each in meta.drops)",
            Location(sample_index=position, image_id=sample.image_id, annotation_id=ann_id))


def drop_empty_masks(sample: Sample) -> tuple[Sample, int]:
    """``sample`` without the instances whose mask covers no pixel (each recorded in
    ``meta.drops`` with reason ``mask-empty``), and how many there were."""
    empty = _empty_mask_rows(sample)
    if not empty.size:
        return sample, 0
    inst = sample.instances
    keep = np.ones(len(inst), dtype=bool)
    keep[empty] = False
    meta = sample.meta.copy()
    meta.drops.extend(Drop(int(inst.ids[k]), "mask-empty", int(inst.labels[k]), stage="write_coco",
                           detail="the mask covers no pixel") for k in empty.tolist())
    return sample.replace(instances=inst[keep], meta=meta), int(empty.size)


__all__ = ["CocoDataset", "CocoProblem", "drop_empty_masks", "read_coco", "sample_annotations",
           "write_coco"]

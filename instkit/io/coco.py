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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeGuard

import numpy as np

from instkit.categories import Categories
from instkit.errors import FormatError, InstkitError, Location, MaskError
from instkit.instances import Instances
from instkit.io.files import atomic_write, load_json, safe_join, same_file
from instkit.masks import (
    MaskItem,
    Masks,
    PolygonMask,
    RLEMask,
    decode_rle_counts,
    rle_from_coco,
)
from instkit.sample import Drop, Sample, SampleMeta

log = logging.getLogger(__name__)

_SEG_NONE, _SEG_POLYGON, _SEG_RLE, _SEG_RLE_UNCOMPRESSED = 0, 1, 2, 3
_IMAGE_FIELDS = {"id", "file_name", "width", "height"}
_ANNOTATION_FIELDS = {
    "id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "keypoints",
    "num_keypoints",
}


@dataclass(frozen=True)
class CocoProblem:
    """A problem found while reading leniently: what was skipped, and why."""

    message: str
    location: Location

    def __str__(self) -> str:
        where = self.location.describe()
        return f"{self.message} ({where})" if where else self.message


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


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Skip(Exception):
    """Internal: an annotation (or image) that lenient reading leaves out."""


class CocoDataset(Sequence[Sample]):
    """An indexable collection of ``Sample``s read from a COCO file (see ``read_coco``)."""

    def __init__(
        self,
        document: Any,
        *,
        file: str | None = None,
        image_root: str | None = None,
        strict: bool = True,
    ) -> None:
        self.file = file
        self.image_root = image_root
        self.strict = strict
        self.problems: list[CocoProblem] = []
        self._drops_by_image: dict[int, list[Drop]] = {}
        if not isinstance(document, dict):
            raise FormatError(
                f"a COCO file must hold a JSON object, got {type(document).__name__}",
                Location(file=file, json_path="$"),
            )
        self.info = document.get("info")
        self.licenses = document.get("licenses")
        self.categories = Categories.from_coco(document.get("categories", []), file=file)
        self._parse_images(document.get("images"))
        self._parse_annotations(document.get("annotations", []))
        if self.problems:
            log.warning(
                "%s: skipped %d problem(s) while reading leniently; see dataset.problems",
                file or "COCO document", len(self.problems),
            )

    # parsing -------------------------------------------------------------------------------

    def _problem(self, message: str, where: Location, image_index: int | None = None,
                 annotation_id: int | None = None) -> NoReturn:
        if self.strict:
            raise FormatError(message, where)
        self.problems.append(CocoProblem(message, where))
        if image_index is not None and annotation_id is not None:
            self._drops_by_image.setdefault(image_index, []).append(
                Drop(annotation_id, "invalid_annotation", stage="read_coco", detail=message)
            )
        raise _Skip

    def _parse_images(self, images: Any) -> None:
        if not isinstance(images, list):
            raise FormatError(
                f"'images' must be a list, got {type(images).__name__ if images is not None else 'nothing'}",
                Location(file=self.file, json_path="images"),
            )
        ids: list[int] = []
        sizes: list[tuple[int, int]] = []
        names: list[str] = []
        extras: list[str] = []
        self._image_index: dict[int, int] = {}
        for k, entry in enumerate(images):
            where = Location(file=self.file, json_path=f"images[{k}]")
            try:
                if not isinstance(entry, dict):
                    self._problem(f"an image must be an object, got {type(entry).__name__}", where)
                image_id = entry.get("id")
                if not _is_int(image_id):
                    self._problem(f"image 'id' must be an integer, got {image_id!r}", where)
                where = Location(file=self.file, json_path=f"images[{k}]", image_id=image_id)
                if image_id in self._image_index:
                    self._problem(f"duplicate image id {image_id}", where)
                name = entry.get("file_name")
                if not isinstance(name, str) or not name:
                    self._problem(f"image 'file_name' must be a non-empty string, got {name!r}", where)
                width, height = entry.get("width"), entry.get("height")
                if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                    self._problem(
                        f"image 'width' and 'height' must be positive integers, got "
                        f"width={width!r} height={height!r}", where,
                    )
                if self.image_root is not None:
                    safe_join(self.image_root, name, where)
            except _Skip:
                continue
            self._image_index[image_id] = len(ids)
            ids.append(image_id)
            sizes.append((height, width))
            names.append(name)
            extra = {key: value for key, value in entry.items() if key not in _IMAGE_FIELDS}
            extras.append(json.dumps(extra) if extra else "")
        self._image_ids = np.asarray(ids, dtype=np.int64)
        self._image_sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self._file_names = _StringTable(names)
        self._image_extras = _StringTable(extras)

    def _parse_annotations(self, annotations: Any) -> None:
        if not isinstance(annotations, list):
            raise FormatError(
                f"'annotations' must be a list, got {type(annotations).__name__}",
                Location(file=self.file, json_path="annotations"),
            )
        num_keypoints = self.categories.num_keypoints
        if num_keypoints == 0:
            lengths = [
                len(a["keypoints"]) // 3 for a in annotations
                if isinstance(a, dict) and isinstance(a.get("keypoints"), list)
            ]
            num_keypoints = max(lengths, default=0)
        self._num_keypoints = num_keypoints
        records: list[tuple[Any, ...]] = []
        coords: list[np.ndarray] = []
        rles: list[str] = []
        fields: list[str] = []
        keypoints: list[np.ndarray] = []
        any_segmentation = False
        part_count = 0
        for k, ann in enumerate(annotations):
            try:
                record = self._parse_annotation(k, ann, num_keypoints)
            except _Skip:
                continue
            image_index, ann_id, label, crowd, bbox, area, seg_kind, parts, rle, kp, extra = record
            any_segmentation |= seg_kind != _SEG_NONE
            rle_index = -1
            if rle is not None:
                rle_index = len(rles)
                rles.append(rle)
            field_index = -1
            if extra:
                field_index = len(fields)
                fields.append(json.dumps(extra))
            keypoints.append(kp)
            records.append((image_index, ann_id, label, crowd, *bbox, area, seg_kind,
                            part_count, part_count + len(parts), rle_index, field_index,
                            k))
            coords.extend(parts)
            part_count += len(parts)
        # With no annotations at all there is nothing to say masks are absent: keep the column.
        self._has_masks = any_segmentation or not records
        table = np.asarray(records, dtype=np.float64).reshape(-1, 15)
        # ids up to 2**63 do not survive float64, so they are kept in their own int64 column.
        ann_ids = np.asarray([r[1] for r in records], dtype=np.int64)
        self._ann_image = table[:, 0].astype(np.int64)
        self._ann_ids = ann_ids
        self._ann_labels = table[:, 2].astype(np.int64)
        self._ann_crowd = table[:, 3].astype(bool)
        self._ann_bbox = table[:, 4:8].copy()
        self._ann_area = table[:, 8].copy()
        self._ann_seg = table[:, 9].astype(np.uint8)
        self._ann_parts = table[:, 10:12].astype(np.int64)
        self._ann_rle = table[:, 12].astype(np.int64)
        self._ann_fields = table[:, 13].astype(np.int64)
        self._ann_json_index = table[:, 14].astype(np.int64)
        self._rles = _StringTable(rles)
        self._fields = _StringTable(fields)
        part_sizes = np.asarray([p.size for p in coords], dtype=np.int64)
        self._part_offsets = np.zeros(len(coords) + 1, dtype=np.int64)
        np.cumsum(part_sizes, out=self._part_offsets[1:])
        self._coords = np.concatenate(coords) if coords else np.zeros(0, dtype=np.float64)
        self._keypoints = (
            np.stack(keypoints).astype(np.float32) if num_keypoints and keypoints
            else np.zeros((len(records), num_keypoints, 3), dtype=np.float32)
        )
        order = np.argsort(self._ann_image, kind="stable")
        self._order = order
        counts = np.bincount(self._ann_image, minlength=len(self._image_ids))
        self._image_start = np.zeros(len(self._image_ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._image_start[1:])
        if any_segmentation:
            missing = np.flatnonzero(self._ann_seg == _SEG_NONE)
            if missing.size:
                index = int(missing[0])
                where = Location(
                    file=self.file,
                    json_path=f"annotations[{int(self._ann_json_index[index])}].segmentation",
                    image_id=int(self._image_ids[self._ann_image[index]]),
                    annotation_id=int(self._ann_ids[index]),
                )
                message = (
                    f"{missing.size} annotation(s) have no segmentation while others do; "
                    "an instance table holds masks for all instances or for none"
                )
                if self.strict:
                    raise FormatError(message, where)
                for idx in missing:
                    self._drops_by_image.setdefault(int(self._ann_image[idx]), []).append(
                        Drop(int(self._ann_ids[idx]), "invalid_annotation", stage="read_coco",
                             detail="no segmentation")
                    )
                self.problems.append(CocoProblem(message, where))
                keep = self._ann_seg != _SEG_NONE
                self._order = order[keep[order]]
                counts = np.bincount(self._ann_image[keep], minlength=len(self._image_ids))
                np.cumsum(counts, out=self._image_start[1:])

    def _parse_annotation(self, k: int, ann: Any, num_keypoints: int) -> tuple[Any, ...]:
        path = f"annotations[{k}]"
        where = Location(file=self.file, json_path=path)
        if not isinstance(ann, dict):
            self._problem(f"an annotation must be an object, got {type(ann).__name__}", where)
        ann_id = ann.get("id")
        image_id = ann.get("image_id")
        where = Location(file=self.file, json_path=path, image_id=image_id if _is_int(image_id) else None,
                         annotation_id=ann_id if _is_int(ann_id) else None)
        if not _is_int(ann_id):
            self._problem(f"annotation 'id' must be an integer, got {ann_id!r}",
                          Location(file=self.file, json_path=f"{path}.id",
                                   image_id=where.image_id))
        if not _is_int(image_id):
            self._problem(f"annotation 'image_id' must be an integer, got {image_id!r}",
                          Location(file=self.file, json_path=f"{path}.image_id",
                                   annotation_id=ann_id))
        image_index = self._image_index.get(image_id)
        if image_index is None:
            self._problem(f"annotation refers to unknown image id {image_id}",
                          Location(file=self.file, json_path=f"{path}.image_id",
                                   image_id=image_id, annotation_id=ann_id))

        def fail(message: str, field: str) -> NoReturn:
            self._problem(
                message,
                Location(file=self.file, json_path=f"{path}.{field}", image_id=image_id,
                         annotation_id=ann_id),
                image_index=image_index, annotation_id=ann_id,
            )

        category_id = ann.get("category_id")
        if not _is_int(category_id):
            fail(f"'category_id' must be an integer, got {category_id!r}", "category_id")
        if not self.categories.has_id(category_id):
            fail(f"unknown category id {category_id}", "category_id")
        label = self.categories.label_of(category_id)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            fail(f"'iscrowd' must be 0 or 1, got {crowd!r}", "iscrowd")
        height, width = (int(v) for v in self._image_sizes[image_index])
        bbox = ann.get("bbox")
        box: tuple[float, ...]
        if bbox is None:
            box = (math.nan,) * 4
        else:
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
                fail(f"'bbox' must be [x, y, width, height] numbers, got {bbox!r}", "bbox")
            if not all(math.isfinite(v) for v in bbox):
                fail(f"'bbox' has a NaN or infinite value: {bbox!r}", "bbox")
            if bbox[2] < 0 or bbox[3] < 0:
                fail(f"'bbox' has a negative width or height: {bbox!r}", "bbox")
            box = tuple(float(v) for v in bbox)
        area = ann.get("area")
        if area is None:
            area_value = math.nan
        elif not _is_number(area) or not math.isfinite(area):
            fail(f"'area' must be a finite number, got {area!r}", "area")
        else:
            area_value = float(area)
        segmentation = ann.get("segmentation")
        parts: list[np.ndarray] = []
        rle: str | None = None
        if segmentation is None or segmentation == []:
            seg_kind = _SEG_NONE
            if segmentation == []:
                fail("'segmentation' is an empty list: the annotation has no geometry",
                     "segmentation")
        elif isinstance(segmentation, list):
            seg_kind = _SEG_POLYGON
            for j, part in enumerate(segmentation):
                field = f"segmentation[{j}]"
                try:
                    # One C pass converts and type-checks; strings and nested lists raise.
                    array = np.asarray(part, dtype=np.float64) if isinstance(part, list) else None
                except (TypeError, ValueError):
                    array = None
                if array is None or array.ndim != 1:
                    fail("a polygon must be a flat list of numbers [x0, y0, x1, y1, ...]", field)
                if len(part) % 2:
                    fail(f"polygon has an odd number of coordinates ({len(part)})", field)
                if len(part) < 6:
                    trap = (" (pycocotools would read these 4 numbers as a box)"
                            if len(part) == 4 else "")
                    fail(f"polygon has {len(part) // 2} point(s); at least 3 are needed{trap}",
                         field)
                if not np.isfinite(array).all():
                    fail("polygon has a NaN or infinite coordinate", field)
                parts.append(array)
        elif isinstance(segmentation, dict):
            try:
                item = rle_from_coco(segmentation, (height, width))
            except MaskError as exc:
                fail(exc.message, "segmentation")
            seg_kind = _SEG_RLE_UNCOMPRESSED if item.uncompressed else _SEG_RLE
            rle = item.counts.decode("ascii")
        else:
            fail(f"'segmentation' must be a polygon list or an RLE object, got "
                 f"{type(segmentation).__name__}", "segmentation")
        kp = np.zeros((num_keypoints, 3), dtype=np.float32)
        raw_kp = ann.get("keypoints")
        if raw_kp is not None:
            category = self.categories[label]
            expected = len(category.keypoints) or num_keypoints
            if not isinstance(raw_kp, list) or not all(map(_is_number, raw_kp)):
                fail("'keypoints' must be a flat list of numbers [x, y, v, ...]", "keypoints")
            if len(raw_kp) != 3 * expected:
                fail(f"'keypoints' has {len(raw_kp)} numbers; category {category.name!r} "
                     f"needs {expected} keypoints = {3 * expected} numbers", "keypoints")
            values = np.asarray(raw_kp, dtype=np.float32).reshape(-1, 3)
            if not np.isfinite(values).all():
                fail("'keypoints' has a NaN or infinite value", "keypoints")
            kp[: len(values)] = values
        extra = {key: value for key, value in ann.items() if key not in _ANNOTATION_FIELDS}
        return (image_index, ann_id, label, int(crowd), box, area_value, seg_kind, parts, rle,
                kp, extra)

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
        return safe_join(root, self._file_names[index],
                         Location(file=self.file, json_path=f"images[{index}].file_name"))

    def _sample(self, index: int) -> Sample:
        rows = self._order[self._image_start[index] : self._image_start[index + 1]]
        height, width = (int(v) for v in self._image_sizes[index])
        size = (height, width)
        image_id = int(self._image_ids[index])
        masks = None
        if self._has_masks:
            items: list[MaskItem] = []
            for row in rows:
                kind = self._ann_seg[row]
                if kind == _SEG_POLYGON:
                    start, stop = self._ann_parts[row]
                    items.append(PolygonMask._trusted(tuple(
                        self._coords[self._part_offsets[p] : self._part_offsets[p + 1]]
                        for p in range(start, stop)
                    )))
                else:
                    items.append(RLEMask(self._rles.raw(int(self._ann_rle[row])),
                                         uncompressed=kind == _SEG_RLE_UNCOMPRESSED))
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
) -> CocoDataset:
    """Read a COCO instances (or person keypoints) file.

    ``image_root`` is where ``file_name``s are resolved (default: the annotation file's folder);
    a name that resolves outside it is refused. ``strict=True`` raises ``instkit.errors``
    on the first problem; ``strict=False`` skips bad images and annotations, lists them in
    ``dataset.problems`` and records each skipped annotation in its sample's ``meta.drops``.
    """
    path = os.fspath(annotation_file)
    document = load_json(path, allow_nonfinite=not strict)
    root = os.fspath(image_root) if image_root is not None else str(Path(path).resolve().parent)
    return CocoDataset(document, file=path, image_root=root, strict=strict)


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
) -> Path:
    """Write samples as a COCO file, atomically, never over one of its inputs.

    ``categories`` defaults to the samples' own (``dataset.categories`` for a ``CocoDataset``).
    ``mask_format``: ``"auto"`` keeps polygons as polygons and writes the other forms as RLE
    (uncompressed where the source was); ``"rle"`` writes compressed RLE throughout;
    ``"polygon"`` converts every mask to polygons (lossy: holes are filled). ``images_dir``
    also saves every sample's image there, named by its ``file_name`` (PNG for new ones).
    Annotation ids must be unique across the file; ``renumber_ids=True`` numbers them 1, 2, ...
    in order instead (for augmented copies, whose mixed-in rows repeat ids across samples).
    """
    if mask_format not in ("auto", "rle", "polygon"):
        raise ValueError(f"mask_format must be 'auto', 'rle' or 'polygon', got {mask_format!r}")
    target = Path(path)
    if isinstance(samples, CocoDataset):
        categories = categories or samples.categories
        info = info if info is not None else samples.info
        licenses = licenses if licenses is not None else samples.licenses
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
            _save_image(sample, safe_join(images_dir, file_name))
        image: dict[str, Any] = {"id": int(sample.image_id), "file_name": file_name,
                                 "width": int(width), "height": int(height)}
        for key, value in sample.meta.extra.get("coco_image", {}).items():
            image.setdefault(key, value)
        images.append(image)
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
    with atomic_write(target) as handle:
        json.dump(document, handle, allow_nan=False, separators=(",", ":"))
    return target


def _save_image(sample: Sample, destination: str) -> None:
    from PIL import Image

    if sample.image_path and same_file(sample.image_path, destination):
        return
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(destination, "wb") as handle:
        fmt = "JPEG" if destination.lower().endswith((".jpg", ".jpeg")) else "PNG"
        Image.fromarray(sample.image).save(handle, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


__all__ = ["CocoDataset", "CocoProblem", "read_coco", "write_coco", "sample_annotations"]

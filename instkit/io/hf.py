"""Hugging Face ``datasets`` rows in the layout of the Transformers instance-segmentation guide.

A row holds ``image`` (PIL image, or ``{"bytes", "path"}`` when image decoding is off),
``image_id``, ``width``, ``height`` and ``objects``, a dict of equal-length lists: ``id``,
``category``, ``bbox`` (COCO ``xywh``, absolute pixels), ``area``, ``segmentation`` (polygon
parts ``[[x0, y0, x1, y1, ...], ...]`` or an RLE dict ``{"size": [H, W], "counts": ...}``) and
``iscrowd``. instkit adds two optional per-object fields that the guide's code ignores: ``rle``
(the exact compressed RLE string of a mask that is not a polygon; ``""`` for polygons) and
``keypoints`` (flat ``[x, y, v, ...]``).

Categories. ``category`` values are, by default, contiguous labels ``0..C-1`` (the convention of
a ``ClassLabel`` feature and of the guide's ``id2label``). ``write_hf`` stores a ``ClassLabel``
and a sidecar ``instkit_categories.json`` (COCO ``categories``) beside the saved dataset so that
the dataset's own ids (COCO's gapped 1..90) come back on the way to COCO. A dataset whose
``category`` holds raw integers and has no sidecar is read with ``category_ids=True``: the values
are category ids, and the table is made of the distinct values found.

File names. ``datasets`` keeps only the base name of an image's path when it saves, so
``write_hf`` also writes ``instkit_file_names.json`` (each row's ``file_name``, folders
included); reading uses it, so ``a/1.jpg`` and ``b/1.jpg`` come back as two images.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import (
    FormatError,
    ImageError,
    InstkitError,
    Location,
    MaskError,
    require,
    show_value,
)
from instkit.instances import Instances
from instkit.io.files import make_temporary_dir, same_file
from instkit.masks import MaskItem, Masks, PolygonMask, rle_from_coco
from instkit.sample import Sample, SampleMeta
from instkit.validate import rules

CATEGORIES_FILE = "instkit_categories.json"
FILE_NAMES_FILE = "instkit_file_names.json"
_OBJECT_FIELDS = ("id", "category", "bbox", "area", "segmentation", "iscrowd")


def _is_number(value: Any) -> TypeGuard[int | float | np.integer | np.floating]:
    return rules.is_number(value)


def _image_from_row(value: Any, where: Location) -> tuple[np.ndarray | None, list[str]]:
    """The row's ``image`` (encoded ``bytes``, a ``path``, or a PIL image) as ``(H, W, 3)``
    uint8 RGB with EXIF orientation applied: ``load_image``'s rules and errors."""
    from PIL import Image

    from instkit.sample import image_to_rgb, load_image

    if value is None:
        return None, []
    if isinstance(value, dict):
        if value.get("bytes"):
            return load_image(io.BytesIO(value["bytes"]), where=where)
        if value.get("path"):
            return load_image(value["path"], where=where)
        return None, []
    if isinstance(value, Image.Image):
        return image_to_rgb(value, where)
    raise ImageError(f"'image' must be a PIL image or {{bytes, path}}, got "
                     f"{type(value).__name__}", where)


def _mask_item(seg: Any, rle: Any, size: tuple[int, int], where: Location) -> MaskItem:
    if isinstance(rle, (str, bytes)) and len(rle) > 0:
        try:
            return rle_from_coco({"size": list(size), "counts": rle}, size)
        except MaskError as exc:
            raise MaskError(exc.message, where) from None
    if isinstance(seg, dict):
        try:
            return rle_from_coco(seg, size)
        except MaskError as exc:
            raise MaskError(exc.message, where) from None
    if isinstance(seg, (list, tuple)) and seg:
        if all(_is_number(v) for v in seg):  # one flat part, as some exporters write it
            seg = [seg]
        # The rulebook's polygon rules (types, counts, NaN, coordinate and outline limits).
        parts = rules.polygon_parts([list(p) if isinstance(p, tuple) else p for p in seg],
                                    where.json_path or "objects", where.image_id,
                                    where.annotation_id, rules.Collector(where.file, strict=True))
        return PolygonMask._trusted(tuple(parts))
    raise MaskError(f"object has no usable segmentation (got {show_value(seg)})", where)


def hf_row_to_sample(
    row: dict[str, Any],
    categories: Categories | None = None,
    *,
    index: int | None = None,
    category_ids: bool = False,
    file_name: str | None = None,
) -> Sample:
    """One row of the guide's layout -> ``Sample`` (image decoded into memory).

    ``categories``: the table the ``category`` values refer to; without it one is made with ids
    ``0..max`` (names ``"0"``, ``"1"``...). ``category_ids``: the values are the table's category
    ids rather than labels. The file's ``bbox`` and ``area`` are kept as the ``coco_bbox`` /
    ``coco_area`` extras (as ``read_coco`` does), so a COCO file written back keeps them exactly.
    """
    if not isinstance(row, dict):
        raise FormatError(f"a row must be a dict, got {type(row).__name__}", Location(sample_index=index))
    image_id = row.get("image_id")
    if not rules.check_id(image_id, "'image_id'", rules.raiser(sample_index=index), "image_id"):
        raise AssertionError("unreachable: the report raised")  # narrows the type
    image_id = int(image_id)
    base = Location(sample_index=index, image_id=image_id)
    array, notes = _image_from_row(row.get("image"), base)
    width, height = row.get("width"), row.get("height")
    if width is None or height is None:
        if array is None:
            raise FormatError("row has neither an image nor 'width'/'height'", base)
        height, width = array.shape[:2]
    if not (rules.is_int(width) and rules.is_int(height) and width > 0 and height > 0):
        raise rules.rule_error("schema-type", f"'width' and 'height' must be positive integers, "
                               f"got width={show_value(width)} height={show_value(height)}", base)
    if width * height > rules.DEFAULT_LIMITS.max_image_pixels:
        raise rules.rule_error("image-too-large", f"image is {width}x{height} pixels, beyond the "
                               f"limit {rules.DEFAULT_LIMITS.max_image_pixels}", base)
    size = (int(height), int(width))
    if array is not None and tuple(array.shape[:2]) != size:
        raise ImageError(
            f"image is {array.shape[0]}x{array.shape[1]} (HxW, after EXIF orientation) but the row "
            f"says {size[0]}x{size[1]}", base)
    objects = row.get("objects") or {}
    if not isinstance(objects, dict):
        raise FormatError(f"'objects' must be a dict of lists, got {type(objects).__name__}",
                          Location(sample_index=index, image_id=image_id, json_path="objects"))
    n = len(objects.get("category") or [])
    for key in _OBJECT_FIELDS + ("rle", "keypoints"):
        column = objects.get(key)
        if column is not None and len(column) != n:
            raise FormatError(f"objects[{key!r}] has {len(column)} entries, 'category' has {n}",
                              Location(sample_index=index, image_id=image_id,
                                       json_path=f"objects.{key}"))
    if categories is None:
        values = [int(c) for c in objects.get("category") or []]
        categories = Categories.from_names([str(i) for i in range(max(values, default=-1) + 1)],
                                           first_id=0)
    ids = objects.get("id") or list(range(n))
    labels = np.zeros(n, dtype=np.int64)
    boxes = np.full((n, 4), np.nan, dtype=np.float64)
    areas = np.full(n, np.nan, dtype=np.float64)
    crowd = np.zeros(n, dtype=bool)
    items: list[MaskItem] = []
    segs = objects.get("segmentation")
    rles = objects.get("rle")
    raw_kp = objects.get("keypoints")
    kp_rows: list[np.ndarray] = []
    for i in range(n):
        rules.check_id(ids[i], "object 'id'", rules.raiser(sample_index=index, image_id=image_id),
                       f"objects[{i}].id")
        ann_id = int(ids[i])
        where = Location(sample_index=index, image_id=image_id, annotation_id=ann_id,
                         json_path=f"objects[{i}]")
        value = objects["category"][i]
        try:
            labels[i] = categories.label_of(int(value)) if category_ids else int(value)
        except (FormatError, TypeError, ValueError):
            raise FormatError(f"unknown category {value!r}", where) from None
        if not 0 <= labels[i] < len(categories):
            raise FormatError(f"category {value!r} is outside 0..{len(categories) - 1}", where)
        report = rules.raiser(sample_index=index, image_id=image_id, annotation_id=ann_id)
        bbox = (objects.get("bbox") or [None] * n)[i]
        if bbox is not None:
            checked = rules.check_bbox(list(bbox) if isinstance(bbox, (list, tuple)) else bbox,
                                       report, f"objects[{i}].bbox")
            if checked is None:  # only NaN/Infinity get here: the report raised otherwise
                raise rules.rule_error("json-nonfinite", "'bbox' has NaN or Infinity", where)
            boxes[i] = checked
        area = (objects.get("area") or [None] * n)[i]
        if area is not None:
            if not rules.is_finite_number(area):
                raise rules.rule_error("schema-type", f"'area' must be a finite number, got "
                                       f"{show_value(area)}", where)
            areas[i] = float(area)
        crowd[i] = bool((objects.get("iscrowd") or [0] * n)[i])
        if segs is not None or rles is not None:
            items.append(_mask_item(segs[i] if segs is not None else None,
                                    rles[i] if rles is not None else None, size, where))
        if raw_kp is not None:
            kp_values = rules.check_keypoints(list(raw_kp[i] or []), f"objects[{i}].keypoints",
                                              None, None, report)
            if kp_values is None:  # NaN/Infinity: the JSON rule's error
                raise rules.rule_error("json-nonfinite", "'keypoints' has NaN or Infinity", where)
            kp_rows.append(kp_values.astype(np.float32).reshape(-1, 3))
    masks = Masks(items, size) if (segs is not None or rles is not None) else None
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    missing = np.isnan(xyxy).any(axis=1)
    if missing.any():
        if masks is None:
            raise FormatError("objects have neither 'bbox' nor 'segmentation'", base)
        xyxy[missing] = masks[missing].boxes()
    keypoints = None
    if kp_rows:
        k = max(len(r) for r in kp_rows)
        keypoints = np.zeros((n, k, 3), dtype=np.float32)
        for i, r in enumerate(kp_rows):
            keypoints[i, : len(r)] = r
    instances = Instances(
        image_size=size, boxes=xyxy, labels=labels, masks=masks, keypoints=keypoints,
        iscrowd=crowd, ids=np.asarray([int(v) for v in ids], dtype=np.int64),
        extras={"coco_bbox": boxes, "coco_area": areas},
    )
    meta = SampleMeta(source=None, file_name=file_name, original_size=size,
                      categories=categories, notes=notes)
    if array is None:
        return Sample(instances, image_id, meta)
    return Sample.from_array(array, instances, image_id, meta)


# --- the dataset ----------------------------------------------------------------------------------


def _sidecar_categories(path: str | None) -> Categories | None:
    if path is None:
        return None
    sidecar = Path(path) / CATEGORIES_FILE
    if not sidecar.is_file():
        return None
    from instkit.io.files import load_json

    return Categories.from_coco(load_json(sidecar), file=str(sidecar))


def _sidecar_file_names(path: str | None, rows: int) -> list[str | None] | None:
    """The rows' file names that ``write_hf`` kept beside the dataset, if any."""
    if path is None or not (Path(path) / FILE_NAMES_FILE).is_file():
        return None
    from instkit.io.files import load_json

    sidecar = Path(path) / FILE_NAMES_FILE
    names = load_json(sidecar)
    if not (isinstance(names, list) and len(names) == rows
            and all(n is None or isinstance(n, str) for n in names)):
        raise FormatError(f"must be a list of {rows} file names (one per row) or nulls",
                          Location(file=str(sidecar)))
    return names


def _stored_file_name(path: str) -> str:
    """The ``file_name`` of a row's stored image path: kept with its folders when relative
    (``a/1.jpg`` and ``b/1.jpg`` stay two images), the base name of an absolute path."""
    text = str(path).replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/") or ":" in (parts[0] if parts else "") or ".." in parts or not parts:
        return os.path.basename(text)
    return "/".join(parts)


class HFDataset(Sequence[Sample]):
    """A ``Sequence[Sample]`` over a ``datasets.Dataset`` in the guide's layout; rows are decoded
    on access. ``categories`` is the table of the dataset (see the module notes)."""

    def __init__(self, dataset: Any, categories: Categories | None = None, *,
                 source: str | None = None) -> None:
        datasets = require("datasets", "hf")
        missing = [c for c in ("image_id", "objects") if c not in dataset.column_names]
        if missing:
            raise FormatError(f"dataset lacks the column(s) {missing} of the guide's layout "
                              f"(has {dataset.column_names})", Location(file=source))
        self.source = source
        features = dataset.features
        self._raw = dataset.cast_column("image", datasets.Image(decode=False)) \
            if "image" in dataset.column_names else dataset
        category_feature = _category_feature(features)
        self._file_names = _sidecar_file_names(source, len(dataset))
        sidecar = _sidecar_categories(source)
        self.category_ids = False
        if categories is not None:
            self.categories = categories
        elif sidecar is not None:
            self.categories = sidecar
        elif isinstance(category_feature, datasets.ClassLabel):
            self.categories = Categories.from_names(category_feature.names, first_id=0)
        else:
            values = sorted({int(v) for cats in dataset["objects"] for v in cats["category"]})
            self.categories = Categories(Category(id=v, name=str(v)) for v in values)
            self.category_ids = True

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index an HFDataset with an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} rows")
        index = int(index) % len(self)
        row = self._raw[index]
        image = row.get("image")
        file_name = None
        stored = self._file_names[index] if self._file_names is not None else None
        if stored:
            file_name = _stored_file_name(stored)
        elif isinstance(image, dict) and image.get("path"):
            file_name = _stored_file_name(image["path"])
        sample = hf_row_to_sample(row, self.categories, index=index,
                                  category_ids=self.category_ids, file_name=file_name)
        sample.meta.source = self.source
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def image_bytes(self, index: int) -> tuple[bytes | None, str | None]:
        """The row's encoded image bytes and stored path, without decoding."""
        image = self._raw[int(index)].get("image")
        if not isinstance(image, dict):
            return None, None
        data = image.get("bytes")
        if data is None and image.get("path") and os.path.isfile(image["path"]):
            data = Path(image["path"]).read_bytes()
        return data, image.get("path")

    def __repr__(self) -> str:
        return f"HFDataset({self.source or 'in memory'}: {len(self)} rows, {len(self.categories)} categories)"


def _category_feature(features: Any) -> Any:
    objects = features.get("objects") if features is not None else None
    if isinstance(objects, dict):
        feature = objects.get("category")
        return getattr(feature, "feature", feature)
    inner = getattr(objects, "feature", None)
    if isinstance(inner, dict):
        return inner.get("category")
    return None


def read_hf(path_or_dataset: Any, *, split: str | None = None,
            categories: Categories | None = None) -> HFDataset:
    """A dataset saved with ``save_to_disk`` (a folder) or a ``datasets.Dataset`` -> ``HFDataset``.

    A saved ``DatasetDict`` needs ``split`` unless it has exactly one split.
    """
    datasets = require("datasets", "hf")
    source: str | None = None
    dataset = path_or_dataset
    if isinstance(path_or_dataset, (str, os.PathLike)):
        source = os.fspath(path_or_dataset)
        if not Path(source).is_dir():
            raise FormatError("not a folder written by datasets' save_to_disk", Location(file=source))
        try:
            dataset = datasets.load_from_disk(source)
        except (FileNotFoundError, ValueError) as exc:
            raise FormatError(f"cannot load the dataset: {exc}", Location(file=source)) from None
    if isinstance(dataset, datasets.DatasetDict):
        if split is None:
            if len(dataset) != 1:
                raise FormatError(f"the dataset has splits {list(dataset)}: pass split=...",
                                  Location(file=source))
            split = next(iter(dataset))
        if split not in dataset:
            raise FormatError(f"no split {split!r}; splits are {list(dataset)}", Location(file=source))
        dataset = dataset[split]
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"read_hf needs a folder or a datasets.Dataset, got {type(dataset).__name__}")
    return HFDataset(dataset, categories, source=source)


# --- writing --------------------------------------------------------------------------------------


def hf_features(categories: Categories, *, with_keypoints: bool = False) -> Any:
    """The ``datasets.Features`` that ``write_hf`` writes."""
    datasets = require("datasets", "hf")
    value, lst = datasets.Value, datasets.List
    objects: dict[str, Any] = {
        "id": value("int64"),
        "category": datasets.ClassLabel(names=categories.names),
        "bbox": lst(value("float64"), length=4),
        "area": value("float64"),
        "segmentation": lst(lst(value("float64"))),
        "iscrowd": value("int64"),
        "rle": value("string"),
    }
    if with_keypoints:
        objects["keypoints"] = lst(value("float32"))
    return datasets.Features({
        "image": datasets.Image(),
        "image_id": value("int64"),
        "width": value("int64"),
        "height": value("int64"),
        "objects": datasets.Sequence(objects),
    })


def sample_to_hf_row(sample: Sample, categories: Categories, *, with_keypoints: bool = False,
                     image_bytes: bytes | None = None,
                     counters: dict[str, int] | None = None) -> dict[str, Any]:
    """One ``Sample`` -> a row of ``hf_features``. Masks that are not polygons are written as
    polygons in ``segmentation`` (holes filled, counted in ``counters["rle_as_polygons"]``) with the
    exact RLE in ``rle``."""
    from instkit.io.coco import sample_annotations

    counters = counters if counters is not None else {}
    annotations = sample_annotations(sample, categories)
    inst = sample.instances
    masks = inst.masks
    segmentation: list[list[list[float]]] = []
    rle: list[str] = []
    if masks is not None:
        counts = masks.rle_counts()
        for i, item in enumerate(masks.items):
            if isinstance(item, PolygonMask):
                segmentation.append([part.tolist() for part in item.parts])
                rle.append("")
                continue
            try:
                polygon = masks[i].to_polygons().items[0]
                segmentation.append([part.tolist() for part in polygon.parts])  # type: ignore[union-attr]
            except MaskError:
                segmentation.append([])
                counters["empty_masks"] = counters.get("empty_masks", 0) + 1
            counters["rle_as_polygons"] = counters.get("rle_as_polygons", 0) + 1
            rle.append(counts[i].decode("ascii"))
    else:
        segmentation = [[] for _ in range(len(inst))]
        rle = [""] * len(inst)
    objects: dict[str, list[Any]] = {
        "id": [a["id"] for a in annotations],
        "category": [int(v) for v in inst.labels],
        "bbox": [[float(v) for v in a["bbox"]] for a in annotations],
        "area": [float(a["area"]) for a in annotations],
        "segmentation": segmentation,
        "iscrowd": [int(a["iscrowd"]) for a in annotations],
        "rle": rle,
    }
    if with_keypoints:
        objects["keypoints"] = [a.get("keypoints", []) for a in annotations]
    if image_bytes is None and sample.has_image:
        if sample.image_path is not None and os.path.isfile(sample.image_path) and \
                not sample.meta.notes:
            image_bytes = Path(sample.image_path).read_bytes()
        else:
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(sample.image).save(buffer, format="PNG")
            image_bytes = buffer.getvalue()
    height, width = sample.image_size
    return {
        "image": None if image_bytes is None else {"bytes": image_bytes, "path": sample.meta.file_name},
        "image_id": int(sample.image_id),
        "width": int(width),
        "height": int(height),
        "objects": objects,
    }


def write_hf(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
             categories: Categories | None = None, *, progress: bool = False) -> dict[str, int]:
    """Save samples with ``save_to_disk`` in the guide's layout, plus ``instkit_categories.json``.

    The folder is written beside its final place and renamed in; an existing ``out_dir`` is
    refused. Returns counters of what was approximated (``rle_as_polygons``: masks written as
    polygons in ``segmentation`` with the exact RLE in ``rle``; ``keypoints``: instances whose
    keypoints were kept in ``objects.keypoints``).
    """
    datasets = require("datasets", "hf")
    target = Path(out_dir)
    if target.exists():
        raise InstkitError("output folder already exists; choose a new one", Location(file=str(target)))
    sample_list = samples if isinstance(samples, Sequence) else list(samples)
    if categories is None:
        categories = getattr(samples, "categories", None)
    if categories is None and len(sample_list):
        categories = sample_list[0].meta.categories
    if categories is None:
        raise InstkitError("write_hf needs categories: pass categories=...")
    first = sample_list[0] if len(sample_list) else None
    if first is not None and first.meta.source and same_file(first.meta.source, target):
        raise InstkitError(f"refusing to write over the input {target}", Location(file=str(target)))
    with_keypoints = first is not None and first.instances.keypoints is not None
    counters: dict[str, int] = {"images": 0, "instances": 0}
    features = hf_features(categories, with_keypoints=with_keypoints)
    file_names: list[str | None] = []

    def rows() -> Iterator[dict[str, Any]]:
        iterator: Iterable[Sample] = sample_list
        if progress:
            from tqdm import tqdm

            iterator = tqdm(sample_list, desc="hf rows", unit="img", leave=False)
        for sample in iterator:
            file_names.append(sample.meta.file_name)
            counters["images"] += 1
            counters["instances"] += len(sample.instances)
            if with_keypoints and sample.instances.keypoints is not None:
                counters["keypoints"] = counters.get("keypoints", 0) + len(sample.instances)
            yield sample_to_hf_row(sample, categories, with_keypoints=with_keypoints,
                                   counters=counters)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temporary_dir(target)  # removed below, or by a later write if killed
    try:
        chunks = []
        chunk: list[dict[str, Any]] = []
        for row in rows():
            chunk.append(row)
            if len(chunk) == 256:
                chunks.append(datasets.Dataset.from_list(chunk, features=features))
                chunk = []
        if chunk or not chunks:
            chunks.append(datasets.Dataset.from_list(chunk, features=features))
        dataset = chunks[0] if len(chunks) == 1 else datasets.concatenate_datasets(chunks)
        dataset.save_to_disk(str(staging / "data"))
        del dataset, chunks
        (staging / "data" / CATEGORIES_FILE).write_text(json.dumps(categories.to_coco()))
        (staging / "data" / FILE_NAMES_FILE).write_text(json.dumps(file_names))
        os.replace(staging / "data", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counters


__all__ = ["HFDataset", "hf_features", "hf_row_to_sample", "read_hf", "sample_to_hf_row", "write_hf"]

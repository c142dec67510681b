"""SA-1B (Segment Anything 1B) per-image JSON: ``read_sa1b`` and ``write_sa1b``.

One JSON per image, as the segment-anything README gives it::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [H, W], "counts": "..."} (COCO RLE),
                      "bbox": [x, y, w, h], "area", "predicted_iou", "stability_score",
                      "crop_box": [x, y, w, h], "point_coords": [[x, y]]}]}

The published dataset ships as tar shards (``sa_000000.tar``: ``sa_1.jpg``, ``sa_1.json``, ...).
``read_sa1b`` takes a shard, a folder of shards, a folder of JSON + image files, or one JSON file;
a shard is read in place: its member table is listed once, each JSON is parsed when its sample
is asked for and each image is read from the shard (by offset, no extraction) when its pixels are.

SA-1B has no classes: every mask is read as category 1 ``object``. Kept exactly: masks (RLE),
annotation ids, image ids, the file's bbox and area (``coco_bbox`` / ``coco_area`` extras, as
``read_coco`` keeps them) and ``predicted_iou``, ``stability_score``, ``crop_box``,
``point_coords`` and any other annotation field (the ``coco_fields`` extra, so that COCO output
keeps them too). ``write_sa1b`` writes ``<stem>.json`` beside each image in a folder (masks as
compressed RLE); it cannot store classes (``labels_dropped``: objects of any class but the
first), ``iscrowd`` (``crowd``) or keypoints (``keypoints_dropped``).
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import FormatError, ImageError, InstkitError, Location, MaskError, show_value
from instkit.instances import Instances
from instkit.io.files import load_json, safe_join, staged_folder
from instkit.io.images import copy_image
from instkit.masks import MaskItem, Masks, RLEMask, parse_coco_rle
from instkit.sample import Sample, SampleMeta, _ImageSlot, check_image_pixels

OBJECT = Categories([Category(id=1, name="object")])
_KNOWN = {"id", "segmentation", "bbox", "area"}


# --- images held as encoded bytes (a tar member, a JSON's base64), decoded on first use ------


@dataclass(frozen=True)
class TarMember:
    """An image stored in a tar file at ``offset`` (the member's data), ``size`` bytes long."""

    tar: str
    offset: int
    size: int
    name: str

    def read(self) -> bytes:
        with open(self.tar, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise ImageError(f"tar member {self.name} is cut short", Location(file=self.tar))
        return data

    def where(self) -> str:
        return f"{self.tar}:{self.name}"


@dataclass(frozen=True)
class InlineImage:
    """An image given inline as encoded bytes (LabelMe's ``imageData``)."""

    data: bytes
    name: str

    def read(self) -> bytes:
        return self.data

    def where(self) -> str:
        return self.name


def decode_image(data: bytes, where: str) -> tuple[np.ndarray, list[str]]:
    """Encoded image bytes -> ``(H, W, 3)`` uint8 RGB (``instkit.sample.load_image``: EXIF
    orientation applied, the pixel limit checked before decoding); ``where`` names them."""
    from instkit.sample import load_image

    return load_image(io.BytesIO(data), where=Location(file=where))


class EncodedImageSlot(_ImageSlot):
    """A sample's image slot that decodes ``source`` (a ``TarMember`` / ``InlineImage``) on
    first use; ``source`` stays available so a writer can copy the bytes as they are."""

    __slots__ = ("source", "size", "_array")

    def __init__(self, source: TarMember | InlineImage, size: tuple[int, int]) -> None:
        self.source = source
        self.size = size
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray | None:
        if self._array is None:
            array, _ = decode_image(self.source.read(), self.source.where())
            if tuple(array.shape[:2]) != self.size:
                raise ImageError(
                    f"image is {array.shape[0]}x{array.shape[1]} (HxW) but its annotation says "
                    f"{self.size[0]}x{self.size[1]}", Location(file=self.source.where()))
            self._array = array
        return self._array

    @array.setter
    def array(self, value: np.ndarray | None) -> None:
        self._array = value

    # Pickled (for DataLoader workers) as the encoded source: never decoded to be sent.
    def __getstate__(self) -> tuple[Any, ...]:
        return self.source, self.size, self._array

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.source, self.size, self._array = state


# --- reading ------------------------------------------------------------------------------------


def _is_int(value: Any) -> TypeGuard[int]:
    """An integer that fits int64 (ids are int64 columns)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sa1b_sample(document: Any, *, file: str, image_path: str | None = None,
                image: TarMember | None = None, file_name: str | None = None) -> Sample:
    """One SA-1B document -> ``Sample``; errors name ``file``, the JSON path and the ids."""
    where = Location(file=file)
    if not isinstance(document, dict) or not isinstance(document.get("image"), dict) \
            or not isinstance(document.get("annotations"), list):
        raise FormatError("an SA-1B file must be an object with an 'image' object and an "
                          "'annotations' list", where)
    info = document["image"]
    for key in ("image_id", "width", "height"):
        if not _is_int(info.get(key)) or (key != "image_id" and info[key] <= 0):
            raise FormatError(f"image.{key} must be a {'positive ' if key != 'image_id' else ''}"
                              f"integer, got {show_value(info.get(key))}",
                              Location(file=file, json_path=f"image.{key}"))
    image_id = int(info["image_id"])
    check_image_pixels((int(info["width"]), int(info["height"])),
                       Location(file=file, json_path="image", image_id=image_id))
    size = (int(info["height"]), int(info["width"]))
    name = info.get("file_name")
    if name is not None and not isinstance(name, str):
        raise FormatError(f"image.file_name must be a string, got {show_value(name)}",
                          Location(file=file, json_path="image.file_name", image_id=image_id))
    items: list[MaskItem] = []
    ids: list[int] = []
    bboxes: list[list[float]] = []
    areas: list[float] = []
    fields: list[dict[str, Any]] = []
    for n, ann in enumerate(document["annotations"]):
        path = f"annotations[{n}]"
        at = Location(file=file, json_path=path, image_id=image_id)
        if not isinstance(ann, dict):
            raise FormatError("an annotation must be an object", at)
        ann_id = ann.get("id")
        if not _is_int(ann_id):
            raise FormatError(f"'id' must be an integer, got {show_value(ann_id)}",
                              Location(file=file, json_path=f"{path}.id", image_id=image_id))
        at = Location(file=file, json_path=f"{path}.segmentation", image_id=image_id,
                      annotation_id=ann_id)
        segmentation = ann.get("segmentation")
        if not isinstance(segmentation, dict):
            raise FormatError("'segmentation' must be a COCO RLE object {size, counts}", at)
        try:
            counts, uncompressed, _ = parse_coco_rle(segmentation, size)
        except MaskError as exc:
            inner = exc.location.json_path
            raise type(exc)(exc.message, Location(
                file=file, json_path=f"{path}.segmentation" + (f".{inner}" if inner else ""),
                image_id=image_id, annotation_id=ann_id), code=exc.code) from None
        items.append(RLEMask(counts, uncompressed=uncompressed))
        bbox = ann.get("bbox")
        if bbox is None:
            bboxes.append([math.nan] * 4)
        elif isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox) \
                and bbox[2] >= 0 and bbox[3] >= 0:
            bboxes.append([float(v) for v in bbox])
        else:
            raise FormatError(f"'bbox' must be [x, y, w, h] with w, h >= 0, got {show_value(bbox)}",
                              Location(file=file, json_path=f"{path}.bbox", image_id=image_id,
                                       annotation_id=ann_id))
        area = ann.get("area")
        areas.append(float(area) if _is_number(area) else math.nan)
        ids.append(int(ann_id))
        fields.append({k: v for k, v in ann.items() if k not in _KNOWN})
    n = len(items)
    masks = Masks(items, size)
    file_bbox = np.asarray(bboxes, dtype=np.float64).reshape(n, 4)
    boxes = np.concatenate([file_bbox[:, :2], file_bbox[:, :2] + file_bbox[:, 2:]], axis=1)
    missing = np.isnan(boxes).any(axis=1)
    if missing.any():
        boxes[missing] = masks[np.flatnonzero(missing)].boxes()
    extras: dict[str, Any] = {"coco_bbox": file_bbox,
                              "coco_area": np.asarray(areas, dtype=np.float64)}
    if any(fields):
        extras["coco_fields"] = fields
    instances = Instances(image_size=size, boxes=boxes, masks=masks,
                          labels=np.zeros(n, dtype=np.int64), ids=np.asarray(ids, dtype=np.int64),
                          extras=extras)
    other = {k: v for k, v in info.items() if k not in ("image_id", "width", "height", "file_name")}
    meta = SampleMeta(source=file, file_name=file_name or name, original_size=size,
                      categories=OBJECT, extra={"coco_image": other} if other else {})
    if image is not None:
        return Sample(instances, image_id, meta, None, EncodedImageSlot(image, size))
    return Sample(instances, image_id, meta, image_path)


class SA1BShard(Sequence[Sample]):
    """The samples of one SA-1B tar shard, read in place (see the module docstring)."""

    def __init__(self, tar: str | os.PathLike[str]) -> None:
        self.file = os.fspath(tar)
        self.categories = OBJECT
        try:
            with tarfile.open(self.file, "r:") as archive:
                members = [m for m in archive.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError) as exc:
            raise FormatError(f"not a readable (uncompressed) tar file: {exc}",
                              Location(file=self.file)) from None
        by_stem: dict[str, dict[str, tarfile.TarInfo]] = {}
        for member in members:
            path = PurePosixPath(member.name)
            kind = "json" if path.suffix.lower() == ".json" else "image"
            by_stem.setdefault(str(path.with_suffix("")), {})[kind] = member
        self._entries: list[tuple[TarMember, TarMember | None]] = []
        for stem in sorted(by_stem):
            pair = by_stem[stem]
            if "json" not in pair:
                continue  # an image without annotations is not an SA-1B record
            ann = pair["json"]
            img = pair.get("image")
            self._entries.append((
                TarMember(self.file, ann.offset_data, ann.size, ann.name),
                TarMember(self.file, img.offset_data, img.size, img.name) if img else None))
        self.images_without_json = sum(1 for p in by_stem.values() if "json" not in p)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        ann, image = self._entries[index]
        where = ann.where()
        try:
            document = json.loads(ann.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"invalid JSON: {exc}", Location(file=where)) from None
        if image is None:
            raise FormatError("no image beside this JSON in the shard", Location(file=where))
        return sa1b_sample(document, file=where, image=image,
                           file_name=PurePosixPath(image.name).name)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]


class SA1BDataset(Sequence[Sample]):
    """Several sources (shards, JSON files) seen as one sequence."""

    def __init__(self, parts: Sequence[Sequence[Sample]]) -> None:
        self.categories = OBJECT
        self._parts = list(parts)
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])
        self.read_counts: dict[str, int] = {}
        skipped = sum(getattr(p, "images_without_json", 0) for p in self._parts)
        if skipped:
            self.read_counts["images_without_json"] = skipped

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        index %= len(self)
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._parts[part][index - int(self._starts[part])]

    def __iter__(self) -> Iterator[Sample]:
        for part in self._parts:
            yield from part


class _JsonFiles(Sequence[Sample]):
    def __init__(self, files: list[Path], root: Path) -> None:
        self._files = files
        self._root = root

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        path = self._files[index]
        document = load_json(path)
        name = document.get("image", {}).get("file_name") if isinstance(document, dict) and \
            isinstance(document.get("image"), dict) else None
        image_path = None
        if isinstance(name, str) and name:
            image_path = safe_join(path.parent, name, Location(file=str(path),
                                                               json_path="image.file_name"))
        relative = Path(image_path).relative_to(self._root.resolve()).as_posix() \
            if image_path and self._root.resolve() in Path(image_path).parents else name
        return sa1b_sample(document, file=str(path), image_path=image_path, file_name=relative)


def read_sa1b(path: str | os.PathLike[str]) -> SA1BDataset:
    """Read SA-1B: a tar shard, a folder of shards, a folder of ``*.json`` (images beside them,
    named by ``image.file_name``) or one JSON file. Samples are built on access."""
    target = Path(path)
    if not target.exists():
        raise InstkitError("dataset not found", Location(file=str(target)))
    if target.is_file():
        if target.suffix.lower() == ".tar":
            return SA1BDataset([SA1BShard(target)])
        return SA1BDataset([_JsonFiles([target], target.parent)])
    shards = sorted(target.glob("*.tar"))
    parts: list[Sequence[Sample]] = [SA1BShard(s) for s in shards]
    files = sorted(p for p in target.rglob("*.json") if not p.name.startswith("."))
    if files:
        parts.append(_JsonFiles(files, target))
    if not parts:
        raise FormatError("no SA-1B tar shards or JSON files here", Location(file=str(target)))
    return SA1BDataset(parts)


# --- writing ------------------------------------------------------------------------------------


def write_sa1b(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
               categories: Categories | None = None) -> dict[str, int]:
    """Write ``<stem>.json`` beside each image (``<name>`` keeps the image's folders) in a new
    folder, atomically; returns counts (see the module docstring for what cannot be kept)."""
    from instkit.io.coco import sample_annotations
    from instkit.io.yolo import OutputNames

    with staged_folder(out_dir) as out:
        counts = {"images": 0, "objects": 0, "labels_dropped": 0, "crowd": 0,
                  "keypoints_dropped": 0, "empty_masks_dropped": 0}
        names = OutputNames()
        for sample in samples:
            cats = categories or sample.meta.categories
            if cats is None:
                cats = OBJECT if not len(sample.instances) else None
            if cats is None:
                raise InstkitError("write_sa1b needs categories", Location(image_id=sample.image_id))
            inst = sample.instances
            if inst.masks is None and len(inst):
                raise InstkitError("SA-1B needs masks; this sample has boxes only",
                                   Location(image_id=sample.image_id))
            name = names.claim(sample)
            copy_image(sample, out / name)
            if len(inst):
                counts["labels_dropped"] += len(inst) if len(cats) > 1 else 0
                counts["crowd"] += int(inst.iscrowd.sum())
                if inst.keypoints is not None:
                    counts["keypoints_dropped"] += int((inst.keypoints[:, :, 2] > 0).any(axis=1).sum())
            h, w = sample.image_size
            empty = inst.masks.is_empty() if inst.masks is not None else np.zeros(0, bool)
            rles = inst.masks.rle_counts() if inst.masks is not None else []
            annotations = []
            for i, ann in enumerate(sample_annotations(sample, cats, mask_format="rle")):
                if empty[i]:
                    counts["empty_masks_dropped"] += 1
                    continue
                for key in ("iscrowd", "image_id", "category_id", "keypoints", "num_keypoints",
                            "segmentation"):
                    ann.pop(key, None)
                segmentation = {"size": [int(h), int(w)], "counts": rles[i].decode("ascii")}
                annotations.append({"id": ann.pop("id"), "segmentation": segmentation,
                                    "bbox": ann.pop("bbox"), "area": ann.pop("area"), **ann})
            image = {"image_id": int(sample.image_id), "width": int(w), "height": int(h),
                     "file_name": PurePosixPath(name).name}
            for key, value in sample.meta.extra.get("coco_image", {}).items():
                image.setdefault(key, value)
            label = out / PurePosixPath(name).with_suffix(".json")
            label.write_text(json.dumps({"image": image, "annotations": annotations},
                                        allow_nan=False, separators=(",", ":")))
            counts["images"] += 1
            counts["objects"] += len(annotations)
        return counts


__all__ = ["SA1BDataset", "SA1BShard", "decode_image", "read_sa1b", "sa1b_sample",
           "write_sa1b"]

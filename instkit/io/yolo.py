"""YOLO-seg text labels: ``images/``, ``labels/<stem>.txt`` (one object a line:
``class x1 y1 x2 y2 ...`` normalised to [0, 1]) and ``data.yaml`` (``names``).

What the format cannot hold, and what ``write_yolo`` does (counted in its return value):
multi-part objects keep their largest part (``parts_dropped``); RLE and bitmap masks (crowd
regions) are traced as polygons, holes filled (``rle_as_polygons``); keypoints are left out
(``keypoints_dropped``); annotation ids, ``iscrowd`` and the file's bbox/area are not stored.
``data.yaml`` also records ``coco_category_ids`` so that COCO ids come back on reading.
``<stem>`` keeps the image's folders (``images/a/1.jpg``, ``labels/a/1.txt``), so no two images
merge; two that one name would hold (``a/1.jpg``, ``a/1.png``) are refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import FormatError, InstkitError, Location, MaskError, PathEscapeError
from instkit.geometry import polygon_part_area
from instkit.instances import Instances
from instkit.io.files import staged_folder
from instkit.masks import Masks, PolygonMask
from instkit.sample import Sample, SampleMeta, open_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def save_image(sample: Sample, destination: Path) -> None:
    """Copy the sample's image file byte for byte, or encode its array (PNG/JPEG by suffix)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if sample.image_path and os.path.isfile(sample.image_path) and \
            Path(sample.image_path).suffix.lower() == destination.suffix.lower():
        shutil.copyfile(sample.image_path, destination)
        return
    from PIL import Image

    Image.fromarray(sample.image).save(destination)


def image_name(sample: Sample) -> str:
    """Where a converter writes the sample's image, relative to ``images/``: its ``file_name``
    with its folders kept (``a/1.jpg`` and ``b/1.jpg`` stay two files), ``/`` separated."""
    name = sample.meta.file_name or f"{sample.image_id:012d}.png"
    where = Location(image_id=sample.image_id)
    text = name.replace("\\", "/")
    if PureWindowsPath(name).drive or text.startswith("/"):
        text = text.rsplit("/", 1)[-1]  # an absolute path: its folders are the source's, not ours
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise PathEscapeError(f"file name {name!r} cannot be written inside the output folder", where)
    return "/".join(parts)


class OutputNames:
    """Refuses two images that a layout would store under the same name (``labels/<stem>.txt``,
    ``masks/<stem>/``): one would overwrite the other."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, str]] = {}

    def claim(self, sample: Sample) -> str:
        name = image_name(sample)
        key = str(PurePosixPath(name).with_suffix("")).casefold()
        if key in self._seen:
            other_id, other_name = self._seen[key]
            raise InstkitError(
                f"images {other_name!r} (image_id {other_id}) and {name!r} would be written under "
                f"the same name {key!r}, one over the other; rename one of them",
                Location(image_id=sample.image_id))
        self._seen[key] = (int(sample.image_id), name)
        return name


def image_ids(images: Sequence[Path]) -> list[int]:
    """Image ids of image files read back: their numeric stems (COCO's names) where every stem
    is numeric and no two are equal, else 1..N in path order."""
    stems = [p.stem for p in images]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def write_yolo(samples: Iterable[Sample], out_dir: str | os.PathLike[str],
               categories: Categories | None = None) -> dict[str, int]:
    """Write YOLO-seg labels, images and ``data.yaml``; returns counts of what was approximated.

    The folder is written beside ``out_dir`` and renamed in when complete."""
    with staged_folder(out_dir) as out:
        return _write_yolo(samples, out, categories)


def _write_yolo(samples: Iterable[Sample], out: Path, categories: Categories | None) -> dict[str, int]:
    import yaml

    categories = categories or getattr(samples, "categories", None)
    counts = {"images": 0, "objects": 0, "parts_dropped": 0, "rle_as_polygons": 0,
              "keypoints_dropped": 0, "empty_masks_dropped": 0, "crowd": 0}
    names = OutputNames()
    for sample in samples:
        categories = categories or sample.meta.categories
        counts["images"] += 1
        name = names.claim(sample)
        save_image(sample, out / "images" / name)
        h, w = sample.image_size
        inst = sample.instances
        lines = []
        if inst.keypoints is not None:
            counts["keypoints_dropped"] += int((inst.keypoints[:, :, 2] > 0).any(axis=1).sum())
        counts["crowd"] += int(inst.iscrowd.sum())
        masks = inst.masks
        for i in range(len(inst)):
            if masks is None:
                x0, y0, x1, y1 = inst.boxes[i].tolist()
                part = np.asarray([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)
            else:
                item = masks.items[i]
                if not isinstance(item, PolygonMask):
                    try:
                        item = masks[i].to_polygons().items[0]
                    except MaskError:
                        counts["empty_masks_dropped"] += 1
                        continue
                    counts["rle_as_polygons"] += 1
                parts = list(item.parts)  # type: ignore[union-attr]
                part = max(parts, key=polygon_part_area)
                counts["parts_dropped"] += len(parts) - 1
            xy = part.reshape(-1, 2) / np.asarray([w, h], dtype=np.float64)
            xy = np.clip(xy, 0.0, 1.0)
            lines.append(f"{int(inst.labels[i])} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
            counts["objects"] += 1
        label = out / "labels" / PurePosixPath(name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + ("\n" if lines else ""))
    if categories is None:
        raise InstkitError("write_yolo needs categories")
    data = {"path": ".", "train": "images", "val": "images",
            "names": dict(enumerate(categories.names)),
            "coco_category_ids": categories.ids}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return counts


def read_yolo(root: str | os.PathLike[str]) -> list[Sample]:
    """Read a YOLO-seg folder (``data.yaml``, ``images/``, ``labels/``) as samples.

    Image ids are the numeric file stems where all are numeric and distinct (COCO's names), else
    1..N in path order; annotation ids are 1..M in reading order. Masks are polygons. Images in
    sub-folders of ``images/`` keep their relative path as ``file_name``.
    """
    import yaml

    base = Path(root)
    data_file = base / "data.yaml"
    if not data_file.is_file():
        raise FormatError("no data.yaml", Location(file=str(base)))
    try:
        data = yaml.safe_load(data_file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FormatError(f"data.yaml is not valid YAML: {exc}", Location(file=str(data_file))) from None
    if not isinstance(data, dict):
        raise FormatError("data.yaml must be a mapping with 'names'", Location(file=str(data_file)))
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list):
        raise FormatError("data.yaml 'names' must be a list or a dict", Location(file=str(data_file)))
    ids = data.get("coco_category_ids") or list(range(len(names)))
    categories = Categories(Category(id=int(i), name=str(n)) for i, n in zip(ids, names, strict=True))
    images = sorted(p for p in (base / "images").rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    samples: list[Sample] = []
    next_ann = 1
    for image, image_id in zip(images, image_ids(images), strict=True):
        with open_image(image, Location(file=str(image))) as opened:
            width, height = opened.size
        label = base / "labels" / image.relative_to(base / "images").with_suffix(".txt")
        parts: list[list[np.ndarray]] = []
        labels: list[int] = []
        if label.is_file():
            for n, line in enumerate(label.read_text().splitlines()):
                fields = line.split()
                if not fields:
                    continue
                where = Location(file=f"{label}:{n + 1}", image_id=image_id)
                try:
                    cls, coords = int(fields[0]), np.asarray(fields[1:], dtype=np.float64)
                except ValueError:
                    raise FormatError(f"line is not 'class x1 y1 ...': {line[:60]!r}", where) from None
                if not 0 <= cls < len(categories):
                    raise FormatError(f"class {cls} is outside 0..{len(categories) - 1}", where)
                if coords.size < 6 or coords.size % 2:
                    raise FormatError(f"a polygon needs an even count >= 6 of numbers, got {coords.size}", where)
                xy = coords.reshape(-1, 2) * np.asarray([width, height], dtype=np.float64)
                parts.append([xy.reshape(-1)])
                labels.append(cls)
        masks = Masks.from_polygons(parts, (height, width))
        instances = Instances(image_size=(height, width), masks=masks,
                              labels=np.asarray(labels, dtype=np.int64),
                              ids=np.arange(next_ann, next_ann + len(labels), dtype=np.int64))
        next_ann += len(labels)
        meta = SampleMeta(source=str(base), file_name=image.relative_to(base / "images").as_posix(),
                          original_size=(height, width),
                          categories=categories)
        samples.append(Sample(instances, image_id, meta, str(image)))
    return samples


class YoloDataset(Sequence[Sample]):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._samples = read_yolo(root)
        self.categories = self._samples[0].meta.categories if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: Any) -> Any:
        return self._samples[index]


__all__ = ["YoloDataset", "read_yolo", "save_image", "write_yolo"]

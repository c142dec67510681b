"""The format registry: one place that knows every dataset format instkit reads and writes.

Each format registers a ``Format``: how to recognise it (``detect``), read it (``read``), write it
(``write``, returning counts) and what each count it reports means (``losses``: the count's key ->
a sentence). ``instkit.io.open`` / ``instkit.io.save``, ``instkit convert``, the engine's
``open_dataset`` and the dataset page all go through here, so adding a format is one
``register`` call and dispatch lives in one place.

Readers return a ``Sequence[Sample]`` that carries ``categories`` (a ``CocoDataset``, or a
``SampleList``); ``SampleList.read_counts`` holds what the reader approximated (a LabelMe circle
traced as a polygon...), keyed like the writers' counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instkit.categories import Categories
from instkit.errors import FormatError, InstkitError, Location
from instkit.sample import Sample


class SampleList(list[Sample]):
    """A list of samples with the dataset's ``categories`` and the counts of what reading
    approximated (``read_counts``)."""

    def __init__(self, samples: Iterable[Sample] = (), categories: Categories | None = None,
                 read_counts: dict[str, int] | None = None, format: str | None = None) -> None:
        super().__init__(samples)
        if categories is None:
            for sample in self:
                categories = sample.meta.categories
                break
        self.categories = categories
        self.read_counts = dict(read_counts or {})
        self.format = format


@dataclass(frozen=True)
class Format:
    """One dataset format.

    ``detect(path)`` says whether ``path`` is in this format (cheaply: names and a peek, never a
    full parse). ``read(path, **options)`` returns the samples; ``write(samples, out, categories,
    **options)`` writes atomically and returns counts (``images``, ``objects`` and one key per
    loss). ``losses``: each count key this format reports -> what it means. ``output``:
    ``"file"`` (``out`` is a file, e.g. a JSON) or ``"folder"``. ``read_options`` /
    ``write_options``: the keyword options accepted (others are refused by name).
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[..., Sequence[Sample]]
    write: Callable[..., dict[str, int]]
    losses: dict[str, str] | Callable[[], dict[str, str]] = field(default_factory=dict)
    output: str = "folder"
    read_options: tuple[str, ...] = ()
    write_options: tuple[str, ...] = ()

    def loss_table(self) -> dict[str, str]:
        """``losses``, resolved (a format module may own its table: it is then a callable)."""
        return self.losses() if callable(self.losses) else dict(self.losses)


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add (or replace) a format; detection tries formats in registration order."""
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> dict[str, Format]:
    _ensure_builtins()
    return dict(_FORMATS)


def names() -> tuple[str, ...]:
    _ensure_builtins()
    return tuple(_FORMATS)


def get(name: str) -> Format:
    _ensure_builtins()
    try:
        return _FORMATS[name]
    except KeyError:
        raise InstkitError(f"unknown format {name!r}; known: {', '.join(_FORMATS)}") from None


def detect(path: str | os.PathLike[str]) -> str:
    """The name of the format of ``path``; raises ``FormatError`` naming the formats tried."""
    _ensure_builtins()
    target = Path(path)
    if not target.exists():
        raise InstkitError("dataset not found", Location(file=str(target)))
    for fmt in _FORMATS.values():
        try:
            if fmt.detect(target):
                return fmt.name
        except OSError:
            continue
    raise FormatError(f"cannot tell the format of {target} (tried {', '.join(_FORMATS)}); "
                      "name it (--from FORMAT, format=...)", Location(file=str(target)))


def _check_options(fmt: Format, given: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(k for k, v in given.items() if k not in allowed and v is not None)
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise InstkitError(f"the {fmt.name} {what} does not take {', '.join(unknown)} "
                           f"(it takes: {accepted})")


def open(path: str | os.PathLike[str], format: str | None = None,  # noqa: A001 - the API's name
         **options: Any) -> Sequence[Sample]:
    """Read a dataset in any registered format (detected when ``format`` is None).

    ``options`` go to the format's reader (``images=`` for COCO/LVIS/CVAT image folders,
    ``split=`` for Hugging Face and YOLO...); ``None`` values are ignored, an option the format
    does not take is refused by name."""
    name = format or detect(path)
    fmt = get(name)
    _check_options(fmt, options, fmt.read_options, "reader")
    return fmt.read(Path(path), **{k: v for k, v in options.items() if v is not None})


def save(samples: Iterable[Sample] | Mapping[str, Iterable[Sample]],
         path: str | os.PathLike[str], format: str,  # noqa: A002
         categories: Categories | None = None, **options: Any) -> dict[str, int]:
    """Write samples in ``format`` at ``path`` (a folder, or a file for COCO/LVIS/CVAT);
    returns the writer's counts (``images``, ``objects`` and what was approximated or left out,
    see ``get(format).losses``). YOLO-seg also takes ``{"train": ..., "val": ..., "test": ...}``
    (splits in one folder, listed in data.yaml)."""
    fmt = get(format)
    _check_options(fmt, options, fmt.write_options, "writer")
    if categories is None:
        categories = getattr(samples, "categories", None)
    return fmt.write(samples, Path(path), categories,
                     **{k: v for k, v in options.items() if v is not None})


def loss_notes(counts: dict[str, int], *formats_: str) -> list[tuple[str, int, str]]:
    """``(key, count, sentence)`` for each count, the sentence from the named formats' ``losses``
    (the first that knows the key), else the key itself."""
    table: dict[str, str] = {}
    for name in formats_:
        for key, text in get(name).loss_table().items():
            table.setdefault(key, text)
    return [(key, value, table.get(key, key)) for key, value in counts.items()]


# --- the built-in formats ----------------------------------------------------------------------


def _peek(path: Path, size: int = 1 << 16) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _json_keys_near_start(path: Path, *keys: str, size: int = 1 << 20) -> bool:
    head = _peek(path, size)
    return any(f'"{key}"'.encode() in head for key in keys)


def _first_json(folder: Path) -> Path | None:
    """A JSON file of the folder: the first at its top, else the first found below it."""
    for candidate in sorted(folder.glob("*.json")):
        return candidate
    return next((p for p in folder.rglob("*.json") if not p.name.startswith(".")), None)


def _is_json_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def _detect_coco(path: Path) -> bool:
    return _is_json_file(path)  # the last JSON kind tried: read_coco says what is wrong


def _detect_lvis(path: Path) -> bool:
    return _is_json_file(path) and _json_keys_near_start(
        path, "not_exhaustive_category_ids", "neg_category_ids", "synset")


def _detect_labelme(path: Path) -> bool:
    if path.is_dir():
        found = _first_json(path)
        return found is not None and _detect_labelme(found)
    return _is_json_file(path) and _json_keys_near_start(path, "shapes", size=1 << 16) \
        and _json_keys_near_start(path, "imagePath", "imageHeight", size=1 << 20)


def _detect_sa1b(path: Path) -> bool:
    if path.is_file() and path.suffix.lower() == ".tar":
        return True
    if path.is_dir():
        if any(path.glob("*.tar")):
            return True
        found = _first_json(path)
        return found is not None and _detect_sa1b(found)
    if not _is_json_file(path):
        return False
    head = _peek(path, 4096).lstrip()
    return head.startswith(b'{"image"') or (b'"image"' in head and b'"image_id"' in head
                                             and b'"images"' not in head)


def _detect_yolo(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in (".yaml", ".yml")
    return (path / "data.yaml").is_file()


def _yolo_losses() -> dict[str, str]:
    from instkit.io import yolo

    return {**_COMMON_LOSSES, **getattr(yolo, "COUNT_NOTES", {})}


def _detect_cvat(path: Path) -> bool:
    if path.is_dir():
        path = path / "annotations.xml"
    if not (path.is_file() and path.suffix.lower() == ".xml"):
        return False
    return b"<annotations" in _peek(path, 4096)


def images_folder_for(out: Path, images_dir: Any) -> Path:
    target = Path(images_dir) if images_dir is not None else out.parent / "images"
    if target.is_dir() and any(target.iterdir()):
        raise InstkitError(f"{target} (where the images go, beside OUT) exists and is not empty; "
                           "choose an OUT in a new folder", Location(file=str(target)))
    return target


def distinct_names(samples: Iterable[Sample]) -> Iterable[Sample]:
    """The samples, refusing two with the same ``file_name``: their images would overwrite."""
    seen: dict[str, int] = {}
    for sample in samples:
        name = sample.meta.file_name or f"{sample.image_id:012d}.png"
        key = name.replace("\\", "/").casefold()
        if key in seen:
            raise InstkitError(f"images {seen[key]} and {sample.image_id} have the same file_name "
                               f"{name!r}: one would overwrite the other",
                               Location(image_id=sample.image_id))
        seen[key] = int(sample.image_id)
        yield sample


def images_beside(dataset: Any, file: Path) -> Any:
    """With no image folder named: when the first image is not beside the annotation file but
    is in ``images/`` there (where instkit's COCO, LVIS and CVAT writers put them), use that."""
    folder = file.resolve().parent / "images"
    if len(dataset) and folder.is_dir():
        first = dataset.image_path(0)
        name = dataset[0].meta.file_name
        if first is not None and not os.path.exists(first) and name and (folder / name).is_file():
            dataset.image_root = str(folder)
    return dataset


def _read_coco(path: Path, images: Any = None, strict: bool = True) -> Sequence[Sample]:
    from instkit.io.coco import read_coco

    if images is not None and not Path(images).is_dir():
        raise InstkitError("image folder not found", Location(file=os.fspath(images)))
    dataset = read_coco(path, images, strict=strict)
    return images_beside(dataset, path) if images is None else dataset


def _write_coco(samples: Iterable[Sample], out: Path, categories: Categories | None, *,
                images_dir: Any = None, mask_format: str = "auto") -> dict[str, int]:
    from instkit.io.coco import write_coco

    target_images = images_folder_for(out, images_dir)
    counted = ImageCopier(distinct_names(samples), target_images)
    write_coco(counted, out, categories, mask_format=mask_format,
               **document_fields(samples))
    return {"images": counted.images, "objects": counted.objects,
            "empty_masks_dropped": counted.empty_masks_dropped}


def document_fields(samples: Any) -> dict[str, Any]:
    """``info``, ``licenses`` and other top-level keys of a COCO-like source, for its writer."""
    return {key: getattr(samples, attribute) for key, attribute in (
        ("info", "info"), ("licenses", "licenses"), ("extra_fields", "extra_fields"))
        if getattr(samples, attribute, None) is not None}


class ImageCopier:
    """Passes samples through, counting images and objects (leaving out, and counting, the
    objects whose mask covers no pixel) and writing each image under
    ``images`` (named by its ``file_name``): the file's bytes as they are where it has the
    same format, so no JPEG is encoded again."""

    def __init__(self, samples: Iterable[Sample], images: Path | None = None) -> None:
        self._samples = samples
        self._images = images
        self.images = 0
        self.objects = 0
        self.empty_masks_dropped = 0

    def __iter__(self) -> Any:
        from instkit.io.coco import drop_empty_masks
        from instkit.io.files import safe_join
        from instkit.io.images import copy_image

        for sample in self._samples:
            sample, dropped = drop_empty_masks(sample)  # COCO-like formats cannot hold them
            self.empty_masks_dropped += dropped
            if self._images is not None:
                name = sample.meta.file_name or f"{sample.image_id:012d}.png"
                copy_image(sample, Path(safe_join(self._images, name,
                                                  Location(image_id=sample.image_id))))
            self.images += 1
            self.objects += len(sample.instances)
            yield sample


def _read_hf(path: Path, split: str | None = None) -> Sequence[Sample]:
    from instkit.io.hf import read_hf

    return read_hf(path, split=split)


def _write_hf(samples: Iterable[Sample], out: Path, categories: Categories | None,
              progress: bool = False) -> dict[str, int]:
    from instkit.io.hf import write_hf

    return write_hf(samples, out, categories, progress=progress)


def _read_yolo(path: Path, **options: Any) -> Sequence[Sample]:
    from instkit.io import yolo

    samples = yolo.read_yolo(path, **options)
    return samples if hasattr(samples, "categories") else SampleList(samples, format="yolo")


def _write_yolo(samples: Iterable[Sample], out: Path, categories: Categories | None,
                **options: Any) -> dict[str, int]:
    """``samples`` may also be a mapping split name -> samples (Ultralytics' split layout)."""
    from instkit.io import yolo

    return yolo.write_yolo(samples, out, categories, **options)


def _read_labelschema(path: Path) -> Sequence[Sample]:
    from instkit.io.labelschema import read_labelschema

    return SampleList(read_labelschema(path), format="labelschema")


def _write_labelschema(samples: Iterable[Sample], out: Path,
                       categories: Categories | None) -> dict[str, int]:
    from instkit.io.labelschema import write_labelschema

    return write_labelschema(samples, out, categories)


def _read_pngmasks(path: Path) -> Sequence[Sample]:
    from instkit.io.pngmasks import read_pngmasks

    return SampleList(read_pngmasks(path), format="pngmasks")


def _write_pngmasks(samples: Iterable[Sample], out: Path,
                    categories: Categories | None) -> dict[str, int]:
    from instkit.io.pngmasks import write_pngmasks

    return write_pngmasks(samples, out, categories)


def _lazy(module: str, function: str) -> Callable[..., Any]:
    """``module.function``, imported on first call (keeps ``import instkit`` light)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    call.__name__ = function
    return call


_COMMON_LOSSES = {
    "rle_as_polygons": "masks that were not polygons traced as polygons (holes filled)",
    "keypoints_dropped": "instances whose keypoints the format cannot hold",
    "empty_masks_dropped": "objects with empty masks left out",
    "crowd": "crowd regions written as ordinary objects (iscrowd is not stored)",
}

_RENUMBERED = "categories whose id was not kept (labels are names; ids 1..C in label order)"

_builtins_done = False


def _ensure_builtins() -> None:
    """Register the built-in formats once (on first use, so importing is cheap)."""
    global _builtins_done
    if _builtins_done:
        return
    _builtins_done = True
    for fmt in _builtin_formats():
        _FORMATS.setdefault(fmt.name, fmt)


def _builtin_formats() -> list[Format]:
    # Detection order: folder layouts by their marker files first, then the JSON/XML kinds that
    # a peek at the start tells apart (SA-1B, LabelMe, LVIS), and COCO for any other .json file.
    return [
        Format("yolo", "YOLO-seg text labels and data.yaml (splits)", _detect_yolo, _read_yolo,
               _write_yolo, losses=_yolo_losses, read_options=("split",)),
        Format("hf", "Hugging Face datasets folder (save_to_disk)",
               lambda p: p.is_dir() and ((p / "state.json").is_file()
                                         or (p / "dataset_dict.json").is_file()),
               _read_hf, _write_hf,
               losses={**_COMMON_LOSSES,
                       "rle_as_polygons": "masks that were not polygons written as polygons in "
                                          "`segmentation` (for the guide's code); exact RLE kept "
                                          "in objects.rle",
                       "keypoints": "instances with keypoints kept in objects.keypoints"},
               read_options=("split",), write_options=("progress",)),
        Format("labelschema", "the task spec's per-image label JSON",
               lambda p: p.is_dir() and (p / "labels").is_dir()
               and any((p / "labels").rglob("*.json")),
               _read_labelschema, _write_labelschema, losses=dict(_COMMON_LOSSES)),
        Format("pngmasks", "one binary PNG per instance",
               lambda p: p.is_dir() and (p / "masks").is_dir()
               and (p / "categories.json").is_file(),
               _read_pngmasks, _write_pngmasks, losses=dict(_COMMON_LOSSES)),
        Format("cvat", "CVAT for images 1.1 XML", _detect_cvat,
               _lazy("instkit.io.cvat", "read_cvat"), _lazy("instkit.io.cvat", "write_cvat"),
               output="file",
               losses={**_COMMON_LOSSES,
                       "other_shapes": "points/polylines/skeletons/tags: not objects, kept for "
                                       "CVAT output only (other formats leave them out)",
                       "crowd": "crowd regions written as ordinary masks (iscrowd is not "
                                "stored)",
                       "ellipses_as_polygons": "CVAT ellipses traced as polygons",
                       "image_ids_renumbered": "images whose id became their frame index "
                                               "(<image id> counts frames from 0)",
                       "category_ids_renumbered": _RENUMBERED},
               read_options=("images",), write_options=("images_dir",)),
        Format("sa1b", "SA-1B: per-image JSON with RLE masks (folders or tar shards)",
               _detect_sa1b, _lazy("instkit.io.sa1b", "read_sa1b"),
               _lazy("instkit.io.sa1b", "write_sa1b"),
               losses={**_COMMON_LOSSES,
                       "labels_dropped": "objects whose class is not kept (SA-1B has no classes)",
                       "crowd": "crowd regions written as ordinary masks (iscrowd is not stored)",
                       "images_without_json": "images in a shard without a JSON left out"}),
        Format("labelme", "LabelMe: one JSON per image with shapes",
               _detect_labelme, _lazy("instkit.io.labelme", "read_labelme"),
               _lazy("instkit.io.labelme", "write_labelme"),
               losses={**_COMMON_LOSSES,
                       "circles_as_polygons": "LabelMe circles traced as polygons",
                       "other_shapes": "point/line (and __ignore__) shapes: not objects, kept "
                                       "for LabelMe output only (other formats leave them out)",
                       "crowd": "crowd regions written as ordinary shapes (iscrowd is not "
                                "stored)",
                       "files_skipped": "JSON files without 'shapes' (not LabelMe) left out",
                       "keypoints_visibility_lost": "keypoints marked not visible (v=1) written "
                                                    "as ordinary points (LabelMe has no "
                                                    "visibility: v=2 on reading)",
                       "ignore_shapes": "shapes labelled __ignore__/_background_ kept beside "
                                        "the objects (not objects)",
                       "category_ids_renumbered": _RENUMBERED}),
        Format("lvis", "LVIS: COCO plus neg/not-exhaustive category ids and frequency tags",
               _detect_lvis, _lazy("instkit.io.lvis", "read_lvis"),
               _lazy("instkit.io.lvis", "save_lvis"), output="file",
               losses={"crowd": "crowd regions written as ordinary objects (LVIS has no crowd)",
                       "frequency_computed": "categories whose frequency tag (r/c/f) was "
                                             "computed from image counts",
                       "image_lists_added": "images given empty neg/not-exhaustive lists"},
               read_options=("images", "strict"), write_options=("images_dir", "mask_format")),
        Format("coco", "COCO instances JSON", _detect_coco, _read_coco, _write_coco,
               output="file", read_options=("images", "strict"),
               write_options=("images_dir", "mask_format")),
    ]


__all__ = ["Format", "SampleList", "detect", "formats", "get", "loss_notes", "names", "open",
           "register", "save"]

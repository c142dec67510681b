"""Writing instkit's shard format (``instkit convert --to shards --shard-size N``).

A shard is a tar file; each sample is two members with the same key, the image file's bytes
as they were (``000003.jpg``; images held only in memory are written as PNG) and its row
``000003.json`` = ``{"image": <COCO image entry>, "annotations": [<COCO annotations>]}``.
``manifest.json`` holds the category table, per-shard counts, bytes and sha256, and the totals.

Writes are atomic at two levels: each tar is written to a temporary name and renamed when
complete, and the whole output folder is staged beside its target and renamed once the manifest
is written, so a killed conversion leaves no folder that looks finished. Tar headers carry no
time, owner or mode of the machine, so the same input gives byte-identical shards whichever
engine and however many workers wrote them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from instkit.errors import InstkitError, Location
from instkit.shards.dataset import FORMAT, IMAGE_EXTENSIONS, MANIFEST, VERSION


class _Hashing:
    """A write-only file wrapper that counts and hashes what goes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.handle.write(data)


@dataclass
class Record:
    """One sample to write: its row and its image (bytes and extension, ``".jpg"``)."""

    row: dict[str, Any]
    image: bytes
    extension: str


class TarWriter:
    """Appends records to one tar, atomically (``close`` renames it into place)."""

    def __init__(self, path: Path) -> None:
        from instkit.io.files import atomic_write

        self.path = path
        self._stack = ExitStack()
        self._hashing = _Hashing(self._stack.enter_context(atomic_write(path, "wb")))
        self._tar = tarfile.open(fileobj=self._hashing, mode="w|",  # type: ignore[call-overload]
                                 format=tarfile.USTAR_FORMAT)
        self.samples = 0
        self.annotations = 0

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, record: Record) -> None:
        key = f"{self.samples:06d}"
        row = json.dumps(record.row, separators=(",", ":"), allow_nan=False).encode()
        self._add(key + record.extension, record.image)
        self._add(key + ".json", row)
        self.samples += 1
        self.annotations += len(record.row["annotations"])

    def close(self) -> dict[str, Any]:
        """Finish the tar; its manifest entry (path relative to the output folder)."""
        self._tar.close()
        self._stack.close()
        return {"path": self.path.name, "samples": self.samples, "annotations": self.annotations,
                "bytes": self._hashing.size, "sha256": self._hashing.sha256.hexdigest()}

    def abort(self) -> None:
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def write_tar(path: Path, records: Iterable[Record]) -> dict[str, Any]:
    writer = TarWriter(path)
    try:
        for record in records:
            writer.add(record)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _extension(name: str | None) -> str | None:
    if not name:
        return None
    ext = os.path.splitext(name)[1].lower()
    return ext if ext in IMAGE_EXTENSIONS else None


def image_entry(sample: Any) -> dict[str, Any]:
    """The COCO image entry of a sample (as ``write_coco`` writes it)."""
    height, width = sample.image_size
    entry: dict[str, Any] = {"id": int(sample.image_id),
                             "file_name": sample.meta.file_name or f"{sample.image_id:012d}.png",
                             "width": int(width), "height": int(height)}
    for key, value in sample.meta.extra.get("coco_image", {}).items():
        entry.setdefault(key, value)
    return entry


def sample_record(sample: Any, categories: Any) -> Record:
    """A ``Sample`` as a record: the image file's own bytes when it has one (no re-encoding),
    else the image encoded as PNG."""
    from instkit.io.coco import sample_annotations

    row = {"image": image_entry(sample),
           "annotations": sample_annotations(sample, categories, mask_format="auto")}
    from instkit.io.sa1b import EncodedImageSlot

    slot = sample._slot
    if isinstance(slot, EncodedImageSlot):  # bytes from a tar / inline: copied, not decoded
        ext = _extension(slot.source.name)
        if ext:
            return Record(row, slot.source.read(), ext)
    ext = _extension(sample.image_path)
    if sample.image_path and ext and not sample.image_loaded and os.path.isfile(sample.image_path):
        with open(sample.image_path, "rb") as handle:
            return Record(row, handle.read(), ext)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(sample.image).save(buffer, format="PNG")
    return Record(row, buffer.getvalue(), ".png")


# --- conversion tasks (run by instkit.shards.engine) --------------------------------------------


@functools.lru_cache(maxsize=2)
def _opened(opener: Callable[[], Sequence[Any]]) -> Sequence[Any]:
    """The source, opened once per worker process (tasks of one job share the opener)."""
    return opener()


@dataclass(frozen=True)
class RangeTask:
    """Write samples ``start:stop`` of the source that ``opener()`` opens as ``path``."""

    opener: Callable[[], Sequence[Any]]
    start: int
    stop: int
    path: str
    categories: list[dict[str, Any]]


def run_range_task(task: RangeTask) -> dict[str, Any]:
    return _write_range(_opened(task.opener), task)


def _write_range(samples: Sequence[Any], task: RangeTask) -> dict[str, Any]:
    from instkit.categories import Categories

    categories = Categories.from_coco(task.categories)
    entry = write_tar(Path(task.path), (sample_record(samples[i], categories)
                                        for i in range(task.start, task.stop)))
    entry["image_ids"] = [int(samples[i].image_id) for i in range(task.start, task.stop)]
    return entry


def write_manifest(folder: Path, entries: list[dict[str, Any]], categories: list[dict[str, Any]],
                   *, source: dict[str, Any] | None = None,
                   info: dict[str, Any] | None = None) -> dict[str, Any]:
    from instkit.io.files import atomic_write

    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "categories": categories,
        "samples": sum(e["samples"] for e in entries),
        "annotations": sum(e["annotations"] for e in entries),
        "shards": entries,
    }
    if source is not None:
        manifest["source"] = source
    if info is not None:
        manifest["info"] = info
    with atomic_write(folder / MANIFEST) as handle:
        json.dump(manifest, handle, indent=1, allow_nan=False)
    return manifest


def _check_unique(entries: list[dict[str, Any]], key: str, what: str) -> None:
    """Ids must be unique across every shard (the reduce of a parallel write)."""
    seen: dict[int, str] = {}
    for entry in entries:
        for value in entry.pop(key):
            if value in seen:
                raise InstkitError(f"{what} {value} is in shard {seen[value]} and again in "
                                   f"{entry['path']}", Location(image_id=value if key ==
                                                                "image_ids" else None))
            seen[value] = entry["path"]


def write_shards(samples: Sequence[Any], out: str | os.PathLike[str], categories: Any, *,
                 shard_size: int, opener: Callable[[], Sequence[Any]] | None = None,
                 engine: str = "local", workers: int | None = 1, address: str | None = None,
                 source: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Write a sequence of ``Sample``s as instkit shards of ``shard_size`` samples in the new
    folder ``out``; returns the manifest. With more than one worker (or ``engine="ray"``) each
    shard is written by its own task, which opens the source with ``opener()`` (a picklable
    callable, e.g. ``functools.partial(read_coco, path)``); the shards are the same bytes."""
    from instkit.io.files import staged_folder
    from instkit.shards.engine import run_tasks

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    table = categories.to_coco() if hasattr(categories, "to_coco") else list(categories)
    total = len(samples)
    bounds = [(start, min(start + shard_size, total)) for start in range(0, total, shard_size)]
    with staged_folder(out) as folder:
        names = [folder / f"shard-{k:06d}.tar" for k in range(len(bounds))]
        parallel = engine == "ray" or (workers or 2) > 1
        if parallel and opener is None:
            raise ValueError("a parallel write needs opener= (how a worker opens the source)")
        tasks = [RangeTask(opener or _no_opener, start, stop, str(name), table)
                 for (start, stop), name in zip(bounds, names)]
        if parallel:
            entries = run_tasks(run_range_task, tasks, engine=engine, workers=workers,
                                address=address, progress=progress)
        else:
            entries = [_write_range(samples, task) for task in tasks]
        _check_unique(entries, "image_ids", "image id")
        manifest = write_manifest(folder, entries, table, source=source)
    return manifest


def _no_opener() -> Sequence[Any]:
    raise RuntimeError("no opener given")


def iter_records(rows: Iterable[tuple[dict[str, Any], str | None, bytes]]) -> Iterator[Record]:
    for row, name, image in rows:
        yield Record(row, image, _extension(name) or ".png")


__all__ = ["Record", "TarWriter", "image_entry", "sample_record", "write_manifest",
           "write_shards", "write_tar"]

"""Sharded datasets: what a set of shards is, and how one shard is read.

Three kinds of shard set, all read one shard at a time:

- ``"instkit"``: a folder written by ``instkit convert --to shards`` (``write_shards``): a
  ``manifest.json`` (categories, and per shard its path, sample and annotation counts, bytes,
  sha256) and tar files. Each sample is two tar members with the same key: the image file's
  bytes as they were (``000003.jpg``) and a row ``000003.json`` = ``{"image": <COCO image
  entry>, "annotations": [<COCO annotations>]}``.
- ``"tar"``: SA-1B-style tar shards of ``<key>.jpg`` + ``<key>.json`` with the same row layout
  (SA-1B's per-image JSON is ``{"image": ..., "annotations": [...]}``), read in COCO's terms by
  ``coco_row``: ``image.image_id`` is the image id, and the class-agnostic masks are category 1,
  ``"object"`` (as ``instkit.io.sa1b`` reads them).
- ``"coco"``: several COCO JSON files, each holding its images and their annotations; images
  are resolved beside each file (or under ``image_root``).

A shard becomes one COCO document (``shard_document``): the rulebook, ``CocoDataset`` and the
statistics then work on it unchanged, and ``Origin`` maps its JSON paths back to the tar member
a row came from. Shards are local paths or, with ``fsspec`` installed (the ``shards`` extra),
any fsspec URL.
"""

from __future__ import annotations

import bisect
import glob
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from instkit.errors import FormatError, InstkitError, Location, require

MANIFEST = "manifest.json"
FORMAT = "instkit-shards"
VERSION = 1
SA1B_CATEGORY = {"id": 1, "name": "object"}  # SA-1B's masks are class-agnostic
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ShardError(InstkitError, ValueError):
    """A shard set or a shard that cannot be read as one (names the shard and member)."""


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def open_binary(path: str) -> IO[bytes]:
    """A local file, or any fsspec URL (``s3://``, ``gs://``, ``memory://``...), opened for reading."""
    if is_url(path):
        fsspec = require("fsspec", "shards")
        return fsspec.open(path, "rb").open()
    return open(path.removeprefix("file://"), "rb")


def join(base: str, relative: str) -> str:
    """``relative`` resolved against the folder ``base`` (a path or a URL)."""
    if is_url(base) or is_url(relative):
        return relative if is_url(relative) else posixpath.join(base, relative)
    return os.path.join(base, relative)


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its path or URL, and its counts where a manifest gives them."""

    path: str
    samples: int | None = None
    annotations: int | None = None


@dataclass
class ShardSet:
    """An ordered set of shards of one ``kind`` (``"instkit"``, ``"tar"`` or ``"coco"``).

    ``categories``: the manifest's COCO category table (``None`` for the other kinds: each shard
    brings its own, and ``validate`` reports tables that disagree). ``root``: the manifest or the
    folder, for messages. ``image_root``: where the images of ``"coco"`` shards are (default:
    beside each file)."""

    kind: str
    shards: list[ShardInfo]
    root: str
    categories: list[dict[str, Any]] | None = None
    manifest: dict[str, Any] | None = None
    image_root: str | None = None

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def num_samples(self) -> int | None:
        counts = [s.samples for s in self.shards]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def looks_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a shard set (manifest, folder of tars, folder of COCO files, glob)
    rather than one file or a folder of another format."""
    text = os.fspath(path)
    if glob.has_magic(text):
        return True
    if os.path.basename(text) == MANIFEST:
        return True
    if is_url(text):
        return True
    p = Path(text)
    if not p.is_dir():
        return False
    if (p / MANIFEST).is_file():
        return True
    names = sorted(e.name for e in p.iterdir() if e.is_file() and not e.name.startswith("."))
    if any(n.endswith(".tar") for n in names):
        return True
    # Two or more COCO files and nothing else (LabelMe, HF and others have other files, or
    # JSON without a top-level "images" list near the start)
    if len(names) < 2 or not all(n.endswith(".json") for n in names):
        return False
    with open(p / names[0], "rb") as handle:
        head = handle.read(1 << 16)
    return b'"images"' in head


def read_manifest(path: str) -> ShardSet:
    try:
        with open_binary(path) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ShardError("no manifest here (name tar shards with a glob: 's3://bucket/sa1b/*.tar')",
                         Location(file=path)) from None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ShardError(f"the manifest is not valid JSON: {exc}", Location(file=path)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"not an instkit shard manifest (\"format\": {FORMAT!r} expected)",
                         Location(file=path, json_path="format"))
    if manifest.get("version") != VERSION:
        raise ShardError(f"shard manifest version {manifest.get('version')!r}; this instkit reads "
                         f"version {VERSION}", Location(file=path, json_path="version"))
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("path"), str) for s in shards):
        raise ShardError("'shards' must be a list of objects with a 'path'",
                         Location(file=path, json_path="shards"))
    categories = manifest.get("categories")
    if not isinstance(categories, list):
        raise ShardError("'categories' must be a list", Location(file=path, json_path="categories"))
    base = posixpath.dirname(path) if is_url(path) else os.path.dirname(path)
    infos = []
    for index, entry in enumerate(shards):
        if os.path.isabs(entry["path"]) or ".." in Path(entry["path"]).parts:
            raise ShardError("a shard path must be relative to the manifest, inside its folder",
                             Location(file=path, json_path=f"shards[{index}].path"))
        infos.append(ShardInfo(join(base, entry["path"]), entry.get("samples"),
                               entry.get("annotations")))
    return ShardSet("instkit", infos, path, categories, manifest)


def open_shards(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                image_root: str | os.PathLike[str] | None = None) -> ShardSet:
    """The shard set at ``source``: a folder or URL holding ``manifest.json`` (or the manifest
    itself), a folder of ``.tar`` shards, a folder of COCO ``.json`` files, a glob pattern, or a
    list of shard paths (all ``.tar`` or all ``.json``). Shards are ordered by name."""
    root_image = os.fspath(image_root) if image_root is not None else None
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if is_url(text) and glob.has_magic(text):
            fsspec = require("fsspec", "shards")
            found = sorted(f.fs.unstrip_protocol(f.path) for f in fsspec.open_files(text))
            if not found:
                raise ShardError("no shards match", Location(file=text))
            shards = open_shards(found, image_root=image_root)
            shards.root = text
            return shards
        if text.endswith(MANIFEST) or (is_url(text) and not text.endswith((".tar", ".json"))):
            return read_manifest(text if text.endswith(MANIFEST) else join(text, MANIFEST))
        if os.path.isdir(text):
            if os.path.isfile(os.path.join(text, MANIFEST)):
                return read_manifest(os.path.join(text, MANIFEST))
            paths = sorted(os.path.join(text, n) for n in os.listdir(text)
                           if n.endswith((".tar", ".json")) and not n.startswith("."))
        elif glob.has_magic(text):
            paths = sorted(glob.glob(text))
        else:
            paths = [text]
        root = text
    else:
        paths = [os.fspath(p) for p in source]
        root = os.path.commonpath(paths) if paths and not any(map(is_url, paths)) else ""
    if not paths:
        raise ShardError("no shards (.tar or .json files) found", Location(file=root or None))
    tars = [p.endswith(".tar") for p in paths]
    if any(tars) and not all(tars):
        raise ShardError("a shard set is all .tar or all COCO .json files, not a mix",
                         Location(file=root or None))
    for p in paths:
        if not is_url(p) and not os.path.isfile(p):
            raise ShardError("shard not found", Location(file=p))
    kind = "tar" if all(tars) else "coco"
    return ShardSet(kind, [ShardInfo(p) for p in paths], root, image_root=root_image)


# --- reading one shard ---------------------------------------------------------------------------


def member_key(name: str) -> tuple[str, str]:
    """``("dir/000003", ".jpg")`` for ``dir/000003.jpg``: the key is the name up to the first
    dot of its last part (webdataset's convention), the rest is the extension."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (dot + ext).lower()


@dataclass
class TarRecord:
    """One sample of a tar shard: its key and its members (extension -> (member name, bytes))."""

    key: str
    members: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def row_member(self) -> tuple[str, bytes] | None:
        return self.members.get(".json")

    def image_member(self) -> tuple[str, bytes] | None:
        for ext in IMAGE_EXTENSIONS:
            if ext in self.members:
                return self.members[ext]
        return None


def iter_tar(path: str, handle: IO[bytes] | None = None) -> Iterator[TarRecord]:
    """The samples of a tar shard in order, read as a stream (works on any file object, also a
    non-seekable one from fsspec). Members with the same key must be consecutive, as webdataset
    and SA-1B write them; a key seen again later is an error, not a silent second sample."""
    owned = handle is None
    stream = open_binary(path) if handle is None else handle
    seen: set[str] = set()
    current: TarRecord | None = None
    try:
        try:
            archive = tarfile.open(fileobj=stream, mode="r|*")
        except tarfile.TarError as exc:
            raise ShardError(f"not a readable tar file: {exc}", Location(file=path)) from None
        with archive:
            try:
                for info in archive:
                    if not info.isfile():
                        continue
                    key, ext = member_key(info.name)
                    if current is None or key != current.key:
                        if current is not None:
                            yield current
                        if key in seen:
                            raise ShardError(f"tar member {info.name!r}: key {key!r} appears again "
                                             "after other samples (a sample's members must be "
                                             "consecutive)", Location(file=path))
                        seen.add(key)
                        current = TarRecord(key)
                    extracted = archive.extractfile(info)
                    data = extracted.read() if extracted is not None else b""
                    if ext in current.members:
                        raise ShardError(f"tar member {info.name!r} repeats {current.members[ext][0]!r}",
                                         Location(file=path))
                    current.members[ext] = (info.name, data)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ShardError(f"the tar file is truncated or corrupt: {exc}",
                                 Location(file=path)) from None
        if current is not None:
            yield current
    finally:
        if owned:
            stream.close()


def parse_row(data: bytes, where: str) -> dict[str, Any]:
    """A per-sample row (``{"image": {...}, "annotations": [...]}``, the layout of SA-1B's
    per-image JSON and of instkit's shards), with NaN/Infinity kept for the rulebook to report."""
    try:
        row = json.loads(data, parse_constant=float)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"the row is not valid JSON: {exc}", Location(file=where)) from None
    if not isinstance(row, dict) or not isinstance(row.get("image"), dict):
        raise FormatError("a row must be a JSON object with an 'image' object and an "
                          "'annotations' list", Location(file=where, json_path="image"))
    annotations = row.get("annotations", [])
    if not isinstance(annotations, list):
        raise FormatError("'annotations' must be a list", Location(file=where, json_path="annotations"))
    return row


@dataclass
class Origin:
    """Where the rows of an assembled shard document came from: ``images[i]`` is the row in tar
    member ``row_members[i]``; ``annotations[k]`` is ``annotations[k - ann_start[i]]`` of the
    last row ``i`` with ``ann_start[i] <= k``."""

    shard: str
    row_members: list[str] = field(default_factory=list)
    ann_start: list[int] = field(default_factory=list)
    num_annotations: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (code, message, member)
    image_members: dict[int, str] = field(default_factory=dict)  # document index -> image member

    _PATH = re.compile(r"\b(images|annotations)\[(\d+)\]")

    def locate(self, json_path: str | None) -> tuple[str, str | None]:
        """``(file, json_path)`` inside the member a document JSON path points into."""
        if not json_path or not self.row_members:
            return self.shard, json_path
        match = self._PATH.match(json_path)
        if match is None:
            return self.shard, json_path
        index = int(match.group(2))
        rest = json_path[match.end():]
        if match.group(1) == "images":
            if index >= len(self.row_members):
                return self.shard, json_path
            return f"{self.shard}/{self.row_members[index]}", "image" + rest
        if index >= self.num_annotations:
            return self.shard, json_path
        row = bisect.bisect_right(self.ann_start, index) - 1
        return (f"{self.shard}/{self.row_members[row]}",
                f"annotations[{index - self.ann_start[row]}]{rest}")

    def rewrite(self, message: str) -> str:
        """A message's document paths (``first at annotations[12]``) as member paths."""
        if not self.row_members:
            return message

        def one(match: re.Match[str]) -> str:
            file, path = self.locate(match.group(0))
            return f"{path} of {file.rsplit('/', 1)[-1]}" if file != self.shard else match.group(0)

        return self._PATH.sub(one, message)


@dataclass
class ShardDocument:
    """One shard as a COCO document, with where its rows came from (tar shards) and the image
    bytes of tar samples when they were asked for."""

    document: dict[str, Any]
    origin: Origin
    raw: bytes | None = None  # the file's bytes (COCO shards): the rulebook locates NaN with them
    images: dict[int, bytes] = field(default_factory=dict)  # document image index -> bytes


def coco_row(row: dict[str, Any]) -> dict[str, Any]:
    """An SA-1B row in COCO's terms: ``image.image_id`` is the image's ``id``; annotations get
    the ``image_id`` and, being class-agnostic, category 1 (``"object"``) where they lack them.
    A row already in COCO's terms is returned as it is."""
    image = row["image"]
    if "id" not in image and "image_id" in image:
        image = {"id": image["image_id"], **{k: v for k, v in image.items() if k != "image_id"}}
        row = {**row, "image": image}
    for annotation in row.get("annotations") or []:
        if isinstance(annotation, dict):
            annotation.setdefault("image_id", image.get("id"))
            annotation.setdefault("category_id", SA1B_CATEGORY["id"])
    return row


def shard_document(shards: ShardSet, index: int, *, keep_images: bool = False,
                   categories: list[dict[str, Any]] | None = None) -> ShardDocument:
    """Shard ``index`` as one COCO document. A tar row that is not a row, a row without an
    image member and an image without a row are recorded in ``origin.problems`` (code, message,
    member), never dropped silently. ``keep_images``: keep tar samples' image bytes."""
    from instkit.validate.rules import load_document

    info = shards.shards[index]
    if shards.kind == "coco":
        path = info.path
        if is_url(path):
            with open_binary(path) as handle:
                raw = handle.read()
            document = json.loads(raw, parse_constant=float)
        else:
            document = load_document(path)
            with open(path, "rb") as handle:
                raw = handle.read()
        return ShardDocument(document, Origin(path), raw=raw)
    table = categories if categories is not None else shards.categories
    if table is None:
        table = [dict(SA1B_CATEGORY)]
    images: list[Any] = []
    annotations: list[Any] = []
    origin = Origin(info.path)
    kept: dict[int, bytes] = {}
    nonfinite = False  # whether any row may hold NaN/Infinity (else the walk need not look)
    for record in iter_tar(info.path):
        row_member = record.row_member()
        image_member = record.image_member()
        if row_member is None:
            names = ", ".join(name for name, _ in record.members.values())
            origin.problems.append(("schema-missing", f"sample {record.key!r} has no .json row "
                                    f"(members: {names})", names.split(", ")[0]))
            continue
        name, data = row_member
        nonfinite = nonfinite or b"NaN" in data or b"Infinity" in data
        try:
            row = parse_row(data, f"{info.path}/{name}")
        except FormatError as exc:
            code = "json-parse" if "not valid JSON" in exc.message else "schema-type"
            origin.problems.append((code, exc.message, name))
            continue
        if shards.kind == "tar":
            row = coco_row(row)
        position = len(images)
        images.append(row["image"])
        origin.row_members.append(name)
        origin.ann_start.append(len(annotations))
        annotations.extend(row.get("annotations") or [])
        origin.num_annotations = len(annotations)
        if image_member is None:
            origin.problems.append(("image-missing", f"sample {record.key!r} has no image member",
                                    name))
        else:
            origin.image_members[position] = image_member[0]
            if keep_images:
                kept[position] = image_member[1]
    document = {"images": images, "annotations": annotations, "categories": table}
    # raw=b"": the rulebook's token test finds nothing and skips its walk for NaN/Infinity
    return ShardDocument(document, origin, raw=None if nonfinite else b"", images=kept)


__all__ = ["FORMAT", "MANIFEST", "Origin", "ShardDocument", "ShardError", "ShardInfo", "ShardSet",
           "TarRecord", "is_url", "iter_tar", "join", "looks_sharded",
           "open_binary", "open_shards", "parse_row", "read_manifest", "shard_document"]

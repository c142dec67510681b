"""``validate``, ``stats`` and ``convert`` over a shard set: map per shard, then reduce.

The map runs on any engine (``instkit.shards.engine``) and returns one part per shard, in shard
order; the reduce is plain Python here, so a run with 1 process, N processes or Ray gives the
same report, statistics and files. What needs the whole dataset is done in the reduce:

- duplicate image and annotation ids across shards (each shard's walk finds its own; the reduce
  reports an id again only where an earlier shard holds it, so the counts are those of one
  merged file),
- category tables that disagree between shards (``shard-categories-mismatch``), and
  ``category-unused`` (a category unused in one shard may be used in another),
- the manifest's counts against the shards (``shard-manifest-mismatch``).

Each shard holds its images and their annotations: an annotation that points at an image in
another shard is ``unknown-image`` (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from instkit.errors import InstkitError, Location
from instkit.shards.dataset import (
    SA1B_CATEGORY,
    Origin,
    ShardSet,
    coco_row,
    iter_tar,
    parse_row,
    shard_document,
)
from instkit.validate.rules import RULES, Finding, Limits, is_int

# --- validate -----------------------------------------------------------------------------------


@dataclass
class ValidatePart:
    """What one shard's walk found, and what the reduce needs from it."""

    index: int
    file: str
    findings: list[Finding]
    images: int
    annotations: int
    categories: Any
    used_categories: set[int]
    image_ids: np.ndarray  # first occurrences in the shard, with their document indices
    image_index: np.ndarray
    annotation_ids: np.ndarray
    annotation_index: np.ndarray
    annotation_image: np.ndarray  # the image_id of each (first) annotation; see _NO_ID
    origin: Origin


_NO_ID = np.iinfo(np.int64).min  # an annotation whose image_id is not an int64


def _int64(value: Any) -> TypeGuard[int]:
    return is_int(value) and -(2**63) <= value < 2**63


def _first_ids(entries: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct integer ids of a JSON list's entries, with each one's first index and
    its ``image_id`` (annotations)."""
    ids, where, owners = [], [], []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        value = entry.get("id") if isinstance(entry, dict) else None
        if _int64(value):
            ids.append(int(value))
            where.append(index)
            owner = entry.get("image_id")
            owners.append(int(owner) if _int64(owner) and owner != _NO_ID else _NO_ID)
    array = np.asarray(ids, dtype=np.int64)
    unique, first = np.unique(array, return_index=True)
    return (unique, np.asarray(where, dtype=np.int64)[first],
            np.asarray(owners, dtype=np.int64)[first])


def _relocate(finding: Finding, origin: Origin) -> Finding:
    if not origin.row_members:
        return finding
    file, path = origin.locate(finding.location.json_path)
    where = Location(file=file, json_path=path, image_id=finding.location.image_id,
                     annotation_id=finding.location.annotation_id)
    return Finding(finding.code, finding.severity, origin.rewrite(finding.message), where)


def _image_size_findings(shard: Any, origin: Origin, data: dict[int, bytes]) -> list[Finding]:
    """``image-unreadable`` / ``image-size-mismatch`` of tar samples' image bytes."""
    from PIL import UnidentifiedImageError

    from instkit.sample import ImageTooLargeError, open_image

    out = []
    images = shard.document["images"]
    for position, blob in data.items():
        entry = images[position]
        member = origin.image_members[position]
        where = Location(file=f"{origin.shard}/{member}", image_id=entry.get("id")
                         if is_int(entry.get("id")) else None)
        try:
            with open_image(io.BytesIO(blob)) as image:
                orientation = image.getexif().get(0x0112, 1)
                width, height = image.size
                image.load()
        except ImageTooLargeError as exc:
            out.append(Finding("image-unreadable", "error", f"{member}: {exc.message}", where))
            continue
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            out.append(Finding("image-unreadable", "error", f"{member}: {exc}", where))
            continue
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if (entry.get("width"), entry.get("height")) != (width, height):
            out.append(Finding("image-size-mismatch", "error", f"{member} is {width}x{height} "
                               f"(WxH, after EXIF orientation) but the row says "
                               f"{entry.get('width')}x{entry.get('height')}", where))
    return out


def validate_shard(task: tuple[Any, ...]) -> ValidatePart:
    """Map: the rulebook's walk over one shard (its image files too when asked). With a
    ``scratch`` folder, the shard's ids go there in ``buckets`` parts instead of back to the
    driver (``_bucket_repeats`` reduces them)."""
    from instkit.validate.checks import check_document

    shards, index, limits, images_dir, check_images, scratch, buckets = task
    info = shards.shards[index]
    try:
        shard = shard_document(shards, index, keep_images=check_images and shards.kind != "coco")
    except InstkitError as exc:
        from instkit.shards.dataset import ShardError

        code = exc.code or ("shard-unreadable" if isinstance(exc, ShardError) else
                            "json-parse" if "JSON" in exc.message else "schema-type")
        where = exc.location if exc.location.file else Location(file=info.path)
        finding = Finding(code, RULES[code].severity, exc.message, where)
        empty = np.zeros(0, dtype=np.int64)
        return ValidatePart(index, info.path, [finding], 0, 0, None, set(), empty, empty, empty,
                            empty, empty, Origin(info.path))
    document, origin = shard.document, shard.origin
    image_root = images_dir if shards.kind == "coco" else None
    if shards.kind == "coco" and check_images and image_root is None:
        image_root = shards.image_root or os.path.dirname(info.path)
    findings, ctx = check_document(document, file=info.path, raw=shard.raw, images_dir=image_root,
                                   workers=1, limits=limits)
    # The dataset-wide rules are the reduce's; a shared table is checked once there.
    shared_table = shards.kind != "coco"
    kept = [_relocate(f, origin) for f in findings if f.code != "category-unused" and not (
        shared_table and (f.location.json_path or "").startswith("categories"))]
    for code, message, member in origin.problems:
        kept.append(Finding(code, RULES[code].severity, message,
                            Location(file=f"{origin.shard}/{member}")))
    if shard.images:
        kept.extend(_image_size_findings(shard, origin, shard.images))
    image_ids, image_index, _ = _first_ids(document.get("images"))
    ann_ids, ann_index, ann_image = _first_ids(document.get("annotations"))
    if scratch is not None:
        _save_ids(scratch, "images", index, image_ids, image_index, image_ids, buckets)
        _save_ids(scratch, "annotations", index, ann_ids, ann_index, ann_image, buckets)
        empty = np.zeros(0, dtype=np.int64)
        image_ids = image_index = ann_ids = ann_index = ann_image = empty
    is_dict = isinstance(document, dict)
    return ValidatePart(
        index, info.path, kept,
        len(document["images"]) if is_dict and isinstance(document.get("images"), list) else 0,
        len(document["annotations"]) if is_dict and isinstance(document.get("annotations"), list)
        else 0,
        document.get("categories") if is_dict else None, set(ctx.used_categories),
        image_ids, image_index, ann_ids, ann_index, ann_image, origin)


def _table_key(categories: Any) -> dict[Any, tuple[Any, ...]]:
    out: dict[Any, tuple[Any, ...]] = {}
    for entry in categories if isinstance(categories, list) else []:
        if isinstance(entry, dict):
            out[entry.get("id")] = (entry.get("name"), entry.get("supercategory"),
                                    tuple(entry.get("keypoints") or ()),
                                    tuple(map(tuple, entry.get("skeleton") or ())))
    return out


def _table_difference(mine: Any, reference: Any) -> str | None:
    a, b = _table_key(mine), _table_key(reference)
    if a == b and isinstance(mine, list) and len(mine) == len(reference or []):
        return None
    missing = sorted(set(b) - set(a), key=str)
    extra = sorted(set(a) - set(b), key=str)
    changed = sorted((k for k in set(a) & set(b) if a[k] != b[k]), key=str)
    parts = []
    if missing:
        parts.append(f"ids {missing[:5]} missing")
    if extra:
        parts.append(f"ids {extra[:5]} added")
    for key in changed[:3]:
        parts.append(f"id {key} is {a[key][0]!r} here, {b[key][0]!r} there" if a[key][0] != b[key][0]
                     else f"id {key} has other fields (supercategory/keypoints/skeleton)")
    return "; ".join(parts) or "entries repeated or reordered differently"


Repeat = tuple[int, int, int, int, int, int]  # shard, position, id, first shard, first position, image


def _repeats(ids: np.ndarray, shard: np.ndarray, position: np.ndarray, owner: np.ndarray
             ) -> list[Repeat]:
    """Ids held by more than one shard (each shard's ids are distinct): every occurrence after
    the first in shard order, with where the first is."""
    order = np.lexsort((shard, ids))  # by id, then shard order
    sorted_ids = ids[order]
    out = []
    for k in np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1:
        first = order[np.searchsorted(sorted_ids, sorted_ids[k])]
        here = order[k]
        out.append((int(shard[here]), int(position[here]), int(sorted_ids[k]), int(shard[first]),
                    int(position[first]), int(owner[here])))
    return out


def _save_ids(scratch: str, kind: str, shard: int, ids: np.ndarray, position: np.ndarray,
              owner: np.ndarray, buckets: int) -> None:
    """One shard's ids, grouped by ``id mod buckets``, as ``.npy`` files in ``scratch``."""
    key = (ids.view(np.uint64) % np.uint64(buckets)).astype(np.int64)
    order = np.argsort(key, kind="stable")
    data = np.stack([ids[order], position[order], owner[order]])
    np.save(os.path.join(scratch, f"{kind}-{shard:06d}.npy"), data)
    np.save(os.path.join(scratch, f"{kind}-{shard:06d}-offsets.npy"),
            np.searchsorted(key[order], np.arange(buckets + 1)))


def _bucket_repeats(task: tuple[str, str, int, int]) -> list[Repeat]:
    """Reduce one bucket: the ids of every shard whose ``id mod buckets`` is ``bucket``."""
    scratch, kind, bucket, n_shards = task
    columns, owners = [], []
    for shard in range(n_shards):
        path = os.path.join(scratch, f"{kind}-{shard:06d}.npy")
        if not os.path.exists(path):  # an unreadable shard holds no ids
            continue
        offsets = np.load(os.path.join(scratch, f"{kind}-{shard:06d}-offsets.npy"))
        piece = np.asarray(np.load(path, mmap_mode="r")[:, offsets[bucket]:offsets[bucket + 1]])
        columns.append(piece)
        owners.append(np.full(piece.shape[1], shard, dtype=np.int64))
    if not columns:
        return []
    data = np.concatenate(columns, axis=1)
    return _repeats(data[0], np.concatenate(owners), data[1], data[2])


def _memory_repeats(parts: list[ValidatePart], kind: str) -> list[Repeat]:
    ids = [p.image_ids if kind == "images" else p.annotation_ids for p in parts]
    if not ids:
        return []
    return _repeats(
        np.concatenate(ids),
        np.concatenate([np.full(len(a), p.index, dtype=np.int64) for a, p in zip(ids, parts)]),
        np.concatenate([p.image_index if kind == "images" else p.annotation_index
                        for p in parts]),
        np.concatenate([p.image_ids if kind == "images" else p.annotation_image for p in parts]))


def _cross_duplicates(parts: list[ValidatePart], kind: str, repeats: list[Repeat]
                      ) -> list[Finding]:
    """An id that an earlier shard holds, reported at its first occurrence in a later shard."""
    name = "image" if kind == "images" else "annotation"
    by_index = {p.index: p for p in parts}
    findings = []
    for shard, position, value, first_shard, first_position, owner in sorted(repeats):
        part, first_part = by_index[shard], by_index[first_shard]
        file, path = part.origin.locate(f"{kind}[{position}].id")
        first_file, first_path = first_part.origin.locate(f"{kind}[{first_position}]")
        findings.append(Finding(
            f"duplicate-{name}-id", "error",
            f"{name} id {value} is used again (first at {first_path} of {first_file})",
            Location(file=file, json_path=path, image_id=owner if owner != _NO_ID else None,
                     annotation_id=value if kind == "annotations" else None)))
    return findings


def reduce_validate(shards: ShardSet, parts: list[ValidatePart],
                    repeats: dict[str, list[Repeat]] | None = None) -> Any:
    """Reduce: the per-shard findings in shard order, then the dataset-wide ones.
    ``repeats``: the cross-shard duplicate ids when a bucketed reduce found them."""
    from instkit.validate.report import Report
    from instkit.validate.rules import check_document

    findings = [f for part in parts for f in part.findings]
    if shards.kind == "coco":
        readable = [p for p in parts if isinstance(p.categories, list)]
        reference = readable[0].categories if readable else []
        reference_file = readable[0].file if readable else shards.root
        for part in readable[1:]:
            difference = _table_difference(part.categories, reference)
            if difference is not None:
                findings.append(Finding("shard-categories-mismatch", "error",
                                        f"categories differ from those of {reference_file}: "
                                        f"{difference}", Location(file=part.file,
                                                                  json_path="categories")))
    else:
        reference = shards.categories if shards.categories is not None else [dict(SA1B_CATEGORY)]
        reference_file = shards.root
        table_findings, _ = check_document({"images": [], "annotations": [],
                                            "categories": reference}, file=reference_file)
        findings.extend(f for f in table_findings if f.code not in (
            "category-unused", "annotations-missing"))
    for kind in ("images", "annotations"):
        found = repeats[kind] if repeats is not None else _memory_repeats(parts, kind)
        findings.extend(_cross_duplicates(parts, kind, found))
    used = set().union(*(p.used_categories for p in parts)) if parts else set()
    for index, entry in enumerate(reference if isinstance(reference, list) else []):
        if isinstance(entry, dict) and is_int(entry.get("id")) and entry["id"] not in used:
            findings.append(Finding("category-unused", "info", f"category {entry['id']} "
                                    f"({entry.get('name')!r}) has no annotation in any shard",
                                    Location(file=reference_file, json_path=f"categories[{index}]")))
    for part, info in zip(parts, shards.shards):
        for what, expected, actual in (("samples", info.samples, part.images),
                                       ("annotations", info.annotations, part.annotations)):
            if expected is not None and expected != actual:
                findings.append(Finding("shard-manifest-mismatch", "error",
                                        f"the manifest says {expected} {what}, the shard holds "
                                        f"{actual}", Location(file=part.file)))
    counts = {"shards": len(parts), "images": sum(p.images for p in parts),
              "annotations": sum(p.annotations for p in parts),
              "categories": len(reference) if isinstance(reference, list) else 0}
    return Report(shards.root, findings, counts=counts, images_checked=False)


def validate_shards(shards: ShardSet, *, engine: str = "local", workers: int | None = 1,
                    address: str | None = None, limits: Limits | None = None,
                    images: str | os.PathLike[str] | None = None, check_images: bool = False,
                    scratch: str | os.PathLike[str] | None = None, buckets: int = 64,
                    progress: bool = False) -> Any:
    """Validate a shard set; a ``Report`` like ``validate_file``'s (``counts`` add ``shards``).
    ``check_images``: decode every image (tar members; for COCO shards the files under
    ``images`` or beside each shard). ``scratch``: a folder (shared by the workers) where the
    ids go for a reduce in ``buckets`` tasks, instead of all ids in this process's memory
    (24 bytes per annotation; docs/scaling.md); the report is the same."""
    import tempfile

    from instkit.shards.engine import run_tasks

    images_dir = os.fspath(images) if images is not None else None
    check = check_images or images_dir is not None
    with tempfile.TemporaryDirectory(dir=scratch) if scratch is not None else _no_folder() \
            as folder:
        tasks = [(shards, k, limits, images_dir, check, folder, buckets)
                 for k in range(len(shards))]
        parts = run_tasks(validate_shard, tasks, engine=engine, workers=workers,
                          address=address, progress=progress, desc="validate")
        repeats = None
        if folder is not None:
            bucket_tasks = [(folder, kind, b, len(shards)) for kind in ("images", "annotations")
                            for b in range(buckets)]
            found = run_tasks(_bucket_repeats, bucket_tasks, engine=engine, workers=workers,
                              address=address, progress=progress, desc="reduce ids")
            repeats = {kind: [r for task, result in zip(bucket_tasks, found) if task[1] == kind
                              for r in result] for kind in ("images", "annotations")}
    report = reduce_validate(shards, parts, repeats)
    report.images_checked = check
    return report


@contextlib.contextmanager
def _no_folder() -> Iterator[None]:
    yield None


# --- stats --------------------------------------------------------------------------------------


@dataclass
class StatsPart:
    index: int
    file: str
    stats: Any
    categories: Any
    problems: list[Finding] = field(default_factory=list)


def stats_shard(task: tuple[ShardSet, int]) -> StatsPart:
    """Map: ``compute_stats`` of one shard, read leniently as ``instkit stats`` reads a file."""
    import logging

    from instkit.io.coco import CocoDataset
    from instkit.stats import compute_stats

    shards, index = task
    info = shards.shards[index]
    shard = shard_document(shards, index)
    logging.getLogger("instkit.io.coco").setLevel(logging.ERROR)  # counted below instead
    dataset = CocoDataset(shard.document, file=info.path, strict=False, raw=shard.raw)
    problems = [Finding(code, RULES[code].severity, message, Location(file=f"{info.path}/{member}"))
                for code, message, member in shard.origin.problems if code != "image-missing"]
    problems += [Finding(p.code or "schema-type", RULES.get(p.code or "schema-type",
                                                             RULES["schema-type"]).severity,
                         p.message, p.location) for p in dataset.problems]
    return StatsPart(index, info.path, compute_stats(dataset, dataset.categories),
                     dataset.categories.to_coco(), problems)


def merge_stats(parts: list[Any]) -> Any:
    """Statistics of the concatenation of the parts' samples (in order): counts add up, the
    per-image lists are concatenated, per-class rows add up by category."""
    from instkit.stats import DatasetStats

    total = DatasetStats()
    for part in parts:
        total.num_images += part.num_images
        total.num_instances += part.num_instances
        total.num_crowd += part.num_crowd
        total.instances_per_image.extend(part.instances_per_image)
        total.areas.extend(part.areas)
        total.polygon_vertices.extend(part.polygon_vertices)
        total.skipped += part.skipped
        for key, value in part.size_split.items():
            total.size_split[key] = total.size_split.get(key, 0) + value
        for key, value in part.mask_forms.items():
            total.mask_forms[key] = total.mask_forms.get(key, 0) + value
        if not total.per_class:
            total.per_class = [dict(row) for row in part.per_class]
            continue
        for row, other in zip(total.per_class, part.per_class, strict=True):
            for key in ("instances", "crowd", "images"):
                row[key] += other[key]
    return total


def stats_shards(shards: ShardSet, *, engine: str = "local", workers: int | None = 1,
                 address: str | None = None, progress: bool = False) -> tuple[Any, list[Finding]]:
    """``(DatasetStats, problems)`` of a shard set: the statistics one process computes over
    the shards in order; ``problems``: what was left out, and why (rows, annotations)."""
    from instkit.shards.engine import run_tasks

    parts: list[StatsPart] = run_tasks(stats_shard, [(shards, k) for k in range(len(shards))],
                                       engine=engine, workers=workers, address=address,
                                       progress=progress, desc="stats")
    for part in parts[1:]:
        difference = _table_difference(part.categories, parts[0].categories)
        if difference is not None:
            raise InstkitError(f"categories differ from those of {parts[0].file} ({difference}): "
                               "statistics per class would mix classes; run instkit validate",
                               Location(file=part.file, json_path="categories"))
    return merge_stats([p.stats for p in parts]), [f for p in parts for f in p.problems]


# --- convert ------------------------------------------------------------------------------------


def iter_rows(shards: ShardSet, index: int, table: list[dict[str, Any]] | None = None
              ) -> Iterator[tuple[dict[str, Any], str, str | None, bytes | None]]:
    """``(row, where, image name, image bytes)`` of one shard, streamed (tar shards are not held
    in memory); a row that cannot be read is an error naming its member. ``table``: the
    dataset's categories, which a COCO shard's own must equal."""
    from instkit.errors import FormatError

    info = shards.shards[index]
    if shards.kind == "coco":
        document = shard_document(shards, index).document
        if table is not None and _table_key(document.get("categories")) != _table_key(table):
            raise InstkitError(f"categories differ from the first shard's ("
                               f"{_table_difference(document.get('categories'), table)}); run "
                               "instkit validate", Location(file=info.path, json_path="categories"))
        by_image: dict[Any, list[Any]] = {}
        for annotation in document.get("annotations") or []:
            by_image.setdefault(annotation.get("image_id") if isinstance(annotation, dict)
                                else None, []).append(annotation)
        root = shards.image_root or os.path.dirname(info.path)
        for k, image in enumerate(document.get("images") or []):
            where = f"{info.path}:images[{k}]"
            name = image.get("file_name") if isinstance(image, dict) else None
            data = None
            if isinstance(name, str):
                from instkit.io.files import safe_join

                path = safe_join(root, name, Location(file=info.path,
                                                     json_path=f"images[{k}].file_name"))
                if os.path.isfile(path):
                    data = Path(path).read_bytes()
            yield ({"image": image, "annotations": by_image.get(image.get("id"), [])
                    if isinstance(image, dict) else []}, where, name, data)
        return
    for record in iter_tar(info.path):
        row_member = record.row_member()
        if row_member is None:
            raise FormatError(f"sample {record.key!r} has no .json row", Location(file=info.path))
        where = f"{info.path}/{row_member[0]}"
        row = parse_row(row_member[1], where)
        image = record.image_member()
        if shards.kind == "tar":
            row = coco_row(row)
        yield row, where, image[0] if image else None, image[1] if image else None


def relocate_row_error(exc: InstkitError, where: str, annotations: int) -> InstkitError:
    """``exc`` (raised on a one-row document named ``where``) located in the row's member."""
    shard, _, member = where.rpartition("/")
    origin = Origin(shard, [member], [0], annotations)
    file, path = origin.locate(exc.location.json_path)
    exc.location = Location(file=file, json_path=path, image_id=exc.location.image_id,
                            annotation_id=exc.location.annotation_id)
    return exc


def check_row(row: dict[str, Any], table: list[dict[str, Any]], where: str) -> None:
    """A row must pass the rulebook as ``read_coco`` (strict) requires: its first error is
    raised, located in the row's member (``where``: ``shard.tar/member.json``)."""
    from instkit.validate.rules import check_document

    document = {"images": [row["image"]], "annotations": row.get("annotations") or [],
                "categories": table}
    try:
        check_document(document, file=where, strict=True, warnings=False)
    except InstkitError as exc:
        raise relocate_row_error(exc, where, len(document["annotations"])) from None


def _reference_table(shards: ShardSet) -> list[dict[str, Any]]:
    if shards.categories is not None:
        return list(shards.categories)
    if shards.kind == "tar":
        return [dict(SA1B_CATEGORY)]
    return list(shard_document(shards, 0).document.get("categories") or [])


def convert_shard(task: tuple[ShardSet, int, str, str, int, list[dict[str, Any]]]
                  ) -> dict[str, Any]:
    """Map: one input shard -> image files + a COCO fragment (``to="coco"``), or -> output
    shards of at most ``shard_size`` samples (``to="shards"``)."""
    from instkit.io.files import atomic_write, safe_join
    from instkit.shards.write import Record, TarWriter, _extension

    shards, index, to, out, shard_size, table = task
    entries: list[dict[str, Any]] = []
    images: list[Any] = []  # kept for a COCO fragment only; shards keep just the ids
    annotations: list[Any] = []
    image_ids: list[int] = []
    annotation_ids: list[int] = []
    file_names: list[str] = []
    writer: TarWriter | None = None
    try:
        for row, where, name, data in iter_rows(shards, index, table):
            check_row(row, table, where)
            if data is None:
                raise InstkitError(f"no image for {where} ({name})", Location(file=where))
            image_ids.append(int(row["image"]["id"]))
            file_names.append(str(row["image"]["file_name"]))
            annotation_ids.extend(int(a["id"]) for a in row.get("annotations") or [])
            if to == "coco":
                with atomic_write(safe_join(out, row["image"]["file_name"]), "wb") as handle:
                    handle.write(data)
                images.append(row["image"])
                annotations.extend(row.get("annotations") or [])
                continue
            if writer is None or writer.samples >= shard_size:
                if writer is not None:
                    entries.append(writer.close())
                writer = TarWriter(Path(out) / f"shard-{index:05d}-{len(entries):04d}.tar")
            writer.add(Record(row, data, _extension(name) or ".png"))
        if writer is not None:
            entries.append(writer.close())
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    fragment: dict[str, Any] = {"file": shards.shards[index].path, "shards": entries,
                                "image_ids": image_ids, "annotation_ids": annotation_ids,
                                "file_names": file_names}
    if to == "coco":
        fragment["images"], fragment["annotations"] = images, annotations
    return fragment


def _unique_across(fragments: list[dict[str, Any]], key: str, what: str,
                   fold: bool = False) -> None:
    seen: dict[Any, str] = {}
    for fragment in fragments:
        for value in fragment[key]:
            value_key = value.replace("\\", "/").casefold() if fold else value
            if value_key in seen:
                raise InstkitError(f"{what} {value!r} is in {seen[value_key]} and again in "
                                   f"{fragment['file']}", Location(file=fragment["file"]))
            seen[value_key] = fragment["file"]


def convert_shards(shards: ShardSet, out: str | os.PathLike[str], to: str, *,
                   shard_size: int = 1000, engine: str = "local", workers: int | None = 1,
                   address: str | None = None, progress: bool = False) -> dict[str, int]:
    """Convert a shard set to one COCO file ``out`` (images in ``images/`` beside it) or to
    instkit shards in the new folder ``out``; every row passes the rulebook first. Returns the
    counts. The files are the same whatever the engine and the number of workers."""
    import json

    from instkit.io.files import atomic_write, staged_folder
    from instkit.shards.engine import run_tasks
    from instkit.shards.write import write_manifest

    if to not in ("coco", "shards"):
        raise ValueError(f"convert_shards writes coco or shards, not {to!r}")
    table = _reference_table(shards)
    target = Path(out)
    staged_at = target.parent / "images" if to == "coco" else target
    with staged_folder(staged_at) as folder:
        tasks = [(shards, k, to, str(folder), shard_size, table) for k in range(len(shards))]
        fragments = run_tasks(convert_shard, tasks, engine=engine, workers=workers,
                              address=address, progress=progress, desc="convert")
        _unique_across(fragments, "image_ids", "image id")
        _unique_across(fragments, "annotation_ids", "annotation id")
        counts = {"shards_read": len(shards), "images": sum(len(f["image_ids"]) for f in fragments),
                  "objects": sum(len(f["annotation_ids"]) for f in fragments)}
        if to == "coco":
            _unique_across(fragments, "file_names", "file_name", fold=True)
            document = {"images": [i for f in fragments for i in f["images"]],
                        "annotations": [a for f in fragments for a in f["annotations"]],
                        "categories": table}
            with atomic_write(target) as handle:
                json.dump(document, handle, allow_nan=False, separators=(",", ":"))
        else:
            entries = [e for f in fragments for e in f["shards"]]
            write_manifest(folder, entries, table, source={"path": shards.root,
                                                           "format": shards.kind})
            counts["shards"] = len(entries)
    return counts


def convert_to_shards(src: Any, fmt: str, out: Path, *, shard_size: int, opener: Any,
                      engine: str, workers: int | None, address: str | None,
                      progress: bool) -> dict[str, int]:
    """``instkit convert SRC --to shards`` of a single-file source (read by ``opener()``)."""
    from instkit.categories import Categories
    from instkit.shards.write import write_shards

    samples = opener()
    categories = getattr(samples, "categories", None)
    if categories is None and len(samples):
        categories = samples[0].meta.categories
    if categories is None:
        categories = Categories.from_coco([])
    manifest = write_shards(samples, out, categories, shard_size=shard_size,
                            opener=opener, engine=engine,
                            workers=workers, address=address, progress=progress,
                            source={"path": str(src), "format": fmt})
    return {"images": manifest["samples"], "objects": manifest["annotations"],
            "shards": len(manifest["shards"])}


__all__ = ["convert_shards", "convert_to_shards", "merge_stats", "reduce_validate",
           "stats_shards", "validate_shards"]

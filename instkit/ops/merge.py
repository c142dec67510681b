"""Merge COCO datasets: categories matched by name, ids renumbered, identical images merged.

- Categories: matched by name after the renames of ``mapping`` (``{"person": "human"}`` sends
  every input's ``person`` to ``human``). A name keeps the id it has in the first input that
  names it, unless an earlier category took that id; then it gets the next free id.
- Images: found identical by the SHA-256 of their file bytes (``hash_images=True``), or else by
  their resolved path. An identical image is written once; its annotations are united
  (``on_duplicate="union"``) or the first copy's kept and the others' counted as dropped
  (``"first"``). Every pair is reported.
- Ids: images are numbered 1..N and annotations 1..M in output order; ``id_map`` says where each
  output image came from.
- Paths: every ``file_name`` is rewritten relative to ``image_root`` (default: the output file's
  folder when it holds every image, else the deepest folder holding them all), so the output's
  names resolve there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import ImageError, InstkitError, Location
from instkit.instances import Instances
from instkit.ops.common import DropLog, class_counts, relabel, write_samples
from instkit.sample import Sample


def file_sha256(path: str | os.PathLike[str], where: Location | None = None) -> str:
    """SHA-256 of a file's bytes (hex); a missing or unreadable file is an ``ImageError``."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ImageError(f"image file cannot be read for hashing: {exc.strerror or exc}",
                         where or Location(file=os.fspath(path))) from None
    return digest.hexdigest()


@dataclass
class MergeResult:
    """The merged samples (new ids), their categories, and what was done."""

    samples: list[Sample]
    categories: Categories
    image_root: str
    inputs: list[dict[str, Any]]
    category_map: list[dict[str, str]]  # per input: its name -> merged name
    duplicates: list[dict[str, Any]]
    drops: DropLog
    id_map: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    info: Any = None
    licenses: Any = None
    output: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": "merge",
            "inputs": self.inputs,
            "output": self.output,
            "image_root": self.image_root,
            "images": len(self.samples),
            "annotations": sum(len(s.instances) for s in self.samples),
            "categories": [c.to_coco() for c in self.categories],
            "category_map": self.category_map,
            "duplicates": self.duplicates,
            "dropped": self.drops.as_dict(),
            "per_class": class_counts(self.samples, self.categories),
            "id_map": self.id_map,
            "notes": self.notes,
        }

    def to_text(self) -> str:
        lines = [f"instkit merge: {len(self.inputs)} inputs -> {len(self.samples)} images, "
                 f"{sum(len(s.instances) for s in self.samples)} annotations, "
                 f"{len(self.categories)} categories"]
        for entry in self.inputs:
            lines.append(f"  {entry['file']}: {entry['images']} images, {entry['annotations']} "
                         f"annotations, {entry['categories']} categories")
        renamed = [(k, name, new) for k, table in enumerate(self.category_map)
                   for name, new in table.items() if name != new]
        for k, name, new in renamed:
            lines.append(f"  input {k + 1}: category {name!r} -> {new!r}")
        lines.append(f"  identical images merged: {len(self.duplicates)}")
        for pair in self.duplicates[:10]:
            lines.append(f"    {pair['kept']['file_name']} (input {pair['kept']['input'] + 1}, id "
                         f"{pair['kept']['image_id']}) = {pair['copy']['file_name']} (input "
                         f"{pair['copy']['input'] + 1}, id {pair['copy']['image_id']}): "
                         f"{pair['annotations']}")
        if len(self.duplicates) > 10:
            lines.append(f"    ... and {len(self.duplicates) - 10} more (--format json lists all)")
        lines += self.drops.text_lines()
        lines.append(f"  file_names relative to {self.image_root}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.output:
            lines.append(f"  wrote {self.output}")
        return "\n".join(lines)


def merged_categories(tables: Sequence[Categories], mapping: dict[str, str] | None = None,
                      ) -> tuple[Categories, list[np.ndarray], list[dict[str, str]]]:
    """The merged category table, each input's label map (old label -> new label) and name map."""
    mapping = dict(mapping or {})
    known = {c.name for table in tables for c in table}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise InstkitError(f"--map names categories no input has: {', '.join(map(repr, unknown))} "
                           f"(known: {', '.join(sorted(known)[:20])}{' ...' if len(known) > 20 else ''})")
    by_name: dict[str, Category] = {}
    used_ids: set[int] = set()
    for table in tables:
        for category in table:
            name = mapping.get(category.name, category.name)
            if name in by_name:
                held = by_name[name]
                if category.keypoints and held.keypoints and category.keypoints != held.keypoints:
                    raise InstkitError(f"category {name!r} has different keypoint names in two "
                                       f"inputs: {list(held.keypoints)} and {list(category.keypoints)}")
                if category.keypoints and not held.keypoints:
                    by_name[name] = Category(held.id, name, held.supercategory or category.supercategory,
                                             category.keypoints, category.skeleton, dict(held.extra))
                continue
            new_id = category.id if category.id not in used_ids else max(used_ids) + 1
            used_ids.add(new_id)
            by_name[name] = Category(new_id, name, category.supercategory, category.keypoints,
                                     category.skeleton, dict(category.extra))
    merged = Categories(sorted(by_name.values(), key=lambda c: c.id))
    label_of = {c.name: label for label, c in enumerate(merged)}
    maps: list[np.ndarray] = []
    names: list[dict[str, str]] = []
    for table in tables:
        maps.append(np.asarray([label_of[mapping.get(c.name, c.name)] for c in table],
                               dtype=np.int64))
        names.append({c.name: mapping.get(c.name, c.name) for c in table})
    return merged, maps, names


def _unite(a: Instances, b: Instances) -> tuple[Instances | None, str]:
    """``a`` and ``b``'s rows in one table, or ``None`` and why not."""
    if (a.masks is None) != (b.masks is None):
        return None, "one copy has masks and the other only boxes"
    extras_a, extras_b = a.extras, b.extras
    for name in set(extras_a) ^ set(extras_b):
        if name != "coco_fields":
            return None, f"annotation extra {name!r} is in one copy only"
    if (a.scores is None) != (b.scores is None):
        return None, "scores are in one copy only"
    parts = []
    k = max(x.keypoints.shape[1] if x.keypoints is not None else 0 for x in (a, b))
    for inst, extras in ((a, extras_a), (b, extras_b)):
        changes: dict[str, Any] = {}
        if "coco_fields" in set(extras_a) | set(extras_b) and "coco_fields" not in extras:
            extras = dict(extras)
            column = np.empty(len(inst), dtype=object)
            for i in range(len(inst)):
                column[i] = {}
            extras["coco_fields"] = column
            changes["extras"] = extras
        if k and (inst.keypoints is None or inst.keypoints.shape[1] < k):
            # Keypoints not labelled in one copy: visibility 0 ("not labelled") for those rows.
            padded = np.zeros((len(inst), k, 3), dtype=np.float32)
            if inst.keypoints is not None:
                padded[:, : inst.keypoints.shape[1]] = inst.keypoints
            changes["keypoints"] = padded
        parts.append(inst.replace(**changes) if changes else inst)
    return Instances.cat(parts), ""


def _image_root(paths: list[str], out: str | os.PathLike[str] | None) -> str:
    if out is not None:
        folder = str(Path(out).resolve().parent)
        if all(Path(folder) in Path(p).parents for p in paths):
            return folder
    if not paths:
        return str(Path(out).resolve().parent) if out is not None else os.getcwd()
    return os.path.commonpath([str(Path(p).parent) for p in paths])


def merge_datasets(datasets: Sequence[Sequence[Sample]], *, mapping: dict[str, str] | None = None,
                   hash_images: bool = True, on_duplicate: str = "union",
                   image_root: str | os.PathLike[str] | None = None,
                   out: str | os.PathLike[str] | None = None,
                   progress: bool | None = False) -> MergeResult:
    """Merge ``datasets`` (``CocoDataset``s, or sequences of samples with categories in their
    meta); see the module docstring. ``out``: where the result will be written (to pick the
    default ``image_root``). ``progress``: a bar on stderr while hashing (None: only on a
    terminal)."""
    from tqdm.auto import tqdm

    if on_duplicate not in ("union", "first"):
        raise InstkitError(f"on_duplicate must be 'union' or 'first', got {on_duplicate!r}")
    if len(datasets) < 1:
        raise InstkitError("merge needs at least one input")
    tables: list[Categories] = []
    for k, data in enumerate(datasets):
        table = getattr(data, "categories", None)
        if table is None and len(data):
            table = data[0].meta.categories
        if table is None:
            raise InstkitError(f"input {k + 1} has no categories")
        tables.append(table)
    categories, label_maps, name_maps = merged_categories(tables, mapping)
    drops = DropLog()
    notes: list[str] = []
    inputs: list[dict[str, Any]] = []
    entries: list[tuple[int, Sample]] = []
    for k, data in enumerate(datasets):
        count = 0
        for sample in data:
            if sample.image_path is None:
                raise InstkitError("a sample without an image path cannot be placed in the merged "
                                   "file's image folder", Location(file=sample.meta.source,
                                                                   image_id=sample.image_id))
            entries.append((k, relabel(sample, label_maps[k], categories)))
            count += len(sample.instances)
        inputs.append({"file": getattr(data, "file", None) or f"input {k + 1}",
                       "images": len(data), "annotations": count, "categories": len(tables[k])})
    paths = [str(Path(s.image_path).resolve()) for _, s in entries if s.image_path]
    root = str(Path(image_root).resolve()) if image_root is not None else _image_root(paths, out)
    first_of: dict[str, int] = {}
    merged: list[tuple[int, Sample, list[tuple[int, int]]]] = []  # (input, sample, sources)
    duplicates: list[dict[str, Any]] = []
    # tqdm's disable=None: a bar only when stderr is a terminal.
    disable = True if not hash_images else None if progress is None else not progress
    for k, sample in tqdm(entries, desc="hash images", unit="image", leave=False,
                          disable=disable):
        path = str(Path(sample.image_path or "").resolve())
        if Path(root) not in Path(path).parents:
            raise InstkitError(f"image {path} lies outside the image root {root}; choose an "
                               "image root that holds every input's images",
                               Location(file=sample.meta.source, image_id=sample.image_id))
        where = Location(file=path, image_id=int(sample.image_id))
        key = file_sha256(path, where) if hash_images else path
        if key not in first_of:
            first_of[key] = len(merged)
            merged.append((k, sample, [(k, int(sample.image_id))]))
            continue
        position = first_of[key]
        k0, kept, sources = merged[position]
        if kept.image_size != sample.image_size:
            raise InstkitError(
                f"identical image files with different sizes in their annotations: "
                f"{kept.image_size} (input {k0 + 1}, image {kept.image_id}) and "
                f"{sample.image_size} (HxW)", where)
        what = "annotations united"
        if on_duplicate == "union":
            united, why = _unite(kept.instances, sample.instances)
            if united is None:
                what = f"annotations of the copy dropped: {why}"
                drops.annotation("identical-image-not-united", sample.instances.ids)
            else:
                merged[position] = (k0, kept.replace(instances=united), sources)
        else:
            what = "annotations of the copy dropped (--on-duplicate first)"
            drops.annotation("identical-image-copy", sample.instances.ids)
        sources.append((k, int(sample.image_id)))
        drops.image("identical-image-merged", int(sample.image_id))
        duplicates.append({
            "kept": {"input": k0, "image_id": int(kept.image_id), "file_name": kept.meta.file_name},
            "copy": {"input": k, "image_id": int(sample.image_id), "file_name": sample.meta.file_name},
            "by": "sha256" if hash_images else "path", "annotations": what})
    samples: list[Sample] = []
    id_map: list[dict[str, Any]] = []
    for new_id, (_, sample, sources) in enumerate(merged, start=1):
        meta = sample.meta.copy()
        meta.file_name = Path(os.path.relpath(Path(sample.image_path or "").resolve(), root)).as_posix()
        samples.append(sample.replace(image_id=new_id, meta=meta))
        id_map.append({"image_id": new_id, "file_name": meta.file_name,
                       "sources": [{"input": s, "image_id": i} for s, i in sources]})
    infos = [getattr(d, "info", None) for d in datasets]
    licenses = [getattr(d, "licenses", None) for d in datasets]
    license_out = licenses[0]
    if any(x != licenses[0] for x in licenses[1:]):
        license_out = None
        notes.append("the inputs' licenses lists differ: none written (images keep their "
                     "'license' field)")
    if any(getattr(d, "extra_fields", None) for d in datasets):
        notes.append("top-level keys beyond info/licenses/images/annotations/categories are "
                     "not carried into a merge")
    return MergeResult(samples, categories, root, inputs, name_maps, duplicates, drops, id_map,
                       notes, info=infos[0], licenses=license_out)


def copy_images(result: MergeResult, dest: str | os.PathLike[str]) -> int:
    """Copy every merged image into ``dest`` (a new or empty folder) under its ``file_name``,
    all or nothing, so the merged file is self-contained; ``result.image_root`` becomes
    ``dest``. Returns the number of files copied."""
    import shutil

    from instkit.io.files import safe_join, staged_folder

    count = 0
    with staged_folder(dest) as folder:
        for sample in result.samples:
            name = sample.meta.file_name or ""
            target = Path(safe_join(folder, name, Location(image_id=int(sample.image_id))))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(sample.image_path or "", target)
            except OSError as exc:
                raise ImageError(f"image cannot be copied: {exc.strerror or exc}",
                                 Location(file=sample.image_path, image_id=int(sample.image_id))
                                 ) from None
            count += 1
    result.image_root = str(Path(dest).resolve())
    result.notes.append(f"{count} image(s) copied to {result.image_root}")
    return count


def write_merged(result: MergeResult, out: str | os.PathLike[str], *,
                 inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """Write the merge as COCO at ``out`` (annotation ids 1..M), never over an input."""
    sources = [*inputs, *(entry["file"] for entry in result.inputs)]
    path = write_samples(result.samples, out, result.categories, inputs=sources,
                         renumber_ids=True, info=result.info, licenses=result.licenses)
    result.output = str(path)
    return path


__all__ = ["MergeResult", "copy_images", "file_sha256", "merge_datasets", "merged_categories", "write_merged"]

"""Static HTML pages for a dataset (``dataset_report``) and an evaluation (``eval_report``).

A report folder holds ``index.html`` (markup, style and script inline), ``data.js`` (the data,
``window.INSTKIT_REPORT = {...}``) and ``img/`` (one thumbnail and one detail overlay per image,
JPEG). It opens from ``file://`` with no server and loads nothing from the network.

Large datasets: overlays are drawn by a thread pool, once: ``img/manifest.json`` keeps a digest
of what each picture shows (annotations, predictions, image file, drawing options) and a picture
whose digest has not changed is not drawn again. The grid is paginated and thumbnails load
lazily, so the page stays quick with thousands of images.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instkit import __version__
from instkit.analysis import ERROR_TYPES, ErrorAnalysis, analyze
from instkit.categories import Categories
from instkit.errors import InstkitError, Location
from instkit.evaluation import Match, match_image
from instkit.instances import Instances
from instkit.io.coco import CocoDataset, read_coco
from instkit.io.files import atomic_write, load_json
from instkit.masks import BitmapMask, PolygonMask, RLEMask
from instkit.sample import Sample, categories_of
from instkit.viz import charts
from instkit.viz.assets import CSS, JS, TEMPLATE
from instkit.viz.colors import class_color, hex_color, instance_colors
from instkit.viz.overlay import (
    draw_evaluation,
    draw_instances,
    readable_by_all,
    save_image,
)

__all__ = ["dataset_report", "eval_report"]

# Bump when the drawing changes, so that existing pictures are redrawn.
_RENDER_VERSION = 1
_SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}
_MANIFEST = "manifest.json"


# --- shared helpers ---------------------------------------------------------------------------


def _check_output(out_dir: Path, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse an output folder that would write over (or into) the inputs."""
    out = out_dir.resolve()
    written = {out / "index.html", out / "data.js"}
    for item in inputs:
        if item is None:
            continue
        path = Path(item).resolve()
        if path == out or path in written or (path.is_dir() and out == path):
            raise InstkitError(f"the report folder {out} would write over the input {path}; "
                               "choose another -o")
        if path.is_dir() and (out / "img") == path:
            raise InstkitError(f"the report folder {out} would write into the input {path}")


def _digest_instances(h: Any, instances: Instances) -> None:
    h.update(repr(instances.image_size).encode())
    for column in (instances.boxes, instances.labels, instances.iscrowd, instances.ids):
        h.update(np.ascontiguousarray(column).tobytes())
    if instances.scores is not None:
        h.update(np.ascontiguousarray(instances.scores).tobytes())
    if instances.keypoints is not None:
        h.update(np.ascontiguousarray(instances.keypoints).tobytes())
    if instances.masks is not None:
        for item in instances.masks.items:
            if isinstance(item, PolygonMask):
                for part in item.parts:
                    h.update(b"P" + np.ascontiguousarray(part).tobytes())
            elif isinstance(item, RLEMask):
                h.update(b"R" + item.counts)
            elif isinstance(item, BitmapMask):
                h.update(b"B" + repr(item.offset).encode() + item.bitmap.tobytes())


def _file_stamp(path: str | None) -> str:
    if path is None:
        return "-"
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


@dataclass
class _Job:
    """One image's two pictures; ``draw(max_side)`` returns the overlay at that size."""

    key: str
    image_id: int
    digest: str
    draw: Callable[[int], np.ndarray]
    size: tuple[int, int]


def _placeholder(size: tuple[int, int], max_side: int, message: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    scale = min(1.0, max_side / max(size))
    w, h = max(16, round(size[1] * scale)), max(16, round(size[0] * scale))
    picture = Image.new("RGB", (w, h), (70, 74, 82))
    draw = ImageDraw.Draw(picture)
    draw.line((0, 0, w, h), fill=(120, 60, 60), width=2)
    draw.line((0, h, w, 0), fill=(120, 60, 60), width=2)
    draw.text((8, 8), message[:60], fill=(255, 230, 230))
    return np.asarray(picture)


def _render_all(jobs: list[_Job], img_dir: Path, thumb_size: int, detail_size: int,
                workers: int | None, progress: bool) -> tuple[dict[str, dict[str, Any]],
                                                           dict[str, str], int]:
    """Draw every job's thumbnail and detail picture unless its digest is unchanged.

    Returns per-key ``{"tw", "th"}`` thumbnail sizes, per-key error messages, and the number of
    images drawn.
    """
    from tqdm.auto import tqdm

    img_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = img_dir / _MANIFEST
    old: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            loaded = load_json(manifest_path)
            if isinstance(loaded, dict) and loaded.get("version") == _RENDER_VERSION:
                old = loaded.get("images", {})
        except InstkitError:
            old = {}
    settings = f"{_RENDER_VERSION}:{thumb_size}:{detail_size}"
    entries: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    todo = []
    for job in jobs:
        digest = hashlib.sha1(f"{settings}:{job.digest}".encode()).hexdigest()
        previous = old.get(job.key)
        if (isinstance(previous, dict) and previous.get("digest") == digest
                and (img_dir / f"t_{job.key}.jpg").exists()
                and (img_dir / f"f_{job.key}.jpg").exists()):
            entries[job.key] = previous
            if previous.get("error"):
                errors[job.key] = previous["error"]
        else:
            todo.append((job, digest))

    def work(item: tuple[_Job, str]) -> tuple[str, dict[str, Any]]:
        job, digest = item
        entry: dict[str, Any] = {"digest": digest}
        try:
            thumb = job.draw(thumb_size)
            detail = job.draw(detail_size)
        except InstkitError as exc:
            entry["error"] = str(exc)
            thumb = _placeholder(job.size, thumb_size, "image cannot be drawn")
            detail = _placeholder(job.size, detail_size, str(exc))
        save_image(thumb, img_dir / f"t_{job.key}.jpg", quality=82)
        save_image(detail, img_dir / f"f_{job.key}.jpg", quality=88)
        entry["tw"], entry["th"] = int(thumb.shape[1]), int(thumb.shape[0])
        return job.key, entry

    threads = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    with tqdm(total=len(todo), desc="drawing overlays", unit="img", disable=not progress,
              leave=False) as bar:
        if threads == 1:
            results: Iterable[tuple[str, dict[str, Any]]] = map(work, todo)
        else:
            pool = ThreadPoolExecutor(max_workers=threads)
            results = pool.map(work, todo)
        try:
            for key, entry in results:
                entries[key] = entry
                if entry.get("error"):
                    errors[key] = entry["error"]
                bar.update(1)
        finally:
            if threads != 1:
                pool.shutdown(wait=True)
    # Pictures of images no longer in the report were ours: remove them.
    current = {job.key for job in jobs}
    for key in set(old) - current:
        for prefix in ("t_", "f_"):
            try:
                (img_dir / f"{prefix}{key}.jpg").unlink()
            except OSError:
                pass
    with atomic_write(manifest_path) as handle:
        json.dump({"version": _RENDER_VERSION, "images": entries}, handle)
    readable_by_all(manifest_path)
    return entries, errors, len(todo)


def _attach_renders(records: list[dict[str, Any]], entries: dict[str, dict[str, Any]],
                    errors: dict[str, str], thumb_size: int) -> None:
    """Thumbnail sizes and rendering errors from ``_render_all`` onto the page records."""
    for record in records:
        entry = entries.get(record["key"], {})
        record["tw"], record["th"] = entry.get("tw", thumb_size), entry.get("th", thumb_size)
        if record["key"] in errors:
            record["error"] = errors[record["key"]]


def _write_page(out_dir: Path, title: str, data: dict[str, Any]) -> Path:
    from html import escape

    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=_json_default)
    with atomic_write(out_dir / "data.js") as handle:
        handle.write("window.INSTKIT_REPORT = ")
        handle.write(text)
        handle.write(";\n")
    readable_by_all(out_dir / "data.js")
    page = (TEMPLATE.replace("__CSS__", CSS).replace("__JS__", JS)
            .replace("__TITLE__", escape(title)))
    index = out_dir / "index.html"
    with atomic_write(index) as handle:
        handle.write(page)
    readable_by_all(index)
    return index


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _finite(float(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the page data")


def _finite(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def _mask_description(item: Any) -> str:
    if isinstance(item, PolygonMask):
        vertices = sum(part.size // 2 for part in item.parts)
        parts = len(item.parts)
        return f"polygon {vertices} pts" + (f", {parts} parts" if parts != 1 else "")
    if isinstance(item, RLEMask):
        return "RLE (uncompressed)" if item.uncompressed else "RLE"
    if isinstance(item, BitmapMask):
        return f"bitmap {item.bitmap.shape[1]}x{item.bitmap.shape[0]}"
    return "none"


def _categories_data(categories: Categories, instance_counts: Counter[int],
                     image_counts: Counter[int]) -> list[dict[str, Any]]:
    return [
        {"label": label, "id": category.id, "name": category.name,
         "supercategory": category.supercategory, "color": hex_color(class_color(label)),
         "count": int(instance_counts.get(label, 0)), "images": int(image_counts.get(label, 0))}
        for label, category in enumerate(categories)
    ]


def _class_chart(categories: Categories, counts: Counter[int], title: str) -> dict[str, Any]:
    present = sorted((label for label in counts if counts[label] > 0),
                     key=lambda label: (-counts[label], label))
    names = [categories[label].name if label < len(categories) else f"class {label}"
             for label in present]
    svg = charts.bar_chart(names, [counts[label] for label in present],
                           colors=[hex_color(class_color(label)) for label in present],
                           title=title, value_format="{:,}")
    return {"title": title, "svg": svg, "tall": len(present) > 24}


def _count_histogram(values: Sequence[int], title: str, xlabel: str) -> dict[str, Any]:
    top = max(values, default=0)
    if top <= 20:
        edges = np.arange(0, top + 2) - 0.5
        ticks = [str(k) for k in range(top + 1)]
    else:
        step = math.ceil((top + 1) / 20)
        edges = np.arange(0, top + step + 1, step) - 0.5
        ticks = [f"{int(e + 0.5)}" for e in edges[:-1]]
    return {"title": title, "svg": charts.histogram(np.asarray(values), edges, title=title,
                                                    xlabel=xlabel, tick_labels=ticks)}


def _area_histogram(areas: np.ndarray, title: str) -> dict[str, Any]:
    sides = np.sqrt(np.maximum(areas.astype(np.float64), 0))
    top = max(2.0, float(sides.max()) if sides.size else 2.0)
    edges = np.geomspace(1, 2 ** math.ceil(math.log2(top) + 1e-9), 2 * math.ceil(math.log2(top)) + 1)
    edges[0] = 0
    ticks = [f"{e:.0f}" for e in edges[:-1]]
    svg = charts.histogram(sides, edges, title=title, xlabel="sqrt(area) in pixels",
                           tick_labels=ticks, markers=[(32, "small|medium"), (96, "medium|large")])
    return {"title": title, "svg": svg}


# --- dataset report ---------------------------------------------------------------------------


def _findings_by_place(report: Any) -> tuple[dict[int, list[dict[str, Any]]],
                                              dict[tuple[int, int], list[dict[str, Any]]],
                                              list[dict[str, Any]]]:
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    per_instance: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    loose: list[dict[str, Any]] = []
    for finding in report.findings:
        location: Location = finding.location
        entry = {"code": finding.code, "severity": finding.severity, "message": finding.message,
                 "where": location.describe(), "annotation_id": location.annotation_id}
        if location.image_id is None:
            loose.append(entry)
        elif location.annotation_id is not None:
            per_instance[(int(location.image_id), int(location.annotation_id))].append(entry)
            per_image[int(location.image_id)].append(entry)
        else:
            per_image[int(location.image_id)].append(entry)
    return per_image, per_instance, loose


def dataset_report(
    annotation_file: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = "report",
    *,
    validate: bool = True,
    thumb_size: int = 320,
    detail_size: int = 1280,
    workers: int | None = None,
    progress: bool = True,
    title: str | None = None,
    page_size: int = 60,
) -> Path:
    """Write the dataset page for a dataset to ``out_dir``; returns the ``index.html`` path.

    ``annotation_file``: any format of ``instkit.io.registry`` (detected). A COCO file is read
    leniently (what cannot be read is listed as a finding); with ``validate`` the findings of
    ``instkit.validate.validate_file`` are attached to their image and instance. Other formats
    are read by their reader (validation, COCO's rules, is skipped and the page says so; what
    the reader approximated is listed in the notes).
    """
    out = Path(out_dir)
    _check_output(out, [annotation_file, images])
    from instkit.io import registry

    notes: list[str] = []
    source_format = registry.detect(annotation_file)
    dataset: Any
    if source_format == "coco":
        dataset = read_coco(annotation_file, images, strict=False)
    else:  # any other format of the registry; validate's rules are COCO's
        dataset = registry.open(annotation_file, source_format, images=images)
        if validate:
            notes.append(f"read as {source_format}: validation (COCO's rules) was not run")
            validate = False
        for _key, count, note in registry.loss_notes(getattr(dataset, "read_counts", {}),
                                                    source_format):
            notes.append(f"reading {source_format}: {count} {note}")
    categories = categories_of(dataset)
    if categories is None:
        raise InstkitError("the dataset carries no category table",
                           Location(file=os.fspath(annotation_file)))
    image_root = getattr(dataset, "image_root", None) or os.fspath(annotation_file)
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    per_instance: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    loose: list[dict[str, Any]] = []
    for problem in getattr(dataset, "problems", []):
        entry = {"code": "unreadable", "severity": "error", "message": problem.message,
                 "where": problem.location.describe(),
                 "annotation_id": problem.location.annotation_id}
        if problem.location.image_id is not None:
            per_image[int(problem.location.image_id)].append(entry)
        else:
            loose.append(entry)
    if validate:
        try:
            from instkit.validate import validate_file
        except ImportError:
            notes.append("instkit.validate is not available: no validation findings shown")
        else:
            report = validate_file(annotation_file, images, progress=progress)
            found_image, found_instance, found_loose = _findings_by_place(report)
            for key, value in found_image.items():
                per_image[key].extend(value)
            per_instance.update(found_instance)
            loose.extend(found_loose)
    else:
        notes.append("validation was skipped (--no-validate)")

    instance_counts: Counter[int] = Counter()
    image_counts: Counter[int] = Counter()
    per_image_n: list[int] = []
    all_areas: list[np.ndarray] = []
    crowd_total = 0
    keypointed = 0
    sizes: Counter[tuple[int, int]] = Counter()
    code_images: Counter[str] = Counter()
    code_severity: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    jobs: list[_Job] = []
    root_stamp = str(image_root)
    for index in range(len(dataset)):
        sample = dataset[index]
        inst = sample.instances
        image_id = sample.image_id
        n = len(inst)
        per_image_n.append(n)
        sizes[sample.image_size] += 1
        labels = inst.labels
        instance_counts.update(labels.tolist())
        image_counts.update(set(labels.tolist()))
        crowd = int(inst.iscrowd.sum())
        crowd_total += crowd
        if inst.keypoints is not None:
            keypointed += int((inst.keypoints[:, :, 2] > 0).any(axis=1).sum())
        areas = inst.masks.area() if inst.masks is not None else np.round(
            (inst.boxes[:, 2] - inst.boxes[:, 0]) * (inst.boxes[:, 3] - inst.boxes[:, 1]))
        all_areas.append(areas[~inst.iscrowd])
        coco_area = inst.extras.get("coco_area")
        colors = instance_colors(labels, inst.ids)
        items = inst.masks.items if inst.masks is not None else [None] * n
        rows = []
        for i in range(n):
            box = inst.boxes[i]
            box_area = float((box[2] - box[0]) * (box[3] - box[1]))
            findings = per_instance.get((image_id, int(inst.ids[i])), [])
            rows.append({
                "id": int(inst.ids[i]), "label": int(labels[i]), "color": hex_color(colors[i]),
                "crowd": bool(inst.iscrowd[i]), "box": _xywh(box), "area": int(areas[i]),
                "coco_area": None if coco_area is None else _finite(float(coco_area[i]), 2),
                "fill": _finite(float(areas[i]) / box_area if box_area > 0 else None, 3),
                "mask": _mask_description(items[i]),
                "findings": findings,
            })
        findings = per_image.get(image_id, [])
        shown_ids = {int(a) for a in inst.ids.tolist()}
        image_level = [f for f in findings if f.get("annotation_id") not in shown_ids]
        codes = sorted({f["code"] for f in findings})
        for code in codes:
            code_images[code] += 1
        for f in findings:
            if _SEVERITY_RANK.get(f["severity"], 0) > _SEVERITY_RANK.get(
                    code_severity.get(f["code"], ""), 0):
                code_severity[f["code"]] = f["severity"]
        worst = max((f["severity"] for f in findings),
                    key=lambda s: _SEVERITY_RANK.get(s, 0), default="info")
        record_key = str(index)
        records.append({
            "id": image_id, "key": record_key, "file": sample.meta.file_name, "w": sample.image_size[1],
            "h": sample.image_size[0], "n": n, "labels": sorted(set(labels.tolist())),
            "crowd": crowd, "codes": codes, "nf": len(findings), "worst": worst,
            "findings": image_level,
            "inst": rows, "thumb": f"img/t_{record_key}.jpg", "full": f"img/f_{record_key}.jpg",
        })
        h = hashlib.sha1()
        _digest_instances(h, inst)
        h.update(_file_stamp(sample.image_path).encode() + root_stamp.encode())
        h.update(json.dumps(categories.names).encode())
        jobs.append(_Job(record_key, image_id, h.hexdigest(),
                         _sample_drawer(dataset, index, categories), sample.image_size))

    out.mkdir(parents=True, exist_ok=True)
    entries, errors, drawn = _render_all(jobs, out / "img", thumb_size, detail_size, workers,
                                         progress)
    _attach_renders(records, entries, errors, thumb_size)
    for record in records:
        if record["key"] in errors:
            if not any(f["code"] == "image_unreadable" for f in record["findings"]):
                finding = {"code": "image_unreadable", "severity": "error",
                           "message": errors[record["key"]], "where": f"image_id={record['id']}"}
                record["findings"].append(finding)
                record["codes"] = sorted(set(record["codes"]) | {"image_unreadable"})
                record["nf"] += 1
                record["worst"] = "error"
                code_images["image_unreadable"] += 1
                code_severity["image_unreadable"] = "error"

    areas = np.concatenate(all_areas) if all_areas else np.zeros(0)
    total = int(sum(per_image_n))
    empty = sum(1 for n in per_image_n if n == 0)
    common_size, common_count = sizes.most_common(1)[0] if sizes else ((0, 0), 0)
    severity_counts = Counter(f["severity"] for r in records for f in r["findings"])
    severity_counts.update(f["severity"] for r in records for row in r["inst"]
                           for f in row["findings"])
    severity_counts.update(f["severity"] for f in loose)
    summary: list[list[Any]] = [
        ["images", len(records)], ["instances", total], ["categories used",
                                                         len(instance_counts)],
        ["crowd regions", crowd_total], ["images without instances", empty],
        ["instances per image (mean)", round(total / max(1, len(records)), 2)],
        ["most common size (WxH)", f"{common_size[1]}x{common_size[0]} ({common_count})"],
        ["errors found", severity_counts.get("error", 0)],
        ["warnings found", severity_counts.get("warning", 0)],
    ]
    if keypointed:
        summary.insert(4, ["instances with keypoints", keypointed])
    if areas.size:
        small = int((areas < 32 ** 2).sum())
        large = int((areas >= 96 ** 2).sum())
        summary.append(["small / medium / large", f"{small} / {areas.size - small - large} / {large}"])
    chart_list = [_class_chart(categories, instance_counts, "Instances per class"),
                  _count_histogram(per_image_n, "Instances per image", "instances in the image")]
    if areas.size:
        chart_list.append(_area_histogram(areas, "Object sizes (non-crowd)"))
    if code_images:
        codes_sorted = sorted(code_images, key=lambda c: (-code_images[c], c))
        severity_color = {"error": "#cf222e", "warning": "#bf8700", "info": "#8c959f"}
        chart_list.append({"title": "Images per finding", "svg": charts.bar_chart(
            codes_sorted, [code_images[c] for c in codes_sorted],
            colors=[severity_color.get(code_severity.get(c, "info"), "#8c959f")
                    for c in codes_sorted], title="Images per validation finding")})
    name = title or f"Dataset: {Path(annotation_file).name}"
    data = {
        "kind": "dataset", "title": name, "page_size": page_size,
        "subtitle": (f"{os.fspath(annotation_file)} — images from {image_root} — "
                     f"instkit {__version__}, {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"),
        "summary": summary, "notes": notes, "charts": chart_list,
        "categories": _categories_data(categories, instance_counts, image_counts),
        "finding_codes": [{"code": c, "images": code_images[c],
                           "severity": code_severity.get(c, "info")}
                          for c in sorted(code_images)],
        "dataset_findings": loose,
        "images": records,
        "drawn": drawn,
    }
    return _write_page(out, name, data)


def _sample_drawer(dataset: Sequence[Sample], index: int,
                   categories: Categories) -> Callable[[int], np.ndarray]:
    def draw(max_side: int) -> np.ndarray:
        sample = dataset[index]
        many = len(sample.instances) > 12 and max_side <= 400
        return draw_instances(sample.image, sample.instances, categories,
                              max_side=max_side, labels=not many)

    return draw


# --- evaluation report ------------------------------------------------------------------------


def eval_report(
    ground_truth: str | os.PathLike[str],
    predictions: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = "report",
    *,
    iou_threshold: float = 0.5,
    score_threshold: float | str = 0.5,
    thumb_size: int = 320,
    detail_size: int = 1280,
    workers: int | None = None,
    progress: bool = True,
    title: str | None = None,
    page_size: int = 60,
) -> Path:
    """Write the evaluation page of COCO results against a COCO ground truth; returns
    ``index.html``.

    mAP, per-class AP and precision-recall curves come from ``instkit.evaluation.evaluate``
    (every prediction, as COCO counts them); the per-image true/false positives and misses, the
    overlays and the order of the images (most errors first) use predictions scoring at least
    ``score_threshold`` (``"f1"``: the score with the best F1) matched at ``iou_threshold``.
    """
    from instkit.evaluation import evaluate, read_coco_results

    out = Path(out_dir)
    _check_output(out, [ground_truth, predictions, images])
    gt = read_coco(ground_truth, images)
    categories = gt.categories
    preds = read_coco_results(predictions, gt)
    gt_has_masks = len(gt) > 0 and gt[0].instances.masks is not None
    pred_has_masks = any(p.instances.masks is not None and len(p.instances) for p in preds)
    iou_type = "segm" if gt_has_masks and pred_has_masks else "bbox"
    iou_types = ("segm", "bbox") if iou_type == "segm" else ("bbox",)
    result = evaluate(gt, preds, categories, iou_types=iou_types, score_threshold=score_threshold,
                      progress=progress)
    score_threshold = result.score_threshold  # "f1" resolved to its score
    records: list[dict[str, Any]] = []
    jobs: list[_Job] = []
    per_class_errors: dict[int, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for index in range(len(gt)):
        sample = gt[index]
        pred = preds[index]
        if pred.image_id != sample.image_id:
            raise InstkitError(f"predictions are out of order at index {index}: image_id "
                               f"{pred.image_id} against {sample.image_id}")
        g_inst, p_inst = sample.instances, pred.instances
        if p_inst.masks is None and iou_type == "segm":
            p_inst = _with_empty_masks(p_inst)
        outcome = match_image(g_inst, p_inst, iou_threshold=iou_threshold,
                              iou_type=iou_type, score_threshold=score_threshold)
        kept = outcome.predictions
        assert kept is not None  # match_image always sets it
        pred_rows = []
        for p in range(len(kept)):
            label = int(kept.labels[p])
            status = ("tp" if outcome.pred_matched[p] else "ignored" if outcome.pred_ignored[p]
                      else "fp")
            per_class_errors[label][status] += 1
            g = int(outcome.pred_to_gt[p])
            pred_rows.append({
                "score": _finite(float(kept.scores[p]) if kept.scores is not None else None),
                "label": label, "outcome": status, "iou": _finite(float(outcome.pred_iou[p]), 3),
                "gt": int(g_inst.ids[g]) if g >= 0 else None, "box": _xywh(kept.boxes[p]),
            })
        gt_rows = []
        areas = g_inst.masks.area() if g_inst.masks is not None else np.zeros(len(g_inst))
        for g in range(len(g_inst)):
            status = ("ignored (crowd)" if outcome.gt_ignored[g]
                      else "found" if outcome.gt_matched[g] else "missed")
            if status == "missed":
                per_class_errors[int(g_inst.labels[g])]["fn"] += 1
            gt_rows.append({"id": int(g_inst.ids[g]), "label": int(g_inst.labels[g]),
                            "outcome": status, "area": int(areas[g]),
                            "box": _xywh(g_inst.boxes[g])})
        totals.update({"tp": outcome.tp, "fp": outcome.fp, "fn": outcome.fn})
        key = str(index)
        labels = sorted(set(g_inst.labels.tolist()) | set(kept.labels.tolist()))
        records.append({
            "id": sample.image_id, "key": key, "file": sample.meta.file_name,
            "w": sample.image_size[1], "h": sample.image_size[0], "n": len(g_inst),
            "labels": labels, "crowd": int(g_inst.iscrowd.sum()), "codes": [], "nf": 0,
            "tp": outcome.tp, "fp": outcome.fp, "fn": outcome.fn,
            "preds": pred_rows, "gts": gt_rows,
            "thumb": f"img/t_{key}.jpg", "full": f"img/f_{key}.jpg",
        })
        h = hashlib.sha1()
        _digest_instances(h, g_inst)
        _digest_instances(h, p_inst)
        h.update(f"{iou_threshold}:{score_threshold}:{iou_type}:{_file_stamp(sample.image_path)}"
                 .encode())
        h.update(json.dumps(categories.names).encode())
        jobs.append(_Job(key, sample.image_id, h.hexdigest(),
                         _eval_drawer(gt, index, outcome, iou_type), sample.image_size))
    # Most errors first; then most missed; then file order.
    order = sorted(range(len(records)),
                   key=lambda k: (-(records[k]["fp"] + records[k]["fn"]), -records[k]["fn"], k))
    records = [records[k] for k in order]

    out.mkdir(parents=True, exist_ok=True)
    entries, errors, drawn = _render_all(jobs, out / "img", thumb_size, detail_size, workers,
                                         progress)
    _attach_renders(records, entries, errors, thumb_size)

    per_class = []
    instance_counts: Counter[int] = Counter()
    image_counts: Counter[int] = Counter()
    for record in records:
        image_counts.update(record["labels"])
    for row in result.per_class:
        label = int(row.get("label", categories.label_of(int(row["category_id"]))))
        instance_counts[label] = int(row.get("num_gt", 0))
        errors_of = per_class_errors.get(label, Counter())
        per_class.append({
            "label": label, "name": row["name"], "color": hex_color(class_color(label)),
            "num_gt": int(row.get("num_gt", 0)), "num_pred": int(row.get("num_pred", 0)),
            "mask_ap50": _finite(row.get("mask_ap50")), "mask_ap": _finite(row.get("mask_ap")),
            "box_ap50": _finite(row.get("box_ap50")), "box_ap": _finite(row.get("box_ap")),
            "tp": errors_of.get("tp", 0), "fp": errors_of.get("fp", 0), "fn": errors_of.get("fn", 0),
        })
    per_class.sort(key=lambda r: (-(r["num_gt"]), r["name"]))
    summary: list[list[Any]] = []
    if "segm" in iou_types:
        summary += [["mask mAP@0.5", _finite(result.mask_map50)],
                    ["mask mAP@[.5:.95]", _finite(result.mask_map)]]
    summary += [["box mAP@0.5", _finite(result.box_map50)],
                ["box mAP@[.5:.95]", _finite(result.box_map)]]
    if "segm" in iou_types:
        summary.append(["mean IoU (union)", _finite(result.mean_iou)])
    summary += [["images", len(records)], ["predictions", int(result.num_predictions)],
                [f"TP (score ≥ {score_threshold:g})", totals["tp"]], ["FP", totals["fp"]],
                ["FN (missed)", totals["fn"]]]
    chart_list = [_pr_chart(result.pr_curves, per_class, iou_type)]
    analysis = analyze(gt, preds, categories, iou_type=iou_type, iou_threshold=iou_threshold,
                       score_threshold=score_threshold,
                       background_iou=min(0.1, iou_threshold / 2))
    chart_list += _analysis_charts(analysis)
    errors_by_label = {row["label"]: {name: row[name] for name in ERROR_TYPES}
                       for row in analysis.per_class}
    for row in per_class:
        row["errors"] = errors_by_label.get(row["label"], {})
    summary.append(["errors (cls/loc/both/dupe/bkg/missed)",
                    " / ".join(str(analysis.errors[name]) for name in ERROR_TYPES)])
    ap_key = "mask_ap50" if iou_type == "segm" else "box_ap50"
    ranked = [r for r in per_class if r[ap_key] is not None]
    ranked.sort(key=lambda r: -r[ap_key])
    if ranked:
        chart_list.append({"title": "AP50 per class", "tall": len(ranked) > 24,
                           "svg": charts.bar_chart(
                               [r["name"] for r in ranked], [r[ap_key] for r in ranked],
                               colors=[r["color"] for r in ranked], max_value=1.0,
                               value_format="{:.3f}",
                               title=f"{'Mask' if iou_type == 'segm' else 'Box'} AP@0.5 per class")})
    name = title or f"Evaluation: {Path(predictions).name} against {Path(ground_truth).name}"
    data = {
        "kind": "eval", "title": name, "page_size": page_size,
        "subtitle": (f"ground truth {os.fspath(ground_truth)} — predictions "
                     f"{os.fspath(predictions)} — images from {gt.image_root} — instkit "
                     f"{__version__}, {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"),
        "summary": summary, "charts": chart_list,
        "notes": [f"AP uses every prediction (COCO, up to 100 per image); TP/FP/FN, overlays and "
                  f"the image order use predictions with score ≥ {score_threshold:g} matched at "
                  f"{'mask' if iou_type == 'segm' else 'box'} IoU ≥ {iou_threshold:g}."],
        "iou_threshold": iou_threshold, "score_threshold": score_threshold,
        "iou_type": iou_type, "per_class": per_class,
        "categories": _categories_data(categories, instance_counts, image_counts),
        "images": records, "drawn": drawn, "analysis": analysis.as_dict(),
    }
    return _write_page(out, name, data)


def _with_empty_masks(instances: Instances) -> Instances:
    from instkit.masks import Masks

    empty = BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0))
    return instances.replace(masks=Masks([empty] * len(instances), instances.image_size))


def _eval_drawer(gt: CocoDataset, index: int, outcome: Match, iou_type: str
                 ) -> Callable[[int], np.ndarray]:
    predictions = outcome.predictions
    assert predictions is not None  # made by match_image

    def draw(max_side: int) -> np.ndarray:
        sample = gt[index]
        small = max_side <= 400
        return draw_evaluation(sample.image, sample.instances, predictions,
                               gt.categories, outcome=outcome, iou_type=iou_type,
                               max_side=max_side, legend=not small,
                               font_size=10 if small else None)

    return draw


def _analysis_charts(analysis: ErrorAnalysis, max_classes: int = 30) -> list[dict[str, Any]]:
    """The error breakdown (AP each fix adds) and the confusion matrix as SVG pictures."""
    kind = "mask" if analysis.iou_type == "segm" else "box"
    out: list[dict[str, Any]] = [{"title": "Error breakdown", "svg": charts.bar_chart(
        [f"{name} ({analysis.errors[name]})" for name in ERROR_TYPES],
        [max(0.0, analysis.delta_ap[name]) if math.isfinite(analysis.delta_ap[name]) else 0.0
         for name in ERROR_TYPES],
        value_format="{:.3f}",
        title=f"AP@{analysis.iou_threshold:g} gained by fixing each error type ({kind})")}]
    sizes = [row for row in analysis.per_size if row["num_gt"]]
    if sizes:
        out.append({"title": "Found by object size", "svg": charts.bar_chart(
            [f"{row['size']} ({row['num_gt']})" for row in sizes],
            [row["recall"] for row in sizes], max_value=1.0, value_format="{:.3f}",
            title=f"Share of objects found at {kind} IoU {analysis.iou_threshold:g} by size "
                  "(COCO areas)")})
    matrix = analysis.confusion
    names = [*analysis.names, "background"]
    used = np.flatnonzero((matrix.sum(axis=0) + matrix.sum(axis=1)) > 0)
    used = np.union1d(used, [len(names) - 1])
    if len(used) > max_classes + 1:  # keep the classes with the most ground truth
        counts = matrix.sum(axis=1)[:-1]
        top = np.argsort(-counts, kind="stable")[:max_classes]
        used = np.union1d(np.sort(top), [len(names) - 1])
    out.append({"title": "Confusion matrix", "tall": len(used) > 12,
                "svg": _confusion_svg(matrix[np.ix_(used, used)], [names[k] for k in used],
                                      f"Confusion matrix at {kind} IoU "
                                      f"{analysis.iou_threshold:g}, score ≥ "
                                      f"{analysis.score_threshold:g} (rows: ground truth)")})
    return out


def _confusion_svg(matrix: np.ndarray, names: list[str], title: str) -> str:
    """A heat map: cell shade by the row's share, the count written in each non-zero cell."""
    from html import escape

    n = len(names)
    cell = 26 if n <= 16 else 18
    label = min(150, 12 + 7 * max(len(x) for x in names))
    top = 22 + label
    width, height = label + n * cell + label // 2 + 8, top + n * cell + 8  # rotated names
    rows = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    parts = [f'<text x="0" y="14" font-weight="600" fill="#30343b">{escape(title)}</text>']
    for k, name in enumerate(names):
        y = top + k * cell + cell * 0.65
        parts.append(f'<text x="{label - 4}" y="{y:.1f}" text-anchor="end" '
                     f'fill="#30343b">{escape(name)}</text>')
        x = label + k * cell + cell * 0.6
        parts.append(f'<text x="{x:.1f}" y="{top - 4}" transform="rotate(-60 {x:.1f} {top - 4})"'
                     f' fill="#30343b">{escape(name)}</text>')
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            share = value / float(rows[i, 0])
            color = "#2f7d4f" if i == j else "#c0392b"
            x, y = label + j * cell, top + i * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="{color}" fill-opacity="{0.08 + 0.9 * share:.3f}">'
                         f'<title>{escape(names[i])} → {escape(names[j])}: {value}</title></rect>')
            if value:
                parts.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell * 0.65:.1f}" '
                             f'text-anchor="middle" fill="{"#fff" if share > 0.5 else "#111"}">'
                             f'{value}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" font-family="system-ui, sans-serif" '
            f'font-size="10">{"".join(parts)}</svg>')


def _pr_chart(curves: list[dict[str, Any]], per_class: list[dict[str, Any]], iou_type: str
              ) -> dict[str, Any]:
    colors = {row["name"]: row["color"] for row in per_class}
    series = []
    stacked = []
    for curve in curves:
        precision = np.asarray(curve.get("precision", []), dtype=np.float64)
        recall = np.asarray(curve.get("recall", np.linspace(0, 1, precision.size)),
                            dtype=np.float64)
        if precision.size == 0 or not np.isfinite(precision).any():
            continue
        series.append((str(curve["name"]), recall, precision,
                       colors.get(str(curve["name"]), "#4c78a8")))
        stacked.append(np.where(np.isfinite(precision), precision, 0.0))
    if stacked:
        mean = np.mean(np.stack(stacked), axis=0)
        series.append(("mean over classes", series[0][1], mean, "#111111"))
    kind = "mask" if iou_type == "segm" else "box"
    title = f"Precision-recall at {kind} IoU 0.5"
    svg = charts.line_chart(series, title=title, xlabel="recall", ylabel="precision",
                            highlight="mean over classes" if series else None)
    return {"title": title, "svg": svg}

"""Sharded validate / stats / convert with 1 and 2 local worker processes (and Ray, full run).

Two shard sets, both tar shards with image bytes (read from the tar, as a real run reads them):

- ``coco``: tinycoco train's real annotations (polygons, multi-part, crowd RLE) replicated under
  new ids, written by ``instkit convert --to shards`` (instkit's format, real JPEG bytes).
- ``sa1b``: SA-1B-style tars (``sa_N.jpg`` + ``sa_N.json``): 1500x2250 images with ~100 RLE
  masks each, SA-1B's per-image JSON fields (predicted_iou, stability_score, point_coords,
  crop_box). The masks are random polygons rasterised at full size; the image bytes are one real
  JPEG (validate and stats do not decode images; the decode rate of an SA-1B-sized JPEG is
  measured separately for the image check of the plan in docs/scaling.md).

Agreement, checked before timing: the report and the statistics with 2 workers equal those with
1; the findings of the sharded run equal those of one walk over the merged COCO document (by
code, image id and annotation id); the statistics equal ``compute_stats`` of the merged file; a
re-sharding with 2 workers writes the same bytes as with 1.

The machine has 2 cores shared with other jobs: the load average is recorded with the figures.
Run under ``flock /tmp/instkit-bench.lock``. Results: ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TINYCOCO, best_time, main, result  # noqa: E402


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def build_coco(images: int, path: Path) -> Path:
    """tinycoco train replicated to ``images`` images (new image and annotation ids)."""
    source = json.loads((TINYCOCO / "annotations" / "instances_train2017.json").read_text())
    out_images, out_annotations = [], []
    next_image, next_ann = 1, 1
    while len(out_images) < images:
        remap = {}
        for image in source["images"]:
            if len(out_images) >= images:
                break
            remap[image["id"]] = next_image
            out_images.append(dict(image, id=next_image))
            next_image += 1
        for ann in source["annotations"]:
            if ann["image_id"] in remap:
                out_annotations.append(dict(copy.deepcopy(ann), id=next_ann,
                                            image_id=remap[ann["image_id"]]))
                next_ann += 1
    document = {"images": out_images, "annotations": out_annotations,
                "categories": source["categories"]}
    path.write_text(json.dumps(document))
    return path


def _sa1b_masks(rng: Any, height: int, width: int, count: int) -> list[dict[str, Any]]:
    import numpy as np
    import pycocotools.mask as mask_utils

    polygons = []
    for _ in range(count):
        radius = float(np.exp(rng.uniform(np.log(8), np.log(400))))
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 24))
        r = radius * rng.uniform(0.6, 1.0, 24)
        polygons.append(np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel())
    rles = mask_utils.frPyObjects([p.tolist() for p in polygons], height, width)
    out = []
    for rle in rles:
        box = mask_utils.toBbox(rle).tolist()
        out.append({"segmentation": {"size": [height, width],
                                     "counts": rle["counts"].decode("ascii")},
                    "bbox": box, "area": int(mask_utils.area(rle)),
                    "predicted_iou": float(rng.uniform(0.8, 1.0)),
                    "stability_score": float(rng.uniform(0.9, 1.0)),
                    "point_coords": [[box[0] + box[2] / 2, box[1] + box[3] / 2]],
                    "crop_box": [0, 0, width, height]})
    return out


def build_sa1b(images: int, per_shard: int, folder: Path, distinct_rows: int = 20) -> Path:
    """SA-1B-style tars: ``images`` rows of ~100 RLE masks at 1500x2250 (``distinct_rows``
    distinct rows replicated under new ids)."""
    import numpy as np

    rng = np.random.default_rng(0)
    height, width = 1500, 2250
    distinct = [_sa1b_masks(rng, height, width, int(rng.integers(60, 140)))
                for _ in range(distinct_rows)]
    jpeg = next(iter(sorted((TINYCOCO / "images" / "train2017").glob("*.jpg")))).read_bytes()
    folder.mkdir(parents=True)
    next_ann = 1
    for shard in range(-(-images // per_shard)):
        with tarfile.open(folder / f"sa_{shard:06d}.tar", "w") as archive:
            for k in range(shard * per_shard, min(images, (shard + 1) * per_shard)):
                annotations = []
                for ann in distinct[k % len(distinct)]:
                    annotations.append(dict(ann, id=next_ann))
                    next_ann += 1
                row = {"image": {"image_id": k + 1, "width": width, "height": height,
                                 "file_name": f"sa_{k + 1}.jpg"}, "annotations": annotations}
                for name, data in ((f"sa_{k + 1}.jpg", jpeg),
                                   (f"sa_{k + 1}.json", json.dumps(row).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return folder


def merged_document(shards: Any) -> dict[str, Any]:
    from instkit.shards import shard_document

    images, annotations = [], []
    categories: Any = None
    for k in range(len(shards)):
        document = shard_document(shards, k).document
        images += document["images"]
        annotations += document["annotations"]
        categories = document["categories"]
    return {"images": images, "annotations": annotations, "categories": categories}


def _keys(findings: Any) -> Counter[tuple[str, Any, Any]]:
    return Counter((f.code, f.location.image_id, f.location.annotation_id) for f in findings)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def agreement(shards: Any, work: Path) -> dict[str, bool]:
    from instkit.io.coco import CocoDataset
    from instkit.shards import convert_shards, stats_shards, validate_shards
    from instkit.stats import compute_stats
    from instkit.validate import validate_document

    one = validate_shards(shards, workers=1)
    two = validate_shards(shards, workers=2)
    merged = merged_document(shards)
    whole = validate_document(merged)
    stats_one, _ = stats_shards(shards, workers=1)
    stats_two, _ = stats_shards(shards, workers=2)
    single = compute_stats(CocoDataset(merged, strict=False))
    a, b = work / "reshard-1", work / "reshard-2"
    convert_shards(shards, a, "shards", shard_size=50, workers=1)
    convert_shards(shards, b, "shards", shard_size=50, workers=2)
    return {"validate_1_vs_2_workers": one.as_dict() == two.as_dict(),
            "validate_vs_merged_file": _keys(one.findings) == _keys(whole.findings),
            "stats_1_vs_2_workers": stats_one.as_dict() == stats_two.as_dict(),
            "stats_vs_merged_file": stats_one.as_dict() == single.as_dict(),
            "convert_same_bytes": _digests(a) == _digests(b)}


def jpeg_decode_rate(seconds: float = 2.0) -> dict[str, float]:
    """Decodes per second of one core for an SA-1B-sized JPEG (2250x1500, quality 90)."""
    from PIL import Image

    from instkit.io.sa1b import decode_image

    source = next(iter(sorted((TINYCOCO / "images" / "train2017").glob("*.jpg"))))
    buffer = io.BytesIO()
    Image.open(source).convert("RGB").resize((2250, 1500)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        decode_image(data, "bench.jpg")
        count += 1
    return {"jpeg_bytes": len(data), "decodes_per_s": count / (time.perf_counter() - start)}


def _reshard(shards: Any, work: Path, name: str, workers: int, runs: Any) -> None:
    from instkit.shards import convert_shards

    convert_shards(shards, work / f"out-{name}-{workers}-{next(runs)}", "shards",
                   shard_size=10_000, workers=workers)


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (this process and its reaped worker processes)
    of ``repeat`` runs: the CPU time is the per-core cost, which other jobs on the machine
    disturb much less than the wall time."""
    import gc
    import resource

    walls, cpus = [], []
    for _ in range(repeat):
        gc.collect()
        before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                       resource.RUSAGE_CHILDREN)]
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN)]
        cpus.append(sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
                        for a, b in zip(after, before)))
    return min(walls), min(cpus)


def run(quick: bool) -> dict[str, Any]:
    from instkit.io.coco import read_coco
    from instkit.shards import convert_to_shards, open_shards, stats_shards, validate_shards

    repeat = 1 if quick else 2
    rows: list[dict[str, Any]] = []
    agree_all: dict[str, dict[str, bool]] = {}
    loads = {"before": loadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coco_images = 64 if quick else 1600
        coco_file = build_coco(coco_images, work / "coco.json")
        coco_shards = work / "coco-shards"
        convert_to_shards(coco_file, "coco", coco_shards,
                          shard_size=coco_images // (4 if quick else 8),
                          opener=functools.partial(read_coco, coco_file,
                                                   TINYCOCO / "images" / "train2017"),
                          engine="local", workers=1, address=None, progress=False)
        sa1b_images = 16 if quick else 320
        sa1b = build_sa1b(sa1b_images, sa1b_images // (4 if quick else 8), work / "sa1b",
                          4 if quick else 20)
        cases = {"coco": open_shards(coco_shards), "sa1b": open_shards(sa1b)}
        for name, shards in cases.items():
            agree_all[name] = agreement(shards, work / f"agree-{name}")
            size = sum(p.stat().st_size for p in Path(shards.root).parent.glob("*.tar")) \
                if shards.kind == "instkit" else sum(Path(s.path).stat().st_size
                                                     for s in shards.shards)
            report = validate_shards(shards, workers=1)
            n_images, n_annotations = report.counts["images"], report.counts["annotations"]
            jobs = {
                "validate": lambda s=shards, w=1: validate_shards(s, workers=w),
                "stats": lambda s=shards, w=1: stats_shards(s, workers=w),
            }
            for job, fn in jobs.items():
                base = None
                for workers in (1, 2):
                    seconds, cpu = timed(functools.partial(fn, w=workers), repeat)
                    base = base or seconds
                    rows.append({"case": name, "job": job, "engine": "local", "workers": workers,
                                 "shards": len(shards), "images": n_images,
                                 "annotations": n_annotations, "MB": round(size / 1e6, 1),
                                 "seconds": seconds, "images_per_s": n_images / seconds,
                                 "annotations_per_s": n_annotations / seconds,
                                 "speedup": base / seconds, "cpu_s": cpu,
                                 "annotations_per_cpu_s": n_annotations / cpu})
            base = None
            runs = iter(range(1000))
            for workers in (1, 2):
                convert = functools.partial(_reshard, shards, work, name, workers, runs)
                seconds, cpu = timed(convert, repeat)
                base = base or seconds
                rows.append({"case": name, "job": "convert (re-shard)", "engine": "local",
                             "workers": workers, "shards": len(shards), "images": n_images,
                             "annotations": n_annotations, "MB": round(size / 1e6, 1),
                             "seconds": seconds, "images_per_s": n_images / seconds,
                             "annotations_per_s": n_annotations / seconds,
                             "speedup": base / seconds, "cpu_s": cpu,
                             "annotations_per_cpu_s": n_annotations / cpu})
        if not quick:
            try:
                import ray  # noqa: F401

                start = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                startup = time.perf_counter() - start
                shards = cases["coco"]
                seconds = best_time(lambda: validate_shards(shards, engine="ray", workers=2),
                                    repeat=repeat, warmup=1)
                report = validate_shards(shards, engine="ray", workers=2)
                agree_all["coco"]["ray_equals_local"] = \
                    report.as_dict() == validate_shards(shards, workers=1).as_dict()
                ray.shutdown()
                rows.append({"case": "coco", "job": "validate", "engine": "ray", "workers": 2,
                             "shards": len(shards), "images": report.counts["images"],
                             "annotations": report.counts["annotations"], "seconds": seconds,
                             "images_per_s": report.counts["images"] / seconds,
                             "annotations_per_s": report.counts["annotations"] / seconds,
                             "ray_startup_s": startup})
            except ImportError:
                pass
    decode = jpeg_decode_rate(0.5 if quick else 3.0)
    loads["after"] = loadavg()
    agree = all(all(v.values()) for v in agree_all.values())
    targets = []
    for row in rows:
        if row["workers"] == 2 and row["engine"] == "local":
            targets.append({"claim": f"{row['case']} {row['job']}: 2 workers vs 1",
                            "value": row["speedup"], "target": ">= 1.6 on 2 idle cores",
                            "met": row["speedup"] >= 1.6})
    notes = (f"load average {loads['before']} before, {loads['after']} after; "
             f"OMP/OpenCV threads default; {os.cpu_count()} cores shared with other jobs. "
             f"SA-1B-sized JPEG decode: {decode['decodes_per_s']:.1f}/s on one core "
             f"({decode['jpeg_bytes'] / 1e6:.2f} MB). Agreement: {json.dumps(agree_all)}")
    return result("scaling", rows, agree=agree, quick=quick, targets=targets, notes=notes)


if __name__ == "__main__":
    main("scaling", run)

"""Load a COCO file and decode every mask: instkit vs pycocotools.

Input: a COCO-val2017-sized file (about 5,000 images and 36,000 polygon annotations) made by
repeating tinycoco's real annotations (real polygons, multi-part objects, crowd RLE) under new
image and annotation ids. Peer: ``COCO(path)`` then ``annToMask`` on every annotation. instkit:
``read_coco(path)`` then ``masks.to_bitmaps()`` on every sample (pixel-exact, box-tight crops).
Outputs are compared pixel for pixel on a subset before anything is timed.

Memory: instkit's decoded masks (box-tight bitmaps) against the dense ``(N, H, W)`` bool arrays a
per-image dense representation needs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINYCOCO, main, result  # noqa: E402

ANNOTATIONS = TINYCOCO / "annotations"


def make_big_file(path: Path, target_annotations: int) -> dict[str, int]:
    """Repeat tinycoco's images and annotations until ``target_annotations`` are reached."""
    docs = [json.loads((ANNOTATIONS / f"instances_{s}2017.json").read_text())
            for s in ("train", "val")]
    images = [img for doc in docs for img in doc["images"]]
    by_image: dict[int, list[dict]] = {}
    for doc in docs:
        for ann in doc["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    out_images, out_annotations = [], []
    next_image, next_ann = 1, 1
    while len(out_annotations) < target_annotations:
        for image in images:
            new_image = dict(image, id=next_image, file_name=f"{next_image:012d}.jpg")
            out_images.append(new_image)
            for ann in by_image.get(image["id"], []):
                out_annotations.append(dict(ann, id=next_ann, image_id=next_image))
                next_ann += 1
            next_image += 1
            if len(out_annotations) >= target_annotations:
                break
    document = {"images": out_images, "annotations": out_annotations,
                "categories": docs[0]["categories"]}
    path.write_text(json.dumps(document))
    return {"images": len(out_images), "annotations": len(out_annotations)}


def run_pycocotools(path: Path, limit: int | None = None) -> tuple[float, int, list]:
    import contextlib
    import io

    from pycocotools.coco import COCO

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    kept = []
    dense_bytes = 0
    for img_id in list(coco.imgs)[:limit]:
        for ann in coco.imgToAnns[img_id]:
            mask = coco.annToMask(ann)
            dense_bytes += mask.size  # one byte per pixel, as a bool array
            if limit is not None:
                kept.append((ann["id"], mask.astype(bool)))
    return time.perf_counter() - start, dense_bytes, kept


def run_instkit(path: Path, limit: int | None = None) -> tuple[float, int, list]:
    import instkit

    start = time.perf_counter()
    dataset = instkit.read_coco(path)
    held = 0
    kept = []
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        sample = dataset[index]
        masks = sample.instances.masks.to_bitmaps()
        held += masks.nbytes
        if limit is not None:
            dense = masks.to_dense()
            kept.extend(zip(sample.instances.ids.tolist(), dense))
    return time.perf_counter() - start, held, kept


def run(quick: bool = False) -> dict:
    target = 3_000 if quick else 36_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances_big.json"
        sizes = make_big_file(path, target)
        # Agreement first: the same pixels for every annotation of the first 300 images.
        _, _, reference = run_pycocotools(path, limit=300)
        _, _, ours = run_instkit(path, limit=300)
        ref = dict(reference)
        agree = len(ours) == len(reference) and all(
            np.array_equal(ref[ann_id], mask) for ann_id, mask in ours)
        rows = []
        timings = {}
        for _ in range(2 if quick else 3):
            for name, fn in (("pycocotools", run_pycocotools), ("instkit", run_instkit)):
                seconds, nbytes, _ = fn(path)
                best = timings.get(name, (float("inf"), 0))[0]
                timings[name] = (min(best, seconds), nbytes)
        for name, (seconds, nbytes) in timings.items():
            rows.append({
                "tool": name,
                "images": sizes["images"],
                "annotations": sizes["annotations"],
                "seconds": seconds,
                "annotations_per_s": sizes["annotations"] / seconds,
                "mask_MiB": nbytes / 2**20,
            })
    speed = timings["pycocotools"][0] / timings["instkit"][0]
    memory = timings["instkit"][1] / timings["pycocotools"][1]
    targets = [
        {"claim": "load+decode speed, instkit vs pycocotools (x)", "value": speed,
         "target": ">= 1.0", "met": speed >= 1.0},
        {"claim": "decoded mask memory, instkit / dense", "value": memory,
         "target": "<= 0.5", "met": memory <= 0.5},
    ]
    return result("codecs", rows, agree=agree, quick=quick, targets=targets,
                  notes="dense MiB counts one byte per pixel per annotation (bool (N, H, W))")


if __name__ == "__main__":
    main("codecs", run)

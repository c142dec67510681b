"""COCO evaluation (mask and box mAP): instkit's ``evaluate`` vs pycocotools' ``COCOeval`` vs
faster-coco-eval's ``COCOeval_faster``, end to end from the same files.

Ground truth: tinycoco's real images and annotations (polygons, multi-part objects, crowd RLE)
repeated under new ids to 500 and 5,000 images. Predictions: made from that ground truth as a
model's would look: polygons jittered by a couple of pixels, 15% of objects missed, 10% given a
wrong class, 10% duplicated, one to three false objects per image, shuffled scores, boxes
jittered; all as compressed RLE results with ``bbox``.

Each tool gives the 12 COCO stats for ``segm`` and ``bbox``, timed two ways: end to end from the
two JSON files, and the evaluate step alone (ground truth already loaded, results already
parsed: what a training loop repeats every epoch). pycocotools and faster-coco-eval load the
ground truth with ``COCO(path)``, the results with ``loadRes`` and run
evaluate/accumulate/summarize once per IoU type (segm without ``bbox``, as detectron2 does);
instkit runs ``read_coco(path)`` then ``evaluate(dataset, results)``, which also checks every
result and gives per-class AP, PR curves, per-image counts and the union mean IoU. Agreement
first: all 12 stats of both IoU types exactly equal to pycocotools' for instkit; within 1e-12
for faster-coco-eval (its sums differ in the last bits; the largest difference is recorded).
Timed interleaved (A B C A B C ...), best of N. faster-coco-eval is a benchmark-only peer
(``pip install faster-coco-eval==1.8.0``); without it its rows are left out.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import TINYCOCO, main, result  # noqa: E402

ANNOTATIONS = TINYCOCO / "annotations"
IOU_TYPES = ("segm", "bbox")


def make_ground_truth(path: Path, num_images: int) -> None:
    """tinycoco's images and annotations repeated under new ids until ``num_images``."""
    docs = [json.loads((ANNOTATIONS / f"instances_{s}2017.json").read_text())
            for s in ("train", "val")]
    images = [img for doc in docs for img in doc["images"]]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for doc in docs:
        for ann in doc["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    out_images, out_annotations = [], []
    next_ann = 1
    for k in range(num_images):
        image = images[k % len(images)]
        out_images.append(dict(image, id=k + 1, file_name=f"{k + 1:012d}.jpg"))
        for ann in by_image.get(image["id"], []):
            out_annotations.append(dict(ann, id=next_ann, image_id=k + 1))
            next_ann += 1
    path.write_text(json.dumps({"images": out_images, "annotations": out_annotations,
                                "categories": docs[0]["categories"]}))


def make_predictions(gt_path: Path, path: Path, seed: int = 0) -> int:
    """Results a model could give (see the module docstring), written as JSON."""
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(seed)
    doc = json.loads(gt_path.read_text())
    cat_ids = [c["id"] for c in doc["categories"]]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    results: list[dict[str, Any]] = []
    for image in doc["images"]:
        h, w = image["height"], image["width"]
        made: list[tuple[Any, int]] = []
        for ann in by_image.get(image["id"], []):
            seg = ann["segmentation"]
            if ann["iscrowd"] or rng.random() < 0.15:
                continue
            parts = [list(np.clip(np.asarray(p) + rng.normal(0, 2.0, len(p)), 0,
                                  np.tile([w, h], len(p) // 2))) for p in seg]
            rles = mask_utils.frPyObjects(parts, h, w)
            rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
            cat = int(rng.choice(cat_ids)) if rng.random() < 0.1 else ann["category_id"]
            made.append((rle, cat))
            if rng.random() < 0.1:
                made.append((rle, cat))
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            x1, y1 = x0 + rng.uniform(5, min(200, w - x0)), y0 + rng.uniform(5, min(200, h - y0))
            rle = mask_utils.frPyObjects([[x0, y0, x1, y0, (x0 + x1) / 2, y1]], h, w)[0]
            present = [a["category_id"] for a in by_image.get(image["id"], [])] or cat_ids
            made.append((rle, int(rng.choice(present))))
        scores = rng.permutation(np.linspace(0.01, 0.99, max(len(made), 1)))
        for (rle, cat), score in zip(made, scores, strict=False):
            x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
            jitter = rng.normal(0, 1.5, 4)
            x0, y0 = float(np.float32(x + jitter[0])), float(np.float32(y + jitter[1]))
            x1 = max(float(np.float32(x + bw + jitter[2])), x0)
            y1 = max(float(np.float32(y + bh + jitter[3])), y0)
            results.append({"image_id": image["id"], "category_id": cat,
                            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(np.float32(score))})
    path.write_text(json.dumps(results))
    return len(results)


def _cocoeval_load(coco_cls: Any, gt_path: Path) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_cls(str(gt_path))


def _cocoeval_stats(eval_cls: Any, coco_gt: Any, results: list[dict[str, Any]]
                    ) -> dict[str, list[float]]:
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for iou_type in IOU_TYPES:
            drop = "bbox" if iou_type == "segm" else "segmentation"
            anns = [{k: v for k, v in r.items() if k != drop} for r in results]
            evaluator = eval_cls(coco_gt, coco_gt.loadRes(anns), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            out[iou_type] = [float(v) for v in evaluator.stats]
    return out


# Each tool: load(gt_path) -> ground truth in memory; score(gt, results list) -> 12 stats per type.


def load_pycocotools(gt_path: Path) -> Any:
    from pycocotools.coco import COCO

    return _cocoeval_load(COCO, gt_path)


def score_pycocotools(gt: Any, results: list[dict[str, Any]]) -> dict[str, list[float]]:
    from pycocotools.cocoeval import COCOeval

    return _cocoeval_stats(COCOeval, gt, results)


def load_faster(gt_path: Path) -> Any:
    from faster_coco_eval import COCO

    return _cocoeval_load(COCO, gt_path)


def score_faster(gt: Any, results: list[dict[str, Any]]) -> dict[str, list[float]]:
    from faster_coco_eval import COCOeval_faster

    return _cocoeval_stats(COCOeval_faster, gt, results)


def load_instkit(gt_path: Path) -> Any:
    from instkit.io.coco import read_coco

    return read_coco(gt_path)


def score_instkit(gt: Any, results: list[dict[str, Any]]) -> dict[str, list[float]]:
    from instkit.evaluation import STAT_NAMES, evaluate

    out = evaluate(gt, results, progress=False)
    return {"segm": [out.mask_stats[k] for k in STAT_NAMES],
            "bbox": [out.box_stats[k] for k in STAT_NAMES]}


TOOLS = {"pycocotools": (load_pycocotools, score_pycocotools),
         "instkit": (load_instkit, score_instkit),
         "faster-coco-eval": (load_faster, score_faster)}


def end_to_end(name: str, gt_path: Path, dt_path: Path) -> dict[str, list[float]]:
    """From the two files: load the ground truth, parse the results, score."""
    load, score = TOOLS[name]
    return score(load(gt_path), json.loads(dt_path.read_text()))


def _have_faster() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def run(quick: bool = False) -> dict[str, Any]:
    sizes = (100,) if quick else (500, 5000)
    repeat = 1 if quick else 3
    names = ["pycocotools", "instkit"] + (["faster-coco-eval"] if _have_faster() else [])
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    all_agree = True
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        for num_images in sizes:
            gt_path, dt_path = Path(folder) / "gt.json", Path(folder) / "dt.json"
            make_ground_truth(gt_path, num_images)
            num_results = make_predictions(gt_path, dt_path)
            stats = {name: end_to_end(name, gt_path, dt_path) for name in names}  # + warm-up
            reference = stats["pycocotools"]
            # instkit must equal pycocotools exactly; faster-coco-eval's C++ sums differ from
            # pycocotools' in the last bits (recorded as max_diff), so it gets 1e-12
            diff = {name: max(float(np.max(np.abs(np.subtract(stats[name][t], reference[t]))))
                              for t in IOU_TYPES) for name in names}
            agree = {name: diff[name] == 0.0 if name != "faster-coco-eval" else diff[name] < 1e-12
                     for name in names}
            all_agree &= all(agree.values())
            results = json.loads(dt_path.read_text())
            loaded = {name: TOOLS[name][0](gt_path) for name in names}
            best_e2e = {name: float("inf") for name in names}
            best_eval = {name: float("inf") for name in names}
            for _ in range(repeat):
                for name in names:  # interleaved
                    start = time.perf_counter()
                    end_to_end(name, gt_path, dt_path)
                    best_e2e[name] = min(best_e2e[name], time.perf_counter() - start)
                    start = time.perf_counter()
                    TOOLS[name][1](loaded[name], results)
                    best_eval[name] = min(best_eval[name], time.perf_counter() - start)
            for name in names:
                rows.append({"images": num_images, "results": num_results, "tool": name,
                             "end_to_end_s": best_e2e[name],
                             "evaluate_s": best_eval[name],
                             "e2e_vs_pycocotools": best_e2e["pycocotools"] / best_e2e[name],
                             "segm_AP": stats[name]["segm"][0], "bbox_AP": stats[name]["bbox"][0],
                             "max_diff_vs_pycocotools": diff[name], "agree": agree[name]})
            if "faster-coco-eval" in names:
                for label, best in (("end to end", best_e2e), ("evaluate step", best_eval)):
                    ratio = best["faster-coco-eval"] / best["instkit"]
                    targets.append({"claim": f"{num_images} images, {label}: speed vs "
                                             "faster-coco-eval (its time / instkit's)",
                                    "value": ratio, "target": ">= 1.0", "met": ratio >= 1.0})
    load_after = os.getloadavg()
    return result("evaluate", rows, agree=all_agree, quick=quick, targets=targets,
                  notes=f"segm + bbox; end to end = load the ground-truth file, parse the "
                        f"results file, score; evaluate step = ground truth already loaded, "
                        f"results already parsed; all 12 stats of both types checked equal "
                        f"to pycocotools' exactly; load average {load_before[0]:.2f} before, "
                        f"{load_after[0]:.2f} after; best of {repeat}, interleaved; one process "
                        f"(pycocotools and instkit are single-threaded here)")


if __name__ == "__main__":
    main("evaluate", run)

"""instkit.cocoeval against pycocotools' COCOeval itself: the same stats, precision and recall,
bit for bit, on tinycoco with perturbed predictions (ties, crowds, >100 detections per image)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instkit.cocoeval import CocoEvalResult
from instkit.evaluation import _regions
from instkit.evaluation import _run_protocol as _run_columns
from tests.test_evaluation import _perturbed_results


def _pycocotools(document: dict[str, Any], results: list[dict[str, Any]], iou_type: str
                 ) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(document)
        coco_gt.createIndex()
        drop = "bbox" if iou_type == "segm" else "segmentation"
        anns = [{k: v for k, v in r.items() if k != drop} for r in copy.deepcopy(results)]
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(anns), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _run_protocol(document: dict[str, Any], results: list[dict[str, Any]], iou_type: str
                  ) -> CocoEvalResult:
    """instkit's protocol on a COCO document's annotations as pycocotools reads them."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in document["images"]}
    anns = document["annotations"]
    columns = {key: [a[key] for a in anns]
               for key in ("image_id", "category_id", "area", "iscrowd", "bbox")}
    columns["segm"] = _regions(anns, "segm", sizes)
    return _run_columns(sizes, [c["id"] for c in document["categories"]], columns, results,
                        iou_type)


def _crowded_results(results: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """More than 100 detections for some (image, category) pairs, many tied scores."""
    rng = np.random.default_rng(seed)
    out = list(results)
    for r in results[:6]:
        for _ in range(120):
            extra = dict(r, score=float(np.float32(rng.choice([0.3, 0.5, 0.7]))))
            extra["bbox"] = [v + float(rng.normal(0, 3)) for v in r["bbox"][:2]] + r["bbox"][2:]
            out.append(extra)
    return out


def _assert_same(document: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> None:
    ours = _run_protocol(document, results, iou_type)
    theirs = _pycocotools(document, results, iou_type)
    np.testing.assert_array_equal(ours.stats, np.asarray(theirs.stats))
    np.testing.assert_array_equal(ours.precision, theirs.eval["precision"])
    np.testing.assert_array_equal(ours.recall, theirs.eval["recall"])
    assert ours.cat_ids == list(theirs.params.catIds)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize(("split", "seed"), [("train", 0), ("val", 1)])
def test_equals_cocoeval_bit_for_bit(tinycoco: dict[str, Path], iou_type: str, split: str,
                                     seed: int) -> None:
    gt_file = tinycoco[f"{split}_json"]
    document = json.loads(gt_file.read_text())
    results = _crowded_results(_perturbed_results(gt_file, seed), seed)
    _assert_same(document, results, iou_type)


def test_no_results_and_no_ground_truth(tinycoco: dict[str, Path]) -> None:
    document = json.loads(tinycoco["val_json"].read_text())
    ours = _run_protocol(document, [], "bbox")
    assert ours.stats[0] == 0 and ours.stats.max() == 0  # ground truth, nothing found
    empty = dict(document, annotations=[])
    results = _perturbed_results(tinycoco["val_json"], 2)
    assert (_run_protocol(empty, results, "bbox").stats == -1).all()


def test_the_comparison_fails_when_tie_order_is_lost(tinycoco: dict[str, Path]) -> None:
    """COCO breaks score ties by input order (stable sorts): a matcher given the same results in
    another order (what an unstable sort would do) is caught."""
    gt_file = tinycoco["train_json"]
    document = json.loads(gt_file.read_text())
    results = _crowded_results(_perturbed_results(gt_file, 0), 0)
    shuffled = [results[k] for k in np.random.default_rng(3).permutation(len(results))]
    ours = _run_protocol(document, shuffled, "bbox")
    theirs = _pycocotools(document, results, "bbox")
    assert not np.array_equal(ours.precision, theirs.eval["precision"])

"""instkit.lvis against the LVIS evaluation rules (LVISEval), on a hand-made federated case whose
numbers are worked out by hand below; each rule is shown to change the result."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from instkit.lvis import LvisError, evaluate_lvis


def _box_ann(ann_id: int, image_id: int, cat: int, box: list[float]) -> dict[str, Any]:
    x, y, w, h = box
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box,
            "area": w * h, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def _doc() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "height": 100, "width": 100, "neg_category_ids": [3],
             "not_exhaustive_category_ids": [2]},
            {"id": 2, "height": 100, "width": 100, "neg_category_ids": [],
             "not_exhaustive_category_ids": []},
        ],
        "annotations": [
            _box_ann(1, 1, 1, [10, 10, 20, 20]),  # A
            _box_ann(2, 1, 2, [50, 50, 20, 20]),  # B
            _box_ann(3, 2, 1, [10, 10, 30, 30]),  # C
            _box_ann(4, 2, 3, [60, 60, 20, 20]),  # D
        ],
        "categories": [{"id": 1, "name": "one", "frequency": "f"},
                       {"id": 2, "name": "two", "frequency": "c"},
                       {"id": 3, "name": "three", "frequency": "r"}],
    }


def _results() -> list[dict[str, Any]]:
    def r(image_id: int, cat: int, box: list[float], score: float) -> dict[str, Any]:
        return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}

    return [
        r(1, 1, [10, 10, 20, 20], 0.9),   # TP on A
        r(1, 1, [70, 10, 10, 10], 0.8),   # FP: category 1 is exhaustive in image 1
        r(1, 2, [50, 50, 20, 20], 0.7),   # TP on B
        r(1, 2, [0, 80, 10, 10], 0.95),   # unmatched, category 2 not exhaustive: ignored
        r(1, 3, [30, 30, 10, 10], 0.6),   # category 3 verified absent: FP
        r(2, 1, [12, 10, 30, 30], 0.85),  # on C at IoU 840/960 = 0.875
        r(2, 2, [5, 5, 5, 5], 0.99),      # category 2 neither in nor verified absent: dropped
        r(2, 3, [60, 60, 20, 20], 0.5),   # TP on D
    ]


# Category 1: ranks TP (0.9), TP (0.85) up to IoU 0.85, FP (0.8); 2 objects. At 8 thresholds
# AP = 1; at 0.9 and 0.95 recall stops at 0.5 with precision 1: 51 of 101 recall points.
CAT1 = (8 + 2 * 51 / 101) / 10
CAT2 = 1.0  # the ignored detection does not count; the TP finds the one object
CAT3 = 0.5  # FP (0.6, image 1) then TP: precision 0.5 at every recall


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_hand_made_federated_case(iou_type: str) -> None:
    results = _results()
    if iou_type == "segm":
        for r in results:
            x, y, w, h = r.pop("bbox")
            r["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    out = evaluate_lvis(_doc(), results, iou_type=iou_type)
    if iou_type == "segm":  # rasterised squares: C's match has IoU 0.875 there too
        assert out.per_category[1] == pytest.approx(CAT1)
        return
    assert out.per_category == pytest.approx({1: CAT1, 2: CAT2, 3: CAT3})
    stats = out.stats
    assert stats["AP"] == pytest.approx((CAT1 + CAT2 + CAT3) / 3)
    assert stats["AP50"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert stats["AP75"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert (stats["APf"], stats["APc"], stats["APr"]) == pytest.approx((CAT1, CAT2, CAT3))
    assert stats["APs"] == pytest.approx(stats["AP"])  # every object is small
    assert stats["APm"] == -1 and stats["APl"] == -1
    assert stats["AR"] == pytest.approx((0.9 + 1 + 1) / 3)


def test_each_rule_changes_the_result() -> None:
    # not exhaustive: without the flag, the unmatched 0.95 detection is a false positive first
    doc = _doc()
    doc["images"][0]["not_exhaustive_category_ids"] = []
    assert evaluate_lvis(doc, _results(), iou_type="bbox").per_category[2] == pytest.approx(0.5)
    # negative: without the flag, category 3 in image 1 is neither in nor out: dropped
    doc = _doc()
    doc["images"][0]["neg_category_ids"] = []
    assert evaluate_lvis(doc, _results(), iou_type="bbox").per_category[3] == pytest.approx(1.0)
    # the federated drop: a detection in a verified-absent list counts again
    doc = _doc()
    doc["images"][1]["neg_category_ids"] = [2]
    assert evaluate_lvis(doc, _results(), iou_type="bbox").per_category[2] == pytest.approx(0.5)
    # the per-image cut comes first, over all categories: with 2 per image, image 1 keeps
    # 0.95 (ignored) and 0.9, image 2 keeps 0.99 (then dropped) and 0.85
    out = evaluate_lvis(_doc(), _results(), iou_type="bbox", max_dets=2)
    assert out.per_category == pytest.approx({1: CAT1, 2: 0.0, 3: 0.0})


def test_bad_input_is_named() -> None:
    doc = _doc()
    doc["images"][1]["neg_category_ids"] = [1]
    with pytest.raises(LvisError, match="negative but annotated"):
        evaluate_lvis(doc, _results(), iou_type="bbox")
    bad = _results() + [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.1}]
    with pytest.raises(LvisError, match=r"image id 9"):
        evaluate_lvis(_doc(), bad, iou_type="bbox")
    with pytest.raises(LvisError, match="segmentation"):
        evaluate_lvis(_doc(), _results(), iou_type="segm")
    assert copy.deepcopy(_doc()) == _doc()  # the inputs are not modified


def test_equals_cocoeval_where_the_rules_coincide(tinycoco: dict[str, Any]) -> None:
    """Every category annotated in its image, none negative or not exhaustive, no crowd, few
    detections: LVIS's rules reduce to COCO's, and the numbers equal pycocotools' COCOeval."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from tests.test_evaluation import _perturbed_results

    doc = json.loads(tinycoco["val_json"].read_text())
    doc["annotations"] = [a for a in doc["annotations"] if not a["iscrowd"]]
    present = {(a["image_id"], a["category_id"]) for a in doc["annotations"]}
    results = [r for r in _perturbed_results(tinycoco["val_json"], 4)
               if (r["image_id"], r["category_id"]) in present]
    for r in results:
        r.pop("bbox")
    ours = evaluate_lvis(doc, results, iou_type="segm")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(doc)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert [ours.stats[n] for n in names] == [float(v) for v in evaluator.stats[:6]]
    assert ours.stats["AR"] == float(evaluator.stats[8])  # AR@100 = AR@300 with few detections
    assert 0.2 < ours.stats["AP"] < 0.95

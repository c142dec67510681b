"""Tests of instkit.analysis: AP from the matcher against COCOeval, confusion-matrix invariants,
the error breakdown and its fixes on a hand-made image (fixes checked with COCOeval itself),
Boundary IoU against a direct numpy definition."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from instkit import Categories, Instances, Masks, Sample, SampleMeta, read_coco
from instkit.analysis import ERROR_TYPES, analyze, boundary_iou, format_analysis
from instkit.evaluation import evaluate, match_image
from tests.test_evaluation import _perturbed_results, _samples_from_results

H, W = 100, 120
CATS = Categories.from_names(["square", "disc"])


def _square(y0: int, x0: int, size: int, h: int = H, w: int = W) -> np.ndarray:
    out = np.zeros((h, w), dtype=bool)
    out[y0 : y0 + size, x0 : x0 + size] = True
    return out


def _instances(masks: list[np.ndarray], labels: list[int], scores: list[float] | None = None,
               ) -> Instances:
    dense = np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool)
    return Instances(
        image_size=(H, W), masks=Masks.from_dense(dense), labels=np.asarray(labels, dtype=np.int64),
        iscrowd=np.zeros(len(masks), dtype=np.uint8), ids=np.arange(1, len(masks) + 1),
        scores=None if scores is None else np.asarray(scores, dtype=np.float32),
    )


def _sample(inst: Instances, image_id: int = 1) -> Sample:
    return Sample(inst, image_id, SampleMeta(categories=CATS))


@pytest.fixture(scope="module")
def perturbed(tinycoco: dict[str, Path]) -> tuple[list[Sample], list[Sample]]:
    dataset = read_coco(tinycoco["val_json"])
    results = _perturbed_results(tinycoco["val_json"], 5)
    return list(dataset), _samples_from_results(results, list(dataset), dataset.categories)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_ap_from_the_matcher_equals_cocoeval(perturbed: tuple[list[Sample], list[Sample]],
                                             iou_type: str) -> None:
    gt, preds = perturbed
    analysis = analyze(gt, preds, iou_type=iou_type)
    coco = evaluate(gt, preds, iou_types=(iou_type,), progress=False)
    stats = coco.mask_stats if iou_type == "segm" else coco.box_stats
    assert analysis.ap == stats["AP50"]
    key = "mask_ap50" if iou_type == "segm" else "box_ap50"
    for mine, theirs in zip(analysis.per_class, coco.per_class, strict=True):
        assert (math.isnan(mine["ap"]) and math.isnan(theirs[key])) or mine["ap"] == theirs[key]
    # a 0.75 threshold is COCOeval's AP75 too, and the .5:.95 average its AP
    assert analyze(gt, preds, iou_type=iou_type, iou_threshold=0.75).ap == stats["AP75"]
    assert analysis.ap_coco == stats["AP"]


def test_confusion_matrix_invariants(perturbed: tuple[list[Sample], list[Sample]]) -> None:
    gt, preds = perturbed
    analysis = analyze(gt, preds, score_threshold=0.3)
    c = len(analysis.names)
    matrix = analysis.confusion
    assert matrix.shape == (c + 1, c + 1) and matrix[c, c] == 0
    num_gt = np.zeros(c, dtype=np.int64)
    kept = np.zeros(c, dtype=np.int64)
    tp = 0
    for g, p in zip(gt, preds, strict=True):
        real = ~g.instances.iscrowd.astype(bool)
        num_gt += np.bincount(g.instances.labels[real], minlength=c)
        match = match_image(g.instances, p.instances, score_threshold=0.3)
        assert match.predictions is not None
        counted = ~match.pred_ignored
        kept += np.bincount(match.predictions.labels[counted], minlength=c)
        tp += match.tp
    assert (matrix[:c].sum(axis=1) == num_gt).all()  # every ground truth once
    assert (matrix[:, :c].sum(axis=0) == kept).all()  # every counted prediction once
    assert np.trace(matrix[:c, :c]) == tp  # the diagonal is the matcher's true positives
    assert matrix[:c, :c].sum() > np.trace(matrix[:c, :c])  # the perturbation swaps classes
    assert [r["tp"] for r in analysis.per_class] == np.diag(matrix)[:c].tolist()
    json.dumps(analysis.as_dict())
    text = format_analysis(analysis)
    assert "Confusion matrix" in text and "classification" in text


def _hand_case() -> tuple[Instances, Instances]:
    """One image with one error of each kind (see the test)."""
    gt = _instances([_square(10, 10, 20), _square(10, 60, 20), _square(50, 10, 20),
                     _square(50, 60, 20)], [0, 1, 0, 0])
    pred = _instances([
        _square(10, 10, 20),  # 0: true positive on gt 0
        _square(10, 10, 20),  # 1: duplicate of gt 0
        _square(10, 60, 20),  # 2: right place, class 0 on a class-1 object: classification
        _square(58, 18, 20),  # 3: class 0 on gt 2, IoU 144/656: localisation
        _square(58, 68, 20),  # 4: class 1 on gt 3 (class 0), IoU 144/656: both
        _square(85, 100, 10),  # 5: nothing there: background
    ], [0, 0, 0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    return gt, pred


def _ap50(gt: Instances, pred: Instances) -> float:
    return evaluate([_sample(gt)], [_sample(pred)], CATS, iou_types=("segm",),
                    progress=False).mask_stats["AP50"]


def test_error_breakdown_on_a_hand_made_image() -> None:
    gt, pred = _hand_case()
    analysis = analyze([_sample(gt)], [_sample(pred)], CATS)
    assert analysis.errors == {"classification": 1, "localisation": 1, "both": 1,
                               "duplicate": 1, "background": 1, "missed": 1}
    base = _ap50(gt, pred)
    assert analysis.ap == base
    # Each fix, done by hand and scored by COCOeval: the AP it adds.
    labels = pred.labels.copy()
    labels[2] = 1
    relabelled = pred.replace(labels=labels)
    moved = Masks.from_dense(np.stack([_square(10, 10, 20), _square(10, 10, 20),
                                       _square(10, 60, 20), _square(50, 10, 20),
                                       _square(58, 68, 20), _square(85, 100, 10)]))
    localised = pred.replace(masks=moved).with_boxes_from_masks()
    expected = {
        "classification": _ap50(gt, relabelled),
        "localisation": _ap50(gt, localised),
        "both": _ap50(gt, pred[[0, 1, 2, 3, 5]]),
        "duplicate": _ap50(gt, pred[[0, 2, 3, 4, 5]]),
        "background": _ap50(gt, pred[[0, 1, 2, 3, 4]]),
        "missed": _ap50(gt[[0, 1, 2]], pred),
    }
    for name in ERROR_TYPES:
        assert analysis.delta_ap[name] == pytest.approx(expected[name] - base, abs=1e-12), name
    assert analysis.delta_ap["classification"] > 0 and analysis.delta_ap["localisation"] > 0
    # the duplicate ranks below the only true positive: removing it changes no precision
    assert analysis.delta_ap["duplicate"] == 0
    # per class: the errors land on the prediction's class, the missed one on the object's
    rows = {r["name"]: r for r in analysis.per_class}
    assert rows["square"]["background"] == 1 and rows["disc"]["both"] == 1
    assert rows["square"]["missed"] == 1
    # confusion at score >= 0.5 (prediction 5 is below): gt 1 (disc) was predicted square;
    # the duplicate and the mislocated square are background predictions; gts 2, 3 missed
    c = analysis.confusion
    assert c.tolist() == [[1, 0, 2], [1, 0, 0], [2, 1, 0]]


def test_a_wrong_breakdown_is_caught() -> None:
    """The hand-made case detects a swapped rule: with background_iou above the localisation
    IoU, the localisation error becomes background and the counts differ."""
    gt, pred = _hand_case()
    swapped = analyze([_sample(gt)], [_sample(pred)], CATS, background_iou=0.3)
    assert swapped.errors["localisation"] == 0 and swapped.errors["background"] == 3


def _boundary_numpy(mask: np.ndarray, d: int) -> np.ndarray:
    """Pixels of the mask within chessboard distance d of a pixel outside it (or the frame)."""
    padded = np.pad(mask, d, constant_values=False)
    inner = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            inner &= padded[d + dy : d + dy + h, d + dx : d + dx + w]
    return mask & ~inner


def test_boundary_iou_against_its_definition() -> None:
    rng = np.random.default_rng(0)
    masks = [_square(int(rng.integers(0, 60)), int(rng.integers(0, 80)),
                     int(rng.integers(5, 40))) for _ in range(6)]
    a, b = _instances(masks[:3], [0, 0, 0]), _instances(masks[3:], [0, 0, 0])
    ratio = 0.02
    d = max(1, round(ratio * math.hypot(H, W)))
    mine = boundary_iou(a, b, ratio)
    for i in range(3):
        for j in range(3):
            x, y = _boundary_numpy(masks[i], d), _boundary_numpy(masks[3 + j], d)
            union = (x | y).sum()
            assert mine[i, j] == pytest.approx((x & y).sum() / union if union else 0.0)
    same = boundary_iou(a, a)
    assert np.allclose(np.diag(same), 1.0)
    # a big square one pixel off: the mask IoU barely notices, the boundary IoU does
    big, off = _instances([_square(10, 10, 70)], [0]), _instances([_square(11, 11, 70)], [0])
    from instkit.evaluation import pairwise_iou
    assert boundary_iou(off, big)[0, 0] < pairwise_iou(off, big)[0, 0] - 0.1


def test_boundary_option_matches_on_the_smaller_iou() -> None:
    gt = _instances([_square(10, 10, 70)], [0])
    pred = _instances([_square(12, 12, 70)], [0], [0.9])  # mask IoU 0.89, boundary IoU 0.21
    assert analyze([_sample(gt)], [_sample(pred)], CATS, iou_threshold=0.75).ap == pytest.approx(1.0)
    strict = analyze([_sample(gt)], [_sample(pred)], CATS, iou_threshold=0.75, boundary=True)
    assert strict.ap == 0.0 and strict.errors["localisation"] == 1
    # Boundary AP over .5:.95: min(mask, boundary) IoU 0.21 reaches no threshold
    assert strict.ap_coco == 0.0
    # by mask IoU (0.89) it is found at 8 of the 10 thresholds
    assert analyze([_sample(gt)], [_sample(pred)], CATS).ap_coco == pytest.approx(0.8)
    with pytest.raises(ValueError, match="segm"):
        analyze([_sample(gt)], [_sample(pred)], CATS, iou_type="bbox", boundary=True)

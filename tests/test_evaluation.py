"""Tests of instkit.evaluation: COCOeval oracle on real data, matching, union IoU, results I/O."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instkit import Categories, Instances, Masks, Sample, SampleMeta, read_coco
from instkit.errors import FormatError
from instkit.evaluation import (
    EvaluationError,
    Match,
    evaluate,
    match_instances,
    read_coco_results,
    to_coco_results,
    union_iou,
    union_mean_iou,
)
from instkit.testing import strategies as ks

# --- an independent oracle: plain pycocotools on the original file ---------------------------


def _oracle(gt_file: Path, results_file: Path) -> dict[str, Any]:
    """COCOeval on the original ground-truth file and a results JSON file, the way a user runs
    it (segm results without their bbox, as detectron2 evaluates masks)."""
    results = json.loads(results_file.read_text())
    out: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        for iou_type in ("segm", "bbox"):
            anns = [dict(r) for r in results]
            for r in anns:
                r.pop("bbox" if iou_type == "segm" else "segmentation")
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(anns), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            out[iou_type] = evaluator
    return out


def _rle_of_polygons(parts: list[list[float]], h: int, w: int) -> dict[str, Any]:
    rles = mask_utils.frPyObjects(parts, h, w)
    return mask_utils.merge(rles) if len(rles) > 1 else rles[0]


def _perturbed_results(gt_file: Path, seed: int) -> list[dict[str, Any]]:
    """COCO results made from the ground truth with plain pycocotools: jittered polygons,
    dropped instances, added false instances, shuffled scores, wrong classes, and predictions
    inside crowd regions. Scores and boxes are float32 values (what instkit stores)."""
    rng = np.random.default_rng(seed)
    doc = json.loads(gt_file.read_text())
    images = {im["id"]: im for im in doc["images"]}
    cat_ids = [c["id"] for c in doc["categories"]]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    results: list[dict[str, Any]] = []
    for image_id in sorted(images):
        h, w = images[image_id]["height"], images[image_id]["width"]
        made: list[tuple[dict[str, Any], int]] = []
        for ann in by_image.get(image_id, []):
            seg = ann["segmentation"]
            if ann["iscrowd"]:
                # Pieces of the crowd region: COCO ignores them (same class) or counts them as
                # false positives (another class).
                crowd = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) \
                    else seg
                dense = mask_utils.decode(crowd)
                ys, xs = np.nonzero(dense)
                cy, cx = int(np.median(ys)), int(np.median(xs))
                for k, (dy, dx) in enumerate(((0, 0), (1, 1))):
                    piece = np.zeros_like(dense)
                    piece[cy * dy : cy * dy + h // 2, cx * dx : cx * dx + w // 2] = 1
                    piece &= dense
                    if piece.any():
                        cat = ann["category_id"] if k == 0 else cat_ids[(cat_ids.index(
                            ann["category_id"]) + 1) % len(cat_ids)]
                        made.append((mask_utils.encode(np.asfortranarray(piece)), cat))
                continue
            if rng.random() < 0.15:
                continue  # dropped: a miss
            if isinstance(seg, list):
                parts = [
                    list(np.clip(np.asarray(p) + rng.normal(0, 2.0, len(p)), 0,
                                 np.tile([w, h], len(p) // 2)))
                    for p in seg
                ]
                rle = _rle_of_polygons(parts, h, w)
            else:
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) \
                    else seg
            cat = ann["category_id"]
            if rng.random() < 0.1:
                cat = int(rng.choice(cat_ids))  # a wrong class
            made.append((rle, cat))
            if rng.random() < 0.1:
                made.append((rle, cat))  # a duplicate: a false positive
        for _ in range(int(rng.integers(1, 4))):  # false instances
            x0, y0 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            x1, y1 = x0 + rng.uniform(5, min(200, w - x0)), y0 + rng.uniform(5, min(200, h - y0))
            tri = [x0, y0, x1, y0, (x0 + x1) / 2, y1]
            present = [a["category_id"] for a in by_image.get(image_id, [])] or cat_ids
            made.append((_rle_of_polygons([tri], h, w), int(rng.choice(present))))
        scores = rng.permutation(np.linspace(0.01, 0.99, max(len(made), 1)))
        for (rle, cat), score in zip(made, scores, strict=False):
            x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
            jitter = rng.normal(0, 1.5, 4)
            x0, y0 = np.float32(x + jitter[0]), np.float32(y + jitter[1])
            x1, y1 = np.float32(x + bw + jitter[2]), np.float32(y + bh + jitter[3])
            x1, y1 = max(x1, x0), max(y1, y0)
            counts = rle["counts"]
            results.append({
                "image_id": image_id,
                "category_id": int(cat),
                "segmentation": {"size": [h, w], "counts": counts.decode("ascii")
                                 if isinstance(counts, bytes) else counts},
                "bbox": [float(x0), float(y0), float(x1) - float(x0), float(y1) - float(y0)],
                "score": float(np.float32(score)),
            })
    return results


def _samples_from_results(results: list[dict[str, Any]], gt_samples: list[Sample],
                          categories: Categories) -> list[Sample]:
    """Prediction Samples built from the raw results by hand (not with read_coco_results)."""
    out = []
    for gt in gt_samples:
        rows = [r for r in results if r["image_id"] == gt.image_id]
        xyxy = [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                 r["bbox"][1] + r["bbox"][3]] for r in rows]
        inst = Instances(
            image_size=gt.image_size,
            boxes=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
            labels=[categories.label_of(r["category_id"]) for r in rows],
            masks=Masks.from_rles([r["segmentation"] for r in rows], gt.image_size),
            scores=np.asarray([r["score"] for r in rows], dtype=np.float32),
        )
        out.append(Sample(inst, gt.image_id, SampleMeta(categories=categories)))
    return out


def _stats(evaluator: COCOeval) -> np.ndarray:
    return np.asarray(evaluator.stats, dtype=np.float64)


def _named(stats: dict[str, float]) -> np.ndarray:
    return np.asarray(list(stats.values()), dtype=np.float64)


@pytest.mark.parametrize("split, seed", [("val", 0), ("val", 1), ("train", 2)])
def test_map_equals_pycocotools_on_tinycoco(tinycoco: dict[str, Path], tmp_path: Path,
                                            split: str, seed: int) -> None:
    gt_file = tinycoco[f"{split}_json"]
    results = _perturbed_results(gt_file, seed)
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    oracle = _oracle(gt_file, results_file)

    dataset = read_coco(gt_file)
    predictions = _samples_from_results(results, list(dataset), dataset.categories)
    got = evaluate(dataset, predictions, progress=False)
    # The perturbations leave something to measure: neither perfect nor zero.
    assert 0.2 < got.mask_map50 < 0.98
    np.testing.assert_allclose(_named(got.mask_stats), _stats(oracle["segm"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_named(got.box_stats), _stats(oracle["bbox"]), rtol=0, atol=1e-6)
    assert got.mask_map50 == pytest.approx(oracle["segm"].stats[1], abs=1e-6)
    assert got.mask_map == pytest.approx(oracle["segm"].stats[0], abs=1e-6)
    assert got.box_map50 == pytest.approx(oracle["bbox"].stats[1], abs=1e-6)
    assert got.box_map == pytest.approx(oracle["bbox"].stats[0], abs=1e-6)

    # Per-class AP from the oracle's own precision array.
    precision = oracle["segm"].eval["precision"][:, :, :, 0, -1]
    cat_ids = list(oracle["segm"].params.catIds)
    for row in got.per_class:
        column = precision[0, :, cat_ids.index(row["category_id"])]
        defined = column[column > -1]
        if defined.size:
            assert row["mask_ap50"] == pytest.approx(defined.mean(), abs=1e-9)
            np.testing.assert_allclose(
                got.pr_curves[row["label"]]["precision"], column, rtol=0, atol=1e-12)
        else:
            assert math.isnan(row["mask_ap50"])
            assert np.isnan(got.pr_curves[row["label"]]["precision"]).all()

    # The same figures from COCO results given as a list, and read back from the file.
    from_list = evaluate(dataset, results, progress=False)
    np.testing.assert_allclose(_named(from_list.mask_stats), _stats(oracle["segm"]), atol=1e-6)
    np.testing.assert_allclose(_named(from_list.box_stats), _stats(oracle["bbox"]), atol=1e-6)
    from_file = evaluate(dataset, read_coco_results(results_file, dataset), progress=False)
    np.testing.assert_allclose(_named(from_file.mask_stats), _stats(oracle["segm"]), atol=1e-6)
    np.testing.assert_allclose(_named(from_file.box_stats), _stats(oracle["bbox"]), atol=1e-6)
    assert from_file.per_image == got.per_image


def test_oracle_comparison_can_fail(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    """A deliberately mis-mapped category id changes the figures, so the oracle test can fail."""
    gt_file = tinycoco["val_json"]
    results = _perturbed_results(gt_file, 0)
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    oracle = _oracle(gt_file, results_file)
    dataset = read_coco(gt_file)
    predictions = _samples_from_results(results, list(dataset), dataset.categories)
    broken = []
    for sample in predictions:
        labels = sample.instances.labels.copy()
        labels[::3] = (labels[::3] + 1) % len(dataset.categories)  # a third of them mis-mapped
        broken.append(sample.replace(instances=sample.instances.replace(labels=labels)))
    got = evaluate(dataset, broken, progress=False)
    assert abs(got.mask_stats["AP50"] - oracle["segm"].stats[1]) > 1e-3
    assert abs(got.box_stats["AP50"] - oracle["bbox"].stats[1]) > 1e-3


def test_crowd_regions_are_ignored(tinycoco: dict[str, Path]) -> None:
    """Predictions inside a crowd region of its class are neither TP nor FP (as COCO does)."""
    dataset = read_coco(tinycoco["val_json"])
    sample = dataset[dataset.index_of(516168)]  # holds one crowd annotation
    gt = sample.instances
    assert gt.iscrowd.sum() == 1
    crowd = int(np.flatnonzero(gt.iscrowd)[0])
    regular = gt[~gt.iscrowd]
    dense = gt.masks[crowd].to_dense()[0]
    piece = dense.copy()
    piece[: piece.shape[0] // 2] = False
    assert piece.any()
    crowd_label = int(gt.labels[crowd])
    other = (crowd_label + 1) % len(dataset.categories)
    pred = Instances.cat([
        regular.replace(scores=np.full(len(regular), 0.9, np.float32), extras={}),
        Instances(image_size=gt.image_size, masks=Masks.from_dense(np.stack([piece, piece])),
                  labels=[crowd_label, other], scores=np.asarray([0.8, 0.7], np.float32)),
    ])
    match = match_instances(gt, pred)
    _check_match(match, gt, pred)
    n = len(regular)
    assert match.pred_matched[:n].all() and match.tp == n
    assert match.pred_ignored[n] and not match.pred_matched[n]  # same class: ignored
    assert not match.pred_ignored[n + 1] and match.fp == 1  # other class: false positive
    assert match.fn == 0 and not match.gt_matched[crowd] and match.gt_ignored[crowd]

    result = evaluate([sample], [sample.replace(instances=pred)], dataset.categories,
                      progress=False)
    assert result.per_image[516168] == {"tp": n, "fp": 1, "fn": 0}


def test_perfect_and_empty_predictions(tinycoco: dict[str, Path]) -> None:
    dataset = read_coco(tinycoco["val_json"])
    rng = np.random.default_rng(0)
    perfect = []
    for sample in dataset:
        inst = sample.instances[~sample.instances.iscrowd]
        inst = inst.replace(scores=rng.random(len(inst)).astype(np.float32), extras={})
        perfect.append(sample.replace(instances=inst))
    result = evaluate(dataset, perfect, score_threshold=0.0, progress=False)
    assert result.mask_map50 == result.mask_map == result.box_map50 == result.box_map == 1.0
    assert result.primary == 1.0
    assert all(v["fp"] == 0 and v["fn"] == 0 for v in result.per_image.values())
    assert result.mean_iou > 0.9  # the crowd regions are not predicted
    for row in result.per_class:
        assert row["mask_ap50"] == pytest.approx(1.0) or (
            row["num_gt"] == 0 and math.isnan(row["mask_ap50"]))
    payload = json.dumps(result.as_dict(), allow_nan=False)
    assert "mask_map50" in payload

    empty = [s.replace(instances=Instances.empty(s.image_size).replace(
        scores=np.zeros(0, np.float32))) for s in dataset]
    nothing = evaluate(dataset, empty, progress=False)
    assert nothing.mask_map50 == 0.0 and nothing.box_map == 0.0 and nothing.mean_iou == 0.0
    assert sum(v["fn"] for v in nothing.per_image.values()) == int(
        sum((~s.instances.iscrowd).sum() for s in dataset))
    assert evaluate(dataset, [], progress=False).mask_map == 0.0


def test_best_f1_threshold_follows_the_models_score_scale(tinycoco: dict[str, Path]) -> None:
    """A model scoring everything under 0.5 (as a briefly trained DETR does): at 0.5 nothing
    counts; at the best-F1 score every true detection does and the wrong ones do not."""
    dataset = read_coco(tinycoco["val_json"])
    rng = np.random.default_rng(1)
    low = []
    for sample in dataset:
        inst = sample.instances[~sample.instances.iscrowd]
        wrong = inst.replace(labels=(inst.labels + 1) % len(dataset.categories))
        both = Instances.cat([inst, wrong]) if len(inst) else inst
        scores = np.r_[rng.uniform(0.2, 0.3, len(inst)), rng.uniform(0.0, 0.15, len(inst))]
        low.append(sample.replace(instances=both.replace(scores=scores.astype(np.float32),
                                                         extras={})))
    at_half = evaluate(dataset, low, progress=False)
    assert sum(v["tp"] for v in at_half.per_image.values()) == 0
    best = evaluate(dataset, low, score_threshold="f1", progress=False)
    true_scores = [float(s) for p in low for s in p.instances.scores if 0.2 <= s < 0.3]
    assert best.score_threshold == pytest.approx(min(true_scores))
    assert sum(v["fp"] + v["fn"] for v in best.per_image.values()) == 0
    assert best.mask_map50 == at_half.mask_map50  # mAP does not depend on it

    def f1(result: Any) -> float:
        tp, fp, fn = (sum(v[k] for v in result.per_image.values()) for k in ("tp", "fp", "fn"))
        return 2 * tp / max(2 * tp + fp + fn, 1)

    for threshold in (0.05, 0.1, 0.25, 0.29):
        assert f1(evaluate(dataset, low, score_threshold=threshold, progress=False)) < f1(best)
    with pytest.raises(ValueError, match="f1"):
        evaluate(dataset, low, score_threshold="best", progress=False)


def test_match_agrees_with_cocoeval_on_tinycoco(tinycoco: dict[str, Path]) -> None:
    """match_instances' TP/FP/FN per image equal COCOeval's matches at IoU 0.5."""
    gt_file = tinycoco["val_json"]
    dataset = read_coco(gt_file)
    results = _perturbed_results(gt_file, 3)
    predictions = _samples_from_results(results, list(dataset), dataset.categories)
    result = evaluate(dataset, predictions, score_threshold=0.0, progress=False)
    for gt, pred in zip(dataset, predictions, strict=True):
        match = match_instances(gt.instances, pred.instances)
        _check_match(match, gt.instances, pred.instances)
        assert {"tp": match.tp, "fp": match.fp, "fn": match.fn} == result.per_image[gt.image_id]


# --- match_instances ----------------------------------------------------------------------------


def _check_match(match: Match, gt: Instances, pred: Instances) -> None:
    """Invariants of a matching; raises AssertionError on a broken one."""
    p, g = len(pred), len(gt)
    assert match.pred_matched.shape == (p,) and match.pred_to_gt.shape == (p,)
    assert match.gt_matched.shape == (g,) and match.ious.shape == (p, g)
    assert np.array_equal(match.pred_matched, match.pred_to_gt >= 0)
    assert not (match.pred_matched & match.pred_ignored).any()
    targets = match.pred_to_gt[match.pred_matched]
    assert len(set(targets.tolist())) == len(targets), "a ground truth matched twice"
    assert np.array_equal(np.isin(np.arange(g), targets), match.gt_matched)
    assert not gt.iscrowd[targets].any()
    assert (match.ious[np.flatnonzero(match.pred_matched), targets] >= match.iou_threshold).all()
    assert np.array_equal(pred.labels[match.pred_matched], gt.labels[targets])
    assert match.tp + match.fn == int((~gt.iscrowd).sum())
    assert match.tp + match.fp + int(match.pred_ignored.sum()) == p


def test_match_checker_fails_on_a_broken_match() -> None:
    size = (20, 20)
    dense = np.zeros((2, 20, 20), bool)
    dense[0, 2:8, 2:8] = True
    dense[1, 10:18, 10:18] = True
    gt = Instances(image_size=size, masks=Masks.from_dense(dense), labels=[0, 0])
    pred = gt.replace(scores=np.asarray([0.9, 0.8], np.float32))
    match = match_instances(gt, pred)
    _check_match(match, gt, pred)
    assert match.tp == 2 and match.fp == 0 and match.fn == 0
    both_to_first = Match(match.pred_matched, match.pred_ignored, np.asarray([0, 0]),
                          match.gt_matched, match.gt_ignored, match.ious, 0.5)
    with pytest.raises(AssertionError):
        _check_match(both_to_first, gt, pred)


def test_match_prefers_higher_score_and_best_iou() -> None:
    size = (20, 20)
    g = np.zeros((1, 20, 20), bool)
    g[0, 0:10, 0:10] = True
    p = np.zeros((3, 20, 20), bool)
    p[0, 0:10, 0:9] = True  # IoU 0.9
    p[1, 0:10, 0:10] = True  # IoU 1.0 but a lower score
    p[2, 0:10, 0:10] = True  # another class
    gt = Instances(image_size=size, masks=Masks.from_dense(g), labels=[1])
    pred = Instances(image_size=size, masks=Masks.from_dense(p), labels=[1, 1, 0],
                     scores=np.asarray([0.9, 0.5, 0.95], np.float32))
    match = match_instances(gt, pred)
    assert match.pred_to_gt.tolist() == [0, -1, -1]
    assert match.ious[:, 0] == pytest.approx([0.9, 1.0, 1.0])
    assert match_instances(gt, pred, class_aware=False).pred_to_gt.tolist() == [-1, -1, 0]
    assert match_instances(gt, pred, iou_threshold=0.95).pred_to_gt.tolist() == [-1, 0, -1]
    boxes = match_instances(gt, pred, iou_type="bbox")
    assert boxes.pred_to_gt.tolist() == [0, -1, -1]


@given(data=st.data())
def test_match_properties_and_cocoeval_agreement(data: st.DataObject) -> None:
    size = data.draw(ks.image_sizes(8, 32))
    gt = data.draw(ks.instances(size, max_size=5, num_classes=2, num_keypoints=0,
                                with_scores=False))
    pred = data.draw(ks.instances(size, max_size=5, num_classes=2, num_keypoints=0,
                                  with_scores=True))
    pred = pred.replace(iscrowd=np.zeros(len(pred), bool))
    threshold = data.draw(st.sampled_from([0.1, 0.5, 0.75]))
    match = match_instances(gt, pred, iou_threshold=threshold)
    _check_match(match, gt, pred)

    # The same single image through COCOeval: its matches at this IoU threshold.
    categories = ks.category_table(2)
    gt_sample = Sample(gt, 1, SampleMeta(categories=categories))
    pred_sample = Sample(pred, 1, SampleMeta(categories=categories))
    result = evaluate([gt_sample], [pred_sample], categories, iou_types=("segm",),
                      score_threshold=-1.0, progress=False)
    if threshold == 0.5:
        assert result.per_image[1] == {"tp": match.tp, "fp": match.fp, "fn": match.fn}


# --- union mean IoU -----------------------------------------------------------------------------


def _guide_mean_iou(gt_samples: list[Sample], pred_samples: list[Sample]) -> float:
    """The Transformers guide's compute_mean_iou, on dense torch masks."""
    import torch

    ious = []
    for gt, pred in zip(gt_samples, pred_samples, strict=True):
        gt_masks = torch.as_tensor(gt.instances.masks.to_dense())
        if gt_masks.numel() == 0:
            continue
        pred_union = torch.as_tensor(pred.instances.masks.to_dense()).any(dim=0) \
            if len(pred.instances) else torch.zeros(gt.image_size, dtype=torch.bool)
        gt_union = gt_masks.any(dim=0).bool()
        inter = (pred_union & gt_union).sum().float()
        union = (pred_union | gt_union).sum().float()
        ious.append((inter / union.clamp(min=1)).item())
    return sum(ious) / len(ious) if ious else 0.0


def test_union_mean_iou_matches_the_guide(tinycoco: dict[str, Path]) -> None:
    gt_file = tinycoco["train_json"]
    dataset = read_coco(gt_file)
    gt_samples = list(dataset)
    assert any(len(s.instances) == 0 for s in gt_samples)  # images without GT are skipped
    predictions = _samples_from_results(_perturbed_results(gt_file, 4), gt_samples,
                                        dataset.categories)
    expected = _guide_mean_iou(gt_samples, predictions)
    assert 0.3 < expected < 0.99
    assert union_mean_iou(dataset, predictions) == pytest.approx(expected, abs=1e-6)
    result = evaluate(dataset, predictions, score_threshold=0.0, progress=False)
    assert result.mean_iou == pytest.approx(expected, abs=1e-6)


def test_union_iou_by_hand() -> None:
    size = (10, 10)
    g = np.zeros((2, 10, 10), bool)
    g[0, 0:4, 0:4] = True
    g[1, 2:6, 2:6] = True  # union: 16 + 16 - 4 = 28 pixels
    p = np.zeros((2, 10, 10), bool)
    p[0, 0:4, 0:7] = True  # 28 pixels, 16 + 4 = 20... inside the GT union: rows 0-3
    p[1, 8:10, 8:10] = True  # 4 pixels, outside; low score
    gt = Instances(image_size=size, masks=Masks.from_dense(g), labels=[0, 0])
    pred = Instances(image_size=size, masks=Masks.from_dense(p), labels=[0, 0],
                     scores=np.asarray([0.9, 0.1], np.float32))
    gt_union = g.any(0)
    inter_all = (gt_union & p.any(0)).sum()
    union_all = (gt_union | p.any(0)).sum()
    assert union_iou(gt, pred) == pytest.approx(inter_all / union_all)
    inter_kept = (gt_union & p[0]).sum()
    assert union_iou(gt, pred, score_threshold=0.5) == pytest.approx(
        inter_kept / (gt_union | p[0]).sum())
    assert union_iou(Instances.empty(size), pred) is None
    assert union_iou(gt, Instances.empty(size)) == 0.0


# --- COCO results I/O and bad input -------------------------------------------------------------


def test_results_round_trip_and_pycocotools_loads_them(tinycoco: dict[str, Path],
                                                       tmp_path: Path) -> None:
    gt_file = tinycoco["val_json"]
    dataset = read_coco(gt_file)
    predictions = _samples_from_results(_perturbed_results(gt_file, 5), list(dataset),
                                        dataset.categories)
    results = to_coco_results(predictions, dataset.categories)
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(str(gt_file)).loadRes(str(path))
    assert len(loaded.getAnnIds()) == len(results)
    back = read_coco_results(path, dataset)
    assert [s.image_id for s in back] == [s.image_id for s in dataset]
    for original, again in zip(predictions, back, strict=True):
        assert again.instances.masks == original.instances.masks
        np.testing.assert_array_equal(again.instances.labels, original.instances.labels)
        np.testing.assert_array_equal(again.instances.scores, original.instances.scores)
        np.testing.assert_allclose(again.instances.boxes, original.instances.boxes, atol=1e-4)


def _bad(results: list[dict[str, Any]], tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(results))
    return path


def test_bad_results_name_index_and_image(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    dataset = read_coco(tinycoco["val_json"])
    image_id = int(dataset.image_ids[0])
    h, w = dataset[0].image_size
    good_rle = mask_utils.encode(np.asfortranarray(np.ones((h, w), np.uint8)))
    good = {"image_id": image_id, "category_id": dataset.categories.ids[0], "score": 0.5,
            "segmentation": {"size": [h, w], "counts": good_rle["counts"].decode()}}
    assert len(read_coco_results([good], dataset)[0].instances) == 1

    # The results reader applies the COCO rulebook's value rules: matched by type and code.
    from instkit import errors as E

    cases = [
        ({**good, "image_id": 123456789}, E.UnknownReferenceError, "unknown-image"),
        ({**good, "category_id": 1000}, E.UnknownReferenceError, "unknown-category"),
        ({**good, "segmentation": {"size": [h + 1, w], "counts": good_rle["counts"].decode()}},
         E.RLEError, "rle-size-mismatch"),
        ({**good, "score": None}, E.SchemaError, "schema-type"),
        ({**good, "bbox": [0, 0, -1, 2]}, E.BoxError, "bbox-invalid"),
        ({**good, "bbox": [10**400, 0, 1, 2]}, E.LimitError, "coordinate-out-of-range"),
        ({**good, "segmentation": [[0, 0, 1e9, 0, 0, 1e9]]}, E.LimitError, "coordinate-out-of-range"),
        ({**good, "segmentation": {"size": ["x", w], "counts": "a"}}, E.SchemaError, "schema-type"),
    ]
    for bad, error, code in cases:
        path = _bad([good, bad], tmp_path)
        with pytest.raises(error) as info:
            read_coco_results(path, dataset)
        assert info.value.code == code
        message = str(info.value)
        assert "[1]" in message and str(path) in message
        assert f"image_id={bad['image_id']}" in message
    with pytest.raises(FormatError, match="must be a JSON list"):
        read_coco_results(_bad({"not": "a list"}, tmp_path), dataset)  # type: ignore[arg-type]


def test_bad_predictions_give_clear_errors(tinycoco: dict[str, Path]) -> None:
    dataset = read_coco(tinycoco["val_json"])
    sample = dataset[0]
    inst = sample.instances.replace(scores=np.ones(len(sample.instances), np.float32),
                                    extras={})
    with pytest.raises(EvaluationError, match="not in the ground truth"):
        evaluate(dataset, [sample.replace(instances=inst, image_id=999)], progress=False)
    with pytest.raises(EvaluationError, match="need scores"):
        evaluate(dataset, [sample], progress=False)
    with pytest.raises(EvaluationError, match="two prediction samples"):
        evaluate(dataset, [sample.replace(instances=inst)] * 2, progress=False)
    boxes_only = inst.replace(masks=None)
    with pytest.raises(EvaluationError, match="iou_types=\\('bbox',\\)"):
        evaluate(dataset, [sample.replace(instances=boxes_only)], progress=False)
    only_boxes = evaluate(dataset, [sample.replace(instances=boxes_only)], iou_types=("bbox",),
                          progress=False)
    assert math.isnan(only_boxes.mask_map50) and only_boxes.box_map50 > 0
    assert only_boxes.primary == only_boxes.box_map50
    other_table = Categories.from_names(["a", "b"])
    with pytest.raises(EvaluationError, match="category table differs"):
        evaluate(dataset, [sample.replace(instances=inst,
                                          meta=SampleMeta(categories=other_table))],
                 progress=False)
    with pytest.raises(ValueError, match="iou_types"):
        evaluate(dataset, [], iou_types=("keypoints",))


def test_file_areas_decide_small_medium_large(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    """COCO puts ground truth in small/medium/large by the file's ``area``, not the pixel count:
    with areas rewritten to other sizes, instkit still agrees with pycocotools on that file."""
    doc = json.loads(tinycoco["val_json"].read_text())
    rng = np.random.default_rng(7)
    for ann in doc["annotations"]:
        ann["area"] = float(ann["area"]) * float(rng.choice([0.05, 1.0, 20.0]))
    gt_file = tmp_path / "instances.json"
    gt_file.write_text(json.dumps(doc))
    results = _perturbed_results(gt_file, 8)
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    oracle = _oracle(gt_file, results_file)
    dataset = read_coco(gt_file)
    got = evaluate(dataset, _samples_from_results(results, list(dataset), dataset.categories),
                   progress=False)
    np.testing.assert_allclose(_named(got.mask_stats), _stats(oracle["segm"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_named(got.box_stats), _stats(oracle["bbox"]), rtol=0, atol=1e-6)
    # Pixel-count areas would give other small/medium/large figures: the check can fail.
    plain = evaluate(read_coco(tinycoco["val_json"]), results, progress=False)
    sizes = ["APs", "APm", "APl", "ARs", "ARm", "ARl"]
    assert any(abs(plain.mask_stats[k] - got.mask_stats[k]) > 1e-3 for k in sizes)


def test_results_in_other_mask_forms_and_report(tinycoco: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Polygon and uncompressed-RLE results read as the same masks; the report is JSON-ready and
    the progress bar goes to stderr only."""
    dataset = read_coco(tinycoco["val_json"])
    sample = dataset[0]
    h, w = sample.image_size
    cat = dataset.categories.ids[int(sample.instances.labels[0])]
    square = [10.0, 10.0, 60.0, 10.0, 60.0, 50.0, 10.0, 50.0]
    rle = mask_utils.frPyObjects([square], h, w)[0]
    dense = mask_utils.decode(rle)
    uncompressed = {"size": [h, w],
                    "counts": [int(c) for c in _uncompressed_counts(dense)]}
    base = {"image_id": sample.image_id, "category_id": cat, "score": 0.9}
    read = read_coco_results([{**base, "segmentation": [square]},
                              {**base, "segmentation": uncompressed},
                              {**base, "segmentation": {"size": [h, w],
                                                        "counts": rle["counts"].decode()}}],
                             dataset)
    masks = read[0].instances.masks
    assert masks is not None and len(masks) == 3
    assert (masks.to_dense() == dense.astype(bool)[None]).all()
    np.testing.assert_array_equal(read[0].instances.boxes, [[10, 10, 60, 50]] * 3)

    result = evaluate(dataset, read, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""  # pycocotools' prints are silenced
    assert "evaluate" in captured.err
    report = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert set(report["mask_stats"]) >= {"AP", "AP50", "ARl"}
    assert len(report["per_class"]) == len(dataset.categories)
    assert all(len(c["precision"]) == 101 for c in report["pr_curves"])
    assert {row["image_id"] for row in report["per_image"]} == set(dataset.image_ids.tolist())
    first = next(r for r in report["per_image"] if r["image_id"] == sample.image_id)
    assert first["tp"] + first["fp"] == 3  # the square is either a hit or a false positive


def _uncompressed_counts(dense: np.ndarray) -> list[int]:
    flat = dense.reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]

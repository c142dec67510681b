"""Error analysis beyond mAP: confusion matrix, TIDE-style error breakdown, per-class and
per-size tables, Boundary IoU.

Everything here matches with instkit's one matcher (``instkit.evaluation.match_instances``,
COCO's greedy matching), so its true positives are the metric's.

Conventions:

- ``confusion``: int64 ``(C + 1, C + 1)``; rows are ground-truth classes (labels ``0..C-1``),
  columns predicted classes, and the last row and column are *background*. It counts the
  predictions scoring ``>= score_threshold``: first matched class-aware at ``iou_threshold``
  (the diagonal), then the rest class-agnostic against the ground truth still unmatched
  (off-diagonal: right place, wrong class). Predictions left over are ``(background, class)``;
  ground truth left over ``(class, background)``. Crowd regions and the predictions they absorb
  are not counted, so row ``c`` sums to the non-crowd ground truth of class ``c``.
- Error breakdown (Bolya et al., "TIDE", ECCV 2020), over the predictions the AP uses (every
  prediction, at most 100 per image and class, as COCO): each false positive at
  ``iou_threshold`` (``t_f``) is, in this order, *background* (IoU ``< t_b`` =
  ``background_iou`` with every ground truth), *classification* (IoU ``>= t_f`` with ground
  truth of another class), *duplicate* (IoU ``>= t_f`` with ground truth of its class, already
  taken), *localisation* (``t_b <= IoU < t_f`` with its class) or *both* (``t_b <= IoU < t_f``
  with another class). Ground truth that no prediction found and that is not the target of a
  classification or localisation error is *missed*. ``delta_ap``: the AP at ``iou_threshold``
  gained by fixing one type alone, as TIDE fixes it: a classification error takes its target's
  class, a localisation error its target's mask and box (either is dropped when its target is
  already found), both/duplicate/background errors are dropped, missed ground truth is removed.
- AP at ``iou_threshold`` is COCO's (101 recall points, all areas, 100 detections), computed
  from the matcher; it equals ``COCOeval``'s AP50 at 0.5 (tested).
- Boundary IoU (Cheng et al., CVPR 2021): the IoU of the mask pixels within ``d`` pixels of each
  mask's contour, ``d = max(1, round(dilation_ratio * image diagonal))``. With
  ``boundary=True`` the matching IoU is ``min(mask IoU, Boundary IoU)``, as the Boundary IoU
  API's evaluation uses it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from instkit.categories import Categories
from instkit.evaluation import (
    EvaluationError,
    EvaluationResult,
    _jsonable,
    evaluate,
    match_instances,
    pairwise_iou,
    read_coco_results,
)
from instkit.instances import Instances
from instkit.io.coco import CocoDataset
from instkit.masks import Masks
from instkit.sample import Sample
from instkit.sample import categories_of as sample_categories

ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")
SIZES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
MAX_DETS = 100
_RECALL = np.linspace(0.0, 1.0, 101)
COCO_IOUS = np.linspace(0.5, 0.95, 10)

IouFunction = Callable[[Instances, Instances], np.ndarray]


# --- Boundary IoU -------------------------------------------------------------------------------


def _boundary_rles(masks: Masks, dilation: int) -> list[dict[str, Any]]:
    import cv2

    out = []
    kernel = np.ones((3, 3), dtype=np.uint8)
    for rle in masks.to_rle():
        dense = mask_utils.decode(rle)
        padded = cv2.copyMakeBorder(dense, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, kernel, iterations=dilation)[1:-1, 1:-1]
        out.append(mask_utils.encode(np.asfortranarray(dense - eroded)))
    return out


def boundary_dilation(image_size: tuple[int, int], dilation_ratio: float = 0.02) -> int:
    """The boundary width ``d`` in pixels for an ``(H, W)`` image."""
    h, w = image_size
    return max(1, int(round(dilation_ratio * math.hypot(h, w))))


def boundary_iou(pred: Instances, gt: Instances, dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary IoU of every prediction with every ground truth, float64 ``(P, G)``.

    Crowd columns hold boundary intersection / prediction boundary area, as COCO treats crowd.
    """
    if pred.masks is None or gt.masks is None:
        raise EvaluationError("Boundary IoU needs masks on both predictions and ground truth")
    if pred.image_size != gt.image_size:
        raise EvaluationError(f"predictions are for an image of size {pred.image_size}, the "
                              f"ground truth for {gt.image_size}")
    p, g = len(pred), len(gt)
    if p == 0 or g == 0:
        return np.zeros((p, g), dtype=np.float64)
    d = boundary_dilation(gt.image_size, dilation_ratio)
    ious = mask_utils.iou(_boundary_rles(pred.masks, d), _boundary_rles(gt.masks, d),
                          [int(c) for c in gt.iscrowd])
    return np.asarray(ious, dtype=np.float64).reshape(p, g)


def _iou_function(iou_type: str, boundary: bool, dilation_ratio: float) -> IouFunction:
    if not boundary:
        return lambda pred, gt: pairwise_iou(pred, gt, iou_type)
    if iou_type != "segm":
        raise ValueError("boundary=True needs iou_type='segm'")
    return lambda pred, gt: np.minimum(pairwise_iou(pred, gt, "segm"),
                                       boundary_iou(pred, gt, dilation_ratio))


# --- AP at one threshold, from the matcher ------------------------------------------------------


def _top_per_class(pred: Instances) -> Instances:
    """COCO's cut: at most 100 predictions per class, by descending score (stable)."""
    if len(pred) == 0:
        return pred
    scores = pred.scores if pred.scores is not None else np.zeros(len(pred), np.float32)
    order = np.lexsort((np.arange(len(pred)), -scores.astype(np.float64), pred.labels))
    labels = pred.labels[order]
    rank = np.arange(len(order)) - np.searchsorted(labels, labels, side="left")
    keep = np.sort(order[rank < MAX_DETS])
    return pred[keep]


@dataclass
class _Image:
    gt: Instances
    pred: Instances
    ious: np.ndarray


def _average_precision(images: list[_Image], num_classes: int, threshold: float,
                       ) -> np.ndarray:
    """COCO's interpolated precision ``(101, C)`` at ``threshold`` (``nan`` for a class
    without ground truth): its mean over a column is the class's AP."""
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    hits: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    npig = np.zeros(num_classes, dtype=np.int64)
    for item in images:
        match = match_instances(item.gt, item.pred, threshold, ious=item.ious)
        npig += np.bincount(item.gt.labels[~match.gt_ignored], minlength=num_classes)
        s = (item.pred.scores if item.pred.scores is not None
             else np.zeros(len(item.pred), np.float32)).astype(np.float64)
        counted = ~match.pred_ignored
        for k in np.unique(item.pred.labels).tolist():
            sel = np.flatnonzero((item.pred.labels == k) & counted)
            sel = sel[np.argsort(-s[sel], kind="mergesort")]
            scores[k].append(s[sel])
            hits[k].append(match.pred_matched[sel])
    ap = np.full((len(_RECALL), num_classes), np.nan)
    for k in range(num_classes):
        if npig[k] == 0:
            continue
        if not scores[k]:
            ap[:, k] = 0.0
            continue
        s = np.concatenate(scores[k])
        order = np.argsort(-s, kind="mergesort")
        tp = np.concatenate(hits[k])[order]
        if tp.size == 0:
            ap[:, k] = 0.0
            continue
        tp_sum = np.cumsum(tp).astype(float)
        fp_sum = np.cumsum(~tp).astype(float)
        rc = tp_sum / npig[k]
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        at = np.searchsorted(rc, _RECALL, side="left")
        q = np.zeros(len(_RECALL))
        inside = at < len(tp)
        q[inside] = pr[at[inside]]
        ap[:, k] = q
    return ap


def _mean(values: np.ndarray) -> float:
    """The mean of the defined entries, flattened in COCOeval's order (to the last bit)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


# --- the analysis -------------------------------------------------------------------------------


@dataclass
class ErrorAnalysis:
    """What :func:`analyze` found; see the module docstring for the definitions.

    - ``names``: class names, label order; ``confusion``: int64 ``(C + 1, C + 1)``.
    - ``ap``: AP at ``iou_threshold`` (mean over classes with ground truth); ``ap_coco``: AP
      over IoU .5:.95 the same way (COCO's AP; Boundary AP with ``boundary=True``).
    - ``errors``: count per error type; ``delta_ap``: AP gained when that type is fixed.
    - ``per_class``: one dict per class: ``label``, ``name``, ``num_gt``, ``ap``, ``tp``/``fp``/
      ``fn`` (at ``score_threshold``) and the count of each error type.
    - ``per_size``: one dict per COCO size (small < 32², medium < 96², large): ``num_gt``,
      ``found``/``missed`` (at ``iou_threshold``, every prediction), ``recall``, and COCO's ``AP``
      and ``AR`` (``[.5:.95]``, 100 detections) for that size.
    """

    names: list[str]
    iou_type: str
    boundary: bool
    iou_threshold: float
    score_threshold: float
    background_iou: float
    confusion: np.ndarray
    ap: float
    ap_coco: float = math.nan
    errors: dict[str, int] = field(default_factory=dict)
    delta_ap: dict[str, float] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    per_size: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``nan`` becomes None)."""
        return _jsonable({
            "iou_type": self.iou_type, "boundary": self.boundary,
            "iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold,
            "background_iou": self.background_iou, "ap": self.ap, "ap_coco": self.ap_coco,
            "classes": self.names + ["background"], "confusion": self.confusion,
            "errors": self.errors, "delta_ap": self.delta_ap,
            "per_class": self.per_class, "per_size": self.per_size,
        })


def _classify_errors(item: _Image, threshold: float, background_iou: float,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prediction: error type index into ERROR_TYPES (-1: none) and target gt (-1: none);
    per ground truth: missed (bool)."""
    gt, pred, ious = item.gt, item.pred, item.ious
    match = match_instances(gt, pred, threshold, ious=ious)
    kind = np.full(len(pred), -1, dtype=np.int64)
    target = np.full(len(pred), -1, dtype=np.int64)
    real = ~gt.iscrowd.astype(bool)
    covered = np.zeros(len(gt), dtype=bool)
    for p in np.flatnonzero(match.pred_false):
        row = np.where(real, ious[p], -1.0) if len(gt) else np.zeros(0)
        same = gt.labels == pred.labels[p]
        best_same = int(np.argmax(np.where(same, row, -1.0))) if len(gt) else -1
        best_other = int(np.argmax(np.where(~same, row, -1.0))) if len(gt) else -1
        iou_same = row[best_same] if len(gt) and same[best_same] else -1.0
        iou_other = row[best_other] if len(gt) and not same[best_other] else -1.0
        if max(iou_same, iou_other) < background_iou:
            kind[p] = ERROR_TYPES.index("background")
        elif iou_other >= threshold:
            kind[p], target[p] = ERROR_TYPES.index("classification"), best_other
        elif iou_same >= threshold:
            kind[p], target[p] = ERROR_TYPES.index("duplicate"), best_same
        elif iou_same >= background_iou:
            kind[p], target[p] = ERROR_TYPES.index("localisation"), best_same
        else:
            kind[p], target[p] = ERROR_TYPES.index("both"), best_other
        if kind[p] in (ERROR_TYPES.index("classification"), ERROR_TYPES.index("localisation")):
            covered[target[p]] = True
    missed = match.gt_missed & ~covered
    return kind, target, missed


def _fixed(item: _Image, kind: np.ndarray, target: np.ndarray, missed: np.ndarray,
           error: str, found: np.ndarray, iou: IouFunction) -> _Image:
    gt, pred = item.gt, item.pred
    if error == "missed":
        gt = gt[np.flatnonzero(~missed)]
        return _Image(gt, pred, iou(pred, gt))
    code = ERROR_TYPES.index(error)
    rows = np.flatnonzero(kind == code)
    if rows.size == 0:
        return item
    drop = np.zeros(len(pred), dtype=bool)
    if error in ("classification", "localisation"):
        taken = found[target[rows]]
        drop[rows[taken]] = True
        rows = rows[~taken]
        if error == "classification":
            labels = pred.labels.copy()
            labels[rows] = gt.labels[target[rows]]
            pred = pred.replace(labels=labels)
        else:
            boxes = pred.boxes.copy()
            boxes[rows] = gt.boxes[target[rows]]
            masks = pred.masks
            if masks is not None and gt.masks is not None:
                rles = masks.to_rle()
                gt_rles = gt.masks.to_rle()
                for r in rows.tolist():
                    rles[r] = gt_rles[int(target[r])]
                masks = Masks.from_rles(rles, pred.image_size)
            pred = pred.replace(boxes=boxes, masks=masks)
    else:
        drop[rows] = True
    pred = pred[np.flatnonzero(~drop)]
    return _Image(gt, pred, iou(pred, gt))


def _confusion(images: list[_Image], num_classes: int, threshold: float,
               score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The confusion matrix and per-class (tp, fp, fn) at the score threshold."""
    bg = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for item in images:
        scores = item.pred.scores
        keep = (np.flatnonzero(scores >= score_threshold) if scores is not None
                else np.arange(len(item.pred)))
        pred, ious = item.pred[keep], item.ious[keep]
        gt = item.gt
        match = match_instances(gt, pred, threshold, ious=ious)
        for p in np.flatnonzero(match.pred_matched):
            matrix[pred.labels[p], pred.labels[p]] += 1
        rest_p = np.flatnonzero(match.pred_false)
        rest_g = np.flatnonzero(match.gt_missed)
        # right place, wrong class: the leftovers matched class-agnostically
        second = match_instances(gt[rest_g], pred[rest_p], threshold,
                                 ious=ious[np.ix_(rest_p, rest_g)], class_aware=False)
        for i, p in enumerate(rest_p.tolist()):
            g = int(second.pred_to_gt[i])
            if g >= 0:
                matrix[gt.labels[rest_g[g]], pred.labels[p]] += 1
            else:
                matrix[bg, pred.labels[p]] += 1
        for j, g in enumerate(rest_g.tolist()):
            if not second.gt_matched[j]:
                matrix[gt.labels[g], bg] += 1
    diag = np.diag(matrix)[:num_classes]
    counts = np.stack([diag, matrix[:, :num_classes].sum(axis=0) - diag,
                       matrix[:num_classes, :].sum(axis=1) - diag], axis=1)
    return matrix, counts


def _as_samples(ground_truth: Sequence[Sample] | CocoDataset,
                predictions: Sequence[Sample] | list[dict[str, Any]],
                categories: Categories | None) -> tuple[list[Sample], list[Sample], Categories]:
    cats = categories if categories is not None else sample_categories(ground_truth)
    if cats is None:
        raise EvaluationError("no category table: pass categories=... (the ground truth's)")
    gt = list(ground_truth)
    if isinstance(predictions, list) and (not predictions or isinstance(predictions[0], dict)):
        preds = read_coco_results(predictions, gt, cats)
    else:
        by_id: dict[int, Sample] = {p.image_id: p for p in predictions
                                    if isinstance(p, Sample)}
        if len(by_id) != len(predictions):
            raise EvaluationError("predictions must be Samples (one per image) or COCO results")
        unknown = set(by_id) - {s.image_id for s in gt}
        if unknown:
            raise EvaluationError(f"predictions for image ids {sorted(unknown)[:5]} that are "
                                  "not in the ground truth")
        preds = [by_id.get(s.image_id) or Sample(Instances.empty(s.image_size), s.image_id)
                 for s in gt]
    return gt, preds, cats


def analyze(
    ground_truth: Sequence[Sample] | CocoDataset,
    predictions: Sequence[Sample] | list[dict[str, Any]],
    categories: Categories | None = None,
    *,
    iou_type: str = "segm",
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    background_iou: float = 0.1,
    boundary: bool = False,
    dilation_ratio: float = 0.02,
) -> ErrorAnalysis:
    """Confusion matrix, error breakdown with the AP each fix adds, per-class and per-size
    tables (see the module docstring). ``predictions``: prediction ``Sample``s or COCO results.
    ``score_threshold`` applies to the confusion matrix and the per-class tp/fp/fn only.
    """
    if not 0.0 < background_iou < iou_threshold <= 1.0:
        raise ValueError("need 0 < background_iou < iou_threshold <= 1, got "
                         f"{background_iou} and {iou_threshold}")
    iou = _iou_function(iou_type, boundary, dilation_ratio)
    gt_samples, pred_samples, cats = _as_samples(ground_truth, predictions, categories)
    c = len(cats)
    images: list[_Image] = []
    for sample, pred_sample in zip(gt_samples, pred_samples, strict=True):
        gt, pred = sample.instances, _top_per_class(pred_sample.instances)
        for name, inst in (("ground-truth", gt), ("prediction", pred)):
            if len(inst) and (inst.labels.min() < 0 or inst.labels.max() >= c):
                raise EvaluationError(f"{name} labels {sorted(set(inst.labels.tolist()))} go "
                                      f"outside 0..{c - 1} (image id {sample.image_id})")
        try:
            ious = iou(pred, gt)
        except EvaluationError as exc:
            raise EvaluationError(f"{exc.message} (image id {sample.image_id})") from None
        images.append(_Image(gt, pred, ious))

    base = _average_precision(images, c, iou_threshold)
    errors = {name: 0 for name in ERROR_TYPES}
    per_class_errors = np.zeros((c, len(ERROR_TYPES)), dtype=np.int64)
    fixed: dict[str, list[_Image]] = {name: [] for name in ERROR_TYPES}
    size_found = np.zeros(len(SIZES), dtype=np.int64)
    size_all = np.zeros(len(SIZES), dtype=np.int64)
    for item in images:
        kind, target, missed = _classify_errors(item, iou_threshold, background_iou)
        found = match_instances(item.gt, item.pred, iou_threshold, ious=item.ious).gt_matched
        for code in kind[kind >= 0].tolist():
            errors[ERROR_TYPES[code]] += 1
        np.add.at(per_class_errors, (item.pred.labels[kind >= 0], kind[kind >= 0]), 1)
        np.add.at(per_class_errors, (item.gt.labels[missed], ERROR_TYPES.index("missed")), 1)
        errors["missed"] += int(missed.sum())
        for name in ERROR_TYPES:
            fixed[name].append(_fixed(item, kind, target, missed, name, found, iou))
        real = ~item.gt.iscrowd.astype(bool)
        area = (item.gt.masks.area() if item.gt.masks is not None and iou_type == "segm"
                else (item.gt.boxes[:, 2] - item.gt.boxes[:, 0])
                * (item.gt.boxes[:, 3] - item.gt.boxes[:, 1]))
        for s, (_, lo, hi) in enumerate(SIZES):
            inside = real & (area >= lo) & (area < hi)
            size_all[s] += int(inside.sum())
            size_found[s] += int((inside & found).sum())
    ap = _mean(base)
    # COCO's AP over .5:.95, flattened (T, R, K) as COCOeval averages it
    ap_coco = _mean(np.stack([base if t == iou_threshold else
                              _average_precision(images, c, float(t)) for t in COCO_IOUS]))
    delta = {name: _mean(_average_precision(fixed[name], c, iou_threshold)) - ap
             for name in ERROR_TYPES}

    matrix, counts = _confusion(images, c, iou_threshold, score_threshold)
    num_gt = matrix[:c, :].sum(axis=1)
    per_class = []
    for label, category in enumerate(cats):
        row: dict[str, Any] = {"label": label, "name": category.name,
                               "num_gt": int(num_gt[label]), "ap": _mean(base[:, label]),
                               "tp": int(counts[label, 0]), "fp": int(counts[label, 1]),
                               "fn": int(counts[label, 2])}
        row.update({name: int(per_class_errors[label, k]) for k, name in enumerate(ERROR_TYPES)})
        per_class.append(row)

    per_size = []
    coco_type = "segm" if iou_type == "segm" else "bbox"
    coco = evaluate(gt_samples, pred_samples, cats, iou_types=(coco_type,), progress=False)
    stats = coco.mask_stats if coco_type == "segm" else coco.box_stats
    for s, (name, _, _) in enumerate(SIZES):
        key = name[0]
        per_size.append({
            "size": name, "num_gt": int(size_all[s]), "found": int(size_found[s]),
            "missed": int(size_all[s] - size_found[s]),
            "recall": float(size_found[s] / size_all[s]) if size_all[s] else math.nan,
            "AP": _undefined(stats[f"AP{key}"]), "AR": _undefined(stats[f"AR{key}"]),
        })
    return ErrorAnalysis(
        names=list(cats.names), iou_type=iou_type, boundary=boundary,
        iou_threshold=float(iou_threshold), score_threshold=float(score_threshold),
        background_iou=float(background_iou), confusion=matrix, ap=ap, ap_coco=ap_coco,
        errors=errors,
        delta_ap=delta, per_class=per_class, per_size=per_size)


def add_analysis(result: EvaluationResult, ground_truth: Sequence[Sample] | CocoDataset,
                 predictions: Sequence[Sample] | list[dict[str, Any]],
                 categories: Categories | None = None, **options: Any) -> EvaluationResult:
    """``result`` (of :func:`instkit.evaluation.evaluate` on the same data) with ``analysis`` set
    to :func:`analyze`'s; by default at ``result.score_threshold`` and on mask IoU when the
    result has mask figures. ``as_dict()`` then carries it under ``"analysis"``."""
    options.setdefault("score_threshold", result.score_threshold)
    options.setdefault("iou_type", "segm" if "segm" in result.iou_types else "bbox")
    return dataclasses.replace(result, analysis=analyze(ground_truth, predictions, categories,
                                                        **options))


def _undefined(value: float) -> float:
    return math.nan if value < 0 else float(value)


# --- text ---------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_analysis(analysis: ErrorAnalysis, max_classes: int = 30) -> str:
    """A plain-text report: error breakdown, per-size and per-class tables, confusion matrix
    (only when there are at most ``max_classes`` classes)."""
    kind = "boundary" if analysis.boundary else {"segm": "mask", "bbox": "box"}.get(
        analysis.iou_type, analysis.iou_type)
    lines = [f"Error analysis at {kind} IoU {analysis.iou_threshold:g} "
             f"(AP {_fmt(analysis.ap)}, AP@[.5:.95] {_fmt(analysis.ap_coco)}; background below "
             f"IoU {analysis.background_iou:g})",
             f"  {'error':<16}{'count':>8}{'dAP':>9}"]
    for name in ERROR_TYPES:
        lines.append(f"  {name:<16}{analysis.errors[name]:>8}"
                     f"{_fmt(analysis.delta_ap[name]):>9}")
    lines.append("Per size (COCO areas; AP/AR at [.5:.95])")
    lines.append(f"  {'size':<8}{'gt':>6}{'missed':>8}{'recall':>8}{'AP':>8}{'AR':>8}")
    for row in analysis.per_size:
        lines.append(f"  {row['size']:<8}{row['num_gt']:>6}{row['missed']:>8}"
                     f"{_fmt(row['recall']):>8}{_fmt(row['AP']):>8}{_fmt(row['AR']):>8}")
    width = max([len(n) for n in analysis.names] + [10])
    lines.append(f"Per class (tp/fp/fn at score >= {analysis.score_threshold:g})")
    lines.append(f"  {'class':<{width}}{'gt':>6}{'AP':>7}{'tp':>6}{'fp':>6}{'fn':>6}  "
                 + " ".join(n[:5] for n in ERROR_TYPES))
    for row in analysis.per_class:
        if not (row["num_gt"] or row["tp"] or row["fp"] or any(row[n] for n in ERROR_TYPES)):
            continue  # a class that never occurs
        lines.append(f"  {row['name']:<{width}}{row['num_gt']:>6}{_fmt(row['ap']):>7}"
                     f"{row['tp']:>6}{row['fp']:>6}{row['fn']:>6}  "
                     + " ".join(f"{row[n]:>5}" for n in ERROR_TYPES))
    names = analysis.names + ["background"]
    matrix = analysis.confusion
    used = np.flatnonzero((matrix.sum(axis=0) + matrix.sum(axis=1)) > 0)
    used = np.union1d(used, [len(names) - 1])
    if len(used) <= max_classes + 1:
        lines.append("Confusion matrix (rows: ground truth, columns: predicted; classes that "
                     "occur)")
        lines.append(f"  {'':<{width}}" + "".join(f"{names[k][:6]:>7}" for k in used))
        for k in used.tolist():
            lines.append(f"  {names[k]:<{width}}"
                         + "".join(f"{v:>7}" for v in matrix[k, used].tolist()))
    else:
        lines.append(f"Confusion matrix: {len(used) - 1} classes occur, more than "
                     f"{max_classes}; see the JSON output")
    return "\n".join(lines)


__all__ = [
    "ERROR_TYPES",
    "ErrorAnalysis",
    "add_analysis",
    "analyze",
    "boundary_dilation",
    "boundary_iou",
    "format_analysis",
]

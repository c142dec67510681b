"""Evaluation with the COCO protocol: mask and box mAP, per-class AP, matching, union mean IoU.

Conventions:

- Ground truth and predictions are ``Sample``s sharing image ids and one ``Categories`` table.
  Prediction ``Instances`` carry ``scores`` (``(P,)`` float32); their ``labels`` are instkit labels
  ``0..C-1`` of that table. Predictions may also be given as COCO results (``list[dict]`` with
  ``image_id``, ``category_id``, ``score``, ``segmentation`` RLE and/or ``bbox`` ``xywh``).
- mAP follows pycocotools' ``COCOeval`` to the bit (``instkit.cocoeval``: its rules, vectorised;
  tested against ``COCOeval`` itself), on a ground-truth document built in memory from the
  samples (the file's ``area`` and ``bbox`` reused while the instance is unchanged, so
  small/medium/large follow the file) and on RLE-encoded results. As detectron2 does, the
  ``segm`` evaluation is given results without ``bbox`` (so a prediction's area is its mask area)
  and the ``bbox`` evaluation results without ``segmentation``.
- Crowd ground truth (``iscrowd``) is handled as COCO does: a prediction overlapping a crowd region
  (IoU = intersection / prediction area) is ignored, neither a true nor a false positive; crowd
  regions are never missed.
- Undefined figures (a class without ground truth, an evaluation without any) are ``nan``;
  the raw ``COCOeval.stats`` (``-1`` for undefined) are kept in ``mask_stats`` / ``box_stats``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from instkit.categories import Categories
from instkit.cocoeval import CocoEvalResult, evaluate_coco
from instkit.errors import FormatError, InstkitError, Location, show_value
from instkit.instances import Instances
from instkit.io.coco import CocoDataset, sample_annotations
from instkit.io.files import collector_paused, load_json
from instkit.masks import (
    RLE_OK,
    Masks,
    PolygonMask,
    RLEMask,
    decode_rle_counts_batch,
    rle_areas,
)
from instkit.sample import Sample, SampleMeta
from instkit.sample import categories_of as sample_categories
from instkit.validate import rules

IOU_TYPES = ("segm", "bbox")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


class EvaluationError(InstkitError, ValueError):
    """Ground truth and predictions that cannot be evaluated together."""


# --- matching -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """The COCO-style greedy matching of P predictions to G ground-truth instances of one image.

    - ``pred_matched``: bool ``(P,)``, true positives.
    - ``pred_ignored``: bool ``(P,)``, unmatched predictions absorbed by a crowd region (neither
      true nor false positives, as COCO ignores them).
    - ``pred_to_gt``: int64 ``(P,)``, index of the matched ground truth, ``-1`` when unmatched or
      ignored.
    - ``gt_matched``: bool ``(G,)``, non-crowd ground truth found by a prediction.
    - ``gt_ignored``: bool ``(G,)``, crowd ground truth (never counted as missed).
    - ``ious``: float64 ``(P, G)``; crowd columns hold intersection / prediction area.
    - ``predictions``: the ``Instances`` the prediction arrays refer to when the match was made
      by :func:`match_image` (those kept by the score threshold, highest score first); None
      from :func:`match_instances` (the arrays then follow the caller's order).

    This is the one matcher of instkit: the overlays (``instkit.viz.overlay``), the evaluation
    page and the error analysis (``instkit.analysis``) use it, and its counts equal those of the
    metric's vectorised ``COCOeval`` kernel (``instkit.cocoeval``; tested image by image).
    """

    pred_matched: np.ndarray
    pred_ignored: np.ndarray
    pred_to_gt: np.ndarray
    gt_matched: np.ndarray
    gt_ignored: np.ndarray
    ious: np.ndarray
    iou_threshold: float
    predictions: Instances | None = None

    @property
    def pred_iou(self) -> np.ndarray:
        """float64 ``(P,)``: IoU with the matched ground truth, else the best IoU with any
        ground truth (0 without ground truth)."""
        p = self.ious.shape[0]
        out = np.zeros(p, dtype=np.float64)
        if self.ious.size:
            out[:] = self.ious.max(axis=1)
            hit = self.pred_to_gt >= 0
            out[hit] = self.ious[np.flatnonzero(hit), self.pred_to_gt[hit]]
        return out

    @property
    def tp(self) -> int:
        return int(self.pred_matched.sum())

    @property
    def fp(self) -> int:
        return int((~self.pred_matched & ~self.pred_ignored).sum())

    @property
    def fn(self) -> int:
        return int((~self.gt_matched & ~self.gt_ignored).sum())

    @property
    def pred_false(self) -> np.ndarray:
        """bool ``(P,)``: false positives."""
        return ~self.pred_matched & ~self.pred_ignored

    @property
    def gt_missed(self) -> np.ndarray:
        """bool ``(G,)``: false negatives."""
        return ~self.gt_matched & ~self.gt_ignored


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def pairwise_iou(pred: Instances, gt: Instances, iou_type: str = "segm") -> np.ndarray:
    """IoU of every prediction with every ground truth, float64 ``(P, G)``, by pycocotools.

    Crowd ground-truth columns hold intersection / prediction area, as ``COCOeval`` uses them.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if pred.image_size != gt.image_size:
        raise EvaluationError(
            f"predictions are for an image of size {pred.image_size}, the ground truth "
            f"for {gt.image_size}"
        )
    p, g = len(pred), len(gt)
    if p == 0 or g == 0:
        return np.zeros((p, g), dtype=np.float64)
    crowd = [int(c) for c in gt.iscrowd]
    if iou_type == "segm":
        if pred.masks is None or gt.masks is None:
            raise EvaluationError("mask IoU needs masks on both predictions and ground truth; "
                                  "use iou_type='bbox'")
        ious = mask_utils.iou(pred.masks.to_rle(), gt.masks.to_rle(), crowd)
    else:
        ious = mask_utils.iou(_xywh(pred.boxes), _xywh(gt.boxes), crowd)
    return np.asarray(ious, dtype=np.float64).reshape(p, g)


def match_instances(
    gt: Instances,
    pred: Instances,
    iou_threshold: float = 0.5,
    iou_type: str = "segm",
    *,
    class_aware: bool = True,
    ious: np.ndarray | None = None,
) -> Match:
    """Match predictions to ground truth greedily by descending score, as ``COCOeval`` does.

    Each prediction (highest score first; given order when ``pred.scores`` is None, ties kept in
    order) takes the unmatched non-crowd ground truth of its label with the highest IoU
    ``>= iou_threshold``; failing that, a crowd region it overlaps that much, which makes it
    ignored. With ``class_aware=False`` labels are not compared. ``ious``: a precomputed
    ``(P, G)`` matrix to match on instead of :func:`pairwise_iou` (e.g. Boundary IoU).
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if ious is None:
        ious = pairwise_iou(pred, gt, iou_type)
    elif ious.shape != (len(pred), len(gt)):
        raise ValueError(f"ious must have shape {(len(pred), len(gt))}, got {ious.shape}")
    p, g = ious.shape
    pred_matched = np.zeros(p, dtype=bool)
    pred_ignored = np.zeros(p, dtype=bool)
    pred_to_gt = np.full(p, -1, dtype=np.int64)
    gt_matched = np.zeros(g, dtype=bool)
    gt_ignored = gt.iscrowd.astype(bool).copy()
    if p and g:
        allowed = ious.copy()
        if class_aware:
            allowed[pred.labels[:, None] != gt.labels[None, :]] = -1.0
        # COCO's order: non-crowd ground truth first (stable), predictions by descending score.
        gt_order = np.argsort(gt_ignored, kind="mergesort")
        scores = pred.scores if pred.scores is not None else np.zeros(p, dtype=np.float32)
        pred_order = np.argsort(-scores.astype(np.float64), kind="mergesort")
        threshold = min(iou_threshold, 1 - 1e-10)
        taken = np.zeros(g, dtype=bool)
        for d in pred_order:
            best = threshold
            m = -1
            for j in gt_order:
                if taken[j] and not gt_ignored[j]:
                    continue
                if m > -1 and not gt_ignored[m] and gt_ignored[j]:
                    break
                if allowed[d, j] < best:
                    continue
                best = allowed[d, j]
                m = int(j)
            if m == -1:
                continue
            taken[m] = True
            if gt_ignored[m]:
                pred_ignored[d] = True
            else:
                pred_matched[d] = True
                pred_to_gt[d] = m
                gt_matched[m] = True
    return Match(pred_matched, pred_ignored, pred_to_gt, gt_matched, gt_ignored, ious,
                 float(iou_threshold))


def match_image(
    gt: Instances,
    pred: Instances,
    *,
    iou_threshold: float = 0.5,
    iou_type: str = "segm",
    score_threshold: float = 0.0,
    class_aware: bool = True,
) -> Match:
    """:func:`match_instances` on the predictions scoring ``>= score_threshold``, sorted by
    descending score (stable); the result's ``predictions`` holds them. This is what a user of
    the model sees at that threshold: the overlays and the evaluation page draw it."""
    scores = pred.scores
    if scores is None:
        kept = pred[np.arange(len(pred))]
    else:
        keep = np.flatnonzero(scores >= score_threshold)
        kept = pred[keep[np.argsort(-scores[keep], kind="stable")]]
    match = match_instances(gt, kept, iou_threshold=iou_threshold, iou_type=iou_type,
                            class_aware=class_aware)
    return dataclasses.replace(match, predictions=kept)


# --- union mean IoU -----------------------------------------------------------------------------


def _union_rle(masks: Masks | None, keep: np.ndarray | None = None) -> dict[str, Any] | None:
    if masks is None:
        return None
    if keep is not None:
        masks = masks[keep]
    if len(masks) == 0:
        return None
    rles = masks.to_rle()
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles, intersect=False)


def union_iou(gt: Instances, pred: Instances, *, score_threshold: float | None = None) -> float | None:
    """IoU of the union of all predicted masks with the union of all ground-truth masks.

    The guide's per-image "coverage" metric: classes and instance identity are ignored.
    Predictions scoring below ``score_threshold`` are left out (all kept when None). Returns None
    for an image without ground truth (such images are skipped by the mean).
    """
    if gt.masks is None or pred.masks is None:
        raise EvaluationError("union IoU needs masks on both ground truth and predictions")
    if pred.image_size != gt.image_size:
        raise EvaluationError(
            f"predictions are for an image of size {pred.image_size}, the ground truth "
            f"for {gt.image_size}"
        )
    if len(gt) == 0:
        return None
    keep = None
    if score_threshold is not None and pred.scores is not None:
        keep = pred.scores >= score_threshold
    gt_union = _union_rle(gt.masks)
    pred_union = _union_rle(pred.masks, keep)
    assert gt_union is not None
    gt_area = float(mask_utils.area(gt_union))
    if pred_union is None:
        return 0.0
    pred_area = float(mask_utils.area(pred_union))
    inter_rle = mask_utils.merge([gt_union, pred_union], intersect=True)
    inter = float(mask_utils.area(inter_rle))
    union = gt_area + pred_area - inter
    return inter / max(union, 1.0)


def union_mean_iou(
    ground_truth: Sequence[Sample] | CocoDataset,
    predictions: Sequence[Sample],
    *,
    score_threshold: float | None = None,
) -> float:
    """Mean over images with ground truth of :func:`union_iou` (0.0 when there are none).

    Predictions are paired with ground truth by ``image_id``; an image without a prediction sample
    counts as predicting nothing.
    """
    gt_samples = list(ground_truth)
    by_id = _predictions_by_image(predictions, {s.image_id for s in gt_samples})
    values = []
    for sample in gt_samples:
        pred = by_id.get(sample.image_id)
        pred_inst = pred.instances if pred is not None else Instances.empty(sample.image_size)
        try:
            value = union_iou(sample.instances, pred_inst, score_threshold=score_threshold)
        except EvaluationError as exc:
            raise EvaluationError(exc.message, Location(image_id=sample.image_id)) from None
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else 0.0


def _predictions_by_image(predictions: Iterable[Sample], known: set[int]) -> dict[int, Sample]:
    out: dict[int, Sample] = {}
    for index, sample in enumerate(predictions):
        where = Location(sample_index=index, image_id=sample.image_id)
        if sample.image_id not in known:
            raise EvaluationError(
                f"prediction for image id {sample.image_id}, which is not in the ground truth",
                where)
        if sample.image_id in out:
            raise EvaluationError(f"two prediction samples for image id {sample.image_id}", where)
        out[sample.image_id] = sample
    return out


# --- COCO results -------------------------------------------------------------------------------


def _categories_of(ground_truth: Any, categories: Categories | None) -> Categories:
    if categories is not None:
        return categories
    found = sample_categories(ground_truth)
    if found is None:
        raise EvaluationError("no category table: pass categories=... (the ground truth's)")
    return found


def to_coco_results(samples: Iterable[Sample], categories: Categories) -> list[dict[str, Any]]:
    """Predicted samples -> COCO results: one dict per instance with ``image_id``,
    ``category_id`` (the dataset's id), ``score``, ``bbox`` (``xywh`` floats) and, when there are
    masks, ``segmentation`` as compressed RLE (``{"size": [H, W], "counts": str}``).
    """
    out: list[dict[str, Any]] = []
    for index, sample in enumerate(samples):
        inst = sample.instances
        where = Location(sample_index=index, image_id=sample.image_id)
        if len(inst) == 0:
            continue
        if inst.scores is None:
            raise EvaluationError("predictions need scores (Instances.scores is None)", where)
        if not np.isfinite(inst.scores).all():
            raise EvaluationError("a prediction score is NaN or infinite", where)
        _check_same_categories(sample, categories, where)
        labels = inst.labels
        if labels.min() < 0 or labels.max() >= len(categories):
            raise EvaluationError(
                f"prediction label {int(labels.max() if labels.max() >= len(categories) else labels.min())} "
                f"is outside 0..{len(categories) - 1}", where)
        ids = categories.ids
        xywh = _xywh(inst.boxes)
        counts = inst.masks.rle_counts() if inst.masks is not None else None
        h, w = inst.image_size
        for i in range(len(inst)):
            result: dict[str, Any] = {
                "image_id": int(sample.image_id),
                "category_id": int(ids[int(labels[i])]),
                "bbox": [float(v) for v in xywh[i]],
                "score": float(inst.scores[i]),
            }
            if counts is not None:
                result["segmentation"] = {"size": [h, w], "counts": counts[i].decode("ascii")}
            out.append(result)
    return out


def _check_same_categories(sample: Sample, categories: Categories, where: Location) -> None:
    own = sample.meta.categories
    if own is not None and own.ids != categories.ids:
        raise EvaluationError(
            "the prediction's category table differs from the evaluation's (labels would be "
            f"mapped to the wrong classes): {own!r} vs {categories!r}", where)


@dataclass
class _GroundTruth:
    categories: Categories
    sizes: dict[int, tuple[int, int]]
    order: list[int]
    source: Sequence[Sample] | CocoDataset
    has_masks: bool
    _samples: list[Sample] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = list(self.source)
        return self._samples


def _usable_counts(results: list[Any], sizes: Mapping[int, tuple[int, int]]) -> set[int]:
    """Indices of the results whose ``segmentation`` is a compressed RLE that passes the
    rulebook's RLE rules (``rules.rle_geometry``: its image's size, counts that decode and sum
    to H*W), all counts strings decoded in one pass; the others go through ``rle_geometry`` one
    by one, which names what is wrong."""
    max_pixels = rules.DEFAULT_LIMITS.max_image_pixels
    candidates: list[int] = []
    strings: list[str] = []
    pixels: list[int] = []
    for k, result in enumerate(results):
        segmentation = result.get("segmentation") if type(result) is dict else None
        if type(segmentation) is not dict or type(segmentation.get("counts")) is not str:
            continue
        size = segmentation.get("size")
        if type(size) is not list or len(size) != 2 or type(size[0]) is not int \
                or type(size[1]) is not int:
            continue
        image_size = sizes.get(result.get("image_id"))
        if image_size is None or (size[0], size[1]) != tuple(image_size) \
                or size[0] * size[1] > max_pixels:
            continue
        candidates.append(k)
        strings.append(segmentation["counts"])
        pixels.append(size[0] * size[1])
    if not candidates:
        return set()
    batch = decode_rle_counts_batch(strings)
    usable = (batch.status == RLE_OK) & (batch.totals == np.asarray(pixels, dtype=np.int64))
    return {candidates[i] for i in np.flatnonzero(usable).tolist()}


def _check_result_header(result: Any, k: int, sizes: Mapping[int, tuple[int, int]],
                         categories: Categories, file: str | None) -> tuple[int, int, float]:
    """A result's ``image_id``, ``category_id`` and ``score`` by the rulebook's rules; raises
    the rule's error naming the result index and field."""
    if not isinstance(result, dict):
        raise rules.rule_error("schema-type", f"a result must be an object, got "
                               f"{type(result).__name__}", Location(file=file, json_path=f"[{k}]"))
    image_id = result.get("image_id")
    if not rules.check_id(image_id, "'image_id'", rules.raiser(file), f"[{k}].image_id",
                          "image_id" in result):
        raise AssertionError("unreachable: the report raised")  # narrows the type
    report = rules.raiser(file, image_id=image_id)
    if image_id not in sizes:
        report("unknown-image", f"unknown image id {image_id} (not in the ground truth)",
               f"[{k}].image_id")
    category_id = result.get("category_id")
    if not rules.check_id(category_id, "'category_id'", report, f"[{k}].category_id",
                          "category_id" in result):
        raise AssertionError("unreachable: the report raised")
    if not categories.has_id(category_id):
        report("unknown-category", f"unknown category id {category_id}", f"[{k}].category_id")
    score = result.get("score")
    if not rules.is_finite_number(score):
        report("schema-type" if "score" in result else "schema-missing",
               f"'score' must be a finite number, got {show_value(score)}", f"[{k}].score")
    return image_id, category_id, float(score)  # type: ignore[arg-type]


def _normalise_results(
    results: Any, sizes: Mapping[int, tuple[int, int]], categories: Categories,
    file: str | None = None,
) -> list[dict[str, Any]]:
    """Check COCO results and give each a compressed-RLE ``segmentation`` (or None) and an
    ``xywh`` ``bbox`` (or None). The value rules are the COCO rulebook's
    (``instkit.validate.rules``: ids, polygon parts and limits, RLE, bbox with ``w, h >= 0``);
    errors are its leaf classes and name the result index and image id."""
    if not isinstance(results, list):
        raise rules.rule_error("schema-type", f"COCO results must be a JSON list, got "
                               f"{type(results).__name__}", Location(file=file, json_path="$"))
    good_counts = _usable_counts(results, sizes)
    category_ids = set(categories.ids)
    out = []
    for k, result in enumerate(results):
        if type(result) is dict:
            image_id, category_id = result.get("image_id"), result.get("category_id")
            score = result.get("score")
        # The well-formed header in a few type tests (ids found in the ground truth are
        # checked ints); anything else goes rule by rule, which names what is wrong.
        if not (type(result) is dict and type(image_id) is int and image_id in sizes
                and type(category_id) is int and category_id in category_ids
                and type(score) is float and math.isfinite(score)):
            image_id, category_id, score = _check_result_header(result, k, sizes, categories,
                                                                file)
        report = rules.raiser(file, image_id=image_id)
        size = sizes[image_id]
        segmentation = result.get("segmentation")
        rle: dict[str, Any] | None = None
        if k in good_counts:
            rle = {"size": [size[0], size[1]], "counts": result["segmentation"]["counts"]}
        elif isinstance(segmentation, dict):
            checked = rules.rle_geometry(segmentation, size, f"[{k}]", image_id, None,
                                         rules.Collector(file, strict=True))
            if checked is None:
                raise AssertionError("unreachable: the strict collector raised")
            rle = {"size": [size[0], size[1]], "counts": checked[0]["counts"].decode("ascii")}
        elif isinstance(segmentation, list) and segmentation:
            parts = rules.polygon_parts(segmentation, f"[{k}]", image_id, None,
                                        rules.Collector(file, strict=True))
            polygon = Masks([PolygonMask._trusted(tuple(parts))], size)
            rle = {"size": [size[0], size[1]],
                   "counts": polygon.rle_counts()[0].decode("ascii")}
        elif segmentation is not None:
            report("schema-type", "'segmentation' must be an RLE object or a polygon list, got "
                   f"{type(segmentation).__name__}", f"[{k}].segmentation")
        bbox = result.get("bbox")
        box: list[float] | None = None
        if bbox is not None:
            box = rules.check_bbox(bbox, report, f"[{k}].bbox", allow_empty=True)
            if box is None:
                report("json-nonfinite", f"'bbox' has NaN or Infinity: {show_value(bbox)}",
                       f"[{k}].bbox")
        if rle is None and box is None:
            report("schema-missing", "a result needs a 'segmentation' or a 'bbox'", f"[{k}]")
        out.append({"image_id": image_id, "category_id": category_id, "score": float(score),
                    "segmentation": rle, "bbox": box})
    return out


def read_coco_results(
    path: str | os.PathLike[str] | list[dict[str, Any]],
    ground_truth: Sequence[Sample] | CocoDataset,
    categories: Categories | None = None,
) -> list[Sample]:
    """Read a COCO results file (or list) into one prediction ``Sample`` per ground-truth image,
    in ground-truth order (images without results get empty ``Instances``).

    Masks are ``RLEMask``s; boxes come from ``bbox`` where given, else from the mask; ``scores``
    are float32; ``ids`` are the results' positions in the file. Errors name the result index
    (``[17]``), the image id and the field: unknown image or category id, an RLE whose size is not
    the image's, a missing score.
    """
    file = None
    if isinstance(path, list):
        raw = path
    else:
        file = os.fspath(path)
        raw = load_json(file)
    gt = _ground_truth_table(ground_truth, categories)
    results = _normalise_results(raw, gt.sizes, gt.categories, file)
    has_masks = bool(results) and all(r["segmentation"] is not None for r in results)
    if results and not has_masks and any(r["segmentation"] is not None for r in results):
        first = next(k for k, r in enumerate(results) if r["segmentation"] is None)
        raise FormatError("some results have a segmentation and others do not",
                          Location(file=file, json_path=f"[{first}]",
                                   image_id=results[first]["image_id"]))
    grouped: dict[int, list[int]] = {}
    for k, r in enumerate(results):
        grouped.setdefault(r["image_id"], []).append(k)
    samples = []
    for sample in gt.samples:
        size = sample.image_size
        rows = grouped.get(sample.image_id, [])
        masks = None
        if has_masks or not results:
            masks = Masks([RLEMask(results[k]["segmentation"]["counts"].encode("ascii"))
                           for k in rows], size)
        boxes = np.zeros((len(rows), 4), dtype=np.float64)
        for j, k in enumerate(rows):
            box = results[k]["bbox"]
            if box is None:
                assert masks is not None
                boxes[j] = masks[j].boxes()[0]
            else:
                boxes[j] = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        instances = Instances(
            image_size=size,
            boxes=boxes,
            labels=np.asarray([gt.categories.label_of(results[k]["category_id"]) for k in rows],
                              dtype=np.int64),
            masks=masks,
            ids=np.asarray(rows, dtype=np.int64),
            scores=np.asarray([results[k]["score"] for k in rows], dtype=np.float32),
        )
        meta = SampleMeta(source=file, file_name=sample.meta.file_name, original_size=size,
                          categories=gt.categories)
        samples.append(Sample(instances, sample.image_id, meta, sample.image_path))
    return samples


def _ground_truth_table(ground_truth: Sequence[Sample] | CocoDataset,
                        categories: Categories | None) -> _GroundTruth:
    cats = _categories_of(ground_truth, categories)
    if isinstance(ground_truth, CocoDataset):  # sizes from its tables, samples only if needed
        ids = ground_truth.image_ids.tolist()
        sizes: dict[int, tuple[int, int]] = {
            image_id: (int(h), int(w))
            for image_id, (h, w) in zip(ids, ground_truth._image_sizes.tolist(), strict=True)}
        if len(sizes) == len(ids):
            return _GroundTruth(cats, sizes, ids, ground_truth, ground_truth._has_masks)
    samples = list(ground_truth)
    sizes = {}
    has_masks = True
    for index, sample in enumerate(samples):
        if sample.image_id in sizes:
            raise EvaluationError(f"two ground-truth samples share image id {sample.image_id}",
                                  Location(sample_index=index, image_id=sample.image_id))
        sizes[sample.image_id] = sample.image_size
        has_masks &= sample.instances.masks is not None
    return _GroundTruth(cats, sizes, [s.image_id for s in samples], samples, has_masks, samples)


# --- evaluate -----------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured. Figures are in [0, 1]; ``nan`` where undefined.

    - ``mask_map50`` (primary), ``mask_map`` (@[.5:.95]), ``box_map50``, ``box_map``.
    - ``mean_iou``: the guide's union mean IoU (``nan`` without masks).
    - ``per_class``: one dict per category: ``name``, ``category_id``, ``label``, ``mask_ap50``,
      ``mask_ap``, ``box_ap50``, ``box_ap``, ``num_gt`` (non-crowd ground truth),
      ``num_pred``.
    - ``pr_curves``: one dict per category: ``name``, ``category_id``, ``recall`` (101,) and
      ``precision`` (101,) float64 at mask IoU 0.5 (box IoU without masks), all areas, 100
      detections; ``precision`` is ``nan`` for a class without ground truth.
    - ``per_image``: image_id -> ``{"tp", "fp", "fn"}`` at IoU 0.5 (mask, else box) counting
      predictions scoring ``>= score_threshold``; crowd-absorbed predictions are not counted.
    - ``mask_stats`` / ``box_stats``: ``COCOeval.stats`` by name (``AP``, ``AP50``, ... ``ARl``),
      exactly as pycocotools computes them (``-1`` where undefined).
    """

    mask_map50: float = math.nan
    mask_map: float = math.nan
    box_map50: float = math.nan
    box_map: float = math.nan
    mean_iou: float = math.nan
    per_class: list[dict[str, Any]] = field(default_factory=list)
    pr_curves: list[dict[str, Any]] = field(default_factory=list)
    per_image: dict[int, dict[str, int]] = field(default_factory=dict)
    mask_stats: dict[str, float] = field(default_factory=dict)
    box_stats: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    num_predictions: int = 0
    score_threshold: float = 0.5
    iou_types: tuple[str, ...] = IOU_TYPES
    # instkit.analysis.ErrorAnalysis when asked for (instkit.analysis.add_analysis)
    analysis: Any = None

    @property
    def primary(self) -> float:
        """The figure to select checkpoints by: mask mAP@0.5 (box mAP@0.5 without masks)."""
        return self.mask_map50 if "segm" in self.iou_types else self.box_map50

    def summary(self) -> dict[str, float]:
        """The headline figures as a flat dict (for logs)."""
        return {"mask_map50": self.mask_map50, "mask_map": self.mask_map,
                "box_map50": self.box_map50, "box_map": self.box_map, "mean_iou": self.mean_iou}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``nan`` becomes None, arrays become lists, image ids stay ints."""
        return _jsonable({
            **self.summary(),
            "num_images": self.num_images,
            "num_predictions": self.num_predictions,
            "score_threshold": self.score_threshold,
            "iou_types": list(self.iou_types),
            "mask_stats": self.mask_stats,
            "box_stats": self.box_stats,
            "per_class": self.per_class,
            "pr_curves": self.pr_curves,
            "per_image": [{"image_id": k, **v} for k, v in self.per_image.items()],
            **({} if self.analysis is None else {"analysis": self.analysis.as_dict()}),
        })

    def __repr__(self) -> str:
        figures = ", ".join(f"{k}={v:.4f}" for k, v in self.summary().items())
        return f"EvaluationResult({figures}, images={self.num_images})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    return value


def _nan_if_undefined(value: float) -> float:
    return math.nan if value < 0 else float(value)


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else math.nan


def _gt_columns(gt: _GroundTruth, need_masks: bool, bar: Any) -> dict[str, Any]:
    """What COCOeval reads of each ground-truth annotation (``image_id``, ``category_id``,
    ``area``, ``iscrowd``, ``bbox`` and, for masks, ``segm``), as ``sample_annotations``
    writes them: from a ``CocoDataset``'s tables directly, else through its samples."""
    if need_masks and not gt.has_masks:
        first = next(s for s in gt.samples if s.instances.masks is None)
        raise EvaluationError("ground truth without masks cannot be evaluated for mask AP; "
                              "use iou_types=('bbox',)", Location(image_id=first.image_id))
    if isinstance(gt.source, CocoDataset) and gt.categories == gt.source.categories:
        columns = gt.source.evaluation_columns(need_masks)
        if columns is not None:
            bar.update(len(gt.order))
            return columns
    keys = ("image_id", "category_id", "area", "iscrowd", "bbox", "id")
    annotations: list[dict[str, Any]] = []
    for index, sample in enumerate(gt.samples):
        where = Location(sample_index=index, image_id=sample.image_id)
        inst = sample.instances
        if len(inst) and (inst.labels.min() < 0 or inst.labels.max() >= len(gt.categories)):
            raise EvaluationError(f"ground-truth labels {sorted(set(inst.labels.tolist()))} go "
                                  f"outside 0..{len(gt.categories) - 1}", where)
        annotations.extend(sample_annotations(sample, gt.categories, mask_format="rle"))
        bar.update(1)
    columns = {key: [a[key] for a in annotations] for key in keys}
    if need_masks:
        columns["segm"] = _regions(annotations, "segm", gt.sizes)
    return columns


def _regions(annotations: list[dict[str, Any]], iou_type: str,
             sizes: Mapping[int, tuple[int, int]]) -> list[Any]:
    """What ``COCOeval`` compares of the results: RLE dicts (``annToRLE``'s conversions) or
    ``xywh`` boxes."""
    if iou_type == "bbox":
        return [a["bbox"] for a in annotations]
    out = []
    for a in annotations:
        seg = a["segmentation"]
        if isinstance(seg, list) or isinstance(seg.get("counts"), list):
            h, w = sizes[a["image_id"]]
            rles = mask_utils.frPyObjects(seg, h, w)
            seg = mask_utils.merge(rles) if isinstance(rles, list) else rles
        out.append(seg)
    return out


def _run_protocol(sizes: Mapping[int, tuple[int, int]], cat_ids: Sequence[int],
                  gt_columns: dict[str, Any], results: list[dict[str, Any]],
                  iou_type: str) -> CocoEvalResult:
    """COCOeval's numbers (``instkit.cocoeval``) for the ground truth's columns (``_gt_columns``)
    and results, over the images of ``sizes`` and the categories ``cat_ids``."""
    regions = _regions(results, iou_type, sizes)
    if iou_type == "segm":  # COCO.loadRes: a result's area is its mask's, or its box's
        area = [float(v) for v in rle_areas(regions)]
    else:
        area = [b[2] * b[3] for b in regions]
    dt_columns = {
        "image_id": [r["image_id"] for r in results],
        "category_id": [r["category_id"] for r in results],
        "score": [r["score"] for r in results], "area": area, "regions": regions,
    }
    gt_view = {key: gt_columns[key] for key in ("image_id", "category_id", "area", "iscrowd")}
    gt_view["regions"] = gt_columns[iou_type]
    return evaluate_coco(iou_type, list(sizes), cat_ids, gt_view, dt_columns)


def best_f1_threshold(evaluated: CocoEvalResult) -> float:
    """The score at which the predictions kept (``>=``) have the best F1 at IoU 0.5 over all
    classes (matched class by class, as COCO matches; crowd-absorbed ones left out): a threshold
    for confusion matrices and counts that suits any model's score scale (a model trained
    briefly may score nothing above 0.5). 0.5 when nothing was matched."""
    scores, hits, num_gt = [], [], 0
    for image_scores, matched, ignored, gt_ignored, _found in evaluated.per_image.values():
        scores.append(image_scores[~ignored])
        hits.append(matched[~ignored])
        num_gt += int((~gt_ignored).sum())
    if not scores or num_gt == 0:
        return 0.5
    all_scores = np.concatenate(scores).astype(np.float64)
    all_hits = np.concatenate(hits).astype(bool)
    if not all_hits.any():
        return 0.5
    order = np.argsort(-all_scores, kind="mergesort")
    ranked, tp = all_scores[order], np.cumsum(all_hits[order])
    # a threshold keeps every prediction with an equal score: evaluate at the last of each run
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    kept = last + 1
    f1 = 2 * tp[last] / (kept + num_gt)
    return float(ranked[last[int(np.argmax(f1))]])


def _per_image_counts(evaluated: CocoEvalResult, score_threshold: float,
                      image_ids: list[int]) -> dict[int, dict[str, int]]:
    counts = {int(i): {"tp": 0, "fp": 0, "fn": 0} for i in image_ids}
    for image_id, (scores, matched, ignored, gt_ignored, found) in evaluated.per_image.items():
        confident = scores >= score_threshold
        row = counts[image_id]
        row["tp"] += int((matched & ~ignored & confident).sum())
        row["fp"] += int((~matched & ~ignored & confident).sum())
        row["fn"] += int((~gt_ignored & ~(found >= score_threshold)).sum())
    return counts


def _results_mean_iou(gt: _GroundTruth, gt_columns: dict[str, Any],
                      results: list[dict[str, Any]], score_threshold: float) -> float:
    """:func:`union_mean_iou` over checked COCO results and the ground truth's regions, without
    building samples (scores compared as float32, as prediction ``Instances`` store them)."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if np.float32(r["score"]) >= score_threshold:
            by_image.setdefault(r["image_id"], []).append(r["segmentation"])
    gt_by_image: dict[int, list[dict[str, Any]]] = {}
    for image_id, region in zip(np.asarray(gt_columns["image_id"]).tolist(), gt_columns["segm"],
                                strict=True):
        gt_by_image.setdefault(image_id, []).append(region)
    values = []
    for image_id in gt.order:
        gt_rles = gt_by_image.get(image_id)
        if not gt_rles:
            continue
        gt_union = gt_rles[0] if len(gt_rles) == 1 else mask_utils.merge(gt_rles, intersect=False)
        rles = by_image.get(image_id)
        if not rles:
            values.append(0.0)
            continue
        pred_union = rles[0] if len(rles) == 1 else mask_utils.merge(rles, intersect=False)
        gt_area = float(mask_utils.area(gt_union))
        pred_area = float(mask_utils.area(pred_union))
        inter = float(mask_utils.area(mask_utils.merge([gt_union, pred_union], intersect=True)))
        values.append(inter / max(gt_area + pred_area - inter, 1.0))
    return float(np.mean(values)) if values else 0.0


def evaluate(
    ground_truth: Sequence[Sample] | CocoDataset,
    predictions: Sequence[Sample] | list[dict[str, Any]],
    categories: Categories | None = None,
    *,
    iou_types: Sequence[str] = IOU_TYPES,
    score_threshold: float | str = 0.5,
    progress: bool | None = None,
) -> EvaluationResult:
    """Mask and box mAP of predictions with pycocotools' ``COCOeval``, plus per-class AP, PR
    curves, per-image error counts and the union mean IoU.

    ``predictions``: prediction ``Sample``s (``Instances`` with ``scores``; one per image at most;
    images without one predicted nothing) or COCO results (``list[dict]``). ``categories``:
    defaults to the ground truth's. ``iou_types``: any of ``"segm"``, ``"bbox"``.
    ``score_threshold`` applies only to ``per_image`` counts and ``mean_iou``; mAP uses every
    prediction, as COCO does (at most 100 per image); ``"f1"``: the score with the best F1 at
    IoU 0.5 (``best_f1_threshold``), recorded in the result. ``progress``: a bar on stderr
    (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    iou_types = tuple(iou_types)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
    if isinstance(score_threshold, str) and score_threshold != "f1":
        raise ValueError(f"score_threshold must be a number or 'f1', got {score_threshold!r}")
    gt = _ground_truth_table(ground_truth, categories)
    disable = None if progress is None else not progress
    sample_predictions: list[Sample] | None = None
    with collector_paused(), tqdm(total=len(gt.order) + 2 * len(iou_types), desc="evaluate",
                                  unit="step", disable=disable, leave=False) as bar:
        if isinstance(predictions, list) and (not predictions or isinstance(predictions[0], dict)):
            results = _normalise_results(predictions, gt.sizes, gt.categories)
        else:
            sample_predictions = list(predictions)  # type: ignore[arg-type]
            _predictions_by_image(sample_predictions, set(gt.sizes))
            for index, sample in enumerate(sample_predictions):
                if sample.image_size != gt.sizes[sample.image_id]:
                    raise EvaluationError(
                        f"prediction is for an image of size {sample.image_size}, the ground "
                        f"truth's is {gt.sizes[sample.image_id]}",
                        Location(sample_index=index, image_id=sample.image_id))
            results = to_coco_results(sample_predictions, gt.categories)
        if "segm" in iou_types:
            missing = next((k for k, r in enumerate(results) if r.get("segmentation") is None),
                           None)
            if missing is not None:
                raise EvaluationError(
                    "predictions without masks cannot be evaluated for mask AP; use "
                    "iou_types=('bbox',)", Location(image_id=results[missing]["image_id"]))
        if "bbox" in iou_types:
            for r in results:
                if r.get("bbox") is None:
                    r["bbox"] = [float(v) for v in mask_utils.toBbox(r["segmentation"])]
        gt_columns = _gt_columns(gt, "segm" in iou_types, bar)

        out = EvaluationResult(num_images=len(gt.order), num_predictions=len(results),
                               score_threshold=(0.5 if score_threshold == "f1"
                                                else float(score_threshold)),
                               iou_types=iou_types)
        evaluators: dict[str, CocoEvalResult] = {}
        for iou_type in iou_types:
            bar.set_postfix_str(iou_type)
            bar.update(1)
            evaluators[iou_type] = _run_protocol(gt.sizes, gt.categories.ids, gt_columns,
                                                   results, iou_type)
            bar.update(1)

    cat_ids = gt.categories.ids
    num_gt = {c: 0 for c in cat_ids}
    for category_id, crowd in zip(np.asarray(gt_columns["category_id"]).tolist(),
                                  np.asarray(gt_columns["iscrowd"]).tolist(), strict=True):
        if not crowd:
            num_gt[category_id] += 1
    num_pred = {c: 0 for c in cat_ids}
    for r in results:
        num_pred[r["category_id"]] += 1

    per_class_ap: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for iou_type, evaluator in evaluators.items():
        stats = [float(v) for v in evaluator.stats]
        named = dict(zip(STAT_NAMES, stats, strict=True))
        # precision: (T, R, K, A, M); all areas, the last (largest) maxDets.
        precision = evaluator.precision[:, :, :, 0, -1]
        per_class_ap[iou_type] = (precision[0], precision)
        if iou_type == "segm":
            out.mask_stats = named
            out.mask_map, out.mask_map50 = _nan_if_undefined(stats[0]), _nan_if_undefined(stats[1])
        else:
            out.box_stats = named
            out.box_map, out.box_map50 = _nan_if_undefined(stats[0]), _nan_if_undefined(stats[1])

    curve_type = "segm" if "segm" in evaluators else "bbox"
    eval_cat_ids = list(evaluators[curve_type].cat_ids)
    for label, category in enumerate(gt.categories):
        k = eval_cat_ids.index(category.id)
        row: dict[str, Any] = {"name": category.name, "category_id": category.id,
                               "label": label}
        for iou_type, prefix in (("segm", "mask"), ("bbox", "box")):
            if iou_type in per_class_ap:
                at50, all_t = per_class_ap[iou_type]
                row[f"{prefix}_ap50"] = _mean_defined(at50[:, k])
                row[f"{prefix}_ap"] = _mean_defined(all_t[:, :, k])
            else:
                row[f"{prefix}_ap50"] = math.nan
                row[f"{prefix}_ap"] = math.nan
        row["num_gt"] = num_gt[category.id]
        row["num_pred"] = num_pred[category.id]
        out.per_class.append(row)
        curve = per_class_ap[curve_type][0][:, k].astype(np.float64)
        curve = np.where(curve < 0, np.nan, curve)
        out.pr_curves.append({"name": category.name, "category_id": category.id,
                              "recall": RECALL_THRESHOLDS.copy(), "precision": curve})

    if score_threshold == "f1":
        out.score_threshold = best_f1_threshold(evaluators[curve_type])
    threshold = out.score_threshold
    out.per_image = _per_image_counts(evaluators[curve_type], threshold, gt.order)
    if "segm" in iou_types:
        # straight from the checked results: each result's RLE is decoded once (by the check)
        out.mean_iou = _results_mean_iou(gt, gt_columns, results, threshold)
    return out


__all__ = [
    "EvaluationError",
    "best_f1_threshold",
    "EvaluationResult",
    "Match",
    "evaluate",
    "match_image",
    "match_instances",
    "pairwise_iou",
    "read_coco_results",
    "to_coco_results",
    "union_iou",
    "union_mean_iou",
]

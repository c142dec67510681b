"""LVIS-style evaluation for federated datasets (Gupta et al., CVPR 2019; the rules of the
``lvis`` package's ``LVISEval``), on LVIS/COCO-format documents.

The rules that differ from COCO's:

- Each image lists ``neg_category_ids`` (verified absent) and ``not_exhaustive_category_ids``
  (annotated, maybe not every instance). An image is evaluated only for its *positive*
  categories (those with annotations in it) and its negative ones: a detection of any other
  category in that image is dropped, neither true nor false positive.
- A detection of a not-exhaustive category that matches nothing is ignored (it may be an
  unannotated instance); a match still counts.
- At most ``max_dets`` (300) detections per image, the highest scoring, over all categories.
- No crowd regions; ground truth outside an area range is ignored as in COCO, and so is an
  unmatched detection outside it.
- Stats: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``APr``, ``APc``, ``APf`` (by
  the categories' ``frequency``: rare, common, frequent) and ``AR``, ``ARs``, ``ARm``, ``ARl``
  at ``max_dets``; matching, the 101-point interpolated precision and the averages follow
  ``LVISEval`` step by step (``-1`` where undefined).

IoU is pycocotools' (``segm``: masks from polygons/RLE; ``bbox``: ``xywh``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from instkit.errors import InstkitError, Location

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
               "large": (96.0**2, 1e10)}
FREQUENCIES = ("r", "c", "f")


class LvisError(InstkitError, ValueError):
    """A document or result list that the LVIS rules cannot evaluate."""


@dataclass
class LvisResult:
    """``stats`` by name (see the module docstring); ``precision`` ``(T, R, K, A)`` and
    ``recall`` ``(T, K, A)`` (``-1`` where undefined), ``cat_ids`` (sorted), ``per_category``
    (``category_id`` -> AP over IoU .5:.95, all areas; -1 without ground truth)."""

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list[int]
    per_category: dict[int, float] = field(default_factory=dict)


def _load(value: Any) -> Any:
    if isinstance(value, (str, os.PathLike)):
        from instkit.io.files import load_json

        return load_json(value)
    return value


def _regions(anns: list[dict[str, Any]], iou_type: str, size: tuple[int, int]) -> list[Any]:
    if iou_type == "bbox":
        return [a["bbox"] for a in anns]
    out = []
    for a in anns:
        seg = a["segmentation"]
        if isinstance(seg, list) or isinstance(seg.get("counts"), list):
            rles = mask_utils.frPyObjects(seg, *size)
            seg = mask_utils.merge(rles) if isinstance(rles, list) else rles
        out.append(seg)
    return out


def _limit_per_image(results: list[dict[str, Any]], max_dets: int) -> list[dict[str, Any]]:
    """``LVISResults``' cut: per image the ``max_dets`` highest scores (sorted, stable)."""
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    out = []
    for anns in by_image.values():
        if len(anns) > max_dets:
            anns = sorted(anns, key=lambda a: a["score"], reverse=True)[:max_dets]
        out.extend(anns)
    return out


def evaluate_lvis(
    ground_truth: str | os.PathLike[str] | Mapping[str, Any],
    results: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    iou_type: str = "segm",
    max_dets: int = 300,
) -> LvisResult:
    """Evaluate COCO-format ``results`` against an LVIS-format document with the LVIS rules.

    ``ground_truth``: a path or the document (``images`` with ``neg_category_ids`` and
    ``not_exhaustive_category_ids`` — missing lists count as empty — ``annotations``,
    ``categories`` with optional ``frequency``). ``results``: a path or list of dicts with
    ``image_id``, ``category_id``, ``score`` and ``segmentation`` (``segm``) or ``bbox``.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    doc = _load(ground_truth)
    dts_in = [dict(r) for r in _load(results)]
    images = {int(im["id"]): im for im in doc["images"]}
    sizes = {i: (int(im["height"]), int(im["width"])) for i, im in images.items()}
    cats = sorted(int(c["id"]) for c in doc["categories"])
    frequency = {int(c["id"]): c.get("frequency") for c in doc["categories"]}
    known_cats = set(cats)
    for index, r in enumerate(dts_in):
        where = Location(json_path=f"results[{index}]", image_id=r.get("image_id"))
        if r.get("image_id") not in images:
            raise LvisError(f"result for image id {r.get('image_id')!r}, which is not in the "
                            "ground truth", where)
        if r.get("category_id") not in known_cats:
            raise LvisError(f"result category id {r.get('category_id')!r} is not a category",
                            where)
        if iou_type == "segm" and "segmentation" not in r:
            raise LvisError("segm evaluation needs 'segmentation' in every result", where)
        if iou_type == "segm":
            seg = _regions([r], "segm", sizes[r["image_id"]])[0]
            r["segmentation"], r["area"] = seg, float(mask_utils.area(seg))
        else:
            r["area"] = float(r["bbox"][2] * r["bbox"][3])
    dts = _limit_per_image(dts_in, max_dets)

    gts_by: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    positive: dict[int, set[int]] = defaultdict(set)
    for a in doc["annotations"]:
        gts_by[int(a["image_id"]), int(a["category_id"])].append(a)
        positive[int(a["image_id"])].add(int(a["category_id"]))
    negative = {i: {int(c) for c in im.get("neg_category_ids", [])} for i, im in images.items()}
    not_exhaustive = {i: {int(c) for c in im.get("not_exhaustive_category_ids", [])}
                      for i, im in images.items()}
    for i in images:
        both = negative[i] & positive[i]
        if both:
            raise LvisError(f"categories {sorted(both)} are listed as negative but annotated",
                            Location(image_id=i))
    dts_by: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for d in dts:
        i, c = int(d["image_id"]), int(d["category_id"])
        if c in positive[i] or c in negative[i]:  # the federated rule
            dts_by[i, c].append(d)

    img_ids = sorted(images)
    areas = list(AREA_RANGES.values())
    n_t, n_r, n_k, n_a = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cats), len(areas)
    precision = -np.ones((n_t, n_r, n_k, n_a))
    recall = -np.ones((n_t, n_k, n_a))
    for k, c in enumerate(cats):
        per_image = []
        for i in img_ids:
            gt, dt = gts_by.get((i, c), []), dts_by.get((i, c), [])
            if not gt and not dt:
                continue
            dt = [dt[j] for j in np.argsort([-d["score"] for d in dt], kind="mergesort")]
            ious = np.zeros((len(dt), len(gt)))
            if gt and dt:
                size = sizes[i]
                ious = np.asarray(mask_utils.iou(_regions(dt, iou_type, size),
                                                 _regions(gt, iou_type, size),
                                                 [0] * len(gt)), dtype=np.float64)
                ious = ious.reshape(len(dt), len(gt))
            per_image.append((gt, dt, ious, c in not_exhaustive[i]))
        for a, (lo, hi) in enumerate(areas):
            scores, matched, ignored = [], [], []
            num_gt = 0
            for gt, dt, ious, nel in per_image:
                m, ig, g_ig = _match_image(gt, dt, ious, lo, hi, nel)
                num_gt += int(np.count_nonzero(g_ig == 0))
                scores.append(np.asarray([d["score"] for d in dt], dtype=np.float64))
                matched.append(m)
                ignored.append(ig)
            if not per_image or num_gt == 0:
                continue
            s = np.concatenate(scores)
            order = np.argsort(-s, kind="mergesort")
            m_all = np.concatenate(matched, axis=1)[:, order]
            ig_all = np.concatenate(ignored, axis=1)[:, order]
            tps = m_all & ~ig_all
            fps = ~m_all & ~ig_all
            tp_sum = np.cumsum(tps, axis=1).astype(float)
            fp_sum = np.cumsum(fps, axis=1).astype(float)
            for t in range(n_t):
                tp, fp = tp_sum[t], fp_sum[t]
                num_tp = len(tp)
                rc = tp / num_gt
                recall[t, k, a] = rc[-1] if num_tp else 0
                pr = (tp / (fp + tp + np.spacing(1))).tolist()
                for j in range(num_tp - 1, 0, -1):
                    if pr[j] > pr[j - 1]:
                        pr[j - 1] = pr[j]
                at = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                q = [0.0] * n_r
                for r_index, p_index in enumerate(at.tolist()):
                    if p_index >= num_tp:
                        break
                    q[r_index] = pr[p_index]
                precision[t, :, k, a] = np.asarray(q)

    def mean(values: np.ndarray) -> float:
        defined = values[values > -1]
        return float(np.mean(defined)) if defined.size else -1.0

    def ap(t: int | None = None, area: int = 0, freq: str | None = None) -> float:
        s = precision if t is None else precision[t : t + 1]
        if freq is not None:
            s = s[:, :, [k for k, c in enumerate(cats) if frequency[c] == freq]]
        return mean(s[..., area])

    stats = {
        "AP": ap(), "AP50": ap(0), "AP75": ap(5), "APs": ap(area=1), "APm": ap(area=2),
        "APl": ap(area=3), "APr": ap(freq="r"), "APc": ap(freq="c"), "APf": ap(freq="f"),
        "AR": mean(recall[:, :, 0]), "ARs": mean(recall[:, :, 1]), "ARm": mean(recall[:, :, 2]),
        "ARl": mean(recall[:, :, 3]),
    }
    per_category = {c: mean(precision[:, :, k, 0]) for k, c in enumerate(cats)}
    return LvisResult(stats, precision, recall, cats, per_category)


def _match_image(gt: list[dict[str, Any]], dt: list[dict[str, Any]], ious: np.ndarray,
                 lo: float, hi: float, not_exhaustive: bool,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``LVISEval.evaluate_img`` for one (image, category, area range): matched and ignored
    flags ``(T, D)`` of the detections (in descending score order) and the gt ignore flags."""
    g_ig_raw = np.asarray([int(g["area"] < lo or g["area"] > hi) for g in gt], dtype=np.int64)
    g_order = np.argsort(g_ig_raw, kind="mergesort")
    g_ig = g_ig_raw[g_order]
    ious = ious[:, g_order] if ious.size else ious
    n_t = len(IOU_THRESHOLDS)
    gt_m = np.zeros((n_t, len(gt)), dtype=bool)
    dt_m = np.zeros((n_t, len(dt)), dtype=bool)
    dt_ig = np.zeros((n_t, len(dt)), dtype=bool)
    if ious.size:
        for t, threshold in enumerate(IOU_THRESHOLDS):
            for d in range(len(dt)):
                best = min(threshold, 1 - 1e-10)
                m = -1
                for g in range(len(gt)):
                    if gt_m[t, g]:
                        continue
                    if m > -1 and g_ig[m] == 0 and g_ig[g] == 1:
                        break
                    if ious[d, g] < best:
                        continue
                    best = ious[d, g]
                    m = g
                if m == -1:
                    continue
                dt_ig[t, d] = bool(g_ig[m])
                dt_m[t, d] = True
                gt_m[t, m] = True
    outside = np.asarray([d["area"] < lo or d["area"] > hi or not_exhaustive for d in dt],
                         dtype=bool)
    dt_ig = dt_ig | (~dt_m & outside[None, :])
    return dt_m, dt_ig, g_ig


__all__ = ["LvisError", "LvisResult", "evaluate_lvis"]

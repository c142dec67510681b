"""COCO's detection protocol (pycocotools' ``COCOeval`` for ``segm`` and ``bbox``), vectorised.

Same inputs, same rules, same numbers: every (image, category) pair keeps at most 100
detections by descending score (stable), IoUs come from pycocotools' own ``maskUtils.iou``
(crowd columns are intersection over detection area), and the greedy matching of
``COCOeval.evaluateImg`` runs for all pairs, area ranges and IoU thresholds at once, one
detection rank at a time: a detection takes the unmatched non-ignored ground truth with the
highest IoU at or above the threshold (the last one on ties), else an ignored one that way
(crowd regions can be taken again). ``accumulate`` and ``summarize`` follow pycocotools' order of
operations (including its stable merge sort of scores across images), so ``stats``,
``precision`` and ``recall`` are bit-for-bit pycocotools'. The tests compare against
``COCOeval`` itself.

Inputs are plain columns: ground truth ``image_id``, ``category_id``, ``area``, ``iscrowd`` and
the regions (compressed RLE dicts for ``segm``, ``xywh`` boxes for ``bbox``); detections the same
with ``score`` (their area is the mask's pixel count for ``segm``, ``w * h`` for ``bbox``, as
``COCO.loadRes`` sets it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.cocoeval import Params

MAX_DETS = (1, 10, 100)


@dataclass
class CocoEvalResult:
    """``stats`` (12, COCOeval's order), ``precision`` ``(T, R, K, A, M)``, ``recall``
    ``(T, K, A, M)`` (``-1`` where undefined), ``cat_ids`` (sorted), ``image_ids`` (sorted) and the
    per-image matching at IoU 0.5, all areas, 100 detections: ``per_image`` ``image_id ->
    (scores, matched, ignored, gt_ignored, gt_found_score)`` arrays (``gt_found_score``: score of
    the detection that found each ground truth, ``-inf`` when none did)."""

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list[int]
    image_ids: list[int]
    per_image: dict[int, tuple[np.ndarray, ...]]


def _group_keys(image: np.ndarray, cat: np.ndarray, images: np.ndarray, cats: np.ndarray
                ) -> np.ndarray:
    return np.searchsorted(images, image) * len(cats) + np.searchsorted(cats, cat)


def evaluate_coco(
    iou_type: str,
    image_ids: Sequence[int],
    cat_ids: Sequence[int],
    gt: dict[str, Any],
    dt: dict[str, Any],
) -> CocoEvalResult:
    """Run the protocol. ``gt``/``dt``: dicts of columns (see the module docstring): ``image_id``,
    ``category_id``, ``area``, ``regions`` (list), ``iscrowd`` (gt) / ``score`` (dt)."""
    params = Params(iouType=iou_type)
    images = np.unique(np.asarray(image_ids, dtype=np.int64))
    cats = np.unique(np.asarray(cat_ids, dtype=np.int64))
    thresholds = np.minimum(np.asarray(params.iouThrs, dtype=np.float64), 1 - 1e-10)
    area_ranges = np.asarray(params.areaRng, dtype=np.float64)
    rec_thrs = np.asarray(params.recThrs)
    n_t, n_r, n_k, n_a, n_m = len(thresholds), len(rec_thrs), len(cats), len(area_ranges), 3
    max_det = MAX_DETS[-1]

    g_key = _group_keys(np.asarray(gt["image_id"], np.int64), np.asarray(gt["category_id"],
                                                                          np.int64), images, cats)
    g_area = np.asarray(gt["area"], dtype=np.float64)
    g_crowd = np.asarray(gt["iscrowd"], dtype=bool)
    d_key = _group_keys(np.asarray(dt["image_id"], np.int64), np.asarray(dt["category_id"],
                                                                         np.int64), images, cats)
    d_score = np.asarray(dt["score"], dtype=np.float64)
    d_area = np.asarray(dt["area"], dtype=np.float64)
    n_dt = len(d_score)

    # detections by (group, descending score; stable), at most 100 per group
    d_order = np.lexsort((np.arange(n_dt), -d_score, d_key))
    d_key_sorted = d_key[d_order]
    d_first = np.searchsorted(d_key_sorted, d_key_sorted, side="left")
    d_rank = np.arange(n_dt) - d_first
    kept = d_rank < max_det
    d_order, d_rank = d_order[kept], d_rank[kept]
    d_key_sorted = d_key_sorted[kept]
    g_order = np.argsort(g_key, kind="stable")  # document order within a group
    g_key_sorted = g_key[g_order]

    groups, g_start, g_count = np.unique(g_key_sorted, return_index=True, return_counts=True)
    dgroups, d_start, d_count = np.unique(d_key_sorted, return_index=True, return_counts=True)
    # every group with detections, and the number of ground truths it has
    pos = np.searchsorted(groups, dgroups)
    pos_clipped = np.minimum(pos, max(len(groups) - 1, 0))
    has_gt = (pos < len(groups)) & (groups[pos_clipped] == dgroups) if len(groups) else \
        np.zeros(len(dgroups), bool)
    n_gt_of = np.where(has_gt, g_count[pos_clipped] if len(groups) else 0, 0)
    gt_start_of = np.where(has_gt, g_start[pos_clipped] if len(groups) else 0, 0)

    # IoUs: one pycocotools call per image (all its kept detections x all its ground truths;
    # pairs of different categories are computed and never read, which costs less than a call
    # per (image, category) pair)
    n_img = len(images)
    img_of_d = d_key_sorted // n_k
    img_of_g = g_key_sorted // n_k
    steps = np.arange(n_img)
    d_img_start = np.searchsorted(img_of_d, steps)
    d_img_count = np.searchsorted(img_of_d, steps, side="right") - d_img_start
    g_img_start = np.searchsorted(img_of_g, steps)
    g_img_count = np.searchsorted(img_of_g, steps, side="right") - g_img_start
    block = d_img_count * g_img_count
    iou_start = np.cumsum(block) - block
    iou_flat = np.empty(int(block.sum()), dtype=np.float64)
    g_crowd_sorted = g_crowd[g_order]
    g_area_sorted = g_area[g_order]
    regions_gt = gt["regions"]
    regions_dt = dt["regions"]
    for i in np.flatnonzero(block).tolist():
        d0, g0 = int(d_img_start[i]), int(g_img_start[i])
        gidx = g_order[g0 : g0 + int(g_img_count[i])]
        matrix = mask_utils.iou([regions_dt[k] for k in d_order[d0 : d0 + int(d_img_count[i])]],
                                [regions_gt[k] for k in gidx],
                                g_crowd_sorted[g0 : g0 + len(gidx)].astype(np.uint8).tolist())
        iou_flat[int(iou_start[i]) : int(iou_start[i] + block[i])] = np.asarray(
            matrix, dtype=np.float64).reshape(-1)

    # per detection (in kept order): matched gt (-1 none) and ignore flags, (A, T) each
    n_kept = len(d_order)
    d_match = np.full((n_kept, n_a, n_t), -1, dtype=np.int64)  # position in g_order
    d_ig_gt = np.zeros((n_kept, n_a, n_t), dtype=bool)
    g_found = np.full((len(g_order), n_a, n_t), -1, dtype=np.int64)  # kept-det index

    # groups bucketed by their ground-truth count (padding stays small)
    with_gt = np.flatnonzero(n_gt_of > 0)
    bucket_of = np.ceil(np.log2(np.maximum(n_gt_of[with_gt], 1))).astype(np.int64)
    for bucket in np.unique(bucket_of):
        members = with_gt[bucket_of == bucket]
        members = members[np.argsort(-d_count[members], kind="stable")]
        n_g = int(n_gt_of[members].max())
        n_d = int(d_count[members].max())
        count = len(members)
        img = dgroups[members] // n_k
        d_valid = np.arange(n_d)[None, :] < d_count[members][:, None]
        g_valid = np.arange(n_g)[None, :] < n_gt_of[members][:, None]
        d_loc = d_start[members][:, None] + np.arange(n_d) - d_img_start[img][:, None]
        g_index = np.where(g_valid, gt_start_of[members][:, None] + np.arange(n_g), 0)
        g_loc = g_index - g_img_start[img][:, None]
        flat = (iou_start[img][:, None, None] + d_loc[:, :, None] * g_img_count[img][:, None, None]
                + g_loc[:, None, :])
        valid = d_valid[:, :, None] & g_valid[:, None, :]
        ious = np.where(valid, iou_flat[np.where(valid, flat, 0)], -1.0)
        crowd = g_crowd_sorted[g_index] & g_valid
        area = g_area_sorted[g_index][:, None, :]
        g_ig = crowd[:, None, :] | (area < area_ranges[None, :, :1]) | (
            area > area_ranges[None, :, 1:])
        matched = np.zeros((count, n_a, n_t, n_g), dtype=bool)
        taken_by = np.full((count, n_a, n_t, n_g), -1, dtype=np.int64)
        active = count
        for j in range(n_d):
            while active and d_count[members[active - 1]] <= j:
                active -= 1
            iou = ious[:active, j, None, None, :]  # (k, 1, 1, G)
            ok = (iou >= thresholds[None, None, :, None]) & g_valid[:active, None, None, :]
            ok = ok & (~matched[:active] | crowd[:active, None, None, :])  # (k, A, T, G)
            ignored = g_ig[:active, :, None, :]
            # the last best candidate: argmax (first maximum) over the reversed gt axis
            choice = np.full(ok.shape[:3], -1, dtype=np.int64)
            for candidates in (ok & ~ignored, ok & ignored):
                reversed_values = np.where(candidates, iou, -2.0)[..., ::-1]
                last = n_g - 1 - reversed_values.argmax(axis=3)
                free = (choice < 0) & (reversed_values.max(axis=3) > -2.0)
                choice = np.where(free, last, choice)
            hit = choice >= 0
            safe = np.maximum(choice, 0)
            lane = np.arange(active)[:, None, None]
            gi = g_index[lane, safe]
            ig_hit = g_ig[lane, np.arange(n_a)[None, :, None], safe]
            det = d_start[members[:active]] + j  # kept-detection index of rank j
            d_match[det] = np.where(hit, gi, -1)
            d_ig_gt[det] = hit & ig_hit
            rows, areas, ts = np.nonzero(hit)
            cols = choice[hit]
            matched[rows, areas, ts, cols] = True
            taken_by[rows, areas, ts, cols] = j
        taken = taken_by >= 0
        rows, areas, ts, cols = np.nonzero(taken)
        g_found[g_index[rows, cols], areas, ts] = d_start[members[rows]] + taken_by[taken]

    # final detection ignore flags: matched to an ignored gt, or unmatched and outside the area
    kept_area = d_area[d_order]
    outside = (kept_area[:, None] < area_ranges[None, :, 0]) | (kept_area[:, None] >
                                                                area_ranges[None, :, 1])
    d_is_tp = d_match >= 0
    d_ig = d_ig_gt | (~d_is_tp & outside[:, :, None])
    kept_score = d_score[d_order]

    # accumulate, per category / area / max detections, in COCOeval's order
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    d_cat = d_key_sorted % n_k
    g_cat_sorted = g_key_sorted % n_k
    g_ig_all = g_crowd[g_order][:, None] | (g_area[g_order][:, None] < area_ranges[None, :, 0]) | (
        g_area[g_order][:, None] > area_ranges[None, :, 1])
    # detections of a category in image order, then rank order (COCOeval's concatenation)
    by_cat = np.argsort(d_cat, kind="stable")
    cat_starts = np.searchsorted(d_cat[by_cat], np.arange(n_k + 1))
    g_of_cat = np.bincount(g_cat_sorted, minlength=n_k)
    for k in range(n_k):
        sel = by_cat[cat_starts[k] : cat_starts[k + 1]]
        if len(sel) == 0 and g_of_cat[k] == 0:
            continue  # no evaluation entry at all: stays -1
        npig_all = np.count_nonzero(~g_ig_all[g_cat_sorted == k], axis=0)
        counted_areas = np.flatnonzero(npig_all > 0)
        if not counted_areas.size:
            continue
        npig = npig_all[counted_areas].astype(np.float64)  # (A',)
        # the fewest true positives whose recall (tp / npig, as floats) reaches each recall
        # threshold: recall is monotone in tp, so "recall < thr" is "tp < need" (exact)
        need = _true_positives_needed(npig, rec_thrs)  # (A', R)
        for m, limit in enumerate(MAX_DETS):
            chosen = sel[d_rank[sel] < limit]
            chosen = chosen[np.argsort(-kept_score[chosen], kind="mergesort")]
            nd = len(chosen)
            if nd == 0:
                recall[:, k, counted_areas, m] = 0
                precision[:, :, k, counted_areas, m] = 0
                continue
            counted = ~d_ig[chosen][:, counted_areas, :]  # (nd, A', T)
            is_tp = d_is_tp[chosen][:, counted_areas, :]
            tp_count = np.cumsum(is_tp & counted, axis=0)
            tp_sum = tp_count.astype(dtype=float)
            fp_sum = np.cumsum(~is_tp & counted, axis=0).astype(dtype=float)
            rc = tp_sum / npig[None, :, None]
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            recall[:, k, counted_areas, m] = rc[-1].T
            pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]  # COCO's envelope
            # searchsorted(rc, rec_thrs, "left") for every (area, threshold) row at once, on
            # integer keys: row * (nd + 2) + tp count
            n_rows = counted_areas.size * n_t
            stride = nd + 2
            keys = (tp_count.transpose(1, 2, 0).reshape(n_rows, nd)
                    + (np.arange(n_rows, dtype=np.int64) * stride)[:, None]).reshape(-1)
            queries = (np.minimum(np.repeat(need, n_t, axis=0), nd + 1)
                       + (np.arange(n_rows, dtype=np.int64) * stride)[:, None])
            at = np.searchsorted(keys, queries.reshape(-1), side="left").reshape(n_rows, n_r) \
                - (np.arange(n_rows, dtype=np.int64) * nd)[:, None]
            inside = at < nd
            values = pr.transpose(1, 2, 0).reshape(n_rows, nd)
            q = np.where(inside, values[np.arange(n_rows)[:, None], np.minimum(at, nd - 1)], 0.0)
            # n_rows are (area, threshold); precision is (T, R, K, A, M)
            precision[:, :, k, counted_areas, m] = q.reshape(counted_areas.size, n_t,
                                                             n_r).transpose(1, 2, 0)

    stats = _summarize(precision, recall, np.asarray(params.iouThrs))

    # per image at IoU 0.5, all areas, 100 detections
    t50 = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    per_image: dict[int, tuple[np.ndarray, ...]] = {}
    d_image = images[d_key_sorted // n_k]
    g_image = images[g_key_sorted // n_k]
    finder = g_found[:, 0, t50]
    found_score = np.full(len(finder), -np.inf)
    found_score[finder >= 0] = kept_score[finder[finder >= 0]]
    d_split = np.searchsorted(d_image, images)
    d_split = np.append(d_split, len(d_image))
    g_split = np.append(np.searchsorted(g_image, images), len(g_image))
    for i, image_id in enumerate(images.tolist()):
        ds = slice(int(d_split[i]), int(d_split[i + 1]))
        gs = slice(int(g_split[i]), int(g_split[i + 1]))
        per_image[int(image_id)] = (kept_score[ds], d_is_tp[ds, 0, t50], d_ig[ds, 0, t50],
                                    g_ig_all[gs, 0], found_score[gs])
    return CocoEvalResult(stats, precision, recall, cats.tolist(), images.tolist(), per_image)


def _true_positives_needed(npig: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """``(A, R)``: the least integer ``i`` with ``i / npig[a] >= rec_thrs[r]`` in float64
    division (what COCOeval's float recalls compare), found among the integers next to
    ``thr * npig``."""
    guess = np.floor(rec_thrs[None, :] * npig[:, None]) - 2
    candidates = np.maximum(guess[:, :, None] + np.arange(5)[None, None, :], 0)  # (A, R, 5)
    reaches = candidates / npig[:, None, None] >= rec_thrs[None, :, None]
    first = np.argmax(reaches, axis=2)
    need = np.take_along_axis(candidates, first[:, :, None], axis=2)[:, :, 0]
    need[~reaches.any(axis=2)] = np.inf  # past every candidate: never reached
    return np.minimum(need, np.iinfo(np.int64).max // 4).astype(np.int64)


def _summarize(precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray) -> np.ndarray:
    """``COCOeval.summarize``'s 12 numbers from the accumulated arrays (same indexing)."""

    def one(ap: int, iou: float | None = None, area: int = 0, m: int = 2) -> float:
        if ap == 1:
            s = precision
            if iou is not None:
                s = s[np.where(iou == iou_thrs)[0]]
            s = s[:, :, :, area, m]
        else:
            s = recall
            if iou is not None:
                s = s[np.where(iou == iou_thrs)[0]]
            s = s[:, :, area, m]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    return np.array([
        one(1), one(1, iou=0.5), one(1, iou=0.75), one(1, area=1), one(1, area=2),
        one(1, area=3), one(0, m=0), one(0, m=1), one(0), one(0, area=1), one(0, area=2),
        one(0, area=3),
    ])


__all__ = ["CocoEvalResult", "evaluate_coco"]

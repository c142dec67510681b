"""A catalogue of broken pipelines (and their correct twins) for the alignment checker's tests.

Each broken one is the commonest form of a real bug in hand-written pipelines. ``TinyMosaic`` and
``NaivePaste`` are small mixing transforms written the way a user would (``needs_pool`` and
``with_pool``), so the checker is shown to probe their partners too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from instkit.instances import Instances
from instkit.masks import Masks
from instkit.sample import Drop, Sample
from instkit.transforms import Augment
from instkit.transforms._albu import A


def _flip() -> Augment:
    return Augment([A.HorizontalFlip(p=1.0)])


def _square() -> Augment:
    return Augment([A.PadIfNeeded(min_height=64, min_width=64, p=1.0),
                    A.CenterCrop(height=64, width=64, p=1.0)])


def _crop() -> Augment:
    return Augment([A.PadIfNeeded(min_height=48, min_width=48, p=1.0),
                    A.RandomCrop(height=40, width=40, p=1.0)])


def _with_masks(sample: Sample, dense: np.ndarray) -> Sample:
    masks = Masks.from_dense(dense)
    return sample.replace(instances=sample.instances.replace(masks=masks, boxes=masks.boxes()))


def image_flipped_masks_not(sample: Sample, *, seed: int | None = None) -> Sample:
    return sample.replace(image=np.ascontiguousarray(sample.image[:, ::-1]))


def masks_flipped_image_not(sample: Sample, *, seed: int | None = None) -> Sample:
    return _flip()(sample, seed=seed).replace(image=sample.image.copy())


def image_shifted_2px(sample: Sample, *, seed: int | None = None) -> Sample:
    image = np.zeros_like(sample.image)
    image[:, 2:] = sample.image[:, :-2]
    return sample.replace(image=image)


def rows_permuted_labels_in_place(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _crop()(sample, seed=seed)
    inst = out.instances
    if len(inst) < 2:
        return out
    order = np.roll(np.arange(len(inst)), 1)
    return out.replace(instances=inst[order].replace(labels=inst.labels))


def masks_transposed(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _square()(sample, seed=seed)
    if out.instances.masks is None or not len(out.instances):
        return out
    return _with_masks(out, out.instances.masks.to_dense().transpose(0, 2, 1))


def keypoints_not_flipped(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _flip()(sample, seed=seed)
    src = sample.instances
    if src.keypoints is None:
        return out
    rows = [int(np.flatnonzero(src.ids == i)[0]) for i in out.instances.ids]
    return out.replace(instances=out.instances.replace(keypoints=src.keypoints[rows]))


def flip_pairs_not_swapped(sample: Sample, *, seed: int | None = None) -> Sample:
    return Augment([A.HorizontalFlip(p=1.0)], flip_pairs=[])(sample, seed=seed)


def crowd_flag_lost(sample: Sample, *, seed: int | None = None) -> Sample:
    inst = sample.instances
    return sample.replace(instances=inst.replace(iscrowd=np.zeros(len(inst), bool)))


def row_dropped_silently(sample: Sample, *, seed: int | None = None) -> Sample:
    inst = sample.instances
    return sample if len(inst) == 0 else sample.replace(instances=inst[: len(inst) - 1])


def stale_boxes(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _crop()(sample, seed=seed)
    inst = out.instances
    return out.replace(instances=inst.replace(boxes=np.clip(inst.boxes + 3.0, 0, None)))


def seed_ignored(sample: Sample, *, seed: int | None = None) -> Sample:
    return _crop()(sample, seed=None)


def _fit(image: np.ndarray, dense: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Top-left crop / zero pad of an image and its ``(N, H, W)`` masks to ``size``."""
    h, w = size
    out_image = np.zeros((h, w, 3), np.uint8)
    out_masks = np.zeros((len(dense), h, w), bool)
    ch, cw = min(h, image.shape[0]), min(w, image.shape[1])
    out_image[:ch, :cw] = image[:ch, :cw]
    out_masks[:, :ch, :cw] = dense[:, :ch, :cw]
    return out_image, out_masks


class _Mixing:
    needs_pool = True

    def __init__(self, pool: Sequence[Sample] | None = None, broken: bool = False) -> None:
        self.pool = pool
        self.broken = broken

    def with_pool(self, pool: Sequence[Sample]) -> _Mixing:
        return type(self)(pool, self.broken)

    def _draw(self, seed: int | None) -> Sample:
        assert self.pool is not None and len(self.pool)
        return self.pool[int(np.random.default_rng(seed).integers(len(self.pool)))]


def _dense(sample: Sample) -> np.ndarray:
    inst = sample.instances
    h, w = inst.image_size
    return inst.masks.to_dense() if inst.masks is not None else np.zeros((0, h, w), bool)


def _new_rows(src: Instances, rows: np.ndarray, masks: np.ndarray, size: tuple[int, int],
              first_id: int, like: Instances) -> Instances:
    """Rows mixed in from ``src``, with the optional columns of ``like`` (so they concatenate)."""
    column = Masks.from_dense(masks)
    n = len(rows)
    k = None if like.keypoints is None else like.keypoints.shape[1]
    return Instances(image_size=size, boxes=column.boxes(), labels=src.labels[rows], masks=column,
                     keypoints=None if k is None else np.zeros((n, k, 3), np.float32),
                     iscrowd=src.iscrowd[rows],
                     ids=np.arange(first_id, first_id + n, dtype=np.int64),
                     scores=None if like.scores is None else np.full(n, np.nan, np.float32),
                     extras={name: np.full(n, None, dtype=object) for name in like.extras})


class TinyMosaic(_Mixing):
    """Two cells side by side: the sample left, a pool sample (cropped / padded to the same size)
    right. ``broken=True`` puts the sample's masks one cell off (in the right cell)."""

    def __call__(self, sample: Sample, *, seed: int | None = None) -> Sample:
        partner = self._draw(seed)
        h, w = sample.image_size
        image = np.zeros((h, 2 * w, 3), np.uint8)
        image[:, :w] = sample.image
        p_image, p_masks = _fit(partner.image, _dense(partner), (h, w))
        image[:, w:] = p_image
        inst = sample.instances
        own = np.zeros((len(inst), h, 2 * w), bool)
        own[:, :, w if self.broken else 0:(2 * w if self.broken else w)] = _dense(sample)
        column = Masks.from_dense(own)
        kp = None
        if inst.keypoints is not None:
            kp = inst.keypoints.copy()
            if self.broken:
                kp[..., 0] += w * (kp[..., 2] > 0)
        mine = inst.replace(image_size=(h, 2 * w), masks=column, boxes=column.boxes(),
                            keypoints=kp)
        keep = np.flatnonzero(p_masks.reshape(len(p_masks), h * w).any(axis=1)) if len(p_masks) \
            else np.zeros(0, np.int64)
        placed = np.zeros((len(keep), h, 2 * w), bool)
        placed[:, :, w:] = p_masks[keep]
        first = int(inst.ids.max(initial=0)) + 1
        theirs = _new_rows(partner.instances, keep, placed, (h, 2 * w), first, mine)
        return Sample.from_array(image, Instances.cat([mine, theirs]), sample.image_id,
                                 sample.meta.copy())


class NaivePaste(_Mixing):
    """Pastes one pool object (top-left aligned) onto the sample and appends its row.
    Correct: the rows it covers lose the covered pixels (dropped and recorded when nothing is left).
    ``broken=True``: the covered rows keep their masks (the paste does not occlude)."""

    def __call__(self, sample: Sample, *, seed: int | None = None) -> Sample:
        donor = self._draw(seed)
        h, w = sample.image_size
        d_image, d_masks = _fit(donor.image, _dense(donor), (h, w))
        solid = [r for r in range(len(d_masks))
                 if d_masks[r].any() and not donor.instances.iscrowd[r]]
        if not solid:
            return sample.replace()
        pick = solid[int(np.random.default_rng(seed).integers(len(solid)))]
        pasted = d_masks[pick]
        image = sample.image.copy()
        image[pasted] = d_image[pasted]
        inst = sample.instances
        dense = _dense(sample)
        meta = sample.meta.copy()
        if not self.broken:
            dense = dense & ~pasted
            alive = dense.reshape(len(dense), dense.shape[1] * dense.shape[2]).any(axis=1)
            for r in np.flatnonzero(~alive):
                meta.drops.append(Drop(int(inst.ids[r]), "occluded", int(inst.labels[r]),
                                       "naive_paste"))
            inst, dense = inst[alive], dense[alive]
        column = Masks.from_dense(dense)
        inst = inst.replace(masks=column, boxes=column.boxes())
        first = int(sample.instances.ids.max(initial=0)) + 1
        row = _new_rows(donor.instances, np.array([pick]), pasted[None], (h, w), first, inst)
        return Sample.from_array(image, Instances.cat([inst, row]), sample.image_id, meta)


#: (broken transform, the invariant that must catch it)
CATALOGUE = [
    (image_flipped_masks_not, "probe_code"),
    (masks_flipped_image_not, "probe_code"),
    (image_shifted_2px, "probe_offset"),
    (rows_permuted_labels_in_place, "probe_label"),
    (masks_transposed, "probe_code"),
    (keypoints_not_flipped, "probe_keypoint"),
    (flip_pairs_not_swapped, "probe_keypoint"),
    (crowd_flag_lost, "crowd"),
    (row_dropped_silently, "accounting"),
    (stale_boxes, "box_is_mask_box"),
    (seed_ignored, "deterministic"),
    (NaivePaste(broken=True), "probe_code"),
    (TinyMosaic(broken=True), "probe_code"),
]

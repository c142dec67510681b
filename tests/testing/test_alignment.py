"""check_alignment catches broken transforms and passes instkit's own presets on real data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from instkit.io.coco import read_coco
from instkit.sample import Sample
from instkit.synthetic import make_samples
from instkit.testing import assert_aligned, check_alignment
from instkit.transforms import Augment
from instkit.transforms._albu import A
from instkit.transforms.presets import PRESETS

CROP = [A.RandomCrop(height=40, width=40, p=1.0)]


def _crop_keeping_masks() -> Augment:
    return Augment([A.PadIfNeeded(min_height=48, min_width=48, p=1.0), *CROP])


def masks_shuffled(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _crop_keeping_masks()(sample, seed=seed)
    inst = out.instances
    if len(inst) < 2:
        return out
    order = np.roll(np.arange(len(inst)), 1)
    return out.replace(instances=inst.replace(masks=inst.masks[order]))


def boxes_not_updated(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _crop_keeping_masks()(sample, seed=seed)
    inst = out.instances
    keep = np.isin(sample.instances.ids, inst.ids)
    stale = sample.instances.boxes[keep][: len(inst)]
    if len(stale) != len(inst):
        return out
    return out.replace(instances=inst.replace(boxes=stale))


def drop_not_recorded(sample: Sample, *, seed: int | None = None) -> Sample:
    out = _crop_keeping_masks()(sample, seed=seed)
    meta = dataclasses.replace(out.meta, drops=list(sample.meta.drops))
    return out.replace(meta=meta)


def not_deterministic(sample: Sample, *, seed: int | None = None) -> Sample:
    return _crop_keeping_masks()(sample, seed=None)


@pytest.mark.parametrize(
    ("broken", "invariant"),
    [(masks_shuffled, "box_is_mask_box"), (boxes_not_updated, "box_is_mask_box"),
     (drop_not_recorded, "accounting"), (not_deterministic, "deterministic")],
)
def test_checker_catches_broken_transforms(broken, invariant: str) -> None:
    real = make_samples(3, seed=1, image_size=(64, 64), max_instances=8)
    report = check_alignment(broken, real, max_examples=10, max_side=64)
    assert invariant in report.invariants(), report.to_text()
    bad = next(v for v in report.violations if v.invariant == invariant)
    assert bad.example is not None and bad.seed is not None
    again = broken(bad.example, seed=bad.seed)  # the example reproduces the failure
    if invariant != "deterministic":
        with pytest.raises(AssertionError, match=invariant):
            assert_aligned(bad.example, again)


def test_checker_catches_label_swaps_duplicate_ids_and_visible_outside_keypoints() -> None:
    sample = make_samples(1, seed=3, max_instances=8)[0]
    inst = sample.instances
    assert len(inst) >= 2
    swapped = sample.replace(instances=inst.replace(labels=inst.labels[::-1].copy()))
    dup = sample.replace(instances=inst.replace(ids=np.full(len(inst), inst.ids[0])))
    kp = np.zeros((len(inst), 1, 3), np.float32)
    kp[0] = (-3, 5, 2)
    outside = sample.replace(instances=inst.replace(keypoints=kp))
    before = sample.replace(instances=inst.replace(keypoints=np.zeros_like(kp)))
    for after, invariant, base in ((swapped, "label", sample), (dup, "unique_ids", sample),
                                   (outside, "keypoints_inside", before)):
        if invariant == "label" and (inst.labels == inst.labels[::-1]).all():
            continue
        with pytest.raises(AssertionError, match=invariant):
            assert_aligned(base, after)
    assert_aligned(sample, sample)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_aligned_on_generated_and_synthetic_samples(name: str) -> None:
    size = (96, 96)
    augment = PRESETS[name](size=size, seed=0) if name != "eval" else PRESETS[name](size=size)
    real = make_samples(3, seed=5, image_size=(80, 112))
    report = check_alignment(augment, real, max_examples=12, max_side=64)
    assert report.ok, report.to_text()
    assert report.samples_checked == 15


def test_real_pose_flip_moves_left_to_right(pose_minicoco) -> None:
    pose = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    sample = next(pose[i] for i in range(len(pose)) if (pose[i].instances.keypoints[..., 2] > 0).sum() > 8)
    table = sample.meta.categories
    names = list(table[0].keypoints)
    left, right = names.index("left_shoulder"), names.index("right_shoulder")
    out = Augment([A.HorizontalFlip(p=1.0)])(sample, seed=0)
    assert_aligned(sample, out)
    w = sample.image_size[1]
    src, dst = sample.instances.keypoints, out.instances.keypoints
    for r in range(len(src)):
        if src[r, right, 2] > 0:
            np.testing.assert_allclose(dst[r, left, :2], [w - 1 - src[r, right, 0], src[r, right, 1]])
            assert dst[r, left, 2] == src[r, right, 2]

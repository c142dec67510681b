"""instkit's Perspective on real-size instance masks, and drop reasons under min_visibility."""

from __future__ import annotations

import numpy as np
import pytest

from instkit.instances import Instances
from instkit.io.coco import read_coco
from instkit.masks import Masks
from instkit.sample import Sample
from instkit.testing import assert_aligned, check_alignment
from instkit.transforms import Augment, Perspective
from instkit.transforms._albu import A
from instkit.transforms.presets import yolo_seg


def _raw(transform: object, image: np.ndarray, masks: np.ndarray) -> dict:
    compose = A.Compose([transform], bbox_params=A.BboxParams(coord_format="pascal_voc",
                                                              label_fields=["c"]),
                        instance_binding=["masks", "bboxes"], seed=0, telemetry=False)
    h, w = image.shape[:2]
    instances = [{"mask": m, "bbox": np.array([0, 0, w, h], np.float32), "bbox_labels": {"c": i}}
                 for i, m in enumerate(masks)]
    return compose(image=image, instances=instances, invocation_seed=11)


@pytest.mark.parametrize("keep_size", [True, False])
def test_perspective_equals_albumentationsx_where_albumentationsx_works(keep_size: bool) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 240, 3), np.uint8)  # <= 256x256 px: its working path
    masks = (rng.random((4, 200, 240)) > 0.6).astype(np.uint8)
    theirs = _raw(A.Perspective(scale=(0.05, 0.1), keep_size=keep_size, p=1.0), image, masks)
    ours = _raw(Perspective(scale=(0.05, 0.1), keep_size=keep_size, p=1.0), image, masks)
    assert np.array_equal(ours["image"], theirs["image"])
    assert len(ours["instances"]) == len(theirs["instances"]) == 4
    for a, b in zip(ours["instances"], theirs["instances"], strict=True):
        assert np.array_equal(a["mask"], b["mask"])


def test_albumentationsx_perspective_fails_on_large_masks_and_ours_does_not() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 400, 3), np.uint8)
    masks = np.zeros((2, 300, 400), np.uint8)
    masks[0, 50:150, 60:200] = 1
    masks[1, 180:260, 250:380] = 1
    with pytest.raises(IndexError):  # the albumentationsx 2.5.1 defect this class works around
        _raw(A.Perspective(scale=(0.05, 0.1), p=1.0), image, masks)
    out = _raw(Perspective(scale=(0.05, 0.1), p=1.0), image, masks)
    assert [int(m["mask"].sum() > 0) for m in out["instances"]] == [1, 1]


def test_perspective_on_every_tinycoco_image(tinycoco) -> None:
    samples = []
    for split in ("train", "val"):
        coco = read_coco(tinycoco[f"{split}_json"], tinycoco[f"{split}_images"])
        samples += [coco[i] for i in range(len(coco))]
    assert len(samples) == 38
    # a user's A.Perspective is swapped for the working one inside Augment
    for transform, count in ((Perspective(scale=(0.03, 0.08), p=1.0), 38),
                             (A.Perspective(scale=(0.03, 0.08), p=1.0), 4)):
        augment = Augment([transform], seed=0)
        for i, sample in enumerate(samples[:count]):
            out = augment(sample, seed=i)
            assert_aligned(sample, out)
    pool = read_coco(tinycoco["train_json"], tinycoco["train_images"])
    preset = yolo_seg(pool=pool, size=(256, 256), seed=0, perspective=True)
    assert any(type(t) is Perspective for t in preset.transforms)
    report = check_alignment(preset, samples, generated=False)
    assert report.ok, report.to_text()
    assert report.samples_checked == 38


def _two_squares() -> Sample:
    masks = np.zeros((2, 100, 100), bool)
    masks[0, 10:30, 10:50] = True  # 40 px wide at x 10..50
    masks[1, 60:90, 60:90] = True
    inst = Instances(image_size=(100, 100), labels=[0, 1], masks=Masks.from_dense(masks),
                     ids=[101, 202])
    return Sample.from_array(np.zeros((100, 100, 3), np.uint8), inst, image_id=1)


def _reasons(out: Sample) -> dict[int, str]:
    return {d.annotation_id: d.reason for d in out.meta.drops}


def test_drop_reasons_are_told_apart_with_min_visibility() -> None:
    sample = _two_squares()
    # x 0..20 keeps 10 of square 101's 40 columns (visibility 0.25); 202 is wholly outside
    crop = [A.Crop(x_min=0, y_min=0, x_max=20, y_max=100, p=1.0)]
    out = Augment(crop, min_visibility=0.5)(sample, seed=0)
    assert _reasons(out) == {101: "below_min_visibility", 202: "cropped_out"}
    kept = Augment(crop, min_visibility=0.2)(sample, seed=0)
    assert kept.instances.ids.tolist() == [101] and _reasons(kept) == {202: "cropped_out"}
    small = Augment(crop, min_visibility=0.2, min_area=250)(sample, seed=0)
    assert _reasons(small) == {101: "below_min_area", 202: "cropped_out"}
    # a translation that moves both out of the frame: cropped out, not "below visibility"
    away = [A.Affine(translate_px={"x": (300, 300), "y": (0, 0)}, p=1.0)]
    out = Augment(away, min_visibility=0.3)(sample, seed=0)
    assert _reasons(out) == {101: "cropped_out", 202: "cropped_out"}
    for d in out.meta.drops:
        assert d.detail
    assert_aligned(sample, out)

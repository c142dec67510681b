"""Augment: rows stay whole through albumentationsx, boxes follow masks, drops are recorded."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from instkit.categories import Categories, Category
from instkit.instances import Instances
from instkit.masks import Masks
from instkit.sample import Sample, SampleMeta
from instkit.synthetic import make_samples
from instkit.testing import assert_aligned
from instkit.transforms import Augment
from instkit.transforms._albu import A, telemetry_off


def _disk_sample() -> Sample:
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - 60) ** 2 + (xx - 80) ** 2 <= 30**2
    square = np.zeros((h, w), bool)
    square[5:25, 5:35] = True
    masks = Masks.from_dense(np.stack([disk, square]))
    inst = Instances(image_size=(h, w), labels=[1, 0], masks=masks, ids=[11, 22],
                     scores=[0.9, 0.4], iscrowd=[False, True],
                     extras={"note": np.array(["disk", "square"], dtype=object),
                             "coco_area": np.array([1.0, 2.0])})
    image = np.zeros((h, w, 3), np.uint8)
    image[disk] = 200
    return Sample.from_array(image, inst, image_id=5)


def test_rotation_gives_tight_boxes_where_raw_albumentationsx_does_not() -> None:
    sample = _disk_sample()
    rotate = [A.Affine(rotate=(30, 30), p=1.0)]
    out = Augment(rotate, seed=0)(sample, seed=1)
    assert_aligned(sample, out)
    np.testing.assert_array_equal(out.instances.boxes, out.instances.masks.boxes())
    raw = A.Compose(rotate, bbox_params=A.BboxParams(coord_format="pascal_voc", label_fields=["c"]),
                    instance_binding=["masks", "bboxes"], seed=0, telemetry=False)
    dense = sample.instances.masks.to_dense().astype(np.uint8)
    result = raw(image=sample.image, instances=[
        {"mask": dense[i], "bbox": sample.instances.boxes[i], "bbox_labels": {"c": i}}
        for i in range(2)])
    disk = result["instances"][0]
    tight = Masks.from_dense(disk["mask"][None]).boxes()[0]
    raw_w, tight_w = disk["bbox"][2] - disk["bbox"][0], tight[2] - tight[0]
    assert raw_w > 1.2 * tight_w  # the rotated box of a disk's box is far looser than the disk
    np.testing.assert_allclose(out.instances.boxes[0], tight)


def test_columns_follow_their_instance_through_a_flip() -> None:
    sample = _disk_sample()
    out = Augment([A.HorizontalFlip(p=1.0)])(sample, seed=0)
    src, dst = sample.instances, out.instances
    assert dst.ids.tolist() == [11, 22]
    assert dst.labels.tolist() == [1, 0] and dst.iscrowd.tolist() == [False, True]
    np.testing.assert_allclose(dst.scores, [0.9, 0.4])
    assert dst.extras["note"].tolist() == ["disk", "square"]
    assert "coco_area" not in dst.extras  # described the source geometry
    np.testing.assert_array_equal(dst.masks.to_dense(), src.masks.to_dense()[:, :, ::-1])
    np.testing.assert_array_equal(dst.boxes[1], [125, 5, 155, 25])


@pytest.mark.parametrize("binding", ["masks", "mask"])
def test_mask_bindings_agree(binding: str) -> None:
    sample = make_samples(1, seed=4)[0]
    aug = Augment([A.RandomCrop(height=150, width=170, p=1.0), A.Affine(rotate=(-20, 20), p=1)],
                  binding=binding, seed=3)
    out = aug(sample, seed=9)
    assert_aligned(sample, out)
    reference = Augment(aug.transforms, binding="masks")(sample, seed=9)
    assert out.instances == reference.instances


def test_crop_records_every_drop_with_reason() -> None:
    sample = _disk_sample()
    aug = Augment([A.Crop(x_min=60, y_min=40, x_max=160, y_max=120, p=1.0)])
    out = aug(sample, seed=0)
    assert out.instances.ids.tolist() == [11]
    (drop,) = out.meta.drops
    assert (drop.annotation_id, drop.reason, drop.label) == (22, "cropped_out", 0)
    big = Augment(aug.transforms, min_area=10_000)(sample, seed=0)
    assert [(d.annotation_id, d.reason) for d in big.meta.drops] == [
        (22, "cropped_out"), (11, "below_min_area")] or [
        (d.annotation_id, d.reason) for d in big.meta.drops] == [
        (11, "below_min_area"), (22, "cropped_out")]
    half = Augment([A.Crop(x_min=0, y_min=0, x_max=15, y_max=120, p=1.0)], min_visibility=0.6)
    out = half(sample, seed=0)
    assert {(d.annotation_id, d.reason) for d in out.meta.drops} >= {(22, "below_min_visibility")}


def test_empty_input_masks_and_degenerate_boxes_are_dropped_and_recorded() -> None:
    sample = _disk_sample()
    empty = np.zeros((1, 120, 160), bool)
    masks = Masks.cat([sample.instances.masks, Masks.from_dense(empty)])
    inst = Instances(image_size=(120, 160), labels=[1, 0, 2], masks=masks, ids=[11, 22, 33])
    out = Augment([A.HorizontalFlip(p=1)])(Sample.from_array(sample.image, inst), seed=0)
    assert [(d.annotation_id, d.reason) for d in out.meta.drops] == [(33, "empty_mask")]
    boxes = Instances(image_size=(120, 160), boxes=[[10, 10, 10, 30], [0, 0, 50, 50]],
                      labels=[0, 1], ids=[1, 2])
    out = Augment([A.HorizontalFlip(p=1)])(Sample.from_array(sample.image, boxes), seed=0)
    assert [(d.annotation_id, d.reason) for d in out.meta.drops] == [(1, "degenerate_box")]
    np.testing.assert_allclose(out.instances.boxes, [[110, 0, 160, 50]])


def _pose_sample() -> Sample:
    names = ("nose", "left_eye", "right_eye")
    table = Categories([Category(id=1, name="person", keypoints=names)])
    mask = np.zeros((1, 60, 80), bool)
    mask[0, 10:50, 20:60] = True
    kp = np.array([[[40, 20, 2], [30, 15, 2], [50, 15, 1]]], np.float32)
    inst = Instances(image_size=(60, 80), labels=[0], masks=Masks.from_dense(mask), keypoints=kp,
                     ids=[7])
    return Sample.from_array(np.zeros((60, 80, 3), np.uint8), inst, 1,
                             SampleMeta(categories=table))


@pytest.mark.parametrize("binding", ["masks", "keypoints"])
def test_horizontal_flip_swaps_left_right_keypoints(binding: str) -> None:
    sample = _pose_sample()
    out = Augment([A.HorizontalFlip(p=1.0)], binding=binding)(sample, seed=0)
    kp = out.instances.keypoints[0]
    # albumentationsx flips keypoints as pixel indices: x -> W - 1 - x
    np.testing.assert_allclose(kp, [[39, 20, 2], [29, 15, 1], [49, 15, 2]])
    twice = Augment([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)])(sample, seed=0)
    assert twice.instances.keypoints[0, :, 2].tolist() == [2, 2, 1]  # two reflections: no swap
    given = Augment([A.HorizontalFlip(p=1.0)], flip_pairs=[])(sample, seed=0)
    np.testing.assert_allclose(given.instances.keypoints[0, 1], [49, 15, 2])


def test_keypoints_leaving_the_image_become_invisible_not_moved() -> None:
    sample = _pose_sample()
    out = Augment([A.Crop(x_min=35, y_min=0, x_max=80, y_max=60, p=1.0)])(sample, seed=0)
    kp = out.instances.keypoints[0]
    np.testing.assert_allclose(kp[1], [-5, 15, 0])  # left eye at x=30 is now outside
    np.testing.assert_allclose(kp[0], [5, 20, 2])
    assert_aligned(sample, out)


def test_seed_reproducible_across_instances_and_pickling() -> None:
    sample = make_samples(1, seed=2)[0]
    transforms = [A.HorizontalFlip(p=0.5), A.RandomCrop(height=160, width=160, p=1.0),
                  A.Affine(rotate=(-30, 30), p=1.0)]
    first = Augment(transforms, seed=1)
    clone = pickle.loads(pickle.dumps(first))  # what a DataLoader worker gets
    other = Augment(transforms, seed=99)
    outs = [aug(sample, seed=5) for aug in (first, clone, other, first)]
    for out in outs[1:]:
        assert np.array_equal(out.image, outs[0].image) and out.instances == outs[0].instances
    differ = [first(sample, seed=s).instances.boxes.tobytes() for s in range(6)]
    assert len(set(differ)) > 1


def test_telemetry_is_off_for_built_and_wrapped_composes() -> None:
    assert telemetry_off()
    user = A.Compose([A.HorizontalFlip(p=1.0)], bbox_params=A.BboxParams(
        coord_format="pascal_voc", label_fields=["c"], min_visibility=0.3))
    aug = Augment(user)
    assert user.telemetry is False and aug.min_visibility == 0.3
    aug(_disk_sample(), seed=0)
    assert all(c.telemetry is False for c in aug._composes.values())


def test_import_instkit_does_not_import_albumentations() -> None:
    code = ("import sys, instkit, instkit.io.coco, instkit.testing; "
            "print('albumentations' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_mosaic_and_copy_paste_give_unique_ids_and_sources() -> None:
    pool = make_samples(5, seed=8, image_size=(96, 96))
    aug = Augment([
        A.Mosaic(grid_yx=(2, 2), target_size=(128, 128), cell_shape=(128, 128), p=1.0),
        A.CopyAndPaste(scale_range=(0.5, 1.0), p=1.0),
    ], seed=0, paste_donors=(2, 3))
    assert aug.needs_pool and aug.with_pool(pool).needs_pool
    bound = aug.with_pool(pool, name="synthetic")
    sample = pool[0]
    mixed = 0
    for seed in range(4):
        out = bound(sample, seed=seed)
        assert_aligned(sample, out)
        ids = out.instances.ids
        assert len(set(ids.tolist())) == len(ids)
        ex = out.instances.extras
        own = np.isin(ids, sample.instances.ids)
        assert (ex["source_image_id"][own] == sample.image_id).all()
        assert (ex["source_annotation_id"][own] == ids[own]).all()
        assert set(ex["source_dataset"][~own].tolist()) <= {"synthetic"}
        for j in np.flatnonzero(~own):  # a mixed-in row keeps its source's label
            donor = next(s for s in pool if s.image_id == ex["source_image_id"][j])
            row = donor.instances.ids.tolist().index(ex["source_annotation_id"][j])
            assert donor.instances.labels[row] == out.instances.labels[j]
        mixed += int((~own).sum())
        assert out.meta.extra["mixed_in"]["kept"] == int((~own).sum())
    assert mixed > 0
    again = bound(sample, seed=3)
    assert again.instances == bound(sample, seed=3).instances


def test_flips_by_their_known_map_equal_the_solved_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flips and resizes skip the control points (only whether they applied is learned): the
    same rows, masks (polygons and crowd bitmaps), boxes and pixels as solving their map from
    albumentationsx's keypoints."""
    from instkit.transforms import augment as augment_module
    from instkit.transforms.geometry import control_points, solve_homography

    for flip, size in ((A.HorizontalFlip, (37, 53)), (A.VerticalFlip, (41, 29))):
        known = augment_module._KNOWN_MAPS[flip](size, size)
        points = control_points(size)
        moved = A.Compose([flip(p=1.0)], keypoint_params=A.KeypointParams(coord_format="xy"),
                          telemetry=False)(image=np.zeros((*size, 3), np.uint8),
                                           keypoints=points)["keypoints"]
        solved = solve_homography(points, np.asarray(moved)[:, :2], size)
        assert solved is not None
        np.testing.assert_array_equal(known.matrix, solved.matrix)
    samples = make_samples(6, seed=3, image_size=(96, 128), crowd_probability=0.5)
    transforms = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Resize(90, 70)]
    unflipped = [Augment([A.Resize(90, 70)])(s, seed=0).image for s in samples]

    def run() -> list[Sample]:
        aug = Augment(transforms)
        return [aug(s, seed=k) for k in range(4) for s in samples]

    fast = run()
    monkeypatch.setattr(augment_module, "_KNOWN_MAPS", {})
    slow = run()
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.instances.masks == b.instances.masks
        np.testing.assert_array_equal(a.instances.boxes, b.instances.boxes)
        np.testing.assert_array_equal(a.instances.ids, b.instances.ids)
    flipped = sum(not np.array_equal(out.image, unflipped[j % len(samples)])
                  for j, out in enumerate(fast))
    assert 0 < flipped < len(fast)
    assert any(k == "bitmap" for out in fast for k in out.instances.masks.kinds)
    # a resize that may not apply takes its known map too, when albumentationsx says it did
    maybe = [A.Resize(72, 60, p=0.5)]
    slow = [Augment(maybe)(s, seed=k) for k in range(4) for s in samples]
    monkeypatch.undo()
    fast = [Augment(maybe)(s, seed=k) for k in range(4) for s in samples]
    assert 0 < sum(out.image.shape[:2] == (72, 60) for out in fast) < len(fast)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.instances.masks == b.instances.masks
        np.testing.assert_array_equal(a.instances.boxes, b.instances.boxes)

"""Overlays checked on pixels: colours inside masks and not outside, dashes on the boundary."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from instkit import Categories, Instances, Masks, Sample, read_coco
from instkit.errors import InstkitError
from instkit.evaluation import match_image
from instkit.viz import (
    draw_comparison,
    draw_evaluation,
    draw_instances,
    instance_color,
    instance_colors,
    save_image,
)
from instkit.viz.colors import FN_COLOR, FP_COLOR, MATCHED_GT_COLOR, TP_COLOR

H, W = 60, 80
CATS = Categories.from_names(["square", "disc"])


def _square(y0: int, x0: int, size: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def _instances(masks: list[np.ndarray], labels: list[int], ids: list[int],
               scores: list[float] | None = None, crowd: list[bool] | None = None) -> Instances:
    return Instances(image_size=(H, W), masks=Masks.from_dense(np.stack(masks)), labels=labels,
                     ids=ids, scores=scores, iscrowd=crowd)


def _blend(color: tuple[int, int, int], alpha: float, base: int = 0) -> np.ndarray:
    return (base * (1 - alpha) + np.asarray(color, np.float64) * alpha + 0.5).astype(np.uint8)


def _erode(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def colour_only_inside(out: np.ndarray, mask: np.ndarray, expected: np.ndarray,
                       margin: int = 2) -> bool:
    """The fill colour covers the mask's interior and appears nowhere beyond ``margin`` px."""
    inside = _erode(mask, margin)
    outside = ~_dilate(mask, margin)
    painted = np.all(out == expected, axis=-1)
    return bool(painted[inside].all() and not painted[outside].any())


def test_instance_colour_inside_its_mask_only() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    a, b = _square(5, 5, 20), _square(30, 45, 22)
    inst = _instances([a, b], [0, 1], [11, 12])
    out = draw_instances(image, inst, CATS, boxes=False, labels=False, alpha=0.5)
    colors = instance_colors(inst.labels, inst.ids)
    for mask, color in ((a, colors[0]), (b, colors[1])):
        assert colour_only_inside(out, mask, _blend(tuple(color), 0.5))
    # The outline sits on the mask's boundary pixels in the full colour.
    boundary = a & ~_erode(a, 1)
    assert np.all(out[boundary] == colors[0])
    # The input image is left as it was.
    assert not image.any()


def test_checker_fails_on_a_misplaced_overlay() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    drawn_mask, claimed_mask = _square(5, 5, 20), _square(5, 30, 20)
    inst = _instances([drawn_mask], [0], [1])
    out = draw_instances(image, inst, CATS, boxes=False, labels=False, alpha=0.5)
    color = _blend(tuple(instance_colors(inst.labels, inst.ids)[0]), 0.5)
    assert colour_only_inside(out, drawn_mask, color)
    assert not colour_only_inside(out, claimed_mask, color)


def test_colour_is_hue_by_class_and_shade_by_instance() -> None:
    import colorsys

    same_class = [instance_color(3, i) for i in range(20)]
    assert len(set(same_class)) == 20
    hues = [colorsys.rgb_to_hsv(*(np.asarray(c) / 255))[0] for c in same_class]
    other = colorsys.rgb_to_hsv(*(np.asarray(instance_color(4, 0)) / 255))[0]
    spread = max(abs((h - hues[0] + 0.5) % 1 - 0.5) for h in hues)
    assert spread <= 0.1
    assert abs((other - hues[0] + 0.5) % 1 - 0.5) > 0.15
    assert instance_color(3, 7) == instance_color(3, 7)


def test_crowd_region_is_hatched() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    crowd = _square(10, 10, 30)
    inst = _instances([crowd], [0], [5], crowd=[True])
    out = draw_instances(image, inst, CATS, boxes=False, labels=False, alpha=0.5)
    color = np.asarray(instance_colors(inst.labels, inst.ids)[0])
    interior = out[_erode(crowd, 2)]
    full = np.all(interior == color, axis=-1)
    assert 0.1 < full.mean() < 0.6  # stripes in the full colour with tinted gaps between
    assert not out[~_dilate(crowd, 2)].any()


def test_scaled_drawing_keeps_masks_in_place() -> None:
    big = (240, 320)
    mask = np.zeros(big, dtype=bool)
    mask[40:120, 200:300] = True
    inst = Instances(image_size=big, masks=Masks.from_dense(mask[None]), labels=[1], ids=[3])
    out = draw_instances(np.zeros((*big, 3), np.uint8), inst, CATS, max_side=80, boxes=False,
                         labels=False)
    assert out.shape == (60, 80, 3)
    small = cv2.resize(mask.astype(np.uint8), (80, 60), interpolation=cv2.INTER_AREA) > 0
    color = _blend(tuple(instance_colors(inst.labels, inst.ids)[0]), 0.45)
    assert colour_only_inside(out, small, color)


def test_keypoints_and_skeleton_are_drawn(pose_minicoco: dict) -> None:
    dataset = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    sample = next(s for s in dataset if s.instances.keypoints is not None
                  and (s.instances.keypoints[:, :, 2] == 2).sum() > 10)
    plain = draw_instances(sample.image, sample.instances, dataset.categories, keypoints=False)
    with_kp = draw_instances(sample.image, sample.instances, dataset.categories)
    kp = sample.instances.keypoints
    assert kp is not None
    person, joint = np.argwhere(kp[:, :, 2] == 2)[0]
    x, y = (int(round(v)) for v in kp[person, joint, :2])
    color = np.asarray(instance_colors(sample.instances.labels, sample.instances.ids)[person])
    patch = with_kp[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].reshape(-1, 3)
    assert np.any(np.all(np.abs(patch.astype(int) - color) <= 2, axis=1))
    assert (plain != with_kp).any(axis=-1).sum() > 200


def test_evaluation_colours_and_dashed_ground_truth() -> None:
    image = np.full((H, W, 3), 100, np.uint8)
    found, missed = _square(5, 5, 20), _square(30, 45, 22)
    gt = _instances([found, missed], [0, 1], [1, 2])
    fp_mask = _square(35, 5, 15)
    pred = _instances([found, fp_mask], [0, 0], [0, 1], scores=[0.9, 0.8])
    outcome = match_image(gt, pred, iou_threshold=0.5)
    assert outcome.tp == 1 and outcome.fp == 1 and outcome.fn == 1
    out = draw_evaluation(image, gt, pred, CATS, outcome=outcome, legend=False, labels=False,
                          alpha=0.5, line_width=1)
    assert colour_only_inside(out, found, _blend(TP_COLOR, 0.5, 100), margin=3)
    assert colour_only_inside(out, fp_mask, _blend(FP_COLOR, 0.5, 100), margin=3)
    # The missed object: dashes in the FN colour along its boundary, with gaps between them.
    dashes = np.all(out == FN_COLOR, axis=-1)
    boundary = missed & ~_erode(missed, 1)
    near = _dilate(boundary, 2)
    assert dashes.any() and not dashes[~near].any()
    covered = dashes[boundary].mean()
    assert 0.3 < covered < 0.95
    # The found object is outlined in dashes too, in the "found" colour.
    assert np.all(out == MATCHED_GT_COLOR, axis=-1)[_dilate(found & ~_erode(found, 1), 1)].any()


def test_evaluation_legend_and_score_threshold() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    gt = _instances([_square(5, 5, 20)], [0], [1])
    pred = _instances([_square(5, 5, 20)], [0], [0], scores=[0.3])
    kept = match_image(gt, pred, score_threshold=0.5)
    assert kept.predictions is not None and len(kept.predictions) == 0 and kept.fn == 1
    out = draw_evaluation(image, gt, pred, CATS, score_threshold=0.5)
    assert out.shape[0] > H and out.shape[1] == W  # legend strip below


def test_mismatched_sizes_are_refused() -> None:
    inst = _instances([_square(5, 5, 20)], [0], [1])
    with pytest.raises(InstkitError, match="60x80"):
        draw_instances(np.zeros((50, 80, 3), np.uint8), inst)
    with pytest.raises(InstkitError):
        draw_instances(np.zeros((H, W), np.uint8), inst)


def test_comparison_keeps_colours_per_instance_id() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    a, b = _square(5, 5, 20), _square(30, 40, 22)
    before_inst = _instances([a, b], [0, 1], [101, 202])
    before = Sample.from_array(image, before_inst, image_id=7)
    flipped = Masks.from_dense(before_inst.masks.to_dense()[:, :, ::-1].copy())
    after_inst = Instances(image_size=(H, W), masks=flipped, labels=[0, 1], ids=[101, 202])
    after = Sample.from_array(image[:, ::-1].copy(), after_inst, image_id=7)
    out = draw_comparison(before, after, CATS, height=H, labels=False, boxes=False)
    caption = out.shape[0] - H
    left, right = out[caption:, :W], out[caption:, W + 8 :]
    for index, mask in enumerate((a, b)):
        color = _blend(tuple(instance_colors(before_inst.labels, before_inst.ids)[index]), 0.45)
        assert colour_only_inside(left, mask, color)
        assert colour_only_inside(right, mask[:, ::-1], color)


def test_comparison_with_a_real_transform(synthetic_coco, artifacts) -> None:
    pytest.importorskip("albumentations")
    from instkit.transforms.presets import train_default

    dataset = read_coco(synthetic_coco)
    sample = dataset[0]
    after = train_default(size=(96, 128))(sample, seed=1)
    out = draw_comparison(sample, after, dataset.categories, height=200)
    assert out.shape[0] > 200 and out.dtype == np.uint8
    save_image(out, artifacts / "comparison_train_default.png")


def test_save_image_writes_png_and_refuses_unknown_suffix(tmp_path) -> None:
    picture = np.zeros((4, 5, 3), np.uint8)
    path = save_image(picture, tmp_path / "x.png")
    from PIL import Image

    assert np.asarray(Image.open(path)).shape == (4, 5, 3)
    with pytest.raises(InstkitError, match="format"):
        save_image(picture, tmp_path / "x.bmpx")

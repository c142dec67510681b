"""Mosaic and CopyAndPaste on compact rows: every output row sits on the pixels it came from.

Each source image encodes where its pixels came from (R = x, G = y, B = the sample's number),
so the output image says, pixel by pixel, which source pixel it shows. A row is right when the
pixels under its mask show its own source sample, at pixels its source mask covers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from instkit.masks import Masks
from instkit.sample import Sample
from instkit.synthetic import make_samples
from instkit.transforms import Augment
from instkit.transforms._albu import A


def _coordinate_samples(count: int, size: tuple[int, int]) -> list[Sample]:
    out = []
    for number, sample in enumerate(make_samples(count, seed=11, image_size=size), start=1):
        h, w = sample.image_size
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([xx, yy, np.full_like(xx, 40 * number)], axis=2).astype(np.uint8)
        out.append(Sample.from_array(image, sample.instances, number, sample.meta))
    return out


def _shown_sources(out: Sample, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = out.instances.masks[row].to_dense()[0]
    pixels = out.image[mask].astype(np.int64)
    return pixels[:, 0], pixels[:, 1], pixels[:, 2] // 40


def _check_rows(out: Sample, pool: list[Sample], min_share: float, exact: bool = False) -> int:
    """Rows whose pixels show their own sample, at pixels of their source mask (within 1 px of
    it where the item was resampled: a small mask's outline pixels sample either side of it)."""
    by_number = {s.image_id: s for s in pool}
    checked = 0
    for row in range(len(out.instances)):
        number = int(out.instances.extras["source_image_id"][row])
        ident = int(out.instances.extras["source_annotation_id"][row])
        source = by_number[number]
        src_row = int(np.flatnonzero(source.instances.ids == ident)[0])
        src_mask = source.instances.masks[src_row].to_dense()[0]
        if not exact:
            src_mask = cv2.dilate(src_mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        xs, ys, numbers = _shown_sources(out, row)
        if len(xs) < 20:
            continue
        mine = numbers == number
        assert mine.mean() >= min_share, (
            f"row {row} (sample {number}, annotation {ident}): only {mine.mean():.0%} of its "
            "pixels show its own sample")
        h, w = src_mask.shape
        inside = src_mask[np.clip(ys[mine], 0, h - 1), np.clip(xs[mine], 0, w - 1)]
        assert inside.mean() >= min_share, (
            f"row {row}: {inside.mean():.0%} of its pixels show pixels of its source mask")
        checked += 1
    return checked


@pytest.mark.parametrize("grid, fit", [((2, 2), "contain"), ((2, 2), "cover"), ((3, 3), "cover"),
                                       ((3, 3), "contain")])
def test_mosaic_rows_sit_on_their_pixels(grid: tuple[int, int], fit: str) -> None:
    pool = _coordinate_samples(6, (90, 120))
    # 2x2 contain: the 90x120 items fit their 120x120 cells unscaled (copied pixel for pixel)
    cell = (120, 120) if grid == (2, 2) else (70, 70)
    target = (200, 200) if grid == (2, 2) else (180, 180)
    exact = grid == (2, 2) and fit == "contain"
    mosaic = A.Mosaic(grid_yx=grid, target_size=target, cell_shape=cell, fit_mode=fit,
                      interpolation=0, p=1.0)
    augment = Augment([mosaic], seed=0).with_pool(pool)
    checked = 0
    for index, sample in enumerate(pool):
        out = augment(sample, seed=index)
        assert out.image_size == target
        numbers = set(out.instances.extras["source_image_id"].tolist())
        assert sample.image_id in numbers or not len(out.instances)
        assert out.meta.extra["mixed_in"]["offered"] > 0
        np.testing.assert_array_equal(out.instances.boxes, out.instances.masks.boxes())
        checked += _check_rows(out, pool, 0.99 if exact else 0.97, exact)
        # every primary row is either here or dropped with a reason
        kept = {int(i) for i, n in zip(out.instances.extras["source_annotation_id"],
                                       out.instances.extras["source_image_id"]) if n == index + 1}
        dropped = {d.annotation_id for d in out.meta.drops}
        assert kept | dropped == set(sample.instances.ids.tolist())
    assert checked > 30


def test_copy_and_paste_occludes_rows_below_and_hides_their_keypoints() -> None:
    pool = _coordinate_samples(6, (96, 128))
    paste = A.CopyAndPaste(scale_range=(0.8, 1.0), blend_mode="hard",
                           min_visibility_after_paste=0.7, p=1.0)
    augment = Augment([paste], seed=0, paste_donors=(3, 4)).with_pool(pool)
    checked, occluded, hidden = 0, 0, 0
    for index, sample in enumerate(pool):
        for seed in range(4):
            out = augment(sample, seed=100 * index + seed)
            inst = out.instances
            checked += _check_rows(out, pool, 0.97)
            occluded += sum(d.reason == "occluded" for d in out.meta.drops)
            # the masks of the rows below leave the pixels a pasted object covers
            pasted = np.flatnonzero(inst.extras["source_image_id"] != sample.image_id)
            own = np.flatnonzero(inst.extras["source_image_id"] == sample.image_id)
            if len(pasted) and len(own):
                dense = inst.masks.to_dense()
                last = pasted.max()
                for r in own:
                    assert not (dense[r] & dense[last]).any()
            if inst.keypoints is not None and len(inst):
                for r in range(len(inst)):
                    for x, y, v in inst.keypoints[r]:
                        if v <= 0:
                            continue
                        xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                        later = [p for p in pasted if p > r]
                        if later and 0 <= xi < out.image_size[1] and 0 <= yi < out.image_size[0]:
                            covered = any(inst.masks[p].to_dense()[0][yi, xi] for p in later)
                            hidden += int(covered)
    assert checked > 40 and occluded > 0
    assert hidden == 0  # no visible keypoint lies under an object pasted over its row


def test_paste_keeps_polygons_and_masks_stay_compact() -> None:
    pool = _coordinate_samples(4, (80, 100))
    augment = Augment([A.CopyAndPaste(scale_range=(0.5, 1.0), p=1.0)], seed=0,
                      paste_donors=(1, 2)).with_pool(pool)
    for index, sample in enumerate(pool):
        out = augment(sample, seed=index)
        assert isinstance(out.instances.masks, Masks)
        assert set(out.instances.masks.kinds) <= {"polygon", "bitmap"}


def test_keypoints_under_pasted_objects_become_invisible_on_pose_minicoco(pose_minicoco) -> None:
    from instkit.io.coco import read_coco

    pose = read_coco(pose_minicoco["train_json"], pose_minicoco["train_images"])
    pool = [pose[i] for i in range(len(pose))]
    augment = Augment([A.CopyAndPaste(scale_range=(0.5, 1.0), p=1.0)], seed=0,
                      paste_donors=(2, 3)).with_pool(pool)
    judged = hidden_by_paste = visible_under_paste = 0
    for index, sample in enumerate(pool):
        before = sample.instances.keypoints
        out = augment(sample, seed=index)
        inst = out.instances
        primary = np.flatnonzero(inst.extras["source_image_id"] == sample.image_id)
        pasted = np.flatnonzero(inst.extras["source_image_id"] != sample.image_id)
        if not len(pasted):
            continue
        cover = inst.masks[pasted].to_dense().any(axis=0)
        h, w = out.image_size
        for r in primary:
            src = int(np.flatnonzero(sample.instances.ids == inst.ids[r])[0])
            for k, (x, y, v) in enumerate(inst.keypoints[r]):
                xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                if before[src, k, 2] <= 0 or not (0 <= xi < w and 0 <= yi < h):
                    continue
                judged += 1
                if cover[yi, xi]:
                    visible_under_paste += int(v > 0)
                    hidden_by_paste += int(v == 0)
    assert judged > 150 and hidden_by_paste > 0
    assert visible_under_paste == 0

"""``packing.rle_crops`` (one batched decode per image) gives ``rle_crop``'s crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instkit.data.packing import rle_crops
from instkit.errors import InstkitError
from instkit.io.coco import read_coco
from instkit.masks import Masks, rle_crop


def _reference(counts: list[bytes], size: tuple[int, int]) -> list[tuple[np.ndarray, int, int]]:
    out = []
    for one in counts:
        crop = rle_crop(one, size)
        out.append((crop.bitmap.view(np.uint8), int(crop.offset[0]), int(crop.offset[1])))
    return out


def test_rle_crops_equal_rle_crop(tinycoco: dict[str, Path]) -> None:
    data = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    checked = 0
    for index in range(len(data)):
        inst = data[index].instances
        counts = inst.masks.rle_counts()
        empty = Masks.from_dense(np.zeros((1, *inst.image_size), bool)).rle_counts()
        counts = [*counts, *empty]  # crowd RLEs included; an empty mask at the end
        for (a, ya, xa), (b, yb, xb) in zip(rle_crops(counts, inst.image_size),
                                            _reference(counts, inst.image_size), strict=True):
            assert a.shape == b.shape and (a == b).all() and (ya, xa) == (yb, xb)
            checked += 1
    assert checked > 100


def test_rle_crops_refuses_what_rle_crop_refuses() -> None:
    with pytest.raises(InstkitError):
        rle_crop(b"\x01bad", (4, 4))
    with pytest.raises(InstkitError):
        rle_crops([b"0", b"\x01bad"], (4, 4))


def test_crops_equal_pycocotools_decode_for_images_of_several_heights() -> None:
    """Checked against pycocotools' own decode (not against rle_crop, which shares the code):
    random, empty and full masks from images of several sizes, decoded in one pass."""
    import pycocotools.mask as mask_utils

    from instkit.masks import rle_crops_by_height, tight_bitmap

    rng = np.random.default_rng(7)
    counts, heights, expected, denses = [], [], [], []
    for _ in range(200):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        kind = int(rng.integers(0, 5))
        dense = (np.zeros((h, w), np.uint8) if kind == 0 else np.ones((h, w), np.uint8)
                 if kind == 1 else (rng.random((h, w)) < rng.random() ** 3).astype(np.uint8))
        if kind == 4:  # a rectangle anywhere (its runs stay inside their columns or cross)
            dense = np.zeros((h, w), np.uint8)
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            dense[y0 : int(rng.integers(y0, h)) + 1, x0 : int(rng.integers(x0, w)) + 1] = 1
        rle = mask_utils.encode(np.asfortranarray(dense))
        counts.append(rle["counts"])
        denses.append(dense)
        heights.append(h)
        expected.append(tight_bitmap(mask_utils.decode(rle)))
    got = rle_crops_by_height(counts, np.asarray(heights))
    for a, b in zip(got, expected, strict=True):
        assert a.offset == b.offset and a.bitmap.dtype == b.bitmap.dtype
        np.testing.assert_array_equal(a.bitmap, b.bitmap)
    # the check fails on a wrong mask: one string replaced by its mask's complement
    counts[5] = mask_utils.encode(np.asfortranarray(1 - denses[5]))["counts"]
    wrong = rle_crops_by_height(counts, np.asarray(heights))
    assert any(not np.array_equal(a.bitmap, b.bitmap) or a.offset != b.offset
               for a, b in zip(wrong, expected, strict=True))


def test_a_refused_mask_in_a_batch_names_its_image() -> None:
    from instkit import Instances, Sample
    from instkit.data import Collator
    from instkit.masks import Masks, RLEMask

    def sample(counts: bytes, image_id: int) -> Sample:
        inst = Instances(boxes=np.array([[0, 0, 2, 2]], np.float32), labels=np.array([0]),
                         masks=Masks([RLEMask(counts)], (4, 4)), image_size=(4, 4))
        return Sample.from_array(np.zeros((4, 4, 3), np.uint8), inst, image_id=image_id)

    good = sample(b"02208", 3)
    with pytest.raises(InstkitError, match=r"image_id=7, sample index 1"):
        Collator("maskrcnn")([good, sample(b"\x01bad", 7)])
    assert Collator("maskrcnn")([good, good]).targets[1]["masks"].sum() == 4

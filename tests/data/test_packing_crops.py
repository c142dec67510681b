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

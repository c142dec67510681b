"""instkit's faster HueSaturationValue gives albumentationsx's own draws and pixels."""

from __future__ import annotations

import numpy as np

from instkit.transforms._albu import A, HueSaturationValue

RANGES = {"hue_shift_range": (-40, 40), "sat_shift_range": (-80, 80),
          "val_shift_range": (-60, 60), "p": 1.0}


def _images(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    images = []
    for k in range(count):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if k % 4 == 0:  # gray pixels: saturation 0, which albumentationsx keeps 0
            image[..., 1] = image[..., 2] = image[..., 0]
        images.append(image)
    return images


def _mismatches(ours: object, theirs: object, images: list[np.ndarray]) -> int:
    bad = 0
    for seed, image in enumerate(images):
        a = A.Compose([theirs], seed=seed)(image=image)["image"]
        b = A.Compose([ours], seed=seed)(image=image)["image"]
        bad += not np.array_equal(a, b)
    return bad


def test_hsv_equals_albumentationsx_pixels() -> None:
    images = _images(np.random.default_rng(5), 80)
    assert _mismatches(HueSaturationValue(**RANGES), A.HueSaturationValue(**RANGES), images) == 0
    # the comparison sees a difference: other draws give other pixels
    other = {**RANGES, "hue_shift_range": (-10, 10)}
    assert _mismatches(HueSaturationValue(**other), A.HueSaturationValue(**RANGES), images) > 40

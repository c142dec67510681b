"""Ready-made ``Augment`` pipelines (normalisation happens later, at collate).

- ``train_default``: the task spec's default training augmentations: random horizontal flip
  (p=0.5), photometric distortion, resize to ``size``.
- ``yolo_seg``: a YOLO-seg-style pipeline: Mosaic 2x2 at ``size``, Affine, Perspective,
  CopyAndPaste, horizontal flip, HSV and brightness/contrast. Bind a pool (``pool=`` or
  ``.with_pool(dataset)``) for the Mosaic neighbours and CopyAndPaste donors; without one, Mosaic
  tiles the sample with itself and nothing is pasted.
- ``large_scale_jitter`` (``"lsj"``): the Simple Copy-Paste recipe: scale 0.1-2.0, pad and crop
  to ``size``, flip, CopyAndPaste from the pool.
- ``evaluation``: resize only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from instkit.sample import Sample
from instkit.transforms._albu import A, HueSaturationValue, Perspective
from instkit.transforms.augment import Augment


def _photometric() -> list[object]:
    return [
        A.RandomBrightnessContrast(brightness_range=(-0.125, 0.125), contrast_range=(-0.5, 0.5),
                                   p=0.5),
        HueSaturationValue(hue_shift_range=(-18, 18), sat_shift_range=(-30, 30),
                             val_shift_range=(-20, 20), p=0.5),
    ]


def train_default(size: tuple[int, int] = (800, 800), seed: int | None = None) -> Augment:
    """Horizontal flip p=0.5, photometric distortion, resize to ``size`` (H, W)."""
    h, w = size
    return Augment(
        [A.HorizontalFlip(p=0.5), *_photometric(), A.Resize(height=h, width=w, p=1.0)],
        seed=seed, stage="train_default",
    )


def yolo_seg(
    pool: Sequence[Sample] | None = None, size: tuple[int, int] = (640, 640),
    seed: int | None = None, perspective: bool = False,
) -> Augment:
    """Mosaic 2x2, Affine, Perspective, CopyAndPaste, flip, HSV, brightness/contrast.

    Mosaic fits each image into its ``size`` cell without cropping it (``contain``): objects
    keep their scale, as in Ultralytics' mosaic, and an image already of the cell's size is
    copied, not resampled. Perspective is off by default, as in Ultralytics' recipe
    (``perspective=0.0``); ``perspective=True`` adds it (p=0.3). HSV is instkit's
    ``HueSaturationValue`` (albumentationsx's draws and pixels, one lookup table).
    """
    transforms = [
        A.Mosaic(grid_yx=(2, 2), target_size=size, cell_shape=size, fit_mode="contain", p=1.0),
        A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), shear=(-2, 2),
                 translate_percent=(-0.05, 0.05), p=0.5),
        *([Perspective(scale=(0.02, 0.05), keep_size=True, p=0.3)] if perspective else []),
        A.CopyAndPaste(scale_range=(0.4, 1.0), blend_mode="gaussian",
                       blend_sigma_range=(1.0, 2.0), min_visibility_after_paste=0.1, p=0.7),
        A.HorizontalFlip(p=0.5),
        HueSaturationValue(hue_shift_range=(-15, 15), sat_shift_range=(-40, 40),
                             val_shift_range=(-25, 25), p=1.0),
        A.RandomBrightnessContrast(brightness_range=(-0.2, 0.2), contrast_range=(-0.2, 0.2),
                                   p=0.5),
    ]
    augment = Augment(transforms, min_area=8.0, min_visibility=0.1, seed=seed,
                      stage="yolo_seg")
    return augment.with_pool(pool) if pool is not None else augment


def large_scale_jitter(
    pool: Sequence[Sample] | None = None, size: tuple[int, int] = (640, 640),
    seed: int | None = None, scale: tuple[float, float] = (0.1, 2.0),
) -> Augment:
    """The Simple Copy-Paste recipe (Ghiasi et al. 2021): large-scale jitter — resize by a
    factor in ``scale``, pad to at least ``size``, random crop to ``size`` — a horizontal flip,
    then CopyAndPaste of objects from the pool (bound with ``pool=`` / ``with_pool``)."""
    h, w = size
    longest = max(h, w)
    transforms = [
        A.LongestMaxSize(max_size=longest, p=1.0),
        A.RandomScale(scale_range=(scale[0] - 1.0, scale[1] - 1.0), p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, position="top_left", p=1.0),
        A.RandomCrop(height=h, width=w, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.CopyAndPaste(scale_range=(0.1, 1.0), blend_mode="gaussian",
                       blend_sigma_range=(1.0, 2.0), min_visibility_after_paste=0.1, p=1.0),
    ]
    augment = Augment(transforms, min_area=4.0, seed=seed, stage="large_scale_jitter",
                      paste_donors=(1, 8))
    return augment.with_pool(pool) if pool is not None else augment


def evaluation(size: tuple[int, int] = (800, 800)) -> Augment:
    """Resize to ``size`` (H, W) only; deterministic."""
    h, w = size
    return Augment([A.Resize(height=h, width=w, p=1.0)], seed=0, stage="evaluation")


PRESETS: dict[str, Callable[..., Augment]] = {
    "train": train_default,
    "yolo-seg": yolo_seg,
    "lsj": large_scale_jitter,
    "eval": evaluation,
}

__all__ = ["PRESETS", "evaluation", "large_scale_jitter", "train_default", "yolo_seg"]

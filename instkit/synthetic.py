"""A synthetic instance-segmentation dataset, reproducible by seed.

Shapes of six classes on textured backgrounds, drawn in depth order so that later shapes occlude
earlier ones: circles, squares, triangles (with three named keypoints), rings (a mask with a
hole), pairs (one object in two separate parts) and stars, plus crowd regions (a cluster of dots
annotated once, ``iscrowd=1``, as uncompressed RLE the way COCO stores crowds). Unoccluded
polygonal objects keep polygon masks; occluded ones, rings and crowds are stored as bitmaps or
RLE, so every storage form appears. Category ids are gapped (as COCO's are).

    samples = make_samples(num_images=8, seed=0)         # in memory
    annotation_file = write_dataset("out/", num_images=8)  # COCO JSON + PNG images
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from instkit.categories import Categories, Category
from instkit.instances import Instances
from instkit.masks import MaskItem, Masks, PolygonMask, RLEMask, tight_bitmap
from instkit.sample import Sample, SampleMeta

CLASS_NAMES = ("circle", "square", "triangle", "ring", "pair", "star")
_CATEGORY_IDS = (1, 3, 4, 7, 8, 10)
TRIANGLE_KEYPOINTS = ("apex", "left_corner", "right_corner")
#: object radius as a share of the image's shorter side
RADIUS_RANGE = (0.06, 0.16)


def _check_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is None:
        return CLASS_NAMES
    chosen = tuple(classes)
    unknown = [name for name in chosen if name not in CLASS_NAMES]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"classes must be distinct names among {CLASS_NAMES}, got {chosen}")
    return chosen


def categories(classes: Sequence[str] | None = None) -> Categories:
    """The synthetic category table (gapped ids; triangles carry keypoints); ``classes``: a
    subset of ``CLASS_NAMES`` (each keeps its id)."""
    chosen = _check_classes(classes)
    return Categories(
        Category(
            id=cat_id,
            name=name,
            supercategory="shape",
            keypoints=TRIANGLE_KEYPOINTS if name == "triangle" else (),
            skeleton=((1, 2), (2, 3), (3, 1)) if name == "triangle" else (),
        )
        for cat_id, name in zip(_CATEGORY_IDS, CLASS_NAMES)
        if name in chosen
    )


def _regular_polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> np.ndarray:
    t = angle + np.arange(sides) * 2 * np.pi / sides
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _star(cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    t = angle + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _rasterise(parts: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    h, w = size
    rles = mask_utils.frPyObjects([p.reshape(-1).astype(np.float64) for p in parts], h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _shape(
    name: str, rng: np.random.Generator, size: tuple[int, int],
    radius_range: tuple[float, float] = RADIUS_RANGE,
) -> tuple[list[np.ndarray] | None, np.ndarray, np.ndarray | None]:
    """Polygon parts (None for rings), the mask, and keypoints (triangles only)."""
    h, w = size
    scale = min(h, w)
    radius = float(rng.uniform(*radius_range) * scale)
    cx = float(rng.uniform(radius * 0.6, w - radius * 0.6))
    cy = float(rng.uniform(radius * 0.6, h - radius * 0.6))
    angle = float(rng.uniform(0, 2 * np.pi))
    keypoints = None
    if name == "circle":
        parts = [_regular_polygon(cx, cy, radius, 32, angle)]
    elif name == "square":
        parts = [_regular_polygon(cx, cy, radius, 4, angle)]
    elif name == "triangle":
        apex = np.array([cx + rng.uniform(-0.3, 0.3) * radius, cy - radius])
        left = np.array([cx - radius, cy + radius * 0.8])
        right = np.array([cx + radius, cy + radius * 0.8])
        parts = [np.stack([apex, right, left])]
        keypoints = np.stack([apex, left, right])
    elif name == "star":
        parts = [_star(cx, cy, radius * 1.2, angle)]
    elif name == "pair":
        offset = radius * 1.3
        dx, dy = offset * np.cos(angle), offset * np.sin(angle)
        small = radius * 0.55
        parts = [
            _regular_polygon(cx - dx, cy - dy, small, 6, angle),
            _regular_polygon(cx + dx, cy + dy, small, 6, angle),
        ]
    elif name == "ring":
        outer = _rasterise([_regular_polygon(cx, cy, radius, 32, angle)], size)
        inner = _rasterise([_regular_polygon(cx, cy, radius * 0.5, 24, angle)], size)
        return None, outer & ~inner, None
    else:  # pragma: no cover - names come from CLASS_NAMES
        raise ValueError(name)
    parts = _clip_to_image(parts, size)
    if not parts:
        return None, np.zeros(size, dtype=bool), None
    return parts, _rasterise(parts, size), keypoints


def _clip_to_image(parts: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """Polygon parts cut to the image rectangle, as annotation tools store them."""
    from shapely.geometry import Polygon, box

    frame = box(0, 0, size[1], size[0])
    clipped = []
    for part in parts:
        shape = Polygon(part)
        if frame.contains(shape):
            clipped.append(part)
            continue
        inside = shape.intersection(frame)
        for piece in getattr(inside, "geoms", [inside]):
            if isinstance(piece, Polygon) and piece.area > 0:
                clipped.append(np.asarray(piece.exterior.coords, dtype=np.float64)[:-1])
    return clipped


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    base = rng.integers(40, 200, size=3)
    gy, gx = np.mgrid[0:h, 0:w]
    slope = rng.uniform(-0.3, 0.3, size=(2, 3))
    image = base + gx[..., None] * slope[0] * 100 / w + gy[..., None] * slope[1] * 100 / h
    image = image + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    color = rng.integers(0, 256, size=3)
    shade = rng.normal(0, 12, size=(int(mask.sum()), 1))
    image[mask] = np.clip(color + shade, 0, 255).astype(np.uint8)


def make_sample(
    rng: np.random.Generator,
    image_id: int,
    *,
    image_size: tuple[int, int] = (256, 256),
    max_instances: int = 8,
    crowd_probability: float = 0.25,
    first_annotation_id: int = 1,
    table: Categories | None = None,
    classes: Sequence[str] | None = None,
    radius_range: tuple[float, float] = RADIUS_RANGE,
) -> Sample:
    """One synthetic sample (image in memory); ``classes``: draw only these shapes (the
    crowds are labelled as the first); ``radius_range``: object radius as a share of the
    shorter side."""
    names = _check_classes(classes)
    table = table or categories(names)
    h, w = image_size
    image = _background(rng, image_size)
    count = int(rng.integers(1, max_instances + 1))
    drawn: list[tuple[str, list[np.ndarray] | None, np.ndarray, np.ndarray | None]] = []
    for _ in range(count):
        name = names[int(rng.integers(len(names)))]
        parts, mask, keypoints = _shape(name, rng, image_size, radius_range)
        if not mask.any():
            continue
        _paint(image, mask, rng)
        for index, (other_name, other_parts, other_mask, other_kp) in enumerate(drawn):
            drawn[index] = (other_name, other_parts, other_mask & ~mask, other_kp)
        drawn.append((name, parts, mask, keypoints))

    items: list[MaskItem] = []
    labels, crowd, keypoint_rows = [], [], []
    num_keypoints = table.num_keypoints
    for name, parts, mask, keypoints in drawn:
        if mask.sum() < 16:  # hidden behind later shapes: not annotated
            continue
        occluded = parts is not None and not np.array_equal(mask, _rasterise(parts, image_size))
        if parts is not None and not occluded:
            items.append(PolygonMask(tuple(p.reshape(-1).astype(np.float64) for p in parts)))
        else:
            items.append(tight_bitmap(mask))
        labels.append(names.index(name))
        crowd.append(False)
        row = np.zeros((num_keypoints, 3), dtype=np.float32)
        if keypoints is not None:
            for k, (x, y) in enumerate(keypoints):
                xi, yi = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
                inside = 0 <= x < w and 0 <= y < h
                visible = inside and _near(mask, yi, xi)
                if inside:  # COCO writes unlabelled keypoints as (0, 0, 0)
                    row[k] = (x, y, 2 if visible else 1)
        keypoint_rows.append(row)

    if rng.random() < crowd_probability:
        crowd_mask = np.zeros(image_size, dtype=np.uint8)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        for _ in range(int(rng.integers(12, 30))):
            x = int(cx + rng.normal(0, 0.06 * w))
            y = int(cy + rng.normal(0, 0.06 * h))
            cv2.circle(crowd_mask, (x, y), int(rng.integers(2, 5)), 1, -1)
        crowd_bool = crowd_mask.astype(bool)
        if crowd_bool.sum() >= 16:
            _paint(image, crowd_bool, rng)
            rle = mask_utils.encode(np.asfortranarray(crowd_mask))
            items.append(RLEMask(bytes(rle["counts"]), uncompressed=True))
            labels.append(names.index("circle") if "circle" in names else 0)
            crowd.append(True)
            keypoint_rows.append(np.zeros((num_keypoints, 3), dtype=np.float32))

    masks = Masks(items, image_size)
    n = len(items)
    instances = Instances(
        image_size=image_size,
        boxes=masks.boxes() if n else np.zeros((0, 4), np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        masks=masks,
        keypoints=np.stack(keypoint_rows) if n else np.zeros((0, num_keypoints, 3), np.float32),
        iscrowd=np.asarray(crowd, dtype=bool),
        ids=np.arange(first_annotation_id, first_annotation_id + n, dtype=np.int64),
    )
    meta = SampleMeta(
        source="instkit.synthetic",
        file_name=f"images/{image_id:06d}.png",
        original_size=image_size,
        categories=table,
    )
    return Sample.from_array(image, instances, image_id, meta)


def _near(mask: np.ndarray, y: int, x: int, radius: int = 2) -> bool:
    return bool(mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].any())


def make_samples(
    num_images: int = 16,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (256, 256),
    max_instances: int = 8,
    crowd_probability: float = 0.25,
    classes: Sequence[str] | None = None,
    radius_range: tuple[float, float] = RADIUS_RANGE,
) -> list[Sample]:
    """``num_images`` synthetic samples; the same seed gives the same samples, pixel for pixel.
    ``classes`` and ``radius_range`` as in ``make_sample``."""
    rng = np.random.default_rng(seed)
    table = categories(classes)
    samples = []
    next_id = 1
    for index in range(num_images):
        sample = make_sample(
            rng, index + 1, image_size=image_size, max_instances=max_instances,
            crowd_probability=crowd_probability, first_annotation_id=next_id, table=table,
            classes=classes, radius_range=radius_range,
        )
        next_id += len(sample.instances)
        samples.append(sample)
    return samples


def write_dataset(
    out_dir: str | os.PathLike[str],
    num_images: int = 16,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (256, 256),
    max_instances: int = 8,
    crowd_probability: float = 0.25,
    classes: Sequence[str] | None = None,
    radius_range: tuple[float, float] = RADIUS_RANGE,
) -> Path:
    """Write a synthetic COCO dataset: ``out_dir/annotations.json`` and ``out_dir/images/``.

    File names are relative to ``out_dir`` (``images/000001.png``), so ``read_coco(path)``
    finds the images without an ``image_root``. Returns the annotation file's path.
    """
    from instkit.io.coco import write_coco

    out = Path(out_dir)
    samples = make_samples(num_images, seed=seed, image_size=image_size,
                           max_instances=max_instances, crowd_probability=crowd_probability,
                           classes=classes, radius_range=radius_range)
    return write_coco(
        samples, out / "annotations.json", categories(classes), images_dir=out,
        info={"description": f"instkit synthetic shapes, seed {seed}"},
    )


__all__ = ["CLASS_NAMES", "categories", "make_sample", "make_samples",
           "write_dataset"]

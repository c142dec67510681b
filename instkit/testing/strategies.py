"""Hypothesis strategies for instance-segmentation data.

Use them in your own property tests::

    from hypothesis import given
    from instkit.testing import strategies as st_inst

    @given(st_inst.samples(max_instances=5))
    def test_my_pipeline_keeps_rows(sample): ...

Every strategy draws small images by default (``max_side=64``) so that properties run fast.
Polygons are kept inside the image unless ``allow_outside=True``; ``degenerate=True`` adds
zero-area polygons (collinear or repeated points), which rasterise to empty or sliver masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from instkit.errors import require

require("hypothesis", "testing")

from hypothesis import strategies as st  # noqa: E402

from instkit.categories import Categories, Category  # noqa: E402
from instkit.instances import Instances  # noqa: E402
from instkit.masks import Masks, PolygonMask, RLEMask, tight_bitmap  # noqa: E402
from instkit.sample import Sample, SampleMeta  # noqa: E402

ImageSize = tuple[int, int]


@st.composite
def image_sizes(draw: Any, min_side: int = 8, max_side: int = 64) -> ImageSize:
    """``(H, W)`` with both sides in ``[min_side, max_side]``."""
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    return (h, w)


@st.composite
def polygon_parts(
    draw: Any, image_size: ImageSize, *, degenerate: bool = False, allow_outside: bool = False
) -> np.ndarray:
    """One flat polygon part ``[x0, y0, ...]`` (float64, >= 3 points)."""
    h, w = image_size
    if degenerate and draw(st.booleans()):
        x = draw(st.floats(0, w, allow_nan=False))
        y = draw(st.floats(0, h, allow_nan=False))
        if draw(st.booleans()):  # repeated point
            return np.array([x, y] * 3, dtype=np.float64)
        dx, dy = draw(st.floats(-5, 5)), draw(st.floats(-5, 5))  # collinear
        return np.array([x, y, x + dx, y + dy, x + 2 * dx, y + 2 * dy], dtype=np.float64)
    margin = 0.25 * max(h, w) if allow_outside else 0.0
    count = draw(st.integers(3, 10))
    # A star-shaped polygon around a centre never self-intersects.
    cx = draw(st.floats(0, w, allow_nan=False))
    cy = draw(st.floats(0, h, allow_nan=False))
    angles = np.sort(np.asarray(draw(st.lists(st.floats(0, 2 * np.pi, exclude_max=True),
                                              min_size=count, max_size=count, unique=True))))
    radii = np.asarray(draw(st.lists(st.floats(0.5, max(1.0, max(h, w) / 2)),
                                     min_size=count, max_size=count)))
    xs = np.clip(cx + radii * np.cos(angles), -margin, w + margin)
    ys = np.clip(cy + radii * np.sin(angles), -margin, h + margin)
    return np.stack([xs, ys], axis=1).reshape(-1).astype(np.float64)


@st.composite
def polygons(
    draw: Any, image_size: ImageSize, *, max_parts: int = 3, degenerate: bool = False,
    allow_outside: bool = False,
) -> PolygonMask:
    """A (possibly multi-part) polygon mask."""
    count = draw(st.integers(1, max_parts))
    parts = tuple(
        draw(polygon_parts(image_size, degenerate=degenerate, allow_outside=allow_outside))
        for _ in range(count)
    )
    return PolygonMask(parts)


@st.composite
def dense_masks(draw: Any, image_size: ImageSize, *, allow_empty: bool = False) -> np.ndarray:
    """One ``(H, W)`` bool mask: a union of random rectangles, or random noise blobs."""
    h, w = image_size
    mask = np.zeros((h, w), dtype=bool)
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            y0 = draw(st.integers(0, h - 1))
            x0 = draw(st.integers(0, w - 1))
            y1 = draw(st.integers(y0 + 1, h))
            x1 = draw(st.integers(x0 + 1, w))
            mask[y0:y1, x0:x1] = True
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        density = draw(st.floats(0.05, 0.9))
        mask = np.random.default_rng(seed).random((h, w)) < density
    if not allow_empty and not mask.any():
        mask[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
    if allow_empty and draw(st.integers(0, 9)) == 0:
        mask[:] = False
    return mask


@st.composite
def rles(draw: Any, image_size: ImageSize, *, compressed: bool | None = None) -> dict[str, Any]:
    """A COCO RLE dict of a random mask; ``counts`` as str, bytes or (uncompressed) a list."""
    import pycocotools.mask as mask_utils

    from instkit.masks import decode_rle_counts

    mask = draw(dense_masks(image_size, allow_empty=True))
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    form = draw(st.sampled_from(["str", "bytes", "list"])) if compressed is None else (
        draw(st.sampled_from(["str", "bytes"])) if compressed else "list")
    size = [int(image_size[0]), int(image_size[1])]
    if form == "list":
        return {"size": size, "counts": decode_rle_counts(encoded["counts"]).tolist()}
    counts = bytes(encoded["counts"])
    return {"size": size, "counts": counts.decode("ascii") if form == "str" else counts}


@st.composite
def mask_items(draw: Any, image_size: ImageSize, *, allow_empty: bool = False) -> Any:
    kind = draw(st.sampled_from(["polygon", "rle", "bitmap"]))
    if kind == "polygon":
        return draw(polygons(image_size))
    mask = draw(dense_masks(image_size, allow_empty=allow_empty))
    if kind == "bitmap":
        return tight_bitmap(mask)
    import pycocotools.mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return RLEMask(bytes(encoded["counts"]), uncompressed=draw(st.booleans()))


@st.composite
def masks(
    draw: Any, image_size: ImageSize | None = None, *, min_size: int = 0, max_size: int = 6,
    allow_empty: bool = False,
) -> Masks:
    """A ``Masks`` column mixing polygon, RLE and bitmap forms."""
    size = image_size or draw(image_sizes())
    items = draw(st.lists(mask_items(size, allow_empty=allow_empty),
                          min_size=min_size, max_size=max_size))
    return Masks(items, size)


def category_table(num_classes: int = 3, num_keypoints: int = 0) -> Categories:
    """A small table with gapped ids; with keypoints, names carry left/right pairs."""
    names = [f"class{i}" for i in range(num_classes)]
    keypoints: tuple[str, ...] = ()
    if num_keypoints:
        base = ["nose", "left_eye", "right_eye", "left_hand", "right_hand", "tail"]
        keypoints = tuple((base * (num_keypoints // len(base) + 1))[:num_keypoints])
        keypoints = tuple(f"{k}{i // len(base) or ''}" for i, k in enumerate(keypoints))
    return Categories(
        Category(id=2 * i + 1, name=name, keypoints=keypoints) for i, name in enumerate(names)
    )


@st.composite
def instances(
    draw: Any,
    image_size: ImageSize | None = None,
    *,
    min_size: int = 0,
    max_size: int = 6,
    num_classes: int = 3,
    num_keypoints: int | None = None,
    with_masks: bool = True,
    with_scores: bool | None = None,
    allow_empty_masks: bool = False,
) -> Instances:
    """``Instances`` whose boxes are their masks' tight boxes, with unique ids.

    ``num_keypoints=None`` draws whether there are keypoints (0 or 3 per instance).
    """
    size = image_size or draw(image_sizes())
    h, w = size
    column = draw(masks(size, min_size=min_size, max_size=max_size,
                        allow_empty=allow_empty_masks)) if with_masks else None
    if column is not None:
        n = len(column)
        boxes = column.boxes()
    else:
        n = draw(st.integers(min_size, max_size))
        corners = []
        for _ in range(n):
            x0 = draw(st.floats(0, w - 1, allow_nan=False))
            y0 = draw(st.floats(0, h - 1, allow_nan=False))
            corners.append([x0, y0, draw(st.floats(x0 + 0.5, w)), draw(st.floats(y0 + 0.5, h))])
        boxes = np.asarray(corners, dtype=np.float32).reshape(-1, 4)
    k = draw(st.sampled_from([0, 3])) if num_keypoints is None else num_keypoints
    keypoints = None
    if k:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        keypoints = np.zeros((n, k, 3), dtype=np.float32)
        keypoints[:, :, 0] = rng.uniform(0, w, size=(n, k))
        keypoints[:, :, 1] = rng.uniform(0, h, size=(n, k))
        keypoints[:, :, 2] = rng.integers(0, 3, size=(n, k))
        keypoints[keypoints[:, :, 2] == 0, :2] = 0
    ids = draw(st.lists(st.integers(1, 2**62), min_size=n, max_size=n, unique=True))
    scores = None
    if with_scores if with_scores is not None else draw(st.booleans()):
        scores = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
    return Instances(
        image_size=size,
        boxes=boxes,
        labels=draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)),
        masks=column,
        keypoints=keypoints,
        iscrowd=draw(st.lists(st.booleans(), min_size=n, max_size=n)) if n else [],
        ids=np.asarray(ids, dtype=np.int64),
        scores=scores,
    )


@st.composite
def samples(
    draw: Any,
    *,
    min_side: int = 16,
    max_side: int = 64,
    min_instances: int = 0,
    max_instances: int = 6,
    num_classes: int = 3,
    num_keypoints: int | None = 0,
    with_masks: bool = True,
) -> Sample:
    """A ``Sample`` with an in-memory RGB image whose instance pixels are painted."""
    size = draw(image_sizes(min_side, max_side))
    inst = draw(instances(size, min_size=min_instances, max_size=max_instances,
                          num_classes=num_classes, num_keypoints=num_keypoints,
                          with_masks=with_masks, with_scores=False))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    if inst.masks is not None and len(inst):
        for i, mask in enumerate(inst.masks.to_dense()):
            image[mask] = (37 * (i + 1)) % 256
    table = category_table(num_classes, inst.keypoints.shape[1] if inst.keypoints is not None else 0)
    meta = SampleMeta(source="hypothesis", original_size=size, categories=table)
    return Sample.from_array(image, inst, draw(st.integers(1, 2**31)), meta)


_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False,
                                                                         allow_infinity=False),
    st.text(max_size=8),
)


@st.composite
def coco_documents(
    draw: Any, *, max_images: int = 4, max_annotations: int = 8, valid: bool = True
) -> dict[str, Any]:
    """A COCO document (a dict ready for ``json.dump``).

    ``valid=True`` draws documents that ``read_coco`` must accept (no empty masks): polygons, compressed and
    uncompressed RLE, crowds, gapped category ids, images without annotations, 64-bit ids.
    ``valid=False`` mutates one such document at a random place into arbitrary JSON values,
    for fuzzing readers and validators.
    """
    num_classes = draw(st.integers(1, 4))
    categories = [{"id": 3 * i + 1, "name": f"c{i}", "supercategory": "thing"}
                  for i in range(num_classes)]
    images = []
    for index in range(draw(st.integers(1, max_images))):
        h, w = draw(image_sizes(8, 48))
        images.append({"id": index + 1, "file_name": f"{index + 1:06d}.png", "width": w,
                       "height": h})
    annotations = []
    ann_ids = draw(st.lists(st.integers(1, 2**62), min_size=max_annotations,
                            max_size=max_annotations, unique=True))
    for k in range(draw(st.integers(0, max_annotations))):
        image = draw(st.sampled_from(images))
        size = (image["height"], image["width"])
        crowd = draw(st.integers(0, 4)) == 0
        if crowd or draw(st.booleans()):
            segmentation: Any = draw(rles(size))
            if isinstance(segmentation["counts"], bytes):
                segmentation["counts"] = segmentation["counts"].decode("ascii")
            column = Masks.from_rles([segmentation], size)
        else:
            polygon = draw(polygons(size))
            segmentation = [part.tolist() for part in polygon.parts]
            column = Masks([polygon], size)
        if column.area()[0] == 0:
            continue  # an empty mask breaks the mask-empty rule: not a valid document
        x0, y0, x1, y1 = column.boxes()[0].tolist()
        annotations.append({
            "id": ann_ids[k], "image_id": image["id"],
            "category_id": draw(st.sampled_from(categories))["id"],
            "segmentation": segmentation, "area": float(column.area()[0]),
            "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(crowd),
        })
    document: dict[str, Any] = {"images": images, "annotations": annotations,
                                "categories": categories}
    if valid:
        return document
    return draw(_mutated(document))


@st.composite
def _mutated(draw: Any, document: Any) -> Any:
    """Replace one randomly chosen node of a JSON document with an arbitrary JSON value."""
    junk = st.recursive(_JSON_SCALARS, lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ), max_leaves=8)
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))

    walk(document, ())
    path = draw(st.sampled_from(paths))
    replacement = draw(junk)
    if not path:
        return replacement
    node = document
    for step in path[:-1]:
        node = node[step]
    if isinstance(node, dict) and draw(st.booleans()):
        del node[path[-1]]
    else:
        node[path[-1]] = replacement
    return document


__all__ = [
    "category_table",
    "coco_documents",
    "dense_masks",
    "image_sizes",
    "instances",
    "mask_items",
    "masks",
    "polygon_parts",
    "polygons",
    "rles",
    "samples",
]

"""The compact geometry path against albumentationsx's own dense output, transform by transform.

``Augment(..., compact=False)`` runs every geometric transform through albumentationsx on dense
``(H, W, N)`` masks with the same draws as the compact path (same unit seeds), so the two can be
compared row by row. Bitmaps (RLE and bitmap rows) are resampled at the pixels albumentationsx
samples: IoU >= 0.98 for masks of at least 64 px. Polygons are mapped exactly (with the offset of
OpenCV's nearest resize, see ``geometry._mask_matrix``), while the dense path quantises twice
(rasterise, then nearest-resample), so a polygon's pixels may differ from the dense mask only
along its outline: every differing pixel lies within 1 px of the dense mask's boundary, and fewer
pixels differ than 0.8x the outline's length (on tinycoco the median polygon IoU is 0.97-1.0 by
transform; docs/benchmarks.md has the table).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instkit.instances import Instances
from instkit.io.coco import read_coco
from instkit.masks import Masks, PolygonMask
from instkit.sample import Sample
from instkit.testing.strategies import samples as sample_strategy
from instkit.transforms import Augment
from instkit.transforms._albu import A, Perspective
from instkit.transforms.augment import _kind
from instkit.transforms.geometry import Homography, clip_part, warp_bitmap

COVERED = {
    "HorizontalFlip": lambda: A.HorizontalFlip(p=1.0),
    "VerticalFlip": lambda: A.VerticalFlip(p=1.0),
    "Transpose": lambda: A.Transpose(p=1.0),
    "RandomRotate90": lambda: A.RandomRotate90(p=1.0),
    "Rotate": lambda: A.Rotate(angle_range=(-30, 30), p=1.0),
    "Affine": lambda: A.Affine(rotate=(-20, 20), scale=(0.8, 1.2), shear=(-6, 6),
                               translate_percent=(-0.1, 0.1), p=1.0),
    "ShiftScaleRotate": lambda: A.ShiftScaleRotate(p=1.0),
    "Perspective": lambda: Perspective(scale=(0.04, 0.08), p=1.0),
    "Resize": lambda: A.Resize(300, 410),
    "LongestMaxSize": lambda: A.LongestMaxSize(500),
    "SmallestMaxSize": lambda: A.SmallestMaxSize(300),
    "PadIfNeeded": lambda: A.PadIfNeeded(720, 720),
    "RandomCrop": lambda: A.RandomCrop(240, 300),
    "CenterCrop": lambda: A.CenterCrop(240, 300),
    "RandomResizedCrop": lambda: A.RandomResizedCrop((256, 256)),
    "RandomSizedBBoxSafeCrop": lambda: A.RandomSizedBBoxSafeCrop(256, 256),
    "RandomScale": lambda: A.RandomScale((-0.5, 0.6), p=1.0),
}


def _near_boundary(reference: np.ndarray) -> np.ndarray:
    """Pixels within 1 px (8-neighbourhood) of a mask's boundary."""
    ref = reference.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(ref, kernel) != cv2.erode(ref, kernel)
    return cv2.dilate(edge.astype(np.uint8), kernel).astype(bool)


def _compare(compact: Sample, dense: Sample, source: Sample, name: str) -> int:
    """Row-by-row agreement; returns the number of masks compared."""
    a, b = compact.instances, dense.instances
    assert np.array_equal(compact.image, dense.image), f"{name}: images differ"
    kinds = {int(i): kind for i, kind in zip(source.instances.ids, source.instances.masks.kinds)}
    by_id = {int(i): k for k, i in enumerate(b.ids)}
    compared = 0
    da, db = a.masks.to_dense(), b.masks.to_dense()
    for k, ident in enumerate(a.ids):
        j = by_id.get(int(ident))
        if j is None:  # kept by one path only: it must be a sliver at the frame's edge
            assert da[k].sum() < 64, f"{name}: row {ident} ({da[k].sum()} px) dropped densely"
            continue
        got, ref = da[k], db[j]
        union = (got | ref).sum()
        iou = (got & ref).sum() / union if union else 1.0
        if kinds[int(ident)] == "polygon":
            stray = (got ^ ref) & ~_near_boundary(ref) & ~_near_boundary(got)
            assert not stray.any(), (f"{name}: polygon row {ident}: {int(stray.sum())} px differ "
                                     "away from its outline")
            ref8 = ref.astype(np.uint8)
            outline = int((ref8 - cv2.erode(ref8, np.ones((3, 3), np.uint8))).sum())
            differ = int((got ^ ref).sum())
            assert ref.sum() < 64 or differ <= 0.8 * outline + 2, (
                f"{name}: polygon row {ident}: {differ} px differ along an outline of {outline}")
        elif ref.sum() >= 64:
            assert iou >= 0.98, f"{name}: {kinds[int(ident)]} row {ident} IoU {iou:.3f}"
        else:
            assert not ((got ^ ref) & ~_near_boundary(ref) & ~_near_boundary(got)).any()
        np.testing.assert_array_equal(a.boxes[k], a.masks[k].boxes()[0])  # tight boxes
        compared += 1
    for k, ident in enumerate(b.ids):  # what the dense path kept, the compact path kept
        if int(ident) not in set(map(int, a.ids)):
            assert db[k].sum() < 64, f"{name}: row {ident} ({db[k].sum()} px) lost compactly"
    return compared


@pytest.fixture(scope="module")
def real_samples(tinycoco, pose_minicoco) -> list[Sample]:
    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    pose = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    return [coco[i] for i in range(len(coco))] + [pose[i] for i in range(3)]


@pytest.mark.parametrize("name", sorted(COVERED))
def test_every_covered_transform_agrees_with_albumentationsx_dense(name, real_samples) -> None:
    transform = COVERED[name]()
    assert _kind(transform) == "projective"
    compact = Augment([transform], seed=0)
    dense = Augment([transform], seed=0, compact=False)
    assert dense.dense_transforms == [type(transform).__name__]
    compared = 0
    for index, sample in enumerate(real_samples):
        out = compact(sample, seed=index)
        assert "dense_transforms" not in out.meta.extra
        forms = set(out.instances.masks.kinds)
        assert forms <= {"polygon", "bitmap"}
        # a polygon stays a polygon
        for ident, kind in zip(out.instances.ids, out.instances.masks.kinds):
            source_kind = dict(zip(sample.instances.ids.tolist(), sample.instances.masks.kinds))
            if source_kind.get(int(ident)) == "polygon":
                assert kind == "polygon"
        compared += _compare(out, dense(sample, seed=index), sample, name)
    assert compared > 20


@given(sample_strategy(min_side=24, max_side=80, max_instances=5, num_keypoints=2),
       st.sampled_from(sorted(COVERED)), st.integers(0, 2**16))
def test_compact_agrees_on_generated_samples(sample: Sample, name: str, seed: int) -> None:
    transform = COVERED[name]()
    if name in ("Resize", "PadIfNeeded", "RandomCrop", "CenterCrop", "LongestMaxSize",
                "SmallestMaxSize", "RandomResizedCrop", "RandomSizedBBoxSafeCrop"):
        h, w = sample.image_size  # sizes that fit these small images
        transform = {
            "Resize": lambda: A.Resize(max(8, h // 2), w + 7),
            "PadIfNeeded": lambda: A.PadIfNeeded(h + 9, w + 4),
            "RandomCrop": lambda: A.RandomCrop(max(4, h - 7), max(4, w - 5)),
            "CenterCrop": lambda: A.CenterCrop(max(4, h - 6), max(4, w - 3)),
            "LongestMaxSize": lambda: A.LongestMaxSize(max(h, w) + 13),
            "SmallestMaxSize": lambda: A.SmallestMaxSize(max(8, min(h, w) - 5)),
            "RandomResizedCrop": lambda: A.RandomResizedCrop((40, 30)),
            "RandomSizedBBoxSafeCrop": lambda: A.RandomSizedBBoxSafeCrop(40, 30),
        }[name]()
    compact = Augment([transform], seed=0)(sample, seed=seed)
    dense = Augment([transform], seed=0, compact=False)(sample, seed=seed)
    _compare(compact, dense, sample, name)
    # every row that left is recorded with a reason
    kept = set(map(int, compact.instances.ids))
    dropped = {d.annotation_id for d in compact.meta.drops}
    assert kept | dropped == set(map(int, sample.instances.ids))


def test_same_seed_same_output_and_compose_seed_is_used(real_samples) -> None:
    sample = real_samples[0]
    pipeline = [A.Affine(rotate=(-30, 30), p=0.7), A.RandomCrop(200, 200, p=1.0),
                A.HorizontalFlip(p=0.5)]
    one = Augment(A.Compose(pipeline, seed=7))
    two = Augment(A.Compose(pipeline, seed=7))
    assert one.seed == 7
    for _ in range(3):
        x, y = one(sample), two(sample)
        assert np.array_equal(x.image, y.image) and x.instances == y.instances
    assert Augment(pipeline, seed=1)(sample, seed=5).instances == \
        Augment(pipeline, seed=2)(sample, seed=5).instances


def test_compose_seed_reproducible_across_processes(tmp_path) -> None:
    import subprocess
    import sys

    script = (
        "import numpy as np, hashlib\n"
        "from instkit.synthetic import make_samples\n"
        "from instkit.transforms import Augment\n"
        "from instkit.transforms._albu import A\n"
        "s = make_samples(1, seed=3, image_size=(64, 80))[0]\n"
        "aug = Augment(A.Compose([A.Affine(rotate=(-40, 40), p=1.0)], seed=7))\n"
        "out = aug(s)\n"
        "print(hashlib.sha1(out.image.tobytes() + out.instances.boxes.tobytes()).hexdigest())\n"
    )
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert len(runs) == 1


def test_unknown_geometric_transform_runs_dense_for_itself_only(real_samples) -> None:
    sample = real_samples[1]
    aug = Augment([A.HorizontalFlip(p=1.0), A.ElasticTransform(p=1.0), A.Rotate(angle_range=(10, 10),
                                                                          p=1.0)], seed=0)
    assert aug.dense_transforms == ["ElasticTransform"]
    assert "dense=[ElasticTransform]" in repr(aug)
    out = aug(sample, seed=1)
    assert out.meta.extra["dense_transforms"] == ["ElasticTransform"]
    np.testing.assert_array_equal(out.instances.boxes, out.instances.masks.boxes())


def test_polygons_stay_polygons_and_nothing_is_dense(monkeypatch, real_samples) -> None:
    calls = []
    original = Masks.to_dense

    def spy(self: Masks) -> np.ndarray:
        calls.append(len(self))
        return original(self)

    monkeypatch.setattr(Masks, "to_dense", spy)
    aug = Augment([A.Affine(rotate=(-20, 20), p=1.0), Perspective(scale=(0.05, 0.05), p=1.0),
                   A.RandomResizedCrop((200, 240), p=1.0), A.HorizontalFlip(p=1.0)], seed=0)
    for index, sample in enumerate(real_samples[:4]):
        out = aug(sample, seed=index)
        source = dict(zip(sample.instances.ids.tolist(), sample.instances.masks.kinds))
        for ident, kind in zip(out.instances.ids.tolist(), out.instances.masks.kinds):
            assert kind == ("polygon" if source[ident] == "polygon" else "bitmap")
    assert calls == []


def test_clip_part_keeps_the_inside_of_concave_parts() -> None:
    # a U shape crossing the right edge: clipping keeps exactly its pixels inside the frame
    part = np.array([[2, 2], [30, 2], [30, 20], [22, 20], [22, 8], [10, 8], [10, 20], [2, 20]],
                    np.float64)
    clipped = clip_part(part, 25.0, 30.0)
    full = Masks([PolygonMask((part.reshape(-1),))], (30, 40)).to_dense()[0][:, :25]
    cut = Masks([PolygonMask((clipped.reshape(-1),))], (30, 25)).to_dense()[0]
    np.testing.assert_array_equal(full, cut)


def test_bitmap_warp_touches_only_its_window() -> None:
    bitmap = Masks.from_dense(np.pad(np.ones((1, 5, 7), bool), ((0, 0), (3, 5000), (4, 5000))))
    item = bitmap.items[0]
    flip = Homography.scale_translate(-1.0, 5011.0, 1.0, 0.0, (5008, 5011))
    out, extent = warp_bitmap(item, flip)
    assert out.bitmap.shape == (5, 7) and out.offset == (3, 5011 - 4 - 7)
    np.testing.assert_allclose(extent, [5000, 3, 5007, 8])


def _boxes_sample(n: int, size: tuple[int, int], box: tuple[int, int], seed: int) -> Sample:
    """``n`` rectangles of ``box`` (w, h) px as polygons, at random places."""
    rng = np.random.default_rng(seed)
    bw, bh = box
    xy = rng.uniform(0, min(size) - max(box), size=(n, 2))
    polys = [[np.array([x, y, x + bw, y, x + bw, y + bh, x, y + bh])] for x, y in xy]
    inst = Instances(image_size=size, labels=np.zeros(n, np.int64),
                     masks=Masks.from_polygons(polys, size))
    return Sample.from_array(rng.integers(0, 255, (*size, 3), dtype=np.uint8), inst, 1)


def test_crowded_image_never_densifies(monkeypatch) -> None:
    n = 1500
    sample = _boxes_sample(n, (1024, 1024), (12, 9), seed=0)
    monkeypatch.setattr(Masks, "to_dense", lambda self: pytest.fail("densified"))
    out = Augment([A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), p=1.0),
                   A.RandomCrop(900, 900, p=1.0)], seed=0)(sample, seed=0)
    assert len(out.instances) + len(out.meta.drops) == n


def test_dense_path_takes_more_masks_than_opencv_has_channels() -> None:
    sample = _boxes_sample(600, (120, 160), (9, 7), seed=3)
    crop = [A.RandomResizedCrop((96, 96), scale=(0.6, 1.0), p=1.0)]
    dense = Augment(crop, seed=0, compact=False)(sample, seed=4)
    compact = Augment(crop, seed=0)(sample, seed=4)
    assert len(dense.instances) > 300  # rows past the first groups of 128 came through
    _compare(compact, dense, sample, "RandomResizedCrop, 600 masks")


def test_resize_map_is_what_the_control_points_solve_to() -> None:
    """Resize skips the control points (its map is known): the known map must be the solved one,
    bit for bit, for any sizes."""
    from instkit.transforms.geometry import control_points, resize_map, solve_homography

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = int(rng.integers(2, 900)), int(rng.integers(2, 900))
        oh, ow = int(rng.integers(2, 1400)), int(rng.integers(2, 1400))
        compose = A.Compose([A.Resize(oh, ow)], keypoint_params=A.KeypointParams(
            coord_format="xy", remove_invisible=False))
        points = control_points((h, w))
        moved = np.asarray(compose(image=np.zeros((h, w, 3), np.uint8), keypoints=points)
                           ["keypoints"])[:, :2]
        solved = solve_homography(points, moved, (oh, ow))
        known = resize_map((h, w), (oh, ow))
        assert solved is not None and solved.out_size == known.out_size
        np.testing.assert_array_equal(solved.matrix, known.matrix, err_msg=f"{(h, w, oh, ow)}")

"""COCO -> per-instance PNG masks -> COCO: masks exact, ids/labels/crowd kept, keypoints counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instkit.io.coco import read_coco
from instkit.io.pngmasks import read_pngmasks, write_pngmasks
from tests.io._roundtrip import by_annotation


def test_round_trip_is_pixel_exact(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    counts = write_pngmasks(coco, tmp_path / "png")
    assert counts["objects"] == coco.num_annotations and counts["keypoints_dropped"] == 0
    back = read_pngmasks(tmp_path / "png")
    assert [s.image_id for s in back] == sorted(s.image_id for s in coco)
    theirs = by_annotation(back)
    assert len(theirs) == coco.num_annotations
    for sample in coco:
        for row, ann_id in enumerate(sample.instances.ids.tolist()):
            other, j = theirs[ann_id]
            assert sample.instances.masks[row] == other.instances.masks[j]  # same pixels
            assert sample.instances.labels[row] == other.instances.labels[j]
            assert sample.instances.iscrowd[row] == other.instances.iscrowd[j]
    a = next(iter(coco))
    b = next(s for s in back if s.image_id == a.image_id)
    np.testing.assert_array_equal(a.image, b.image)  # image bytes copied


def test_keypoints_are_counted_as_dropped(pose_minicoco: dict[str, Path], tmp_path: Path) -> None:
    coco = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    counts = write_pngmasks(coco, tmp_path / "png")
    labelled = sum(int((s.instances.keypoints[:, :, 2] > 0).any(axis=1).sum()) for s in coco)
    assert counts["keypoints_dropped"] == labelled > 0

"""COCO -> YOLO-seg -> COCO: the loss YOLO-seg implies, stated and bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instkit.errors import FormatError
from instkit.io.coco import read_coco
from instkit.io.yolo import read_yolo, write_yolo
from tests.io._roundtrip import mask_iou


def test_round_trip_loss_is_bounded(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    coco = read_coco(tinycoco["train_json"], tinycoco["train_images"])
    counts = write_yolo(coco, tmp_path / "yolo")
    multi = sum(len(item.parts) - 1 for s in coco for item in s.instances.masks.items
                if hasattr(item, "parts"))
    rle = sum(k != "polygon" for s in coco for k in s.instances.masks.kinds)
    # extra parts of polygons, plus those of traced crowd regions
    assert counts["parts_dropped"] >= multi > 0 and counts["rle_as_polygons"] == rle > 0
    assert counts["objects"] == coco.num_annotations
    back = {s.image_id: s for s in read_yolo(tmp_path / "yolo")}
    assert back.keys() == {s.image_id for s in coco}
    single_part_ious, other_ious = [], []
    for sample in coco:
        other = back[sample.image_id]
        assert len(other.instances) == len(sample.instances)  # same order, one line per object
        np.testing.assert_array_equal(other.instances.labels, sample.instances.labels)
        for i, item in enumerate(sample.instances.masks.items):
            iou = mask_iou(sample, i, other, i)
            if hasattr(item, "parts") and len(item.parts) == 1:
                if sample.instances.masks[i].area()[0] >= 100:
                    single_part_ious.append(iou)
            else:
                other_ious.append(iou)
    # Single-part polygons: only the 6-decimal normalisation (and clipping to the image) moves
    # vertices; a mask of a few pixels can lose one, so the bound is for 100+ pixels.
    assert min(single_part_ious) >= 0.95 and np.median(single_part_ious) >= 0.999
    # Multi-part objects keep their largest part; crowd RLE is traced: lossy, but mostly kept.
    assert np.median(other_ious) >= 0.5


def test_bad_lines_name_the_file_and_line(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "images" / "1.png")
    (tmp_path / "data.yaml").write_text("names: {0: a}\n")
    (tmp_path / "labels" / "1.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n3 0.1 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.raises(FormatError, match=r"1.txt:2"):
        read_yolo(tmp_path)

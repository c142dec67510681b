"""COCO -> per-image JSON label schema (PNG masks) -> COCO: exact masks and boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instkit.errors import FormatError
from instkit.io.coco import read_coco
from instkit.io.labelschema import read_labelschema, write_labelschema
from tests.io._roundtrip import by_annotation


def test_round_trip_is_exact(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    write_labelschema(coco, tmp_path / "ls")
    label = json.loads(next((tmp_path / "ls" / "labels").glob("*.json")).read_text())
    first = label["instances"][0]
    assert first["type"] == "instance" and {"class_id", "class_name", "bbox", "mask_path"} <= set(first)
    back = read_labelschema(tmp_path / "ls")
    theirs = by_annotation(back)
    assert len(theirs) == coco.num_annotations
    for sample in coco:
        for row, ann_id in enumerate(sample.instances.ids.tolist()):
            other, j = theirs[ann_id]
            assert sample.instances.masks[row] == other.instances.masks[j]
            assert sample.instances.labels[row] == other.instances.labels[j]
            # the file's bbox is kept (as read_coco keeps it), not recomputed from the mask
            np.testing.assert_array_equal(sample.instances.boxes[row], other.instances.boxes[j])


def test_polygon_instances_and_errors(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    label = {"image": "images/a.png", "width": 50, "height": 40, "instances": [
        {"type": "instance", "class_id": 1, "class_name": "person", "bbox": [5, 5, 10, 10],
         "polygon": [[5, 5], [15, 5], [15, 15], [5, 15]]}]}
    (tmp_path / "labels" / "a.json").write_text(json.dumps(label))
    [sample] = read_labelschema(tmp_path)
    np.testing.assert_array_equal(sample.instances.boxes, [[5, 5, 15, 15]])
    assert sample.meta.categories.names == ["person"]
    label["instances"][0]["mask_path"] = "../outside.png"
    (tmp_path / "labels" / "a.json").write_text(json.dumps(label))
    with pytest.raises(ValueError, match="outside"):
        read_labelschema(tmp_path)
    label["instances"][0].pop("mask_path")
    label["instances"][0].pop("polygon")
    (tmp_path / "labels" / "a.json").write_text(json.dumps(label))
    with pytest.raises(FormatError, match=r"instances\[0\]"):
        read_labelschema(tmp_path)


def test_keypoints_bbox_and_area_survive_the_round_trip(pose_minicoco: dict[str, Path],
                                                        tmp_path: Path) -> None:
    from instkit.io.coco import write_coco

    coco = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    write_labelschema(coco, tmp_path / "ls")
    back = read_labelschema(tmp_path / "ls")
    theirs = by_annotation(back)
    assert len(theirs) == coco.num_annotations
    checked = 0
    for sample in coco:
        inst = sample.instances
        for row, ann_id in enumerate(inst.ids.tolist()):
            other, j = theirs[ann_id]
            assert other.instances.keypoints is not None  # before: None, keypoints dropped
            np.testing.assert_array_equal(inst.keypoints[row], other.instances.keypoints[j])
            np.testing.assert_array_equal(inst.extras["coco_bbox"][row],
                                          other.instances.extras["coco_bbox"][j])
            checked += int((inst.keypoints[row, :, 2] > 0).any())
    assert checked > 0
    # and COCO -> label schema -> COCO gives the file's own bbox, area and keypoints back
    write_coco(back, tmp_path / "back.json", coco.categories)
    original = {a["id"]: a for a in json.loads(pose_minicoco["val_json"].read_text())["annotations"]}
    again = {a["id"]: a for a in json.loads((tmp_path / "back.json").read_text())["annotations"]}
    for ann_id, ann in original.items():
        assert again[ann_id]["bbox"] == ann["bbox"]
        assert again[ann_id]["area"] == ann["area"]
        assert again[ann_id]["keypoints"] == ann["keypoints"]


def test_bad_keypoints_and_bbox_name_the_instance(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    instance = {"type": "instance", "class_id": 1, "class_name": "person",
                "polygon": [[5, 5], [15, 5], [15, 15], [5, 15]]}
    for field, value in (("keypoints", [1, 2]), ("keypoints", "x"), ("bbox", [1, 2, -3, 4]),
                         ("bbox", [1, 2, 3])):
        label = {"image": "images/a.png", "width": 50, "height": 40,
                 "instances": [{**instance, field: value}]}
        (tmp_path / "labels" / "a.json").write_text(json.dumps(label))
        with pytest.raises(FormatError, match=rf"'{field}'.*instances\[0\]"):
            read_labelschema(tmp_path)

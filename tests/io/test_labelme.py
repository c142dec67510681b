"""LabelMe JSON: files written by hand from labelme's format (wkentaro/labelme ``_label_file.py``,
``labelme2coco.py``), read, checked pixel by pixel, written back and read again."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from instkit.errors import FormatError
from instkit.io.labelme import read_labelme, write_labelme
from instkit.masks import BitmapMask, Masks, PolygonMask, RLEMask

H, W = 20, 30


def _png_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# The mask shape's crop (labelme >= 5.3 stores it as a 0/1 PNG of the box at points[0]).
CROP = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8)


def _document() -> dict[str, Any]:
    def shape(label: str, points: list[list[float]], kind: str, group: int | None = None,
              **more: Any) -> dict[str, Any]:
        return {"label": label, "points": points, "group_id": group, "description": "",
                "shape_type": kind, "flags": {}, "mask": None, **more}

    return {
        "version": "5.5.0", "flags": {"reviewed": True},
        "shapes": [
            shape("cat", [[2, 2], [8, 2], [8, 6], [2, 6]], "polygon"),
            shape("dog", [[20, 10], [12, 4]], "rectangle"),        # corners in any order
            shape("cat", [[5, 14], [5, 17]], "circle"),
            shape("dog", [[20, 14], [24, 14], [24, 18]], "polygon", 7),
            shape("dog", [[26, 14], [29, 14], [29, 18]], "polygon", 7),  # same object as above
            shape("cat", [[10, 15], [12, 16]], "mask", mask=_png_b64(CROP)),
            shape("nose", [[1, 1]], "point"),
        ],
        "imagePath": "img.png", "imageData": None, "imageHeight": H, "imageWidth": W,
    }


def _write(folder: Path, doc: dict[str, Any], labels: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(H * W * 3) % 251).astype(np.uint8).reshape(H, W, 3)
    Image.fromarray(pixels).save(folder / "img.png")
    (folder / "img.json").write_text(json.dumps(doc))
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(["__ignore__", "_background_", *labels]) + "\n")
    return folder


def test_shapes_become_objects(tmp_path: Path) -> None:
    data = read_labelme(_write(tmp_path / "lm", _document(), ["cat", "dog"]))
    assert data.categories.names == ["cat", "dog"] and data.categories.ids == [1, 2]
    (sample,) = data
    inst = sample.instances
    assert sample.image_size == (H, W) and sample.image.shape == (H, W, 3)
    assert inst.labels.tolist() == [0, 1, 0, 1, 0]  # the two group-7 polygons are one object
    assert inst.ids.tolist() == [1, 2, 3, 4, 5]
    items = inst.masks.items
    assert isinstance(items[0], PolygonMask) and len(items[3].parts) == 2
    # the rectangle is its four corners, whatever order the two points came in
    np.testing.assert_array_equal(items[1].parts[0], [12, 4, 20, 4, 20, 10, 12, 10])
    dense = inst.masks.to_dense()
    assert dense[1].sum() == 8 * 6
    # the mask shape: the PNG crop placed with its top-left pixel at points[0] = (x 10, y 15)
    assert isinstance(items[4], BitmapMask)
    expected = np.zeros((H, W), bool)
    expected[15:17, 10:13] = CROP.astype(bool)
    np.testing.assert_array_equal(dense[4], expected)
    # the circle (radius 3 around (5, 14)) is a polygon within 1 px of the arc
    assert abs(int(dense[2].sum()) - np.pi * 9) < 2 * np.pi * 3
    assert data.read_counts == {"circles_as_polygons": 1, "other_shapes": 1}
    assert sample.meta.extra["labelme_other_shapes"][0]["label"] == "nose"
    assert sample.meta.extra["labelme_document"] == {"flags": {"reviewed": True}}


def test_round_trip_writes_unchanged_shapes_back_exactly(tmp_path: Path) -> None:
    doc = _document()
    data = read_labelme(_write(tmp_path / "lm", doc, ["cat", "dog"]))
    counts = write_labelme(data, tmp_path / "out")
    assert counts["images"] == 1 and counts["objects"] == 5 and counts["other_shapes"] == 1
    written = json.loads((tmp_path / "out" / "img.json").read_text())
    assert written["shapes"] == doc["shapes"]  # type, group, flags, mask PNG: as they were
    assert written["flags"] == {"reviewed": True} and written["imagePath"] == "img.png"
    assert (tmp_path / "out" / "img.png").read_bytes() == (tmp_path / "lm" / "img.png").read_bytes()
    assert (tmp_path / "out" / "labels.txt").read_text().split() == [
        "__ignore__", "_background_", "cat", "dog"]
    again = read_labelme(tmp_path / "out")
    assert again[0].instances.masks == data[0].instances.masks
    assert again[0].instances.labels.tolist() == data[0].instances.labels.tolist()


def test_changed_objects_are_written_from_their_geometry(tmp_path: Path) -> None:
    data = read_labelme(_write(tmp_path / "lm", _document(), ["cat", "dog"]))
    sample = data[0]
    inst = sample.instances
    # every mask as RLE (as after a transform): no longer the shapes that were read
    rle = Masks([RLEMask(c) for c in inst.masks.rle_counts()], inst.image_size)
    moved = sample.replace(instances=inst.replace(masks=rle))
    write_labelme([moved], tmp_path / "out", data.categories)
    shapes = json.loads((tmp_path / "out" / "img.json").read_text())["shapes"]
    assert [s["shape_type"] for s in shapes] == ["mask"] * 5 + ["point"]
    back = read_labelme(tmp_path / "out")[0]
    assert back.instances.masks == inst.masks  # pixel for pixel
    # a polygon object of two parts is written as two polygons sharing a group_id
    write_labelme([sample.replace(instances=inst[[3]].replace(extras={}))], tmp_path / "two",
                  data.categories)
    shapes = json.loads((tmp_path / "two" / "img.json").read_text())["shapes"]
    polygons = [s for s in shapes if s["shape_type"] == "polygon"]
    assert len(polygons) == 2 and polygons[0]["group_id"] == polygons[1]["group_id"] is not None
    assert read_labelme(tmp_path / "two")[0].instances.masks == inst[[3]].masks


def test_inline_image_data_without_a_file(tmp_path: Path) -> None:
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, :, 1] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    doc = _document()
    doc.update(imagePath="missing/elsewhere.png", imageData=base64.b64encode(buffer.getvalue()).decode())
    del doc["imageHeight"], doc["imageWidth"]  # the size then comes from the inline image
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "a.json").write_text(json.dumps(doc))
    (sample,) = read_labelme(tmp_path / "lm")
    assert sample.image_size == (H, W)
    np.testing.assert_array_equal(sample.image, pixels)
    write_labelme([sample], tmp_path / "out")  # the inline PNG is written as the image file
    assert (tmp_path / "out" / "missing" / "elsewhere.png").read_bytes() == buffer.getvalue()


def test_labels_sorted_when_there_is_no_labels_file(tmp_path: Path) -> None:
    data = read_labelme(_write(tmp_path / "lm", _document()))
    assert data.categories.names == ["cat", "dog"]  # "nose" is a point: not a region class


@pytest.mark.parametrize(("change", "where", "words"), [
    (lambda d: d["shapes"][0].update(points=[[1, 1], [2, 2]]), "shapes[0]", "at least 3"),
    (lambda d: d["shapes"][1].update(points=[[1, 1], [2, 2], [3, 3]]), "shapes[1]", "exactly 2"),
    (lambda d: d["shapes"][0].update(shape_type="blob"), "shapes[0]", "unknown shape_type"),
    (lambda d: d["shapes"][5].update(mask="not base64!"), "shapes[5].mask", "base64"),
    (lambda d: d["shapes"][0].update(points=[[1, "x"], [2, 2], [3, 3]]), "shapes[0].points",
     "finite numbers"),
    (lambda d: d["shapes"][3].update(group_id="7"), "shapes[3]", "group_id"),
    (lambda d: d["shapes"][0].update(label="horse"), "shapes[0]", "not in the category table"),
    (lambda d: d["shapes"][2].update(points=[[5, 14], [5, 1e30]]), "shapes[2].points", "beyond"),
    (lambda d: d.update(shapes={"a": 1}), "shapes", "must be a list"),
])
def test_bad_shapes_are_located(tmp_path: Path, change: Any, where: str, words: str) -> None:
    doc = copy.deepcopy(_document())
    change(doc)
    folder = _write(tmp_path / "lm", doc, ["cat", "dog"])
    with pytest.raises(FormatError) as caught:
        read_labelme(folder)
    message = str(caught.value)
    assert words in message and f"at {where}" in message and "img.json" in message


def test_an_image_past_the_pixel_limit_is_refused_before_anything_is_drawn(tmp_path: Path) -> None:
    from instkit.sample import ImageTooLargeError

    doc = _document()
    doc.update(imageHeight=200_000, imageWidth=100_000)
    with pytest.raises(ImageTooLargeError, match="img.json"):
        read_labelme(_write(tmp_path / "lm", doc))


def test_image_path_outside_the_dataset_is_refused(tmp_path: Path) -> None:
    doc = _document()
    doc["imagePath"] = "../../etc/passwd"
    from instkit.errors import PathEscapeError

    with pytest.raises(PathEscapeError):
        read_labelme(_write(tmp_path / "lm", doc))


def test_files_that_are_not_labelme_are_counted_not_read(tmp_path: Path) -> None:
    folder = _write(tmp_path / "lm", _document())
    (folder / "notes.json").write_text(json.dumps({"comment": "not a label file"}))
    data = read_labelme(folder)
    assert len(data) == 1 and data.read_counts["files_skipped"] == 1


def test_ignore_regions_are_kept_beside_the_objects(tmp_path: Path) -> None:
    doc = _document()
    doc["shapes"].append({**doc["shapes"][0], "label": "__ignore__"})
    data = read_labelme(_write(tmp_path / "lm", doc))
    assert data.categories.names == ["cat", "dog"]
    assert len(data[0].instances) == 5 and data.read_counts["ignore_shapes"] == 1
    write_labelme(data, tmp_path / "out")
    shapes = json.loads((tmp_path / "out" / "img.json").read_text())["shapes"]
    assert shapes[-1]["label"] == "__ignore__"  # written back as it was


def test_inline_jpeg_with_a_path_outside_keeps_its_bytes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(buffer, format="JPEG")
    doc = _document()
    doc.update(imagePath="../../elsewhere/a.png", imageData=base64.b64encode(buffer.getvalue()).decode())
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "frame7.json").write_text(json.dumps(doc))
    (sample,) = read_labelme(tmp_path / "lm")  # the path leaves the dataset: the inline image
    assert sample.meta.file_name == "frame7.jpg" and sample.image.shape == (H, W, 3)
    write_labelme([sample], tmp_path / "out")
    assert (tmp_path / "out" / "frame7.jpg").read_bytes() == buffer.getvalue()  # not re-encoded
    assert json.loads((tmp_path / "out" / "frame7.json").read_text())["imagePath"] == "frame7.jpg"


def _pose_document() -> dict[str, Any]:
    doc = _document()

    def point(label: str, x: float, y: float, group: int | None) -> dict[str, Any]:
        return {"label": label, "points": [[x, y]], "group_id": group, "description": "",
                "shape_type": "point", "flags": {}, "mask": None}

    # labelme's pose convention: the keypoints share the object's group_id
    doc["shapes"][3:3] = [point("tip", 22.5, 15.0, 7), point("root", 27.0, 16.5, 7)]
    doc["shapes"].append(point("root", 3.0, 3.0, 99))  # a group without a region: not a keypoint
    return doc


def test_points_grouped_with_an_object_are_its_keypoints(tmp_path: Path) -> None:
    doc = _pose_document()
    data = read_labelme(_write(tmp_path / "lm", doc, ["cat", "dog"]))
    assert data.categories[1].keypoints == ("tip", "root") and data.categories[0].keypoints == ()
    inst = data[0].instances
    assert inst.keypoints.shape == (5, 2, 3)
    np.testing.assert_array_equal(inst.keypoints[3], [[22.5, 15.0, 2], [27.0, 16.5, 2]])
    assert not inst.keypoints[[0, 1, 2, 4]].any()
    assert data.read_counts["other_shapes"] == 2  # "nose" (no group) and the lone "root"
    write_labelme(data, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "img.json").read_text())["shapes"]
    assert sorted(map(json.dumps, written)) == sorted(map(json.dumps, doc["shapes"]))
    back = read_labelme(tmp_path / "out")
    np.testing.assert_array_equal(back[0].instances.keypoints, inst.keypoints)


def test_coco_keypoints_through_labelme(pose_minicoco: dict[str, Path], tmp_path: Path) -> None:
    from instkit.io.coco import read_coco

    source = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    counts = write_labelme(source, tmp_path / "out")
    back = {s.meta.file_name: s for s in read_labelme(tmp_path / "out")}
    assert back[source[0].meta.file_name].meta.categories.num_keypoints == 17
    person = source.categories[0]
    assert read_labelme(tmp_path / "out").categories[0].keypoints == person.keypoints  # order kept
    occluded = 0
    for sample in source:
        mine = back[sample.meta.file_name].instances
        theirs = sample.instances
        assert mine.masks == theirs.masks
        labelled = theirs.keypoints[:, :, 2] > 0
        np.testing.assert_array_equal(mine.keypoints[:, :, 2] > 0, labelled)
        np.testing.assert_allclose(mine.keypoints[labelled][:, :2], theirs.keypoints[labelled][:, :2])
        occluded += int((theirs.keypoints[:, :, 2] == 1).sum())
    assert counts["keypoints_visibility_lost"] == occluded > 0

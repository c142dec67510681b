"""Hugging Face rows (the Transformers guide's layout): reading, writing, COCO round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from instkit.categories import Categories  # noqa: E402
from instkit.errors import FormatError, ImageError, InstkitError, MaskError  # noqa: E402
from instkit.io.coco import read_coco, write_coco  # noqa: E402
from instkit.io.hf import hf_row_to_sample, read_hf, write_hf  # noqa: E402


def _guide_row(image, **objects_overrides):
    objects = {
        "id": [7, 8],
        "category": [0, 0],
        "bbox": [[2.0, 3.0, 10.0, 5.0], [20.0, 20.0, 4.0, 4.0]],
        "area": [50.0, 16.0],
        "segmentation": [[[2, 3, 12, 3, 12, 8, 2, 8]], [[20, 20, 24, 20, 24, 24, 20, 24]]],
        "iscrowd": [0, 0],
    }
    objects.update(objects_overrides)
    return {"image": image, "image_id": 5, "width": 32, "height": 30, "objects": objects}


def test_guide_row_to_sample_matches_pycocotools():
    import pycocotools.mask as mask_utils
    from PIL import Image

    image = Image.fromarray(np.full((30, 32, 3), 90, np.uint8))
    sample = hf_row_to_sample(_guide_row(image), Categories.from_names(["building"], first_id=0))
    inst = sample.instances
    assert sample.image_id == 5 and sample.image_size == (30, 32)
    assert inst.ids.tolist() == [7, 8] and inst.labels.tolist() == [0, 0]
    np.testing.assert_array_equal(inst.boxes, [[2, 3, 12, 8], [20, 20, 24, 24]])
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 3, 12, 3, 12, 8, 2, 8]], 30, 32)))
    np.testing.assert_array_equal(inst.masks.to_dense()[0], expected.astype(bool))
    assert sample.image.shape == (30, 32, 3)


def test_row_errors_name_the_place():
    from PIL import Image

    image = Image.fromarray(np.zeros((30, 32, 3), np.uint8))
    with pytest.raises(MaskError, match="annotation id=8"):
        hf_row_to_sample(_guide_row(image, segmentation=[[[1, 2, 3, 4, 5, 6]], [[1, 2, 3, 4]]]))
    with pytest.raises(FormatError, match=r"objects\['bbox'\]"):
        hf_row_to_sample(_guide_row(image, bbox=[[1, 2, 3, 4]]))
    wrong = Image.fromarray(np.zeros((31, 32, 3), np.uint8))
    with pytest.raises(ImageError, match="31x32"):
        hf_row_to_sample(_guide_row(wrong))
    with pytest.raises(FormatError, match="category 3"):
        hf_row_to_sample(_guide_row(image, category=[0, 3]), Categories.from_names(["a"], first_id=0))


def test_raw_integer_categories_are_ids(tmp_path: Path):
    from PIL import Image

    image = Image.fromarray(np.zeros((30, 32, 3), np.uint8))
    row = _guide_row(image, category=[17, 90])
    dataset = datasets.Dataset.from_list([row])
    hf = read_hf(dataset)
    assert hf.categories.ids == [17, 90]
    assert hf[0].instances.labels.tolist() == [0, 1]


def test_tinycoco_round_trip_is_exact(tinycoco, tmp_path: Path):
    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    counters = write_hf(coco, tmp_path / "hf")
    # Crowd RLE goes to `segmentation` as polygons for the guide's code, exactly into `rle`.
    crowd = sum(int(s.instances.iscrowd.sum()) for s in coco)
    assert counters["rle_as_polygons"] == crowd > 0
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert loaded.column_names == ["image", "image_id", "width", "height", "objects"]
    assert loaded.features["objects"]["category"].feature.names == coco.categories.names
    hf = read_hf(tmp_path / "hf")
    assert hf.categories == coco.categories  # gapped COCO ids restored from the sidecar
    assert len(hf) == len(coco)
    for a, b in zip(coco, hf, strict=True):
        assert a.image_id == b.image_id
        assert a.instances.masks == b.instances.masks
        np.testing.assert_array_equal(a.instances.labels, b.instances.labels)
        np.testing.assert_array_equal(a.instances.ids, b.instances.ids)
        np.testing.assert_array_equal(a.image, b.image)  # original JPEG bytes are kept
    write_coco(hf, tmp_path / "back.json", hf.categories)
    original = json.loads(Path(tinycoco["val_json"]).read_text())
    back = json.loads((tmp_path / "back.json").read_text())
    by_id = {a["id"]: a for a in back["annotations"]}
    assert len(by_id) == len(original["annotations"])
    for ann in original["annotations"]:
        other = by_id[ann["id"]]
        assert other["bbox"] == ann["bbox"] and other["area"] == ann["area"]
        assert other["category_id"] == ann["category_id"]


def test_keypoints_survive(pose_minicoco, tmp_path: Path):
    coco = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    counters = write_hf(coco, tmp_path / "hf")
    assert counters["keypoints"] == coco.num_annotations
    hf = read_hf(tmp_path / "hf")
    for a, b in zip(coco, hf, strict=True):
        np.testing.assert_array_equal(a.instances.keypoints, b.instances.keypoints)


def test_write_refuses_existing_folder(tmp_path: Path):
    from instkit.synthetic import categories, make_samples

    (tmp_path / "out").mkdir()
    with pytest.raises(InstkitError, match="already exists"):
        write_hf(make_samples(1), tmp_path / "out", categories())

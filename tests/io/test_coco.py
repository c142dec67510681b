"""COCO reading and writing: lossless round trips on real data, clear errors on bad input."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import given
from pycocotools.coco import COCO

import instkit
from instkit import errors as E
from instkit.errors import FormatError, JSONParseError, PathEscapeError
from instkit.testing import strategies as S


def _datasets(tinycoco, pose_minicoco):
    return [
        (tinycoco["train_json"], tinycoco["train_images"]),
        (tinycoco["val_json"], tinycoco["val_images"]),
        (pose_minicoco["train_json"], pose_minicoco["train_images"]),
        (pose_minicoco["val_json"], pose_minicoco["val_images"]),
    ]


def test_masks_match_pycocotools_on_real_data(tinycoco, pose_minicoco):
    for annotation_file, image_root in _datasets(tinycoco, pose_minicoco):
        dataset = instkit.read_coco(annotation_file, image_root)
        coco = COCO(str(annotation_file))
        assert len(dataset) == len(coco.imgs)
        assert dataset.num_annotations == len(coco.anns)
        for sample in dataset:
            inst = sample.instances
            dense = inst.masks.to_dense()
            for i, ann_id in enumerate(inst.ids.tolist()):
                ann = coco.anns[ann_id]
                assert np.array_equal(dense[i], coco.annToMask(ann).astype(bool)), ann_id
                assert dataset.categories.id_of(int(inst.labels[i])) == ann["category_id"]
                assert bool(inst.iscrowd[i]) == bool(ann["iscrowd"])
                x, y, w, h = ann["bbox"]
                assert np.allclose(inst.boxes[i], [x, y, x + w, y + h], atol=1e-4)


def test_read_write_read_is_lossless(tinycoco, pose_minicoco, tmp_path):
    for annotation_file, image_root in _datasets(tinycoco, pose_minicoco):
        first = instkit.read_coco(annotation_file, image_root)
        out = instkit.write_coco(first, tmp_path / annotation_file.name)
        second = instkit.read_coco(out, image_root)
        assert first.categories == second.categories
        assert [s.image_id for s in first] == [s.image_id for s in second]
        for a, b in zip(first, second):
            assert a.instances == b.instances  # same ids, labels, boxes, crowd, keypoints, pixels
            assert a.meta.file_name == b.meta.file_name
        original = json.loads(annotation_file.read_text())
        written = json.loads(out.read_text())
        # Beyond pixels: every annotation, image and category comes back field for field.
        key = lambda a: a["id"]  # noqa: E731
        assert sorted(original["annotations"], key=key) == sorted(written["annotations"], key=key)
        assert sorted(original["images"], key=key) == sorted(written["images"], key=key)
        assert original["categories"] == written["categories"]


def test_coco_quirks_are_kept(tinycoco, pose_minicoco):
    dataset = instkit.read_coco(tinycoco["train_json"], tinycoco["train_images"])
    val = instkit.read_coco(tinycoco["val_json"], tinycoco["val_images"])
    crowd = [(s, i) for d in (dataset, val) for s in d for i in np.flatnonzero(s.instances.iscrowd)]
    assert len(crowd) == 5  # as the data README says
    sample, i = crowd[0]
    assert sample.instances.masks.kinds[i] == "rle"
    assert sample.instances.masks.items[i].uncompressed
    assert sample.instances.ids[i] > 2**31  # 64-bit crowd ids
    # COCO's crowd areas differ from their pixel counts; the file's area is kept as is.
    areas = sample.instances.extras["coco_area"]
    assert areas[i] != sample.instances.masks.area()[i]
    assert any(len(s.instances) == 0 for d in (dataset, val) for s in d)
    assert dataset.categories.ids[-1] == 90 and len(dataset.categories) == 80
    pose = instkit.read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    assert pose.categories[0].keypoints[:3] == ("nose", "left_eye", "right_eye")
    assert (1, 2) in pose.categories.flip_pairs()
    inst = pose[0].instances
    assert inst.keypoints.shape == (len(inst), 17, 3)


def test_images_load_lazily_from_the_image_root(tinycoco):
    dataset = instkit.read_coco(tinycoco["val_json"], tinycoco["val_images"])
    sample = dataset[0]
    assert sample.image_path.endswith(sample.meta.file_name)
    assert sample.image.shape == (*sample.image_size, 3)
    assert dataset[-1].image_id == int(dataset.image_ids[-1])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def _write(tmp_path, document, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


@pytest.fixture
def small_doc():
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 8},
                   {"id": 2, "file_name": "b.png", "width": 10, "height": 8}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [1, 1, 3, 3],
             "area": 9, "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]},
            {"id": 12, "image_id": 2, "category_id": 7, "iscrowd": 0, "bbox": [0, 0, 2, 2],
             "area": 4, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]], "attributes": {"x": 1}},
        ],
        "categories": [{"id": 5, "name": "five"}, {"id": 7, "name": "seven"}],
    }


def _broken(doc, path, value):
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "error", "code", "json_path"),
    [
        (("annotations", 1, "segmentation", 0), [0, 0, 2, 0, 2], E.PolygonError, "polygon-odd-coordinates", "annotations[1].segmentation[0]"),
        (("annotations", 1, "segmentation", 0), [0, 0, 2, 2], E.PolygonError, "polygon-4-number-trap", "annotations[1].segmentation[0]"),
        (("annotations", 0, "segmentation"), {"size": [9, 9], "counts": [81]}, E.RLEError, "rle-size-mismatch", "annotations[0].segmentation.size"),
        (("annotations", 0, "segmentation"), {"size": [8, 10], "counts": [70]}, E.RLEError, "rle-counts-sum", "annotations[0].segmentation.counts"),
        (("annotations", 0, "image_id"), 99, E.UnknownReferenceError, "unknown-image", "annotations[0].image_id"),
        (("annotations", 0, "category_id"), 6, E.UnknownReferenceError, "unknown-category", "annotations[0].category_id"),
        (("annotations", 0, "category_id"), "5", E.SchemaError, "schema-type", "annotations[0].category_id"),
        (("annotations", 0, "id"), KeyError, E.SchemaError, "schema-missing", "annotations[0].id"),
        (("annotations", 0, "bbox"), [1, 2, 3], E.SchemaError, "schema-type", "annotations[0].bbox"),
        (("annotations", 0, "segmentation"), [[1, "a", 3, 4, 5, 6]], E.SchemaError, "schema-type", "annotations[0].segmentation[0]"),
        (("annotations", 0, "segmentation"), "polygon", E.SchemaError, "schema-type", "annotations[0].segmentation"),
        (("images", 0, "width"), "10", E.SchemaError, "schema-type", "images[0].width"),
        (("images", 1, "id"), 1, E.DuplicateIdError, "duplicate-image-id", "images[1].id"),
        (("images", 0, "file_name"), KeyError, E.SchemaError, "schema-missing", "images[0].file_name"),
        (("images",), {"a": 1}, E.SchemaError, "schema-type", "images"),
        (("categories", 0, "name"), 5, E.SchemaError, "schema-type", "categories[0].name"),
        # The silent accepts of issue 12: refused now, exactly where validate calls them errors.
        (("annotations", 1, "id"), 11, E.DuplicateIdError, "duplicate-annotation-id", "annotations[1].id"),
        (("annotations", 0, "segmentation"), [[5.2, 5.2, 5.3, 5.2, 5.25, 5.3]], E.EmptyMaskError, "mask-empty", "annotations[0].segmentation"),
        (("annotations", 0, "segmentation"), [["1", "1", "4", "1", "4", "4"]], E.SchemaError, "schema-type", "annotations[0].segmentation[0]"),
        (("annotations", 0, "segmentation"), [[True, 1, 4, 1, 4, 4]], E.SchemaError, "schema-type", "annotations[0].segmentation[0]"),
        (("annotations", 0, "bbox"), [1, 1, True, 3], E.SchemaError, "schema-type", "annotations[0].bbox"),
        (("annotations", 0, "segmentation"), {"size": ["8", "10"], "counts": [80]}, E.SchemaError, "schema-type", "annotations[0].segmentation.size"),
        (("annotations", 0, "bbox"), [1, 1, 0, 3], E.BoxError, "bbox-invalid", "annotations[0].bbox"),
        (("annotations", 0, "iscrowd"), True, E.CrowdFlagError, "iscrowd-invalid", "annotations[0].iscrowd"),
        (("annotations", 0, "keypoints"), [1, 1, 3], E.KeypointError, "keypoints-visibility", "annotations[0].keypoints"),
        (("annotations", 1, "segmentation"), KeyError, E.MissingMaskError, "mask-missing", "annotations[1].segmentation"),
    ],
)
def test_bad_input_names_the_place(tmp_path, small_doc, path, value, error, code, json_path):
    from instkit.validate import validate_file

    bad = _write(tmp_path, _broken(small_doc, path, value))
    with pytest.raises(error) as info:
        instkit.read_coco(bad)
    assert info.value.code == code
    assert info.value.location.json_path == json_path and info.value.location.file == str(bad)
    assert str(bad) in str(info.value)
    # The same rule, the same place, in validate.
    report = validate_file(bad, progress=False)
    assert any(f.code == code and f.location.json_path == json_path for f in report.errors)


def test_nonfinite_and_malformed_json_give_line_and_column(tmp_path, small_doc):
    text = json.dumps(small_doc, indent=1).replace('"area": 9', '"area": NaN')
    with pytest.raises(JSONParseError, match=r"NaN at line \d+, column \d+"):
        instkit.read_coco(_write(tmp_path, text))
    with pytest.raises(JSONParseError, match=r"invalid JSON at line 1, column \d+"):
        instkit.read_coco(_write(tmp_path, '{"images": [1, 2,'))
    with pytest.raises(JSONParseError, match="file not found"):
        instkit.read_coco(tmp_path / "missing.json")
    with pytest.raises(FormatError, match="must hold a JSON object"):
        instkit.read_coco(_write(tmp_path, "[]"))


def test_lenient_mode_skips_and_records(tmp_path, small_doc):
    doc = _broken(small_doc, ("annotations", 1, "segmentation", 0), [0, 0, 2, 2])
    doc["annotations"].append({"id": 13, "image_id": 42, "category_id": 5,
                               "segmentation": [[0, 0, 1, 0, 1, 1]]})
    dataset = instkit.read_coco(_write(tmp_path, doc), strict=False)
    assert [p.code for p in dataset.problems] == ["polygon-4-number-trap", "unknown-image"]
    assert "image_id 42" in str(dataset.problems[1])
    sample = dataset[dataset.index_of(2)]
    assert len(sample.instances) == 0
    (drop,) = sample.meta.drops
    assert drop.annotation_id == 12 and drop.reason == "polygon-4-number-trap"
    assert "as a box" in drop.detail
    assert len(dataset[dataset.index_of(1)].instances) == 1


def test_paths_cannot_escape_the_image_root(tmp_path, small_doc):
    doc = _broken(small_doc, ("images", 0, "file_name"), "../../etc/passwd")
    (tmp_path / "images").mkdir()
    with pytest.raises(PathEscapeError, match=r"'\.\./\.\./etc/passwd' is absolute or leaves"):
        instkit.read_coco(_write(tmp_path, doc), tmp_path / "images")
    doc = _broken(small_doc, ("images", 0, "file_name"), "/etc/passwd")
    with pytest.raises(PathEscapeError):
        instkit.read_coco(_write(tmp_path, doc), tmp_path / "images")


def test_gapped_ids_extra_fields_and_empty_images_survive(tmp_path, small_doc):
    small_doc["images"].append({"id": 3, "file_name": "c.png", "width": 4, "height": 4,
                                "license": 2})
    path = _write(tmp_path, small_doc, "in.json")
    dataset = instkit.read_coco(path)
    assert dataset.categories.ids == [5, 7]
    assert dataset[1].instances.labels.tolist() == [1]
    assert dataset[1].instances.extras["coco_fields"][0] == {"attributes": {"x": 1}}
    assert len(dataset[2].instances) == 0
    out = instkit.write_coco(dataset, tmp_path / "out.json")
    written = json.loads(out.read_text())
    assert written["annotations"][1]["attributes"] == {"x": 1}
    assert written["annotations"][1]["category_id"] == 7
    assert written["images"][2] == small_doc["images"][2]


def test_writer_refuses_its_input_and_writes_atomically(tmp_path, small_doc):
    path = _write(tmp_path, small_doc, "in.json")
    dataset = instkit.read_coco(path)
    before = path.read_bytes()
    with pytest.raises(instkit.errors.InstkitError, match="refusing to write over the input"):
        instkit.write_coco(dataset, path)
    assert path.read_bytes() == before
    twin = dataset[0].replace(image_id=5)
    with pytest.raises(instkit.errors.InstkitError, match=r"annotation id 11 is used twice"):
        instkit.write_coco([dataset[0], twin], tmp_path / "x.json", dataset.categories)
    renumbered = instkit.write_coco([dataset[0], twin], tmp_path / "r.json", dataset.categories,
                                    renumber_ids=True)
    assert [a["id"] for a in json.loads(renumbered.read_text())["annotations"]] == [1, 2]
    doubled = [dataset[0], dataset[0]]
    with pytest.raises(instkit.errors.InstkitError, match="share image id 1"):
        instkit.write_coco(doubled, tmp_path / "x.json", dataset.categories)
    assert not (tmp_path / "x.json").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_transformed_geometry_is_written_from_the_instance(tmp_path, small_doc):
    dataset = instkit.read_coco(_write(tmp_path, small_doc, "in.json"))
    sample = dataset[0]
    moved = instkit.Masks.from_dense(np.roll(sample.instances.masks.to_dense(), 2, axis=2))
    changed = sample.replace(instances=sample.instances.replace(masks=moved).with_boxes_from_masks())
    out = instkit.write_coco([changed], tmp_path / "moved.json", dataset.categories)
    (annotation,) = json.loads(out.read_text())["annotations"]
    assert annotation["bbox"] == [3, 1, 3, 3]
    assert annotation["area"] == 9
    assert annotation["segmentation"]["size"] == [8, 10]  # a bitmap is written as RLE
    polygons = instkit.write_coco([changed], tmp_path / "poly.json", dataset.categories,
                                  mask_format="polygon")
    back = instkit.read_coco(polygons)[0].instances.masks
    assert back.kinds == ["polygon"]
    assert np.array_equal(back.to_dense(), moved.to_dense())


@given(S.coco_documents())
def test_any_valid_document_round_trips(document):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.json"
        source.write_text(json.dumps(document))
        first = instkit.read_coco(source)
        second = instkit.read_coco(instkit.write_coco(first, Path(tmp) / "out.json"))
        assert [s.instances for s in first] == [s.instances for s in second]
        coco = COCO(str(source))
        for sample in first:
            for i, ann_id in enumerate(sample.instances.ids.tolist()):
                reference = coco.annToMask(coco.anns[ann_id]).astype(bool)
                assert np.array_equal(sample.instances.masks[i].to_dense()[0], reference)
                rle = mask_utils.encode(np.asfortranarray(reference.astype(np.uint8)))
                assert sample.instances.masks.rle_counts()[i] == bytes(rle["counts"])

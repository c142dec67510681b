"""LVIS files (v1 layout, from the LVIS API's data and paper: images without ``file_name`` but
with ``coco_url``, ``neg_category_ids`` / ``not_exhaustive_category_ids``; categories with
``frequency``, ``synset``...; annotations without ``iscrowd``), read, written back and
evaluated."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from instkit.errors import FormatError
from instkit.io import registry
from instkit.io.lvis import frequency_of, read_lvis, save_lvis


def _document() -> dict[str, Any]:
    def category(cat_id: int, name: str, frequency: str) -> dict[str, Any]:
        return {"id": cat_id, "name": name, "synset": f"{name}.n.01", "synonyms": [name],
                "def": f"a {name}", "frequency": frequency, "image_count": 1,
                "instance_count": 1}

    def image(image_id: int, split: str, neg: list[int], not_exhaustive: list[int]) -> dict[str, Any]:
        return {"id": image_id, "width": 20, "height": 10, "license": 1,
                "coco_url": f"http://images.cocodataset.org/{split}/{image_id:012d}.jpg",
                "flickr_url": "http://farm.example/x.jpg", "date_captured": "2013-11-14",
                "neg_category_ids": neg, "not_exhaustive_category_ids": not_exhaustive}

    return {
        "info": {"description": "hand-made LVIS v1"}, "licenses": [{"id": 1, "name": "cc"}],
        "images": [image(397133, "val2017", [3], []), image(9, "train2017", [], [1])],
        "annotations": [
            {"id": 1, "image_id": 397133, "category_id": 1, "area": 16.0,
             "bbox": [2.0, 2.0, 4.0, 4.0], "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]},
            {"id": 2, "image_id": 9, "category_id": 2, "area": 12.0,
             "bbox": [10.0, 1.0, 4.0, 3.0], "segmentation": [[10, 1, 14, 1, 14, 4, 10, 4]]},
        ],
        "categories": [category(1, "acorn", "r"), category(2, "aerosol_can", "c"),
                       category(3, "alarm_clock", "f")],
    }


def _write(root: Path, document: dict[str, Any]) -> Path:
    for split, image_id in (("val2017", 397133), ("train2017", 9)):
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 10)).save(root / split / f"{image_id:012d}.jpg")
    path = root / "lvis_v1_val.json"
    path.write_text(json.dumps(document))
    return path


def test_lvis_fields_are_kept_on_reading(tmp_path: Path) -> None:
    path = _write(tmp_path / "lvis", _document())
    assert registry.detect(path) == "lvis"
    data = read_lvis(path)
    first = data[0]
    assert first.meta.file_name == "val2017/000000397133.jpg"  # from coco_url, as detectron2 does
    assert first.image.shape == (10, 20, 3)
    assert first.meta.extra["coco_image"]["neg_category_ids"] == [3]
    assert data[1].meta.extra["coco_image"]["not_exhaustive_category_ids"] == [1]
    acorn = data.categories[0]
    assert acorn.extra["frequency"] == "r" and acorn.extra["synset"] == "acorn.n.01"
    assert not first.instances.iscrowd.any()


def test_round_trip_gives_the_same_document(tmp_path: Path) -> None:
    data = read_lvis(_write(tmp_path / "lvis", _document()))
    out = tmp_path / "out" / "lvis.json"
    counts = save_lvis(data, out)
    assert counts == {"images": 2, "objects": 2, "crowd": 0, "image_lists_added": 0,
                      "empty_masks_dropped": 0, "frequency_computed": 0}
    written = json.loads(out.read_text())
    original = _document()
    assert written["images"] == original["images"]  # no file_name added, lists as they were
    assert written["categories"] == original["categories"]
    assert written["info"] == original["info"] and written["licenses"] == original["licenses"]
    for mine, theirs in zip(written["annotations"], original["annotations"]):
        assert {k: v for k, v in mine.items() if k != "iscrowd"} == theirs
    assert (tmp_path / "out" / "images" / "val2017" / "000000397133.jpg").is_file()


def test_coco_to_lvis_adds_what_lvis_needs(tmp_path: Path) -> None:
    document = _document()
    for image in document["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids", "coco_url"):
            del image[key]
        image["file_name"] = f"{image['id']}.jpg"
        Image.new("RGB", (20, 10)).save(tmp_path / image["file_name"])
    for category in document["categories"]:
        for key in ("frequency", "image_count", "instance_count"):
            del category[key]
    (tmp_path / "coco.json").write_text(json.dumps(document))
    data = registry.open(tmp_path / "coco.json", "coco")
    counts = registry.save(data, tmp_path / "out" / "lvis.json", "lvis")
    assert counts["image_lists_added"] == 2 and counts["frequency_computed"] == 3
    written = json.loads((tmp_path / "out" / "lvis.json").read_text())
    assert all(im["neg_category_ids"] == [] == im["not_exhaustive_category_ids"]
               for im in written["images"])
    assert [c["frequency"] for c in written["categories"]] == ["r", "r", "r"]
    assert [c["image_count"] for c in written["categories"]] == [1, 1, 0]
    assert [frequency_of(n) for n in (0, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]


def test_written_file_evaluates_with_the_lvis_rules(tmp_path: Path) -> None:
    from instkit.lvis import evaluate_lvis

    data = read_lvis(_write(tmp_path / "lvis", _document()))
    save_lvis(data, tmp_path / "out" / "lvis.json")
    written = json.loads((tmp_path / "out" / "lvis.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                "segmentation": a["segmentation"]} for a in written["annotations"]]
    # a detection of the negative category 3 in image 397133 is a false positive there
    results.append({"image_id": 397133, "category_id": 3, "score": 0.95,
                    "segmentation": [[12, 2, 16, 2, 16, 6, 12, 6]]})
    result = evaluate_lvis(tmp_path / "out" / "lvis.json", results)
    assert result.per_category[1] == pytest.approx(1.0)
    assert result.per_category[2] == pytest.approx(1.0)


@pytest.mark.parametrize(("change", "where", "words"), [
    (lambda d: d["images"][1].update(neg_category_ids=[7]), "images[1].neg_category_ids",
     "unknown category id(s) [7]"),
    (lambda d: d["images"][0].update(not_exhaustive_category_ids="1"),
     "images[0].not_exhaustive_category_ids", "a list of category ids"),
    (lambda d: d["categories"][2].update(frequency="x"), "categories[2].frequency", "r, c, f"),
])
def test_bad_lvis_fields_are_located(tmp_path: Path, change: Any, where: str, words: str) -> None:
    document = copy.deepcopy(_document())
    change(document)
    path = _write(tmp_path / "lvis", document)
    with pytest.raises(FormatError) as caught:
        read_lvis(path)
    assert words in str(caught.value) and f"at {where}" in str(caught.value)
    assert "lvis_v1_val.json" in str(caught.value)

"""``filter_dataset`` / ``instkit filter``: each rule, every drop counted with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from instkit.cli import cli
from instkit.errors import InstkitError
from instkit.io.coco import read_coco
from instkit.ops import drop_findings_in, filter_dataset
from instkit.ops.common import write_samples

from ._data import annotation, document, write


def _raw(tinycoco) -> dict:
    return json.loads(Path(tinycoco["train_json"]).read_text())


def assert_accounted(result, raw: dict) -> None:
    """Every input annotation is kept or dropped once, and the kept ones are the input's."""
    kept = [int(i) for s in result.samples for i in s.instances.ids]
    dropped = [i for ids in result.drops.annotations.values() for i in ids]
    every = sorted(a["id"] for a in raw["annotations"])
    if sorted(kept + dropped) != every:
        raise AssertionError(f"{len(kept)} kept + {len(dropped)} dropped annotations do not add "
                             f"up to the input's {len(every)}")
    images = [int(s.image_id) for s in result.samples]
    dropped_images = [i for ids in result.drops.images.values() for i in ids]
    if sorted(images + dropped_images) != sorted(im["id"] for im in raw["images"]):
        raise AssertionError("kept + dropped images do not add up to the input's")


def test_keep_and_drop_classes(tinycoco) -> None:
    raw = _raw(tinycoco)
    dataset = read_coco(tinycoco["train_json"])
    ids = {c["name"]: c["id"] for c in raw["categories"]}
    result = filter_dataset(dataset, keep_classes=["person", "car"])
    kept = {int(a) for s in result.samples for a in s.instances.ids}
    expected = {a["id"] for a in raw["annotations"] if a["category_id"] in (ids["person"], ids["car"])}
    assert kept == expected and len(result.samples) == 32  # empty images kept by default
    assert len(result.drops.annotations["class"]) == len(raw["annotations"]) - len(expected)
    assert_accounted(result, raw)
    dropped = filter_dataset(dataset, drop_classes=["person"])
    assert {int(a) for s in dropped.samples for a in s.instances.ids} == {
        a["id"] for a in raw["annotations"] if a["category_id"] != ids["person"]}
    with pytest.raises(InstkitError, match="'persn'"):
        filter_dataset(dataset, keep_classes=["persn"])


def test_accounting_check_fails_when_a_drop_is_not_counted(tinycoco) -> None:
    raw = _raw(tinycoco)
    result = filter_dataset(read_coco(tinycoco["train_json"]), keep_classes=["person"])
    result.drops.annotations["class"].pop()
    with pytest.raises(AssertionError, match="do not add up"):
        assert_accounted(result, raw)


def test_prune_categories_keeps_ids(tinycoco, tmp_path: Path) -> None:
    dataset = read_coco(tinycoco["train_json"])
    result = filter_dataset(dataset, keep_classes=["car", "person"], prune_categories=True,
                            empty="drop")
    assert [c.name for c in result.categories] == ["person", "car"]
    out = write_samples(result.samples, tmp_path / "f.json", result.categories,
                        inputs=[tinycoco["train_json"]], source=dataset)
    doc = json.loads(out.read_text())
    assert {c["id"] for c in doc["categories"]} == {1, 3}
    assert {a["category_id"] for a in doc["annotations"]} == {1, 3}
    raw = _raw(tinycoco)
    assert_accounted(result, raw)
    assert set(result.drops.images) == {"no-annotations-in-input", "no-annotations-left"}


def test_area_range_uses_the_coco_area(tinycoco) -> None:
    raw = _raw(tinycoco)
    result = filter_dataset(read_coco(tinycoco["train_json"]), min_area=1000, max_area=50000)
    kept = {int(a) for s in result.samples for a in s.instances.ids}
    assert kept == {a["id"] for a in raw["annotations"] if 1000 <= a["area"] < 50000}
    assert result.drops.annotations["area-below-min"] and result.drops.annotations["area-at-or-above-max"]
    assert_accounted(result, raw)


@pytest.mark.parametrize("crowd", ["drop", "only"])
def test_crowd(tinycoco, crowd: str) -> None:
    raw = _raw(tinycoco)
    result = filter_dataset(read_coco(tinycoco["train_json"]), crowd=crowd, empty="drop")
    kept = {int(a) for s in result.samples for a in s.instances.ids}
    want = 1 if crowd == "only" else 0
    assert kept == {a["id"] for a in raw["annotations"] if a["iscrowd"] == want}
    assert_accounted(result, raw)


def test_image_size(tinycoco) -> None:
    raw = _raw(tinycoco)
    result = filter_dataset(read_coco(tinycoco["train_json"]), min_width=500, max_height=480)
    assert {int(s.image_id) for s in result.samples} == {
        im["id"] for im in raw["images"] if im["width"] >= 500 and im["height"] <= 480}
    assert "in-dropped-image (image-narrower-than-min-width)" in result.drops.annotations
    assert_accounted(result, raw)


def _with_findings(tmp_path: Path) -> Path:
    """Image 1: a good square and one whose bbox is far from its polygon (bbox-mismatch);
    image 2: its file is missing; image 3: no annotation."""
    Image.new("RGB", (32, 32)).save(tmp_path / "1.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "3.png")
    images = [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2, 3)]
    bad_box = annotation(2, 1, 1, x=10, size=8)
    bad_box["bbox"] = [0, 0, 30, 30]
    anns = [annotation(1, 1, 1), bad_box, annotation(3, 2, 1)]
    return write(tmp_path / "f.json", document(images, anns, [{"id": 1, "name": "thing"}]))


def test_validation_findings(tmp_path: Path) -> None:
    path = _with_findings(tmp_path)
    findings = drop_findings_in(path, ["bbox-mismatch", "image-missing"])
    assert findings.annotations == {2: "bbox-mismatch"} and findings.images == {2: "image-missing"}
    result = filter_dataset(findings.dataset, findings=findings)
    assert [int(s.image_id) for s in result.samples] == [1, 3]
    assert result.drops.annotations == {"finding:bbox-mismatch": [2],
                                        "in-dropped-image (finding:image-missing)": [3]}
    assert result.drops.images == {"finding:image-missing": [2]}
    assert_accounted(result, json.loads(path.read_text()))
    with pytest.raises(InstkitError, match="unknown finding code"):
        drop_findings_in(path, ["bbox-wrong"])


def test_error_findings_need_naming(tmp_path: Path) -> None:
    path = _with_findings(tmp_path)
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segmentation"] = [[1, 1, 2, 2]]  # the 4-number trap: an error
    write(path, doc)
    with pytest.raises(InstkitError, match="polygon-4-number-trap"):
        drop_findings_in(path, ["bbox-mismatch"])
    findings = drop_findings_in(path, ["polygon-4-number-trap"])
    result = filter_dataset(findings.dataset, findings=findings)
    assert result.drops.annotations == {"finding:polygon-4-number-trap": [1]}
    assert_accounted(result, doc)


def test_cli_filter(tmp_path: Path, tinycoco) -> None:
    runner = CliRunner()
    out = tmp_path / "people.json"
    result = runner.invoke(cli, ["filter", str(tinycoco["train_json"]), "-o", str(out),
                                 "--keep-class", "person", "--crowd", "drop", "--empty", "drop",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    doc = json.loads(out.read_text())
    assert report["kept"]["annotations"] == len(doc["annotations"])
    assert report["kept"]["images"] == len(doc["images"])
    assert report["dropped"]["annotations"]["crowd"]["count"] >= 1
    assert all(a["category_id"] == 1 and a["iscrowd"] == 0 for a in doc["annotations"])
    text = runner.invoke(cli, ["filter", str(tinycoco["train_json"]), "-o", str(tmp_path / "t.json"),
                               "--min-area", "500"])
    assert text.exit_code == 0 and "area-below-min" in text.output
    over = runner.invoke(cli, ["filter", str(out), "-o", str(out)])
    assert over.exit_code == 2 and "would be written over" in over.output
    both = runner.invoke(cli, ["filter", str(out), "-o", str(tmp_path / "x.json"),
                               "--keep-class", "person", "--drop-class", "car"])
    assert both.exit_code == 2

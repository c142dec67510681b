"""``instkit convert`` end to end: COCO -> X -> COCO through the command line for every X."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from instkit.cli import cli


@pytest.mark.parametrize("fmt", ["hf", "yolo", "labelschema", "pngmasks"])
def test_coco_to_format_and_back(fmt: str, tinycoco: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / fmt
    result = runner.invoke(cli, ["convert", str(tinycoco["val_json"]), str(out), "--to", fmt,
                                 "--images", str(tinycoco["val_images"])])
    assert result.exit_code == 0, result.output
    if fmt == "yolo":
        assert "extra polygon parts joined" in result.output  # what was done is stated
    back = tmp_path / "back" / "annotations.json"
    result = runner.invoke(cli, ["convert", str(out), str(back), "--to", "coco"])
    assert result.exit_code == 0, result.output
    original = json.loads(tinycoco["val_json"].read_text())
    document = json.loads(back.read_text())
    assert len(document["annotations"]) == len(original["annotations"])
    assert {im["id"] for im in document["images"]} == {im["id"] for im in original["images"]}
    check = runner.invoke(cli, ["validate", str(back), "--images", str(back.parent / "images")])
    assert check.exit_code == 0, check.output


def test_same_format_is_a_usage_error(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["convert", str(tinycoco["val_json"]), str(tmp_path / "x.json"),
                                      "--to", "coco"])
    assert result.exit_code == 2


def _two_folders_same_name(root: Path) -> Path:
    """A COCO file whose images are ``a/1.jpg`` and ``b/1.jpg``: same base name, different
    pictures and objects."""
    from PIL import Image

    images = []
    for image_id, (folder, colour) in enumerate((("a", 40), ("b", 200)), start=1):
        (root / folder).mkdir(parents=True)
        Image.new("RGB", (40, 30), (colour, colour, colour)).save(root / folder / "1.jpg")
        images.append({"id": image_id, "file_name": f"{folder}/1.jpg", "width": 40, "height": 30})
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0,
         "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
        {"id": 2, "image_id": 2, "category_id": 2, "iscrowd": 0, "area": 200.0,
         "bbox": [10, 5, 20, 10], "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
    ]
    document = {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("fmt", ["yolo", "labelschema", "pngmasks", "hf"])
def test_images_with_the_same_name_in_two_folders_stay_two(fmt: str, tmp_path: Path) -> None:
    from PIL import Image

    if fmt == "hf":
        pytest.importorskip("datasets")
    source = _two_folders_same_name(tmp_path / "src")
    runner = CliRunner()
    out = tmp_path / fmt
    result = runner.invoke(cli, ["convert", str(source), str(out), "--to", fmt])
    assert result.exit_code == 0, result.output
    back = tmp_path / "back" / "annotations.json"
    result = runner.invoke(cli, ["convert", str(out), str(back), "--to", "coco"])
    assert result.exit_code == 0, result.output
    document = json.loads(back.read_text())
    names = sorted(image["file_name"] for image in document["images"])
    assert names == ["a/1.jpg", "b/1.jpg"]  # before: one image, "1.jpg"
    by_name = {image["file_name"]: image["id"] for image in document["images"]}
    labels = {ann["image_id"]: ann["category_id"] for ann in document["annotations"]}
    assert len(document["annotations"]) == 2
    assert labels == {by_name["a/1.jpg"]: 1, by_name["b/1.jpg"]: 2}
    shades = {name: Image.open(back.parent / "images" / name).convert("L").getpixel((0, 0))
              for name in names}
    assert shades["a/1.jpg"] < 100 < shades["b/1.jpg"]


@pytest.mark.parametrize("fmt", ["yolo", "labelschema", "pngmasks"])
def test_two_images_that_one_layout_name_would_merge_are_refused(fmt: str, tmp_path: Path) -> None:
    source = _two_folders_same_name(tmp_path / "src")
    document = json.loads(source.read_text())
    (tmp_path / "src" / "a" / "1.jpg").rename(tmp_path / "src" / "a" / "1.JPEG")
    document["images"][0]["file_name"] = "a/1.JPEG"
    (tmp_path / "src" / "b" / "1.jpg").rename(tmp_path / "src" / "a" / "1.jpg")
    document["images"][1]["file_name"] = "a/1.jpg"
    source.write_text(json.dumps(document))
    result = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "out"), "--to", fmt])
    assert result.exit_code == 2, result.output
    assert "would be written under the same name" in result.output
    # the writer stopped half-way: nothing of it is left (before: a half-written folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_outputs_over_inputs_are_refused(tmp_path: Path) -> None:
    source = _two_folders_same_name(tmp_path / "src")
    runner = CliRunner()
    assert runner.invoke(cli, ["convert", str(source), str(tmp_path / "y"), "--to", "yolo"]).exit_code == 0
    # COCO images go beside OUT: here that is the YOLO folder's own images/
    result = runner.invoke(cli, ["convert", str(tmp_path / "y"), str(tmp_path / "y" / "ann.json"),
                                 "--to", "coco"])
    assert result.exit_code == 2 and "input" in result.output, result.output
    result = runner.invoke(cli, ["convert", str(tmp_path / "y"), str(tmp_path / "y" / "sub"),
                                 "--to", "pngmasks"])
    assert result.exit_code == 2 and "inside the input folder" in result.output
    (tmp_path / "z" / "images").mkdir(parents=True)
    (tmp_path / "z" / "images" / "keep.jpg").write_bytes(b"someone else's")
    result = runner.invoke(cli, ["convert", str(tmp_path / "y"), str(tmp_path / "z" / "ann.json"),
                                 "--to", "coco"])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "z" / "images" / "keep.jpg").read_bytes() == b"someone else's"


def test_yolo_splits_from_several_sources(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    """`--split val=VAL.json` writes train and val into one YOLO-seg folder and data.yaml, and
    reading it back gives each split's images and objects; other targets refuse it."""
    from instkit.io.coco import read_coco
    from instkit.io.yolo import read_yolo

    sources = {}
    for split in ("train", "val"):  # each COCO file with its images/ beside it
        folder = tmp_path / split
        folder.mkdir()
        (folder / "images").symlink_to(tinycoco[f"{split}_images"])
        sources[split] = folder / "ann.json"
        sources[split].write_bytes(tinycoco[f"{split}_json"].read_bytes())
    out = tmp_path / "yolo"
    result = CliRunner().invoke(cli, ["convert", str(sources["train"]), str(out), "--to", "yolo",
                                      "--split", f"val={sources['val']}"])
    assert result.exit_code == 0, result.output
    for split in ("train", "val"):
        expected = read_coco(tinycoco[f"{split}_json"])
        back = read_yolo(out, split=split)
        assert len(back) == len(expected)
        assert sum(len(s.instances) for s in back) == expected.num_annotations
    assert "val: images/val" in (out / "data.yaml").read_text()
    refused = CliRunner().invoke(cli, ["convert", str(sources["train"]), str(tmp_path / "c"),
                                       "--to", "labelschema", "--split", f"val={sources['val']}"])
    assert refused.exit_code == 2 and "only --to yolo" in refused.output

"""``merge_datasets`` / ``instkit merge``: names matched and mapped, ids renumbered, identical
images merged, paths that resolve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from instkit.cli import cli
from instkit.errors import InstkitError
from instkit.io.coco import read_coco
from instkit.ops import merge_datasets, write_merged

from ._data import annotation, document, write


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _two_inputs(root: Path) -> tuple[Path, Path]:
    """A: cat(1) dog(2) person(3), images a1 a2. B: dog(1) human(2) bird(3), images b1 (the
    bytes of a1 under another name) and b2. Both number images and annotations from 1."""
    _image(root / "A" / "img" / "a1.png", 1)
    _image(root / "A" / "img" / "a2.png", 2)
    (root / "B" / "pics").mkdir(parents=True)
    shutil.copyfile(root / "A" / "img" / "a1.png", root / "B" / "pics" / "b1.png")
    _image(root / "B" / "pics" / "b2.png", 3)
    size = {"width": 32, "height": 24}
    a = document(
        [{"id": 1, "file_name": "a1.png", **size}, {"id": 2, "file_name": "a2.png", **size}],
        [annotation(1, 1, 1, x=1), annotation(2, 1, 3, x=10), annotation(3, 2, 2, x=5)],
        [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "person"}])
    b = document(
        [{"id": 1, "file_name": "b1.png", **size}, {"id": 2, "file_name": "b2.png", **size}],
        [annotation(1, 1, 2, x=20), annotation(2, 2, 1, x=3), annotation(3, 2, 3, x=12)],
        [{"id": 1, "name": "dog"}, {"id": 2, "name": "human"}, {"id": 3, "name": "bird"}])
    return write(root / "A" / "img" / "a.json", a), write(root / "B" / "pics" / "b.json", b)


def _names_by_box(path: Path) -> dict[tuple[str, float], str]:
    """(image file base name, bbox x) -> category name, for every annotation of a COCO file."""
    doc = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {im["id"]: Path(im["file_name"]).name for im in doc["images"]}
    return {(files[a["image_id"]], a["bbox"][0]): names[a["category_id"]]
            for a in doc["annotations"]}


def assert_resolves(path: Path, image_root: Path) -> None:
    """Every image of the COCO file at ``path`` loads from ``image_root`` at its stated size."""
    for sample in read_coco(path, image_root):
        assert sample.image.shape[:2] == sample.image_size


def assert_unique_ids(path: Path) -> None:
    doc = json.loads(path.read_text())
    for key in ("images", "annotations"):
        ids = [entry["id"] for entry in doc[key]]
        if len(ids) != len(set(ids)):
            raise AssertionError(f"{key} ids repeat: {sorted(ids)}")


def test_names_mapped_ids_renumbered_identical_images_united(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    a, b = read_coco(a_path), read_coco(b_path)
    out = tmp_path / "out" / "merged.json"
    result = merge_datasets([a, b], mapping={"human": "person"}, out=out)
    write_merged(result, out)
    doc = json.loads(out.read_text())
    # Categories by name: person is A's id 3 (B's human mapped onto it); bird's id 3 was taken.
    assert {c["name"]: c["id"] for c in doc["categories"]} == {"cat": 1, "dog": 2, "person": 3,
                                                              "bird": 4}
    # b1 has the bytes of a1: one image holding both inputs' annotations.
    assert len(doc["images"]) == 3 and len(doc["annotations"]) == 6
    assert [im["id"] for im in doc["images"]] == [1, 2, 3]
    assert sorted(a["id"] for a in doc["annotations"]) == [1, 2, 3, 4, 5, 6]
    assert_unique_ids(out)
    merged = _names_by_box(out)
    expected = {("a1.png", 1): "cat", ("a1.png", 10): "person", ("a2.png", 5): "dog",
                ("a1.png", 20): "person", ("b2.png", 3): "dog", ("b2.png", 12): "bird"}
    assert merged == expected
    assert result.duplicates[0]["copy"]["file_name"] == "b1.png"
    assert result.drops.images == {"identical-image-merged": [1]}
    assert result.id_map[0]["sources"] == [{"input": 0, "image_id": 1}, {"input": 1, "image_id": 1}]
    # The file_names resolve from the folder holding both inputs' images.
    assert Path(result.image_root) == tmp_path.resolve()
    assert_resolves(out, tmp_path)


def test_first_copy_only_counts_the_dropped_annotations(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    result = merge_datasets([read_coco(a_path), read_coco(b_path)], on_duplicate="first")
    assert sum(len(s.instances) for s in result.samples) == 5
    assert result.drops.annotations == {"identical-image-copy": [1]}


def test_without_hashing_identical_bytes_are_two_images(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    result = merge_datasets([read_coco(a_path), read_coco(b_path)], hash_images=False)
    assert len(result.samples) == 4 and not result.duplicates


def test_the_checks_fail_on_broken_output(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    out = tmp_path / "merged.json"
    write_merged(merge_datasets([read_coco(a_path), read_coco(b_path)], out=out), out)
    doc = json.loads(out.read_text())
    doc["annotations"][1]["id"] = doc["annotations"][0]["id"]
    write(tmp_path / "repeat.json", doc)
    with pytest.raises(AssertionError, match="repeat"):
        assert_unique_ids(tmp_path / "repeat.json")
    with pytest.raises(Exception, match="not found"):
        assert_resolves(out, tmp_path / "A")  # the wrong root


def test_image_root_must_hold_every_image(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    with pytest.raises(InstkitError, match="outside the image root"):
        merge_datasets([read_coco(a_path), read_coco(b_path)], image_root=tmp_path / "A")


def test_mapping_and_keypoint_conflicts_are_errors(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    with pytest.raises(InstkitError, match="'humn'"):
        merge_datasets([read_coco(a_path), read_coco(b_path)], mapping={"humn": "person"})
    doc = json.loads(b_path.read_text())
    doc["categories"][1]["keypoints"] = ["nose"]
    doc["categories"][1]["name"] = "person"
    pose = write(tmp_path / "B" / "pics" / "pose.json", doc)
    doc = json.loads(a_path.read_text())
    doc["categories"][2]["keypoints"] = ["head"]
    other = write(tmp_path / "A" / "img" / "pose.json", doc)
    with pytest.raises(InstkitError, match="different keypoint names"):
        merge_datasets([read_coco(other), read_coco(pose)])


def test_tinycoco_train_and_val(tmp_path: Path, tinycoco) -> None:
    train = read_coco(tinycoco["train_json"], tinycoco["train_images"])
    val = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    out = tmp_path / "merged.json"
    result = merge_datasets([train, val], out=out)
    write_merged(result, out)
    doc = json.loads(out.read_text())
    assert len(doc["images"]) == 38 and len(doc["annotations"]) == 288 + 136
    assert doc["categories"] == json.loads(Path(tinycoco["train_json"]).read_text())["categories"]
    assert_unique_ids(out)
    assert_resolves(out, Path(result.image_root))
    # Merging a file with itself: every image identical, annotations united (twice each).
    twice = merge_datasets([val, val])
    assert len(twice.samples) == 6 and len(twice.duplicates) == 6
    assert sum(len(s.instances) for s in twice.samples) == 2 * 136


def test_cli_merge(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    out = tmp_path / "m.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["merge", str(a_path), str(b_path), "-o", str(out), "--map",
                                 "human=person", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 3 and report["annotations"] == 6
    assert report["dropped"]["images"]["identical-image-merged"]["count"] == 1
    assert report["per_class"]["person"] == {"images": 1, "instances": 2}  # both on a1 = b1
    text = runner.invoke(cli, ["merge", str(a_path), str(b_path), "-o", str(tmp_path / "t.json")])
    assert text.exit_code == 0 and "identical images merged: 1" in text.output
    over = runner.invoke(cli, ["merge", str(a_path), str(b_path), "-o", str(a_path)])
    assert over.exit_code == 2 and "would be written over" in over.output
    bad = runner.invoke(cli, ["merge", str(a_path), "-o", str(tmp_path / "x.json"), "--map", "cat"])
    assert bad.exit_code == 2 and "OLD=NEW" in bad.output


def _canon(value):
    """Numbers as floats (the writer gives 189.0 where a file had 189: the same value)."""
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _content(path: Path) -> list[tuple]:
    """Every annotation as (image file base name, category name, bbox, area, iscrowd,
    segmentation), sorted: what a split-and-merge round trip must keep."""
    doc = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {im["id"]: Path(im["file_name"]).name for im in doc["images"]}
    return sorted((files[a["image_id"]], names[a["category_id"]], tuple(a["bbox"]), a["area"],
                   a["iscrowd"], json.dumps(_canon(a["segmentation"]), sort_keys=True),
                   tuple(a.get("keypoints", ())), a.get("num_keypoints"))
                  for a in doc["annotations"])


@pytest.mark.parametrize("name", ["tinycoco", "pose_minicoco"])
def test_split_then_merge_gives_the_input_back(tmp_path: Path, name: str, request) -> None:
    from instkit.ops import split_dataset, write_splits

    paths_of = request.getfixturevalue(name)
    source, images = paths_of["train_json"], paths_of["train_images"]
    data = read_coco(source, images)
    paths = write_splits(data, split_dataset(data, {"a": 0.5, "b": 0.3, "c": 0.2}, seed=4),
                         tmp_path / "parts")
    parts = [read_coco(p, images) for p in paths.values()]
    out = tmp_path / "whole.json"
    result = merge_datasets(parts, out=out)
    write_merged(result, out)
    assert not result.duplicates and not result.drops.images
    assert _content(out) == _content(Path(source))
    assert json.loads(out.read_text())["categories"] == json.loads(Path(source).read_text())["categories"]
    assert_resolves(out, Path(result.image_root))


def test_copies_with_and_without_masks_or_keypoints(tmp_path: Path) -> None:
    _image(tmp_path / "p" / "one.png", 9)
    (tmp_path / "q").mkdir()
    shutil.copyfile(tmp_path / "p" / "one.png", tmp_path / "q" / "same.png")
    shutil.copyfile(tmp_path / "p" / "one.png", tmp_path / "q" / "again.png")
    size = {"width": 32, "height": 24}
    person = {"id": 1, "name": "person", "keypoints": ["nose", "eye"], "skeleton": [[1, 2]]}
    posed = annotation(1, 1, 1, keypoints=[3, 3, 2, 4, 4, 1], num_keypoints=2)
    a = write(tmp_path / "p" / "a.json", document([{"id": 1, "file_name": "one.png", **size}],
                                                  [posed], [person]))
    boxes = annotation(1, 1, 1, x=9)
    del boxes["segmentation"]
    b = write(tmp_path / "q" / "b.json", document([{"id": 1, "file_name": "same.png", **size}],
                                                  [boxes], [{"id": 1, "name": "person"}]))
    c = write(tmp_path / "q" / "c.json", document([{"id": 1, "file_name": "again.png", **size}],
                                                  [annotation(1, 1, 1, x=15)],
                                                  [{"id": 1, "name": "person"}]))
    result = merge_datasets([read_coco(a), read_coco(b), read_coco(c)])
    assert len(result.samples) == 1
    inst = result.samples[0].instances
    # c's polygon joined a's posed row, with keypoints "not labelled"; b's box-only row could not.
    assert len(inst) == 2 and inst.keypoints.shape == (2, 2, 3)
    assert inst.keypoints[1].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert result.drops.annotations == {"identical-image-not-united": [1]}
    assert [d["annotations"] for d in result.duplicates] == [
        "annotations of the copy dropped: one copy has masks and the other only boxes",
        "annotations united"]
    out = tmp_path / "m.json"
    write_merged(result, out)
    doc = json.loads(out.read_text())
    assert [a["num_keypoints"] for a in doc["annotations"]] == [2, 0]
    assert doc["categories"][0]["keypoints"] == ["nose", "eye"]


def test_cli_merge_copies_images_into_a_new_folder(tmp_path: Path) -> None:
    a_path, b_path = _two_inputs(tmp_path)
    out = tmp_path / "self" / "merged.json"
    copies = tmp_path / "self" / "images"
    runner = CliRunner()
    result = runner.invoke(cli, ["merge", str(a_path), str(b_path), "-o", str(out),
                                 "--copy-images", str(copies), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["image_root"] == str(copies.resolve())
    assert sorted(p.name for p in copies.rglob("*.png")) == ["a1.png", "a2.png", "b2.png"]
    assert_resolves(out, copies)
    assert (tmp_path / "A" / "img" / "a1.png").is_file()  # the inputs are untouched
    again = runner.invoke(cli, ["merge", str(a_path), "-o", str(tmp_path / "x.json"),
                                "--copy-images", str(copies)])
    assert again.exit_code == 2 and "not empty" in again.output
    assert not (tmp_path / "x.json").exists()

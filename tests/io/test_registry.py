"""The format registry: one place for detection, reading, writing and losses; COCO -> X -> COCO
through ``instkit.io.open`` / ``save`` for every format, and the command line and the engine
going through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import instkit.io as io
from instkit.cli import cli
from instkit.errors import FormatError, InstkitError
from instkit.io import registry
from tests.io._roundtrip import by_annotation, mask_iou

# Exact formats keep every mask pixel for pixel; the others are checked in their own tests.
EXACT = ["labelme", "cvat", "sa1b", "lvis", "labelschema", "pngmasks", "hf"]
FILE_TARGETS = {"coco": "a.json", "lvis": "a.json", "cvat": "annotations.xml"}


def _target(root: Path, fmt: str) -> Path:
    return root / fmt / FILE_TARGETS.get(fmt, "")


def test_every_format_is_registered_once() -> None:
    assert set(registry.names()) >= {"coco", "hf", "yolo", "labelschema", "pngmasks", "labelme",
                                     "cvat", "sa1b", "lvis"}
    for fmt in registry.formats().values():
        assert fmt.output in ("file", "folder") and fmt.description
        assert all(isinstance(v, str) for v in fmt.loss_table().values())


@pytest.mark.parametrize("fmt", EXACT)
def test_coco_to_format_and_back_is_exact(fmt: str, tinycoco: dict[str, Path],
                                          tmp_path: Path) -> None:
    if fmt == "hf":
        pytest.importorskip("datasets")
    source = io.open(tinycoco["val_json"], images=tinycoco["val_images"])
    out = _target(tmp_path, fmt)
    counts = io.save(source, out, fmt)
    assert counts["images"] == len(source)
    assert io.detect(out.parent if fmt == "cvat" else out) == fmt
    back = io.open(out)
    assert len(back) == len(source)
    mine = {s.meta.file_name: s for s in back}
    objects = 0
    for sample in source:
        other = mine[sample.meta.file_name]
        assert len(other.instances) == len(sample.instances)
        if fmt in ("lvis", "labelschema", "pngmasks", "hf", "sa1b"):  # ids are kept
            pairs = by_annotation([other])
            rows = [pairs[i][1] for i in sample.instances.ids.tolist()]
        else:  # ids are renumbered, objects stay in order
            rows = list(range(len(other.instances)))
        for i, j in enumerate(rows):
            assert mask_iou(sample, i, other, j) == 1.0
            if fmt != "sa1b":  # SA-1B has no classes
                assert sample.instances.labels[i] == other.instances.labels[j]
            objects += 1
    assert objects == sum(len(s.instances) for s in source) > 100
    # what the target could not keep is counted, never silent: tinycoco val has one crowd region
    if fmt in ("labelme", "cvat", "sa1b", "lvis"):
        assert counts["crowd"] == 1


def test_detection_failure_names_the_formats_tried(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError) as caught:
        io.detect(tmp_path / "empty")
    assert "labelme" in str(caught.value) and "cvat" in str(caught.value)
    with pytest.raises(InstkitError, match="not found"):
        io.detect(tmp_path / "nothing")


def test_options_a_format_does_not_take_are_refused(tinycoco: dict[str, Path],
                                                    tmp_path: Path) -> None:
    with pytest.raises(InstkitError, match="the coco reader does not take split"):
        io.open(tinycoco["val_json"], split="train")
    with pytest.raises(InstkitError, match="unknown format 'voc'"):
        io.open(tinycoco["val_json"], format="voc")
    source = io.open(tinycoco["val_json"], images=tinycoco["val_images"])
    with pytest.raises(InstkitError, match="the labelme writer does not take mask_format"):
        io.save(source, tmp_path / "x", "labelme", mask_format="rle")


def test_registering_a_format_makes_it_openable(tmp_path: Path) -> None:
    from instkit.io.registry import Format, SampleList

    marker = tmp_path / "data.toy"
    marker.write_text("toy")
    toy = Format("toy", "a test format", lambda p: p.suffix == ".toy",
                 lambda p: SampleList([], format="toy"), lambda s, o, c: {"images": 0})
    registry.register(toy)
    try:
        assert io.detect(marker) == "toy"
        assert len(io.open(marker)) == 0
    finally:
        registry._FORMATS.pop("toy")


@pytest.mark.parametrize("fmt", ["labelme", "cvat", "sa1b", "lvis"])
def test_convert_command_to_the_new_formats_and_back(fmt: str, tinycoco: dict[str, Path],
                                                     tmp_path: Path) -> None:
    runner = CliRunner()
    out = _target(tmp_path, fmt)
    result = runner.invoke(cli, ["convert", str(tinycoco["val_json"]), str(out), "--to", fmt,
                                 "--images", str(tinycoco["val_images"])])
    assert result.exit_code == 0, result.output
    assert "crowd regions written as ordinary" in result.output  # the loss is stated
    back = tmp_path / "back" / "annotations.json"
    result = runner.invoke(cli, ["convert", str(out), str(back), "--to", "coco", "--format",
                                 "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["from"] == fmt
    original = json.loads(tinycoco["val_json"].read_text())
    document = json.loads(back.read_text())
    assert len(document["annotations"]) == len(original["annotations"])
    check = runner.invoke(cli, ["validate", str(back), "--images", str(back.parent / "images")])
    assert check.exit_code == 0, check.output


def test_convert_states_what_reading_approximated(tmp_path: Path) -> None:
    from tests.io.test_labelme import _document, _write

    folder = _write(tmp_path / "lm", _document(), ["cat", "dog"])
    result = CliRunner().invoke(cli, ["convert", str(folder), str(tmp_path / "out" / "a.json"),
                                      "--to", "coco"])
    assert result.exit_code == 0, result.output
    assert "LabelMe circles traced as polygons (reading labelme)" in result.output
    assert "point/line (and __ignore__) shapes: not objects" in result.output


def test_engine_opens_any_registered_format(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    from instkit.engine.data import open_dataset

    source = io.open(tinycoco["val_json"], images=tinycoco["val_images"])
    io.save(source, tmp_path / "lm", "labelme")
    data = open_dataset(tmp_path / "lm")
    assert len(data) == len(source) and data.categories.names == source.categories.names
    assert data[0].image.shape[2] == 3
    assert len(open_dataset(tinycoco["val_json"], tinycoco["val_images"])) == len(source)


def test_dataset_page_reads_through_the_registry(tmp_path: Path) -> None:
    from instkit.viz.pages import dataset_report
    from tests.io.test_cvat import _write as write_cvat_folder
    from tests.viz.test_pages import load_data

    folder = write_cvat_folder(tmp_path / "cvat")
    out = tmp_path / "report"
    dataset_report(folder / "annotations.xml", out_dir=out, progress=False, workers=1)
    data = load_data(out)
    assert [r["n"] for r in data["images"]] == [3, 1]
    assert [c["name"] for c in data["categories"]][:2] == ["car", "person"]
    assert any("validation (COCO's rules) was not run" in n for n in data["notes"])
    assert any("points/polylines/skeletons/tags: not objects" in n for n in data["notes"])
    assert all((out / r["thumb"]).exists() for r in data["images"])


@pytest.mark.parametrize("fmt", ["labelme", "cvat", "sa1b", "lvis"])
def test_any_sample_comes_back_pixel_for_pixel(fmt: str) -> None:
    """Property: polygons, RLE and bitmaps of any shape (parts outside the image too), written
    and read back, give the same pixels, labels (not SA-1B: no classes) and image."""
    import tempfile

    import numpy as np
    from hypothesis import assume, given

    from instkit.testing.strategies import samples

    @given(samples(max_instances=4))
    def check(sample: Any) -> None:
        masks = sample.instances.masks
        # A polygon that covers no pixel: SA-1B leaves it out (counted), COCO/LVIS cannot box it.
        assume(fmt in ("labelme", "cvat") or not masks.is_empty().any())
        with tempfile.TemporaryDirectory() as folder:
            out = _target(Path(folder), fmt)
            counts = io.save([sample], out, fmt, sample.meta.categories)
            assert counts["images"] == 1 and counts["crowd"] == int(sample.instances.iscrowd.sum())
            (back,) = io.open(out.parent if fmt == "cvat" else out)
            assert back.instances.masks == sample.instances.masks
            if fmt != "sa1b":
                np.testing.assert_array_equal(back.instances.labels, sample.instances.labels)
            np.testing.assert_array_equal(back.image, sample.image)

    check()


def test_report_command_takes_a_labelme_folder(tmp_path: Path) -> None:
    from tests.io.test_labelme import _document, _write
    from tests.viz.test_pages import load_data

    folder = _write(tmp_path / "lm", _document(), ["cat", "dog"])
    out = tmp_path / "page"
    result = CliRunner().invoke(cli, ["report", "dataset", str(folder), "-o", str(out),
                                      "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    data = load_data(out)
    assert [r["n"] for r in data["images"]] == [5]
    assert any("1 LabelMe circles traced as polygons" in n for n in data["notes"])


def test_coco_writer_copies_image_bytes_and_keeps_the_document_fields(tinycoco: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    source = io.open(tinycoco["val_json"], images=tinycoco["val_images"])
    io.save(source, tmp_path / "out" / "a.json", "coco")
    for sample in source:
        copied = tmp_path / "out" / "images" / sample.meta.file_name
        assert copied.read_bytes() == Path(sample.image_path).read_bytes()  # not re-encoded
    written = json.loads((tmp_path / "out" / "a.json").read_text())
    original = json.loads(tinycoco["val_json"].read_text())
    assert written.get("info") == original.get("info")
    assert written.get("licenses") == original.get("licenses")


def test_labelme_files_in_sub_folders_are_detected(tmp_path: Path) -> None:
    from tests.io.test_labelme import _document, _write

    _write(tmp_path / "root" / "day1", _document(), None)
    assert io.detect(tmp_path / "root") == "labelme"
    (sample,) = io.open(tmp_path / "root")
    assert sample.meta.file_name == "day1/img.png"


@pytest.mark.parametrize("fmt", ["labelme", "cvat"])
def test_keypoints_property(fmt: str) -> None:
    """Property: keypoints (named by their category) come back where they were labelled; in
    LabelMe what was not visible (v=1) comes back visible, and is counted."""
    import tempfile

    import numpy as np
    from hypothesis import given

    from instkit.testing.strategies import samples

    @given(samples(max_instances=4, num_keypoints=3))
    def check(sample: Any) -> None:
        with tempfile.TemporaryDirectory() as folder:
            out = _target(Path(folder), fmt)
            counts = io.save([sample], out, fmt, sample.meta.categories)
            (back,) = io.open(out.parent if fmt == "cvat" else out)
            theirs = sample.instances.keypoints
            labelled = theirs[:, :, 2] > 0
            if fmt == "labelme":
                assert counts["keypoints_visibility_lost"] == int((theirs[:, :, 2] == 1).sum())
            if not labelled.any():
                return
            mine = back.instances.keypoints
            np.testing.assert_array_equal(mine[:, :, 2] > 0, labelled)
            if fmt == "cvat":  # occluded="1" keeps v=1
                np.testing.assert_array_equal(mine[:, :, 2], theirs[:, :, 2])
            np.testing.assert_array_equal(mine[labelled][:, :2], theirs[labelled][:, :2])

    check()

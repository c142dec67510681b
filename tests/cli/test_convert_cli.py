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
        assert "extra polygon parts dropped" in result.output  # the loss is stated
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

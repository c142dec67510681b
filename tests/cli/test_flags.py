"""One flag name per concept across verbs; old spellings still accepted but not advertised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from instkit.cli import cli


@pytest.mark.parametrize("verb, shown, hidden", [
    (["predict"], "--score-threshold", "--threshold"),
    (["eval"], "--score-threshold", "--score"),
    (["show"], "--score-threshold", "--score"),
    (["report", "eval"], "--score-threshold", "--score"),
    (["report", "eval"], "--coco", "--gt"),
    (["report", "dataset"], "--no-progress", "--quiet"),
    (["train"], "--no-progress", "--quiet"),
    (["convert"], "--format", "--quiet"),
])
def test_one_name_shown_old_spelling_hidden(verb: list[str], shown: str, hidden: str) -> None:
    out = CliRunner().invoke(cli, [*verb, "--help"])
    assert out.exit_code == 0, out.output
    assert shown in out.output
    assert f"{hidden} " not in out.output and f"{hidden}," not in out.output


def test_stats_format_text_json_and_the_old_table(tinycoco: dict[str, Path]) -> None:
    runner = CliRunner()
    text = runner.invoke(cli, ["stats", str(tinycoco["val_json"]), "--format", "text"])
    old = runner.invoke(cli, ["stats", str(tinycoco["val_json"]), "--format", "table"])
    assert text.exit_code == 0 and old.exit_code == 0 and text.stdout == old.stdout
    as_json = runner.invoke(cli, ["stats", str(tinycoco["val_json"]), "--format", "json"])
    assert json.loads(as_json.stdout)
    bad = runner.invoke(cli, ["stats", str(tinycoco["val_json"]), "--format", "csv"])
    assert bad.exit_code == 2


def test_convert_reports_as_json(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["convert", str(tinycoco["val_json"]), str(tmp_path / "y"),
                                   "--to", "yolo", "--images", str(tinycoco["val_images"]), "--format",
                                   "json", "--no-progress"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["to"] == "yolo" and report["counts"]

"""``instkit validate`` on the command line: output formats, exit codes, --fix."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from instkit.cli import cli


def test_clean_file_exits_0_and_json_is_parseable(tinycoco: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tinycoco["val_json"]), "--images",
                                      str(tinycoco["val_images"]), "--format", "json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["ok"] and payload["images_checked"] and payload["summary"]["error"] == 0


def test_errors_exit_1_text_has_summary_then_details_and_fix_works(tinycoco: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    doc = json.loads(tinycoco["val_json"].read_text())
    doc["annotations"][0]["bbox"][0] += 80
    doc["annotations"][2]["id"] = doc["annotations"][1]["id"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    fixed = tmp_path / "fixed.json"
    result = CliRunner().invoke(cli, ["validate", str(broken), "--fix", str(fixed)])
    assert result.exit_code == 1, result.output
    text = result.output
    assert text.index("severity") < text.index("[error] duplicate-annotation-id")
    assert "bbox recomputed from the mask" in text and "annotation id renumbered" in text
    assert "the repaired file has 0 error(s)" in text
    again = CliRunner().invoke(cli, ["validate", str(fixed)])
    assert again.exit_code == 0, again.output


def test_usage_problems_exit_2(tmp_path: Path, tinycoco: dict[str, Path]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", str(tmp_path / "missing.json")]).exit_code == 2
    assert runner.invoke(cli, ["validate", str(tinycoco["val_json"]), "--format", "xml"]).exit_code == 2
    assert runner.invoke(cli, ["validate", str(tinycoco["val_json"]), "--fix",
                               str(tinycoco["val_json"])]).exit_code == 2


def test_fix_of_an_unparseable_file_is_a_finding_not_a_missing_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    fixed = tmp_path / "fixed.json"
    result = CliRunner().invoke(cli, ["validate", str(broken), "--fix", str(fixed)])
    assert result.exit_code == 1, result.output
    assert "json-parse" in result.output and "no repaired file written" in result.output
    assert not fixed.exists()

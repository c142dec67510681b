"""``instkit eval --errors``: the error analysis in the text table and the JSON report
(tiny RF-DETR trained for one epoch on CPU)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from instkit.cli import cli  # noqa: E402
from instkit.synthetic import write_dataset  # noqa: E402


def test_eval_errors_text_and_json(tmp_path):
    coco = write_dataset(tmp_path / "ds", num_images=3, seed=7, image_size=(64, 64),
                         max_instances=3)
    out = CliRunner().invoke(cli, [
        "train", "rfdetr", "--train", str(coco), "--val", str(coco), "--out",
        str(tmp_path / "run"), "--tiny", "--epochs", "1", "--batch-size", "2", "--no-progress",
        "--preset", "none"])
    assert out.exit_code == 0, out.output
    model = tmp_path / "run"
    out = CliRunner().invoke(cli, ["eval", "--model", str(model), "--data", str(coco),
                                   "--no-progress", "--errors", "on", "--score", "0.0"])
    assert out.exit_code == 0, out.output
    assert "Error analysis at mask IoU 0.5" in out.stdout and "Confusion matrix" in out.stdout
    out = CliRunner().invoke(cli, ["eval", "--model", str(model), "--data", str(coco),
                                   "--no-progress", "--errors", "boundary", "--format", "json"])
    assert out.exit_code == 0, out.output
    analysis = json.loads(out.stdout)["analysis"]
    assert analysis["boundary"] is True and analysis["classes"][-1] == "background"
    n = len(analysis["classes"])
    assert len(analysis["confusion"]) == n and all(len(row) == n for row in analysis["confusion"])
    # every ground-truth object is counted once in its row
    gt = json.loads(coco.read_text())["annotations"]
    assert sum(sum(row) for row in analysis["confusion"][:-1]) == sum(
        1 for a in gt if not a.get("iscrowd"))
    out = CliRunner().invoke(cli, ["eval", "--model", str(model), "--data", str(coco),
                                   "--no-progress"])
    assert out.exit_code == 0 and "Error analysis" not in out.stdout

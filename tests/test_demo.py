"""The demo runs end to end (tiny settings) and on a user's COCO file."""

from __future__ import annotations

import json

from click.testing import CliRunner

from instkit.cli import cli


def test_demo_runs_every_step(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, [
        "demo", "--out", str(out), "--train-images", "6", "--val-images", "3",
        "--image-size", "96", "--model-size", "64", "--rfdetr-steps", "2",
        "--maskrcnn-steps", "1",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"]["error"] == 0
    assert summary["augmentation"]["alignment_violations"] == 0
    assert summary["augmentation"]["instances_out"] > 0
    for kind in ("rfdetr", "maskrcnn"):
        figures = summary["models"][kind]
        assert figures["steps"] == (2 if kind == "rfdetr" else 1)
        assert 0.0 <= figures["mask_map50"] <= 1.0
        results = json.loads((out / "runs" / kind / "val_results.json").read_text())
        assert isinstance(results, list)
    for page in summary["pages"].values():
        assert page.endswith("index.html")
    assert (out / "pages" / "dataset" / "index.html").is_file()
    assert (out / "augment_before_after.png").is_file()
    assert "mask mAP@0.5" in result.output and "open:" in result.output


def test_demo_on_a_users_coco_file(tinycoco, tmp_path):
    out = tmp_path / "user"
    result = CliRunner().invoke(cli, [
        "demo", "--out", str(out), "--coco", str(tinycoco["val_json"]),
        "--images", str(tinycoco["val_images"]), "--models", "", "--no-pages",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == {}
    train = json.loads((out / "data" / "train.json").read_text())
    val = json.loads((out / "data" / "val.json").read_text())
    assert len(train["images"]) + len(val["images"]) == 6
    assert summary["augmentation"]["alignment_violations"] == 0

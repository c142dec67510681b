"""The demo runs end to end (tiny settings) and on a user's COCO file."""

from __future__ import annotations

import json

from click.testing import CliRunner

from instkit.cli import cli


def _step_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "step"]


def test_demo_runs_every_step_and_the_models_learn(tmp_path):
    out = tmp_path / "demo"
    steps = 8  # one step an epoch on 4 images: enough to see the loss fall, cheap
    result = CliRunner().invoke(cli, [
        "demo", "--out", str(out), "--train-images", "4", "--val-images", "2",
        "--image-size", "64", "--model-size", "64", "--rfdetr-steps", str(steps),
        "--maskrcnn-steps", str(steps),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"]["error"] == 0
    assert summary["augmentation"]["alignment_violations"] == 0
    assert summary["augmentation"]["instances_out"] > 0
    for kind in ("rfdetr", "maskrcnn"):
        figures = summary["models"][kind]
        assert figures["steps"] == steps
        assert 0.0 <= figures["mask_map50"] <= 1.0
        results = json.loads((out / "runs" / kind / "val_results.json").read_text())
        assert isinstance(results, list)
        # a short run still learns: the loss of its last steps is below that of its first
        losses = _step_losses(out / "runs" / kind)
        assert len(losses) == steps
        assert sum(losses[-3:]) < sum(losses[:3]), (kind, losses)
    for page in summary["pages"].values():
        assert page.endswith("index.html")
    assert (out / "pages" / "dataset" / "index.html").is_file()
    assert (out / "augment_before_after.png").is_file()
    assert "mask mAP@0.5" in result.output and "open:" in result.output
    # every picture and page written is named under "open:"
    opened = result.output.split("open:")[1]
    written = [*out.glob("*.png"), *out.glob("runs/*/*.png"), *out.glob("pages/*/index.html")]
    assert written and all(str(path) in opened for path in written)


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


def test_the_seed_fixes_the_initial_weights(tmp_path):
    # torch's default seed differs in every process: without seeding, two demo runs of one
    # seed would start from different weights and end with different figures
    def first_losses(name, seed):
        out = tmp_path / name
        result = CliRunner().invoke(cli, [
            "demo", "--out", str(out), "--seed", str(seed), "--train-images", "4",
            "--val-images", "1", "--image-size", "64", "--model-size", "64", "--rfdetr-steps",
            "2", "--models", "rfdetr", "--no-pages"])
        assert result.exit_code == 0, result.output
        return _step_losses(out / "runs" / "rfdetr")

    assert first_losses("a", 3) == first_losses("b", 3)

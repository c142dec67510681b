"""Training to the evaluation page: predict --coco keeps the dataset's ids, report eval --model,
eval's table and --format json (tiny RF-DETR, CPU)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from instkit.cli import cli  # noqa: E402
from instkit.synthetic import write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    coco = write_dataset(root / "ds", num_images=4, seed=5, image_size=(64, 64), max_instances=3)
    # image ids that are not 1..N: results numbered by position would not match them
    document = json.loads(coco.read_text())
    new_ids = {image["id"]: 1000 + 7 * k for k, image in enumerate(document["images"])}
    for image in document["images"]:
        image["id"] = new_ids[image["id"]]
    for annotation in document["annotations"]:
        annotation["image_id"] = new_ids[annotation["image_id"]]
    coco.write_text(json.dumps(document))
    out = CliRunner().invoke(cli, [
        "train", "rfdetr", "--train", str(coco), "--val", str(coco), "--out", str(root / "run"),
        "--tiny", "--epochs", "1", "--batch-size", "2", "--no-progress", "--preset", "none"])
    assert out.exit_code == 0, out.output
    return root / "run", coco, sorted(new_ids.values())


def test_predict_coco_keeps_the_datasets_image_ids(tmp_path, run):
    model, coco, ids = run
    out = CliRunner().invoke(cli, ["predict", "--model", str(model), "--coco", str(coco),
                                   "--images", str(coco.parent), "--out",
                                   str(tmp_path / "p"), "--no-progress", "--format", "json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["images"] == 4 and summary["instances"] > 0
    results = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert {r["image_id"] for r in results} <= set(ids) and results
    # the results file reads back against the ground truth (the old numbering did not)
    from instkit.evaluation import read_coco_results
    from instkit.io.coco import read_coco

    predictions = read_coco_results(tmp_path / "p" / "predictions.json", read_coco(coco))
    assert sum(len(p.instances) for p in predictions) == len(results)


def test_predict_needs_images_or_coco(tmp_path, run):
    model, coco, _ = run
    out = CliRunner().invoke(cli, ["predict", "--model", str(model), "--out", str(tmp_path)])
    assert out.exit_code == 2 and "--coco" in out.output
    out = CliRunner().invoke(cli, ["predict", "--model", str(model), "--coco", str(coco),
                                   "--images", str(tmp_path / "nowhere"), "--out",
                                   str(tmp_path / "p")])
    assert out.exit_code == 2 and "image folder not found" in out.output


def test_report_eval_from_a_run_in_one_command(tmp_path, run):
    model, coco, _ = run
    out = CliRunner().invoke(cli, ["report", "eval", "--model", str(model), "--coco", str(coco),
                                   "--images", str(coco.parent), "-o",
                                   str(tmp_path / "page"), "--no-progress", "--thumb-size", "64",
                                   "--detail-size", "128"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "page" / "index.html").is_file()
    assert (tmp_path / "page" / "predictions.json").is_file()
    out = CliRunner().invoke(cli, ["report", "eval", "--coco", str(coco), "-o",
                                   str(tmp_path / "x")])
    assert out.exit_code == 2 and "--model" in out.output


def test_eval_prints_a_table_and_json(run):
    model, coco, _ = run
    out = CliRunner().invoke(cli, ["eval", "--model", str(model), "--data", str(coco),
                                   "--no-progress"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    assert "mask@.5" in lines[header] and lines[header + 2].startswith("all")
    out = CliRunner().invoke(cli, ["eval", "--model", str(model), "--coco", str(coco),
                                   "--no-progress", "--format", "json", "--score", "0.3"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["images"] == 4 and "mask_map50" in report and report["per_class"]


def test_run_folder_has_config_results_csv_and_curves(run):
    import csv

    model, _, _ = run
    for name in ("config.json", "metrics.jsonl", "results.csv", "curves.png", "summary.json"):
        assert (model / name).is_file(), name
    rows = list(csv.DictReader((model / "results.csv").open()))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    for key in ("train_loss", "lr", "mask_map50", "mask_map", "box_map50", "box_map"):
        assert rows[0][key] != "", key
    assert any(key.startswith("train_loss_") or key.startswith("train_") and key != "train_loss"
               for key in rows[0])  # the loss parts
    config = json.loads((model / "config.json").read_text())
    assert config["batch_size"] == 2 and config["optimizer"] == "adamw"  # resolved defaults
    summary = json.loads((model / "summary.json").read_text())
    assert summary["files"]["results.csv"].endswith("results.csv")
    confusion = json.loads((model / "confusion.json").read_text())
    classes = confusion["classes"]
    assert classes[-1] == "background" and len(classes) == len(summary["last_eval"]["per_class"]) + 1
    assert len(confusion["confusion"]) == len(classes)
    assert all(len(row) == len(classes) for row in confusion["confusion"])
    assert (model / "confusion.png").stat().st_size > 0


def test_console_prints_one_row_per_evaluation():
    from instkit.engine.logging import epoch_row

    header, row = epoch_row({"epoch": 0, "step": 2, "train_loss": 1.5, "train_loss_ce": 0.5,
                             "train_loss_mask_ce": 0.1, "train_loss_mask_dice": 0.2,
                             "lr": 1e-4, "mask_map50": 0.25, "mask_map": 0.1,
                             "box_map50": None, "seconds": 3.0}, 10)
    assert "mask@.5" in header and " ce " in f"{header} "
    assert "mask_ce" in header and "mask_dice" in header
    assert len(header) == len(row)  # columns line up
    assert row.split()[:3] == ["1/10", "2", "1.5000"] and "0.2500" in row and "1.00e-04" in row


def test_wrong_image_folder_stops_before_the_model_is_built(tmp_path, run):
    _, coco, _ = run
    (tmp_path / "empty").mkdir()
    out = CliRunner().invoke(cli, ["train", "rfdetr", "--train", str(coco), "--train-images",
                                   str(tmp_path / "empty"), "--out", str(tmp_path / "r"), "--tiny",
                                   "--no-progress"])
    assert out.exit_code == 2 and "4 of 4 training images not found" in out.output
    assert "--train-images" in out.output and "RF-DETR" not in out.output  # nothing built
    assert not (tmp_path / "r").exists()


def test_a_batch_that_cannot_fit_stops_with_a_hint(tmp_path, run):
    from instkit.engine.memory import estimate_rfdetr

    # the defaults that the kernel killed at 24 GB: 32.8M parameters, batch 16, 560x560, CPU
    killed = estimate_rfdetr(32_800_000, (560, 560), 16, "cpu", amp=True, available=24e9)
    assert not killed.fits and 1 <= killed.largest_batch < 16
    assert estimate_rfdetr(32_800_000, (560, 560), killed.largest_batch, "cpu", amp=True,
                           available=24e9).fits
    _, coco, _ = run
    out = CliRunner().invoke(cli, ["train", "rfdetr", "--train", str(coco), "--out",
                                   str(tmp_path / "r"), "--tiny", "--batch-size", "1000000",
                                   "--no-progress"])
    assert out.exit_code == 2 and "--batch-size" in out.output and "--image-size" in out.output
    assert not (tmp_path / "r" / "last").exists()


def test_train_format_json_prints_the_summary_alone_on_stdout(tmp_path, run):
    _, coco, _ = run
    out = CliRunner().invoke(cli, ["train", "rfdetr", "--train", str(coco), "--out",
                                   str(tmp_path / "r"), "--tiny", "--max-steps", "1",
                                   "--batch-size", "2", "--preset", "none", "--momentum", "0.8",
                                   "--warmup-ratio", "0.5", "--grad-clip", "0", "--format",
                                   "json", "--no-progress"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["steps"] == 1 and summary["history"]
    assert summary["config"]["momentum"] == 0.8 and summary["config"]["warmup_ratio"] == 0.5
    assert summary["config"]["grad_clip"] == 0.0
    # the reuse message names the flag
    again = CliRunner().invoke(cli, ["train", "rfdetr", "--train", str(coco), "--out",
                                     str(tmp_path / "r2"), "--tiny", "--max-steps", "1",
                                     "--batch-size", "2", "--preset", "none", "--no-progress"])
    assert again.exit_code == 0
    reused = CliRunner().invoke(cli, ["train", "rfdetr", "--train", str(coco), "--out",
                                      str(tmp_path / "r2"), "--tiny", "--no-progress"])
    assert reused.exit_code == 2 and "--resume" in reused.output, reused.output

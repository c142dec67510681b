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

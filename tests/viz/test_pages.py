"""Report folders (data, caching, refusals) and the ``show`` / ``report`` verbs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from instkit import read_coco
from instkit.cli import cli
from instkit.errors import InstkitError
from instkit.viz.pages import dataset_report, eval_report
from tests.viz.conftest import write_predictions


def load_data(report_dir: Path) -> dict:
    text = (report_dir / "data.js").read_text()
    prefix = "window.INSTKIT_REPORT = "
    assert text.startswith(prefix)
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


@pytest.fixture()
def synthetic_copy(synthetic_coco: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset (annotation file and images) to edit."""
    target = tmp_path / "data"
    shutil.copytree(synthetic_coco.parent, target)
    return target / synthetic_coco.name


def test_dataset_report_data_matches_the_dataset(synthetic_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    index = dataset_report(synthetic_copy, out_dir=out, progress=False, workers=2)
    assert index == out / "index.html"
    html = index.read_text()
    assert "<script src=\"data.js\"></script>" in html and "http://" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    data = load_data(out)
    dataset = read_coco(synthetic_copy)
    assert len(data["images"]) == len(dataset)
    for record, sample in zip(data["images"], dataset, strict=True):
        inst = sample.instances
        assert record["id"] == sample.image_id
        assert record["n"] == len(inst) == len(record["inst"])
        assert record["labels"] == sorted(set(inst.labels.tolist()))
        assert record["crowd"] == int(inst.iscrowd.sum())
        assert [row["area"] for row in record["inst"]] == inst.masks.area().tolist()
        assert (out / record["thumb"]).exists() and (out / record["full"]).exists()
    counts = {c["label"]: c["count"] for c in data["categories"]}
    labels = np.concatenate([s.instances.labels for s in dataset])
    assert counts == {k: int((labels == k).sum()) for k in counts}
    assert data["drawn"] == len(dataset)


def test_overlays_are_drawn_once(synthetic_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    dataset_report(synthetic_copy, out_dir=out, progress=False, validate=False)
    assert load_data(out)["drawn"] == 8
    dataset_report(synthetic_copy, out_dir=out, progress=False, validate=False)
    assert load_data(out)["drawn"] == 0
    # Editing one annotation redraws that image only.
    document = json.loads(synthetic_copy.read_text())
    first = document["annotations"][0]
    document["annotations"] = [a for a in document["annotations"] if a is not first]
    synthetic_copy.write_text(json.dumps(document))
    dataset_report(synthetic_copy, out_dir=out, progress=False, validate=False)
    assert load_data(out)["drawn"] == 1


def test_validation_findings_reach_their_instance(synthetic_copy: Path, tmp_path: Path) -> None:
    document = json.loads(synthetic_copy.read_text())
    target = next(a for a in document["annotations"] if not a.get("iscrowd"))
    target["bbox"][0] += 15
    synthetic_copy.write_text(json.dumps(document))
    out = tmp_path / "report"
    dataset_report(synthetic_copy, out_dir=out, progress=False)
    data = load_data(out)
    record = next(r for r in data["images"] if r["id"] == target["image_id"])
    row = next(r for r in record["inst"] if r["id"] == target["id"])
    assert "bbox-mismatch" in [f["code"] for f in row["findings"]]
    assert "bbox-mismatch" in record["codes"] and record["nf"] >= 1
    assert any(c["code"] == "bbox-mismatch" for c in data["finding_codes"])


def test_missing_image_becomes_a_finding(synthetic_copy: Path, tmp_path: Path) -> None:
    document = json.loads(synthetic_copy.read_text())
    (synthetic_copy.parent / document["images"][0]["file_name"]).unlink()
    out = tmp_path / "report"
    dataset_report(synthetic_copy, out_dir=out, progress=False, validate=False)
    record = load_data(out)["images"][0]
    assert "image_unreadable" in record["codes"] and "not found" in record["error"]
    assert (out / record["thumb"]).exists()


def test_report_refuses_to_write_over_inputs(synthetic_copy: Path) -> None:
    with pytest.raises(InstkitError, match="input"):
        dataset_report(synthetic_copy, synthetic_copy.parent, synthetic_copy.parent,
                       progress=False)


def test_eval_report_orders_images_by_errors(tinycoco: dict, tinycoco_val, tmp_path: Path) -> None:
    preds = write_predictions(tinycoco_val, tmp_path / "preds.json")
    out = tmp_path / "eval"
    eval_report(tinycoco["val_json"], preds, tinycoco["val_images"], out, progress=False,
                thumb_size=160, detail_size=400)
    data = load_data(out)
    errors = [r["fp"] + r["fn"] for r in data["images"]]
    assert errors == sorted(errors, reverse=True)
    for record in data["images"]:
        # Each image got one planted false positive (where its shifted copy found nothing).
        assert record["fp"] >= 1
        assert record["tp"] == sum(p["outcome"] == "tp" for p in record["preds"])
        assert record["fn"] == sum(g["outcome"] == "missed" for g in record["gts"])
    summary = dict(data["summary"])
    assert 0 < summary["mask mAP@0.5"] < 1
    assert {r["name"] for r in data["per_class"]} >= {"person", "cup"}
    assert (out / "index.html").exists()


def test_show_cli(synthetic_copy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "one.png"
    result = runner.invoke(cli, ["show", str(synthetic_copy), "--index", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(out).size == (read_coco(synthetic_copy)[2].image_size[1],
                                    read_coco(synthetic_copy)[2].image_size[0])
    both = runner.invoke(cli, ["show", str(synthetic_copy), "--index", "0", "--image-id", "1",
                               "-o", str(out)])
    assert both.exit_code != 0 and "not both" in both.output
    missing = runner.invoke(cli, ["show", str(synthetic_copy), "--image-id", "987654",
                                  "-o", str(out)])
    assert missing.exit_code == 2 and "987654" in missing.output
    over = runner.invoke(cli, ["show", str(synthetic_copy), "-o", str(synthetic_copy)])
    assert over.exit_code == 2 and "write over" in over.output


def test_show_cli_transform_and_predictions(synthetic_copy: Path, tmp_path: Path) -> None:
    pytest.importorskip("albumentations")
    runner = CliRunner()
    out = tmp_path / "cmp.png"
    result = runner.invoke(cli, ["show", str(synthetic_copy), "--index", "1", "--transform",
                                 "train", "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    bad = runner.invoke(cli, ["show", str(synthetic_copy), "--transform", "nope", "-o", str(out)])
    assert bad.exit_code != 0 and "unknown preset" in bad.output
    preds = write_predictions(read_coco(synthetic_copy), tmp_path / "p.json")
    result = runner.invoke(cli, ["show", str(synthetic_copy), "--pred", str(preds), "-o",
                                 str(tmp_path / "eval.jpg")])
    assert result.exit_code == 0, result.output


def test_report_cli(synthetic_copy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r"
    result = runner.invoke(cli, ["report", "dataset", str(synthetic_copy), "-o", str(out),
                                 "--quiet", "--thumb-size", "128"])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and load_data(out)["kind"] == "dataset"
    preds = write_predictions(read_coco(synthetic_copy), tmp_path / "p.json")
    result = runner.invoke(cli, ["report", "eval", "--gt", str(synthetic_copy), "--pred",
                                 str(preds), "-o", str(tmp_path / "e"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert load_data(tmp_path / "e")["kind"] == "eval"

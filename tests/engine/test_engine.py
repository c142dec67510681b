"""Engine: checkpoints, resume, evaluation, prediction, CLI errors (tiny models, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from instkit.cli import cli  # noqa: E402
from instkit.engine import (  # noqa: E402
    TrainConfig,
    evaluate_model,
    load_adapter,
    read_metadata,
    restore_training,
    save_checkpoint,
    train,
)
from instkit.engine.logging import read_metrics  # noqa: E402
from instkit.errors import InstkitError  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402
from instkit.models import build_model  # noqa: E402
from tests.engine.conftest import tiny_rfdetr  # noqa: E402


def test_checkpoint_round_trip_keeps_weights_labels_and_optimizer(tmp_path, small_coco):
    data = read_coco(small_coco)
    adapter = tiny_rfdetr(data)
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=1e-3)
    batch = adapter.make_collator()(list(data)[:2])
    loss, _ = adapter.loss(adapter.model.train(), batch)
    loss.backward()
    optimizer.step()
    save_checkpoint(tmp_path / "ck", adapter, optimizer=optimizer, state={"step": 1, "epoch": 0})
    meta = read_metadata(tmp_path / "ck")
    assert meta["kind"] == "rfdetr" and meta["state"]["step"] == 1
    assert [c["id"] for c in meta["categories"]] == data.categories.ids
    loaded, _ = load_adapter(tmp_path / "ck")
    for (name, a), b in zip(adapter.model.state_dict().items(),
                            loaded.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    fresh = torch.optim.AdamW(loaded.model.parameters(), lr=5.0)
    state = restore_training(tmp_path / "ck", optimizer=fresh)
    assert state["step"] == 1 and fresh.param_groups[0]["lr"] == 1e-3
    mine, theirs = optimizer.state_dict()["state"], fresh.state_dict()["state"]
    assert set(mine) == set(theirs)
    torch.testing.assert_close(mine[0]["exp_avg"], theirs[0]["exp_avg"])


def test_resume_continues_from_the_saved_step(tmp_path, small_coco):
    data = read_coco(small_coco)
    config = TrainConfig(epochs=2, batch_size=2, lr=1e-3, progress=False, seed=3,
                         scheduler="constant")  # max_steps would resize a cosine schedule
    straight = train(tiny_rfdetr(data), data, None, tmp_path / "a", config)
    assert straight.steps == 4 and (tmp_path / "a" / "curves.png").stat().st_size > 0

    first = train(tiny_rfdetr(data), data, None, tmp_path / "b",
                  TrainConfig(**{**config.as_dict(), "max_steps": 3}))
    assert first.steps == 3
    with pytest.raises(InstkitError, match="already holds"):
        train(tiny_rfdetr(data), data, None, tmp_path / "b", config)
    resumed = train(tiny_rfdetr(data), data, None, tmp_path / "b", config, resume=True)
    assert resumed.steps == 4
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")
             if r["type"] == "step"]
    assert steps == [1, 2, 3, 4]  # the resumed run took the one batch left, as step 4
    # same data order, RNG and optimizer state: the same weights as the uninterrupted run
    a, _ = load_adapter(tmp_path / "a" / "last")
    b, _ = load_adapter(tmp_path / "b" / "last")
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(x, y, msg=name, atol=1e-5, rtol=1e-4)


def test_resume_mid_epoch_from_save_every_steps(tmp_path, small_coco):
    data = read_coco(small_coco)
    config = TrainConfig(epochs=1, batch_size=1, lr=1e-3, progress=False, save_every_steps=2,
                         max_steps=3)
    train(tiny_rfdetr(data), data, None, tmp_path / "r", config)
    meta = read_metadata(tmp_path / "r" / "last")
    assert meta["state"]["step"] == 3
    done = train(tiny_rfdetr(data), data, None, tmp_path / "r",
                 TrainConfig(**{**config.as_dict(), "max_steps": None}), resume=True)
    assert done.steps == 4


def test_training_with_validation_logs_every_metric_and_keeps_best(tmp_path, small_coco):
    data = read_coco(small_coco)
    result = train(build_model("maskrcnn", data.categories, backbone="tiny"), data, data,
                   tmp_path / "m", TrainConfig(epochs=1, batch_size=2, progress=False))
    epoch = [r for r in read_metrics(tmp_path / "m" / "metrics.jsonl") if r["type"] == "epoch"]
    assert len(epoch) == 1
    for key in ("train_loss", "mask_map50", "mask_map", "box_map50", "box_map", "mean_iou"):
        assert epoch[0][key] is not None and np.isfinite(epoch[0][key]), key
    assert set(epoch[0]["per_class_mask_ap"]) == set(data.categories.names)
    assert (tmp_path / "m" / "best" / "model.safetensors").is_file()
    assert result.best_epoch == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["last_eval"]["per_class"]


def test_evaluate_model_matches_cocoeval_on_written_predictions(tmp_path, small_coco):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from instkit.evaluation import to_coco_results

    data = read_coco(small_coco)
    adapter = tiny_rfdetr(data)
    result, _, predictions = evaluate_model(adapter, data, progress=False)
    for key, value in result.summary().items():
        assert np.isfinite(value), key
    results = to_coco_results(predictions, data.categories)
    gt = COCO(str(small_coco))
    evaluator = COCOeval(gt, gt.loadRes(results), "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert abs(evaluator.stats[1] - result.mask_map50) < 1e-6
    assert abs(evaluator.stats[0] - result.mask_map) < 1e-6


def test_cli_train_eval_predict(tmp_path, small_coco):
    from pycocotools.coco import COCO

    runner = CliRunner()
    run = tmp_path / "run"
    out = runner.invoke(cli, ["train", "rfdetr", "--train", str(small_coco), "--val",
                              str(small_coco), "--out", str(run), "--tiny", "--epochs", "1",
                              "--batch-size", "2", "--no-progress", "--preset", "none"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["eval", "--model", str(run), "--data", str(small_coco),
                              "--no-progress", "--out", str(tmp_path / "eval.json")])
    assert out.exit_code == 0, out.output
    assert "mask mAP@0.5" in out.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["mask_map50"] is not None and report["per_class"]
    out = runner.invoke(cli, ["predict", "--model", str(run), str(small_coco.parent / "images"),
                              "--out", str(tmp_path / "pred"), "--no-progress"])
    assert out.exit_code == 0, out.output
    document = json.loads((tmp_path / "pred" / "images.json").read_text())
    gt = COCO()
    gt.dataset = {**document, "annotations": []}
    gt.createIndex()
    results = gt.loadRes(str(tmp_path / "pred" / "predictions.json"))
    assert len(results.anns) > 0
    assert all("counts" in a["segmentation"] for a in results.anns.values())
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == 4


def test_cli_bad_inputs_are_clear(tmp_path, small_coco):
    runner = CliRunner()
    out = runner.invoke(cli, ["train", "rfdetr", "--train", str(tmp_path / "missing.json"),
                              "--out", str(tmp_path / "r"), "--tiny"])
    assert out.exit_code == 2 and "dataset not found" in out.output
    out = runner.invoke(cli, ["eval", "--model", str(tmp_path / "nothing"), "--data",
                              str(small_coco)])
    assert out.exit_code == 2 and "model folder not found" in out.output
    # a dataset with a class the checkpoint does not know
    data = read_coco(small_coco)
    adapter = tiny_rfdetr(data)
    save_checkpoint(tmp_path / "ck", adapter)
    document = json.loads(small_coco.read_text())
    document["categories"].append({"id": 99, "name": "hexagon"})
    other = small_coco.parent / "other.json"
    other.write_text(json.dumps(document))
    out = runner.invoke(cli, ["eval", "--model", str(tmp_path / "ck"), "--data", str(other),
                              "--no-progress"])
    assert out.exit_code == 2 and "99:hexagon" in out.output, out.output
    with pytest.raises(InstkitError, match="other categories"):
        train(adapter, read_coco(other), None, tmp_path / "x", TrainConfig(epochs=1))
    out = runner.invoke(cli, ["train", "rfdetr", "--train", str(small_coco), "--out",
                              str(tmp_path / "empty"), "--tiny", "--resume"])
    assert out.exit_code == 2 and "not found" in out.output

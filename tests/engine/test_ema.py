"""EMA of the weights: the average itself, and what training, checkpoints and resume do with it."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from instkit.cli import cli  # noqa: E402
from instkit.engine import TrainConfig, read_metadata, train  # noqa: E402
from instkit.engine.checkpoint import MODEL_FILE, RAW_FILE  # noqa: E402
from instkit.engine.ema import ModelEMA  # noqa: E402
from instkit.errors import InstkitError  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402
from tests.engine.conftest import tiny_rfdetr  # noqa: E402


def test_the_average_follows_the_ramped_decay_and_copies_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(5.0)
    ema.update(model)
    d1 = 0.9 * (1 - math.exp(-1 / 2.0))
    expected = d1 * 1.0 + (1 - d1) * 3.0
    torch.testing.assert_close(ema.module[0].weight, torch.full((1, 2), expected))
    ema.update(model)
    d2 = 0.9 * (1 - math.exp(-2 / 2.0))
    torch.testing.assert_close(ema.module[0].weight,
                               torch.full((1, 2), d2 * expected + (1 - d2) * 3.0))
    assert float(ema.module[1].running_mean) == 5.0  # copied, not averaged
    assert ema.state() == {"decay": 0.9, "tau": 2.0, "updates": 2}
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.0)


def _weights(folder, name=MODEL_FILE):
    return load_file(str(folder / name))


def test_training_saves_the_average_and_resumes_it_exactly(tmp_path, small_coco):
    data = read_coco(small_coco)
    config = TrainConfig(epochs=2, batch_size=2, lr=1e-3, progress=False, seed=3,
                         scheduler="constant", ema=True, ema_decay=0.5)
    adapter = tiny_rfdetr(data)
    train(adapter, data, None, tmp_path / "a", config)  # an evaluation would use the RNG
    last = tmp_path / "a" / "last"
    assert read_metadata(last)["ema"] == {"decay": 0.5, "tau": 100.0, "updates": 4}
    assert json.loads((tmp_path / "a" / "config.json").read_text())["ema"] is True
    averaged, raw = _weights(last), _weights(last, RAW_FILE)
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # the average is saved
    assert not (tmp_path / "a" / "best" / RAW_FILE).exists()  # best/ is for inference only
    # the adapter leaves with the weights that were evaluated and saved
    for name, value in adapter.model.state_dict().items():
        if name in averaged:
            torch.testing.assert_close(value, averaged[name], msg=name)

    train(tiny_rfdetr(data), data, None, tmp_path / "b", TrainConfig(**{**config.as_dict(),
                                                                  "max_steps": 3}))
    assert read_metadata(tmp_path / "b" / "last")["ema"]["updates"] == 3
    train(tiny_rfdetr(data), data, None, tmp_path / "b", config, resume=True)
    resumed = tmp_path / "b" / "last"
    assert read_metadata(resumed)["ema"]["updates"] == 4
    for name in (MODEL_FILE, RAW_FILE):  # both the average and the raw weights continue
        mine, theirs = _weights(last, name), _weights(resumed, name)
        for key in mine:
            torch.testing.assert_close(mine[key], theirs[key], msg=f"{name}:{key}", atol=1e-5,
                                       rtol=1e-4)


def test_without_ema_the_raw_weights_are_saved_alone(tmp_path, small_coco):
    data = read_coco(small_coco)
    adapter = tiny_rfdetr(data)
    train(adapter, data, None, tmp_path / "r",
          TrainConfig(epochs=1, batch_size=2, progress=False, ema=False))
    last = tmp_path / "r" / "last"
    assert "ema" not in read_metadata(last) and not (last / RAW_FILE).exists()
    saved = _weights(last)
    for name, value in adapter.model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(value, saved[name], msg=name)
    with pytest.raises(InstkitError, match="ema_decay"):
        TrainConfig(ema=True, ema_decay=1.5).resolved(adapter)


def test_cli_ema_flags_reach_the_saved_config(tmp_path, small_coco):
    runner = CliRunner()
    base = ["train", "rfdetr", "--train", str(small_coco), "--tiny", "--epochs", "1",
            "--batch-size", "2", "--no-progress", "--preset", "none"]
    out = runner.invoke(cli, [*base, "--out", str(tmp_path / "off"), "--no-ema"])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "off" / "config.json").read_text())["ema"] is False
    out = runner.invoke(cli, [*base, "--out", str(tmp_path / "on"), "--ema-decay", "0.9"])
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "on" / "config.json").read_text())
    assert saved["ema"] is True and saved["ema_decay"] == 0.9  # on by default for RF-DETR
    assert read_metadata(tmp_path / "on" / "last")["ema"]["decay"] == 0.9
    out = runner.invoke(cli, [*base, "--out", str(tmp_path / "bad"), "--ema-decay", "1"])
    assert out.exit_code == 2 and "--ema-decay" in out.output

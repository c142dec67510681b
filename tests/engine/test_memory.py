"""Memory pre-flight: the Mask R-CNN estimate, and `--batch-size auto` from real batches."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from click.testing import CliRunner  # noqa: E402

from instkit.cli import cli  # noqa: E402
from instkit.engine.memory import estimate_maskrcnn, measure_batches  # noqa: E402
from instkit.synthetic import make_samples, write_dataset  # noqa: E402


def test_maskrcnn_estimate_finds_the_largest_batch():
    # torchvision's recipe (resnet50, 800-1333) on a 24 GB host: batch 16 cannot fit
    big = estimate_maskrcnn(44_400_000, "resnet50", 800, 1333, 16, "cpu", available=24e9)
    assert not big.fits and 1 <= big.largest_batch < 16
    assert estimate_maskrcnn(44_400_000, "resnet50", 800, 1333, big.largest_batch, "cpu",
                             available=24e9).fits
    # activations follow the pixels: half the side, about a quarter per image
    one = estimate_maskrcnn(44_400_000, "resnet50", 800, 1333, 2, "cpu", available=24e9)
    half = estimate_maskrcnn(44_400_000, "resnet50", 400, 666, 2, "cpu", available=24e9)
    fixed = estimate_maskrcnn(44_400_000, "resnet50", 800, 1333, 0, "cpu", available=24e9)
    assert 3.5 < (one.needed - fixed.needed) / (half.needed - fixed.needed) < 4.5
    light = estimate_maskrcnn(1_000_000, "tiny", 800, 1333, 2, "cpu", available=24e9)
    assert light.needed < one.needed


def test_the_weights_average_is_counted():
    from instkit.engine.memory import estimate_rfdetr

    # a float32 copy of every parameter, whatever the batch
    cases = [
        (44_400_000, lambda ema: estimate_maskrcnn(44_400_000, "resnet50", 800, 1333, 2, "cpu",
                                                   available=24e9, ema=ema)),
        (33_100_000, lambda ema: estimate_rfdetr(33_100_000, (560, 560), 4, "cpu", False,
                                                 available=24e9, ema=ema)),
    ]
    for params, estimate in cases:
        plain, averaged = estimate(False), estimate(True)
        assert averaged.needed - plain.needed == pytest.approx(4 * params)
        assert averaged.largest_batch <= plain.largest_batch


@pytest.fixture(scope="module")
def tiny_maskrcnn():
    from instkit.models import build_model

    samples = make_samples(3, seed=2, image_size=(64, 64), max_instances=3)
    adapter = build_model("maskrcnn", samples[0].meta.categories, backbone="tiny", image_size=64)
    return adapter, samples


def test_measured_profile_grows_with_the_batch_and_leaves_the_model_alone(tiny_maskrcnn):
    adapter, samples = tiny_maskrcnn
    before = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    profile = measure_batches(adapter, samples, batches=(1, 2), optimizer="sgd")
    assert profile.batches == (1, 2) and len(profile.peaks) == 2
    assert profile.per_image > 0 and profile.needed(4) > profile.needed(2) > 0
    params = sum(p.numel() for p in adapter.model.parameters())
    assert profile.fixed >= 4 * params  # SGD's momentum, which the probe does not create
    assert profile.available is not None and profile.largest_batch(profile.available) >= 1
    after = adapter.model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed  # BatchNorm statistics put back, nothing stepped
    assert all(p.grad is None for p in adapter.model.parameters())


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    return write_dataset(root / "ds", num_images=4, seed=5, image_size=(64, 64), max_instances=3)


def test_auto_batch_size_measures_and_trains(tmp_path, coco):
    out = CliRunner().invoke(cli, [
        "train", "maskrcnn", "--train", str(coco), "--out", str(tmp_path / "r"), "--tiny",
        "--image-size", "64", "--batch-size", "auto", "--max-steps", "1", "--preset", "none",
        "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "measuring training steps of 1 and 2 images" in out.output
    chosen = json.loads((tmp_path / "r" / "config.json").read_text())["batch_size"]
    assert isinstance(chosen, int) and 1 <= chosen <= 4  # at most the 4 training images
    assert f"--batch-size auto: {chosen} (measured" in out.output


def test_a_maskrcnn_batch_that_cannot_fit_stops_with_a_hint(tmp_path, coco):
    out = CliRunner().invoke(cli, [
        "train", "maskrcnn", "--train", str(coco), "--out", str(tmp_path / "r"),
        "--backbone", "resnet18", "--batch-size", "100000", "--no-progress"])
    assert out.exit_code == 2, out.output
    assert "--batch-size" in out.output and "--image-size" in out.output
    assert not (tmp_path / "r" / "last").exists()

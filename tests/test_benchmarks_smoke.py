"""CI smoke of the benchmark suite: every script's --quick run completes with agreeing outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_benchmark_quick_run_agrees(tmp_path, shared_data):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "instkit", "bench", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(p.stem[len("bench_"):] for p in (REPO / "benchmarks").glob("bench_*.py"))
    for name in names:
        payload = json.loads((out / f"{name}-quick.json").read_text())
        assert payload["agree"] is True, name
        assert payload["quick"] is True and payload["rows"], name


def test_the_device_check_runs_on_the_cpu(tmp_path, shared_data):
    """benchmarks/device_check.py is for a machine with a GPU; --device cpu runs the same
    checks here, so that it works the day one is lent."""
    out = tmp_path / "device.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--device", "cpu",
         "--images", "32", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["agree"] is True
    loader_rows = [row for row in payload["rows"] if row["case"].startswith("loader")]
    assert loader_rows and all(row["images_per_s"] > 0 for row in loader_rows)
    assert payload["targets"][0]["target"] == ">= 1000"


def test_the_device_check_sees_a_device_build_that_differs(monkeypatch, shared_data):
    """Its agreement check fails when the first build (the device's) writes other pixels."""
    import importlib.util

    import instkit.data.collate as collate

    spec = importlib.util.spec_from_file_location("device_check",
                                                  REPO / "benchmarks" / "device_check.py")
    device_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_check)
    import torch

    calls = []
    real = collate.write_images

    def first_build_off(images, sizes, mean, std, outs):  # type: ignore[no-untyped-def]
        real(images, sizes, mean, std, outs)
        calls.append(len(images))
        if len(calls) <= 16:  # the device build's 16 images, one call each
            for out in outs:
                out.add_(0.01)

    monkeypatch.setattr(collate, "write_images", first_build_off)
    worst = device_check.check_agreement(torch.device("cpu"))
    assert worst["rfdetr_pixel_values"] > 1e-3

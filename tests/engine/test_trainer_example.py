"""The Transformers-guide example runs end to end with --tiny (Trainer + instkit collator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rfdetr_trainer.py"


def test_trainer_example_tiny(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--tiny", "--out", str(tmp_path / "ex")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "ex" / "metrics.json").read_text())
    for key in ("eval_loss", "eval_mean_iou", "eval_mask_map50", "eval_mask_map"):
        assert key in metrics and metrics[key] is not None, key
    assert 0.0 <= metrics["eval_mask_map50"] <= 1.0

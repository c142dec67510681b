"""Metrics as JSON lines (one record per step and per epoch) and a curve picture of a run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item())
    return value


class MetricsLog:
    """Appends records to a ``.jsonl`` file (flushed per record, so a crash loses nothing).

    Records: ``{"type": "step", "epoch", "step", "loss", "lr", ...}`` and
    ``{"type": "epoch", "epoch", "step", "train_loss", "mask_map50", ...}``; non-finite numbers are
    written as ``null``. ``enabled=False`` (ranks other than 0) writes nothing.
    """

    def __init__(self, path: str | os.PathLike[str], *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_plain(record), allow_nan=False) + "\n")


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def plot_curves(metrics_file: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Training loss per step (and its epoch mean) beside the validation metrics per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from instkit.io.files import atomic_write

    records = read_metrics(metrics_file)
    steps = [r for r in records if r.get("type") == "step" and r.get("loss") is not None]
    epochs = [r for r in records if r.get("type") == "epoch"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        left.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6,
                  label="step loss")
    means = [r for r in epochs if r.get("train_loss") is not None]
    if means:
        left.plot([r["step"] for r in means], [r["train_loss"] for r in means], "o-",
                  label="epoch mean")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.set_yscale("log" if steps and min(r["loss"] for r in steps) > 0 else "linear")
    left.legend(loc="upper right")
    left.set_title("loss")
    names = (("mask_map50", "mask mAP@0.5"), ("mask_map", "mask mAP@.5:.95"),
             ("box_map50", "box mAP@0.5"), ("mean_iou", "union mean IoU"))
    drawn = False
    for key, label in names:
        points = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            right.plot(xs, ys, "o-", label=label)
            drawn = True
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.set_title("validation")
    if drawn:
        right.legend(loc="lower right")
    else:
        right.text(0.5, 0.5, "no validation data", ha="center", va="center")
    fig.tight_layout()
    out = Path(out_png)
    with atomic_write(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return out

"""Metrics as JSON lines (one record per step and per epoch), their CSV table, the console row
of an epoch and a curve picture of a run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from instkit.io.files import json_safe


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
            handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


#: results.csv's leading columns, in order; the loss parts and anything else follow
CSV_COLUMNS = ("epoch", "step", "train_loss", "lr", "mask_map50", "mask_map", "box_map50",
               "box_map", "mean_iou", "best_mask_map50", "seconds", "images_per_second")


def write_results_csv(metrics_file: str | os.PathLike[str],
                      out_csv: str | os.PathLike[str]) -> Path:
    """One row per epoch record of ``metrics_file`` (epochs counted from 1); rewritten whole,
    atomically, so it is complete after every epoch."""
    import csv
    import io

    from instkit.io.files import atomic_write

    epochs = [r for r in read_metrics(metrics_file) if r.get("type") == "epoch"]
    extra: list[str] = []
    for record in epochs:
        for key, value in record.items():
            if key not in CSV_COLUMNS and key not in extra and key != "type" \
                    and not isinstance(value, (dict, list)):
                extra.append(key)
    columns = [*CSV_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in epochs:
        row = []
        for key in columns:
            value = record.get(key)
            if key == "epoch" and value is not None:
                value = int(value) + 1
            row.append("" if value is None else (f"{value:.6g}" if isinstance(value, float)
                                                 else value))
        writer.writerow(row)
    out = Path(out_csv)
    with atomic_write(out) as handle:
        handle.write(buffer.getvalue())
    return out


def _cell(value: Any, width: int, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}f}"
    return f"{value!s:>{width}}"


def _part_label(key: str) -> str:
    """``train_loss_mask_dice`` -> ``mask_dice``: short, and still distinct from its siblings."""
    name = key[len("train_"):]
    return (name[len("loss_"):] if name.startswith("loss_") else name)[:12]


def epoch_row(record: dict[str, Any], epochs: int) -> tuple[str, str]:
    """``(header, row)`` of an epoch record for the console table: losses, learning rate,
    mask and box mAP@0.5 and @.5:.95 (``-`` where not evaluated) and time."""
    parts = [k for k in record if k.startswith("train_") and k != "train_loss"
             and isinstance(record[k], (int, float))]
    names = [("epoch", 7), ("step", 6), ("loss", 8)]
    names += [(label, max(8, len(label))) for label in (_part_label(k) for k in parts)]
    names += [("lr", 9), ("mask@.5", 7), ("mask@.5:.95", 11), ("box@.5", 7), ("box@.5:.95", 10),
              ("time", 7)]
    header = "  ".join(f"{name:>{width}}" for name, width in names)
    values: list[str] = [f"{int(record['epoch']) + 1}/{epochs}".rjust(7),
                         _cell(record.get("step"), 6), _cell(record.get("train_loss"), 8)]
    values += [_cell(record.get(k), w) for k, (_, w) in zip(parts, names[3:3 + len(parts)],
                                                              strict=True)]
    lr = record.get("lr")
    values.append(f"{lr:>9.2e}" if isinstance(lr, float) else _cell(lr, 9))
    values += [_cell(record.get("mask_map50"), 7), _cell(record.get("mask_map"), 11),
               _cell(record.get("box_map50"), 7), _cell(record.get("box_map"), 10)]
    seconds = record.get("seconds")
    values.append(f"{seconds:>6.1f}s" if isinstance(seconds, float) else _cell(seconds, 7))
    return header, "  ".join(values)


def plot_curves(metrics_file: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Training loss per step (and its epoch mean), the learning rate per step, and the
    validation metrics per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    records = read_metrics(metrics_file)
    steps = [r for r in records if r.get("type") == "step" and r.get("loss") is not None]
    epochs = [r for r in records if r.get("type") == "epoch"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
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
    if steps or means:
        left.legend(loc="upper right")
    left.set_title("loss")
    rates = [r for r in steps if r.get("lr") is not None]
    if rates:
        middle.plot([r["step"] for r in rates], [r["lr"] for r in rates], lw=1.0)
    middle.set_xlabel("step")
    middle.set_title("learning rate")
    middle.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    names = (("mask_map50", "mask mAP@0.5"), ("mask_map", "mask mAP@.5:.95"),
             ("box_map50", "box mAP@0.5"), ("box_map", "box mAP@.5:.95"),
             ("mean_iou", "union mean IoU"))
    drawn = False
    for key, label in names:
        points = [(r["epoch"] + 1, r[key]) for r in epochs if r.get(key) is not None]
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
    return _save_png(fig, out_png)


def plot_confusion(matrix: Any, names: list[str], out_png: str | os.PathLike[str],
                   title: str = "") -> Path:
    """A confusion matrix (rows: ground truth, columns: prediction; counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np


    counts = np.asarray(matrix)
    side = max(4.0, 0.45 * len(names) + 2.0)
    fig, axis = plt.subplots(figsize=(side + 1.0, side))
    shown = axis.imshow(counts, cmap="Blues")
    fig.colorbar(shown, ax=axis, fraction=0.046)
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("ground truth")
    axis.set_title(f"confusion matrix ({title})" if title else "confusion matrix")
    if len(names) <= 30:
        top = counts.max() if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            if value:
                axis.text(col, row, str(int(value)), ha="center", va="center", fontsize=7,
                          color="white" if value > top / 2 else "black")
    return _save_png(fig, out_png)


def _save_png(fig: Any, out_png: str | os.PathLike[str]) -> Path:
    """Lay out, write atomically as PNG, close; the written path."""
    import matplotlib.pyplot as plt

    from instkit.io.files import atomic_write

    fig.tight_layout()
    out = Path(out_png)
    with atomic_write(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return out

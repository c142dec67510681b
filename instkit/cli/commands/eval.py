"""``instkit eval``: COCO evaluation of a trained model on a dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from instkit.cli.commands._options import (
    AliasOption,
    echo_json,
    format_option,
    progress_option,
    score_threshold_option,
)


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder of `instkit train` (best/, else last/) or a checkpoint folder.")
@click.option("--data", "--coco", "data_path", cls=AliasOption, hidden_aliases=("--coco",),
              required=True, type=click.Path(path_type=Path),
              help="COCO annotation file, or a Hugging Face dataset folder.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Image folder of a COCO file (default: beside the file).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full report (per class, PR curves, per image) as JSON here.")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: cuda if present).")
@click.option("--workers", type=int, default=0, show_default=True)
@score_threshold_option(0.5, "For the per-image counts and the union mean IoU (mAP uses every "
                             "prediction).", aliases=("--score", "--threshold"))
@click.option("--errors", "errors", type=click.Choice(["off", "on", "boundary"]), default="off",
              show_default=True, help="Error analysis (confusion matrix, TIDE-style breakdown, "
              "per size); 'boundary' matches on min(mask IoU, Boundary IoU).")
@progress_option
@format_option
def command(model_dir: Path, data_path: Path, images: Path | None, out_file: Path | None,
            batch_size: int, device: str | None, workers: int, score_threshold: float,
            errors: str, progress: bool, output_format: str) -> None:
    """Mask mAP@0.5 (primary), mask mAP@.5:.95, box mAP, per-class AP and union mean IoU."""
    from instkit.io.files import atomic_write, refuse_overwrite

    # the report may go in the run folder, not into its checkpoints
    checkpoints = [model_dir, model_dir / "last", model_dir / "best"] \
        if (model_dir / "model.safetensors").is_file() else [model_dir / "last", model_dir / "best"]
    refuse_overwrite([out_file], [data_path, images, *checkpoints], what="--out")
    from instkit.engine import evaluate_model, load_adapter, open_dataset
    from instkit.engine.distributed import pick_device

    device = pick_device(device)
    adapter, meta = load_adapter(model_dir, device=device)
    data = open_dataset(data_path, images)
    adapter.model.to(device)
    result, truth, predicted = evaluate_model(adapter, data, batch_size=batch_size,
                                              device=device, num_workers=workers,
                                              progress=progress, score_threshold=score_threshold)
    if errors != "off":
        from instkit.analysis import add_analysis
        result = add_analysis(result, truth, predicted, boundary=errors == "boundary")
    report = {"model": meta["path"], "data": str(data_path), "images": len(data),
              **result.as_dict()}
    if out_file is not None:
        with atomic_write(out_file) as handle:
            json.dump(report, handle, indent=1, default=str)
    if output_format == "json":
        echo_json(report)
        return
    click.echo(f"model: {meta['path']} ({adapter.describe()})")
    click.echo(f"data:  {data_path} ({len(data)} images)")
    click.echo(format_table(result, score_threshold))
    if result.analysis is not None:
        from instkit.analysis import format_analysis
        click.echo(format_analysis(result.analysis))
    if out_file is not None:
        click.echo(f"report: {out_file}")


def format_table(result: Any, score_threshold: float) -> str:
    """The metrics (mask and box, @0.5 and @.5:.95) overall and per class, as a text table."""
    rows = [("all", result.mask_map50, result.mask_map, result.box_map50, result.box_map,
             sum(int(r.get("num_gt", 0)) for r in result.per_class))]
    for row in result.per_class:
        if row.get("num_gt", 0) or row.get("num_pred", 0):
            rows.append((str(row["name"]), row.get("mask_ap50"), row.get("mask_ap"),
                         row.get("box_ap50"), row.get("box_ap"), int(row.get("num_gt", 0))))
    width = max(12, *(len(r[0]) for r in rows))
    head = (f"{'class':<{width}}  {'mask@.5':>7}  {'mask@.5:.95':>11}  {'box@.5':>7}  "
            f"{'box@.5:.95':>10}  {'objects':>7}")
    lines = [head, "-" * len(head)]
    for name, m50, m, b50, b, n in rows:
        lines.append(f"{name:<{width}}  {_fmt(m50):>7}  {_fmt(m):>11}  {_fmt(b50):>7}  "
                     f"{_fmt(b):>10}  {n:>7}")
    lines.append(f"primary: mask mAP@0.5 {_fmt(result.mask_map50).strip()}; union mean IoU "
                 f"{_fmt(result.mean_iou).strip()} (score >= {score_threshold})")
    return "\n".join(lines)

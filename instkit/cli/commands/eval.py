"""``instkit eval``: COCO evaluation of a trained model on a dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder of `instkit train` (best/, else last/) or a checkpoint folder.")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="COCO annotation file, or a Hugging Face dataset folder.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Image folder of a COCO file (default: beside the file).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full report (per class, PR curves, per image) as JSON here.")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: cuda if present).")
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--score-threshold", type=float, default=0.5, show_default=True,
              help="For the per-image counts and the union mean IoU (mAP uses every prediction).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def command(model_dir: Path, data_path: Path, images: Path | None, out_file: Path | None,
            batch_size: int, device: str | None, workers: int, score_threshold: float,
            progress: bool) -> None:
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
    result, _, _ = evaluate_model(adapter, data, batch_size=batch_size, device=device,
                                  num_workers=workers, progress=progress,
                                  score_threshold=score_threshold)
    click.echo(f"model:  {meta['path']} ({adapter.describe()})")
    click.echo(f"data:   {data_path} ({len(data)} images)")
    click.echo(f"mask mAP@0.5       {_fmt(result.mask_map50)}   (primary)")
    click.echo(f"mask mAP@.5:.95    {_fmt(result.mask_map)}")
    click.echo(f"box mAP@0.5        {_fmt(result.box_map50)}")
    click.echo(f"box mAP@.5:.95     {_fmt(result.box_map)}")
    click.echo(f"union mean IoU     {_fmt(result.mean_iou)}   (score >= {score_threshold})")
    click.echo("per class (mask AP@0.5 / AP@.5:.95, ground truth):")
    for row in result.per_class:
        if row.get("num_gt", 0) or row.get("num_pred", 0):
            click.echo(f"  {row['name']:<20} {_fmt(row.get('mask_ap50'))} / "
                       f"{_fmt(row.get('mask_ap'))}   {row.get('num_gt', 0)}")
    if out_file is not None:
        with atomic_write(out_file) as handle:
            json.dump({"model": meta["path"], "data": str(data_path), **result.as_dict()},
                      handle, indent=1)
        click.echo(f"report: {out_file}")

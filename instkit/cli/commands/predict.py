"""``instkit predict``: run a trained model on images; COCO results JSON and overlays out."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder of `instkit train` (best/, else last/) or a checkpoint folder.")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for predictions.json, images.json and overlays/.")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: cuda if present).")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Score an instance needs to be drawn (predictions.json keeps all).")
@click.option("--overlays/--no-overlays", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def command(model_dir: Path, images: tuple[Path, ...], out_dir: Path, batch_size: int,
            device: str | None, threshold: float, overlays: bool, progress: bool) -> None:
    """Predict IMAGES (files or folders) with a trained model."""
    from instkit.engine.predict import predict_paths

    summary = predict_paths(model_dir, list(images), out_dir, batch_size=batch_size,
                            device=device, overlays=overlays, overlay_threshold=threshold,
                            progress=progress)
    click.echo(f"instkit predict: {summary['images']} image(s), {summary['instances']} "
               f"instance(s) -> {summary['predictions']}"
               + (f"; {len(summary['overlays'])} overlay(s) in {out_dir / 'overlays'}/"
                  if summary["overlays"] else ""))

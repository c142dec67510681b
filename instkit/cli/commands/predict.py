"""``instkit predict``: run a trained model on images; COCO results JSON and overlays out."""

from __future__ import annotations

from pathlib import Path

import click

from instkit.cli.commands._options import (
    echo_json,
    format_option,
    progress_option,
    score_threshold_option,
)


@click.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder of `instkit train` (best/, else last/) or a checkpoint folder.")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--coco", "coco_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Predict the images of this COCO file instead of IMAGES: results keep its "
                   "image and category ids (for `instkit report eval`).")
@click.option("--images", "coco_images", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Image folder of --coco (default: beside the file).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for predictions.json, images.json (IMAGES only) and overlays/.")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: cuda if present).")
@score_threshold_option(0.5, "Score an instance needs to be drawn (predictions.json keeps all).",
                        aliases=("--threshold",))
@click.option("--overlays/--no-overlays", default=True, show_default=True)
@progress_option
@format_option
def command(model_dir: Path, images: tuple[Path, ...], coco_file: Path | None,
            coco_images: Path | None, out_dir: Path, batch_size: int, device: str | None,
            score_threshold: float, overlays: bool, progress: bool, output_format: str) -> None:
    """Predict IMAGES (files or folders), or the images of a COCO file (--coco), with a trained
    model."""
    from instkit.engine.predict import predict_coco, predict_paths

    if coco_file is not None:
        if images:
            raise click.UsageError("give IMAGES or --coco, not both (--images names the folder "
                                   "of --coco)")
        summary = predict_coco(model_dir, coco_file, coco_images, out_dir, batch_size=batch_size,
                               device=device, overlays=overlays,
                               overlay_threshold=score_threshold, progress=progress)
    else:
        if not images:
            raise click.UsageError("give IMAGES (files or folders) or --coco ANN.json")
        if coco_images is not None:
            raise click.UsageError("--images names the image folder of --coco; pass image "
                                   "folders as IMAGES")
        summary = predict_paths(model_dir, list(images), out_dir, batch_size=batch_size,
                                device=device, overlays=overlays,
                                overlay_threshold=score_threshold, progress=progress)
    if output_format == "json":
        echo_json(summary)
        return
    click.echo(f"instkit predict: {summary['images']} image(s), {summary['instances']} "
               f"instance(s) -> {summary['predictions']}"
               + (f"; {len(summary['overlays'])} overlay(s) in {out_dir / 'overlays'}/"
                  if summary["overlays"] else ""))

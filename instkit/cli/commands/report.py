"""``instkit report dataset|eval``: static HTML pages to open from the file system."""

from __future__ import annotations

from pathlib import Path

import click

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_OUT_DIR = click.Path(file_okay=False, path_type=Path)


@click.group("report")
def command() -> None:
    """Write an HTML page for a dataset or an evaluation (no server, no network)."""


def _common(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.option("-o", "--out", "out_dir", type=_OUT_DIR, required=True,
                     help="Report folder (index.html, data.js, img/)."),
        click.option("--thumb-size", type=click.IntRange(64, 1024), default=320,
                     show_default=True, help="Longest side of the thumbnails."),
        click.option("--detail-size", type=click.IntRange(128, 4096), default=1280,
                     show_default=True, help="Longest side of the detail pictures."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Threads drawing overlays (default: number of CPUs, at most 8)."),
        click.option("--title", default=None, help="Page title."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]):
        function = option(function)
    return function


@command.command("dataset")
@click.argument("annotation_file", type=_EXISTING_FILE)
@click.option("--images", type=_EXISTING_DIR, default=None,
              help="Folder of the images (default: the annotation file's folder).")
@click.option("--no-validate", is_flag=True, help="Skip instkit validate's checks.")
@_common
def dataset(annotation_file: Path, images: Path | None, no_validate: bool, out_dir: Path,
            thumb_size: int, detail_size: int, workers: int | None, title: str | None,
            quiet: bool) -> None:
    """Summary, charts, filterable thumbnail grid and per-image details of ANNOTATION_FILE."""
    from instkit.viz.pages import dataset_report

    index = dataset_report(annotation_file, images, out_dir, validate=not no_validate,
                           thumb_size=thumb_size, detail_size=detail_size, workers=workers,
                           progress=not quiet, title=title)
    click.echo(f"wrote {index} (open it in a browser)")


@command.command("eval")
@click.option("--gt", "gt_file", type=_EXISTING_FILE, required=True,
              help="Ground truth, a COCO annotation file.")
@click.option("--pred", "pred_file", type=_EXISTING_FILE, required=True,
              help="Predictions, a COCO results file.")
@click.option("--images", type=_EXISTING_DIR, default=None,
              help="Folder of the images (default: the ground truth file's folder).")
@click.option("--iou", "iou_threshold", type=click.FloatRange(0, 1), default=0.5,
              show_default=True, help="IoU at which a prediction matches.")
@click.option("--score", "score_threshold", type=click.FloatRange(0, 1), default=0.5,
              show_default=True,
              help="Score from which predictions count in TP/FP/FN and overlays (AP uses all).")
@_common
def evaluation(gt_file: Path, pred_file: Path, images: Path | None, iou_threshold: float,
               score_threshold: float, out_dir: Path, thumb_size: int, detail_size: int,
               workers: int | None, title: str | None, quiet: bool) -> None:
    """Per-class AP, precision-recall curves and the images with most errors first."""
    from instkit.viz.pages import eval_report

    index = eval_report(gt_file, pred_file, images, out_dir, iou_threshold=iou_threshold,
                        score_threshold=score_threshold, thumb_size=thumb_size,
                        detail_size=detail_size, workers=workers, progress=not quiet,
                        title=title)
    click.echo(f"wrote {index} (open it in a browser)")

"""``instkit report dataset|eval``: static HTML pages to open from the file system."""

from __future__ import annotations

from pathlib import Path

import click

from instkit.cli.commands._options import AliasOption, progress_option, score_threshold_option

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
        progress_option,
    ]):
        function = option(function)
    return function


@command.command("dataset")
@click.argument("annotation_file", type=click.Path(exists=True, path_type=Path))
@click.option("--images", type=_EXISTING_DIR, default=None,
              help="Folder of the images (default: the annotation file's folder).")
@click.option("--no-validate", is_flag=True, help="Skip instkit validate's checks.")
@_common
def dataset(annotation_file: Path, images: Path | None, no_validate: bool, out_dir: Path,
            thumb_size: int, detail_size: int, workers: int | None, title: str | None,
            progress: bool) -> None:
    """Summary, charts, filterable thumbnail grid and per-image details of ANNOTATION_FILE
    (any format `instkit convert` reads: a COCO file, a LabelMe or SA-1B folder...)."""
    from instkit.viz.pages import dataset_report

    index = dataset_report(annotation_file, images, out_dir, validate=not no_validate,
                           thumb_size=thumb_size, detail_size=detail_size, workers=workers,
                           progress=progress, title=title)
    click.echo(f"wrote {index} (open it in a browser)")


@command.command("eval")
@click.option("--coco", "--gt", "gt_file", cls=AliasOption, hidden_aliases=("--gt",),
              type=_EXISTING_FILE, required=True, help="Ground truth, a COCO annotation file.")
@click.option("--pred", "pred_file", type=_EXISTING_FILE, default=None,
              help="Predictions, a COCO results file (or --model to predict them now).")
@click.option("--model", "model_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="Run folder of `instkit train` (or a checkpoint folder): predict --coco's "
                   "images with it (written to OUT/predictions.json), then draw the page.")
@click.option("--images", type=_EXISTING_DIR, default=None,
              help="Folder of the images (default: the ground truth file's folder).")
@click.option("--iou", "iou_threshold", type=click.FloatRange(0, 1), default=0.5,
              show_default=True, help="IoU at which a prediction matches.")
@score_threshold_option(0.5, "Score from which predictions count in TP/FP/FN and overlays "
                             "(AP uses all).", aliases=("--score",))
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True,
              help="With --model: images per forward pass.")
@click.option("--device", default=None, help="With --model: cpu, cuda ... (default: cuda if "
                                               "present).")
@_common
def evaluation(gt_file: Path, pred_file: Path | None, model_dir: Path | None,
               images: Path | None, iou_threshold: float, score_threshold: float,
               batch_size: int, device: str | None, out_dir: Path, thumb_size: int,
               detail_size: int, workers: int | None, title: str | None,
               progress: bool) -> None:
    """Per-class AP, precision-recall curves and the images with most errors first.

    From a results file (--pred), or straight from a trained run (--model): e.g.
    `instkit report eval --model runs/a --coco val.json --images val/ -o report/`.
    """
    from instkit.viz.pages import eval_report

    if (pred_file is None) == (model_dir is None):
        raise click.UsageError("give one of --pred RESULTS.json or --model RUN")
    if model_dir is not None:
        from instkit.engine.predict import predict_coco
        from instkit.io.files import same_file

        if same_file(gt_file, out_dir / "predictions.json"):
            raise click.UsageError(f"-o {out_dir} would overwrite the ground truth {gt_file}")
        summary = predict_coco(model_dir, gt_file, images, out_dir, batch_size=batch_size,
                               device=device, progress=progress)
        pred_file = Path(summary["predictions"])
        click.echo(f"predicted {summary['images']} image(s), {summary['instances']} "
                   f"instance(s) -> {pred_file}", err=True)
    assert pred_file is not None
    index = eval_report(gt_file, pred_file, images, out_dir, iou_threshold=iou_threshold,
                        score_threshold=score_threshold, thumb_size=thumb_size,
                        detail_size=detail_size, workers=workers, progress=progress,
                        title=title)
    click.echo(f"wrote {index} (open it in a browser)")

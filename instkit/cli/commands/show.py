"""``instkit show``: one image of a COCO dataset drawn with its instances, to a PNG/JPEG file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from instkit.cli.commands._options import score_threshold_option
from instkit.errors import InstkitError


@click.command("show")
@click.argument("annotation_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", "images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of the images (default: the annotation file's folder).")
@click.option("--image-id", type=int, default=None, help="Image to draw, by its image_id.")
@click.option("--index", type=int, default=None, help="Image to draw, by its position in the file.")
@click.option("--transform", "preset", default=None,
              help="Draw before/after this transform preset side by side (train, yolo-seg, eval).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the transform.")
@click.option("--pred", "pred_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="COCO results file: draw predictions against the ground truth.")
@click.option("--iou", "iou_threshold", type=click.FloatRange(0, 1), default=0.5,
              show_default=True, help="IoU at which a prediction matches (with --pred).")
@score_threshold_option(0.5, "Predictions below this score are not drawn (with --pred).",
                        aliases=("--score",))
@click.option("--max-side", type=click.IntRange(16), default=None,
              help="Longest side of the picture (default: the image's own size).")
@click.option("--no-labels", is_flag=True, help="Leave out class names and scores.")
@click.option("--no-boxes", is_flag=True, help="Leave out boxes.")
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Picture to write (.png, .jpg or .webp).")
def command(annotation_file: Path, images: Path | None, image_id: int | None, index: int | None,
            preset: str | None, seed: int, pred_file: Path | None, iou_threshold: float,
            score_threshold: float, max_side: int | None, no_labels: bool, no_boxes: bool,
            out_file: Path) -> None:
    """Draw one image of ANNOTATION_FILE with its instances (or a transform's before/after, or
    predictions against the ground truth)."""
    from instkit import read_coco
    from instkit.io.files import same_file
    from instkit.viz import draw_comparison, draw_evaluation, draw_instances, save_image

    if image_id is not None and index is not None:
        raise click.UsageError("give --image-id or --index, not both")
    if preset is not None and pred_file is not None:
        raise click.UsageError("--transform and --pred draw different pictures: give one")
    for source in (annotation_file, pred_file):
        if source is not None and same_file(source, out_file):
            raise InstkitError(f"-o {out_file} would write over the input {source}")
    dataset = read_coco(annotation_file, images)
    if len(dataset) == 0:
        raise InstkitError(f"{annotation_file} has no images")
    if image_id is not None:
        try:
            position = dataset.index_of(image_id)
        except KeyError:
            raise InstkitError(f"no image with image_id {image_id} in {annotation_file}") from None
    else:
        position = 0 if index is None else index
        if not -len(dataset) <= position < len(dataset):
            raise InstkitError(f"--index {position} is outside 0..{len(dataset) - 1}")
    sample = dataset[position]
    if sample.image_path is not None and same_file(sample.image_path, out_file):
        raise InstkitError(f"-o {out_file} would write over the image it draws")
    options: dict[str, Any] = {"labels": not no_labels, "boxes": not no_boxes}
    if preset is not None:
        from instkit.transforms.presets import PRESETS

        if preset not in PRESETS:
            raise click.BadParameter(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}",
                                     param_hint="--transform")
        transform = PRESETS[preset]()
        if getattr(transform, "needs_pool", False):
            transform = transform.with_pool(dataset)
        after = transform(sample, seed=seed)
        height = max_side if max_side is not None else min(640, max(sample.image_size))
        picture = draw_comparison(sample, after, dataset.categories, height=height,
                                  titles=("before", f"after {preset} (seed {seed})"), **options)
        note = f"{len(sample.instances)} -> {len(after.instances)} instances"
    elif pred_file is not None:
        from instkit.evaluation import read_coco_results

        predictions = read_coco_results(pred_file, dataset)[position]
        picture = draw_evaluation(sample.image, sample.instances, predictions.instances,
                                  dataset.categories, iou_threshold=iou_threshold,
                                  score_threshold=score_threshold, max_side=max_side,
                                  iou_type="segm" if predictions.instances.masks is not None
                                  and sample.instances.masks is not None else "bbox")
        note = f"{len(predictions.instances)} predictions"
    else:
        picture = draw_instances(sample.image, sample.instances, dataset.categories,
                                 max_side=max_side, **options)
        note = f"{len(sample.instances)} instances"
    save_image(picture, out_file)
    click.echo(f"image_id {sample.image_id} ({sample.meta.file_name}): {note} -> {out_file}")

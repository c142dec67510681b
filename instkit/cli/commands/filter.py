"""``instkit filter ANN.json -o OUT.json [--keep-class NAME] [--min-area A] ...``."""

from __future__ import annotations

from pathlib import Path

import click

from instkit.cli.commands._options import echo_json, format_option


@click.command("filter")
@click.argument("annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The filtered COCO file (new; never the input).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Image folder (for image-file findings; default: beside the file).")
@click.option("--keep-class", "keep_classes", multiple=True, metavar="NAME",
              help="Keep only annotations of these categories (repeatable).")
@click.option("--drop-class", "drop_classes", multiple=True, metavar="NAME",
              help="Drop annotations of these categories (repeatable).")
@click.option("--prune-categories", is_flag=True,
              help="Leave the categories dropped by --keep-class/--drop-class out of the output's "
                   "table (their ids stay).")
@click.option("--min-area", type=click.FloatRange(0), default=None,
              help="Drop annotations whose COCO area is below this (pixels).")
@click.option("--max-area", type=click.FloatRange(0), default=None,
              help="Drop annotations whose COCO area is at or above this (pixels).")
@click.option("--crowd", type=click.Choice(["keep", "drop", "only"]), default="keep",
              show_default=True, help="Crowd annotations (iscrowd=1).")
@click.option("--min-width", type=click.IntRange(1), default=None, help="Drop narrower images.")
@click.option("--min-height", type=click.IntRange(1), default=None, help="Drop lower images.")
@click.option("--max-width", type=click.IntRange(1), default=None, help="Drop wider images.")
@click.option("--max-height", type=click.IntRange(1), default=None, help="Drop higher images.")
@click.option("--drop-finding", "drop_findings", multiple=True, metavar="CODE",
              help="Drop the images/annotations with this validation finding (instkit validate's "
                   "codes, e.g. bbox-mismatch, image-missing; repeatable).")
@click.option("--empty", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="Images left without annotations.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Processes for image-file findings.")
@format_option
def command(annotations: Path, out: Path, images: Path | None, keep_classes: tuple[str, ...],
            drop_classes: tuple[str, ...], prune_categories: bool, min_area: float | None,
            max_area: float | None, crowd: str, min_width: int | None, min_height: int | None,
            max_width: int | None, max_height: int | None, drop_findings: tuple[str, ...],
            empty: str, workers: int | None, output_format: str) -> None:
    """Keep a subset of ANNOTATIONS (COCO): every dropped image and annotation counted with its
    reason; ids and file_names as in the input."""
    from instkit.io.coco import read_coco
    from instkit.io.files import refuse_overwrite
    from instkit.ops import drop_findings_in, filter_dataset
    from instkit.ops.common import write_samples

    if keep_classes and drop_classes:
        raise click.UsageError("give --keep-class or --drop-class, not both")
    refuse_overwrite([out], [annotations, images], what="OUT")
    findings = None
    if drop_findings:
        findings = drop_findings_in(annotations, drop_findings, images, workers=workers)
        dataset = findings.dataset
    else:
        dataset = read_coco(annotations, images)
    result = filter_dataset(
        dataset, keep_classes=keep_classes, drop_classes=drop_classes, min_area=min_area,
        max_area=max_area, crowd=crowd, min_width=min_width, min_height=min_height,
        max_width=max_width, max_height=max_height, findings=findings, empty=empty,
        prune_categories=prune_categories)
    write_samples(result.samples, out, result.categories, inputs=[annotations, images],
                  source=dataset)
    result.output = str(out)
    if output_format == "json":
        echo_json(result.as_dict())
        return
    click.echo(result.to_text())

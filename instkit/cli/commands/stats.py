"""``instkit stats``: per-class counts, instances per image, COCO size split, crowds, vertices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from instkit.cli.commands._options import format_option

if TYPE_CHECKING:
    from instkit.io.coco import CocoDataset
    from instkit.io.hf import HFDataset


@click.command("stats")
@click.argument("annotations", type=click.Path(exists=True, path_type=Path))
@format_option
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of histograms here.")
def command(annotations: Path, output_format: str, plot: Path | None) -> None:
    """Statistics of ANNOTATIONS (a COCO JSON file, or a folder saved by `instkit convert --to hf`)."""
    import json

    from instkit.io.files import refuse_overwrite
    from instkit.stats import compute_stats

    refuse_overwrite([plot], [annotations], what="--plot")

    dataset: HFDataset | CocoDataset
    if annotations.is_dir():
        from instkit.io.hf import read_hf

        dataset = read_hf(annotations)
    else:
        from instkit.io.coco import read_coco

        dataset = read_coco(annotations, strict=False)
    stats = compute_stats(dataset, dataset.categories)
    click.echo(json.dumps(stats.as_dict(), indent=2) if output_format == "json"
               else stats.to_text())
    if plot is not None:
        stats.plot(plot)
        click.echo(f"histograms written to {plot}", err=True)

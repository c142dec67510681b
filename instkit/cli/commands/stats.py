"""``instkit stats``: per-class counts, instances per image, COCO size split, crowds, vertices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from instkit.cli.commands._options import engine_options, format_option, workers_option

if TYPE_CHECKING:
    from instkit.io.coco import CocoDataset
    from instkit.io.hf import HFDataset


@click.command("stats")
@click.argument("annotations", type=click.Path(path_type=Path))
@format_option
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of histograms here.")
@workers_option
@engine_options
def command(annotations: Path, output_format: str, plot: Path | None, workers: int | None,
            engine: str | None, address: str | None) -> None:
    """Statistics of ANNOTATIONS (a COCO JSON file, a folder saved by `instkit convert --to hf`,
    or a sharded dataset: shard folder, glob, manifest)."""
    import json

    from instkit.io.files import refuse_overwrite
    from instkit.stats import compute_stats

    refuse_overwrite([plot], [annotations], what="--plot")
    from instkit.shards.dataset import looks_sharded

    if looks_sharded(annotations):
        from instkit.shards.cli import stats_main

        return stats_main(annotations, output_format, plot, workers, engine, address)
    if not annotations.exists():
        raise click.UsageError(f"no such file or folder: {annotations}")

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

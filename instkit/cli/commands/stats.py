"""``instkit stats``: per-class counts, instances per image, COCO size split, crowds, vertices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from instkit.cli.commands._options import (
    engine_options,
    format_option,
    progress_option,
    workers_option,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from instkit.sample import Sample


@click.command("stats")
@click.argument("annotations", type=click.Path(path_type=Path))
@format_option
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of histograms here.")
@workers_option
@engine_options
@progress_option
def command(annotations: Path, output_format: str, plot: Path | None, workers: int | None,
            engine: str | None, address: str | None, progress: bool) -> None:
    """Statistics of ANNOTATIONS: a dataset in any format `instkit convert` reads (a COCO JSON
    file, a YOLO-seg, Hugging Face, LabelMe... folder; docs/formats.md) or a sharded dataset
    (shard folder, glob, manifest)."""
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

    from instkit.io import registry
    from instkit.sample import categories_of

    dataset: Sequence[Sample]
    name = registry.detect(annotations)
    if name == "coco":  # read leniently: statistics of what can be read, problems logged
        from instkit.io.coco import read_coco

        _say_reading(annotations, progress)
        dataset = read_coco(annotations, strict=False)
    else:
        dataset = registry.open(annotations, format=name)
    categories = categories_of(dataset)
    if categories is None:
        raise click.UsageError(f"{annotations} holds no category table")
    stats = compute_stats(dataset, categories, progress=progress)
    click.echo(json.dumps(stats.as_dict(), indent=2) if output_format == "json"
               else stats.to_text())
    if plot is not None:
        stats.plot(plot)
        click.echo(f"histograms written to {plot}", err=True)


#: files above this size get a "reading" line (parsing runs a few MB/s on a small machine)
_ANNOUNCE_BYTES = 10_000_000


def _say_reading(path: Path, progress: bool) -> None:
    """One line on a terminal's stderr before a long parse (it has no bar of its own)."""
    import sys

    size = path.stat().st_size
    if progress and size >= _ANNOUNCE_BYTES and sys.stderr.isatty():
        click.echo(f"reading {path.name} ({size / 1e6:.0f} MB)...", err=True)

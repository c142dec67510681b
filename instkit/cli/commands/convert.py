"""``instkit convert SRC --to FORMAT OUT``: any format of the registry to any other.

The formats, their detection, reading, writing and what each loses all live in
``instkit.io.registry``; this command only checks paths and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from instkit.cli.commands._options import (
    echo_json,
    engine_options,
    format_option,
    progress_option,
    workers_option,
)
from instkit.io import registry

FORMATS = registry.names()


def detect(src: Path) -> str:
    """The format of ``src`` (see ``instkit.io.registry.detect``)."""
    return registry.detect(src)


def read_any(src: Path, fmt: str, images: Path | None) -> Any:
    return registry.open(src, fmt, images=images)


@click.command("convert")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Choice((*FORMATS, "shards")), required=True,
              help="Target format (shards: instkit's tar shards, docs/scaling.md).")
@click.option("--from", "src_format", type=click.Choice(FORMATS), default=None,
              help="Source format (default: detected).")
@click.option("--images", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Image folder of a COCO, LVIS or CVAT source (default: beside its file).")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples per shard (--to shards).")
@click.option("--split", "splits", multiple=True, metavar="NAME=SRC",
              help="Another split of the same dataset, e.g. val=val.json (repeatable; SRC is then "
                   "the train split). YOLO-seg writes each under images/NAME and labels/NAME "
                   "and lists them in data.yaml.")
@workers_option
@engine_options
@progress_option
@format_option
def command(src: Path, out: Path, to: str, src_format: str | None, images: Path | None,
            shard_size: int, splits: tuple[str, ...], workers: int | None, engine: str | None,
            address: str | None, progress: bool, output_format: str) -> None:
    """Convert SRC to FORMAT at OUT (a folder; a file for coco, lvis (.json) and cvat (.xml),
    the images then go to images/ beside it). A sharded SRC (docs/scaling.md) converts to coco
    or shards per shard, with --engine local|ray and --workers."""
    from instkit.io.files import refuse_overwrite
    from instkit.shards.cli import convert_main, wants_shards

    if wants_shards(src, to, engine, workers):
        return convert_main(src, out, to, reader=read_any, detect=detect, src_format=src_format,
                            images=images, shard_size=shard_size, workers=workers, engine=engine,
                            address=address, progress=progress, output_format=output_format)
    src_format = src_format or detect(src)
    if src_format == to:
        raise click.UsageError("source and target formats are the same")
    target = registry.get(to)
    refuse_overwrite([out], [src, images], what="OUT")
    if target.output == "file":
        refuse_overwrite([out.parent / "images"], [src, images], what="the images folder")
    samples = read_any(src, src_format, images)
    options: dict[str, Any] = {"progress": progress} if "progress" in target.write_options else {}
    if splits:
        counts = registry.save(_split_mapping(samples, splits, to, out, images), out, to,
                               categories=getattr(samples, "categories", None), **options)
    else:
        counts = registry.save(samples, out, to, **options)
    read_counts = dict(getattr(samples, "read_counts", {}) or {})
    if output_format == "json":
        echo_json({"from": src_format, "to": to, "source": str(src), "out": str(out),
                   "counts": counts, "read_counts": read_counts})
        return
    click.echo(f"converted {src_format} -> {to}: {out}")
    if target.output == "file":
        click.echo(f"images written to {out.parent / 'images'}", err=True)
    for _key, value, note in registry.loss_notes(read_counts, src_format):
        if value:
            click.echo(f"  {value:>6}  {note} (reading {src_format})")
    known = target.loss_table()
    for key, value, note in registry.loss_notes(counts, to):
        if key not in known:
            click.echo(f"  {value:>6}  {key}")
        elif value:
            click.echo(f"  {value:>6}  {note}")


def _split_mapping(train: Any, splits: tuple[str, ...], to: str, out: Path,
                   images: Path | None) -> dict[str, Any]:
    """``{"train": SRC's samples, NAME: the samples of each --split NAME=SRC}``; each split is
    read in its own detected format (with ``--images`` for a COCO source), and must carry the
    same category table as SRC."""
    from instkit.io.files import refuse_overwrite
    from instkit.io.yolo import SPLITS
    from instkit.sample import categories_of

    if to != "yolo":
        raise click.UsageError(f"--split: {to} holds one split; only --to yolo writes several")
    mapping: dict[str, Any] = {"train": train}
    for item in splits:
        name, _, path = item.partition("=")
        if name not in SPLITS or not path:
            raise click.UsageError(f"--split {item!r}: give NAME=SRC with NAME one of "
                                   f"{', '.join(s for s in SPLITS if s != 'train')}")
        if name in mapping:
            raise click.UsageError(f"--split: the {name} split is given twice")
        source = Path(path)
        if not source.exists():
            raise click.UsageError(f"--split {item!r}: no such file or folder: {source}")
        refuse_overwrite([out], [source], what="OUT")
        samples = read_any(source, detect(source), images)
        if categories_of(samples) != categories_of(train):
            raise click.UsageError(f"--split {item!r}: its category table differs from SRC's")
        mapping[name] = samples
    return mapping


"""The sharded side of ``instkit validate|stats|convert`` (the verbs call in here when their
input is a shard set, or for ``convert --to shards``); docs/scaling.md."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from instkit.shards.dataset import looks_sharded, open_shards


def _engine(engine: str | None) -> str:
    return engine or "local"


def validate_main(annotations: Path, images: Path | None, fmt: str, fix: Path | None,
                  workers: int | None, engine: str | None, address: str | None,
                  max_per_check: int, *, check_images: bool = False,
                  scratch: Path | None = None) -> int:
    """``instkit validate SHARDS``; returns the exit code. Image files are checked with
    ``--images`` (COCO shards) or ``--check-images`` (the bytes inside tar shards)."""
    from instkit.shards.jobs import validate_shards

    if fix is not None:
        raise click.UsageError("--fix repairs one COCO file; validate each shard's file instead")
    shards = open_shards(annotations, image_root=images)
    report = validate_shards(shards, engine=_engine(engine), workers=workers, address=address,
                             images=images if shards.kind == "coco" else None,
                             check_images=check_images or images is not None, scratch=scratch,
                             progress=sys.stderr.isatty())
    click.echo(report.to_json() if fmt == "json" else report.to_text(max_per_code=max_per_check))
    return int(report.exit_code)


def stats_main(annotations: Path, output_format: str, plot: Path | None, workers: int | None,
               engine: str | None, address: str | None) -> None:
    """``instkit stats SHARDS``."""
    from instkit.io.files import json_safe
    from instkit.shards.jobs import stats_shards

    shards = open_shards(annotations)
    stats, problems = stats_shards(shards, engine=_engine(engine), workers=workers,
                                   address=address, progress=sys.stderr.isatty())
    if output_format == "json":
        data = stats.as_dict()
        data["shards"] = len(shards)
        data["left_out"] = [p.as_dict() for p in problems]
        click.echo(json.dumps(json_safe(data), indent=2))
    else:
        click.echo(f"shards: {len(shards)} ({shards.kind})")
        click.echo(stats.to_text())
    if problems:
        click.echo(f"{len(problems)} row(s) or annotation(s) left out as unreadable; run "
                   "instkit validate", err=True)
    if plot is not None:
        stats.plot(plot)
        click.echo(f"histograms written to {plot}", err=True)


def wants_shards(src: Path, to: str, engine: str | None, workers: int | None) -> bool:
    """Whether ``convert`` goes through the shard engine: always for ``--to shards`` and for an
    instkit shard folder; for another shard set (SA-1B tars, COCO files) when it is converted to
    COCO with ``--engine`` or ``--workers`` given (otherwise the format's own reader does it)."""
    from instkit.shards.dataset import MANIFEST

    if to == "shards":
        return True
    if src.is_dir() and (src / MANIFEST).is_file() or src.name == MANIFEST:
        return True
    return to == "coco" and (engine is not None or workers is not None) and looks_sharded(src)


def convert_main(src: Path, out: Path, to: str, *, reader: Any, detect: Any,
                 src_format: str | None, images: Path | None, shard_size: int,
                 workers: int | None, engine: str | None, address: str | None, progress: bool,
                 output_format: str) -> None:
    """``instkit convert`` through the shard engine. ``reader(src, fmt, images)`` and
    ``detect(src)`` are the verb's own, for a single-file source."""
    from instkit.cli.commands._options import echo_json
    from instkit.io.files import refuse_overwrite
    from instkit.shards.jobs import convert_shards, convert_to_shards

    refuse_overwrite([out], [src, images], what="OUT")
    progress = progress and sys.stderr.isatty()
    if looks_sharded(src) and src_format is None:
        shards = open_shards(src, image_root=images)
        if to not in ("coco", "shards"):
            raise click.UsageError(f"a shard set converts to coco or shards; convert to coco "
                                   f"first, then to {to}")
        if to == "coco":
            refuse_overwrite([out.parent / "images"], [src, images], what="the images folder")
        counts = convert_shards(shards, out, to, shard_size=shard_size, engine=_engine(engine),
                                workers=workers, address=address, progress=progress)
        src_format = f"shards ({shards.kind})"
    else:
        src_format = src_format or detect(src)
        opener = functools.partial(reader, src, src_format, images)
        counts = convert_to_shards(src, src_format, out, shard_size=shard_size, opener=opener,
                                   engine=_engine(engine), workers=workers, address=address,
                                   progress=progress)
    if output_format == "json":
        echo_json({"from": src_format, "to": to, "source": str(src), "out": str(out),
                   "counts": counts})
        return
    click.echo(f"converted {src_format} -> {to}: {out}")
    for key, value in counts.items():
        click.echo(f"  {value:>6}  {key}")


__all__ = ["convert_main", "stats_main", "validate_main", "wants_shards"]

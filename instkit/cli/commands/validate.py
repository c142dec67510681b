"""``instkit validate``: lint a COCO file, optionally write a repaired copy."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from instkit.cli.commands._options import engine_options


@click.command("validate")
@click.argument("annotations", type=click.Path(path_type=Path))
@click.option("--images", "images", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Folder of the images; their files are checked when given.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json for programs.")
@click.option("--fix", "fix", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a repaired copy here (never over the input); changes are listed.")
@click.option("--workers", type=int, default=None,
              help="Processes for image checks, or per shard of a sharded dataset.")
@engine_options
@click.option("--check-images", is_flag=True, default=False,
              help="Decode and size the images inside tar shards (sharded datasets).")
@click.option("--scratch", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Sharded datasets: reduce ids in buckets through this folder "
              "(shared by the workers) instead of in memory.")
@click.option("--max-per-check", type=int, default=20, show_default=True,
              help="Details shown per check in text output.")
def command(annotations: Path, images: Path | None, fmt: str, fix: Path | None,
            workers: int | None, engine: str | None, address: str | None,
            check_images: bool, scratch: Path | None, max_per_check: int) -> None:
    """Check ANNOTATIONS (COCO JSON, or a sharded dataset: shard folder, glob, manifest).
    Exit code 0: no error; 1: errors found; 2: usage problem (see `instkit --help`)."""
    from instkit.io.files import same_file
    from instkit.shards.dataset import looks_sharded
    from instkit.validate import validate_file

    if looks_sharded(annotations):
        from instkit.shards.cli import validate_main

        sys.exit(validate_main(annotations, images, fmt, fix, workers, engine, address,
                               max_per_check, check_images=check_images, scratch=scratch))
    if engine is not None:
        raise click.UsageError("--engine runs per shard: give a sharded dataset")
    if not annotations.is_file():
        raise click.UsageError(f"no such file: {annotations}")
    if fix is not None and same_file(fix, annotations):
        raise click.UsageError("--fix must name a new file, not the input")
    report = validate_file(annotations, images, workers=workers, progress=sys.stderr.isatty(),
                           fix=fix)
    click.echo(report.to_json() if fmt == "json" else report.to_text(max_per_code=max_per_check))
    if fix is not None and report.fixed_file is None:  # nothing to repair from (unparseable)
        click.echo(f"no repaired file written: {annotations} could not be read as COCO",
                   err=True)
    elif fix is not None and fmt == "text":
        from instkit.validate import validate_file as again

        after = again(fix, images, workers=workers, progress=False)
        click.echo(f"the repaired file has {len(after.errors)} error(s), {len(after.warnings)} warning(s)")
    sys.exit(report.exit_code)  # EXIT_FINDINGS (1) when there are errors, else 0

"""``instkit validate``: lint a COCO file, optionally write a repaired copy."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("validate")
@click.argument("annotations", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", "images", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Folder of the images; their files are checked when given.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json for programs.")
@click.option("--fix", "fix", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a repaired copy here (never over the input); changes are listed.")
@click.option("--workers", type=int, default=None, help="Processes for image checks.")
@click.option("--max-per-check", type=int, default=20, show_default=True,
              help="Details shown per check in text output.")
def command(annotations: Path, images: Path | None, fmt: str, fix: Path | None,
            workers: int | None, max_per_check: int) -> None:
    """Check ANNOTATIONS (COCO JSON). Exit code 0: no error; 1: errors found; 2: usage problem
    (see `instkit --help`)."""
    from instkit.io.files import same_file
    from instkit.validate import validate_file

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

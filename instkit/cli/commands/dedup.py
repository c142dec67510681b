"""``instkit dedup ANN.json [MORE.json ...] [--remove exact|near -o OUT.json]``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from instkit.cli.commands._options import echo_json, format_option, progress_option


@click.command("dedup")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", "images", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image folder of each input, in input order (default: beside each file).")
@click.option("--hash", "hash_kind", type=click.Choice(["phash", "dhash"]), default="phash",
              show_default=True, help="Perceptual hash for near-duplicates.")
@click.option("--threshold", type=click.IntRange(0, 63), default=None,
              help="Largest Hamming distance (bits of 64) of a near pair (default: phash 10, "
                   "dhash 12).")
@click.option("--keep", type=click.Choice(["first", "largest"]), default="first",
              show_default=True, help="Which image of a duplicate group --remove keeps.")
@click.option("--remove", type=click.Choice(["exact", "near"]), default=None,
              help="Write a copy without the duplicates (exact: same bytes; near: also "
                   "perceptual); needs -o. With several inputs, the last input is written "
                   "without its copies of earlier inputs' images and of its own.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where --remove writes (a new file, never the input).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes for hashing.")
@progress_option
@format_option
def command(inputs: tuple[Path, ...], images: tuple[Path, ...], hash_kind: str,
            threshold: int | None, keep: str, remove: str | None, out: Path | None,
            workers: int | None, progress: bool, output_format: str) -> None:
    """Find exact and near-duplicate images in one COCO file or across several (train/val
    leakage). Reports first; removes only with --remove and -o. Exit 1 when duplicates are
    found and not removed, or an image cannot be read."""
    from instkit.cli import EXIT_FINDINGS
    from instkit.io.coco import read_coco
    from instkit.io.files import refuse_overwrite
    from instkit.ops import find_duplicates, remove_duplicates
    from instkit.ops.common import write_samples

    if images and len(images) != len(inputs):
        raise click.UsageError(f"--images given {len(images)} time(s) for {len(inputs)} inputs: "
                               "give one per input, in order, or none")
    if (remove is None) != (out is None):
        raise click.UsageError("--remove and -o go together: the report comes first, removal "
                               "writes a new file")
    if out is not None:
        refuse_overwrite([out], [*inputs, *images], what="OUT")
    datasets = [read_coco(path, images[k] if images else None) for k, path in enumerate(inputs)]
    result = find_duplicates(datasets, hash=hash_kind, threshold=threshold, keep=keep,
                             workers=workers, progress=None if progress else False)
    if remove is not None and out is not None:
        # With several inputs the last one is cleaned: of its copies of an earlier input's
        # images (train/val leakage) and of its own duplicates.
        last = datasets[-1]
        kept = remove_duplicates(last, result, remove=remove, input=len(datasets) - 1)
        write_samples(kept, out, last.categories, inputs=[*inputs, *images], source=last)
        result.output = str(out)
    if output_format == "json":
        echo_json(result.as_dict())
    else:
        click.echo(result.to_text())
    if (remove is None and result.pairs) or result.unreadable:
        sys.exit(EXIT_FINDINGS)  # duplicates left in place, or images that could not be compared

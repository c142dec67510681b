"""``instkit split ANN.json --ratios train=0.8,val=0.1,test=0.1 -o DIR``."""

from __future__ import annotations

from pathlib import Path

import click

from instkit.cli.commands._options import echo_json, format_option, progress_option


@click.command("split")
@click.argument("annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ratios", default="train=0.8,val=0.1,test=0.1", show_default=True,
              help="Split names and shares: fractions that sum to 1, or weights (train=8,val=1).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the split files (NAME.json each).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="The same input and seed give the same split.")
@click.option("--group-by", "group_by", default=None, metavar="REGEX",
              help="Keep images together whose file_name gives the same match (its first group "
                   r"if any), e.g. '^([^/]+)/' for one folder per video, '(.*)_frame\d+'.")
@click.option("--group-field", "group_field", default=None, metavar="NAME",
              help="Keep images together that share this image field (e.g. video_id).")
@click.option("--min-per-split", type=click.IntRange(0), default=1, show_default=True,
              help="Serve each split first until it holds this many images of a class (0: plain "
                   "iterative stratification).")
@click.option("--group-duplicates", type=click.Choice(["exact", "near"]), default=None,
              help="Also keep duplicate images in one split (exact: same bytes; near: also "
                   "perceptual hash, as instkit dedup): no copy leaks into another split.")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Image folder, for --group-duplicates (default: beside the file).")
@progress_option
@format_option
def command(annotations: Path, ratios: str, out_dir: Path, seed: int, group_by: str | None,
            group_field: str | None, min_per_split: int, group_duplicates: str | None,
            images: Path | None, progress: bool, output_format: str) -> None:
    """Split ANNOTATIONS (COCO) by image into stratified, seeded splits; one COCO file per split
    (same categories in each; ids and file_names as in the input)."""
    from instkit.io.coco import read_coco
    from instkit.ops import parse_ratios, split_dataset, write_splits

    if group_by is not None and group_field is not None:
        raise click.UsageError("give --group-by or --group-field, not both")
    shares = parse_ratios(ratios)
    dataset = read_coco(annotations, images)
    together: list[list[int]] = []
    if group_duplicates is not None:
        from instkit.ops.dedup import duplicate_groups, find_duplicates

        found = find_duplicates([dataset], progress=None if progress else False)
        if found.unreadable:
            click.echo(f"instkit split: {len(found.unreadable)} image(s) could not be read for "
                       f"--group-duplicates (first: {found.unreadable[0]['file_name']}: "
                       f"{found.unreadable[0]['error']}); each stays in its own group", err=True)
        together = duplicate_groups(found, group_duplicates)
    result = split_dataset(dataset, shares, seed=seed, group_by=group_by, group_field=group_field,
                           min_per_split=min_per_split, together=together)
    write_splits(dataset, result, out_dir, inputs=[annotations])
    if output_format == "json":
        echo_json(result.as_dict())
        return
    click.echo(result.to_text())

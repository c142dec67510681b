"""``instkit merge A.json B.json ... -o OUT.json``."""

from __future__ import annotations

from pathlib import Path

import click

from instkit.cli.commands._options import echo_json, format_option, progress_option


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, eq, new = pair.partition("=")
        if not eq or not old.strip() or not new.strip():
            raise click.BadParameter(f"{pair!r} is not OLD=NEW (e.g. person=human)",
                                     param_hint="--map")
        if old.strip() in mapping:
            raise click.BadParameter(f"category {old.strip()!r} is mapped twice", param_hint="--map")
        mapping[old.strip()] = new.strip()
    return mapping


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The merged COCO file (new; never an input).")
@click.option("--images", "images", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image folder of each input, in input order (default: beside each file).")
@click.option("--map", "mapping", multiple=True, metavar="OLD=NEW",
              help="Rename a category before matching by name (repeatable): person=human.")
@click.option("--on-duplicate", type=click.Choice(["union", "first"]), default="union",
              show_default=True,
              help="Identical images: unite their annotations, or keep the first copy's.")
@click.option("--hash/--no-hash", "hash_images", default=True, show_default=True,
              help="Find identical images by the SHA-256 of their bytes (else by path only).")
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the output's file_names are relative to (default: OUT's folder when "
                   "it holds every image, else the deepest folder that does).")
@click.option("--copy-images", "copy_to", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Copy every image into this new (or empty) folder, under the "
                                 "output's file_names: a self-contained merge.")
@progress_option
@format_option
def command(inputs: tuple[Path, ...], out: Path, images: tuple[Path, ...],
            mapping: tuple[str, ...], on_duplicate: str, hash_images: bool,
            image_root: Path | None, copy_to: Path | None, progress: bool,
            output_format: str) -> None:
    """Merge COCO files: categories matched by name, image and annotation ids renumbered,
    identical images written once."""
    from instkit.io.coco import read_coco
    from instkit.io.files import refuse_overwrite
    from instkit.ops import merge_datasets, write_merged

    if images and len(images) != len(inputs):
        raise click.UsageError(f"--images given {len(images)} time(s) for {len(inputs)} inputs: "
                               "give one per input, in order, or none")
    refuse_overwrite([out], [*inputs], what="OUT")
    if copy_to is not None:
        refuse_overwrite([copy_to], [*inputs, *images], what="--copy-images")
    datasets = [read_coco(path, images[k] if images else None) for k, path in enumerate(inputs)]
    result = merge_datasets(datasets, mapping=_mapping(mapping), hash_images=hash_images,
                            on_duplicate=on_duplicate, image_root=image_root, out=out,
                            progress=None if progress else False)
    if copy_to is not None:
        from instkit.ops.merge import copy_images

        copy_images(result, copy_to)
    write_merged(result, out, inputs=[*inputs])
    if output_format == "json":
        echo_json(result.as_dict())
        return
    click.echo(result.to_text())
    if Path(result.image_root) != out.resolve().parent:
        click.echo(f"  read it with --images {result.image_root}")

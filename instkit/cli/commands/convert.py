"""``instkit convert SRC --to FORMAT OUT``: COCO <-> hf | yolo | labelschema | pngmasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from instkit.cli.commands._options import echo_json, format_option, progress_option
from instkit.errors import InstkitError, Location

FORMATS = ("coco", "hf", "yolo", "labelschema", "pngmasks")


def detect(src: Path) -> str:
    if src.is_file():
        return "coco"
    if (src / "data.yaml").is_file():
        return "yolo"
    if (src / "state.json").is_file() or (src / "dataset_dict.json").is_file():
        return "hf"
    if (src / "labels").is_dir() and any((src / "labels").rglob("*.json")):
        return "labelschema"
    if (src / "masks").is_dir() and (src / "categories.json").is_file():
        return "pngmasks"
    raise click.UsageError(f"cannot tell the format of {src}; pass --from")


def read_any(src: Path, fmt: str, images: Path | None) -> Any:
    if fmt == "coco":
        from instkit.io.coco import read_coco

        return read_coco(src, images)
    if fmt == "hf":
        from instkit.io.hf import read_hf

        return read_hf(src)
    if fmt == "yolo":
        from instkit.io.yolo import read_yolo

        return read_yolo(src)
    if fmt == "labelschema":
        from instkit.io.labelschema import read_labelschema

        return read_labelschema(src)
    from instkit.io.pngmasks import read_pngmasks

    return read_pngmasks(src)


def _distinct_names(samples: Any) -> Iterator[Any]:
    """The samples, refusing two with the same ``file_name``: their images would overwrite."""
    seen: dict[str, int] = {}
    for sample in samples:
        name = sample.meta.file_name or f"{sample.image_id:012d}.png"
        key = name.replace("\\", "/").casefold()
        if key in seen:
            raise InstkitError(f"images {seen[key]} and {sample.image_id} have the same file_name "
                               f"{name!r}: one would overwrite the other",
                               Location(image_id=sample.image_id))
        seen[key] = int(sample.image_id)
        yield sample


@click.command("convert")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Choice(FORMATS), required=True, help="Target format.")
@click.option("--from", "src_format", type=click.Choice(FORMATS), default=None,
              help="Source format (default: detected).")
@click.option("--images", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Image folder of a COCO source (default: beside the JSON).")
@progress_option
@format_option
def command(src: Path, out: Path, to: str, src_format: str | None, images: Path | None,
            progress: bool, output_format: str) -> None:
    """Convert SRC to FORMAT at OUT (a folder; a .json file for --to coco)."""
    from instkit.io.files import refuse_overwrite

    src_format = src_format or detect(src)
    if src_format == to:
        raise click.UsageError("source and target formats are the same")
    refuse_overwrite([out], [src, images], what="OUT")
    if to == "coco":
        out_images = out.parent / "images"
        refuse_overwrite([out_images], [src, images], what="the images folder")
        if out_images.is_dir() and any(out_images.iterdir()):
            raise InstkitError(f"{out_images} (where the images go, beside OUT) exists and is not "
                               "empty; choose an OUT in a new folder",
                               Location(file=str(out_images)))
    samples = read_any(src, src_format, images)
    categories = getattr(samples, "categories", None)
    if categories is None and len(samples):
        categories = samples[0].meta.categories
    counts: dict[str, int]
    if to == "coco":
        from instkit.io.coco import write_coco

        write_coco(_distinct_names(samples), out, categories, images_dir=out_images,
                   mask_format="auto")
        counts = {"images": len(samples), "objects": sum(len(s.instances) for s in samples)}
        click.echo(f"images written to {out_images}", err=True)
    elif to == "hf":
        from instkit.io.hf import write_hf

        counts = write_hf(samples, out, categories, progress=progress)
    elif to == "yolo":
        from instkit.io.yolo import write_yolo

        counts = write_yolo(samples, out, categories)
    elif to == "labelschema":
        from instkit.io.labelschema import write_labelschema

        counts = write_labelschema(samples, out, categories)
    else:
        from instkit.io.pngmasks import write_pngmasks

        counts = write_pngmasks(samples, out, categories)
    if output_format == "json":
        echo_json({"from": src_format, "to": to, "source": str(src), "out": str(out),
                   "counts": counts})
        return
    click.echo(f"converted {src_format} -> {to}: {out}")
    notes = {
        "rle_as_polygons": "masks that were not polygons traced as polygons (holes filled)",
        "parts_dropped": "extra polygon parts dropped (YOLO-seg keeps one part per object)",
        "keypoints_dropped": "instances whose keypoints the format cannot hold",
        "empty_masks_dropped": "objects with empty masks left out",
        "crowd": "crowd regions written as ordinary objects (iscrowd is not stored)",
        "keypoints": "instances with keypoints kept in objects.keypoints",
    }
    if to == "yolo":
        from instkit.io.yolo import COUNT_NOTES

        notes.update(COUNT_NOTES)
    if to == "hf":
        notes["rle_as_polygons"] = ("masks that were not polygons written as polygons in `segmentation` "
                                    "(for the guide's code); exact RLE kept in objects.rle")
    for key, value in counts.items():
        if value and key in notes:
            click.echo(f"  {value:>6}  {notes[key]}")
        elif key not in notes:
            click.echo(f"  {value:>6}  {key}")

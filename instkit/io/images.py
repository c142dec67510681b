"""A sample's image file written by every format's writer, by one rule: the bytes it came from
are copied as they are when they already are in the destination's format (no JPEG encoded a
second time), else its pixels are encoded by the destination's suffix; atomically, and never
over the sample's own file."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from instkit.io.files import atomic_write, same_file
from instkit.sample import Sample

SUFFIX_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
JPEG_QUALITY = 95


def encoded_format(data: bytes) -> str | None:
    """The image format of encoded bytes (``"JPEG"``, ``"PNG"``...: PIL's name), from the header
    alone; None when PIL does not know it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return str(image.format) if image.format else None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None


def suffix_for(data: bytes) -> str:
    """A file suffix for encoded image bytes (``.png`` when the format is not known)."""
    found = encoded_format(data)
    return next((k for k, v in SUFFIX_FORMAT.items() if v == found), ".png")


def copy_image(sample: Sample, destination: str | Path) -> None:
    """Write ``sample``'s image to ``destination`` (see the module docstring). Stored bytes are
    those of a slot with a ``source`` (a tar member or inline image: ``instkit.io.sa1b``)."""
    destination = Path(destination)
    if sample.image_path and same_file(sample.image_path, destination):
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = destination.suffix.lower()
    wanted = SUFFIX_FORMAT.get(suffix, "PNG")
    if sample.image_path and Path(sample.image_path).is_file() and \
            SUFFIX_FORMAT.get(Path(sample.image_path).suffix.lower()) == wanted:
        with open(sample.image_path, "rb") as source, atomic_write(destination, "wb") as out:
            shutil.copyfileobj(source, out)
        return
    stored = getattr(getattr(sample, "_slot", None), "source", None)
    if stored is not None:
        data = stored.read()
        if encoded_format(data) == wanted:
            with atomic_write(destination, "wb") as out:
                out.write(data)
            return
    from PIL import Image

    with atomic_write(destination, "wb") as out:
        Image.fromarray(sample.image).save(
            out, format=wanted, **({"quality": JPEG_QUALITY} if wanted == "JPEG" else {}))


__all__ = ["SUFFIX_FORMAT", "copy_image", "encoded_format", "suffix_for"]

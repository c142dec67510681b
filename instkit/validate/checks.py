"""``validate``'s walk: the rulebook's document rules (``instkit.validate.rules``) plus the
checks of image files, which only ``validate --images`` runs.

Per-annotation checks run in one Python pass; rasterisation (pycocotools) and polygon validity
(shapely) are batched per image and per file; image files are opened in parallel worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from instkit.errors import PathEscapeError
from instkit.io.files import safe_join
from instkit.validate import rules
from instkit.validate.rules import (  # noqa: F401 - the names the repair and older callers use
    AREA_TOLERANCE_FRACTION,
    AREA_TOLERANCE_PX,
    BBOX_TOLERANCE_FRACTION,
    BBOX_TOLERANCE_PX,
    OUTSIDE_TOLERANCE_PX,
    Collector,
    Context,
    Finding,
    Geometry,
    Limits,
    is_finite_number,
    is_int,
    is_number,
    polygon_parts,
    rle_geometry,
)

# --- image files -------------------------------------------------------------------------------


def _open_image(path: str) -> tuple[str, str | None, tuple[int, int] | None]:
    """Worker: ``(status, message, (H, W) after EXIF orientation)``."""
    from PIL import UnidentifiedImageError

    from instkit.sample import ImageTooLargeError, open_image

    if not os.path.isfile(path):
        return "missing", None, None
    try:
        with open_image(path) as image:  # the pixel limit is checked before decoding
            orientation = image.getexif().get(0x0112, 1)
            width, height = image.size
            image.load()
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return "ok", None, (height, width)
    except ImageTooLargeError as exc:
        return "unreadable", exc.message, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return "unreadable", str(exc), None


def check_image_files(files: list[tuple[int, str]], images_dir: str, document: dict[str, Any],
                      ctx: Context, out: Collector, workers: int | None, progress: bool) -> None:
    paths: list[tuple[int, str, str]] = []
    index_of = {image_id: i for i, (image_id, _) in enumerate(files)}
    for image_id, name in files:
        try:
            paths.append((image_id, name, safe_join(images_dir, name)))
        except PathEscapeError as exc:
            out.add("image-path-escape", exc.message, json_path=_image_path(document, image_id, ctx),
                    image_id=image_id)
    del index_of
    results: Iterator[tuple[str, str | None, tuple[int, int] | None]]
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if workers > 1 and len(paths) >= 32:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_open_image, [p for _, _, p in paths], chunksize=16)
    else:
        pool = None
        results = map(_open_image, [p for _, _, p in paths])
    if progress and len(paths) >= 200:
        from tqdm import tqdm

        results = iter(tqdm(results, total=len(paths), desc="images", unit="img", leave=False))
    try:
        for (image_id, name, full), (status, message, size) in zip(paths, results, strict=True):
            where = _image_path(document, image_id, ctx)
            if status == "missing":
                out.add("image-missing", f"{name} not found in {images_dir}", json_path=where,
                        image_id=image_id)
            elif status == "unreadable":
                out.add("image-unreadable", f"{name}: {message}", json_path=where, image_id=image_id)
            elif image_id in ctx.images and size is not None and size != ctx.images[image_id][:2]:
                h, w = ctx.images[image_id][:2]
                out.add("image-size-mismatch", f"{name} is {size[1]}x{size[0]} (WxH, after EXIF "
                        f"orientation) but the entry says {w}x{h}", json_path=where, image_id=image_id)
            del full
    finally:
        if pool is not None:
            pool.shutdown()


def _image_path(document: dict[str, Any], image_id: int, ctx: Context) -> str:
    if image_id in ctx.images:
        return f"images[{ctx.images[image_id][2]}]"
    for index, entry in enumerate(document.get("images") or []):
        if isinstance(entry, dict) and entry.get("id") == image_id:
            return f"images[{index}]"
    return "images"


def check_document(document: Any, *, file: str | None = None, raw: bytes | None = None,
                   images_dir: str | None = None, workers: int | None = None,
                   progress: bool = False, limits: Limits | None = None,
                   ) -> tuple[list[Finding], Context]:
    """Every rule of a parsed COCO document (``rules.check_document``), then, with
    ``images_dir``, its image files. ``raw`` (the file's bytes) locates NaN/Infinity."""
    findings, ctx = rules.check_document(document, file=file, raw=raw, limits=limits,
                                         progress=progress)
    if images_dir is not None and isinstance(document, dict):
        out = Collector(file)
        check_image_files(ctx.image_files, images_dir, document, ctx, out, workers, progress)
        findings = findings + out.findings
    return findings, ctx


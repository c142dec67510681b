"""``Sample``: one image, its ``Instances``, its image id and what happened to it.

Images are ``(H, W, 3)`` uint8 RGB. A sample made from a file loads it on first use, applies the
EXIF orientation, converts grayscale, palette, RGBA and 16-bit images to RGB uint8, and records
each conversion in ``meta.notes``.

Images larger than ``max_image_pixels()`` (width x height; default Pillow's decompression-bomb
limit, 178,956,970) are refused with ``ImageTooLargeError`` before any pixel is decoded. Raise the
limit with ``set_max_image_pixels(n)``, the environment variable ``INSTKIT_MAX_IMAGE_PIXELS``
(``0``: no limit) or ``instkit --max-image-pixels N``; raising it past Pillow's own limit raises
Pillow's (``PIL.Image.MAX_IMAGE_PIXELS``) to match in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import ImageError, InstancesError, InstkitError, Location
from instkit.instances import Instances


@dataclass(frozen=True)
class Drop:
    """One instance removed from a sample, and why."""

    annotation_id: int
    reason: str
    label: int | None = None
    stage: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "annotation_id": int(self.annotation_id),
            "reason": self.reason,
            "label": None if self.label is None else int(self.label),
            "stage": self.stage,
            "detail": self.detail,
        }


@dataclass
class SampleMeta:
    """Where a sample came from and what was done to it on the way."""

    source: str | None = None
    file_name: str | None = None
    original_size: tuple[int, int] | None = None
    categories: Categories | None = None
    drops: list[Drop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> SampleMeta:
        return dataclasses.replace(
            self, drops=list(self.drops), notes=list(self.notes), extra=dict(self.extra)
        )


class _ImageSlot:
    """Holds a lazily loaded image; shared by copies of a sample made with ``replace``."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None) -> None:
        self.array = array


@dataclass(frozen=True, eq=False)
class Sample:
    instances: Instances
    image_id: int = 0
    meta: SampleMeta = field(default_factory=SampleMeta)
    image_path: str | None = None
    _slot: _ImageSlot = field(default_factory=lambda: _ImageSlot(None), repr=False)

    @classmethod
    def from_array(
        cls, image: np.ndarray, instances: Instances, image_id: int = 0,
        meta: SampleMeta | None = None,
    ) -> Sample:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ImageError(
                f"image must be (H, W, 3) uint8 RGB, got shape {array.shape} dtype {array.dtype}",
                Location(image_id=image_id),
            )
        if tuple(array.shape[:2]) != instances.image_size:
            raise InstancesError(
                f"image size {tuple(array.shape[:2])} differs from the instances' image size "
                f"{instances.image_size}",
                Location(image_id=image_id),
            )
        return cls(instances, int(image_id), meta or SampleMeta(), None, _ImageSlot(array))

    @property
    def image_size(self) -> tuple[int, int]:
        return self.instances.image_size

    @property
    def image(self) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 RGB image, loaded from ``image_path`` on first use."""
        if self._slot.array is None:
            if self.image_path is None:
                raise ImageError("sample has neither an image nor an image path",
                                 Location(image_id=self.image_id))
            array, notes = load_image(self.image_path)
            if tuple(array.shape[:2]) != self.image_size:
                raise ImageError(
                    f"image is {array.shape[0]}x{array.shape[1]} (HxW, after EXIF orientation) "
                    f"but its annotation says {self.image_size[0]}x{self.image_size[1]}",
                    Location(file=self.image_path, image_id=self.image_id),
                )
            self.meta.notes.extend(notes)
            self._slot.array = array
        return self._slot.array

    @property
    def image_loaded(self) -> bool:
        """True once the image is in memory (given as an array, or loaded)."""
        return self._slot.array is not None

    @property
    def has_image(self) -> bool:
        return self._slot.array is not None or self.image_path is not None

    def replace(self, *, image: np.ndarray | None = None, **changes: Any) -> Sample:
        """A new sample; ``image=`` swaps in an array (and forgets the path)."""
        if "meta" not in changes:
            changes["meta"] = self.meta.copy()
        if image is not None:
            new = dataclasses.replace(self, image_path=None, _slot=_ImageSlot(None), **changes)
            return Sample.from_array(image, new.instances, new.image_id, new.meta)
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        source = self.image_path if self.image_path else "in memory"
        return (
            f"Sample(image_id={self.image_id}, image_size={self.image_size}, "
            f"instances={len(self.instances)}, image={source}, drops={len(self.meta.drops)})"
        )


def categories_of(data: Any) -> Categories | None:
    """The category table carried by a dataset (``.categories``) or by its first sample."""
    found = getattr(data, "categories", None)
    if isinstance(found, Categories):
        return found
    for sample in data:
        return sample.meta.categories
    return None


MAX_IMAGE_PIXELS_ENV = "INSTKIT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485  # Pillow refuses images above twice MAX_IMAGE_PIXELS


class ImageTooLargeError(ImageError):
    """An image with more pixels than ``max_image_pixels()``: a possible decompression bomb."""


def set_max_image_pixels(limit: int | None) -> None:
    """Largest image (width x height) instkit decodes; ``None`` or 0 for no limit.

    Kept in the environment variable ``INSTKIT_MAX_IMAGE_PIXELS`` so that worker processes see it.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"the image pixel limit must be a whole number >= 0, got {limit!r}")
    os.environ[MAX_IMAGE_PIXELS_ENV] = str(limit or 0)


def max_image_pixels() -> int | None:
    """The limit in force: ``INSTKIT_MAX_IMAGE_PIXELS`` if set (0: none), else the default."""
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise InstkitError(f"{MAX_IMAGE_PIXELS_ENV} must be a whole number of pixels (0 for no "
                           f"limit), got {raw!r}")
    return value or None


def too_large_error(message: str, where: Location | None) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{message}; this guards against decompression bombs. If you trust the file, raise the "
        f"limit: instkit --max-image-pixels N, {MAX_IMAGE_PIXELS_ENV}=N (0: no limit) or "
        f"instkit.sample.set_max_image_pixels(N)", where)


def bomb_error(exc: Exception, where: Location | None) -> ImageTooLargeError:
    """``ImageTooLargeError`` for Pillow's ``DecompressionBombError``, in instkit's words."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    limit = max_image_pixels()
    if found is None or limit is None:
        return too_large_error(str(exc).split(", could be")[0], where)
    # Pillow refuses only past twice its limit, which match_pillow_limit keeps >= instkit's.
    return too_large_error(f"image has {int(found[1]):,} pixels, more than the limit of "
                           f"{limit:,}", where)


def check_image_pixels(size: tuple[int, int], where: Location | None = None) -> None:
    """Raise ``ImageTooLargeError`` when a ``(width, height)`` image is past the limit."""
    limit = max_image_pixels()
    width, height = int(size[0]), int(size[1])
    if limit is not None and width * height > limit:
        raise too_large_error(f"image is {width}x{height} = {width * height:,} pixels, more than the "
                         f"limit of {limit:,}", where)


def match_pillow_limit() -> None:
    """Let Pillow open what instkit's (raised) limit allows; instkit checks the size itself."""
    from PIL import Image

    limit = max_image_pixels()
    current = Image.MAX_IMAGE_PIXELS
    if current is None:
        return
    if limit is None:
        Image.MAX_IMAGE_PIXELS = None
    elif limit > 2 * current:
        Image.MAX_IMAGE_PIXELS = limit


@contextlib.contextmanager
def open_image(source: str | os.PathLike[str] | IO[bytes],
               where: Location | None = None) -> Iterator[Any]:
    """``PIL.Image.open`` with instkit's pixel limit checked before anything is decoded."""
    from PIL import Image

    match_pillow_limit()
    try:
        opened = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise bomb_error(exc, where) from None
    with opened:
        check_image_pixels(opened.size, where)
        yield opened


def load_image(path: str | os.PathLike[str] | IO[bytes],
               at_least: tuple[int, int] | None = None, *, where: Location | None = None
               ) -> tuple[np.ndarray, list[str]]:
    """Read an image (a file, or a stream of encoded bytes) as ``(H, W, 3)`` uint8 RGB with
    EXIF orientation applied. ``where`` names it in errors (default: the file's path).

    ``at_least=(h, w)``: a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT
    scaling, through Pillow's ``draft``), the smallest that keeps both sides at least ``(h, w)``
    (in the displayed orientation); each side becomes ``ceil(side / k)``. Other formats decode
    at full size. Returns the array and notes describing each conversion made.
    """
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        where = where or Location(file=path)
        if at_least is None:
            with _read_errors(where):
                array = _plain_jpeg(path, where)
            if array is not None:
                return array, []
    with _read_errors(where), open_image(path, where) as opened:
        array, notes = _decode_opened(opened, at_least)
    return array, notes


def _plain_jpeg(path: str, where: Location | None) -> np.ndarray | None:
    """A plain JPEG file decoded by OpenCV without opening it in Pillow, or None (Pillow's
    path then reads it and names any error).

    Plain: an 8-bit, 3-component baseline / extended / progressive JPEG, with no EXIF rotation,
    no Adobe colour-transform marker and no MPO frames, that ends with the end-of-image marker:
    the files Pillow opens as ``RGB`` ``JPEG`` and ``_opencv_jpeg`` decodes to Pillow's pixels.
    Reading the header here saves opening the file in Pillow (about 0.15 ms per image)."""
    with open(path, "rb") as file:
        data = file.read()
    size = _plain_jpeg_size(data)
    if size is None:
        return None
    check_image_pixels((size[1], size[0]), where)
    return _opencv_decode(data, size)


_SOF_PLAIN = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of a plain JPEG (see ``_plain_jpeg``) from its markers, else None."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    size = None
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2 or at + 2 + length > end:
            return None
        body = data[at + 4 : at + 2 + length]
        if marker == 0xDA:  # start of scan: the header is over
            return size
        if marker in _SOF_PLAIN:
            if size is not None or len(body) < 6 or body[0] != 8 or body[5] != 3:
                return None
            size = (int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"))
            if size[0] == 0 or size[1] == 0:
                return None
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical or arithmetic coded: Pillow's path
        elif marker == 0xEE or (marker == 0xE2 and body[:4] == b"MPF\x00"):
            return None  # Adobe colour transform, multi-picture file
        elif marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            if _exif_orientation(body[6:]) != 1:
                return None
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            return None  # no standalone marker belongs in a header
        at += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag of a TIFF (EXIF) block's first directory: 1 when absent, None when
    the block cannot be read."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    little = tiff[:2] == b"II"

    def number(raw: bytes) -> int:
        return int.from_bytes(raw, "little" if little else "big")

    directory = number(tiff[4:8])
    if directory + 2 > len(tiff):
        return None
    for k in range(number(tiff[directory : directory + 2])):
        entry = tiff[directory + 2 + 12 * k : directory + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if number(entry[0:2]) == 0x0112:
            return number(entry[8:10]) if number(entry[2:4]) == 3 else None  # 3: SHORT
    return 1


def image_to_rgb(image: Any, where: Location | None = None) -> tuple[np.ndarray, list[str]]:
    """``load_image`` of a PIL image already open (or already in memory): the same pixel
    limit, EXIF orientation, mode conversions, notes and errors."""
    with _read_errors(where):
        match_pillow_limit()
        check_image_pixels(image.size, where)
        array, notes = _decode_opened(image, None)
    return array, notes


@contextlib.contextmanager
def _read_errors(where: Location | None) -> Iterator[None]:
    """Pillow's and the file system's errors while reading an image, as ``ImageError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except FileNotFoundError:
        raise ImageError("image file not found", where) from None
    except Image.DecompressionBombError as exc:
        raise bomb_error(exc, where) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"image cannot be read: {exc}", where) from None


def _decode_opened(opened: Any, at_least: tuple[int, int] | None
                   ) -> tuple[np.ndarray, list[str]]:
    from PIL import ImageOps

    notes: list[str] = []
    orientation = opened.getexif().get(0x0112, 1)
    if at_least is not None and opened.format == "JPEG":
        want_h, want_w = (int(v) for v in at_least)
        if orientation in (5, 6, 7, 8):  # stored transposed
            want_h, want_w = want_w, want_h
        full = opened.size
        opened.draft("RGB", (max(want_w, 1), max(want_h, 1)))
        if opened.size != full:
            notes.append(f"decoded at {opened.size[0]}x{opened.size[1]} (WxH) of "
                         f"{full[0]}x{full[1]} (JPEG DCT scaling)")
    array = None
    if (orientation in (None, 1) and opened.format == "JPEG" and opened.mode == "RGB"
            and at_least is None):
        array = _opencv_jpeg(opened)
    if array is None:
        image = ImageOps.exif_transpose(opened) if orientation not in (None, 1) else opened
        if orientation not in (None, 1):
            notes.append(f"applied EXIF orientation {orientation}")
        image.load()
        array = pil_to_rgb_uint8(image, notes)
    return array, notes


def _opencv_jpeg(opened: Any) -> np.ndarray | None:
    """An opened RGB JPEG decoded by OpenCV straight into a writable array, or None when
    OpenCV cannot vouch for it (Pillow then decodes and names any error).

    Both libraries decode with libjpeg-turbo's defaults, so the pixels are Pillow's
    (tests/test_sample.py checks every JPEG of the shared data); OpenCV is about 20% faster and
    needs no copy out of a PIL image. A file that does not end with the end-of-image marker
    goes to Pillow: OpenCV fills a truncated image with gray instead of failing."""
    try:
        opened.fp.seek(0)
        data = opened.fp.read()
    except (AttributeError, OSError, ValueError):
        return None
    width, height = opened.size
    return _opencv_decode(data, (height, width))


def _opencv_decode(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """A JPEG's bytes decoded by OpenCV to ``(H, W, 3)`` RGB of the expected ``size``, or None:
    when the file lacks its end-of-image marker (OpenCV would fill the missing part with gray
    instead of failing) or the result is not what the header promised."""
    import cv2

    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    flags = cv2.IMREAD_IGNORE_ORIENTATION | getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None or array.shape != (*size, 3) or array.dtype != np.uint8:
        return None
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):  # OpenCV before 4.10 decodes to BGR
        cv2.cvtColor(array, cv2.COLOR_BGR2RGB, dst=array)
    return array


def pil_to_rgb_uint8(image: Any, notes: list[str]) -> np.ndarray:
    """A PIL image of any mode -> ``(H, W, 3)`` uint8 RGB; each conversion appended to ``notes``."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image).astype(np.float64)
        if mode == "F":
            low, high = float(np.nanmin(data)), float(np.nanmax(data))
            scaled = (data - low) / (high - low or 1.0) * 255.0
            notes.append(f"scaled float image from [{low:g}, {high:g}] to 8-bit")
        else:
            scaled = data / 257.0
            notes.append(f"scaled {mode} 16-bit image to 8-bit")
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        notes.append("converted grayscale to RGB")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("L", "1"):
        notes.append(f"converted {'grayscale' if mode == 'L' else 'bilevel'} to RGB")
    elif mode in ("RGBA", "LA", "PA"):
        notes.append(f"dropped the alpha channel of a {mode} image")
    elif mode == "P":
        notes.append("converted a palette image to RGB")
    else:
        notes.append(f"converted {mode} to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()

"""Instance masks: one column type with several storage forms.

Conventions (the same as pycocotools' ``mask.py``):

- An image size is ``(H, W)``. A mask is an ``(H, W)`` boolean image; ``True`` marks the object.
- Coordinates are pixel-edge: the point ``(0, 0)`` is the top-left corner of the top-left pixel,
  and pixel ``(row=y, col=x)`` covers ``[x, x+1) x [y, y+1)``.
- **Polygon**: one or more parts, each a flat float64 array ``[x0, y0, x1, y1, ...]`` with at
  least 3 vertices. The mask is the union of the parts as pycocotools rasterises them
  (``frPyObjects`` + ``merge`` + ``decode``), bit for bit. Holes cannot be expressed.
- **RLE**: pycocotools' run-length encoding: runs over the column-major (Fortran) flattened
  mask, starting with a run of zeros. ``counts`` is either *uncompressed* (a list of ints) or
  *compressed* (pycocotools' ASCII string, as ``str`` or ``bytes``). Stored compressed.
- **Bitmap**: a crop-local boolean array plus the ``(y0, x0)`` image position of its top-left
  pixel. An empty mask is a ``(0, 0)`` bitmap.
- A mask's box is ``xyxy`` float32 pixel-edge: pixels spanning columns 3..7 give ``x0=3, x1=8``
  (pycocotools' ``toBbox`` in xyxy form). An empty mask has the box ``[0, 0, 0, 0]``.

Dense ``(N, H, W)`` arrays exist only when asked for (``Masks.to_dense``); the stored forms grow
with object area or outline length, not with image area times instance count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pycocotools.mask as mask_utils

from instkit.errors import MaskError

ImageSize = tuple[int, int]

# Dense decoding is done in chunks of at most this many bytes of (H, W, n) scratch.
_DECODE_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True, eq=False)
class PolygonMask:
    """A mask given by polygon parts (COCO's ``segmentation`` list)."""

    parts: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        for index, part in enumerate(self.parts):
            if part.ndim != 1 or part.size % 2 or part.size < 6:
                raise MaskError(
                    f"polygon part {index} must be a flat list of at least 3 (x, y) pairs, "
                    f"got {part.size} numbers"
                )
            if not np.isfinite(part).all():
                raise MaskError(f"polygon part {index} has a NaN or infinite coordinate")

    @classmethod
    def _trusted(cls, parts: tuple[np.ndarray, ...]) -> PolygonMask:
        """Build from parts already checked (by a reader), skipping the checks."""
        item = object.__new__(cls)
        object.__setattr__(item, "parts", parts)
        return item

    @classmethod
    def from_coords(cls, parts: Iterable[Sequence[float] | np.ndarray]) -> PolygonMask:
        arrays = []
        for index, part in enumerate(parts):
            try:
                arrays.append(np.asarray(part, dtype=np.float64).reshape(-1))
            except (TypeError, ValueError) as exc:
                raise MaskError(f"polygon part {index} is not a list of numbers: {exc}") from None
        return cls(tuple(arrays))


@dataclass(frozen=True, eq=False)
class RLEMask:
    """A mask in pycocotools' RLE, stored compressed.

    ``uncompressed`` remembers that the source gave list counts, so that a writer can give them
    back in the same form.
    """

    counts: bytes
    uncompressed: bool = False


@dataclass(frozen=True, eq=False)
class BitmapMask:
    """A crop-local boolean mask and the ``(y0, x0)`` image position of its top-left pixel."""

    bitmap: np.ndarray
    offset: tuple[int, int]

    def __post_init__(self) -> None:
        if self.bitmap.ndim != 2 or self.bitmap.dtype != np.bool_:
            raise MaskError(
                f"bitmap must be a 2-D bool array, got shape {self.bitmap.shape} "
                f"dtype {self.bitmap.dtype}"
            )


MaskItem = Union[PolygonMask, RLEMask, BitmapMask]  # noqa: UP007 - a runtime alias on 3.10


# --- RLE counts ------------------------------------------------------------------------------


# pycocotools' rleFrString shifts each 5-bit digit in a C ``int`` and stores every count as a
# 32-bit ``uint``: numbers of at most 7 digits (35 bits, what rleToString ever writes) decode to
# the same value mod 2**32 in both decoders; longer ones shift by 35+ bits, which C leaves
# undefined (x86 wraps the shift mod 32), so instkit refuses them instead of guessing.
RLE_MAX_DIGITS = 7
RLE_MAX_RUN = 2**32 - 1


# Why a counts string is refused (``RleCountsBatch.status``); 0 is usable.
RLE_OK, RLE_BAD_CHARACTER, RLE_UNFINISHED, RLE_TOO_LONG, RLE_OUT_OF_RANGE = range(5)
_RLE_REFUSALS = {
    RLE_BAD_CHARACTER: "RLE counts string has characters outside pycocotools' alphabet",
    RLE_UNFINISHED: "RLE counts string ends in the middle of a number",
    RLE_TOO_LONG: f"RLE counts string has a number of more than {RLE_MAX_DIGITS} characters; "
                  f"pycocotools reads at most {RLE_MAX_DIGITS} the same way",
    RLE_OUT_OF_RANGE: "RLE counts decode to a run length outside 0..2**32-1",
}


@dataclass(frozen=True)
class RleCountsBatch:
    """Many compressed counts strings decoded in one pass: ``runs`` (int64, every string's run
    lengths one after another), ``offsets`` (``(N + 1,)``: string ``i``'s runs are
    ``runs[offsets[i]:offsets[i + 1]]``), ``status`` (``(N,)``, ``RLE_OK`` or why the string
    is refused; a refused string's runs are meaningless), ``totals`` and ``areas`` (``(N,)``:
    sum of all runs / of the odd runs, the foreground pixels)."""

    runs: np.ndarray
    offsets: np.ndarray
    status: np.ndarray
    totals: np.ndarray
    areas: np.ndarray


# Strings decoded together in one NumPy pass: enough to amortise the calls, few enough that
# the pass's arrays stay in the CPU cache (5x faster than one pass over 13M characters).
_DECODE_CHUNK_CHARACTERS = 1 << 16


def decode_rle_counts_batch(strings: Sequence[bytes | str]) -> RleCountsBatch:
    """Compressed pycocotools counts strings -> run lengths (vectorised ``rleFrString``).

    Refuses (per string, in ``status``) what pycocotools would read differently or not at all:
    characters outside its alphabet (48..111, so no NUL or non-ASCII), a string ending inside a
    number, a number longer than ``RLE_MAX_DIGITS`` characters, and runs outside
    ``0..2**32-1``. NumPy passes over cache-sized chunks of strings: checking thousands of
    results costs about what one string does in a Python loop."""
    chunks: list[RleCountsBatch] = []
    start = size = 0
    for index, counts in enumerate(strings):
        size += len(counts)
        if size >= _DECODE_CHUNK_CHARACTERS:
            chunks.append(_decode_chunk(strings[start : index + 1]))
            start, size = index + 1, 0
    if start < len(strings) or not chunks:
        chunks.append(_decode_chunk(strings[start:]))
    if len(chunks) == 1:
        return chunks[0]
    offsets = [np.zeros(1, dtype=np.int64)]
    shift = 0
    for chunk in chunks:
        offsets.append(chunk.offsets[1:] + shift)
        shift += int(chunk.offsets[-1])
    return RleCountsBatch(np.concatenate([c.runs for c in chunks]), np.concatenate(offsets),
                          np.concatenate([c.status for c in chunks]),
                          np.concatenate([c.totals for c in chunks]),
                          np.concatenate([c.areas for c in chunks]))


def _decode_chunk(strings: Sequence[bytes | str]) -> RleCountsBatch:
    """``decode_rle_counts_batch`` of strings decoded in one pass."""
    n = len(strings)
    encoded: list[bytes] = []
    status = np.zeros(n, dtype=np.int8)
    for i, counts in enumerate(strings):
        if isinstance(counts, str):
            try:
                counts = counts.encode("ascii")
            except UnicodeEncodeError:
                status[i] = RLE_BAD_CHARACTER
                counts = b""
        encoded.append(counts)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    raw = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    bad = (raw < 48) | (raw > 111)
    if bad.any():
        status[np.searchsorted(starts, np.flatnonzero(bad), side="right") - 1] = RLE_BAD_CHARACTER
    chars = raw - np.uint8(48)  # (a refused string's characters wrap; its runs are not used)
    more = (chars & 0x20) != 0
    # a number never runs on into the next string
    last_char = starts[1:][lengths > 0] - 1
    unfinished = last_char[more[last_char]]
    if unfinished.size:
        owners = np.searchsorted(starts, unfinished, side="right") - 1
        status[owners] = np.maximum(status[owners], RLE_UNFINISHED)
        more[unfinished] = False
    ends = np.flatnonzero(~more)
    number_starts = np.empty_like(ends)
    if ends.size:
        number_starts[0] = 0
        number_starts[1:] = ends[:-1] + 1
    digits = ends - number_starts + 1
    numbers_per_string = np.diff(np.searchsorted(ends, starts))
    string_of_number = np.repeat(np.arange(n), numbers_per_string)
    too_long = digits > RLE_MAX_DIGITS
    if too_long.any():
        where = np.unique(string_of_number[too_long])
        status[where] = np.where(status[where] == RLE_OK, RLE_TOO_LONG, status[where])
    # Most numbers are one character: start from each number's first digit, then add the
    # k-th digits of the numbers that have one (a refused long number stops at the 7th).
    values = (chars[number_starts] & 0x1F).astype(np.int64)
    longer = np.flatnonzero(digits > 1)
    for k in range(1, RLE_MAX_DIGITS):
        longer = longer[digits[longer] > k]
        if not longer.size:
            break
        values[longer] |= (chars[number_starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = (chars[ends] & 0x10) != 0
    if negative.any():
        values[negative] |= np.left_shift(-1, 5 * np.minimum(digits[negative], RLE_MAX_DIGITS))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(numbers_per_string, out=offsets[1:])
    # Delta coding: from the fourth count of a string on, each count adds the one two places
    # back: a running sum along each string's odd counts and along its even counts from the
    # third, restarted at every string.
    index_in_string = np.arange(values.size) - np.repeat(offsets[:-1], np.diff(offsets))
    for chain in ((index_in_string % 2 == 1), (index_in_string % 2 == 0) & (index_in_string >= 2)):
        members = np.flatnonzero(chain)
        if members.size:
            sums = np.cumsum(values[members])
            owner = string_of_number[members]
            first = np.ones(members.size, dtype=bool)
            first[1:] = owner[1:] != owner[:-1]
            heads = np.flatnonzero(first)
            before = (sums - values[members])[heads]  # the running sum as each string starts
            values[members] = sums - np.repeat(before, np.diff(np.append(heads, members.size)))
    out_of_range = (values < 0) | (values > RLE_MAX_RUN)
    if out_of_range.any():
        where = np.unique(string_of_number[out_of_range])
        status[where] = np.where(status[where] == RLE_OK, RLE_OUT_OF_RANGE, status[where])
    running = np.concatenate([[0], np.cumsum(values)])
    totals = running[offsets[1:]] - running[offsets[:-1]]
    running = np.concatenate([[0], np.cumsum(np.where(index_in_string % 2 == 1, values, 0))])
    areas = running[offsets[1:]] - running[offsets[:-1]]
    return RleCountsBatch(values, offsets, status, totals, areas)


def decode_rle_counts(counts: bytes | str) -> np.ndarray:
    """Compressed pycocotools counts string -> int64 run lengths (``decode_rle_counts_batch``
    of one string); raises ``MaskError`` saying why a string is refused."""
    batch = decode_rle_counts_batch([counts])
    if batch.status[0] != RLE_OK:
        if isinstance(counts, str) and not counts.isascii():
            raise MaskError("RLE counts string has non-ASCII characters")
        raise MaskError(_RLE_REFUSALS[int(batch.status[0])])
    return batch.runs


# pycocotools' ``area`` builds its output with ``np.array((n,), dtype=np.uint8)``, which NumPy 2
# refuses for n >= 256 (OverflowError): it is only ever called with fewer.
_PYCOCOTOOLS_AREA_BATCH = 255


def rle_areas(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pixel count of each pycocotools RLE dict, int64 ``(N,)``, for any N."""
    out = np.zeros(len(rles), dtype=np.int64)
    for start in range(0, len(rles), _PYCOCOTOOLS_AREA_BATCH):
        batch = list(rles[start : start + _PYCOCOTOOLS_AREA_BATCH])
        out[start : start + len(batch)] = mask_utils.area(batch)
    return out


def encode_rle_counts(runs: Sequence[int] | np.ndarray, size: ImageSize) -> bytes:
    """Uncompressed run lengths -> compressed pycocotools counts (``rleToString``)."""
    h, w = size
    rle = mask_utils.frPyObjects(
        {"counts": [int(r) for r in runs], "size": [int(h), int(w)]}, int(h), int(w)
    )
    return bytes(rle["counts"])


def _rle_dict(counts: bytes, size: ImageSize) -> dict[str, Any]:
    return {"size": [int(size[0]), int(size[1])], "counts": counts}


# --- conversions of single items ------------------------------------------------------------


def _polygons_to_rles(items: Sequence[PolygonMask], size: ImageSize) -> list[bytes]:
    """Rasterise polygons exactly as pycocotools does, with one C call for all their parts."""
    h, w = size
    parts: list[np.ndarray] = []
    for item in items:
        parts.extend(item.parts)
    if not parts:
        return []
    part_rles = mask_utils.frPyObjects(parts, h, w)
    out = []
    start = 0
    for item in items:
        stop = start + len(item.parts)
        group = part_rles[start:stop]
        merged = group[0] if len(group) == 1 else mask_utils.merge(group)
        out.append(bytes(merged["counts"]))
        start = stop
    return out


def _bitmap_to_rle(item: BitmapMask, size: ImageSize) -> bytes:
    """Compressed RLE of a crop-local bitmap, computed from the crop alone.

    The run boundaries are where a column of the crop (padded with a zero above and below)
    changes value, placed at their column-major image positions: memory follows the object's
    box, never a full-height band (pycocotools' ``encode`` takes 4 bytes per pixel of what it is
    given and does not check its allocation)."""
    h, w = size
    bh, bw = item.bitmap.shape
    y0, x0 = item.offset
    if bh == 0 or bw == 0 or not item.bitmap.any():
        return encode_rle_counts([h * w], size)
    padded = np.zeros((bh + 2, bw), dtype=np.int8)
    padded[1:-1] = item.bitmap
    flat = padded.reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # value differs from the one before
    column, row = np.divmod(change, bh + 2)
    positions = (x0 + column).astype(np.int64) * h + (y0 + row - 1)
    # A full-height crop ends one column where the next begins: the two changes cancel.
    unique, times = np.unique(positions, return_counts=True)
    positions = unique[(times % 2 == 1) & (unique < h * w)]
    bounds = np.concatenate([[0], positions, [h * w]])
    return encode_rle_counts(np.diff(bounds), size)


def _check_bitmap_fits(item: BitmapMask, size: ImageSize, index: int) -> None:
    bh, bw = item.bitmap.shape
    y0, x0 = item.offset
    if bh == 0 or bw == 0:
        return
    if y0 < 0 or x0 < 0 or y0 + bh > size[0] or x0 + bw > size[1]:
        raise MaskError(
            f"mask {index}: bitmap of shape {(bh, bw)} at offset (y0={y0}, x0={x0}) "
            f"does not fit in an image of size {tuple(size)}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def parse_coco_rle(
    segmentation: dict[str, Any], image_size: ImageSize | None = None, *,
    max_pixels: int = 2**31 - 1,
) -> tuple[bytes, bool, int]:
    """Check a COCO RLE dict and return ``(compressed counts, given uncompressed?, area)``.

    The one implementation of the RLE rules (docs/validate.md): ``size`` is two integers (not
    strings, booleans or null), equal to ``image_size`` when given, with ``H*W <= max_pixels``;
    ``counts`` is a list of non-negative integers or a pycocotools string (``decode_rle_counts``)
    whose runs sum to ``H*W``. Raises the rule's error class with ``code`` set and the field
    (``size`` / ``counts``) as the location's ``json_path``; nothing reaches pycocotools before.
    """
    from instkit.errors import LimitError, Location, RLEError, SchemaError, show_value

    size = segmentation.get("size")
    counts = segmentation.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(_is_int(v) and v >= 0 for v in size)):
        raise SchemaError(f"RLE 'size' must be [height, width] integers, got {show_value(size)}",
                          Location(json_path="size"), code="schema-type")
    h, w = int(size[0]), int(size[1])
    if image_size is not None and (h, w) != (int(image_size[0]), int(image_size[1])):
        raise RLEError(f"RLE size [{h}, {w}] differs from the image's [height, width] = "
                       f"[{image_size[0]}, {image_size[1]}]", Location(json_path="size"),
                       code="rle-size-mismatch")
    if h * w > max_pixels:
        raise LimitError(f"RLE size [{h}, {w}] has {h * w} pixels, more than the limit "
                         f"{max_pixels}", Location(json_path="size"), code="image-too-large")
    if isinstance(counts, list):
        if not (set(map(type, counts)) <= {int} or all(_is_int(c) for c in counts)) \
                or (counts and min(counts) < 0):
            raise RLEError("uncompressed RLE counts must be non-negative integers",
                           Location(json_path="counts"), code="rle-invalid")
        total = sum(counts)
        if total != h * w:
            raise RLEError(f"RLE counts sum to {total}, expected H*W = {h}*{w} = {h * w}",
                           Location(json_path="counts"), code="rle-counts-sum")
        return encode_rle_counts(counts, (h, w)), True, int(sum(counts[1::2]))
    if isinstance(counts, (str, bytes)):
        try:
            runs = decode_rle_counts(counts)
        except MaskError as exc:
            raise RLEError(f"counts string cannot be decoded: {exc.message}",
                           Location(json_path="counts"), code="rle-invalid") from None
        total = int(runs.sum())
        if total != h * w:
            raise RLEError(f"RLE counts sum to {total}, expected H*W = {h}*{w} = {h * w}",
                           Location(json_path="counts"), code="rle-counts-sum")
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
        return raw, False, int(runs[1::2].sum())
    raise SchemaError(f"RLE 'counts' must be a list of integers or a string, got "
                      f"{type(counts).__name__ if counts is not None else 'nothing'}",
                      Location(json_path="counts"), code="schema-type")


def rle_from_coco(segmentation: dict[str, Any], image_size: ImageSize) -> RLEMask:
    """A COCO RLE dict (compressed or not) -> ``RLEMask``; the checks of ``parse_coco_rle``."""
    if not isinstance(segmentation, dict):
        from instkit.errors import SchemaError

        raise SchemaError(f"an RLE must be an object, got {type(segmentation).__name__}",
                          code="schema-type")
    counts, uncompressed, _ = parse_coco_rle(segmentation, image_size)
    return RLEMask(counts, uncompressed=uncompressed)


# --- the column -------------------------------------------------------------------------------


def as_index(key: Any, length: int) -> np.ndarray:
    """Normalise an int, slice, bool array or int array into an int64 index array."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if not -length <= int(key) < length:
            raise IndexError(f"index {int(key)} is out of range for {length} instances")
        return np.array([int(key) % length], dtype=np.int64)
    if isinstance(key, slice):
        return np.arange(length, dtype=np.int64)[key]
    array = np.asarray(key)
    if array.dtype == np.bool_:
        if array.shape != (length,):
            raise IndexError(f"boolean index must have shape ({length},), got {array.shape}")
        return np.flatnonzero(array).astype(np.int64)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer) or array.ndim != 1:
        raise TypeError(
            f"index must be an int, a slice, or a 1-D bool or int array; got {array.dtype} "
            f"with shape {array.shape}"
        )
    if (array >= length).any() or (array < -length).any():
        raise IndexError(f"index {array.tolist()} is out of range for {length} instances")
    return np.where(array < 0, array + length, array).astype(np.int64)


class Masks:
    """An immutable column of N instance masks of one image size, in mixed storage forms.

    Build with ``Masks(items, image_size)`` or ``from_dense`` / ``from_polygons`` / ``from_rles``.
    Compressed RLEs are computed once per mask and cached.
    """

    __slots__ = ("_items", "_size", "_rles")

    def __init__(
        self,
        items: Sequence[MaskItem],
        image_size: ImageSize,
        *,
        _rles: Sequence[bytes | None] | None = None,
    ) -> None:
        size = (int(image_size[0]), int(image_size[1]))
        if size[0] < 0 or size[1] < 0:
            raise MaskError(f"image size must be non-negative (H, W), got {image_size}")
        items = tuple(items)
        for index, item in enumerate(items):
            if isinstance(item, BitmapMask):
                _check_bitmap_fits(item, size, index)
            elif not isinstance(item, (PolygonMask, RLEMask)):
                raise TypeError(
                    f"mask {index} must be a PolygonMask, RLEMask or BitmapMask, "
                    f"got {type(item).__name__}"
                )
        self._items = items
        self._size = size
        self._rles: list[bytes | None] = list(_rles) if _rles is not None else [None] * len(items)

    # construction ------------------------------------------------------------------------

    @classmethod
    def empty(cls, image_size: ImageSize) -> Masks:
        return cls((), image_size)

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> Masks:
        """``(N, H, W)`` bool/uint8 array -> box-tight crop-local bitmaps."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise MaskError(f"dense masks must have shape (N, H, W), got {masks.shape}")
        items: list[MaskItem] = [tight_bitmap(masks[index]) for index in range(masks.shape[0])]
        return cls(items, masks.shape[1:])

    @classmethod
    def from_polygons(
        cls, polygons: Sequence[Sequence[Sequence[float] | np.ndarray]], image_size: ImageSize
    ) -> Masks:
        """One list of parts per instance, each part a flat ``[x0, y0, x1, y1, ...]``."""
        items: list[MaskItem] = []
        for index, parts in enumerate(polygons):
            try:
                items.append(PolygonMask.from_coords(parts))
            except MaskError as exc:
                raise MaskError(f"mask {index}: {exc.message}") from None
        return cls(items, image_size)

    @classmethod
    def from_rles(cls, rles: Sequence[dict[str, Any]], image_size: ImageSize) -> Masks:
        items: list[MaskItem] = []
        for index, rle in enumerate(rles):
            try:
                items.append(rle_from_coco(rle, image_size))
            except MaskError as exc:
                raise MaskError(f"mask {index}: {exc.message}") from None
        return cls(items, image_size)

    # container protocol ----------------------------------------------------------------------

    @property
    def image_size(self) -> ImageSize:
        return self._size

    @property
    def items(self) -> tuple[MaskItem, ...]:
        return self._items

    @property
    def kinds(self) -> list[str]:
        names = {PolygonMask: "polygon", RLEMask: "rle", BitmapMask: "bitmap"}
        return [names[type(item)] for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: Any) -> Masks:
        index = as_index(key, len(self._items))
        return Masks(
            [self._items[i] for i in index],
            self._size,
            _rles=[self._rles[i] for i in index],
        )

    def __iter__(self) -> Any:
        raise TypeError("iterate over Masks with masks[i] or masks.items; Masks is a column")

    @classmethod
    def cat(cls, columns: Sequence[Masks]) -> Masks:
        if not columns:
            raise MaskError("cannot concatenate an empty list of Masks without an image size")
        size = columns[0].image_size
        for column in columns[1:]:
            if column.image_size != size:
                raise MaskError(
                    f"cannot concatenate masks of image size {column.image_size} with {size}"
                )
        items = [item for column in columns for item in column._items]
        rles = [rle for column in columns for rle in column._rles]
        return cls(items, size, _rles=rles)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Masks):
            return NotImplemented
        if self._size != other._size or len(self) != len(other):
            return False
        return self.rle_counts() == other.rle_counts()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kinds = self.kinds
        summary = ", ".join(f"{kind}x{kinds.count(kind)}" for kind in sorted(set(kinds)))
        return f"Masks(n={len(self)}, image_size={self._size}, forms=[{summary}])"

    # conversions -------------------------------------------------------------------------------

    def rle_counts(self) -> list[bytes]:
        """Compressed pycocotools counts of every mask (computed once, then cached)."""
        missing = [i for i, rle in enumerate(self._rles) if rle is None]
        if missing:
            polygon_rows = [i for i in missing if isinstance(self._items[i], PolygonMask)]
            polygon_rles = _polygons_to_rles(
                [self._items[i] for i in polygon_rows],  # type: ignore[misc]
                self._size,
            )
            for i, rle in zip(polygon_rows, polygon_rles):
                self._rles[i] = rle
            for i in missing:
                item = self._items[i]
                if isinstance(item, RLEMask):
                    self._rles[i] = item.counts
                elif isinstance(item, BitmapMask):
                    self._rles[i] = _bitmap_to_rle(item, self._size)
        return list(self._rles)  # type: ignore[arg-type]

    def to_rle(self) -> list[dict[str, Any]]:
        """pycocotools RLE dicts ``{"size": [H, W], "counts": bytes}``, compressed."""
        return [_rle_dict(counts, self._size) for counts in self.rle_counts()]

    def to_rle_masks(self) -> Masks:
        return Masks([RLEMask(c) for c in self.rle_counts()], self._size, _rles=self.rle_counts())

    def area(self) -> np.ndarray:
        """Pixel count of every mask, int64 ``(N,)``."""
        out = np.zeros(len(self), dtype=np.int64)
        rle_rows = []
        for i, item in enumerate(self._items):
            if isinstance(item, BitmapMask):
                out[i] = int(np.count_nonzero(item.bitmap))
            else:
                rle_rows.append(i)
        if rle_rows:
            counts = self.rle_counts()
            rles = [_rle_dict(counts[i], self._size) for i in rle_rows]
            out[rle_rows] = rle_areas(rles)
        return out

    def boxes(self) -> np.ndarray:
        """Tight ``xyxy`` float32 box of every mask, ``(N, 4)``; empty masks give zeros."""
        out = np.zeros((len(self), 4), dtype=np.float32)
        rle_rows = []
        for i, item in enumerate(self._items):
            if isinstance(item, BitmapMask):
                out[i] = bitmap_box(item)
            else:
                rle_rows.append(i)
        if rle_rows:
            counts = self.rle_counts()
            xywh = mask_utils.toBbox([_rle_dict(counts[i], self._size) for i in rle_rows])
            xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
            out[rle_rows, 0] = xywh[:, 0]
            out[rle_rows, 1] = xywh[:, 1]
            out[rle_rows, 2] = xywh[:, 0] + xywh[:, 2]
            out[rle_rows, 3] = xywh[:, 1] + xywh[:, 3]
        return out

    def is_empty(self) -> np.ndarray:
        return self.area() == 0

    def to_bitmaps(self) -> Masks:
        """Every mask as a box-tight crop-local bitmap (decoded, pixel exact).

        Only the columns of each mask's box are decoded, so the cost follows the object's box,
        not the image.
        """
        items: list[MaskItem] = list(self._items)
        todo = [i for i, item in enumerate(items) if not isinstance(item, BitmapMask)]
        if todo:
            counts = self.rle_counts()
            for i, crop in zip(todo, rle_crops([counts[i] for i in todo], self._size),
                               strict=True):
                items[i] = crop
        return Masks(items, self._size, _rles=self._rles)

    def to_dense(self) -> np.ndarray:
        """``(N, H, W)`` bool array. Costs N*H*W bytes: prefer the compact forms."""
        h, w = self._size
        out = np.zeros((len(self), h, w), dtype=bool)
        todo = []
        for i, item in enumerate(self._items):
            if isinstance(item, BitmapMask):
                bh, bw = item.bitmap.shape
                y0, x0 = item.offset
                out[i, y0 : y0 + bh, x0 : x0 + bw] = item.bitmap
            else:
                todo.append(i)
        if todo:
            counts = self.rle_counts()
            chunk = max(1, _DECODE_CHUNK_BYTES // max(1, h * w))
            for start in range(0, len(todo), chunk):
                rows = todo[start : start + chunk]
                dense = mask_utils.decode([_rle_dict(counts[i], self._size) for i in rows])
                out[rows] = np.moveaxis(dense, 2, 0).astype(bool)
        return out

    def to_polygons(self, tolerance: float = 0.0) -> Masks:
        """Every mask as polygons tracing its outer pixel edges.

        Lossy: holes are filled and parts thinner than a pixel may change. ``tolerance`` (pixels)
        simplifies the outline. An empty mask cannot be a polygon and raises ``MaskError``.
        """
        from instkit.geometry import bitmap_to_polygon_parts

        items: list[MaskItem] = []
        for i, item in enumerate(self.to_bitmaps()._items):
            if isinstance(item, PolygonMask) or not isinstance(item, BitmapMask):
                items.append(item)
                continue
            parts = bitmap_to_polygon_parts(item.bitmap, item.offset, tolerance)
            if not parts:
                raise MaskError(f"mask {i} is empty and cannot be written as a polygon")
            items.append(PolygonMask(tuple(parts)))
        return Masks(items, self._size)

    def crop_local(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The tight crop-local bitmap of mask ``index`` and its ``(y0, x0)`` offset."""
        item = self[index].to_bitmaps()._items[0]
        assert isinstance(item, BitmapMask)
        return item.bitmap, item.offset

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored forms (not counting the cached RLE strings)."""
        total = 0
        for item in self._items:
            if isinstance(item, BitmapMask):
                total += item.bitmap.nbytes
            elif isinstance(item, PolygonMask):
                total += sum(part.nbytes for part in item.parts)
            else:
                total += len(item.counts)
        return total


def rle_crops(counts: Sequence[bytes], size: ImageSize) -> list[BitmapMask]:
    """Compressed RLEs of one image -> their box-tight ``BitmapMask``s, decoding only the
    columns each touches.

    The one RLE-to-crop decoder: ``Masks.to_bitmaps``, the collator's packing and the transforms
    use it (``rle_crop`` is its one-string case). The strings are decoded in one vectorised pass
    (``decode_rle_counts_batch``); runs alternate starting with zeros over the column-major
    image, so the first and last foreground runs bound the columns; only that band is expanded,
    then cut to its rows. A string the decoder refuses raises ``MaskError`` saying why."""
    return rle_crops_by_height(counts, np.full(len(counts), int(size[0]), dtype=np.int64))


def rle_crops_by_height(counts: Sequence[bytes], heights: np.ndarray) -> list[BitmapMask]:
    """``rle_crops`` of strings from images of several heights (``heights[i]``: string ``i``'s
    image height): a batch's masks in one pass, whatever images they come from.

    Each mask's box comes from its runs alone (a run that crosses a column covers every row),
    so only the box is ever written: each foreground run is one contiguous stretch of its
    column-major crop, all crops are expanded by one ``np.repeat``, then turned row-major."""
    import cv2

    heights = np.asarray(heights, dtype=np.int64)
    n = len(counts)
    batch = decode_rle_counts_batch(counts)
    for j in np.flatnonzero(batch.status != RLE_OK).tolist():
        decode_rle_counts(counts[j])  # raises the refusal
    empty = BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0))
    runs, offsets = batch.runs, batch.offsets
    per_string = np.diff(offsets)
    owner = np.repeat(np.arange(n), per_string)
    # each run's [start, end) in its own image: a running sum restarted at every string
    ends = np.cumsum(runs)
    before = np.zeros(n, dtype=np.int64)
    has_runs = per_string > 0
    before[has_runs] = ends[offsets[:-1][has_runs]] - runs[offsets[:-1][has_runs]]
    ends -= before[owner]
    starts = ends - runs
    ones = ((np.arange(runs.size) - offsets[:-1][owner]) % 2 == 1) & (runs > 0)
    ones &= (heights > 0)[owner]
    foreground = np.flatnonzero(ones)
    if not foreground.size:
        return [empty] * n
    fg_owner = owner[foreground]
    h = np.maximum(heights, 1)[fg_owner]
    first, last = starts[foreground], ends[foreground] - 1
    col_first, col_last = first // h, last // h
    row_first, row_last = first % h, last % h
    crosses = col_first != col_last
    top = np.where(crosses, 0, row_first)
    bottom = np.where(crosses, h - 1, row_last)
    # per mask: its first and last foreground runs bound the columns, min / max rows the rows
    found, first_at = np.unique(fg_owner, return_index=True)
    last_at = np.r_[first_at[1:], foreground.size] - 1
    x0, x1 = col_first[first_at], col_last[last_at] + 1
    y0 = np.minimum.reduceat(top, first_at)
    y1 = np.maximum.reduceat(bottom, first_at) + 1
    rows_n, cols_n = y1 - y0, x1 - x0
    crop_end = np.cumsum(rows_n * cols_n)
    crop_start = crop_end - rows_n * cols_n
    # where each run lands in the concatenated column-major crops (a run that crosses a column
    # belongs to a full-height crop, where it stays contiguous)
    k = np.repeat(np.arange(found.size), np.diff(np.r_[first_at, foreground.size]))
    at = crop_start[k] + (col_first - x0[k]) * rows_n[k] + (row_first - y0[k])
    length = runs[foreground]
    gaps = at - np.r_[0, at[:-1] + length[:-1]]
    gaps[first_at] = at[first_at] - crop_start  # a mask's first run: from its crop's start
    pieces = np.empty(2 * foreground.size + 1, dtype=np.int64)
    pieces[0:-1:2], pieces[1:-1:2] = gaps, length
    pieces[-1] = 0
    # a crop's trailing background: added to the next mask's first gap, or the last piece
    tail = crop_end - (at[last_at] + length[last_at])
    pieces[2 * first_at[1:]] += tail[:-1]
    pieces[-1] = tail[-1]
    values = np.zeros(pieces.size, dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, pieces)
    out: list[BitmapMask] = [empty] * n
    for m, j in enumerate(found.tolist()):
        cols, rows = int(cols_n[m]), int(rows_n[m])
        column_major = flat[int(crop_start[m]) : int(crop_end[m])].reshape(cols, rows)
        out[j] = BitmapMask(cv2.transpose(column_major).view(bool), (int(y0[m]), int(x0[m])))
    return out


def rle_crop(counts: bytes, size: ImageSize) -> BitmapMask:
    """``rle_crops`` of one compressed RLE."""
    return rle_crops([counts], size)[0]


def _row_any(mask: np.ndarray) -> np.ndarray:
    """``(H,)`` bool: rows of a 2-D uint8 mask with any pixel set.

    ORs 8 pixels at a time through a uint64 view (about twice as fast as ``any(axis=1)``)."""
    h, w = mask.shape
    w8 = w - w % 8
    if w8 == 0 or mask.strides[1] != 1:
        return np.asarray(mask.any(axis=1))
    rows = np.bitwise_or.reduce(mask[:, :w8].view(np.uint64), axis=1) != 0
    if w8 < w:
        rows |= mask[:, w8:].any(axis=1)
    return rows


def tight_bitmap(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> BitmapMask:
    """A 2-D mask (at ``offset`` in its image) -> its box-tight ``BitmapMask``.

    One pass over the rows, then only the rows between the first and last set one are read for
    the columns. An all-zero mask gives the empty ``(0, 0)`` bitmap."""
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        mask = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)
    ys = np.flatnonzero(_row_any(mask))
    if ys.size == 0:
        return BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0))
    y0, y1 = int(ys[0]), int(ys[-1]) + 1
    band = mask[y0:y1]
    xs = np.flatnonzero(np.bitwise_or.reduce(band, axis=0))
    x0, x1 = int(xs[0]), int(xs[-1]) + 1
    return BitmapMask(band[:, x0:x1].astype(bool), (y0 + offset[0], x0 + offset[1]))


def union_items(items: Sequence[MaskItem], size: ImageSize) -> MaskItem:
    """One mask covering several (a format's shapes that form one object): polygons stay one
    polygon of all their parts; anything else becomes the box-tight bitmap of their union."""
    if all(isinstance(item, PolygonMask) for item in items):
        return PolygonMask(tuple(p for item in items for p in item.parts))  # type: ignore[union-attr]
    return tight_bitmap(np.asarray(Masks(list(items), size).to_dense().any(axis=0)))


def same_item(a: MaskItem, b: MaskItem) -> bool:
    """Whether two polygons have the same parts, or two bitmaps the same pixels and offset (a
    writer then gives back the shapes it read)."""
    if isinstance(a, PolygonMask) and isinstance(b, PolygonMask):
        return len(a.parts) == len(b.parts) and all(
            np.array_equal(x, y) for x, y in zip(a.parts, b.parts))
    if isinstance(a, BitmapMask) and isinstance(b, BitmapMask):
        return a.offset == b.offset and np.array_equal(a.bitmap, b.bitmap)
    return False


def bitmap_box(item: BitmapMask) -> np.ndarray:
    """Tight ``xyxy`` float32 box of a bitmap's set pixels (zeros when it has none)."""
    bitmap = item.bitmap
    if bitmap.size == 0:
        return np.zeros(4, dtype=np.float32)
    ys = np.flatnonzero(bitmap.any(axis=1))
    if ys.size == 0:
        return np.zeros(4, dtype=np.float32)
    xs = np.flatnonzero(bitmap.any(axis=0))
    y0, x0 = item.offset
    return np.array(
        [x0 + xs[0], y0 + ys[0], x0 + xs[-1] + 1, y0 + ys[-1] + 1], dtype=np.float32
    )

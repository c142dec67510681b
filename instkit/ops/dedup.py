"""Find duplicate images: exact (same file bytes, SHA-256) and near (perceptual hash).

Perceptual hashes are 64-bit, computed on the image as instkit sees it (EXIF orientation
applied), in grayscale:

- ``phash``: the 8x8 lowest frequencies of the 2-D DCT of a 32x32 area-resampled image, each bit
  saying whether a coefficient is above their median (Zauner's pHash, as in the ``imagehash``
  package). Robust to resizing, re-encoding, small colour and contrast changes.
- ``dhash``: a 9x8 area-resampled image, each bit saying whether a pixel is brighter than its
  right neighbour. Cheaper, a little less robust.

Two images are near-duplicates when the Hamming distance of their hashes is at most
``threshold`` bits. Defaults, from 98 COCO photos (tinycoco and pose_minicoco) and five resized /
re-encoded copies of each (docs/operations.md): ``phash`` 10 (copies within 4, distinct photos
16 or more apart), ``dhash`` 12 (copies within 10, distinct photos 15 or more apart).

Pairs are compared all against all in blocks (64-bit XOR and popcount): about 5 * 10^7 pairs a
second on one core (20,000 hashes in 4 s on the development machine at load 4.8), so 100,000
images take about 2 minutes after hashing.

Nothing is removed by finding: ``remove_duplicates`` does that, keeping one image of each group
(the first in input order, or the largest) and counting every image and annotation it drops.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instkit.errors import ImageError, InstkitError, Location
from instkit.ops.common import DropLog
from instkit.ops.merge import file_sha256
from instkit.sample import Sample

HASHES = ("phash", "dhash")
DEFAULT_THRESHOLD = {"phash": 10, "dhash": 12}


def _gray(path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` as float32 grayscale, area-resampled to ``size`` (W, H)."""
    import cv2
    from PIL import ImageOps

    from instkit.sample import open_image, pil_to_rgb_uint8

    where = Location(file=os.fspath(path))
    try:
        with open_image(path, where) as opened:
            # JPEG draft: decode at a reduced scale (never below twice the hash size).
            opened.draft("L", (size[0] * 8, size[1] * 8))
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("L", "RGB", "RGBA", "P", "LA", "CMYK", "YCbCr", "1"):
                gray = np.asarray(image.convert("L"), dtype=np.float32)
            else:  # 16-bit and float images: scaled to 8 bits as instkit loads them
                rgb = pil_to_rgb_uint8(image, [])
                gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    except FileNotFoundError:
        raise ImageError("image file not found", where) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image cannot be read: {exc}", where) from None
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _pack(bits: np.ndarray) -> int:
    return int(np.packbits(bits.reshape(-1).astype(np.uint8)).view(">u8")[0])


def phash(path: str | os.PathLike[str]) -> int:
    """64-bit perceptual hash (DCT) of the image at ``path``."""
    import cv2

    low = cv2.dct(_gray(path, (32, 32)))[:8, :8]
    return _pack(low > np.median(low))


def dhash(path: str | os.PathLike[str]) -> int:
    """64-bit difference hash of the image at ``path``."""
    gray = _gray(path, (9, 8))
    return _pack(gray[:, 1:] > gray[:, :-1])


def hamming(a: int, b: int) -> int:
    return int(bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1"))


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def near_pairs(hashes: Any, threshold: int, block: int | None = None) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, distance)`` with ``i < j`` whose 64-bit hashes differ in at most
    ``threshold`` bits, in order of ``i`` then ``j``."""
    values = np.asarray(hashes, dtype=np.uint64)
    if block is None:  # about 2**24 hash pairs (128 MiB of XORs) per block
        block = max(16, min(4096, (1 << 24) // max(1, len(values))))
    out: list[tuple[int, int, int]] = []
    for start in range(0, len(values), block):
        rows = values[start : start + block]
        distance = _popcount(rows[:, None] ^ values[None, start:])
        i, j = np.nonzero(distance <= threshold)
        i_abs, j_abs = i + start, j + start
        keep = j_abs > i_abs
        for a, b, d in zip(i_abs[keep], j_abs[keep], distance[i[keep], j[keep]], strict=True):
            out.append((int(a), int(b), int(d)))
    return out


@dataclass
class ImageRef:
    """One image of the inputs."""

    input: int
    index: int
    image_id: int
    file_name: str | None
    path: str | None
    pixels: int
    annotations: int
    sha256: str | None = None
    perceptual: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.input, "image_id": self.image_id, "file_name": self.file_name,
                "path": self.path}


def _hash_one(args: tuple[str, str]) -> tuple[str | None, int | None, str | None]:
    path, kind = args
    try:
        digest = file_sha256(path)
        value = (phash if kind == "phash" else dhash)(path)
    except ImageError as exc:
        return None, None, exc.message
    return digest, value, None


@dataclass
class DedupResult:
    """Duplicate pairs and groups found (nothing removed until ``remove_duplicates``)."""

    images: list[ImageRef]
    hash: str
    threshold: int
    pairs: list[dict[str, Any]]
    groups: list[list[int]]  # positions in ``images``; the first is the one kept
    unreadable: list[dict[str, Any]]
    inputs: list[str]
    keep: str = "first"
    removed: str | None = None
    removed_from: str | None = None
    drops: DropLog = field(default_factory=DropLog)
    output: str | None = None

    @property
    def exact_pairs(self) -> list[dict[str, Any]]:
        return [p for p in self.pairs if p["kind"] == "exact"]

    @property
    def near_pairs(self) -> list[dict[str, Any]]:
        return [p for p in self.pairs if p["kind"] == "near"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": "dedup",
            "inputs": self.inputs,
            "images": len(self.images),
            "hash": self.hash,
            "threshold": self.threshold,
            "exact_pairs": len(self.exact_pairs),
            "near_pairs": len(self.near_pairs),
            "pairs": self.pairs,
            "groups": [{"kept": self.images[g[0]].as_dict(),
                        "duplicates": [self.images[i].as_dict() for i in g[1:]]}
                       for g in self.groups],
            "keep": self.keep,
            "unreadable": self.unreadable,
            "removed": self.removed,
            "removed_from": self.removed_from,
            "dropped": self.drops.as_dict(),
            "output": self.output,
        }

    def to_text(self, limit: int = 20) -> str:
        lines = [f"instkit dedup: {len(self.images)} images in {len(self.inputs)} file(s); "
                 f"{len(self.exact_pairs)} exact pair(s) (same bytes), {len(self.near_pairs)} "
                 f"near pair(s) ({self.hash}, Hamming <= {self.threshold}), "
                 f"{len(self.groups)} group(s)"]
        many = len(self.inputs) > 1
        for pair in self.pairs[:limit]:
            a, b = pair["a"], pair["b"]
            lines.append(f"  {pair['kind']:<5} d={pair['distance']:>2}  {_tag(a, many)}  ~  "
                         f"{_tag(b, many)}")
        if len(self.pairs) > limit:
            lines.append(f"  ... and {len(self.pairs) - limit} more pairs (--format json lists all)")
        for entry in self.unreadable[:limit]:
            lines.append(f"  unreadable, not compared: {entry['file_name']} (id "
                         f"{entry['image_id']}): {entry['error']}")
        if self.removed is None:
            lines.append("  nothing removed (report only; --remove exact|near -o OUT.json removes)")
        else:
            lines.append(f"  removed {self.removed} duplicates from {self.removed_from}")
            lines += self.drops.text_lines()
        if self.output:
            lines.append(f"  wrote {self.output}")
        return "\n".join(lines)


def _tag(ref: dict[str, Any], many: bool) -> str:
    return f"{ref['file_name']} (id {ref['image_id']}" + (f", input {ref['input'] + 1})" if many else ")")


def find_duplicates(datasets: Sequence[Sequence[Sample]], *, hash: str = "phash",
                    threshold: int | None = None, keep: str = "first",
                    workers: int | None = None, progress: bool | None = False) -> DedupResult:
    """Exact and near-duplicate images within and across ``datasets`` (see the module docstring).

    ``keep``: which image of a group is kept on removal: ``first`` (input order) or ``largest``
    (most pixels, then most annotations, then first). Unreadable images are listed, not
    compared. ``workers``: hashing processes. ``progress``: a bar on stderr (None: only on a
    terminal)."""
    from tqdm.auto import tqdm

    if hash not in HASHES:
        raise InstkitError(f"hash must be one of {', '.join(HASHES)}, got {hash!r}")
    if keep not in ("first", "largest"):
        raise InstkitError(f"keep must be first or largest, got {keep!r}")
    limit = DEFAULT_THRESHOLD[hash] if threshold is None else int(threshold)
    if not 0 <= limit < 64:
        raise InstkitError(f"threshold must be 0..63 bits, got {limit}")
    images: list[ImageRef] = []
    for k, data in enumerate(datasets):
        for index, sample in enumerate(data):
            height, width = sample.image_size
            images.append(ImageRef(k, index, int(sample.image_id), sample.meta.file_name,
                                   sample.image_path, height * width, len(sample.instances)))
    jobs = [(ref.path or "", hash) for ref in images]
    disable = None if progress is None else not progress
    with tqdm(total=len(jobs), desc="hash images", unit="image", disable=disable,
              leave=False) as bar:
        if workers is not None and workers > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                hashed = []
                for item in pool.map(_hash_one, jobs, chunksize=16):
                    hashed.append(item)
                    bar.update()
        else:
            hashed = []
            for job in jobs:
                hashed.append(_hash_one(job))
                bar.update()
    unreadable = [{**images[i].as_dict(), "error": error}
                  for i, (_, _, error) in enumerate(hashed) if error is not None]
    readable = [i for i, (digest, _, _) in enumerate(hashed) if digest is not None]
    for ref, (digest, value, _) in zip(images, hashed, strict=True):
        ref.sha256, ref.perceptual = digest, value
    pairs: list[dict[str, Any]] = []
    parent = list(range(len(images)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def pair(i: int, j: int, kind: str, distance: int) -> None:
        pairs.append({"kind": kind, "distance": distance, "a": images[i].as_dict(),
                      "b": images[j].as_dict()})
        parent[find(j)] = find(i)

    first_of: dict[str, int] = {}
    for i in readable:
        digest = hashed[i][0] or ""
        if digest in first_of:
            pair(first_of[digest], i, "exact", 0)
        else:
            first_of[digest] = i
    values = np.asarray([hashed[i][1] for i in readable], dtype=np.uint64)
    for a, b, distance in near_pairs(values, limit):
        i, j = readable[a], readable[b]
        if hashed[i][0] != hashed[j][0]:
            pair(i, j, "near", distance)
    members: dict[int, list[int]] = {}
    for i in range(len(images)):
        members.setdefault(find(i), []).append(i)
    groups = [_keep_first(group, images, keep) for group in members.values() if len(group) > 1]
    groups.sort(key=lambda g: g[0])
    inputs = [str(getattr(d, "file", None) or f"input {k + 1}") for k, d in enumerate(datasets)]
    return DedupResult(images, hash, limit, pairs, groups, unreadable, inputs, keep)


def duplicate_groups(result: DedupResult, kind: str = "near") -> list[list[int]]:
    """The duplicate groups of a one-input ``result`` as lists of dataset indices: ``exact``
    (same bytes) or ``near`` (the groups of every pair found); for ``split_dataset(together=)``."""
    if kind not in ("exact", "near"):
        raise InstkitError(f"kind must be exact or near, got {kind!r}")
    if len(result.inputs) != 1:
        raise InstkitError("duplicate groups are for one input")
    if kind == "near":
        return [[result.images[i].index for i in group] for group in result.groups]
    by_digest: dict[str, list[int]] = {}
    for ref in result.images:
        if ref.sha256 is not None:
            by_digest.setdefault(ref.sha256, []).append(ref.index)
    return [indices for indices in by_digest.values() if len(indices) > 1]


def remove_duplicates(dataset: Sequence[Sample], result: DedupResult, *,
                      remove: str = "near", input: int | None = None) -> list[Sample]:
    """Input ``input`` of ``result`` (``dataset``) without its duplicates: ``exact`` removes
    copies with the same bytes, ``near`` also the near-duplicates. In each group one image
    stays (``result.keep``: the first, or the largest) unless the group holds an image of an
    earlier input: then every copy in this input goes, so cleaning ``val`` against ``train``
    leaves no copy of a training image. ``input`` may be left out when there is one. Every
    removed image and annotation is counted in ``result.drops``."""
    if remove not in ("exact", "near"):
        raise InstkitError(f"remove must be exact or near, got {remove!r}")
    if input is None:
        if len(result.inputs) != 1:
            raise InstkitError("several inputs: say which one to remove duplicates from (input=)")
        input = 0
    if not 0 <= input < len(result.inputs):
        raise InstkitError(f"input {input} is out of range for {len(result.inputs)} inputs")
    count = sum(1 for ref in result.images if ref.input == input)
    if count != len(dataset):
        raise InstkitError(f"the dataset has {len(dataset)} images but input {input} of the "
                           f"result has {count}: pass the dataset the result was found in")
    images = result.images
    if remove == "near":
        groups = result.groups
    else:
        by_digest: dict[str, list[int]] = {}
        for position, ref in enumerate(images):
            if ref.sha256 is not None:
                by_digest.setdefault(ref.sha256, []).append(position)
        groups = [_keep_first(g, images, result.keep) for g in by_digest.values() if len(g) > 1]
    drop: dict[int, str] = {}
    for group in groups:
        here = [i for i in group if images[i].input == input]
        if not here:
            continue
        earlier = [i for i in group if images[i].input < input]
        staying = earlier if earlier else here[:1]
        for i in here:
            if i in staying:
                continue
            same = any(images[i].sha256 is not None and images[i].sha256 == images[j].sha256
                       for j in staying)
            drop[images[i].index] = "exact-duplicate" if same else "near-duplicate"
    out: list[Sample] = []
    for index, sample in enumerate(dataset):
        if index in drop:
            reason = drop[index]
            result.drops.image(reason, int(sample.image_id))
            result.drops.annotation(f"in-dropped-image ({reason})", sample.instances.ids)
            continue
        out.append(sample)
    result.removed = remove
    result.removed_from = result.inputs[input]
    return out


def _keep_first(group: list[int], images: list[ImageRef], keep: str) -> list[int]:
    """``group`` in input order, with the image ``keep`` prefers first."""
    group = sorted(group)
    if keep == "largest":
        best = max(group, key=lambda i: (images[i].pixels, images[i].annotations, -i))
        group = [best] + [i for i in group if i != best]
    return group


__all__ = ["DEFAULT_THRESHOLD", "DedupResult", "HASHES", "dhash", "duplicate_groups",
           "find_duplicates", "hamming",
           "near_pairs", "phash", "remove_duplicates"]

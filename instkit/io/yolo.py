"""YOLO-seg text labels: ``images/``, ``labels/<stem>.txt`` (one object a line:
``class x1 y1 x2 y2 ...`` normalised to [0, 1]) and ``data.yaml`` (splits and ``names``); also
Ultralytics' pose labels (``task="pose"``) and, for reading, detection boxes.

Layouts. ``write_yolo(samples, out)`` writes one folder of images (``images/``, ``labels/``,
``data.yaml`` with ``train: images`` and ``val: images``); ``write_yolo({"train": a, "val": b,
"test": c}, out)`` writes Ultralytics' split layout (``images/train``, ``labels/train``, ...,
``data.yaml`` with ``train: images/train``, ``val: images/val``, ``test: images/test``).
``names`` is a dict ``{0: name}``. No ``path`` key is written: Ultralytics then takes the
``data.yaml`` folder as the dataset root, so the folder can be moved (a relative ``path``
would be taken from the working directory). A label file sits where Ultralytics looks for it
(``img2label_paths``: the image's path with its last ``/images/`` replaced by ``/labels/``).

What the format cannot hold, and what ``write_yolo`` does (counted in its return value):

- multi-part objects are joined into one outline as Ultralytics' COCO converter joins them
  (``merge_multi_segment``): consecutive parts linked at their nearest vertices by a line walked
  there and back (``parts_joined`` extra parts). Even-odd filling (OpenCV's ``fillPoly``,
  pycocotools) gives back the parts' union unless parts overlap: an overlap is then left out
  (``overlapping_parts`` objects). ``read_yolo`` splits such a joined outline back into its parts
  where that gives the same pixels (an outline with holes stays one outline: its even-odd fill).
- RLE and bitmap masks (crowd regions) are traced on their pixel edges (``rle_as_polygons``):
  every outer contour and every hole (``holes_kept``; islands in holes too), joined the same
  way, so that even-odd filling (OpenCV's ``fillPoly`` in Ultralytics, pycocotools) gives the
  mask back pixel for pixel (tested on random masks full of holes and diagonal contacts).
- coordinates are written to 1e-10 of the image size and read back to 1e-5 px; vertices outside
  the image are moved onto its edge (``clipped_to_image`` objects), as Ultralytics rejects a
  label file with coordinates outside [0, 1].
- parts of fewer than 3 vertices cannot be polygons (``parts_dropped``); objects without masks
  are written as their box (``boxes_as_polygons``); empty masks are left out
  (``empty_masks_dropped``).
- not stored: keypoints (``keypoints_dropped`` objects; ``task="pose"`` writes them, and no
  masks), ``iscrowd`` (``crowd``), annotation ids,
  the file's bbox/area. ``data.yaml`` also records ``coco_category_ids`` so that COCO ids come
  back on reading.

``<stem>`` keeps the image's folders (``images/a/1.jpg``, ``labels/a/1.txt``), so no two images
merge; two that one name would hold (``a/1.jpg``, ``a/1.png``) are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from instkit.categories import Categories, Category
from instkit.errors import FormatError, InstkitError, Location, PathEscapeError
from instkit.instances import Instances
from instkit.io.files import staged_folder
from instkit.io.images import copy_image as save_image
from instkit.masks import BitmapMask, Masks, PolygonMask
from instkit.sample import Sample, SampleMeta, open_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# The split keys of Ultralytics' data.yaml, in the order they are written and read.
SPLITS = ("train", "val", "test")
# What each count of ``write_yolo`` means, for reports (the CLI prints these).
COUNT_NOTES = {
    "parts_joined": "extra polygon parts joined into their object's outline (as Ultralytics does)",
    "overlapping_parts": "objects whose parts overlap: the overlap is left out of the joined "
                         "outline (even-odd fill)",
    "parts_dropped": "polygon parts of fewer than 3 vertices left out",
    "rle_as_polygons": "masks that were not polygons traced as polygons (contours joined)",
    "holes_kept": "holes of traced masks joined into their outline (kept by even-odd filling, "
                  "as Ultralytics and pycocotools fill; a tool that fills each ring fills them)",
    "boxes_as_polygons": "objects without a mask written as their box",
    "clipped_to_image": "objects with vertices outside the image moved onto its edge (Ultralytics "
                        "rejects coordinates outside [0, 1])",
    "keypoints_dropped": "instances whose keypoints the format cannot hold",
    "empty_masks_dropped": "objects with empty masks left out",
    "crowd": "crowd regions written as ordinary objects (iscrowd is not stored)",
    # task="pose"
    "masks_dropped": "masks left out (pose labels hold boxes and keypoints)",
    "objects_without_keypoints": "objects written with no labelled keypoint (box only)",
    "unlabelled_keypoints_zeroed": "objects whose unlabelled keypoints (v = 0) had coordinates, "
                                   "written as 0 0 0",
}


def image_name(sample: Sample) -> str:
    """Where a converter writes the sample's image, relative to ``images/``: its ``file_name``
    with its folders kept (``a/1.jpg`` and ``b/1.jpg`` stay two files), ``/`` separated."""
    name = sample.meta.file_name or f"{sample.image_id:012d}.png"
    where = Location(image_id=sample.image_id)
    text = name.replace("\\", "/")
    if PureWindowsPath(name).drive or text.startswith("/"):
        text = text.rsplit("/", 1)[-1]  # an absolute path: its folders are the source's, not ours
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise PathEscapeError(f"file name {name!r} cannot be written inside the output folder", where)
    return "/".join(parts)


class OutputNames:
    """Refuses two images that a layout would store under the same name (``labels/<stem>.txt``,
    ``masks/<stem>/``): one would overwrite the other."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, str]] = {}

    def claim(self, sample: Sample) -> str:
        name = image_name(sample)
        key = str(PurePosixPath(name).with_suffix("")).casefold()
        if key in self._seen:
            other_id, other_name = self._seen[key]
            raise InstkitError(
                f"images {other_name!r} (image_id {other_id}) and {name!r} would be written under "
                f"the same name {key!r}, one over the other; rename one of them",
                Location(image_id=sample.image_id))
        self._seen[key] = (int(sample.image_id), name)
        return name


def image_ids(images: Sequence[Path]) -> list[int]:
    """Image ids of image files read back: their numeric stems (COCO's names) where every stem
    is numeric and no two are equal, else 1..N in path order."""
    stems = [p.stem for p in images]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def label_path(image: Path) -> Path:
    """Where Ultralytics looks for an image's label file (``img2label_paths``): the last
    ``images`` folder of its path replaced by ``labels``, the suffix by ``.txt``."""
    parts = image.parts
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            return Path(*parts[:k], "labels", *parts[k + 1:]).with_suffix(".txt")
    return image.with_suffix(".txt")


# joining and splitting outlines ----------------------------------------------------------------


def _nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices of the closest vertices of two ``(n, 2)`` outlines (the first such pair)."""
    best, pair = np.inf, (0, 0)
    step = max(1, (1 << 20) // len(b))  # rows of ``a`` per block: at most ~1M distances at once
    for start in range(0, len(a), step):
        d = ((a[start : start + step, None, :] - b[None, :, :]) ** 2).sum(-1)
        flat = int(np.argmin(d))
        if d.flat[flat] < best:
            best, pair = float(d.flat[flat]), (start + flat // d.shape[1], flat % d.shape[1])
    return pair


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Polygon parts (flat ``x, y, ...``) as one outline, the way Ultralytics'
    ``merge_multi_segment`` joins them: part ``i`` is linked to part ``i + 1`` at their nearest
    vertices; the walk goes round each part and back along every link. The links are walked
    once each way, so an even-odd fill (OpenCV's ``fillPoly``, pycocotools) gives the parts'
    union where they do not overlap."""
    rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts]
    if len(rings) == 1:
        return rings[0].reshape(-1)
    links = [_nearest_pair(rings[i], rings[i + 1]) for i in range(len(rings) - 1)]
    forward: list[np.ndarray] = []
    backward: list[np.ndarray] = []
    entry = links[0][0]  # the first part is walked from its link, round, back to it
    for i, ring in enumerate(rings):
        n = len(ring)
        loop = ring[(entry + np.arange(n + 1)) % n]  # entry ... entry, closed
        if i == 0 or i == len(rings) - 1:
            forward.append(loop)
        else:
            at = (links[i][0] - entry) % n  # the link onwards, as a position in the loop
            forward.append(loop[: at + 1])
            backward.append(loop[at:])
        if i < len(rings) - 1:
            entry = int(links[i][1])
    return np.concatenate(forward + backward[::-1]).reshape(-1)


def split_outline(xy: np.ndarray) -> list[np.ndarray]:
    """A joined outline back as parts: cut out every link walked there and back (an edge
    ``a -> b`` with a later ``b -> a``) and leave out what has fewer than 3 vertices. Only such
    pairs of edges go, so the even-odd fill of the parts is the outline's."""
    Point = tuple[float, float]
    points: list[Point] = [(p[0], p[1]) for p in
                           np.asarray(xy, dtype=np.float64).reshape(-1, 2).tolist()]
    stack = [points]
    rings: list[list[Point]] = []
    while stack:
        ring = _dedupe(stack.pop())
        n = len(ring)
        edges = {(ring[k], ring[(k + 1) % n]): k for k in range(n)}
        for k in range(n):
            j = edges.get((ring[(k + 1) % n], ring[k]))
            if j is not None and j != k:
                i, j = min(k, j), max(k, j)
                stack.append(ring[i + 1 : j])  # between the two walks of the link
                stack.append(ring[j + 1 :] + ring[:i])  # the rest, its far end first
                break
        else:
            if len(ring) >= 3:
                rings.append(ring)
    first: dict[Point, int] = {}
    for k, point in enumerate(points):
        first.setdefault(point, k)
    rings.sort(key=lambda r: min(first[p] for p in r))  # parts in walk order
    return [np.asarray(r, dtype=np.float64).reshape(-1) for r in rings]


def _dedupe(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ring without vertices equal to the one before (cyclically)."""
    return [p for k, p in enumerate(ring) if p != ring[k - 1]] if len(ring) > 1 else list(ring)


def _areas(parts: Sequence[np.ndarray], size: tuple[int, int]) -> tuple[int, int]:
    """Pixels of the parts' union and the sum of each part's pixels (equal: no overlap)."""
    separate = Masks.from_polygons([[p] for p in parts], size).area()
    union = Masks.from_polygons([list(parts)], size).area()
    return int(union[0]), int(separate.sum())


def _signed_area(part: np.ndarray) -> float:
    xs, ys = part[0::2], part[1::2]
    return float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2.0


def trace_rings(item: BitmapMask) -> tuple[list[np.ndarray], int]:
    """A bitmap mask as rings on its pixel edges, and how many of them are holes: the outer
    outlines, the outlines of their holes (turning the other way), of islands in the holes, and
    so on. Joined into one outline they fill back to the mask under the even-odd rule (OpenCV's
    ``fillPoly``, pycocotools); holes turn the other way, which makes the non-zero rule agree
    in most cases. A hole is background not 4-connected to the outside, the complement of
    OpenCV's 8-connected outer contours."""
    import cv2

    from instkit.geometry import bitmap_to_polygon_parts

    rings: list[np.ndarray] = []
    holes = 0
    current = np.ascontiguousarray(item.bitmap, dtype=np.uint8)
    level = 0
    while current.any():
        padded = np.pad(current, 1)
        cv2.floodFill(padded, None, (0, 0), 2, flags=4)
        inside = (padded[1:-1, 1:-1] == 0).astype(np.uint8)  # this level's holes
        parts = bitmap_to_polygon_parts(current | inside, item.offset)
        turn = 1 if level % 2 == 0 else -1  # outlines one way, holes the other
        rings += [p if _signed_area(p) * turn >= 0 else p.reshape(-1, 2)[::-1].reshape(-1)
                  for p in parts]
        holes += len(parts) if level % 2 else 0
        current, level = inside, level + 1
    return rings, holes


# writing ---------------------------------------------------------------------------------------


def write_yolo(samples: Iterable[Sample] | Mapping[str, Iterable[Sample]],
               out_dir: str | os.PathLike[str],
               categories: Categories | None = None, *, task: str = "segment") -> dict[str, int]:
    """Write YOLO labels, images and ``data.yaml``; returns counts of what was approximated
    (``COUNT_NOTES`` says what each means) over all splits.

    ``samples`` is one collection (one folder, ``train`` and ``val`` both naming it) or a mapping
    of split name (``train``, ``val``, ``test``) to samples (Ultralytics' split layout).
    ``task="segment"`` writes YOLO-seg polygons; ``task="pose"`` writes Ultralytics' pose
    labels (``class cx cy w h`` and ``x y v`` per keypoint; ``kpt_shape``, ``flip_idx`` and
    ``kpt_names`` in data.yaml; masks left out). The folder is written beside ``out_dir`` and
    renamed in when complete."""
    if task not in ("segment", "pose"):
        raise ValueError(f"task must be 'segment' or 'pose', got {task!r}")
    with staged_folder(out_dir) as out:
        return _write_yolo(samples, out, categories, task)


def _write_yolo(samples: Iterable[Sample] | Mapping[str, Iterable[Sample]], out: Path,
                categories: Categories | None, task: str) -> dict[str, int]:
    import yaml

    if task == "pose":
        counts = {"images": 0, "objects": 0, "masks_dropped": 0, "objects_without_keypoints": 0,
                  "unlabelled_keypoints_zeroed": 0, "clipped_to_image": 0, "crowd": 0}
    else:
        counts = {"images": 0, "objects": 0, "parts_joined": 0, "overlapping_parts": 0,
                  "parts_dropped": 0, "rle_as_polygons": 0, "holes_kept": 0,
                  "boxes_as_polygons": 0, "clipped_to_image": 0, "keypoints_dropped": 0,
                  "empty_masks_dropped": 0, "crowd": 0}
    if isinstance(samples, Mapping):
        unknown = [str(k) for k in samples if k not in SPLITS]
        if unknown:
            raise InstkitError(f"split names must be among {', '.join(SPLITS)} (what Ultralytics "
                               f"reads), got {', '.join(map(repr, unknown))}")
        groups = [(k, samples[k]) for k in SPLITS if k in samples]
        data: dict[str, Any] = {k: f"images/{k}" for k, _ in groups}
    else:
        groups = [("", samples)]
        data = {"train": "images", "val": "images"}
    for split, members in groups:
        categories = categories or getattr(members, "categories", None)
        names = OutputNames()
        images = out / "images" / split if split else out / "images"
        for sample in members:
            categories = categories or sample.meta.categories
            image = images / names.claim(sample)
            save_image(sample, image)
            if task == "pose":
                lines = _pose_lines(sample, counts, _pose_shape(categories, sample))
            else:
                lines = _label_lines(sample, counts)
            counts["images"] += 1
            label = label_path(image)
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    if categories is None:
        raise InstkitError("write_yolo needs categories")
    data["names"] = dict(enumerate(categories.names))
    data["coco_category_ids"] = categories.ids
    if task == "pose":
        k = _pose_shape(categories, None)
        data["kpt_shape"] = [k, 3]
        flip = list(range(k))
        for a, b in categories.flip_pairs():
            flip[a], flip[b] = b, a
        data["flip_idx"] = flip
        data["kpt_names"] = {label: list(c.keypoints) for label, c in enumerate(categories)
                             if c.keypoints}
        skeletons = {label: [list(e) for e in c.skeleton] for label, c in enumerate(categories)
                     if c.skeleton}
        if skeletons:
            data["coco_skeleton"] = skeletons
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                   encoding="utf-8")
    return counts


def _number(value: float) -> str:
    """A normalised coordinate to 1e-10 (1e-6 px on a 10,000 px image), trailing zeros cut."""
    return f"{value:.10f}".rstrip("0").rstrip(".") or "0"


def _pose_shape(categories: Categories | None, sample: Sample | None) -> int:
    """The number of keypoints of a pose dataset: the categories' keypoint names."""
    k = categories.num_keypoints if categories is not None else 0
    where = Location(image_id=sample.image_id) if sample is not None else None
    if not k:
        raise InstkitError("task='pose' needs categories with keypoint names (COCO's "
                           "'keypoints')", where)
    if sample is not None and sample.instances.keypoints is not None and \
            sample.instances.keypoints.shape[1] != k:
        raise InstkitError(f"the sample has {sample.instances.keypoints.shape[1]} keypoints per "
                           f"object, its categories name {k}", where)
    return k


def _pose_lines(sample: Sample, counts: dict[str, int], k: int) -> list[str]:
    """``class cx cy w h`` and ``x y v`` per keypoint, normalised; unlabelled keypoints (v = 0)
    as ``0 0 0`` (COCO's and Ultralytics' convention)."""
    h, w = sample.image_size
    inst = sample.instances
    size = np.asarray([w, h], dtype=np.float64)
    counts["crowd"] += int(inst.iscrowd.sum())
    counts["masks_dropped"] += len(inst) if inst.masks is not None else 0
    lines = []
    for i in range(len(inst)):
        box = inst.boxes[i].astype(np.float64).reshape(2, 2) / size
        points = np.zeros((k, 3), np.float64)
        if inst.keypoints is None or not (inst.keypoints[i, :, 2] > 0).any():
            counts["objects_without_keypoints"] += 1
        if inst.keypoints is not None:
            kp = inst.keypoints[i].astype(np.float64)
            seen = kp[:, 2] > 0
            counts["unlabelled_keypoints_zeroed"] += int((kp[~seen, :2] != 0).any(axis=1).sum())
            points[seen, :2] = kp[seen, :2] / size
            points[seen, 2] = kp[seen, 2]
        xy = np.concatenate([box, points[:, :2]])
        if (xy < 0).any() or (xy > 1).any():  # Ultralytics rejects coordinates past [0, 1]
            counts["clipped_to_image"] += 1
            box = box.clip(0, 1)
            points[:, :2] = points[:, :2].clip(0, 1)
        (x0, y0), (x1, y1) = box
        fields = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        text = " ".join(_number(v) for v in fields)
        text += "".join(f" {_number(x)} {_number(y)} {int(v)}" for x, y, v in points)
        lines.append(f"{int(inst.labels[i])} {text}")
        counts["objects"] += 1
    return lines


def _label_lines(sample: Sample, counts: dict[str, int]) -> list[str]:
    h, w = sample.image_size
    inst = sample.instances
    if inst.keypoints is not None:
        counts["keypoints_dropped"] += int((inst.keypoints[:, :, 2] > 0).any(axis=1).sum())
    counts["crowd"] += int(inst.iscrowd.sum())
    masks = inst.masks
    lines = []
    for i in range(len(inst)):
        if masks is None:
            x0, y0, x1, y1 = inst.boxes[i].tolist()
            outline = np.asarray([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)
            counts["boxes_as_polygons"] += 1
        else:
            item = masks.items[i]
            holes = 0
            if isinstance(item, PolygonMask):
                given = list(item.parts)
            else:
                bitmap = masks[i].to_bitmaps().items[0]
                assert isinstance(bitmap, BitmapMask)
                given, holes = trace_rings(bitmap)
                if not given:
                    counts["empty_masks_dropped"] += 1
                    continue
                counts["rle_as_polygons"] += 1
                counts["holes_kept"] += holes
            parts = [p for p in given if len(set(zip(p[0::2].tolist(), p[1::2].tolist()))) >= 3]
            counts["parts_dropped"] += len(given) - len(parts)
            if not parts:
                counts["empty_masks_dropped"] += 1
                continue
            if len(parts) > 1:
                counts["parts_joined"] += len(parts) - 1 - holes
                if not holes:  # traced rings with holes nest by design
                    union, total = _areas(parts, (h, w))
                    counts["overlapping_parts"] += union < total
            outline = join_parts(parts)
        xy = outline.reshape(-1, 2) / np.asarray([w, h], dtype=np.float64)
        if (xy < 0).any() or (xy > 1).any():  # Ultralytics rejects a label file past [0, 1]
            counts["clipped_to_image"] += 1
            xy = np.clip(xy, 0.0, 1.0)
        lines.append(f"{int(inst.labels[i])} " + " ".join(_number(v) for v in xy.reshape(-1)))
        counts["objects"] += 1
    return lines


# reading ---------------------------------------------------------------------------------------


def _data_file(root: Path) -> Path:
    if root.is_file() or root.suffix.lower() in (".yaml", ".yml"):
        return root
    return root / "data.yaml"


def _load_data(root: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], Categories]:
    import yaml

    data_file = _data_file(Path(root))
    if not data_file.is_file():
        raise FormatError("no data.yaml", Location(file=str(root)))
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where built in
        data = yaml.load(data_file.read_text(encoding="utf-8"), Loader=loader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FormatError(f"data.yaml is not valid YAML: {exc}", Location(file=str(data_file))) from None
    if not isinstance(data, dict):
        raise FormatError("data.yaml must be a mapping with 'names'", Location(file=str(data_file)))
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise FormatError("data.yaml 'names' keys must be class numbers 0..N-1",
                              Location(file=str(data_file))) from None
        if keys != list(range(len(keys))):
            raise FormatError(f"data.yaml 'names' keys must be 0..{len(keys) - 1}, got {keys}",
                              Location(file=str(data_file)))
        names = [{int(k): v for k, v in names.items()}[k] for k in keys]
    if not isinstance(names, list):
        raise FormatError("data.yaml 'names' must be a list or a dict", Location(file=str(data_file)))
    ids = data.get("coco_category_ids") or list(range(len(names)))
    if not isinstance(ids, list) or len(ids) != len(names):
        raise FormatError(f"data.yaml 'coco_category_ids' must list one id per name ({len(names)})",
                          Location(file=str(data_file)))
    keypoints, skeletons = _keypoint_names(data, data_file, len(names))
    categories = Categories(
        Category(id=int(i), name=str(n), keypoints=keypoints.get(label, ()),
                 skeleton=skeletons.get(label, ()))
        for label, (i, n) in enumerate(zip(ids, names, strict=True)))
    return data_file, data, categories


def _keypoint_names(data: dict[str, Any], data_file: Path, num_classes: int
                    ) -> tuple[dict[int, tuple[str, ...]], dict[int, tuple[tuple[int, int], ...]]]:
    """Per class, keypoint names (``kpt_names``) and skeleton (``coco_skeleton``) of a pose
    dataset. Without ``kpt_names`` the names come from ``flip_idx``: a pair ``a <-> b`` is
    named ``left_a`` / ``right_a`` (others ``kpt_i``), so that instkit's flips swap them."""
    where = Location(file=str(data_file))
    shape = _kpt_shape(data, data_file)
    if shape is None:
        return {}, {}
    k = shape[0]
    given = data.get("kpt_names")
    if given is not None:
        if not isinstance(given, dict) or not all(
                isinstance(v, list) and len(v) == k for v in given.values()):
            raise FormatError(f"data.yaml 'kpt_names' must map a class to its {k} keypoint names",
                              where)
        names = {int(c): tuple(str(v) for v in values) for c, values in given.items()}
    else:
        flip = data.get("flip_idx") or list(range(k))
        if sorted(flip) != list(range(k)) or any(flip[flip[i]] != i for i in range(k)):
            raise FormatError(f"data.yaml 'flip_idx' must swap pairs of 0..{k - 1}, got {flip!r}",
                              where)
        generic = tuple(f"kpt_{i}" if flip[i] == i else
                        f"{'left' if i < flip[i] else 'right'}_{min(i, flip[i])}" for i in range(k))
        names = {c: generic for c in range(num_classes)}
    skeletons: dict[int, tuple[tuple[int, int], ...]] = {}
    for c, edges in (data.get("coco_skeleton") or {}).items():
        try:
            skeletons[int(c)] = tuple((int(a), int(b)) for a, b in edges)
        except (TypeError, ValueError):
            raise FormatError("data.yaml 'coco_skeleton' must map a class to [a, b] pairs",
                              where) from None
    return names, skeletons


def _dataset_root(data_file: Path, data: dict[str, Any]) -> Path:
    """The folder split paths are relative to: ``path`` (against the data.yaml folder, then as
    given, as Ultralytics also tries the working directory), else the data.yaml folder. A
    ``path`` that names no folder holding the splits (a dataset moved, or one downloaded with
    ``path: coco8`` for Ultralytics' datasets folder) falls back to the data.yaml folder when
    the splits are there."""
    base = data_file.parent
    path = data.get("path")
    if not path:
        return base
    entries: list[str] = []
    for key in SPLITS:
        value = data.get(key)
        entries += [e for e in (value if isinstance(value, list) else [value]) if isinstance(e, str)]
    candidates = [c for c in (base / str(path), Path(str(path)), base) if c.is_dir()]
    for candidate in candidates:
        if all((candidate / e).exists() for e in entries):
            return candidate
    if candidates[0] != base:
        return candidates[0]  # the missing split is named by the caller
    raise FormatError(f"data.yaml 'path' {path!r} is not a folder (tried beside data.yaml and "
                      "from the working directory)", Location(file=str(data_file)))


def _split_images(data_file: Path, data: dict[str, Any]) -> dict[str, list[tuple[Path, str]]]:
    """Per split listed in data.yaml, its images as ``(path, file_name)``: a folder entry gives
    its images (``file_name`` relative to it), a ``.txt`` entry lists image paths (Ultralytics'
    rules: ``./`` relative to the list's folder). Without split keys: the ``images/`` folder."""
    root = _dataset_root(data_file, data)
    listed = {k: data[k] for k in SPLITS if data.get(k)}
    if not listed:
        listed = {"train": "images"}
    out: dict[str, list[tuple[Path, str]]] = {}
    for split, value in listed.items():
        entries = value if isinstance(value, list) else [value]
        found: list[tuple[Path, str]] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise FormatError(f"data.yaml '{split}' must be a path or a list of paths",
                                  Location(file=str(data_file)))
            where = root / entry
            if not where.exists() and entry.startswith("../"):
                where = root / entry[3:]  # as Ultralytics retries
            if where.is_dir():
                images = sorted(p for p in where.rglob("*")
                                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
                found += [(p, p.relative_to(where).as_posix()) for p in images]
            elif where.is_file():
                found += _listed_images(where, root, split)
            else:
                raise FormatError(f"data.yaml '{split}': {entry!r} is not a folder or a list "
                                  f"file under {root}", Location(file=str(data_file)))
        out[split] = found
    return out


def _listed_images(listing: Path, root: Path, split: str) -> list[tuple[Path, str]]:
    found = []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines()):
        text = line.strip()
        if not text:
            continue
        path = listing.parent / text[2:] if text.startswith("./") else Path(text)
        if not path.is_file():
            raise FormatError(f"listed image {text!r} does not exist",
                              Location(file=f"{listing}:{n + 1}"))
        for folder in (root / "images" / split, root / "images", root):
            if path.resolve().is_relative_to(folder.resolve()):
                found.append((path, path.resolve().relative_to(folder.resolve()).as_posix()))
                break
        else:
            found.append((path, path.name))
    return found


def read_yolo_splits(root: str | os.PathLike[str]) -> dict[str, list[Sample]]:
    """Every split that data.yaml lists (``train``, ``val``, ``test``), as samples.

    ``root`` is the dataset folder or its YAML file. Image ids are the numeric file stems where
    all images are numeric and distinct (COCO's names), else 1..N over the splits in order;
    annotation ids are 1..M in reading order; an image listed by two splits (the one-folder
    layout names it for ``train`` and ``val``) is one sample in both. Each sample's
    ``meta.extra["split"]`` is the first split listing it; ``file_name`` is relative to the
    split's image folder.

    Lines: a polygon ``class x1 y1 x2 y2 ...`` (YOLO-seg; an outline joined from parts comes
    back as those parts where that gives the same pixels, see ``split_outline``); a box
    ``class cx cy w h`` (YOLO detection: without any polygon in the dataset the samples have
    boxes and no masks, else the box is read as a rectangle and noted in ``meta.notes``); with
    ``kpt_shape`` in data.yaml, pose lines ``class cx cy w h`` and ``x y [v]`` per keypoint
    (boxes and keypoints, no masks).
    """
    data_file, data, categories = _load_data(root)
    per_split = _split_images(data_file, data)
    unique: dict[Path, str] = {}
    for found in per_split.values():
        for path, name in found:
            unique.setdefault(path.resolve(), name)
    first_split: dict[Path, str] = {}
    for split, found in per_split.items():
        for path, _ in found:
            first_split.setdefault(path.resolve(), split)
    paths = list(unique)
    kpt = _kpt_shape(data, data_file)
    parsed = [_parse_labels(path, image_id, len(categories), kpt)
              for path, image_id in zip(paths, image_ids(paths), strict=True)]
    polygons = kpt is None and any(kind == "polygon" for one in parsed for _, kind, _ in one[3])
    samples: dict[Path, Sample] = {}
    next_ann = 1
    for path, (image_id, height, width, rows) in zip(paths, parsed, strict=True):
        meta = SampleMeta(source=str(data_file.parent), file_name=unique[path],
                          original_size=(height, width), categories=categories,
                          extra={"split": first_split[path]})
        instances = _instances(rows, (height, width), next_ann, polygons, kpt, meta)
        next_ann += len(instances)
        samples[path] = Sample(instances, image_id, meta, str(path))
    return {split: [samples[p.resolve()] for p, _ in found] for split, found in per_split.items()}


def read_yolo(root: str | os.PathLike[str], split: str | None = None) -> list[Sample]:
    """Read a YOLO dataset (``data.yaml``, images, labels) as samples: every image of every
    split that data.yaml lists, once (``split=None``), or one split's. See ``read_yolo_splits``.
    """
    splits = read_yolo_splits(root)
    if split is not None:
        if split not in splits:
            raise FormatError(f"data.yaml lists no split {split!r} (it has "
                              f"{', '.join(splits) or 'none'})", Location(file=str(root)))
        return splits[split]
    seen: dict[int, Sample] = {}
    for members in splits.values():
        for sample in members:
            seen.setdefault(id(sample), sample)
    return list(seen.values())


def _kpt_shape(data: dict[str, Any], data_file: Path) -> tuple[int, int] | None:
    shape = data.get("kpt_shape")
    if shape is None:
        return None
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
            and shape[0] > 0 and shape[1] in (2, 3)):
        raise FormatError(f"data.yaml 'kpt_shape' must be [K, 2] or [K, 3], got {shape!r}",
                          Location(file=str(data_file)))
    return int(shape[0]), int(shape[1])


Row = tuple[int, str, np.ndarray]  # class, "polygon" | "box" | "pose", numbers in pixels


def _parse_labels(image: Path, image_id: int, num_classes: int, kpt: tuple[int, int] | None
                  ) -> tuple[int, int, int, list[Row]]:
    """An image's ``(image_id, height, width, rows)``; every number denormalised to pixels
    and kept to 1e-5 px (``x / w * w`` comes back as ``x``: pycocotools' rasteriser rounds at
    fifths of a pixel, so 369.49999999 and 369.5 can differ by a column)."""
    with open_image(image, Location(file=str(image))) as opened:
        width, height = opened.size
    label = label_path(image)
    rows: list[Row] = []
    if not label.is_file():
        return image_id, height, width, rows
    size = np.asarray([width, height], dtype=np.float64)
    for n, line in enumerate(label.read_text(encoding="utf-8").splitlines()):
        fields = line.split()
        if not fields:
            continue
        where = Location(file=f"{label}:{n + 1}", image_id=image_id)
        try:
            cls, coords = int(fields[0]), np.asarray(fields[1:], dtype=np.float64)
        except ValueError:
            raise FormatError(f"line is not 'class x1 y1 ...': {line[:60]!r}", where) from None
        if not 0 <= cls < num_classes:
            raise FormatError(f"class {cls} is outside 0..{num_classes - 1}", where)
        if not np.isfinite(coords).all():
            raise FormatError("a coordinate is NaN or infinite", where)
        if kpt is not None:
            k, dims = kpt
            if coords.size != 4 + k * dims:
                raise FormatError(f"a pose line needs 4 + {k} x {dims} numbers (kpt_shape), got "
                                  f"{coords.size}", where)
            box = np.round(coords[:4] * np.r_[size, size], 5)
            points = coords[4:].reshape(k, dims)
            out = np.zeros((k, 3), np.float64)
            out[:, :2] = np.round(points[:, :2] * size, 5)
            # [K, 2]: Ultralytics takes a negative coordinate as "not labelled"
            out[:, 2] = points[:, 2] if dims == 3 else np.where((points < 0).any(axis=1), 0, 2)
            out[out[:, 2] <= 0] = 0
            rows.append((cls, "pose", np.concatenate([box, out.reshape(-1)])))
        elif coords.size == 4:
            rows.append((cls, "box", np.round(coords * np.r_[size, size], 5)))
        elif coords.size >= 6 and coords.size % 2 == 0:
            rows.append((cls, "polygon", np.round(coords.reshape(-1, 2) * size, 5).reshape(-1)))
        else:
            raise FormatError(f"a line needs a box (4 numbers) or a polygon (an even count >= 6), "
                              f"got {coords.size} numbers", where)
    return image_id, height, width, rows


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = cxcywh
    return np.asarray([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


def _instances(rows: list[Row], size: tuple[int, int], first_ann: int, polygons: bool,
               kpt: tuple[int, int] | None, meta: SampleMeta) -> Instances:
    height, width = size
    labels = np.asarray([cls for cls, _, _ in rows], dtype=np.int64)
    ids = np.arange(first_ann, first_ann + len(rows), dtype=np.int64)
    if kpt is not None:
        k = kpt[0]
        boxes = np.asarray([_xyxy(v[:4]) for _, _, v in rows], np.float64).reshape(-1, 4)
        keypoints = np.asarray([v[4:].reshape(k, 3) for _, _, v in rows],
                               np.float32).reshape(-1, k, 3)
        return Instances(image_size=size, boxes=boxes, labels=labels, keypoints=keypoints, ids=ids)
    if not polygons:
        boxes = np.asarray([_xyxy(v) for _, _, v in rows], np.float64).reshape(-1, 4)
        return Instances(image_size=size, boxes=boxes, labels=labels, ids=ids)
    parts: list[list[np.ndarray]] = []
    rectangles = 0
    for _, kind, xy in rows:
        if kind == "box":
            x0, y0, x1, y1 = _xyxy(xy)
            parts.append([np.asarray([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)])
            rectangles += 1
            continue
        pieces = split_outline(xy)
        if len(pieces) > 1:
            union, total = _areas(pieces, (height, width))
            if union != total:  # overlapping pieces: only the whole outline fills as written
                pieces = [xy]
        parts.append(pieces or [xy])
    if rectangles:
        meta.notes.append(f"yolo: {rectangles} box line(s) read as rectangle masks")
    masks = Masks.from_polygons(parts, size)
    return Instances(image_size=size, masks=masks, labels=labels, ids=ids)


class YoloDataset(Sequence[Sample]):
    def __init__(self, root: str | os.PathLike[str], split: str | None = None) -> None:
        self._samples = read_yolo(root, split)
        self.categories = self._samples[0].meta.categories if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: Any) -> Any:
        return self._samples[index]


__all__ = ["COUNT_NOTES", "SPLITS", "YoloDataset", "join_parts", "label_path", "read_yolo",
           "read_yolo_splits", "save_image", "split_outline", "write_yolo"]

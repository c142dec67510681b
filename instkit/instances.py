"""``Instances``: the object-row container.

Object i is row i of every column: its box, label, mask, keypoints, crowd flag, annotation id,
score and extras. Rows are selected together (``inst[keep]``) so that columns cannot drift.

Column conventions:

- ``boxes``: ``(N, 4)`` float32 ``xyxy``, absolute pixels, pixel-edge (see ``instkit.masks``).
- ``labels``: ``(N,)`` int64, contiguous ``0..C-1`` (see ``instkit.categories``).
- ``masks``: ``Masks`` of the image size, or ``None`` for box-only data.
- ``keypoints``: ``(N, K, 3)`` float32 ``x, y, visibility`` (COCO's 0/1/2), or ``None``.
- ``iscrowd``: ``(N,)`` bool. ``ids``: ``(N,)`` int64 annotation ids. ``scores``: ``(N,)`` float32
  or ``None``. ``extras``: name -> array whose first axis has length N (object arrays allowed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from instkit.errors import InstancesError
from instkit.masks import ImageSize, Masks, as_index


def _column(
    name: str, value: Any, dtype: Any, shape_tail: tuple[int, ...], n: int | None
) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InstancesError(f"{name}: cannot convert to {np.dtype(dtype).name}: {exc}") from None
    if array.size == 0 and array.ndim < 1 + len(shape_tail):
        array = array.reshape((0, *shape_tail))
    expected = "(" + ", ".join(str(d) for d in ("N" if n is None else n, *shape_tail)) + \
        ("," if not shape_tail else "") + ")"
    if array.ndim != 1 + len(shape_tail) or (shape_tail and array.shape[1:] != shape_tail):
        raise InstancesError(f"{name}: expected shape {expected}, got {array.shape}")
    if n is not None and array.shape[0] != n:
        raise InstancesError(f"{name}: expected shape {expected}, got {array.shape}")
    return array


def _extra_column(name: str, value: Any, n: int) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    else:
        values = list(value)
        array = np.empty(len(values), dtype=object)
        for i, item in enumerate(values):
            array[i] = item
        if values and all(isinstance(v, (int, float, bool, np.number)) for v in values):
            array = np.asarray(values)
    if array.ndim == 0 or array.shape[0] != n:
        raise InstancesError(f"extras[{name!r}]: expected first axis of length {n}, got {array.shape}")
    return array


class Instances:
    """Equal-length columns describing N object instances of one image of size ``(H, W)``.

    ``image_size`` may be left out when ``masks`` are given: they carry it."""

    __slots__ = ("_boxes", "_labels", "_masks", "_keypoints", "_iscrowd", "_ids", "_scores",
                 "_extras", "_size")

    def __init__(
        self,
        *,
        image_size: ImageSize | None = None,
        boxes: Any = None,
        labels: Any = None,
        masks: Masks | None = None,
        keypoints: Any = None,
        iscrowd: Any = None,
        ids: Any = None,
        scores: Any = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        if image_size is None:  # masks carry their image size
            if not isinstance(masks, Masks):
                raise InstancesError("image_size is required when there are no masks")
            image_size = masks.image_size
        size = (int(image_size[0]), int(image_size[1]))
        if masks is not None:
            if not isinstance(masks, Masks):
                raise InstancesError(f"masks must be an instkit.Masks, got {type(masks).__name__}")
            if masks.image_size != size:
                raise InstancesError(
                    f"masks: expected image size {size}, got {masks.image_size}"
                )
        if boxes is None:
            if masks is None:
                raise InstancesError("boxes are required when there are no masks")
            boxes = masks.boxes()
        box_array = _column("boxes", boxes, np.float32, (4,), None)
        n = box_array.shape[0]
        if masks is not None and len(masks) != n:
            raise InstancesError(f"masks: expected {n} masks (one per box), got {len(masks)}")
        if labels is None:
            raise InstancesError("labels are required")
        self._size = size
        self._boxes = box_array
        self._labels = _column("labels", labels, np.int64, (), n)
        self._masks = masks
        if keypoints is None:
            self._keypoints = None
        else:
            kp = np.asarray(keypoints, dtype=np.float32)
            if kp.ndim != 3 or kp.shape[0] != n or kp.shape[2] != 3:
                raise InstancesError(f"keypoints: expected shape ({n}, K, 3), got {kp.shape}")
            self._keypoints = kp
        self._iscrowd = (
            np.zeros(n, dtype=bool) if iscrowd is None else _column("iscrowd", iscrowd, bool, (), n)
        )
        self._ids = (
            np.arange(n, dtype=np.int64) if ids is None else _column("ids", ids, np.int64, (), n)
        )
        self._scores = None if scores is None else _column("scores", scores, np.float32, (), n)
        self._extras = {str(k): _extra_column(str(k), v, n) for k, v in (extras or {}).items()}

    # construction ------------------------------------------------------------------------

    @classmethod
    def empty(
        cls, image_size: ImageSize, *, with_masks: bool = True, num_keypoints: int | None = None
    ) -> Instances:
        return cls(
            image_size=image_size,
            boxes=np.zeros((0, 4), np.float32),
            labels=np.zeros(0, np.int64),
            masks=Masks.empty(image_size) if with_masks else None,
            keypoints=None if num_keypoints is None else np.zeros((0, num_keypoints, 3), np.float32),
        )

    def replace(self, **changes: Any) -> Instances:
        """A copy with some columns replaced (``extras`` replaces the whole mapping)."""
        fields: dict[str, Any] = {
            "image_size": self._size,
            "boxes": self._boxes,
            "labels": self._labels,
            "masks": self._masks,
            "keypoints": self._keypoints,
            "iscrowd": self._iscrowd,
            "ids": self._ids,
            "scores": self._scores,
            "extras": self._extras,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Instances has no column(s) {sorted(unknown)}")
        fields.update(changes)
        return Instances(**fields)

    def with_boxes_from_masks(self) -> Instances:
        """Boxes replaced by the tight boxes of the masks."""
        if self._masks is None:
            raise InstancesError("there are no masks to take boxes from")
        return self.replace(boxes=self._masks.boxes())

    @classmethod
    def cat(cls, parts: Sequence[Instances]) -> Instances:
        """Concatenate rows; every part must share image size and the set of optional columns."""
        if not parts:
            raise InstancesError("cannot concatenate an empty list of Instances")
        first = parts[0]
        for part in parts[1:]:
            if part._size != first._size:
                raise InstancesError(
                    f"cannot concatenate Instances of image size {part._size} with {first._size}"
                )
            for name in ("_masks", "_keypoints", "_scores"):
                if (getattr(part, name) is None) != (getattr(first, name) is None):
                    raise InstancesError(f"cannot concatenate: column {name[1:]} is present in "
                                         "some parts and missing in others")
            if set(part._extras) != set(first._extras):
                raise InstancesError(
                    f"cannot concatenate: extras {sorted(part._extras)} differ from "
                    f"{sorted(first._extras)}"
                )
        def joined(name: str) -> Any:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values)

        return cls(
            image_size=first._size,
            boxes=joined("_boxes"),
            labels=joined("_labels"),
            masks=None if first._masks is None else Masks.cat([p._masks for p in parts]),  # type: ignore[misc]
            keypoints=joined("_keypoints"),
            iscrowd=joined("_iscrowd"),
            ids=joined("_ids"),
            scores=joined("_scores"),
            extras={k: np.concatenate([p._extras[k] for p in parts]) for k in first._extras},
        )

    # accessors ----------------------------------------------------------------------------

    @property
    def image_size(self) -> ImageSize:
        return self._size

    @property
    def boxes(self) -> np.ndarray:
        return self._boxes

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def masks(self) -> Masks | None:
        return self._masks

    @property
    def keypoints(self) -> np.ndarray | None:
        return self._keypoints

    @property
    def iscrowd(self) -> np.ndarray:
        return self._iscrowd

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    @property
    def scores(self) -> np.ndarray | None:
        return self._scores

    @property
    def extras(self) -> Mapping[str, np.ndarray]:
        return dict(self._extras)

    def __len__(self) -> int:
        return int(self._boxes.shape[0])

    def __getitem__(self, key: Any) -> Instances:
        index = as_index(key, len(self))
        return Instances(
            image_size=self._size,
            boxes=self._boxes[index],
            labels=self._labels[index],
            masks=None if self._masks is None else self._masks[index],
            keypoints=None if self._keypoints is None else self._keypoints[index],
            iscrowd=self._iscrowd[index],
            ids=self._ids[index],
            scores=None if self._scores is None else self._scores[index],
            extras={k: v[index] for k, v in self._extras.items()},
        )

    def __iter__(self) -> Any:
        raise TypeError("Instances is a table of columns: index rows with inst[i] or inst[keep]")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Instances):
            return NotImplemented
        if self._size != other._size or len(self) != len(other):
            return False
        if not (
            np.array_equal(self._boxes, other._boxes)
            and np.array_equal(self._labels, other._labels)
            and np.array_equal(self._iscrowd, other._iscrowd)
            and np.array_equal(self._ids, other._ids)
        ):
            return False
        for mine, theirs in ((self._keypoints, other._keypoints), (self._scores, other._scores)):
            if (mine is None) != (theirs is None):
                return False
            if mine is not None and theirs is not None and not np.array_equal(
                mine, theirs, equal_nan=True
            ):
                return False
        if (self._masks is None) != (other._masks is None):
            return False
        if self._masks is not None and self._masks != other._masks:
            return False
        if set(self._extras) != set(other._extras):
            return False
        return all(
            _extras_equal(self._extras[k], other._extras[k]) for k in self._extras
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        n = len(self)
        parts = [f"n={n}", f"image_size={self._size}"]
        shown = self._labels[:8].tolist()
        parts.append(f"labels={shown}{'...' if n > 8 else ''}")
        parts.append(f"ids={self._ids[:8].tolist()}{'...' if n > 8 else ''}")
        if self._masks is not None:
            kinds = self._masks.kinds
            forms = ",".join(f"{k}x{kinds.count(k)}" for k in sorted(set(kinds)))
            parts.append(f"masks=[{forms}]")
        if self._keypoints is not None:
            parts.append(f"keypoints={tuple(self._keypoints.shape)}")
        if self._iscrowd.any():
            parts.append(f"crowd={int(self._iscrowd.sum())}")
        if self._scores is not None:
            parts.append("scores")
        if self._extras:
            parts.append(f"extras={sorted(self._extras)}")
        return f"Instances({', '.join(parts)})"


def _extras_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype == object or b.dtype == object:
        return all(_values_equal(x, y) for x, y in zip(a.tolist(), b.tolist()))
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _values_equal(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))
    return bool(x == y)

"""Category tables: contiguous labels ``0..C-1`` inside instkit, a dataset's own ids at the edges.

COCO numbers its 80 categories with gapped ids 1..90; instkit sorts categories by id and gives
them labels 0..C-1. The table travels with the data so that writers restore the original ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from instkit.errors import FormatError, Location

_LEFT_RIGHT = (("left", "right"), ("l_", "r_"), ("_l", "_r"))


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str | None = None
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_coco(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": int(self.id), "name": self.name}
        if self.supercategory is not None:
            out["supercategory"] = self.supercategory
        if self.keypoints:
            out["keypoints"] = list(self.keypoints)
            out["skeleton"] = [list(edge) for edge in self.skeleton]
        out.update(self.extra)
        return out


class Categories:
    """An ordered category table; ``label`` is the position, ``id`` the dataset's own id."""

    def __init__(self, categories: Iterable[Category]) -> None:
        self._categories = tuple(categories)
        self._label_of_id: dict[int, int] = {}
        for label, category in enumerate(self._categories):
            if category.id in self._label_of_id:
                raise FormatError(f"duplicate category id {category.id}")
            self._label_of_id[category.id] = label

    @classmethod
    def from_names(cls, names: Sequence[str], first_id: int = 1) -> Categories:
        return cls(Category(id=first_id + i, name=name) for i, name in enumerate(names))

    @classmethod
    def from_coco(cls, entries: Any, file: str | None = None) -> Categories:
        """Parse COCO's ``categories`` list; categories are ordered by id."""
        if not isinstance(entries, list):
            raise FormatError(
                f"'categories' must be a list, got {type(entries).__name__}",
                Location(file=file, json_path="categories"),
            )
        parsed = []
        seen: set[int] = set()
        for index, entry in enumerate(entries):
            where = Location(file=file, json_path=f"categories[{index}]")
            if not isinstance(entry, dict):
                raise FormatError(f"a category must be an object, got {type(entry).__name__}", where)
            cat_id = entry.get("id")
            if not isinstance(cat_id, int) or isinstance(cat_id, bool):
                raise FormatError(f"category 'id' must be an integer, got {cat_id!r}", where)
            if cat_id in seen:
                raise FormatError(f"duplicate category id {cat_id}", where)
            seen.add(cat_id)
            name = entry.get("name")
            if not isinstance(name, str):
                raise FormatError(f"category 'name' must be a string, got {name!r}", where)
            keypoints = entry.get("keypoints") or []
            skeleton = entry.get("skeleton") or []
            if not isinstance(keypoints, list) or not all(isinstance(k, str) for k in keypoints):
                raise FormatError("category 'keypoints' must be a list of names", where)
            try:
                edges = tuple((int(a), int(b)) for a, b in skeleton)
            except (TypeError, ValueError):
                raise FormatError("category 'skeleton' must be a list of [a, b] pairs", where) from None
            known = {"id", "name", "supercategory", "keypoints", "skeleton"}
            parsed.append(
                Category(
                    id=cat_id,
                    name=name,
                    supercategory=entry.get("supercategory"),
                    keypoints=tuple(keypoints),
                    skeleton=edges,
                    extra={k: v for k, v in entry.items() if k not in known},
                )
            )
        parsed.sort(key=lambda c: c.id)
        return cls(parsed)

    def to_coco(self) -> list[dict[str, Any]]:
        return [category.to_coco() for category in self._categories]

    def __len__(self) -> int:
        return len(self._categories)

    def __getitem__(self, label: int) -> Category:
        return self._categories[label]

    def __iter__(self) -> Any:
        return iter(self._categories)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Categories) and self._categories == other._categories

    def __hash__(self) -> int:
        return hash(self._categories)

    def __repr__(self) -> str:
        names = ", ".join(f"{c.id}:{c.name}" for c in self._categories[:6])
        more = ", ..." if len(self) > 6 else ""
        return f"Categories({len(self)}: {names}{more})"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._categories]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self._categories]

    def has_id(self, category_id: int) -> bool:
        return category_id in self._label_of_id

    def label_of(self, category_id: int) -> int:
        try:
            return self._label_of_id[category_id]
        except KeyError:
            raise FormatError(f"unknown category id {category_id}") from None

    def id_of(self, label: int) -> int:
        if not 0 <= label < len(self._categories):
            raise FormatError(f"label {label} is outside 0..{len(self._categories) - 1}")
        return self._categories[label].id

    @property
    def num_keypoints(self) -> int:
        return max((len(c.keypoints) for c in self._categories), default=0)

    def flip_pairs(self, label: int | None = None) -> list[tuple[int, int]]:
        """Keypoint index pairs that swap under a horizontal flip, from left/right names."""
        categories = self._categories if label is None else (self._categories[label],)
        pairs: set[tuple[int, int]] = set()
        for category in categories:
            names = list(category.keypoints)
            for i, name in enumerate(names):
                for left, right in _LEFT_RIGHT:
                    if left in name:
                        twin = name.replace(left, right)
                        if twin in names:
                            j = names.index(twin)
                            pairs.add((min(i, j), max(i, j)))
        return sorted(pairs)

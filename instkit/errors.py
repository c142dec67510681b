"""Errors raised on bad input.

Every error names the rule that was broken, the offending value and where it was found: the file,
the JSON path (``annotations[17].segmentation[0]``), the image_id and the annotation id. They
subclass ``ValueError`` or ``TypeError`` so that callers who do not know instkit still catch them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where a problem was found; every field is optional."""

    file: str | None = None
    json_path: str | None = None
    image_id: int | None = None
    annotation_id: int | None = None
    sample_index: int | None = None

    def describe(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(f"file {self.file}")
        if self.json_path is not None:
            parts.append(f"at {self.json_path}")
        if self.image_id is not None:
            parts.append(f"image_id={self.image_id}")
        if self.annotation_id is not None:
            parts.append(f"annotation id={self.annotation_id}")
        if self.sample_index is not None:
            parts.append(f"sample index {self.sample_index}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class InstkitError(Exception):
    """Base class of every instkit error."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location or Location()
        where = self.location.describe()
        super().__init__(f"{message} ({where})" if where else message)


class InstancesError(InstkitError, ValueError):
    """Columns of an ``Instances`` that do not agree (shape, dtype, length)."""


class MaskError(InstkitError, ValueError):
    """A mask that cannot be decoded: bad polygon, bad RLE, wrong size."""


class FormatError(InstkitError, ValueError):
    """A dataset file that does not follow its format (COCO, YOLO-seg, label schema...)."""


class JSONParseError(FormatError):
    """A JSON file that does not parse, or uses NaN/Infinity."""


class ImageError(InstkitError, ValueError):
    """An image that is missing, unreadable, or not the size its annotation says."""


class PathEscapeError(InstkitError, ValueError):
    """A file name that would resolve outside the directory it must stay in."""


class MissingDependencyError(InstkitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise one clear error naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is needed here but is not installed: pip install 'instkit[{extra}]'"
        ) from exc

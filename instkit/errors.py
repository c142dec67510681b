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
    """Base class of every instkit error.

    ``code`` is the rule's check code (docs/validate.md) when a COCO rule raised it, else None."""

    code: str | None = None

    def __init__(self, message: str, location: Location | None = None, *,
                 code: str | None = None) -> None:
        self.message = message
        self.location = location or Location()
        if code is not None:
            self.code = code
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


# Leaf classes of the COCO rulebook (instkit.validate.rules): each rule names the one it raises,
# so callers match on the type (and ``error.code``), never on the message text.


class NonFiniteError(JSONParseError):
    """NaN or Infinity in a JSON document (rule ``json-nonfinite``)."""


class JSONDepthError(JSONParseError):
    """JSON nested deeper than the limit (rule ``json-too-deep``)."""


class SchemaError(FormatError):
    """A field of the wrong type, or a required field missing (``schema-type``, ``schema-missing``)."""


class DuplicateIdError(FormatError):
    """Two images, annotations or categories share an id (``duplicate-*-id``)."""


class UnknownReferenceError(FormatError):
    """An annotation points at an image or category that does not exist (``unknown-*``)."""


class FileNameError(FormatError):
    """An image ``file_name`` that cannot name a file: NUL byte, lone surrogate (``file-name-invalid``)."""


class LimitError(FormatError):
    """A size, coordinate, count or number beyond a documented limit (``image-too-large``,
    ``polygon-too-large``, ``coordinate-out-of-range``, ``number-out-of-range``); checked before
    any native code (pycocotools, OpenCV, PIL) sees the value."""


class BoxError(FormatError):
    """A bbox that is not ``[x, y, w, h]`` with ``w, h > 0`` (``bbox-invalid``)."""


class CrowdFlagError(FormatError):
    """An ``iscrowd`` that is not the integer 0 or 1 (``iscrowd-invalid``)."""


class KeypointError(FormatError):
    """Keypoints of the wrong length or visibility (``keypoints-count``, ``keypoints-visibility``)."""


class ImageError(InstkitError, ValueError):
    """An image that is missing, unreadable, or not the size its annotation says."""


class PolygonError(MaskError, FormatError):
    """A polygon part that cannot be rasterised as written (``polygon-*`` errors)."""


class RLEError(MaskError, FormatError):
    """An RLE whose size or counts are wrong (``rle-size-mismatch``, ``rle-counts-sum``, ``rle-invalid``)."""


class EmptyMaskError(MaskError, FormatError):
    """A segmentation that covers no pixel (``mask-empty``)."""


class MissingMaskError(MaskError, FormatError):
    """An annotation without segmentation in a file whose other annotations have one (``mask-missing``)."""


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


def show_value(value: Any, limit: int = 60) -> str:
    """A short ``repr`` for messages: bounded in length and nesting, so that a huge or deeply
    nested value from a hostile file cannot blow up (or recurse through) an error message."""

    def shallow(item: Any, depth: int) -> str:
        if isinstance(item, list):
            if depth >= 3:
                return "[...]"
            inner = ", ".join(shallow(v, depth + 1) for v in item[:8])
            return f"[{inner}{', ...' if len(item) > 8 else ''}]"
        if isinstance(item, dict):
            if depth >= 3:
                return "{...}"
            pairs = list(item.items())[:6]
            inner = ", ".join(f"{shallow(k, depth + 1)}: {shallow(v, depth + 1)}" for k, v in pairs)
            return f"{{{inner}{', ...' if len(item) > 6 else ''}}}"
        if isinstance(item, str):
            return repr(item[: limit + 2])
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > 10**limit:
            return f"<an integer of about {len(hex(item)) * 1.2:.0f} digits>"
        return repr(item)

    text = shallow(value, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""File helpers shared by the readers and writers: safe joins, atomic writes, strict JSON."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from instkit.errors import JSONParseError, Location, PathEscapeError


def safe_join(root: str | os.PathLike[str], relative: str, where: Location | None = None) -> str:
    """``root/relative``, refusing absolute paths and ``..`` that would leave ``root``."""
    base = Path(root).resolve()
    if not isinstance(relative, str) or not relative:
        raise PathEscapeError(f"file name must be a non-empty string, got {relative!r}", where)
    candidate = (base / relative).resolve()
    if candidate != base and base not in candidate.parents:
        raise PathEscapeError(
            f"file name {relative!r} resolves to {candidate}, outside the image root {base}", where
        )
    return str(candidate)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON value {name}")


def load_json(path: str | os.PathLike[str], *, allow_nonfinite: bool = False) -> Any:
    """Parse a JSON file; errors name the file, line and column. NaN/Infinity are refused
    unless ``allow_nonfinite`` (then they become floats for a later check to report)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise JSONParseError("file not found", Location(file=path)) from None
    except OSError as exc:
        raise JSONParseError(f"cannot read file: {exc}", Location(file=path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JSONParseError(f"file is not UTF-8 text: {exc}", Location(file=path)) from None
    hook = float if allow_nonfinite else _reject_constant
    try:
        return json.loads(text, parse_constant=hook)
    except json.JSONDecodeError as exc:
        raise JSONParseError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            Location(file=path),
        ) from None
    except ValueError as exc:
        line, column = _position_of_constant(text)
        raise JSONParseError(
            f"{exc} at line {line}, column {column} (JSON has no NaN or Infinity)",
            Location(file=path),
        ) from None


def _position_of_constant(text: str) -> tuple[int, int]:
    import re

    match = re.search(r"(?<![\"\w])(-?Infinity|NaN)(?![\"\w])", text)
    if not match:
        return 0, 0
    line = text.count("\n", 0, match.start()) + 1
    column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
    return line, column

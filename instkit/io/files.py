"""File helpers shared by the readers and writers: safe joins, atomic writes, strict JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from instkit.errors import InstkitError, JSONParseError, Location, PathEscapeError


class OutputOverInputError(InstkitError, ValueError):
    """An output path that is, or would write over, one of the command's inputs."""


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, tuples as lists, keys as strings and
    non-finite floats as ``None`` (JSON has no NaN), ready for ``json.dumps(allow_nan=False)``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return json_safe(value.item())
    return value


def safe_join(root: str | os.PathLike[str], relative: str, where: Location | None = None) -> str:
    """``root/relative``, refusing absolute paths and ``..`` (or links) that would leave ``root``.

    On ``os.path`` strings, not ``pathlib``: data loaders call this for every image."""
    base = os.path.realpath(root)
    if not isinstance(relative, str) or not relative:
        raise PathEscapeError(f"file name must be a non-empty string, got {relative!r}", where)
    candidate = os.path.realpath(os.path.join(base, relative))
    inside = base if base.endswith(os.sep) else base + os.sep
    if candidate != base and not candidate.startswith(inside):
        raise PathEscapeError(
            f"file name {relative!r} resolves to {candidate}, outside the image root {base}", where
        )
    return candidate


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


# Temporary files are named ``.NAME.PID-TOKEN.tmp`` beside their target: the PID says whether the
# writer still runs, so a later write to the same target can remove what a killed one left.
_TMP_SUFFIX = ".tmp"
_LEGACY_TOKEN = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkstemp's names, before the PID was added
_LEGACY_STALE_SECONDS = 3600.0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[str]:
    """Remove temporary files (and ``staged_folder``'s folders) of our naming for ``target``
    whose writer is gone.

    A name with a PID is stale when that process no longer runs; an older file name without a
    PID when it has not changed for an hour. Returns the paths removed."""
    path = Path(target)
    prefix = f".{path.name}."
    removed: list[str] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        token = name[len(prefix):-len(_TMP_SUFFIX)]
        pid_text, dash, rest = token.partition("-")
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not (is_dir or entry.is_file(follow_symlinks=False)):
                continue
            if dash and pid_text.isdigit() and rest:
                pid = int(pid_text)
                if pid == os.getpid() or _pid_alive(pid):  # still writing it (or may be)
                    continue
            elif _LEGACY_TOKEN.fullmatch(token) and not is_dir:
                if now - entry.stat(follow_symlinks=False).st_mtime < _LEGACY_STALE_SECONDS:
                    continue
            else:
                continue
            if is_dir:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            continue
    return removed


def _temporary_name(target: Path) -> Path:
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}"


def make_temporary_dir(target: str | os.PathLike[str]) -> Path:
    """A new folder beside ``target`` (made with mkdir: the umask applies), named so that
    ``remove_stale_temporaries`` removes it once its process has gone; stale ones go first."""
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    for _ in range(100):
        folder = _temporary_name(path)
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to write an output folder into; on success it is
    renamed to ``path`` (which must not exist, or be an empty folder), on failure removed, so a
    failed writer leaves nothing half-written."""
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InstkitError("output folder exists and is not empty; choose a new one",
                           Location(file=str(target)))
    folder = make_temporary_dir(target)
    try:
        yield folder
        if target.is_dir():
            target.rmdir()  # empty (checked above); a file or a full folder makes this fail
        os.replace(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _create_temporary(target: Path) -> tuple[int, str]:
    """A new file beside ``target``, created with mode 0o666 so that the umask applies (as for
    any ``open``), or with ``target``'s own mode when it exists."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        tmp = str(_temporary_name(target))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         0o666)
        except FileExistsError:
            continue
        if mode is not None:
            with contextlib.suppress(OSError):
                os.fchmod(fd, mode)
        return fd, tmp
    raise FileExistsError(f"no free temporary name beside {target}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    The file gets the permissions any new file gets (the umask applies), or keeps those of the
    file it replaces. On any failure the temporary file is removed; those left by a killed
    process are removed by the next write to the same ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp = _create_temporary(target)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def refuse_overwrite(outputs: Iterable[str | os.PathLike[str] | None],
                     inputs: Iterable[str | os.PathLike[str] | None], *,
                     what: str = "output") -> None:
    """Raise ``OutputOverInputError`` when an output is an input, or lies inside an input folder,
    or is a folder that holds an input: writing it could replace what is being read."""
    given = [Path(p) for p in inputs if p is not None]
    for out in (Path(p) for p in outputs if p is not None):
        try:
            out_resolved = out.resolve()
        except OSError:
            continue
        for source in given:
            try:
                src = source.resolve()
            except OSError:
                continue
            if out_resolved == src or (out.exists() and src.exists() and os.path.samefile(out, src)):
                problem = "is the input"
            elif src.is_dir() and src in out_resolved.parents:
                problem = "lies inside the input folder"
            elif out_resolved in src.parents:
                problem = "is a folder that holds the input"
            else:
                continue
            raise OutputOverInputError(
                f"{what} {out} {problem} {source}: it would be written over; choose another path",
                Location(file=str(out)))


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large document is parsed and packed.

    Parsing creates millions of small acyclic objects (freed by reference counting anyway);
    each allocation burst triggers a collection that walks every live object, so a 5,000-image
    COCO file reads about a third faster with the collector paused. Restored as it was."""
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    except RecursionError:  # Python's parser stops near 1000 levels: the rulebook's json-too-deep
        from instkit.errors import JSONDepthError

        raise JSONDepthError("JSON nested too deeply to parse (Python's parser stops near 1000 "
                             "levels)", Location(file=path), code="json-too-deep") from None
    except ValueError as exc:
        if not str(exc).startswith("non-standard JSON value"):  # e.g. an integer of 4300+ digits
            raise JSONParseError(f"invalid JSON: {exc}", Location(file=path),
                                 code="json-parse") from None
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

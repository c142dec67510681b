"""File helpers shared by the readers and writers: safe joins, atomic writes, strict JSON."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from instkit.errors import InstkitError, JSONParseError, Location, PathEscapeError


class OutputOverInputError(InstkitError, ValueError):
    """An output path that is, or would write over, one of the command's inputs."""


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


# Temporary files are named ``.NAME.PID-TOKEN.tmp`` beside their target: the PID says whether the
# writer still runs, so a later write to the same target can remove what a killed one left.
_TMP_SUFFIX = ".tmp"
_LEGACY_TOKEN = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkstemp's names, before the PID was added
_LEGACY_STALE_SECONDS = 3600.0
_active: set[str] = set()  # this process's temporary files being written (other threads)


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
    """Remove temporary files of ``atomic_write``'s naming for ``target`` whose writer is gone.

    A name with a PID is stale when that process no longer runs (or is this process and not
    writing it); an older name without a PID when it has not changed for an hour. Returns the
    paths removed."""
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
            if not entry.is_file(follow_symlinks=False):
                continue
            if dash and pid_text.isdigit() and rest:
                pid = int(pid_text)
                if pid == os.getpid():
                    if entry.path in _active:
                        continue
                elif _pid_alive(pid):
                    continue
            elif _LEGACY_TOKEN.fullmatch(token):
                if now - entry.stat(follow_symlinks=False).st_mtime < _LEGACY_STALE_SECONDS:
                    continue
            else:
                continue
            os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            continue
    return removed


def _create_temporary(target: Path) -> tuple[int, str]:
    """A new file beside ``target``, created with mode 0o666 so that the umask applies (as for
    any ``open``), or with ``target``'s own mode when it exists."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}")
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
    _active.add(tmp)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _active.discard(tmp)


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

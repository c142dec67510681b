"""The ``instkit`` command line.

Each verb lives in its own module under ``instkit.cli.commands`` and exposes ``command`` (a click
command); the group finds them by name and imports a verb only when it runs, so
``instkit --help`` stays fast and a verb's heavy dependencies load only for that verb.

Exit codes are decided here, once, for every verb (see ``EXIT_CODES_HELP``): a verb returns
normally (0), exits with ``EXIT_FINDINGS`` when its check found problems (1), raises an
``InstkitError`` or a click usage error for bad usage or input (2); anything else is a bug in
instkit (3): one line on stderr and the traceback saved to a file.
"""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from instkit import __version__
from instkit.errors import InstkitError

_COMMANDS_PACKAGE = "instkit.cli.commands"

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

CRASH_DIR_ENV = "INSTKIT_CRASH_DIR"
TRACEBACK_ENV = "INSTKIT_TRACEBACK"

EXIT_CODES_HELP = f"""\b
Exit codes (every verb):
  {EXIT_OK}  done, nothing wrong found
  {EXIT_FINDINGS}  findings: the check ran and found problems (validate errors,
     a failed benchmark)
  {EXIT_USAGE}  bad usage or bad input: an unknown option, a file that is missing,
     unreadable or not what its format says, an output that would
     overwrite an input (one line on stderr says what and where)
  {EXIT_INTERNAL}  internal error, a bug in instkit: one line on stderr and the path of
     the saved traceback (in ${CRASH_DIR_ENV}, else the temp folder)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C or SIGTERM)
"""

# A path the user named that cannot be read or written is their input, not an instkit bug.
_USER_OS_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS,
                   errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ENOTEMPTY,
                   errno.EDQUOT, errno.ELOOP}


def _verb_modules() -> dict[str, str]:
    package = importlib.import_module(_COMMANDS_PACKAGE)
    return {
        info.name.replace("_", "-"): f"{_COMMANDS_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    }


def save_traceback(exc: BaseException, argv: Sequence[str] | None = None) -> str:
    """Write ``exc``'s traceback (with the command and versions) to a new file; returns its path."""
    import platform
    import tempfile
    import traceback

    folder = os.environ.get(CRASH_DIR_ENV) or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="instkit-crash-", suffix=".txt", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as handle:
        handle.write(f"instkit {__version__}, Python {platform.python_version()}, "
                     f"{platform.platform()}\n")
        handle.write(f"command: instkit {' '.join(argv or [])}\n\n")
        handle.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def report_internal_error(exc: BaseException, argv: Sequence[str] | None = None) -> None:
    """One line on stderr: what failed, and where its traceback was saved."""
    try:
        where = f"traceback saved to {save_traceback(exc, argv)}"
    except OSError as err:
        where = (f"the traceback could not be saved ({err.strerror}); set {CRASH_DIR_ENV} to a "
                 f"writable folder or {TRACEBACK_ENV}=1 to print it")
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"instkit: internal error (a bug in instkit, please report it): {_first_line(exc)}; "
               f"{where}", err=True)


def _user_os_error(exc: OSError) -> bool:
    return exc.errno in _USER_OS_ERRORS and (exc.filename is not None)


class _LazyGroup(click.Group):
    _argv: list[str] = []

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_verb_modules())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = _verb_modules().get(name)
        if module_name is None:
            return None
        return importlib.import_module(module_name).command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (KeyboardInterrupt, click.Abort):
            click.echo("instkit: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:
            # A verb that refuses its input with a plain ClickException: bad input, not findings.
            if exc.exit_code == EXIT_FINDINGS:
                exc.exit_code = EXIT_USAGE  # type: ignore[misc]
            raise
        except InstkitError as exc:
            click.echo(f"instkit: error: {exc}", err=True)
            ctx.exit(EXIT_USAGE)
        except OSError as exc:
            if not _user_os_error(exc):
                report_internal_error(exc, self._argv)
                ctx.exit(EXIT_INTERNAL)
            target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
            click.echo(f"instkit: error: {exc.strerror}: {target}", err=True)
            ctx.exit(EXIT_USAGE)
        except Exception as exc:  # noqa: BLE001 - every other exception is a bug: exit 3
            report_internal_error(exc, self._argv)
            ctx.exit(EXIT_INTERNAL)

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        self._argv = list(args if args is not None else sys.argv[1:])
        try:
            return super().main(args, *rest, **kwargs)
        except Exception as exc:  # noqa: BLE001 - raised outside a verb (e.g. while listing them)
            report_internal_error(exc, self._argv)
            sys.exit(EXIT_INTERNAL)


def _set_max_image_pixels(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        from instkit.sample import set_max_image_pixels

        set_max_image_pixels(value or None)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="instkit")
@click.option("--max-image-pixels", type=click.IntRange(0), default=None, expose_value=False,
              callback=_set_max_image_pixels, is_eager=True,
              help="Largest image (width x height) instkit decodes; 0 for no limit. Default: "
                   "$INSTKIT_MAX_IMAGE_PIXELS, else 178956970 (Pillow's decompression-bomb "
                   "limit).")
def cli() -> None:
    """instkit: instance-segmentation data with one object-row model."""


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so that temporary files are removed on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        pass
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="instkit")

"""Options shared by verbs, so one concept has one flag name everywhere.

Old spellings stay accepted as hidden aliases (not shown in ``--help``), so scripts keep working.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from instkit.io.files import json_safe

_F = TypeVar("_F", bound=Callable[..., Any])


class AliasOption(click.Option):
    """A ``click.Option`` whose ``hidden_aliases`` are accepted but left out of ``--help``."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = set(hidden_aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts, secondary = self.opts, self.secondary_opts
        self.opts = [o for o in opts if o not in self.hidden_aliases]
        self.secondary_opts = [o for o in secondary if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = opts, secondary


def score_threshold_option(default: float, help: str, aliases: tuple[str, ...] = ()) -> Callable[[_F], _F]:
    """``--score-threshold`` (old spellings in ``aliases`` still accepted)."""
    return click.option("--score-threshold", *aliases, "score_threshold", cls=AliasOption,
                        hidden_aliases=aliases, type=click.FloatRange(0, 1), default=default,
                        show_default=True, help=help)


def progress_option(function: _F) -> _F:
    """``--progress/--no-progress`` (``--quiet`` = ``--no-progress``); bars only on a terminal."""
    return click.option("--progress/--no-progress", " /--quiet", "progress", cls=AliasOption,
                        hidden_aliases=("--quiet",), default=True, show_default=True,
                        help="Progress bars on stderr (shown only when it is a terminal).")(function)


class _FormatChoice(click.Choice):
    """``text`` / ``json``; an old value (``table``) is read as ``text``."""

    legacy = {"table": "text"}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(self.legacy.get(value, value), param, ctx)


def format_option(function: _F) -> _F:
    """``--format text|json``: json writes one JSON document to stdout (nothing else on it)."""
    return click.option("--format", "output_format", type=_FormatChoice(["text", "json"]),
                        default="text", show_default=True,
                        help="Report as text, or as one JSON document on stdout.")(function)


def workers_option(function: _F) -> _F:
    """``--workers N``: processes (``--engine local``) or concurrent Ray tasks; ``None``: one
    per core."""
    return click.option("--workers", type=click.IntRange(min=1), default=None,
                        help="Processes (local) or concurrent Ray tasks for a sharded dataset; "
                        "default: one per core.")(function)


def engine_options(function: _F) -> _F:
    """``--engine local|ray`` and ``--address``: where the per-shard work of a sharded dataset
    runs (docs/scaling.md); unset, ``None`` (local)."""
    function = click.option("--address", default=None, metavar="ADDRESS",
                            help="Ray cluster to use (auto, or ray://host:10001); default: a "
                            "local Ray instance started for the job.")(function)
    return click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
                        help="Run per shard on this machine's processes (local, the default) or "
                        "on Ray Data (pip install 'instkit[ray]').")(function)


def echo_json(value: Any) -> None:
    """``value`` as JSON on stdout; non-finite numbers become ``null``."""
    click.echo(json.dumps(json_safe(value), indent=1, default=str, allow_nan=False))

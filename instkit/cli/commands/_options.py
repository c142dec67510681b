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


def echo_json(value: Any) -> None:
    """``value`` as JSON on stdout; non-finite numbers become ``null``."""
    click.echo(json.dumps(json_safe(value), indent=1, default=str, allow_nan=False))

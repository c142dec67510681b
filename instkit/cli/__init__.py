"""The ``instkit`` command line.

Each verb lives in its own module under ``instkit.cli.commands`` and exposes ``command`` (a click
command); the group finds them by name and imports a verb only when it runs, so
``instkit --help`` stays fast and a verb's heavy dependencies load only for that verb.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

from instkit import __version__
from instkit.errors import InstkitError

_COMMANDS_PACKAGE = "instkit.cli.commands"


def _verb_modules() -> dict[str, str]:
    package = importlib.import_module(_COMMANDS_PACKAGE)
    return {
        info.name.replace("_", "-"): f"{_COMMANDS_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    }


class _LazyGroup(click.Group):
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
        except InstkitError as exc:
            click.echo(f"instkit: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="instkit")
def cli() -> None:
    """instkit: instance-segmentation data with one object-row model."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="instkit")

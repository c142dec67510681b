"""The command line: every verb answers --help; the demo runs end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from instkit.cli import _verb_modules, cli


def test_top_level_help_lists_every_verb():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for verb in _verb_modules():
        assert verb in result.output


@pytest.mark.parametrize("verb", sorted(_verb_modules()))
def test_every_verb_has_help(verb):
    result = CliRunner().invoke(cli, [verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "instkit", "--version"], capture_output=True,
                            text=True, check=True)
    assert "instkit" in result.stdout


def test_unknown_verb_is_a_usage_error():
    result = CliRunner().invoke(cli, ["no-such-verb"])
    assert result.exit_code == 2

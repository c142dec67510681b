"""`instkit stats` shows a progress bar on a terminal only (issue 15)."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from instkit.cli import cli
from instkit.stats import compute_stats
from instkit.synthetic import make_samples


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("progress", "terminal", "shown"), [
    (True, True, True), (True, False, False), (False, True, False)])
def test_bar_only_on_a_terminal_when_asked(monkeypatch, progress, terminal, shown):
    samples = make_samples(3, seed=0, image_size=(32, 32))
    stderr = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    stats = compute_stats(samples, progress=progress)
    assert stats.num_images == 3
    assert ("stats:" in stderr.getvalue() and "/3" in stderr.getvalue()) is shown


def test_cli_progress_flags_leave_the_report_alone(tmp_path):
    from instkit.synthetic import write_dataset

    path = write_dataset(tmp_path / "d", 3, image_size=(32, 32))
    outputs = []
    for flag in ("--progress", "--no-progress"):
        result = CliRunner().invoke(cli, ["stats", str(path), "--format", "json", flag])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout))  # nothing but the report on stdout
    assert outputs[0] == outputs[1]
    assert outputs[0]["images"] == 3

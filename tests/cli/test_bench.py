"""``instkit bench``: runs scripts, refuses disagreeing outputs, writes the summary table."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from instkit.cli import cli

REPO = Path(__file__).resolve().parents[2]

FAKE = '''
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import main, result

def run(quick=False):
    rows = [{{"tool": "instkit", "seconds": 1.0}}, {{"tool": "peer", "seconds": 2.0}}]
    return result("{name}", rows, agree={agree}, quick=quick,
                  targets=[{{"claim": "speed (x)", "value": 2.0, "target": ">= 1", "met": True}}])

if __name__ == "__main__":
    main("{name}", run)
'''


def _folder(tmp_path: Path, **benches: bool) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    shutil.copy(REPO / "benchmarks" / "common.py", folder / "common.py")
    for name, agree in benches.items():
        (folder / f"bench_{name}.py").write_text(FAKE.format(name=name, agree=agree))
    return folder


def test_bench_runs_scripts_and_writes_the_summary(tmp_path):
    folder = _folder(tmp_path, alpha=True, beta=True)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written notes stay.\n")
    runner = CliRunner()
    listed = runner.invoke(cli, ["bench", "--dir", str(folder), "--list"])
    assert "alpha" in listed.output and "beta" in listed.output
    result = runner.invoke(cli, ["bench", "--dir", str(folder), "--doc", str(doc), "--quick"])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert "Hand-written notes stay." in text
    assert text.count("| alpha (quick) | speed (x) | 2 | >= 1 | yes | yes |") == 1
    # Running again replaces the generated block instead of appending a second one.
    runner.invoke(cli, ["bench", "--dir", str(folder), "--doc", str(doc), "--quick", "beta"])
    assert doc.read_text().count("<!-- bench:begin -->") == 1
    assert "alpha (quick)" not in doc.read_text()


def test_bench_fails_when_outputs_disagree(tmp_path):
    folder = _folder(tmp_path, wrong=False)
    result = CliRunner().invoke(cli, ["bench", "--dir", str(folder), "--quick",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "benchmark(s) failed: wrong" in result.output


def test_bench_rejects_unknown_names(tmp_path):
    folder = _folder(tmp_path, alpha=True)
    result = CliRunner().invoke(cli, ["bench", "--dir", str(folder), "nope"])
    assert result.exit_code == 2 and "unknown benchmark" in result.output


def test_collect_rebuilds_the_summary_without_running(tmp_path):
    folder = _folder(tmp_path, alpha=True)
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(cli, ["bench", "--dir", str(folder), "--out", str(out)]).exit_code == 0
    (folder / "bench_alpha.py").write_text("raise SystemExit(3)")  # would fail if it ran
    doc = tmp_path / "doc.md"
    result = runner.invoke(cli, ["bench", "--dir", str(folder), "--out", str(out), "--collect",
                                 "--doc", str(doc)])
    assert result.exit_code == 0, result.output
    assert "| alpha | speed (x) | 2 |" in doc.read_text()

"""Exit codes, decided in one place for every verb: 0 clean, 1 findings, 2 bad usage or input,
3 internal error (one line on stderr and the traceback saved to a file), never a raw traceback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from instkit.cli import EXIT_FINDINGS, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, _verb_modules, cli
from instkit.errors import FormatError


@pytest.fixture
def crash_dir(tmp_path, monkeypatch):
    folder = tmp_path / "crashes"
    monkeypatch.setenv("INSTKIT_CRASH_DIR", str(folder))
    return folder


def _run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args))


def test_help_documents_every_code():
    text = _run("--help").output
    for code in (EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL):
        assert re.search(rf"^\s+{code}\s+\w", text, re.MULTILINE), text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "exit codes" in readme.lower() and "INSTKIT_CRASH_DIR" in readme


def test_real_verbs_exit_0_1_2(tinycoco, tmp_path):
    ann = str(tinycoco["val_json"])
    assert _run("validate", ann).exit_code == EXIT_OK
    assert _run("stats", ann).exit_code == EXIT_OK
    document = json.loads(tinycoco["val_json"].read_text())
    document["annotations"][1]["id"] = document["annotations"][0]["id"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    assert _run("validate", str(broken)).exit_code == EXIT_FINDINGS
    # bad input: a file that is not what it should be, named on one line
    (tmp_path / "bad.json").write_text('{"images": [')
    for args in (["stats", str(tmp_path / "bad.json")],
                 ["show", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.png")],
                 ["convert", str(tmp_path / "bad.json"), str(tmp_path / "out"), "--to", "yolo"],
                 ["report", "dataset", str(tmp_path / "bad.json"), "-o", str(tmp_path / "r")]):
        result = _run(*args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert "instkit: error: invalid JSON at line" in result.output
        assert "Traceback" not in result.output
    # bad usage
    assert _run("stats", ann, "--format", "xml").exit_code == EXIT_USAGE
    assert _run("no-such-verb").exit_code == EXIT_USAGE


def test_a_path_that_cannot_be_written_is_bad_input_not_a_crash(tinycoco, tmp_path, crash_dir):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    result = _run("stats", str(tinycoco["val_json"]), "--plot", str(not_a_folder / "plot.png"))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "instkit: error:" in result.output and str(not_a_folder) in result.output
    assert not crash_dir.exists()


def test_stats_plot_over_its_input_is_refused(tinycoco, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_bytes(tinycoco["val_json"].read_bytes())
    result = _run("stats", str(ann), "--plot", str(ann))
    assert result.exit_code == EXIT_USAGE  # before: 0, and ann.json was a PNG
    assert "is the input" in result.output
    assert json.loads(ann.read_text())["images"]


def test_a_bug_exits_3_with_one_line_and_the_saved_traceback(tinycoco, crash_dir, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("instkit.stats.compute_stats", bug)
    result = _run("stats", str(tinycoco["val_json"]))
    assert result.exit_code == EXIT_INTERNAL, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("instkit: internal error") and "ZeroDivisionError: division by zero" in line
    [saved] = crash_dir.iterdir()
    assert str(saved) in line
    text = saved.read_text()
    assert "Traceback" in text and "def bug" not in text and "in bug" in text
    assert f"command: instkit stats {tinycoco['val_json']}" in text


@pytest.mark.parametrize("verb", sorted(_verb_modules()))
def test_every_verb_maps_errors_the_same_way(verb, crash_dir, monkeypatch):
    """The mapping lives in the group, so a verb (also one added later) cannot differ."""
    command = cli.get_command(click.Context(cli), verb)
    assert command is not None
    monkeypatch.setattr(command, "make_context",
                        lambda name, args, parent=None, **kw: click.Context(command, parent, name))
    for error, code in ((FormatError("not COCO"), EXIT_USAGE), (KeyError("k"), EXIT_INTERNAL),
                        (click.ClickException("refused"), EXIT_USAGE)):
        def fail(ctx, error=error):
            raise error

        monkeypatch.setattr(command, "invoke", fail)
        result = _run(verb)
        assert result.exit_code == code, (verb, error, result.output)
        assert "Traceback" not in result.output


_CRASHING_STATS = """
import sys
import instkit.stats
def bug(*args, **kwargs):
    raise MemoryError()
instkit.stats.compute_stats = bug
from instkit.cli import main
main(sys.argv[1:])
"""


def test_the_console_entry_point_prints_no_traceback(tinycoco, tmp_path):
    env = dict(os.environ, INSTKIT_CRASH_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", _CRASHING_STATS, "stats",
                             str(tinycoco["val_json"])], capture_output=True, text=True, env=env)
    assert result.returncode == EXIT_INTERNAL
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "MemoryError" in line and "Traceback" not in line
    [saved] = tmp_path.glob("instkit-crash-*.txt")
    assert str(saved) in line and "MemoryError" in saved.read_text()


def test_run_outputs_over_inputs_are_refused_before_any_work(tinycoco, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_bytes(tinycoco["val_json"].read_bytes())
    result = _run("eval", "--model", str(tmp_path / "no-model"), "--data", str(ann),
                  "--out", str(ann))
    assert result.exit_code == EXIT_USAGE and "is the input" in result.output
    (tmp_path / "run" / "last").mkdir(parents=True)
    result = _run("eval", "--model", str(tmp_path / "run"), "--data", str(ann),
                  "--out", str(tmp_path / "run" / "last" / "report.json"))
    assert result.exit_code == EXIT_USAGE and "inside the input folder" in result.output
    result = _run("train", "maskrcnn", "--train", str(ann), "--train-images", str(tmp_path),
                  "--out", str(tmp_path), "--tiny")
    assert result.exit_code == EXIT_USAGE and "is one of the inputs" in result.output
    result = _run("train", "maskrcnn", "--train", str(tmp_path / "run" / "summary.json"),
                  "--out", str(tmp_path / "run"), "--tiny")
    assert result.exit_code == EXIT_USAGE and "summary.json is the input" in result.output
    result = _run("demo", "--coco", str(ann), "--out", str(tmp_path), "--models", "")
    assert result.exit_code == EXIT_USAGE and "holds the input" in result.output
    assert json.loads(ann.read_text())["images"]


_SLOW_BENCH = """
import time, sys
print("started", flush=True)
time.sleep(30)
"""


def test_sigterm_unwinds_and_exits_130(tmp_path):
    import signal

    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "common.py").write_text("")
    (folder / "bench_slow.py").write_text(_SLOW_BENCH)
    child = subprocess.Popen([sys.executable, "-m", "instkit", "bench", "--dir", str(folder),
                              "--quick", "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the benchmark script, if still running
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, err
    assert "instkit: interrupted" in err and "Traceback" not in err

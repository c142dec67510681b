"""atomic_write: the umask applies, failures leave nothing, a killed writer's temporary file is
removed by the next write; refuse_overwrite: an output over an input is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from instkit.errors import InstkitError
from instkit.io.files import atomic_write, refuse_overwrite, remove_stale_temporaries


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_what_the_umask_gives(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "out.json") as handle:
            handle.write("{}")
    finally:
        os.umask(old)
    assert oct((tmp_path / "out.json").stat().st_mode & 0o777) == oct(expected)  # before: 0o600


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("failed mid-write")
    assert target.read_text() == "old"
    assert _temporaries(tmp_path) == []


_WRITER = """
import sys, time
from instkit.io.files import atomic_write
with atomic_write(sys.argv[1]) as handle:
    handle.write("partial")
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _start_writer(target: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    return child


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out.json"
    child = _start_writer(target)
    try:
        # another process writing the same file: its temporary file is not touched
        with atomic_write(target) as handle:
            handle.write("mine")
        assert len(_temporaries(tmp_path)) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [left] = _temporaries(tmp_path)
    assert left.startswith(".out.json.") and f".{child.pid}-" in left
    (tmp_path / ".other.json.12345-abcdef01.tmp").write_text("another target's")
    (tmp_path / ".out.json.notours.tmp").write_text("not our naming")
    with atomic_write(target) as handle:
        handle.write("again")
    assert target.read_text() == "again"
    assert _temporaries(tmp_path) == [".other.json.12345-abcdef01.tmp", ".out.json.notours.tmp"]


def test_old_unnamed_temporaries_go_only_when_an_hour_old(tmp_path):
    target = tmp_path / "out.json"
    fresh, old = tmp_path / ".out.json.k2j4_x9a.tmp", tmp_path / ".out.json.abcd1234.tmp"
    fresh.write_text("")
    old.write_text("")
    os.utime(old, (1_000_000, 1_000_000))
    assert remove_stale_temporaries(target) == [str(old)]
    assert fresh.exists()


def test_output_over_an_input_is_refused(tmp_path):
    data = tmp_path / "ann.json"
    data.write_text("{}")
    folder = tmp_path / "dataset"
    (folder / "images").mkdir(parents=True)
    with pytest.raises(InstkitError, match="is the input"):
        refuse_overwrite([data], [data])
    with pytest.raises(InstkitError, match="is the input"):
        refuse_overwrite([tmp_path / "x" / ".." / "ann.json"], [data])
    os.link(data, tmp_path / "hard.json")
    with pytest.raises(InstkitError, match="is the input"):
        refuse_overwrite([tmp_path / "hard.json"], [data])
    with pytest.raises(InstkitError, match="inside the input folder"):
        refuse_overwrite([folder / "images" / "plot.png"], [folder])
    with pytest.raises(InstkitError, match="holds the input"):
        refuse_overwrite([tmp_path], [data])
    refuse_overwrite([tmp_path / "plot.png", None], [data, folder, None])  # beside: fine


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path):
    from instkit.io.files import staged_folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f".out.{dead.pid}-0123abcd.tmp"  # what a killed writer left
    (killed / "images").mkdir(parents=True)
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "out") as folder:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("failed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()  # an empty folder may be the target
    with staged_folder(tmp_path / "out") as folder:
        (folder / "whole.txt").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "whole.txt").read_text() == "whole"
    with pytest.raises(InstkitError, match="not empty"), staged_folder(tmp_path / "out"):
        pass

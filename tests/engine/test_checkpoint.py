"""save_checkpoint: a checkpoint folder is always the old or the new one, complete, and what a
killed or interrupted save leaves behind is recovered or removed by the next save."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from instkit.categories import Categories  # noqa: E402
from instkit.engine import checkpoint as checkpoint_module  # noqa: E402
from instkit.engine import load_adapter, read_metadata, save_checkpoint  # noqa: E402
from instkit.engine.checkpoint import MODEL_FILE, resolve_checkpoint  # noqa: E402
from instkit.models import build_model  # noqa: E402


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    return build_model("maskrcnn", Categories.from_names(["a", "b"]), backbone="tiny")


def _dead_pid() -> int:
    """The id of a process that has ended (what a killed trainer leaves in its folder names)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _aux(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".last."))


def test_second_save_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path, adapter):
    run = tmp_path / "run"
    save_checkpoint(run / "last", adapter, state={"step": 1})
    save_checkpoint(run / "last", adapter, state={"step": 2})
    assert read_metadata(run / "last")["state"] == {"step": 2}
    assert _aux(run) == []


def test_a_failed_save_keeps_the_old_checkpoint_and_removes_its_temporary(tmp_path, adapter,
                                                                          monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run / "last", adapter, state={"step": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # The optimizer state is written last: the model file is already in the temporary folder.
    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    optimizer = torch.optim.SGD(adapter.model.parameters(), lr=0.1)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(run / "last", adapter, state={"step": 2}, optimizer=optimizer)
    assert read_metadata(run / "last")["state"] == {"step": 1}
    assert _aux(run) == []  # before: a .last.tmp-PID folder stayed


def test_an_interrupted_swap_is_recovered_by_readers_and_the_next_save(tmp_path, adapter):
    """What a crash between the two renames of the fallback path leaves: no last/, the old
    checkpoint renamed aside, the new one complete or not in its temporary folder."""
    run = tmp_path / "run"
    save_checkpoint(run / "last", adapter, state={"step": 1})
    pid = _dead_pid()
    os.replace(run / "last", run / f".last.old-{pid}")
    (run / f".last.tmp-{pid}").mkdir()
    (run / f".last.tmp-{pid}" / MODEL_FILE).write_bytes(b"half a file")

    # --resume reads run/last: it finds the old checkpoint (before: "model folder not found")
    assert resolve_checkpoint(run / "last") == run / f".last.old-{pid}"
    again, meta = load_adapter(run / "last")
    assert meta["state"] == {"step": 1}
    assert resolve_checkpoint(run) == run / f".last.old-{pid}"  # a run folder too

    save_checkpoint(run / "last", adapter, state={"step": 2})
    assert read_metadata(run / "last")["state"] == {"step": 2}
    assert _aux(run) == []


def test_stale_folders_of_ended_writers_are_removed_and_live_ones_kept(tmp_path, adapter):
    run = tmp_path / "run"
    run.mkdir()
    dead, live = _dead_pid(), os.getppid()
    for pid in (dead, live):
        (run / f".last.tmp-{pid}").mkdir()
        (run / f".last.tmp-{pid}" / MODEL_FILE).write_bytes(b"x" * 1000)
    (run / "unrelated.tmp-1").mkdir()
    save_checkpoint(run / "last", adapter)
    assert _aux(run) == [f".last.tmp-{live}"]  # another process may still be writing it
    assert (run / "unrelated.tmp-1").is_dir()
    shutil.rmtree(run / f".last.tmp-{live}")


def test_the_swap_is_one_exchange_where_the_system_has_it(tmp_path, adapter):
    run = tmp_path / "run"
    save_checkpoint(run / "last", adapter, state={"step": 1})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from_a").touch()
    if not checkpoint_module._exchange(a, b):
        pytest.skip("no atomic exchange on this system: the two-rename fallback is used")
    assert (b / "from_a").exists() and not (a / "from_a").exists()
    inode = (run / "last").stat().st_ino
    save_checkpoint(run / "last", adapter, state={"step": 2})
    assert (run / "last").stat().st_ino != inode
    assert read_metadata(run / "last")["state"] == {"step": 2}


def test_checkpoint_files_honour_the_umask(tmp_path, adapter):
    old = os.umask(0o027)
    try:
        folder = save_checkpoint(tmp_path / "last", adapter)
    finally:
        os.umask(old)
    assert oct(folder.stat().st_mode & 0o777) == oct(0o750)
    assert oct((folder / MODEL_FILE).stat().st_mode & 0o777) == oct(0o640)

"""CI smoke of the benchmark suite: every script's --quick run completes with agreeing outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_benchmark_quick_run_agrees(tmp_path, shared_data):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "instkit", "bench", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(p.stem[len("bench_"):] for p in (REPO / "benchmarks").glob("bench_*.py"))
    for name in names:
        payload = json.loads((out / f"{name}-quick.json").read_text())
        assert payload["agree"] is True, name
        assert payload["quick"] is True and payload["rows"], name

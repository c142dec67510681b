"""Shared helpers of the benchmark scripts.

Every script in this folder is ``bench_<name>.py`` and exposes ``run(quick: bool = False) -> dict``
returning :func:`result` output; run directly it prints the table and writes
``benchmarks/results/<name>.json``. Each script checks that instkit's outputs agree with the
peer's before it times anything (``agree`` in the result), measures both in the same run on the
same inputs, and reports ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# the small real COCO subset beside the checkout (../shared/data/tinycoco)
TINYCOCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinycoco"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def best_time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` runs of ``fn`` after ``warmup`` untimed runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def result(name: str, rows: list[dict[str, Any]], *, agree: bool, quick: bool,
           targets: list[dict[str, Any]] | None = None, notes: str = "") -> dict[str, Any]:
    """The JSON payload of one benchmark.

    ``rows``: one dict per (case, tool) with numeric metrics. ``targets``: one dict per claim,
    ``{"claim": str, "value": float, "target": str, "met": bool}``.
    """
    return {
        "name": name,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": quick,
        "agree": agree,
        "rows": rows,
        "targets": targets or [],
        "notes": notes,
    }


def format_table(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")
    for target in payload.get("targets", []):
        mark = "met" if target.get("met") else "NOT met"
        lines.append(f"\n- {target['claim']}: {cell(target['value'])} (target {target['target']}, {mark})")
    return "\n".join(lines)


def main(name: str, run: Callable[[bool], dict[str, Any]]) -> None:
    parser = argparse.ArgumentParser(description=f"instkit benchmark: {name}")
    parser.add_argument("--quick", action="store_true", help="small inputs, under a minute")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args()
    payload = run(args.quick)
    out = args.out or RESULTS_DIR / f"{name}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(format_table(payload))
    print(f"\nagree: {payload['agree']}   written: {out}")
    if not payload["agree"]:
        sys.exit(1)

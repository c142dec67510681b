"""Where per-shard work runs: ``run_tasks(fn, tasks, engine=..., workers=...)``.

- ``"local"``: processes on this machine (``workers`` of them; 1 runs in this process).
- ``"ray"``: Ray Data tasks, on the cluster at ``address`` (``"auto"``: the one this machine
  belongs to) or, without one, on a local Ray instance started for the job with ``workers``
  CPUs and shut down after it. A Ray instance already initialised in this process is used as it
  is (and left running).

Every engine returns the results in task order, so the reduce that follows sees the same input
whatever ran the map: the outputs do not depend on the engine or the number of workers. A task
that raises is re-raised here with its own error (and location), the first in task order.
Ray is imported only here, inside ``_run_ray``: ``pip install 'instkit[ray]'``.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

ENGINES = ("local", "ray")


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _guarded(fn: Callable[[Any], Any], task: Any) -> tuple[bool, Any]:
    """Run one task; its exception travels back as a value so the driver can raise it."""
    try:
        return True, fn(task)
    except Exception as exc:  # noqa: BLE001 - re-raised by the driver, in task order
        return False, exc


def _unwrap(results: Sequence[tuple[bool, Any]]) -> list[Any]:
    for ok, value in results:
        if not ok:
            raise value
    return [value for _, value in results]


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], *, engine: str = "local",
              workers: int | None = None, address: str | None = None,
              progress: bool = False, desc: str = "shards") -> list[Any]:
    """``[fn(task) for task in tasks]``, run by ``engine`` with ``workers`` processes.

    ``fn`` and the tasks must be picklable (``fn`` a module-level function)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    tasks = list(tasks)
    if engine == "ray":
        return _unwrap(_run_ray(fn, tasks, workers, address))
    workers = min(workers or default_workers(), max(1, len(tasks)))
    if workers == 1:
        iterator: Any = (_guarded(fn, task) for task in tasks)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(tasks), desc=desc, unit="shard", leave=False)
        return _unwrap(list(iterator))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_guarded, fn, task) for task in tasks]
        if progress:
            from concurrent.futures import as_completed

            from tqdm import tqdm

            for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="shard",
                          leave=False):
                pass
        return _unwrap([future.result() for future in futures])


def _ray_apply(fn: Callable[[Any], Any], row: dict[str, Any]) -> dict[str, Any]:
    """The Ray Data row function: unpickle the task, run it guarded, pickle the result."""
    task = pickle.loads(row["task"])
    return {"index": row["index"], "result": pickle.dumps(_guarded(fn, task))}


def _run_ray(fn: Callable[[Any], Any], tasks: list[Any], workers: int | None,
             address: str | None) -> list[tuple[bool, Any]]:
    from instkit.errors import require

    ray = require("ray", "ray")
    require("ray.data", "ray")
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines on stderr
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=workers or default_workers(), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        started = True
    try:
        if not tasks:
            return []
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        items = [{"index": i, "task": pickle.dumps(task)} for i, task in enumerate(tasks)]
        # One block per task, so each shard is its own Ray task; `workers` of them at a time.
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        compute = ray.data.TaskPoolStrategy(size=workers) if workers else None
        rows = dataset.map(functools.partial(_ray_apply, fn), compute=compute, num_cpus=1).take_all()
        rows.sort(key=lambda row: row["index"])
        if [row["index"] for row in rows] != list(range(len(tasks))):
            raise RuntimeError(f"Ray returned {len(rows)} results for {len(tasks)} tasks")
        return [pickle.loads(row["result"]) for row in rows]
    finally:
        if started:
            ray.shutdown()


__all__ = ["ENGINES", "default_workers", "run_tasks"]

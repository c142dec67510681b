"""Sharded datasets (docs/scaling.md): read a set of shards, write instkit's shard format, and
run ``validate`` / ``stats`` / ``convert`` per shard on this machine's processes or on Ray.

    shards = open_shards("sa1b/")                       # a folder of SA-1B-style .tar shards
    report = validate_shards(shards, engine="local", workers=8)
    stats, problems = stats_shards(shards, engine="ray", address="auto")

Nothing here imports Ray or fsspec until it is used (extras ``ray`` and ``shards``).
"""

from instkit.shards.dataset import (
    ShardError,
    ShardInfo,
    ShardSet,
    iter_tar,
    looks_sharded,
    open_shards,
    shard_document,
)
from instkit.shards.engine import ENGINES, run_tasks
from instkit.shards.jobs import (
    convert_shards,
    convert_to_shards,
    merge_stats,
    stats_shards,
    validate_shards,
)
from instkit.shards.write import write_shards

__all__ = ["ENGINES", "ShardError", "ShardInfo", "ShardSet", "convert_shards", "convert_to_shards",
           "iter_tar", "looks_sharded", "merge_stats", "open_shards", "run_tasks", "shard_document",
           "stats_shards", "validate_shards", "write_shards"]

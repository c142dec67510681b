"""Dataset operations: split, merge, filter and dedup COCO datasets (``instkit split|merge|
filter|dedup`` on the command line; docs/operations.md).

Each returns a result object with ``as_dict()`` (JSON-ready) and ``to_text()``, counts every
image and annotation it leaves out under a reason (``DropLog``), and writes through
``instkit.io.coco.write_coco`` (atomic, never over an input).
"""

from __future__ import annotations

from instkit.ops.common import DropLog, class_counts, parse_ratios
from instkit.ops.dedup import (
    DedupResult,
    dhash,
    duplicate_groups,
    find_duplicates,
    phash,
    remove_duplicates,
)
from instkit.ops.filter import FilterResult, drop_findings_in, filter_dataset
from instkit.ops.merge import MergeResult, copy_images, file_sha256, merge_datasets, write_merged
from instkit.ops.split import SplitResult, split_dataset, stratify, write_splits

__all__ = ["DedupResult", "DropLog", "FilterResult", "MergeResult", "SplitResult", "class_counts", "copy_images",
           "dhash", "drop_findings_in", "duplicate_groups", "file_sha256", "filter_dataset", "find_duplicates",
           "merge_datasets", "parse_ratios", "phash", "remove_duplicates", "split_dataset",
           "stratify", "write_merged", "write_splits"]

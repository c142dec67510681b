"""Property-based testing of instance-segmentation pipelines (public API).

- ``check_alignment`` / ``assert_aligned`` (``instkit.testing.alignment``): invariants of the
  object row, and probe images that check the transformed image agrees with the transformed rows,
  on any transform, with shrunk, reproducible failing examples.
- ``instkit.testing.strategies``: hypothesis strategies for polygons, RLEs, masks, Instances,
  Samples and whole COCO documents.

hypothesis is imported only when these are used (``pip install 'instkit[testing]'``).
"""

from instkit.testing.alignment import (  # numpy only; hypothesis is imported on use
    AlignmentReport,
    Violation,
    assert_aligned,
    check_alignment,
    find_violations,
    shrink,
)

__all__ = ["AlignmentReport", "Violation", "assert_aligned", "check_alignment", "find_violations",
           "shrink"]

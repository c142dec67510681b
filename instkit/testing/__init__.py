"""Property-based testing of instance-segmentation pipelines (public API).

- ``instkit.testing.strategies``: hypothesis strategies for polygons, RLEs, masks, Instances,
  Samples and whole COCO documents.

hypothesis is imported only when these are used (``pip install 'instkit[testing]'``).
"""

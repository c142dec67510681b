"""Readers and writers of dataset formats.

``instkit.io.open(path, format=None)`` reads any registered format (detected when not named);
``instkit.io.save(samples, path, format=...)`` writes one and returns counts of what the format
approximated or left out. The formats: ``instkit.io.registry.names()``; docs/formats.md.
"""

from instkit.io.coco import CocoDataset, CocoProblem, read_coco, write_coco
from instkit.io.registry import detect, formats, open, save

__all__ = ["CocoDataset", "CocoProblem", "detect", "formats", "open", "read_coco", "save",
           "write_coco"]

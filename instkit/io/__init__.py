"""Readers and writers of dataset formats."""

from instkit.io.coco import CocoDataset, CocoProblem, read_coco, write_coco

__all__ = ["CocoDataset", "CocoProblem", "read_coco", "write_coco"]

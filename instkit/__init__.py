"""instkit: instance-segmentation data with one object-row model.

``import instkit`` stays light (numpy, pycocotools); torch, albumentationsx, transformers,
datasets and hypothesis are imported by the submodules that need them.
"""

from instkit.categories import Categories, Category
from instkit.instances import Instances
from instkit.io.coco import CocoDataset, read_coco, write_coco
from instkit.masks import BitmapMask, Masks, PolygonMask, RLEMask
from instkit.sample import Drop, Sample, SampleMeta, load_image

__version__ = "0.1.0"

__all__ = [
    "BitmapMask",
    "Categories",
    "Category",
    "CocoDataset",
    "Drop",
    "Instances",
    "Masks",
    "PolygonMask",
    "RLEMask",
    "Sample",
    "SampleMeta",
    "load_image",
    "read_coco",
    "write_coco",
    "__version__",
]

"""Instance-bound augmentation: albumentationsx pipelines that take and return ``Sample`` s.

This is the only part of instkit that imports albumentationsx (AGPL-3.0-only or commercial);
nothing else in instkit imports it at module import time. Importing this package switches
albumentationsx's telemetry and update checks off for the whole process.

    from instkit.transforms import Augment
    from instkit.transforms.presets import train_default, yolo_seg, evaluation
"""

from instkit.transforms._albu import HueSaturationValue, Perspective
from instkit.transforms.augment import Augment

__all__ = ["Augment", "HueSaturationValue", "Perspective"]

"""Seeing the data: overlays (``instkit.viz.overlay``) and static HTML pages (``instkit.viz.pages``).

Overlays use numpy, OpenCV and Pillow only; the pages are self-contained files that open from
``file://`` with no server and no network.
"""

from instkit.viz.colors import class_color, instance_color, instance_colors
from instkit.viz.overlay import (
    draw_comparison,
    draw_evaluation,
    draw_instances,
    draw_sample,
    resize_to_fit,
    save_image,
)

__all__ = [
    "class_color",
    "draw_comparison",
    "draw_evaluation",
    "draw_instances",
    "draw_sample",
    "instance_color",
    "instance_colors",
    "resize_to_fit",
    "save_image",
]

"""Seeing the data: overlays (``instkit.viz.overlay``) and static HTML pages (``instkit.viz.pages``).

Overlays use numpy, OpenCV and Pillow only; the pages are self-contained files that open from
``file://`` with no server and no network.
"""

from instkit.viz.colors import class_color, instance_color, instance_colors
from instkit.viz.overlay import (
    EvalOutcome,
    draw_comparison,
    draw_evaluation,
    draw_instances,
    draw_sample,
    evaluation_outcome,
    resize_to_fit,
    save_image,
)

__all__ = [
    "EvalOutcome",
    "class_color",
    "draw_comparison",
    "draw_evaluation",
    "draw_instances",
    "draw_sample",
    "evaluation_outcome",
    "instance_color",
    "instance_colors",
    "resize_to_fit",
    "save_image",
]

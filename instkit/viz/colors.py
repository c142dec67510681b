"""Colours for overlays: hue by class, shade by instance, fixed colours for evaluation outcomes.

An instance's colour depends only on its ``(label, annotation id)``, so the same object keeps its
colour before and after a transform, in a thumbnail and in a detail view.
"""

from __future__ import annotations

import colorsys

import numpy as np

RGB = tuple[int, int, int]

# Evaluation outcomes (RGB): matched prediction, unmatched prediction, missed ground truth,
# ground truth that was found, and crowd ground truth (ignored by COCO matching).
TP_COLOR: RGB = (40, 200, 90)
FP_COLOR: RGB = (240, 50, 50)
FN_COLOR: RGB = (255, 190, 0)
MATCHED_GT_COLOR: RGB = (255, 255, 255)
IGNORED_COLOR: RGB = (160, 160, 160)

_GOLDEN = 0.6180339887498949


def class_hue(label: int) -> float:
    """Hue in ``[0, 1)`` of class ``label``: golden-ratio steps keep neighbouring labels apart."""
    return float((0.08 + int(label) * _GOLDEN) % 1.0)


def _mix(value: int) -> int:
    """A 64-bit integer hash (splitmix64's finaliser) so that nearby ids get unrelated shades."""
    z = (int(value) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def class_color(label: int) -> RGB:
    """The class's base colour (full shade), as used in legends and charts."""
    r, g, b = colorsys.hsv_to_rgb(class_hue(label), 0.75, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def instance_color(label: int, instance_id: int) -> RGB:
    """The colour of one instance: its class hue, a shade (saturation, value) from its id."""
    h = _mix(instance_id)
    saturation = 0.4 + 0.6 * ((h & 0xFFFF) / 0xFFFF)
    value = 0.55 + 0.45 * (((h >> 16) & 0xFFFF) / 0xFFFF)
    hue = (class_hue(label) + 0.1 * ((((h >> 32) & 0xFF) / 0xFF) - 0.5)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def instance_colors(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 RGB colours of instances given their labels and ids (both ``(N,)``)."""
    labels = np.asarray(labels).reshape(-1)
    ids = np.asarray(ids).reshape(-1)
    out = np.zeros((labels.size, 3), dtype=np.uint8)
    for i, (label, instance_id) in enumerate(zip(labels.tolist(), ids.tolist(), strict=True)):
        out[i] = instance_color(label, instance_id)
    return out


def hex_color(color: RGB | np.ndarray) -> str:
    r, g, b = (int(v) for v in color)
    return f"#{r:02x}{g:02x}{b:02x}"


def text_color_on(color: RGB | np.ndarray) -> RGB:
    """Black or white, whichever reads better on ``color`` (relative luminance)."""
    r, g, b = (int(v) for v in color)
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)

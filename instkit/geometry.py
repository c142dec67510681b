"""Polygon geometry helpers on top of shapely and OpenCV (pixel-edge coordinates, see masks.py)."""

from __future__ import annotations

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon


def bitmap_to_polygon_parts(
    bitmap: np.ndarray, offset: tuple[int, int] = (0, 0), tolerance: float = 0.0
) -> list[np.ndarray]:
    """Outer outlines of a crop-local mask as flat ``[x0, y0, ...]`` float64 parts.

    OpenCV traces the boundary pixels' centres; buffering that outline by half a pixel with
    mitred joins moves it onto the pixel edges, so pycocotools rasterises it back to (almost)
    the same pixels. Holes are not representable in COCO polygons and are filled.
    """
    binary = np.ascontiguousarray(bitmap, dtype=np.uint8)
    if binary.size == 0 or not binary.any():
        return []
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    y0, x0 = offset
    parts = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64) + 0.5
        points[:, 0] += x0
        points[:, 1] += y0
        if len(points) >= 3:
            shape = Polygon(points)
            if not shape.is_valid:
                shape = shapely.make_valid(shape)
        elif len(points) == 2:
            shape = LineString(points)
        else:
            shape = Point(points[0])
        outline = shape.buffer(0.5, cap_style="square", join_style="mitre", mitre_limit=2.0)
        if tolerance > 0:
            outline = outline.simplify(tolerance, preserve_topology=True)
        for polygon in getattr(outline, "geoms", [outline]):
            if not isinstance(polygon, Polygon) or polygon.is_empty:
                continue
            coords = np.asarray(polygon.exterior.coords, dtype=np.float64)[:-1]
            if len(coords) >= 3:
                parts.append(coords.reshape(-1))
    return parts


def polygon_part_area(part: np.ndarray) -> float:
    """Shoelace area of one flat polygon part (the area COCO's annotation tools record)."""
    xs, ys = part[0::2], part[1::2]
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2.0)

"""Overlays: instances drawn on their image with numpy, OpenCV and Pillow (no matplotlib).

Every function takes an ``(H, W, 3)`` uint8 RGB image and returns a new ``(h, w, 3)`` uint8 RGB
array; the input is never changed. ``max_side`` draws at a reduced size (image, masks, boxes and
keypoints scaled together) so thumbnails keep readable outlines and text.

- ``draw_instances``: each instance in its own colour (hue by class, shade by instance id), mask
  filled semi-transparently with a solid outline, box, class name and score, keypoints with the
  category's skeleton; crowd regions hatched and labelled "crowd".
- ``draw_evaluation``: predictions filled solid in green (true positive) or red (false positive),
  ground truth as dashed outlines (white when found, amber when missed, grey for crowd regions
  that COCO ignores), scores on the predictions and a legend with the counts.
- ``draw_comparison``: a sample before and after a transform side by side, same colours for the
  same annotation ids, with the drops the transform recorded.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from instkit.categories import Categories
from instkit.errors import ImageError, InstkitError
from instkit.evaluation import Match, match_image
from instkit.instances import Instances
from instkit.io.files import atomic_write
from instkit.masks import BitmapMask
from instkit.sample import Sample
from instkit.viz.colors import (
    FN_COLOR,
    FP_COLOR,
    IGNORED_COLOR,
    MATCHED_GT_COLOR,
    RGB,
    TP_COLOR,
    instance_colors,
    text_color_on,
)

__all__ = [
    "draw_comparison",
    "draw_evaluation",
    "draw_instances",
    "draw_sample",
    "resize_to_fit",
    "save_image",
]


# --- small helpers --------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ImageError(
            f"image must be (H, W, 3) uint8 RGB, got shape {array.shape} dtype {array.dtype}"
        )
    return array


def _scale_for(size: tuple[int, int], max_side: int | None) -> float:
    if max_side is None:
        return 1.0
    if max_side < 16:
        raise ValueError(f"max_side must be at least 16 pixels, got {max_side}")
    return min(1.0, max_side / max(size))


def resize_to_fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` (never enlarge) so its longer side is at most ``max_side``."""
    array = _check_image(image)
    scale = _scale_for(array.shape[:2], max_side)
    return _resize(array, scale)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image.copy()
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _defaults(shape: tuple[int, ...], line_width: int | None, font_size: int | None
              ) -> tuple[int, int]:
    side = max(shape[0], shape[1])
    lw = line_width if line_width is not None else max(1, round(side / 320))
    fs = font_size if font_size is not None else int(min(22, max(11, round(side / 42))))
    return lw, fs


@functools.lru_cache(maxsize=16)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


@dataclass
class _Label:
    text: str
    x: float
    y: float
    color: RGB


def _draw_labels(canvas: np.ndarray, labels: list[_Label], font_size: int) -> np.ndarray:
    """Text boxes in the label colour just above (or inside, at the top edge) their anchor."""
    if not labels:
        return canvas
    from PIL import Image, ImageDraw

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = _font(font_size)
    h, w = canvas.shape[:2]
    pad = max(1, font_size // 6)
    placed: list[tuple[int, int, int, int]] = []
    for label in labels:
        left, top, right, bottom = draw.textbbox((0, 0), label.text, font=font)
        tw, th = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
        x = int(min(max(0, label.x), max(0, w - tw)))
        # Above the anchor, else just below it, then further down, avoiding earlier labels.
        candidates = [int(label.y - th)] + [int(label.y + k * th) for k in range(4)]
        candidates = [min(max(0, c), max(0, h - th)) for c in candidates]
        y = int(candidates[0])
        for c in candidates:
            if not any(x < px1 and px0 < x + tw and c < py1 and py0 < c + th
                       for px0, py0, px1, py1 in placed):
                y = int(c)
                break
        placed.append((x, y, x + tw, y + th))
        draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=label.color)
        draw.text((x + pad - left, y + pad - top), label.text, font=font,
                  fill=text_color_on(label.color))
    return np.asarray(picture).copy()


def _scaled_crop(item: BitmapMask, scale: float, canvas_shape: tuple[int, ...]
                 ) -> tuple[np.ndarray, int, int] | None:
    """A crop-local mask resampled to the canvas scale: ``(bool crop, y0, x0)`` or ``None``."""
    bitmap = item.bitmap
    if bitmap.size == 0 or not bitmap.any():
        return None
    y0, x0 = item.offset
    if scale != 1.0:
        bh, bw = bitmap.shape
        ny0, nx0 = math.floor(y0 * scale), math.floor(x0 * scale)
        ny1 = max(ny0 + 1, math.ceil((y0 + bh) * scale))
        nx1 = max(nx0 + 1, math.ceil((x0 + bw) * scale))
        resized = cv2.resize(bitmap.astype(np.uint8) * 255, (nx1 - nx0, ny1 - ny0),
                             interpolation=cv2.INTER_AREA)
        crop = resized >= 128
        if not crop.any():  # thinner than a pixel at this scale: keep its strongest pixel
            crop = resized == resized.max()
        bitmap, y0, x0 = crop, ny0, nx0
    h, w = canvas_shape[:2]
    bh, bw = bitmap.shape
    if y0 >= h or x0 >= w or y0 + bh <= 0 or x0 + bw <= 0:
        return None
    top, left = max(0, -y0), max(0, -x0)
    bitmap = bitmap[top : min(bh, h - y0), left : min(bw, w - x0)]
    return np.ascontiguousarray(bitmap), y0 + top, x0 + left


def _mask_crops(instances: Instances, scale: float, canvas_shape: tuple[int, ...]
                ) -> list[tuple[np.ndarray, int, int] | None]:
    if instances.masks is None:
        return [None] * len(instances)
    items = instances.masks.to_bitmaps().items
    return [_scaled_crop(item, scale, canvas_shape) for item in items]  # type: ignore[arg-type]


def _fill(canvas: np.ndarray, crop: tuple[np.ndarray, int, int], color: RGB, alpha: float,
          hatch: int = 0) -> None:
    bitmap, y0, x0 = crop
    region = canvas[y0 : y0 + bitmap.shape[0], x0 : x0 + bitmap.shape[1]]
    paint = np.asarray(color, dtype=np.float32)
    if hatch:
        # Diagonal stripes in the full colour, a faint tint between them.
        yy, xx = np.mgrid[y0 : y0 + bitmap.shape[0], x0 : x0 + bitmap.shape[1]]
        stripes = bitmap & (((xx + yy) % hatch) < max(1, hatch // 3))
        between = bitmap & ~stripes
        region[stripes] = paint.astype(np.uint8)
        region[between] = (region[between] * (1 - alpha * 0.4) + paint * alpha * 0.4
                           ).astype(np.uint8)
        return
    selected = region[bitmap].astype(np.float32)
    region[bitmap] = (selected * (1 - alpha) + paint * alpha + 0.5).astype(np.uint8)


def _contours(crop: tuple[np.ndarray, int, int]) -> Any:
    bitmap, y0, x0 = crop
    padded = np.pad(bitmap.astype(np.uint8), 1)
    contours, _ = cv2.findContours(padded, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE,
                                   offset=(x0 - 1, y0 - 1))
    return contours


def _outline(canvas: np.ndarray, crop: tuple[np.ndarray, int, int], color: RGB, width: int
             ) -> None:
    cv2.drawContours(canvas, _contours(crop), -1, color, width, lineType=cv2.LINE_8)


def _dashed_outline(canvas: np.ndarray, crop: tuple[np.ndarray, int, int], color: RGB,
                    width: int, dash: int, gap: int) -> None:
    """Dashes along the mask boundary (on its boundary pixels) with a dark edge to stand out."""
    segments = []
    period = dash + gap
    for contour in _contours(crop):
        points = contour.reshape(-1, 2)
        if len(points) <= period:
            segments.append(points)
            continue
        for start in range(0, len(points), period):
            piece = points[start : start + dash + 1]
            if len(piece) >= 2:
                segments.append(piece)
    if not segments:
        return
    dark = (20, 20, 20)
    cv2.polylines(canvas, segments, False, dark, width + 2, lineType=cv2.LINE_8)
    cv2.polylines(canvas, segments, False, color, width, lineType=cv2.LINE_8)


def _box(canvas: np.ndarray, box: np.ndarray, scale: float, color: RGB, width: int) -> None:
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        return
    p0 = (int(math.floor(x0)), int(math.floor(y0)))
    p1 = (max(p0[0], int(math.ceil(x1)) - 1), max(p0[1], int(math.ceil(y1)) - 1))
    cv2.rectangle(canvas, p0, p1, color, width, lineType=cv2.LINE_8)


def _keypoints(canvas: np.ndarray, points: np.ndarray, skeleton: tuple[tuple[int, int], ...],
               scale: float, color: RGB, width: int) -> None:
    """``points`` ``(K, 3)`` x, y, visibility. Skeleton edges are COCO's 1-based pairs."""
    k = points.shape[0]
    xy = points[:, :2] * scale
    labelled = points[:, 2] > 0
    for a, b in skeleton:
        i, j = a - 1, b - 1
        if 0 <= i < k and 0 <= j < k and labelled[i] and labelled[j]:
            p = (int(round(xy[i, 0])), int(round(xy[i, 1])))
            q = (int(round(xy[j, 0])), int(round(xy[j, 1])))
            cv2.line(canvas, p, q, (20, 20, 20), width + 2, lineType=cv2.LINE_AA)
            cv2.line(canvas, p, q, color, width, lineType=cv2.LINE_AA)
    radius = max(2, width + 1)
    for index in np.flatnonzero(labelled):
        centre = (int(round(xy[index, 0])), int(round(xy[index, 1])))
        cv2.circle(canvas, centre, radius + 1, (20, 20, 20), -1, lineType=cv2.LINE_AA)
        if points[index, 2] >= 2:
            cv2.circle(canvas, centre, radius, color, -1, lineType=cv2.LINE_AA)
        else:  # labelled but not visible: hollow
            cv2.circle(canvas, centre, radius, (255, 255, 255), -1, lineType=cv2.LINE_AA)
            cv2.circle(canvas, centre, max(1, radius - 2), (20, 20, 20), -1,
                       lineType=cv2.LINE_AA)


def _rgb(value: np.ndarray) -> RGB:
    return int(value[0]), int(value[1]), int(value[2])


def _class_name(categories: Categories | None, label: int) -> str:
    if categories is not None and 0 <= label < len(categories):
        return categories[label].name
    return f"class {label}"


def _skeleton(categories: Categories | None, label: int) -> tuple[tuple[int, int], ...]:
    if categories is not None and 0 <= label < len(categories):
        return categories[label].skeleton
    return ()


def _alphas(crops: list[tuple[np.ndarray, int, int] | None], canvas_shape: tuple[int, ...],
            alpha: float) -> list[float]:
    """Fill opacity per mask: halved for masks covering over a quarter of the image, so that
    a table or a wall does not hide the objects on it."""
    total = float(canvas_shape[0] * canvas_shape[1])
    return [alpha if crop is None or np.count_nonzero(crop[0]) < 0.25 * total else alpha * 0.5
            for crop in crops]


def _area_order(instances: Instances) -> np.ndarray:
    """Draw order: large objects first so small ones stay visible on top."""
    boxes = instances.boxes
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.argsort(-np.nan_to_num(areas), kind="stable")


# --- public drawing functions ---------------------------------------------------------------


def draw_instances(
    image: np.ndarray,
    instances: Instances,
    categories: Categories | None = None,
    *,
    max_side: int | None = None,
    alpha: float = 0.45,
    masks: bool = True,
    boxes: bool = True,
    labels: bool = True,
    keypoints: bool = True,
    colors: np.ndarray | None = None,
    line_width: int | None = None,
    font_size: int | None = None,
) -> np.ndarray:
    """Draw ``instances`` on ``image``; returns a new ``(h, w, 3)`` uint8 RGB array.

    Colours come from ``(label, id)`` (``instkit.viz.colors.instance_colors``) unless ``colors``
    gives an ``(N, 3)`` uint8 array. Crowd instances are hatched and labelled "crowd". Labels
    read "name score" when the instances carry scores.
    """
    array = _check_image(image)
    if tuple(array.shape[:2]) != instances.image_size:
        raise InstkitError(
            f"image is {array.shape[0]}x{array.shape[1]} but the instances are for "
            f"{instances.image_size[0]}x{instances.image_size[1]} (HxW)"
        )
    scale = _scale_for(instances.image_size, max_side)
    canvas = _resize(array, scale)
    lw, fs = _defaults(canvas.shape, line_width, font_size)
    n = len(instances)
    palette = instance_colors(instances.labels, instances.ids) if colors is None else colors
    if palette.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3), got {palette.shape}")
    crops: list[tuple[np.ndarray, int, int] | None] = (
        _mask_crops(instances, scale, canvas.shape) if masks else [None] * n)
    rgb = [_rgb(palette[i]) for i in range(n)]
    order = _area_order(instances)
    hatch = max(6, 4 * lw)
    opacity = _alphas(crops, canvas.shape, alpha)
    for i in order:
        crop = crops[i]
        if crop is not None:
            _fill(canvas, crop, rgb[i], opacity[i], hatch if instances.iscrowd[i] else 0)
    texts: list[_Label] = []
    for i in order:
        color = rgb[i]
        crop = crops[i]
        if crop is not None:
            _outline(canvas, crop, color, lw)
        if boxes:
            _box(canvas, instances.boxes[i], scale, color, max(1, lw - 1) if crop else lw)
        if keypoints and instances.keypoints is not None:
            label = int(instances.labels[i])
            _keypoints(canvas, instances.keypoints[i], _skeleton(categories, label), scale,
                       color, lw)
        if labels:
            text = _class_name(categories, int(instances.labels[i]))
            if instances.iscrowd[i]:
                text += " crowd"
            if instances.scores is not None:
                text += f" {float(instances.scores[i]):.2f}"
            x0, y0 = (float(v) * scale for v in instances.boxes[i][:2])
            texts.append(_Label(text, x0, y0, color))
    return _draw_labels(canvas, texts, fs)


def draw_sample(sample: Sample, categories: Categories | None = None, **options: Any
                ) -> np.ndarray:
    """``draw_instances`` on a sample's image; categories default to ``sample.meta.categories``."""
    return draw_instances(sample.image, sample.instances,
                          categories if categories is not None else sample.meta.categories,
                          **options)


def _legend(canvas: np.ndarray, items: list[tuple[str, RGB]], font_size: int) -> np.ndarray:
    """A strip under ``canvas`` with coloured swatches and their captions."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    height = font_size * 2
    strip = Image.new("RGB", (canvas.shape[1], height), (32, 32, 36))
    draw = ImageDraw.Draw(strip)
    x = font_size // 2
    for text, color in items:
        draw.rectangle((x, height // 4, x + font_size - 1, height // 4 + font_size - 1), fill=color)
        x += font_size + font_size // 3
        draw.text((x, height // 2), text, font=font, fill=(235, 235, 235), anchor="lm")
        x += int(draw.textlength(text, font=font)) + font_size
    return np.concatenate([canvas, np.asarray(strip)], axis=0)


def draw_evaluation(
    image: np.ndarray,
    ground_truth: Instances,
    predictions: Instances,
    categories: Categories | None = None,
    *,
    iou_threshold: float = 0.5,
    iou_type: str = "segm",
    score_threshold: float = 0.0,
    outcome: Match | None = None,
    max_side: int | None = None,
    alpha: float = 0.5,
    legend: bool = True,
    labels: bool = True,
    line_width: int | None = None,
    font_size: int | None = None,
) -> np.ndarray:
    """Predictions against ground truth at ``iou_threshold``; returns ``(h, w', 3)`` uint8 RGB.

    Predicted masks are filled in one solid colour per outcome (green TP, red FP), each labelled
    with its class and score; ground truth is drawn as dashed outlines (white when found, amber
    when missed, grey for crowd regions). ``legend`` adds a strip below with the counts.
    ``outcome`` reuses a match made by ``instkit.evaluation.match_image`` (the one matcher;
    its ``predictions`` are the ones drawn).
    """
    array = _check_image(image)
    if tuple(array.shape[:2]) != ground_truth.image_size:
        raise InstkitError(
            f"image is {array.shape[0]}x{array.shape[1]} but the ground truth is for "
            f"{ground_truth.image_size[0]}x{ground_truth.image_size[1]} (HxW)"
        )
    if predictions.image_size != ground_truth.image_size:
        raise InstkitError(
            f"predictions are for image size {predictions.image_size}, the ground truth for "
            f"{ground_truth.image_size}"
        )
    if outcome is None:
        outcome = match_image(ground_truth, predictions, iou_threshold=iou_threshold,
                              iou_type=iou_type, score_threshold=score_threshold)
    preds = outcome.predictions if outcome.predictions is not None else predictions
    scale = _scale_for(ground_truth.image_size, max_side)
    canvas = _resize(array, scale)
    lw, fs = _defaults(canvas.shape, line_width, font_size)
    pred_colors = [TP_COLOR if tp else IGNORED_COLOR if ignored else FP_COLOR
                   for tp, ignored in zip(outcome.pred_matched, outcome.pred_ignored, strict=True)]
    pred_crops = _mask_crops(preds, scale, canvas.shape)
    # Low scores first, so the most confident predictions end on top.
    order = np.arange(len(preds))[::-1]
    opacity = _alphas(pred_crops, canvas.shape, alpha)
    for p in order:
        crop = pred_crops[p]
        if crop is not None:
            _fill(canvas, crop, pred_colors[p], opacity[p])
    for p in order:
        crop = pred_crops[p]
        if crop is not None:
            _outline(canvas, crop, pred_colors[p], max(1, lw - 1))
        elif iou_type == "bbox" or preds.masks is None:
            _box(canvas, preds.boxes[p], scale, pred_colors[p], lw)
    gt_crops = _mask_crops(ground_truth, scale, canvas.shape)
    dash, gap = max(5, 4 * lw), max(5, 2 * lw + 4)
    texts: list[_Label] = []
    for g in _area_order(ground_truth):
        if ground_truth.iscrowd[g]:
            color = IGNORED_COLOR
        elif outcome.gt_matched[g]:
            color = MATCHED_GT_COLOR
        else:
            color = FN_COLOR
        crop = gt_crops[g]
        if crop is not None and iou_type == "segm":
            _dashed_outline(canvas, crop, color, lw + (0 if outcome.gt_matched[g] else 1), dash,
                            gap)
        else:
            _dashed_box(canvas, ground_truth.boxes[g], scale, color, lw, dash)
        if not outcome.gt_matched[g] and not ground_truth.iscrowd[g]:
            x0, y1 = float(ground_truth.boxes[g][0]) * scale, float(ground_truth.boxes[g][3])
            name = _class_name(categories, int(ground_truth.labels[g]))
            texts.append(_Label(f"missed {name}", x0, y1 * scale + fs * 1.6, FN_COLOR))
    for p in range(len(preds)):
        name = _class_name(categories, int(preds.labels[p]))
        score = "" if preds.scores is None else f" {float(preds.scores[p]):.2f}"
        x0, y0 = (float(v) * scale for v in preds.boxes[p][:2])
        texts.append(_Label(f"{name}{score}", x0, y0, pred_colors[p]))
    if labels:
        canvas = _draw_labels(canvas, texts, fs)
    if legend:
        canvas = _legend(canvas, [
            (f"TP {outcome.tp}", TP_COLOR),
            (f"FP {outcome.fp}", FP_COLOR),
            (f"FN {outcome.fn}", FN_COLOR),
            (f"GT found {int((outcome.gt_matched & ~outcome.gt_ignored).sum())}", MATCHED_GT_COLOR),
            (f"IoU {outcome.iou_threshold:g}", (32, 32, 36)),
        ], max(11, fs - 2))
    return canvas


def _dashed_box(canvas: np.ndarray, box: np.ndarray, scale: float, color: RGB, width: int,
                dash: int) -> None:
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    if x1 <= x0 or y1 <= y0:
        return
    corners = [(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1), (x0, y0)]
    segments = []
    for (ax, ay), (bx, by) in zip(corners[:-1], corners[1:], strict=False):
        length = max(abs(bx - ax), abs(by - ay))
        steps = np.arange(0.0, length, dash * 1.5)
        for s in steps:
            t0, t1 = s / max(length, 1), min(1.0, (s + dash) / max(length, 1))
            segments.append(np.array([[ax + (bx - ax) * t0, ay + (by - ay) * t0],
                                      [ax + (bx - ax) * t1, ay + (by - ay) * t1]],
                                     dtype=np.int32))
    if segments:
        cv2.polylines(canvas, segments, False, (20, 20, 20), width + 2)
        cv2.polylines(canvas, segments, False, color, width)


def _caption(width: int, text: str, font_size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    height = int(font_size * 1.9)
    strip = Image.new("RGB", (width, height), (32, 32, 36))
    draw = ImageDraw.Draw(strip)
    draw.text((font_size // 2, height // 2), text, font=_font(font_size), fill=(240, 240, 240),
              anchor="lm")
    return np.asarray(strip)


def _drop_summary(before: Sample, after: Sample) -> list[str]:
    earlier = before.meta.drops
    drops = after.meta.drops
    if drops[: len(earlier)] == earlier:
        drops = drops[len(earlier):]
    counts = Counter(d.reason for d in drops)
    return [f"{reason} x{count}" for reason, count in counts.most_common()]


def draw_comparison(
    before: Sample,
    after: Sample,
    categories: Categories | None = None,
    *,
    height: int = 480,
    titles: tuple[str, str] = ("before", "after"),
    **options: Any,
) -> np.ndarray:
    """``before`` and ``after`` side by side at the same ``height``; returns uint8 RGB.

    Both panels colour an instance by ``(label, annotation id)``, so an object has the same colour
    in both; the caption above ``after`` lists what the transform dropped and why.
    """
    if height < 32:
        raise ValueError(f"height must be at least 32 pixels, got {height}")
    cats = categories if categories is not None else (
        before.meta.categories or after.meta.categories)
    panels = []
    for sample, title in ((before, titles[0]), (after, titles[1])):
        h, w = sample.image_size
        scale = height / h
        image = sample.image
        instances = sample.instances
        if scale > 1:  # enlarge first so outlines and text stay crisp
            size = (max(1, round(w * scale)), height)
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            instances = _scale_instances(instances, (height, size[0]), scale)
            drawn = draw_instances(image, instances, cats, **options)
        else:
            drawn = draw_instances(image, instances, cats, max_side=max(16, round(max(h, w) * scale)),
                                   **options)
        if drawn.shape[0] != height:
            drawn = cv2.resize(drawn, (drawn.shape[1], height), interpolation=cv2.INTER_AREA)
        caption = f"{title}: {w}x{h}, {len(sample.instances)} instances"
        if sample is after:
            lost = _drop_summary(before, after)
            if lost:
                caption += "; dropped " + ", ".join(lost)
        fs = int(min(18, max(11, height // 32)))
        panels.append(np.concatenate([_caption(drawn.shape[1], caption, fs), drawn], axis=0))
    gap = np.full((panels[0].shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)


def _scale_instances(instances: Instances, size: tuple[int, int], scale: float) -> Instances:
    """The instances enlarged by ``scale`` onto an image of ``size`` (for drawing only)."""
    from instkit.masks import Masks, tight_bitmap

    masks = None
    if instances.masks is not None:
        items = []
        for item in instances.masks.to_bitmaps().items:
            assert isinstance(item, BitmapMask)
            crop = _scaled_crop(item, scale, (size[0], size[1]))
            if crop is None:
                items.append(BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0)))
            else:
                items.append(tight_bitmap(crop[0], (crop[1], crop[2])))
        masks = Masks(items, size)
    keypoints = None
    if instances.keypoints is not None:
        keypoints = instances.keypoints.copy()
        keypoints[:, :, :2] *= scale
    return instances.replace(image_size=size, boxes=instances.boxes * scale, masks=masks,
                             keypoints=keypoints)


def save_image(image: np.ndarray, path: str | os.PathLike[str], *, quality: int = 88) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB array as PNG or JPEG (by suffix), atomically."""
    from PIL import Image

    array = _check_image(image)
    target = Path(path)
    suffix = target.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    if suffix not in formats:
        raise InstkitError(f"cannot tell the image format of {target}: use .png, .jpg or .webp")
    options: dict[str, Any] = {"quality": quality} if formats[suffix] != "PNG" else {}
    with atomic_write(target, "wb") as handle:
        Image.fromarray(array).save(handle, format=formats[suffix], **options)
    readable_by_all(target)
    return target


def readable_by_all(path: str | os.PathLike[str]) -> None:
    """Give a file written through a private temporary file the usual mode (0666 - umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)

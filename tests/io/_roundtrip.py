"""Shared helpers of the COCO -> X -> COCO round-trip tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from instkit.sample import Sample


def by_annotation(samples: Any) -> dict[int, tuple[Sample, int]]:
    out = {}
    for sample in samples:
        for row, ann_id in enumerate(sample.instances.ids.tolist()):
            out[ann_id] = (sample, row)
    return out


def mask_iou(a: Sample, i: int, b: Sample, j: int) -> float:
    ra = a.instances.masks[i].to_rle()
    rb = b.instances.masks[j].to_rle()
    return float(np.asarray(mask_utils.iou(ra, rb, [0])).reshape(-1)[0])

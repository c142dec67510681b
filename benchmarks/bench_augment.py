"""instkit.transforms.Augment vs the same raw albumentationsx Compose, on 640x640 images.

Both run the same transforms with the same per-call seeds on the same samples (20 instances
each); outputs must agree (identical images) before anything is timed. Reported: images/s,
instkit's overhead, and the mean IoU between each output box and its mask's tight box.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import main, result  # noqa: E402

from instkit.sample import Sample  # noqa: E402
from instkit.synthetic import make_sample  # noqa: E402


def _samples(count: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    while len(out) < count:
        sample = make_sample(rng, len(out) + 1, image_size=(640, 640), max_instances=40,
                             crowd_probability=0.0)
        if len(sample.instances) >= 20:
            out.append(sample.replace(instances=sample.instances[:20]))
    return out


def _box_iou(boxes: np.ndarray, tight: np.ndarray) -> np.ndarray:
    x0 = np.maximum(boxes[:, 0], tight[:, 0])
    y0 = np.maximum(boxes[:, 1], tight[:, 1])
    x1 = np.minimum(boxes[:, 2], tight[:, 2])
    y1 = np.minimum(boxes[:, 3], tight[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    return inter / np.maximum(area(boxes) + area(tight) - inter, 1e-9)


def _raw_call(compose: Any, sample: Sample, invocation_seed: int) -> dict[str, Any]:
    inst = sample.instances
    dense = inst.masks.to_dense().view(np.uint8)
    boxes = inst.masks.boxes()
    instances = [{"mask": dense[i], "bbox": boxes[i], "bbox_labels": {"label": int(inst.labels[i])}}
                 for i in range(len(inst))]
    return compose(image=sample.image, instances=instances, invocation_seed=invocation_seed)


def run(quick: bool = False) -> dict[str, Any]:
    from instkit.masks import Masks
    from instkit.transforms import Augment
    from instkit.transforms._albu import A

    samples = _samples(4 if quick else 16)
    repeats = 1 if quick else 3
    pipelines = {
        "flip/crop/rotate": [A.HorizontalFlip(p=0.5), A.RandomCrop(height=512, width=512, p=1.0),
                             A.Affine(rotate=(-30, 30), p=1.0)],
        "yolo-seg (no mixing partners)": [
            A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), shear=(-2, 2),
                     translate_percent=(-0.05, 0.05), p=0.5),
            A.HorizontalFlip(p=0.5),
            A.HueSaturationValue(hue_shift_range=(-15, 15), sat_shift_range=(-40, 40),
                                 val_shift_range=(-25, 25), p=1.0),
            A.RandomBrightnessContrast(brightness_range=(-0.2, 0.2), contrast_range=(-0.2, 0.2),
                                       p=0.5)],
    }
    rows, targets, agree = [], [], True
    for name, transforms in pipelines.items():
        augment = Augment(transforms, seed=0)
        raw = A.Compose(transforms, bbox_params=A.BboxParams(coord_format="pascal_voc",
                                                             label_fields=["label"]),
                        instance_binding=["masks", "bboxes"], seed=0, telemetry=False)
        seeds = [int(np.random.default_rng(s).integers(0, 2**31 - 1)) for s in range(len(samples))]
        for sample in samples:
            sample.image  # noqa: B018  (decode once, outside the timing)
        ours = [augment(s, seed=i) for i, s in enumerate(samples)]
        theirs = [_raw_call(raw, s, seeds[i]) for i, s in enumerate(samples)]
        agree &= all(np.array_equal(o.image, t["image"]) for o, t in zip(ours, theirs, strict=True))
        our_iou = np.concatenate([_box_iou(o.instances.boxes, o.instances.masks.boxes())
                                  for o in ours if len(o.instances)])
        raw_iou = []
        for t in theirs:
            if t["instances"]:
                masks = Masks.from_dense(np.stack([i["mask"] for i in t["instances"]]))
                boxes = np.stack([i["bbox"] for i in t["instances"]]).astype(np.float32)
                keep = masks.area() > 0
                raw_iou.append(_box_iou(boxes[keep], masks.boxes()[keep]))
        raw_iou_all = np.concatenate(raw_iou)
        timings = {}
        for tool, fn in (("instkit", lambda a=augment: [a(s, seed=i) for i, s in enumerate(samples)]),
                         ("albumentationsx", lambda r=raw, z=seeds: [_raw_call(r, s, z[i])
                                                              for i, s in enumerate(samples)])):
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
            timings[tool] = best
        for tool, iou in (("instkit", our_iou), ("albumentationsx", raw_iou_all)):
            rows.append({"pipeline": name, "tool": tool,
                         "images_per_s": len(samples) / timings[tool],
                         "mean_box_mask_iou": float(iou.mean()),
                         "min_box_mask_iou": float(iou.min())})
        overhead = timings["instkit"] / timings["albumentationsx"] - 1.0
        targets.append({"claim": f"{name}: instkit overhead over raw albumentationsx",
                        "value": overhead, "target": "<= 0.15", "met": overhead <= 0.15})
        targets.append({"claim": f"{name}: instkit mean box-vs-mask IoU", "value": float(our_iou.mean()),
                        "target": "== 1.0", "met": bool(np.allclose(our_iou, 1.0))})
    return result("augment", rows, agree=agree, quick=quick, targets=targets,
                  notes="640x640, 20 instances per image; same transforms and invocation seeds; "
                        "instkit includes densify, tight bitmaps, drop records")


if __name__ == "__main__":
    main("augment", run)

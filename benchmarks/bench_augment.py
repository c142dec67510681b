"""instkit.transforms.Augment vs the same raw albumentationsx Compose, on 640x640 images.

Both run the same transforms with the same per-call seeds on the same samples (20 instances
each); outputs must agree (identical images) before anything is timed. Reported: images/s,
instkit's overhead, and the mean IoU between each output box and its mask's tight box.
"""

from __future__ import annotations

import gc
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


def _raw_instances(sample: Sample) -> list[dict[str, Any]]:
    inst = sample.instances
    dense = inst.masks.to_dense().view(np.uint8)
    boxes = inst.masks.boxes()
    return [{"mask": dense[i], "bbox": boxes[i], "bbox_labels": {"label": int(inst.labels[i])}}
            for i in range(len(inst))]


def _raw_call(compose: Any, sample: Sample, invocation_seed: int) -> dict[str, Any]:
    return compose(image=sample.image, instances=_raw_instances(sample),
                   invocation_seed=invocation_seed)


def _raw_mixing_call(compose: Any, sample: Sample, seed: int, pool: list[Sample]) -> dict[str, Any]:
    """What a user of raw albumentationsx writes for Mosaic + CopyAndPaste: partners drawn from a
    pool (the same draws instkit makes for this seed), turned into the metadata lists."""
    rng = np.random.default_rng(seed)
    invocation_seed = int(rng.integers(0, 2**31 - 1))
    mosaic = []
    for _ in range(3):
        partner = pool[int(rng.integers(len(pool)))]
        rows = _raw_instances(partner)
        mosaic.append({"image": partner.image,
                       "masks": np.stack([r["mask"] for r in rows]),
                       "bboxes": np.stack([r["bbox"] for r in rows]).astype(np.float32),
                       "bbox_labels": {"label": [r["bbox_labels"]["label"] for r in rows]}})
    paste = []
    for _ in range(int(rng.integers(1, 4))):
        donor = pool[int(rng.integers(len(pool)))]
        rows = np.flatnonzero(~donor.instances.iscrowd)
        row = int(rows[int(rng.integers(len(rows)))])
        paste.append({"image": donor.image,
                      "mask": donor.instances.masks[row].to_dense()[0].astype(np.uint8),
                      "bbox_labels": {"label": int(donor.instances.labels[row])}})
    return compose(image=sample.image, instances=_raw_instances(sample), mosaic_metadata=mosaic,
                   copy_paste_metadata=paste, invocation_seed=invocation_seed)


def _agree(ours: Sample, theirs: dict[str, Any], min_area: float) -> bool:
    """Same image; instkit's masks are the raw rows with pixels (and >= min_area) in order."""
    if not np.array_equal(ours.image, theirs["image"]):
        return False
    raw = [np.asarray(r["mask"]).reshape(ours.image.shape[:2]).astype(bool)
           for r in theirs["instances"]]
    raw = [m for m in raw if m.any() and m.sum() >= min_area]
    dense = ours.instances.masks.to_dense() if ours.instances.masks is not None else []
    return len(raw) == len(dense) and all(np.array_equal(a, b) for a, b in zip(raw, dense))


def _raw_iou(theirs: list[dict[str, Any]]) -> np.ndarray:
    from instkit.masks import Masks

    out = []
    for t in theirs:
        if t["instances"]:
            masks = Masks.from_dense(np.stack([i["mask"] for i in t["instances"]]))
            boxes = np.stack([i["bbox"] for i in t["instances"]]).astype(np.float32)
            keep = masks.area() > 0
            out.append(_box_iou(boxes[keep], masks.boxes()[keep]))
    return np.concatenate(out)


def run(quick: bool = False) -> dict[str, Any]:
    from instkit.transforms import Augment
    from instkit.transforms._albu import A
    from instkit.transforms.presets import yolo_seg

    samples = _samples(4 if quick else 16)
    pool = _samples(8)[4:] if quick else _samples(24)[16:]
    repeats = 3 if quick else 7
    for sample in samples + pool:
        sample.image  # noqa: B018  (decode once, outside the timing)
    preset = yolo_seg(pool=pool, size=(640, 640), seed=0)
    cases: dict[str, tuple[Augment, Any, Any]] = {}
    for name, transforms in {
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
    }.items():
        raw = A.Compose(transforms, bbox_params=A.BboxParams(coord_format="pascal_voc",
                                                             label_fields=["label"]),
                        instance_binding=["masks", "bboxes"], seed=0, telemetry=False)
        cases[name] = (Augment(transforms, seed=0), raw,
                       lambda r, s, i: _raw_call(r, s, int(np.random.default_rng(i).integers(
                           0, 2**31 - 1))))
    # the preset itself, partners from a pool; the raw peer runs the same transforms (with
    # instkit's Perspective: albumentationsx's raises on 640x640 instance masks)
    raw_preset = A.Compose(preset.transforms, bbox_params=A.BboxParams(
        coord_format="pascal_voc", label_fields=["label"], min_visibility=preset.min_visibility,
        clip_bboxes_on_input=True), instance_binding=["masks", "bboxes"], seed=0,
        telemetry=False)
    cases["yolo-seg preset (Mosaic + CopyAndPaste, pool)"] = (
        preset, raw_preset, lambda r, s, i: _raw_mixing_call(r, s, i, pool))

    rows, targets, agree = [], [], True
    for name, (augment, raw, raw_fn) in cases.items():
        ours = [augment(s, seed=i) for i, s in enumerate(samples)]
        theirs = [raw_fn(raw, s, i) for i, s in enumerate(samples)]
        agree &= all(_agree(o, t, augment.min_area) for o, t in zip(ours, theirs, strict=True))
        our_iou = np.concatenate([_box_iou(o.instances.boxes, o.instances.masks.boxes())
                                  for o in ours if len(o.instances)])
        raw_iou = _raw_iou(theirs)
        tools = {
            "instkit": lambda a=augment: [a(s, seed=i) for i, s in enumerate(samples)],
            "albumentationsx": lambda r=raw, f=raw_fn: [f(r, s, i) for i, s in enumerate(samples)],
        }
        timings = {tool: float("inf") for tool in tools}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for tool, fn in tools.items():
                gc.collect()
                start = time.perf_counter()
                fn()
                timings[tool] = min(timings[tool], time.perf_counter() - start)
        for tool, iou in (("instkit", our_iou), ("albumentationsx", raw_iou)):
            rows.append({"pipeline": name, "tool": tool,
                         "images_per_s": len(samples) / timings[tool],
                         "mean_box_mask_iou": float(iou.mean()),
                         "min_box_mask_iou": float(iou.min())})
        overhead = timings["instkit"] / timings["albumentationsx"] - 1.0
        targets.append({"claim": f"{name}: instkit overhead over raw albumentationsx",
                        "value": overhead, "target": "<= 0.15", "met": overhead <= 0.15})
        targets.append({"claim": f"{name}: instkit mean box-vs-mask IoU",
                        "value": float(our_iou.mean()), "target": "== 1.0",
                        "met": bool(np.allclose(our_iou, 1.0))})
    return result("augment", rows, agree=agree, quick=quick, targets=targets,
                  notes="640x640, 20 instances per image; same transforms, invocation seeds and "
                        "mixing partners; agreement = identical images and masks; best of "
                        f"{repeats} interleaved runs; instkit includes densify, tight bitmaps, "
                        "drop records")


if __name__ == "__main__":
    main("augment", run)

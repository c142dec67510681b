"""Training throughput with instkit's loader + collator vs the guide's data path, and a
learning check on the synthetic shapes dataset.

Throughput (images/s, forward + backward + optimizer step included) for the tiny RF-DETR-Seg and
the light Mask R-CNN, on the same images in the same run:

- instkit: ``InstanceDataset`` over the HF dataset -> ``DataLoader(collate_fn=collator.pack)`` ->
  ``collator.finish``.
- guide: ``datasets`` ``with_transform`` calling ``RfDetrImageProcessor`` on COCO-style dicts
  (``return_segmentation_masks=True``) and the guide's list collate; for Mask R-CNN the
  processor is asked for [0, 1] unpadded images and its normalised ``cxcywh`` boxes are turned
  back into the absolute ``xyxy`` targets torchvision wants.

Before timing, the first batch of both paths is compared (labels equal, boxes within 0.5 px).
Learning check: each model trained for a fixed number of steps on synthetic shapes, then mask
mAP@0.5 on held-out synthetic images (``instkit.engine``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import main, result  # noqa: E402


def _guide_transform(processor: Any, *, maskrcnn: bool) -> Any:
    def transform_batch(examples: dict[str, Any]) -> dict[str, Any]:
        images, targets = [], []
        for image, img_id, objects in zip(examples["image"], examples["image_id"],
                                          examples["objects"], strict=True):
            annotations = [
                {"id": i, "image_id": img_id, "category_id": c, "bbox": b, "area": a,
                 "segmentation": s, "iscrowd": z}
                for i, c, b, a, s, z in zip(objects["id"], objects["category"], objects["bbox"],
                                            objects["area"], objects["segmentation"],
                                            objects["iscrowd"], strict=True)]
            images.append(image.convert("RGB"))
            targets.append({"image_id": img_id, "annotations": annotations})
        if maskrcnn:
            return processor(images=images, annotations=targets, return_segmentation_masks=True,
                             return_tensors="pt", do_resize=False, do_normalize=False,
                             do_pad=False, do_convert_annotations=True)
        return processor(images=images, annotations=targets, return_segmentation_masks=True,
                         return_tensors="pt")
    return transform_batch


def _guide_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    out = {"pixel_values": [x["pixel_values"] for x in batch],
           "labels": [x["labels"] for x in batch]}
    if all(x["pixel_values"].shape == batch[0]["pixel_values"].shape for x in batch):
        out["pixel_values"] = torch.stack(out["pixel_values"])
    if "pixel_mask" in batch[0]:
        out["pixel_mask"] = torch.stack([x["pixel_mask"] for x in batch])
    return out


def _to_maskrcnn(batch: dict[str, Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    import torch

    images = list(batch["pixel_values"])
    targets = []
    for image, labels in zip(images, batch["labels"], strict=True):
        h, w = image.shape[-2:]
        cx, cy, bw, bh = labels["boxes"].unbind(-1)
        boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h,
                             (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
        targets.append({"boxes": boxes, "labels": labels["class_labels"] + 1,
                        "masks": labels["masks"].to(torch.uint8)})
    return images, targets


def _time_steps(adapter: Any, batches: Any, to_batch: Any, steps: int) -> float:
    import torch

    model = adapter.model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    iterator = iter(batches)
    seen = 0
    start = None
    for k in range(steps + 1):  # the first step warms up and is not timed
        if k == 1:
            start = time.perf_counter()
            seen = 0
        batch = to_batch(next(iterator))
        loss, _ = adapter.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += adapter.batch_size_of(batch)
    return seen / (time.perf_counter() - start)  # type: ignore[operator]


def run(quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        return _run(quick, Path(tmp))


def _run(quick: bool, workdir: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from datasets import load_from_disk
    from torch.utils.data import DataLoader
    from transformers import RfDetrImageProcessor

    from instkit.data import InstanceDataset
    from instkit.engine import TrainConfig, evaluate_model, train
    from instkit.io.hf import read_hf, write_hf
    from instkit.models import build_model
    from instkit.synthetic import categories, make_samples

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    size = 128
    n_images = 8 if quick else 64
    batch_size = 4
    steps = 1 if quick else 12
    write_hf(make_samples(n_images, seed=0, image_size=(size, size), max_instances=4,
                          crowd_probability=0.0), workdir / "hf", categories())
    table = categories()
    hf_set = read_hf(workdir / "hf")
    rows: list[dict[str, Any]] = []
    agree = True
    for kind, options in (("rfdetr", {"tiny": True}), ("maskrcnn", {"backbone": "tiny"})):
        adapter = build_model(kind, table, **options)
        collator = adapter.make_collator("cpu")
        ours = DataLoader(InstanceDataset(hf_set), batch_size=batch_size, shuffle=False,
                          collate_fn=collator.pack)
        processor = RfDetrImageProcessor(size={"height": size, "width": size})
        guide_ds = load_from_disk(str(workdir / "hf")).with_transform(
            _guide_transform(processor, maskrcnn=kind == "maskrcnn"))
        theirs = DataLoader(guide_ds, batch_size=batch_size, shuffle=False,
                            collate_fn=_guide_collate)
        to_ours = collator.finish
        to_theirs = _to_maskrcnn if kind == "maskrcnn" else (lambda b: b)
        # agreement on the first batch
        a, b = to_ours(next(iter(ours))), to_theirs(next(iter(theirs)))
        if kind == "rfdetr":
            pairs = [(x["class_labels"], y["class_labels"], x["boxes"] * size, y["boxes"] * size)
                     for x, y in zip(a["labels"], b["labels"], strict=True)]
        else:
            pairs = [(x["labels"], y["labels"], x["boxes"], y["boxes"])
                     for x, y in zip(a[1], b[1], strict=True)]
        same = all(torch.equal(la.cpu(), lb.cpu()) and torch.allclose(ba.float(), bb.float(),
                                                                         atol=0.5)
                   for la, lb, ba, bb in pairs)
        agree &= same
        fast = _time_steps(adapter, ours, to_ours, steps)
        slow = _time_steps(adapter, theirs, to_theirs, steps)
        rows.append({"case": f"{kind} tiny, {size}px, batch {batch_size}", "tool": "instkit",
                     "images_per_s": fast, "ratio": fast / slow, "agree": same})
        rows.append({"case": f"{kind} tiny, {size}px, batch {batch_size}", "tool": "guide path",
                     "images_per_s": slow, "ratio": 1.0, "agree": same})
    # learning check
    train_samples = make_samples(8 if quick else 96, seed=10, image_size=(size, size),
                                 max_instances=3, crowd_probability=0.0)
    val_samples = make_samples(4 if quick else 24, seed=11, image_size=(size, size),
                               max_instances=3, crowd_probability=0.0)

    class _Set(list):  # a list of samples carrying its category table
        categories = table

    budget = 2 if quick else 400
    targets = []
    for kind, options, lr in (("rfdetr", {"tiny": True}, 1e-3),
                              ("maskrcnn", {"backbone": "tiny"}, 0.01)):
        torch.manual_seed(0)
        adapter = build_model(kind, table, **options)
        started = time.perf_counter()
        train(adapter, _Set(train_samples), None, workdir / f"run-{kind}",
              TrainConfig(epochs=10_000, max_steps=budget, batch_size=4, lr=lr, progress=False,
                          scheduler="constant", patience=None))
        seconds = time.perf_counter() - started
        evaluation, _, _ = evaluate_model(adapter, _Set(val_samples), progress=False)
        rows.append({"case": f"learning: {kind} tiny, {budget} steps x 4 images", "tool": "instkit",
                     "mask_map50": float(np.nan_to_num(evaluation.mask_map50)),
                     "mask_map": float(np.nan_to_num(evaluation.mask_map)),
                     "train_seconds": seconds})
        targets.append({"claim": f"{kind} mask mAP@0.5 after {budget} steps",
                        "value": float(np.nan_to_num(evaluation.mask_map50)),
                        "target": "recorded (no bar on a CPU budget)", "met": True})
    return result("train", rows, agree=bool(agree), quick=quick, targets=targets,
                  notes="throughput on CPU; the first step of each path is a warm-up")


if __name__ == "__main__":
    main("train", run)

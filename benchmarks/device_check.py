"""The accelerator half of issue 14, in one short run: what a CPU-only machine cannot measure.

Run it first on a machine with a GPU (``python benchmarks/device_check.py``; about two minutes):

1. agreement: ``Collator(..., defer_images=True)`` batches built by ``.to(device)`` equal the
   same batches built on the CPU (RF-DETR: ``pixel_values`` within 1e-3 -- torch's bilinear
   kernel against OpenCV's --, ``pixel_mask``, boxes, labels and stride-4 masks equal; Mask
   R-CNN: images within 1e-3 and masks equal), on tinycoco train;
2. collator: RF-DETR targets at 640x640 (stride-4 masks, batch 16): the host half
   (``collator.pack``) and the device half (``packed -> finish -> .to(device)``, synchronised)
   in images/s, best of 5;
3. loader: ``InstanceDataset`` + the train preset at 640x640 -> ``DataLoader(batch_size=16,
   num_workers=W, pin_memory=True, collate_fn=collator.pack)`` -> ``finish`` -> ``.to(device)``,
   images/s over the dataset repeated to 640 images, for W = 2, 4, and the CPU count - 2.

The goal issue 14 sets: >= 1,000 images/s for RF-DETR targets at 640x640. ``--device cpu`` runs
the same checks on the CPU (to test this script where no GPU is lent). Results: JSON in
``benchmarks/results/device.json`` (``--out`` elsewhere). ``benchmarks/device_prepare.sh`` puts
what a bare device machine lacks (the data, wheels of instkit's dependencies that its image does
not hold) in an ignored folder that travels with the working tree, and prints the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import RESULTS_DIR, TINYCOCO, result  # noqa: E402

SIZE = (640, 640)
BATCH = 16


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(data: Path) -> Any:
    from instkit.io.coco import read_coco

    return read_coco(data / "annotations" / "instances_train2017.json",
                     data / "images" / "train2017")


def _samples(data: Path, augment: bool) -> list[Any]:
    from instkit.transforms.presets import evaluation, train_default

    dataset = _train(data)
    transform = train_default(SIZE, seed=0) if augment else evaluation(SIZE)
    return [transform(dataset[i], seed=i) for i in range(len(dataset))]


def check_agreement(device: Any, data: Path = TINYCOCO) -> dict[str, float]:
    """Largest differences between the device build and the CPU build of the same batches."""
    import torch

    from instkit.data import Collator

    samples = _samples(data, augment=True)[:BATCH]
    worst = {"rfdetr_pixel_values": 0.0, "rfdetr_other_mismatches": 0.0,
             "maskrcnn_images": 0.0, "maskrcnn_mask_mismatches": 0.0}
    rfdetr = Collator("rfdetr", mask_stride=4, defer_images=True)(samples)
    on_device, on_cpu = rfdetr.to(device), rfdetr.to("cpu")
    worst["rfdetr_pixel_values"] = float(
        (on_device["pixel_values"].cpu() - on_cpu["pixel_values"]).abs().max())
    mismatches = int(not torch.equal(on_device["pixel_mask"].cpu(), on_cpu["pixel_mask"]))
    for a, b in zip(on_device["labels"], on_cpu["labels"], strict=True):
        for key in ("class_labels", "boxes", "masks"):
            mismatches += int(not torch.equal(a[key].cpu(), b[key]))
    worst["rfdetr_other_mismatches"] = float(mismatches)
    maskrcnn = Collator("maskrcnn", defer_images=True)(samples)
    (images_d, targets_d), (images_c, targets_c) = maskrcnn.to(device), maskrcnn.to("cpu")
    worst["maskrcnn_images"] = max(float((a.cpu() - b).abs().max())
                                   for a, b in zip(images_d, images_c, strict=True))
    worst["maskrcnn_mask_mismatches"] = float(sum(
        int(not torch.equal(a["masks"].cpu(), b["masks"]))
        for a, b in zip(targets_d, targets_c, strict=True)))
    return worst


def time_collator(device: Any, data: Path, repeat: int) -> dict[str, float]:
    from instkit.data import Collator

    samples = _samples(data, augment=True)[:BATCH]
    collator = Collator("rfdetr", size=SIZE, mask_stride=4, defer_images=True, device=device)
    best_pack = best_build = float("inf")
    for _ in range(repeat + 1):  # the first round warms the device up
        start = time.perf_counter()
        packed = collator.pack(samples)
        middle = time.perf_counter()
        collator.finish(packed).to(device)
        _sync(device)
        end = time.perf_counter()
        best_pack, best_build = min(best_pack, middle - start), min(best_build, end - middle)
    return {"host_pack_images_per_s": BATCH / best_pack,
            "device_build_images_per_s": BATCH / best_build,
            "both_images_per_s": BATCH / (best_pack + best_build)}


class _Repeated:
    def __init__(self, dataset: Any, times: int) -> None:
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % len(self.dataset)]


def time_loader(device: Any, data: Path, workers: int, images: int) -> float:
    from torch.utils.data import DataLoader

    from instkit.data import Collator, InstanceDataset
    from instkit.transforms.presets import train_default

    dataset = _train(data)
    source = _Repeated(InstanceDataset(dataset, train_default(SIZE), seed=0),
                       max(1, images // len(dataset)))
    collator = Collator("rfdetr", size=SIZE, mask_stride=4, defer_images=True, device=device)
    loader = DataLoader(source, batch_size=BATCH, num_workers=workers,
                        collate_fn=collator.pack if workers else collator,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    best = 0.0
    for _ in range(2):  # the first epoch starts the workers
        count = 0
        start = time.perf_counter()
        for packed in loader:
            batch = (collator.finish(packed) if workers else packed).to(device, non_blocking=True)
            count += len(dict.__getitem__(batch, "labels"))
        _sync(device)
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "device.json")
    parser.add_argument("--images", type=int, default=640, help="images per loader epoch")
    parser.add_argument("--data", type=Path, default=TINYCOCO,
                        help="tinycoco's folder (default: ../shared/data/tinycoco)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run on a machine with a GPU, or pass --device cpu")
    torch.set_num_threads(1)  # the loader's parallelism is its workers
    load_before = os.getloadavg()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; {os.cpu_count()} CPUs; load {load_before[0]:.2f}", flush=True)
    worst = check_agreement(device, args.data)
    agree = (worst["rfdetr_pixel_values"] <= 1e-3 and worst["maskrcnn_images"] <= 1e-3
             and worst["rfdetr_other_mismatches"] == 0 and worst["maskrcnn_mask_mismatches"] == 0)
    print("agreement with the CPU build:", worst, "->", "agree" if agree else "DIFFER", flush=True)
    collate = time_collator(device, args.data, repeat=5)
    print("collator (RF-DETR, 640x640, batch 16):", collate, flush=True)
    cpus = os.cpu_count() or 2
    loader = {}
    for workers in sorted({2, 4, max(cpus - 2, 1)}):
        loader[workers] = time_loader(device, args.data, workers, args.images)
        print(f"loader, {workers} workers: {loader[workers]:.0f} images/s", flush=True)
    load_after = os.getloadavg()
    best_workers = max(loader, key=lambda w: loader[w])
    rows = [{"case": "agreement (device vs CPU build)", **worst},
            {"case": "collator RF-DETR 640x640, batch 16", **collate},
            *({"case": f"loader RF-DETR 640x640, {w} workers", "images_per_s": rate}
              for w, rate in loader.items())]
    targets = [{"claim": f"loader RF-DETR targets at 640x640 on {name} ({best_workers} workers, "
                         "images/s)",
                "value": loader[best_workers], "target": ">= 1000",
                "met": loader[best_workers] >= 1000}]
    payload = result("device", rows, agree=agree, quick=False, targets=targets,
                     notes=f"{name}; {cpus} CPUs; torch 1 thread per process; load average "
                           f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"written: {args.out}")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()

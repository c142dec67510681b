"""Collating RF-DETR-Seg batches: instkit's Collator vs RfDetrImageProcessor vs a
torchvision-reference-style per-sample dense path, on the same in-memory samples.

Cases (instkit's ``Collator("rfdetr")`` called once on the batch, as a ``collate_fn``):
(a) batch of 16 images 640x640 with 20 polygon instances each, resized to 576x576;
(b) crowded 1024x1024 images with 200 polygon instances each, kept at 1024x1024;
(c) 16 real tinycoco train images (JPEGs, COCO polygons, crowds left out as the processor
mishandles them) at the processor's own default size (shortest edge 800, longest 1333, padded
to the batch's largest), masks at stride 4 and at stride 1, timed interleaved, best of N, for
the immediate collator (float32 batch built on the CPU) and for ``defer_images=True`` (images
kept uint8 in the batch until ``.to(device)`` builds ``pixel_values`` there; also timed with
``.to("cpu")``, i.e. built on this CPU); with
the output-write limit measured in the same run: writing the processor's output tensors for that
batch (float32 ``pixel_values``, int64 ``pixel_mask``, bool masks) into memory reused across
batches, which any collator producing this format has to do.
Every path produces RF-DETR targets (normalised cxcywh boxes, labels, masks at the model's
stride 4, normalised pixel values, pixel_mask); outputs are checked to agree first. Peak resident
memory is measured per path in its own subprocess (``peak_mib``; ``work_mib`` is the peak minus
the resident memory before collating, i.e. what collating itself needed). ``bytes_to_device`` is
what the path moves to the accelerator: instkit's packed uint8 buffer; the processor's output
tensors; the dense path's float images and full-resolution uint8 masks (as torchvision's
reference moves its targets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import TINYCOCO, best_time, main, peak_rss_mib, result  # noqa: E402

CASES = {
    "a": {"batch": 16, "image": (640, 640), "instances": 20, "size": (576, 576)},
    "b": {"batch": 4, "image": (1024, 1024), "instances": 200, "size": (1024, 1024)},
}
QUICK = {
    "a": {"batch": 2, "image": (640, 640), "instances": 20, "size": (576, 576)},
    "b": {"batch": 1, "image": (1024, 1024), "instances": 200, "size": (1024, 1024)},
}
PATHS = ("instkit", "transformers", "dense")


def make_inputs(case: dict[str, Any], seed: int = 0) -> list[Any]:
    from instkit.instances import Instances
    from instkit.masks import Masks, PolygonMask
    from instkit.sample import Sample

    rng = np.random.default_rng(seed)
    h, w = case["image"]
    n = case["instances"]
    samples = []
    for k in range(case["batch"]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        items = []
        scale = min(h, w) / (8 if n <= 20 else 30)
        for _ in range(n):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
            radii = rng.uniform(0.3, 1.0, 12) * scale
            xs = np.clip(cx + radii * np.cos(angles), 0, w)
            ys = np.clip(cy + radii * np.sin(angles), 0, h)
            items.append(PolygonMask((np.stack([xs, ys], 1).reshape(-1),)))
        masks = Masks(items, (h, w))
        inst = Instances(image_size=(h, w), masks=masks, labels=rng.integers(0, 5, n),
                         ids=np.arange(n) + 1000 * k)
        samples.append(Sample.from_array(image, inst, image_id=k + 1))
    return samples


def coco_targets(samples: list[Any]) -> list[dict[str, Any]]:
    out = []
    for s in samples:
        inst = s.instances
        anns = []
        for i in range(len(inst)):
            x0, y0, x1, y1 = (float(v) for v in inst.boxes[i])
            anns.append({"id": int(inst.ids[i]), "image_id": s.image_id, "iscrowd": 0,
                         "category_id": int(inst.labels[i]), "area": (x1 - x0) * (y1 - y0),
                         "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "segmentation": [p.tolist() for p in inst.masks.items[i].parts]})
        out.append({"image_id": s.image_id, "annotations": anns})
    return out


def tensor_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def run_instkit(samples: list[Any], case: dict[str, Any]) -> tuple[Any, int]:
    from instkit.data import Collator

    collator = Collator("rfdetr", size=case["size"])
    out = collator(samples)  # as collate_fn: on the host the images are read where they are
    # what an accelerator would be sent: the packed batch, images included
    return out, out.info.bytes_to_device + sum(s.image.nbytes for s in samples)


def run_transformers(samples: list[Any], case: dict[str, Any]) -> tuple[Any, int]:
    from transformers import RfDetrImageProcessor

    h, w = case["size"]
    processor = RfDetrImageProcessor(size={"height": h, "width": w})
    out = processor([s.image for s in samples], coco_targets(samples),
                    return_segmentation_masks=True, return_tensors="pt")
    return out, tensor_bytes(dict(out))


def run_dense(samples: list[Any], case: dict[str, Any]) -> tuple[Any, int]:
    """torchvision reference style: per sample, ToTensor (float) and ConvertCocoPolysToMask
    (dense full-resolution uint8 masks); then resize, pad, normalise and sample the masks."""
    import pycocotools.mask as mask_utils
    import torch
    import torch.nn.functional as F

    per_sample = []
    moved = 0
    for s, target in zip(samples, coco_targets(samples), strict=True):
        h, w = s.image_size
        image = torch.from_numpy(s.image).permute(2, 0, 1).float() / 255.0
        masks = []
        for obj in target["annotations"]:
            rles = mask_utils.frPyObjects(obj["segmentation"], h, w)
            mask = mask_utils.decode(rles)
            if mask.ndim < 3:
                mask = mask[..., None]
            masks.append(torch.as_tensor(mask, dtype=torch.uint8).any(dim=2))
        dense = torch.stack(masks).to(torch.uint8) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        boxes = torch.as_tensor([o["bbox"] for o in target["annotations"]], dtype=torch.float32)
        boxes = boxes.reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = torch.as_tensor([o["category_id"] for o in target["annotations"]])
        per_sample.append((image, dense, boxes, labels))
        moved += tensor_bytes([image, dense, boxes, labels])
    rh, rw = case["size"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    pixel_values = torch.zeros((len(samples), 3, rh, rw))
    labels_out = []
    for b, (image, dense, boxes, labels) in enumerate(per_sample):
        h, w = image.shape[-2:]
        resized = F.interpolate(image[None], size=(rh, rw), mode="bilinear", align_corners=False)
        pixel_values[b] = (resized[0] - mean) / std
        masks = F.interpolate(dense[:, None].float(), size=(rh, rw), mode="nearest-exact")
        masks = F.interpolate(masks, size=(rh // 4, rw // 4), mode="nearest-exact")[:, 0] > 0.5
        scale = torch.tensor([rw / w, rh / h, rw / w, rh / h])
        xyxy = boxes * scale
        cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / rw, (xyxy[:, 1] + xyxy[:, 3]) / 2 / rh,
                              (xyxy[:, 2] - xyxy[:, 0]) / rw, (xyxy[:, 3] - xyxy[:, 1]) / rh], 1)
        labels_out.append({"class_labels": labels, "boxes": cxcywh, "masks": masks})
    pixel_mask = torch.ones((len(samples), rh, rw), dtype=torch.int64)
    return {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "labels": labels_out}, moved


RUNNERS = {"instkit": run_instkit, "transformers": run_transformers, "dense": run_dense}


def agree(ours: Any, theirs: Any, stride_theirs: bool) -> bool:
    import torch
    import torch.nn.functional as F

    # 1e-3 after normalisation is under a tenth of one 8-bit level: OpenCV's bilinear kernel
    # (instkit on the CPU) and torch's (the processor) differ in the last bits of the sample
    # coordinate (up to 2e-4 here)
    if not torch.allclose(ours["pixel_values"], theirs["pixel_values"], atol=1e-3):
        return False
    if not torch.equal(ours["pixel_mask"], theirs["pixel_mask"]):
        return False
    for mine, other in zip(ours["labels"], theirs["labels"], strict=True):
        if not torch.equal(mine["class_labels"], other["class_labels"]):
            return False
        if not torch.allclose(mine["boxes"], other["boxes"], atol=1e-4):
            return False
        ref = other["masks"]
        if stride_theirs:
            grid = mine["masks"].shape[-2:]
            ref = F.interpolate(ref[:, None].float(), size=tuple(grid), mode="nearest-exact")[:, 0] > 0.5
        a, b = mine["masks"].flatten(1), ref.flatten(1)
        union = (a | b).sum(1).clamp(min=1)
        if ((a & b).sum(1) / union).min() < 0.99:
            return False
    return True


def child(path: str, case_name: str, quick: bool) -> None:
    """Run one path once in this process and print its memory figures as JSON."""
    import torch  # noqa: F401  (imported before the baseline, as every path needs it)

    case = (QUICK if quick else CASES)[case_name]
    samples = make_inputs(case)
    for s in samples:
        s.image  # noqa: B018  (images are in memory already; touch for symmetry)
    if path == "transformers":
        import transformers  # noqa: F401
    import instkit.data  # noqa: F401

    baseline = _status_mib("VmRSS")
    RUNNERS[path](samples, case)
    # VmHWM is the peak of this process image; getrusage's maxrss would include the parent's
    # peak inherited at fork.
    peak = _status_mib("VmHWM")
    print(json.dumps({"peak_mib": peak, "work_mib": peak - baseline}))


def _status_mib(field: str) -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mib()


def memory(path: str, case_name: str, quick: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", path, case_name] + (["--quick"] if quick else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    # INSTKIT_BENCH_THREADS: torch's intra-op threads (default: every CPU). On a loaded machine
    # one thread is faster: two threads wait for each other on every op.
    torch.set_num_threads(int(os.environ.get("INSTKIT_BENCH_THREADS", 0)) or os.cpu_count() or 1)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    all_agree = True
    speed: dict[tuple[str, str], float] = {}
    mem: dict[tuple[str, str], float] = {}
    cases = QUICK if quick else CASES
    for name, case in cases.items():
        samples = make_inputs(case)
        outputs = {p: RUNNERS[p](samples, case) for p in PATHS}
        ok = agree(outputs["instkit"][0], outputs["transformers"][0], stride_theirs=True) and \
            agree(outputs["instkit"][0], outputs["dense"][0], stride_theirs=False)
        all_agree &= ok
        for path in PATHS:
            # the agreement run above was the warm-up; the slow peers are timed once
            repeat = 1 if (quick or path != "instkit") else 3
            seconds = best_time(lambda p=path, s=samples, c=case: RUNNERS[p](s, c),
                                repeat=repeat, warmup=0)
            figures = memory(path, name, quick)
            speed[(name, path)] = case["batch"] / seconds
            mem[(name, path)] = figures["work_mib"]
            rows.append({
                "case": f"({name}) {case['batch']}x{case['image'][0]}x{case['image'][1]}, "
                        f"{case['instances']} inst -> {case['size'][0]}x{case['size'][1]}",
                "tool": path, "device": "cpu", "images_per_s": case["batch"] / seconds,
                "batch_s": seconds, "peak_mib": figures["peak_mib"],
                "work_mib": figures["work_mib"],
                "bytes_to_device_mib": outputs[path][1] / 2**20, "agree": ok,
            })
        del outputs
    real_rows, real_targets, real_agree = run_real(quick)
    rows += real_rows
    all_agree &= real_agree
    throughput = speed[("a", "instkit")] / speed[("a", "transformers")]
    memory_ratio = mem[("b", "instkit")] / max(mem[("b", "dense")], 1e-9)
    targets = [
        {"claim": "(a) throughput vs RfDetrImageProcessor", "value": throughput,
         "target": ">= 10x", "met": throughput >= 10},
        {"claim": "(b) collating memory (work_mib) vs dense path", "value": memory_ratio,
         "target": "<= 0.1", "met": memory_ratio <= 0.1},
        *real_targets,
    ]
    return result("collate", rows, agree=all_agree, quick=quick, targets=targets,
                  notes=f"CPU only (no GPU lent); torch threads {torch.get_num_threads()}; "
                        f"masks at stride 4 unless stated; memory per path in its own "
                        f"subprocess; load average {load_before[0]:.2f} before, "
                        f"{os.getloadavg()[0]:.2f} after")



PROCESSOR_SIZE = {"shortest_edge": 800, "longest_edge": 1333}


def real_samples(count: int) -> list[Any]:
    from instkit.io.coco import read_coco

    dataset = read_coco(TINYCOCO / "annotations" / "instances_train2017.json",
                        TINYCOCO / "images" / "train2017")
    samples = []
    for i in range(count):
        s = dataset[i]
        s = s.replace(instances=s.instances[~s.instances.iscrowd])
        s.image  # noqa: B018  (decoded before timing: both paths start from arrays)
        samples.append(s)
    return samples


_FLOOR_OUTPUTS: dict[tuple[int, ...], Any] = {}


def output_floor(batch: int, padded: tuple[int, int], instances: int, stride: int) -> None:
    """Write the processor's output format once (the collator's own floor), into memory
    allocated on the first call and reused after: a collator that reuses its memory across
    batches (instkit's does) pays no fresh pages, so neither does the floor."""
    import torch

    hp, wp = padded
    key = (batch, hp, wp, instances, stride)
    if key not in _FLOOR_OUTPUTS:
        _FLOOR_OUTPUTS[key] = (torch.empty((batch, 3, hp, wp), dtype=torch.float32),
                               torch.empty((batch, hp, wp), dtype=torch.int64),
                               torch.empty((instances, hp // stride, wp // stride),
                                           dtype=torch.bool))
    values, mask, masks = _FLOOR_OUTPUTS[key]
    values.fill_(1.0)
    mask.fill_(1)
    masks.zero_()


def run_real(quick: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """Case (c): real images at the processor's sizes, stride 4 and 1, interleaved."""
    import time

    from transformers import RfDetrImageProcessor

    from instkit.data import Collator

    samples = real_samples(4 if quick else 16)
    targets = coco_targets(samples)
    processor = RfDetrImageProcessor(size=PROCESSOR_SIZE)

    def run_processor() -> Any:
        return processor([s.image for s in samples], targets, return_segmentation_masks=True,
                         return_tensors="pt")

    collators = {stride: Collator("rfdetr", size=PROCESSOR_SIZE, mask_stride=stride)
                 for stride in (4, 1)}
    # images kept uint8 in the batch until .to(device) builds pixel_values there
    deferred = {stride: Collator("rfdetr", size=PROCESSOR_SIZE, mask_stride=stride,
                                 defer_images=True) for stride in (4, 1)}
    reference = run_processor()
    ok = True
    for stride in (4, 1):
        ok &= agree(collators[stride](samples), reference, stride_theirs=stride > 1)
        ok &= agree(deferred[stride](samples).to("cpu"), reference, stride_theirs=stride > 1)
    padded = tuple(reference["pixel_values"].shape[-2:])
    n = sum(len(t["annotations"]) for t in targets)
    funcs = {"transformers": run_processor,
             "instkit stride 4": lambda: collators[4](samples),
             "instkit stride 1": lambda: collators[1](samples),
             "instkit deferred stride 4": lambda: deferred[4](samples),
             "instkit deferred stride 1": lambda: deferred[1](samples),
             "instkit deferred + .to(cpu) stride 4": lambda: deferred[4](samples).to("cpu"),
             "output-write limit stride 4": lambda: output_floor(len(samples), padded, n, 4),
             "output-write limit stride 1": lambda: output_floor(len(samples), padded, n, 1)}
    best = {name: float("inf") for name in funcs}
    for _ in range(1 if quick else 5):
        for name, fn in funcs.items():  # interleaved
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: len(samples) / t for name, t in best.items()}
    rows = []
    case = (f"(c) {len(samples)} tinycoco images -> shortest 800 / longest 1333, padded "
            f"{padded[0]}x{padded[1]}, {n} inst")
    for name in funcs:
        stride = 1 if name.endswith("1") else 4
        limit = rate[f"output-write limit stride {stride}"]
        # a deferred batch does not write the float images: the limit is not its floor
        share = None if name.startswith("instkit deferred") else rate[name] / limit
        rows.append({"case": case, "tool": name, "device": "cpu", "images_per_s": rate[name],
                     "batch_s": best[name], "share_of_limit": share, "agree": ok})
    claims = []
    for stride, bar in ((4, 10.0), (1, 4.0)):
        ratio = rate[f"instkit deferred stride {stride}"] / rate["transformers"]
        claims.append({"claim": f"(c) real images, stride {stride}, images uint8 until "
                                f".to(device) (defer_images): throughput vs RfDetrImageProcessor",
                       "value": ratio, "target": f">= {bar:g}x", "met": ratio >= bar})
        ratio = rate[f"instkit stride {stride}"] / rate["transformers"]
        ceiling = rate[f"output-write limit stride {stride}"] / rate["transformers"]
        claims.append({"claim": f"(c) real images, stride {stride}, float32 batch built on the "
                                f"CPU: throughput vs RfDetrImageProcessor (output-write limit: "
                                f"{ceiling:.1f}x)",
                       "value": ratio, "target": f">= {bar:g}x", "met": ratio >= bar})
    return rows, claims, ok


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], "--quick" in sys.argv)
    else:
        main("collate", run)

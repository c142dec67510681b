"""Augmentation on compact masks, raced against the tools a user would pick instead.

(a) tinycoco train at 640x640: ``InstanceDataset`` with the ``yolo-seg`` preset against
    Ultralytics' own YOLO-seg training dataset (``YOLODataset(task="segment", augment=True)``,
    its default hyperparameters: Mosaic, CopyPaste, RandomPerspective, flip, HSV) on the same
    images (converted with ``instkit convert --to yolo``), in this process, interleaved, best of
    N. Both keep recently decoded images in memory (Ultralytics' buffer; instkit's partner
    cache). Reported: images/s (wall and CPU), and each tool's box-vs-mask gap (the largest
    distance, in pixels at 640, between an instance's box and its mask's tight box).
(b) 640x640 images with 5, 20, 100 and 400 instances through a geometric pipeline (flip,
    Affine, RandomResizedCrop): instkit's compact path against raw albumentationsx with dense
    instance masks (``instance_binding``), after checking that instkit's compact output agrees
    with albumentationsx's dense output for the same draws (``Augment(compact=False)``). Two
    object sizes per count, so that time per sample can be read against total object area.
(c) Memory, each case in a fresh subprocess: 5,000 polygons in a 1024x1024 image through the
    yolo-seg and train presets (peak resident memory), and an 8000x8000 image with 20 instances
    through yolo-seg.

Ultralytics is a benchmark-only peer (AGPL): ``pip install --no-deps ultralytics==8.4.190``
(its declared dependencies would add a second, non-headless OpenCV). Without it, (a) is skipped
and says so.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import main, result  # noqa: E402

SHARED = Path(os.environ.get("INSTKIT_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
TINYCOCO = SHARED / "tinycoco"


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


# --- (a) against Ultralytics ---------------------------------------------------------------------


def _ultralytics_dataset(yolo_dir: Path) -> Any:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import YOLODataset

    names = yaml.safe_load((yolo_dir / "data.yaml").read_text())["names"]
    return YOLODataset(img_path=str(yolo_dir / "images"), imgsz=640, augment=True,
                       hyp=get_cfg(), task="segment", data={"names": names, "channels": 3})


def _ultralytics_gap(item: dict[str, Any]) -> list[float]:
    """Box vs mask-box distance (px at the image's scale) for each instance of one item."""
    masks = item["masks"].numpy()  # (1, h/4, w/4) instance index map (overlap_mask=True)
    boxes = item["bboxes"].numpy()  # normalised cxcywh
    h, w = item["img"].shape[1:]
    ratio = h / masks.shape[-2]
    gaps = []
    for k, (cx, cy, bw, bh) in enumerate(boxes):
        ys, xs = np.nonzero(masks[0] == k + 1)
        if len(xs) == 0:
            continue
        mask_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) * ratio
        box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                        (cy + bh / 2) * h])
        gaps.append(float(np.abs(box - mask_box).max()))
    return gaps


def _race_ultralytics(quick: bool, rows: list[dict[str, Any]], targets: list[dict[str, Any]]
                      ) -> tuple[bool, str]:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return True, ("(a) skipped: Ultralytics is not installed "
                      "(pip install --no-deps ultralytics==8.4.190)")
    import cv2

    import instkit
    from instkit.data import InstanceDataset
    from instkit.transforms.presets import yolo_seg

    ann = TINYCOCO / "annotations" / "instances_train2017.json"
    images = TINYCOCO / "images" / "train2017"
    work = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    subprocess.run([sys.executable, "-m", "instkit", "convert", str(ann), "--images",
                    str(images), "--to", "yolo", str(work / "yolo")], check=True,
                   capture_output=True)
    theirs = _ultralytics_dataset(work / "yolo")
    cv2.setNumThreads(1)  # Ultralytics sets OpenCV's threads to 0 (none); same for both
    coco = instkit.read_coco(ann, images)
    ours = InstanceDataset(coco, transform=yolo_seg(size=(640, 640), seed=0), seed=0)
    n = min(len(coco), len(theirs))
    count = 16 if quick else n
    repeats = 2 if quick else 5

    # agreement: both give 640x640 images with instance rows; instkit's boxes are its masks'
    our_gaps: list[float] = []
    their_gaps: list[float] = []
    agree = True
    for i in range(count):
        sample = ours[i]
        agree &= sample.image_size == (640, 640)
        inst = sample.instances
        if len(inst):
            our_gaps.extend(np.abs(inst.boxes - inst.masks.boxes()).max(axis=1).tolist())
        item = theirs[i]
        agree &= tuple(item["img"].shape[1:]) == (640, 640)
        their_gaps.extend(_ultralytics_gap(item))

    def run_ours() -> None:
        for i in range(count):
            ours[i]

    def run_theirs() -> None:
        for i in range(count):
            theirs[i]

    run_ours()
    run_theirs()
    wall = {"instkit": float("inf"), "ultralytics": float("inf")}
    cpu = dict(wall)
    load_before = _load()
    for _ in range(repeats):
        for tool, fn in (("ultralytics", run_theirs), ("instkit", run_ours)):
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[tool] = min(wall[tool], time.perf_counter() - w0)
            cpu[tool] = min(cpu[tool], time.process_time() - c0)
    load_after = _load()
    for tool, gaps in (("instkit", our_gaps), ("ultralytics", their_gaps)):
        rows.append({"case": "(a) tinycoco train 640, yolo-seg", "tool": tool,
                     "images_per_s": count / wall[tool], "images_per_cpu_s": count / cpu[tool],
                     "box_mask_gap_mean_px": float(np.mean(gaps)) if gaps else 0.0,
                     "box_mask_gap_max_px": float(np.max(gaps)) if gaps else 0.0})
    ratio = wall["ultralytics"] / wall["instkit"]
    cpu_ratio = cpu["ultralytics"] / cpu["instkit"]
    targets.append({"claim": "(a) instkit yolo-seg images/s over Ultralytics' (wall)",
                    "value": ratio, "target": ">= 1.5", "met": ratio >= 1.5})
    targets.append({"claim": "(a) the same, per CPU second", "value": cpu_ratio,
                    "target": ">= 1.5", "met": cpu_ratio >= 1.5})
    targets.append({"claim": "(a) instkit largest box-vs-mask gap (px)",
                    "value": float(max(our_gaps, default=0.0)), "target": "== 0",
                    "met": max(our_gaps, default=0.0) == 0.0})
    note = (f"(a) {count} images, best of {repeats} interleaved; one thread each "
            f"(cv2.setNumThreads(1)); load average {load_before[0]:.2f} before, "
            f"{load_after[0]:.2f} after")
    return agree, note


# --- (b) instance count and object area ----------------------------------------------------------


def _crowd_sample(count: int, side: int, seed: int) -> Any:
    from instkit.instances import Instances
    from instkit.masks import Masks
    from instkit.sample import Sample

    rng = np.random.default_rng(seed)
    size = (640, 640)
    polys = []
    for _ in range(count):
        cx, cy = rng.uniform(side, 640 - side, size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=10))
        radius = side / 2 * rng.uniform(0.6, 1.0, size=10)
        polys.append([np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)],
                               axis=1).reshape(-1)])
    inst = Instances(image_size=size, labels=rng.integers(0, 3, count),
                     masks=Masks.from_polygons(polys, size))
    image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    return Sample.from_array(image, inst, seed + 1)


def _raw_dense(compose: Any, sample: Any, seed: int) -> dict[str, Any]:
    inst = sample.instances
    dense = inst.masks.to_dense().view(np.uint8)
    boxes = inst.masks.boxes()
    return compose(image=sample.image, invocation_seed=seed, instances=[
        {"mask": dense[i], "bbox": boxes[i], "bbox_labels": {"label": int(inst.labels[i])}}
        for i in range(len(inst))])


def _race_counts(quick: bool, rows: list[dict[str, Any]], targets: list[dict[str, Any]]
                 ) -> tuple[bool, list[dict[str, Any]]]:
    from instkit.transforms import Augment
    from instkit.transforms._albu import A

    def pipeline() -> list[Any]:
        return [A.HorizontalFlip(p=0.5), A.Affine(rotate=(-15, 15), scale=(0.8, 1.2), p=1.0),
                A.RandomResizedCrop((512, 512), scale=(0.5, 1.0), p=1.0)]

    ours = Augment(pipeline(), seed=0)
    reference = Augment(pipeline(), seed=0, compact=False)
    raw = A.Compose(pipeline(), bbox_params=A.BboxParams(coord_format="pascal_voc",
                                                         label_fields=["label"]),
                    instance_binding=["masks", "bboxes"], seed=0, telemetry=False)
    counts = (5, 20, 100) if quick else (5, 20, 100, 400)
    sides = (16, 64)
    repeats = 2 if quick else 5
    per_sample = 2 if quick else 4
    agree = True
    curve = []
    for count in counts:
        for side in sides:
            samples = [_crowd_sample(count, side, 7 * count + side + k) for k in range(per_sample)]
            for k, sample in enumerate(samples):  # compact vs albumentationsx dense, same draws
                a, b = ours(sample, seed=k), reference(sample, seed=k)
                agree &= np.array_equal(a.image, b.image)
                common = set(map(int, a.instances.ids)) & set(map(int, b.instances.ids))
                da, db = a.instances.masks.to_dense(), b.instances.masks.to_dense()
                ia = {int(x): j for j, x in enumerate(a.instances.ids)}
                ib = {int(x): j for j, x in enumerate(b.instances.ids)}
                for ident in common:  # polygons: exact vs twice-quantised, see test_compact
                    x, y = da[ia[ident]], db[ib[ident]]
                    if y.sum() >= 256:
                        agree &= bool((x & y).sum() / (x | y).sum() >= 0.85)
            area = float(np.mean([s.instances.masks.area().sum() for s in samples]))
            best = {"instkit": float("inf"), "albumentationsx": float("inf")}
            for _ in range(repeats):
                for tool in best:
                    gc.collect()
                    start = time.perf_counter()
                    for k, sample in enumerate(samples):
                        if tool == "instkit":
                            ours(sample, seed=k)
                        else:
                            _raw_dense(raw, sample, k)
                    best[tool] = min(best[tool], (time.perf_counter() - start) / len(samples))
            for tool, seconds in best.items():
                rows.append({"case": f"(b) {count} instances of ~{side}px", "tool": tool,
                             "ms_per_sample": seconds * 1000, "total_object_area_px": area})
            curve.append({"count": count, "side": side, "area": area,
                          "instkit_ms": best["instkit"] * 1000,
                          "albumentationsx_ms": best["albumentationsx"] * 1000})
            if count == 100:
                speedup = best["albumentationsx"] / best["instkit"]
                targets.append({"claim": f"(b) 100 instances of ~{side}px: instkit over raw "
                                         "albumentationsx", "value": speedup,
                                "target": ">= 3", "met": speedup >= 3})
    return agree, curve


def _plot_curve(curve: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for side, marker in ((16, "o"), (64, "s")):
        points = [c for c in curve if c["side"] == side]
        counts = [c["count"] for c in points]
        axes[0].plot(counts, [c["instkit_ms"] for c in points], marker=marker,
                     label=f"instkit, ~{side}px objects")
        axes[0].plot(counts, [c["albumentationsx_ms"] for c in points], marker=marker,
                     linestyle="--", label=f"albumentationsx (dense), ~{side}px")
        axes[1].plot([c["area"] for c in points], [c["instkit_ms"] for c in points],
                     marker=marker, label=f"instkit, ~{side}px objects")
    axes[0].set(xscale="log", yscale="log", xlabel="instances per 640x640 image",
                ylabel="ms per sample",
                title="dense masks: instances x image area; instkit: per row")
    axes[1].set(xscale="log", yscale="log", xlabel="total object area (px)",
                ylabel="ms per sample", title="instkit: 4x larger objects cost about the same")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# --- (c) memory ---------------------------------------------------------------------------------

_MEMORY_CASE = r"""
import json, sys
import numpy as np
from instkit.instances import Instances
from instkit.masks import Masks
from instkit.sample import Sample
from instkit.transforms.presets import PRESETS
preset, count, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
size = (side, side)
xy = rng.uniform(0, side - 20, size=(count, 2))
polys = [[np.array([x, y, x + 14, y, x + 14, y + 11, x, y + 11])] for x, y in xy]
inst = Instances(image_size=size, labels=np.zeros(count, np.int64),
                 masks=Masks.from_polygons(polys, size))
sample = Sample.from_array(np.zeros((*size, 3), np.uint8), inst, 1)
kwargs = {"size": (640, 640)} if preset != "eval" else {"size": (800, 800)}
augment = PRESETS[preset](seed=0, **kwargs)
if augment.needs_pool:
    augment = augment.with_pool([sample])
out = augment(sample, seed=0)
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork + exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:")) / 1024
print(json.dumps({"rows": len(out.instances), "drops": len(out.meta.drops), "peak_mib": peak}))
"""


def _memory(quick: bool, rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> bool:
    cases = [("train", 1, 1024), ("yolo-seg", 5000, 1024), ("train", 5000, 1024)]
    if not quick:
        cases.append(("yolo-seg", 20, 8000))
    agree = True
    for preset, count, side in cases:
        proc = subprocess.run([sys.executable, "-c", _MEMORY_CASE, preset, str(count), str(side)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            agree = False
            rows.append({"case": f"(c) {count} polygons, {side}x{side}, {preset}",
                         "tool": "instkit", "error": proc.stderr.strip().splitlines()[-1]})
            continue
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        agree &= info["rows"] + info["drops"] >= 1
        rows.append({"case": f"(c) {count} polygons, {side}x{side}, {preset}", "tool": "instkit",
                     "peak_rss_mib": info["peak_mib"], "rows_out": info["rows"],
                     "drops": info["drops"]})
        if count == 1:  # the floor: interpreter, numpy, OpenCV, albumentationsx (and the torch
            continue    # it imports)
        if count == 5000:
            targets.append({"claim": f"(c) peak memory, 5,000 polygons 1024x1024, {preset}",
                            "value": info["peak_mib"], "target": "<= 1024 MiB",
                            "met": info["peak_mib"] <= 1024})
        else:
            targets.append({"claim": "(c) 8000x8000, 20 instances, yolo-seg completes",
                            "value": info["peak_mib"], "target": "completes", "met": True})
    return agree


def run(quick: bool = False) -> dict[str, Any]:
    import cv2

    cv2.setNumThreads(1)
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    agree_a, note_a = _race_ultralytics(quick, rows, targets)
    agree_b, curve = _race_counts(quick, rows, targets)
    # the full run's curve is kept beside its results; a quick run's goes to a temporary folder
    plot = (Path(tempfile.mkdtemp(prefix="bench-augment-")) / "augment-curve-quick.png" if quick
            else Path(__file__).resolve().parent / "results" / "augment-curve.png")
    _plot_curve(curve, plot)
    agree_c = _memory(quick, rows, targets)
    return result("augment", rows, agree=agree_a and agree_b and agree_c, quick=quick,
                  targets=targets,
                  notes=f"{note_a}. (b) flip + Affine + RandomResizedCrop(512), best of "
                        f"{2 if quick else 5} interleaved, curve in {plot.name}. (c) each case "
                        "in a fresh process (peak RSS includes the interpreter and libraries).")


if __name__ == "__main__":
    main("augment", run)

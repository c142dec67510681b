"""Time ``check_alignment`` (row and probe invariants) on a preset over 100 real samples.

    flock /tmp/instkit-bench.lock python tests/testing/bench_alignment.py --preset train --size 640

Samples: every image of tinycoco (train, val) and pose_minicoco (train, val), cycled to
``--samples``. Images are decoded before the clock starts; the time is the checker's (the
transform's calls included: 2 on the real image, bits + 2 on probe images per sample).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from instkit.io.coco import read_coco
from instkit.testing import check_alignment
from instkit.transforms.presets import evaluation, train_default, yolo_seg

DATA = Path(os.environ.get("INSTKIT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared"
                           / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["train", "eval", "yolo-seg"], default="train")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    sets = [read_coco(DATA / "tinycoco/annotations" / f"instances_{s}2017.json",
                      DATA / "tinycoco/images" / f"{s}2017") for s in ("train", "val")]
    sets += [read_coco(DATA / "pose_minicoco/annotations" / f"person_keypoints_{s}2017.json",
                       DATA / "pose_minicoco/images" / f"{s}2017") for s in ("train", "val")]
    pool = [d[i] for d in sets for i in range(len(d))]
    samples = [pool[i % len(pool)] for i in range(args.samples)]
    decoded = [sample.image.shape for sample in pool]  # decoded before the clock starts
    assert len(decoded) == len(pool)
    size = (args.size, args.size)
    transform = {"train": lambda: train_default(size, seed=0), "eval": lambda: evaluation(size),
                 "yolo-seg": lambda: yolo_seg(pool=sets[0], size=size, seed=0)}[args.preset]()
    start = time.perf_counter()
    for index, sample in enumerate(samples):  # the transform alone, once per sample
        transform(sample, seed=index)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    report = check_alignment(transform, samples, generated=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"preset": args.preset, "size": args.size, "samples": report.samples_checked,
                      "instances": report.instances_checked, "violations": len(report.violations),
                      "invariants": sorted(report.invariants()), "seconds": round(seconds, 2),
                      "transform_alone_seconds": round(plain, 2),
                      "per_sample_ms": round(1000 * seconds / max(report.samples_checked, 1), 1)}))


if __name__ == "__main__":
    main()

"""Validate a COCO dataset, repair it, convert it to YOLO-seg and back, and measure the loss.

    python examples/convert_and_validate.py ANN.json --images DIR [--out OUT]
    python examples/convert_and_validate.py            # a synthetic dataset with planted defects

Steps: ``validate_file`` lists every finding with its check code and place; ``fix=`` writes a
repaired copy (never over the input); the repaired file validates without errors; the dataset
goes to YOLO-seg (normalised polygons, one object per line: parts and holes joined into one
outline) and back, and the mask IoU per instance shows what came back (the writer's counts say
what the format could not hold: crowd flags, keypoints).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

import instkit
from instkit.io.yolo import read_yolo, write_yolo
from instkit.synthetic import write_dataset
from instkit.validate import validate_file


def planted_defects(out: Path) -> tuple[Path, Path]:
    """A synthetic dataset with a wrong bbox, a wrong area and a duplicated annotation id."""
    source = write_dataset(out / "source", num_images=6, seed=5)
    document = json.loads(source.read_text())
    annotations = document["annotations"]
    annotations[0]["bbox"] = [x + 7 for x in annotations[0]["bbox"]]
    annotations[1]["area"] = 3.0
    annotations[2]["id"] = annotations[3]["id"]
    broken = out / "source" / "broken.json"
    broken.write_text(json.dumps(document))
    return broken, out / "source"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path, nargs="?", help="COCO file (default: synthetic)")
    parser.add_argument("--images", type=Path, help="image folder")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="instkit-cv-")))
    args = parser.parse_args()
    if args.annotations is None:
        args.annotations, args.images = planted_defects(args.out)

    report = validate_file(args.annotations, images=args.images, progress=False,
                           fix=args.out / "fixed.json")
    print(report.to_text().splitlines()[0])
    for code, findings in sorted(report.by_code().items()):
        print(f"  {code}: {len(findings)}  e.g. {findings[0].message}")
    print(f"repairs written to {args.out / 'fixed.json'}: {len(report.changes)} change(s)")
    recheck = validate_file(args.out / "fixed.json", images=args.images, progress=False)
    print(f"fixed file: {len(recheck.errors)} error(s)")

    dataset = instkit.read_coco(args.out / "fixed.json", args.images)
    counts = write_yolo(dataset, args.out / "yolo", dataset.categories)
    print("to YOLO-seg:", ", ".join(f"{k}={v}" for k, v in counts.items() if v))
    back = {s.meta.file_name and Path(s.meta.file_name).stem: s for s in read_yolo(args.out / "yolo")}
    ious = []
    for sample in dataset:
        other = back.get(Path(sample.meta.file_name).stem)
        if other is None or not len(sample.instances):
            continue
        keep = ~sample.instances.iscrowd
        mine, theirs = sample.instances.masks[keep], other.instances.masks
        if len(mine) and len(theirs):
            iou = np.asarray(mask_utils.iou(theirs.to_rle(), mine.to_rle(), [0] * len(mine)))
            ious.extend(iou.max(axis=0).tolist())
    print(f"COCO -> YOLO-seg -> COCO: {len(ious)} instances, mask IoU median "
          f"{np.median(ious):.3f}, min {np.min(ious):.3f}")


if __name__ == "__main__":
    main()

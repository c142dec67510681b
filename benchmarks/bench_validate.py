"""instkit validate vs pycocotools COCO() load + annToMask on every annotation.

The input is a val2017-sized file (36,000 polygon/RLE annotations; --quick: 3,600) made by
replicating tinycoco's real annotations across new image ids, with every 1000th annotation's
area planted wrong. Agreement: the annotations instkit reports as ``area-mismatch`` are exactly
those where pycocotools' decoded mask area differs from the file's area beyond the same tolerance.
Target: instkit's time <= 2x the peer's.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TINYCOCO, best_time, main, result  # noqa: E402

SHARED = TINYCOCO / "annotations"


def build(target_annotations: int, path: Path) -> int:
    source = json.loads((SHARED / "instances_train2017.json").read_text())
    images, annotations = [], []
    next_image, next_ann = 1, 1
    while len(annotations) < target_annotations:
        remap = {}
        for image in source["images"]:
            entry = dict(image, id=next_image, file_name=f"{next_image:012d}.jpg")
            remap[image["id"]] = next_image
            next_image += 1
            images.append(entry)
        for ann in source["annotations"]:
            entry = copy.deepcopy(ann)
            entry["id"], entry["image_id"] = next_ann, remap[ann["image_id"]]
            if next_ann % 1000 == 0 and not ann["iscrowd"]:
                entry["area"] = ann["area"] * 3 + 50
            next_ann += 1
            annotations.append(entry)
    document = {"info": source.get("info", {}), "images": images, "annotations": annotations,
                "categories": source["categories"]}
    path.write_text(json.dumps(document))
    return len(annotations)


def peer(path: Path) -> set[int]:
    import contextlib
    import io

    from pycocotools.coco import COCO

    from instkit.validate.checks import AREA_TOLERANCE_FRACTION, AREA_TOLERANCE_PX

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    bad = set()
    for ann in coco.dataset["annotations"]:
        area = int(coco.annToMask(ann).sum())
        if not ann["iscrowd"] and abs(ann["area"] - area) > max(AREA_TOLERANCE_PX, AREA_TOLERANCE_FRACTION * area):
            bad.add(ann["id"])
    return bad


def ours(path: Path) -> set[int]:
    from instkit.validate import validate_file

    report = validate_file(path, progress=False)
    return {f.location.annotation_id for f in report.findings if f.code == "area-mismatch"}  # type: ignore[misc]


def run(quick: bool = False) -> dict[str, Any]:
    n = 3600 if quick else 36000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        count = build(n, path)
        theirs, mine = peer(path), ours(path)
        agree = theirs == mine and len(mine) > 0
        repeat = 1 if not quick else 2
        t_peer = best_time(lambda: peer(path), repeat=repeat, warmup=0)
        t_ours = best_time(lambda: ours(path), repeat=repeat, warmup=0)
    ratio = t_ours / t_peer
    rows = [
        {"case": f"{count} annotations", "tool": "pycocotools COCO() + annToMask", "seconds": t_peer},
        {"case": f"{count} annotations", "tool": "instkit validate (all checks)", "seconds": t_ours,
         "ratio_vs_peer": ratio},
    ]
    targets = [{"claim": "instkit validate time / pycocotools load+rasterise", "value": ratio,
                "target": "<= 2.0", "met": ratio <= 2.0}]
    return result("validate", rows, agree=agree, quick=quick, targets=targets,
                  notes=f"planted area defects found by both: {len(mine)}")


if __name__ == "__main__":
    main("validate", run)

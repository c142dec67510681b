"""Small shard sets for the shard tests: a synthetic COCO file, instkit shards of it, SA-1B-style
tars and several COCO files cut from it."""

from __future__ import annotations

import functools
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def small_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic images (64x96 PNG) with polygons and crowd RLE; the annotation file."""
    from instkit.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("coco"), num_images=24, seed=5,
                         image_size=(64, 96), max_instances=5)


@pytest.fixture(scope="session")
def small_shards(small_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_coco`` as instkit shards of 4 samples (6 shards)."""
    from instkit.io.coco import read_coco
    from instkit.shards import convert_to_shards

    out = tmp_path_factory.mktemp("shards") / "set"
    convert_to_shards(small_coco, "coco", out, shard_size=4,
                      opener=functools.partial(read_coco, small_coco), engine="local",
                      workers=1, address=None, progress=False)
    return out


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def sa1b_rows(coco_file: Path) -> list[tuple[dict[str, Any], bytes]]:
    """The samples of a COCO file as SA-1B per-image JSON (image_id, RLE masks, no category)
    with their image bytes."""
    from instkit.io.coco import read_coco, sample_annotations

    dataset = read_coco(coco_file)
    rows = []
    for sample in dataset:
        annotations = []
        for ann in sample_annotations(sample, dataset.categories, mask_format="rle"):
            annotations.append({"id": ann["id"], "segmentation": ann["segmentation"],
                                "bbox": ann["bbox"], "area": ann["area"],
                                "predicted_iou": 0.9, "stability_score": 0.95,
                                "point_coords": [[1.0, 2.0]], "crop_box": [0, 0, 96, 64]})
        h, w = sample.image_size
        image = {"image_id": sample.image_id, "width": w, "height": h,
                 "file_name": f"sa_{sample.image_id}.png"}
        assert sample.image_path is not None
        rows.append(({"image": image, "annotations": annotations},
                     Path(sample.image_path).read_bytes()))
    return rows


def write_sa1b_tars(folder: Path, rows: list[tuple[dict[str, Any], bytes]], per_tar: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(rows), per_tar):
        with tarfile.open(folder / f"sa_{k // per_tar:06d}.tar", "w") as archive:
            for row, image in rows[k:k + per_tar]:
                stem = f"sa_{row['image']['image_id']}"
                add_member(archive, f"{stem}.png", image)
                add_member(archive, f"{stem}.json", json.dumps(row).encode())
    return folder


@pytest.fixture(scope="session")
def sa1b_dir(small_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_coco`` as 3 SA-1B-style tars of 8 images."""
    return write_sa1b_tars(tmp_path_factory.mktemp("sa1b") / "tars", sa1b_rows(small_coco), 8)


def split_coco(document: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """A COCO document cut into ``parts`` documents by image (each keeps its annotations)."""
    out = []
    images = document["images"]
    size = -(-len(images) // parts)
    for k in range(parts):
        chunk = images[k * size:(k + 1) * size]
        ids = {image["id"] for image in chunk}
        out.append({"images": chunk,
                    "annotations": [a for a in document["annotations"] if a["image_id"] in ids],
                    "categories": document["categories"]})
    return out

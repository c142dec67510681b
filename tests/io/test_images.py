"""One rule for writing a sample's image file (instkit.io.images.copy_image), used by every
writer: bytes copied as they are when already in the destination's format, else encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from instkit.io.coco import read_coco, write_coco
from instkit.io.images import copy_image, encoded_format
from instkit.io.yolo import write_yolo
from instkit.sample import Sample


def test_writers_copy_jpeg_bytes_instead_of_encoding_again(tinycoco: dict[str, Path],
                                                           tmp_path: Path) -> None:
    dataset = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    samples = [dataset[k] for k in range(3)]
    write_coco(samples, tmp_path / "coco" / "ann.json", dataset.categories,
               images_dir=tmp_path / "coco" / "images")
    write_yolo(samples, tmp_path / "yolo", dataset.categories)
    for sample in samples:
        original = Path(sample.image_path).read_bytes()
        name = sample.meta.file_name
        assert (tmp_path / "coco" / "images" / name).read_bytes() == original
        assert (tmp_path / "yolo" / "images" / name).read_bytes() == original


def test_a_different_format_is_encoded_by_the_suffix(tinycoco: dict[str, Path],
                                                     tmp_path: Path) -> None:
    sample = read_coco(tinycoco["val_json"], tinycoco["val_images"])[0]
    from_pixels = Sample.from_array(np.asarray(sample.image), sample.instances)  # no file
    for source, suffix, name in ((sample, ".png", "PNG"), (sample, ".bmp", "BMP"),
                                 (from_pixels, ".jpg", "JPEG")):
        target = tmp_path / f"a{suffix}"
        copy_image(source, target)
        assert encoded_format(target.read_bytes()) == name
        with Image.open(target) as written:
            assert np.abs(np.asarray(written.convert("RGB"), dtype=np.int16)
                          - sample.image).mean() < (6 if name == "JPEG" else 1e-9)
    # never over the sample's own file, and no temporary left behind
    before = Path(sample.image_path).read_bytes()
    copy_image(sample, sample.image_path)
    assert Path(sample.image_path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bmp", "a.jpg", "a.png"]

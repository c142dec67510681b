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


def test_an_empty_mask_is_refused_by_write_coco_and_counted_by_convert(
        tinycoco: dict[str, Path], tmp_path: Path) -> None:
    """A mask that covers no pixel cannot be a COCO annotation (read_coco refuses it): write_coco
    names it instead of writing a file instkit cannot read back; the registry's COCO and LVIS
    writers leave it out and count it."""
    import pytest

    from instkit.errors import InstkitError
    from instkit.io import registry
    from instkit.masks import BitmapMask, Masks

    sample = read_coco(tinycoco["val_json"], tinycoco["val_images"])[0]
    inst = sample.instances
    items = list(inst.masks.items)
    items[1] = BitmapMask(np.zeros((3, 3), dtype=bool), (0, 0))
    broken = sample.replace(instances=inst.replace(masks=Masks(items, inst.image_size)))
    with pytest.raises(InstkitError, match="covers no pixel") as caught:
        write_coco([broken], tmp_path / "a.json", sample.meta.categories)
    assert caught.value.location.annotation_id == int(inst.ids[1])
    assert not (tmp_path / "a.json").exists()
    for fmt in ("coco", "lvis"):
        counts = registry.save([broken], tmp_path / fmt / "ann.json", format=fmt,
                               categories=sample.meta.categories)
        assert counts["empty_masks_dropped"] == 1
        back = registry.open(tmp_path / fmt / "ann.json")
        assert len(back[0].instances) == len(inst) - 1

"""Sample: lazy images, EXIF orientation, colour conversions recorded as notes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from instkit import Instances, Sample, SampleMeta, load_image
from instkit.errors import ImageError, InstancesError


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10] = 255  # a white band on the left
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, "rotated.jpg", image, exif=exif, quality=100)
    loaded, notes = load_image(path)
    assert loaded.shape == (40, 20, 3)
    assert loaded[:10].mean() > 200 and loaded[-10:].mean() < 50  # band now on top
    assert notes == ["applied EXIF orientation 6"]


@pytest.mark.parametrize(
    ("mode", "note"),
    [("L", "converted grayscale to RGB"), ("RGBA", "dropped the alpha channel of a RGBA image"),
     ("P", "converted a palette image to RGB")],
)
def test_modes_become_rgb_with_a_note(tmp_path, mode, note):
    image = Image.fromarray(np.full((6, 5, 3), 120, np.uint8)).convert(mode)
    loaded, notes = load_image(_save(tmp_path, f"x_{mode}.png", image))
    assert loaded.shape == (6, 5, 3) and loaded.dtype == np.uint8
    assert note in notes


def test_sixteen_bit_is_scaled(tmp_path):
    data = np.full((4, 4), 65535, dtype=np.uint16)
    data[0, 0] = 0
    path = _save(tmp_path, "deep.png", Image.fromarray(data))
    loaded, notes = load_image(path)
    assert loaded[1, 1].tolist() == [255, 255, 255] and loaded[0, 0].tolist() == [0, 0, 0]
    assert any("16-bit" in note for note in notes)


def test_lazy_sample_loads_once_and_checks_size(tmp_path):
    path = _save(tmp_path, "gray.png", Image.fromarray(np.zeros((8, 6), np.uint8)))
    sample = Sample(Instances.empty((8, 6)), 7, SampleMeta(), image_path=path)
    assert sample.image.shape == (8, 6, 3)
    assert sample.image is sample.image
    assert sample.meta.notes == ["converted grayscale to RGB"]
    wrong = Sample(Instances.empty((9, 6)), 8, SampleMeta(), image_path=path)
    with pytest.raises(ImageError, match=r"image is 8x6 .* annotation says 9x6.*image_id=8"):
        _ = wrong.image


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="not found.*nothere.png"):
        load_image(tmp_path / "nothere.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="cannot be read.*bad.jpg"):
        load_image(bad)


def test_from_array_checks_shape_and_replace_keeps_meta_separate():
    inst = Instances.empty((4, 5))
    with pytest.raises(ImageError, match=r"\(H, W, 3\) uint8"):
        Sample.from_array(np.zeros((4, 5), np.uint8), inst)
    with pytest.raises(InstancesError, match="differs"):
        Sample.from_array(np.zeros((5, 5, 3), np.uint8), inst)
    sample = Sample.from_array(np.zeros((4, 5, 3), np.uint8), inst, image_id=3)
    other = sample.replace(image=np.ones((4, 5, 3), np.uint8))
    other.meta.notes.append("changed")
    assert sample.meta.notes == [] and other.image.max() == 1 and sample.image.max() == 0

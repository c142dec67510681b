"""Sample: lazy images, EXIF orientation, colour conversions recorded as notes."""

from __future__ import annotations

from pathlib import Path

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


# --- the decompression-bomb limit ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A real 14000x14000 PNG (196 M pixels, past Pillow's limit) of 24 KB: a decompression bomb."""
    folder = tmp_path_factory.mktemp("bomb")
    Image.new("1", (14000, 14000)).save(folder / "bomb.png")
    document = {"images": [{"id": 1, "file_name": "bomb.png", "width": 14000, "height": 14000}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                 "bbox": [0, 0, 10, 10], "area": 100,
                                 "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}],
                "categories": [{"id": 1, "name": "thing"}]}
    import json

    (folder / "ann.json").write_text(json.dumps(document))
    return folder


@pytest.fixture
def no_limit_set(monkeypatch):
    monkeypatch.setenv("INSTKIT_MAX_IMAGE_PIXELS", "")  # the default; restored after
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after


def test_a_decompression_bomb_is_a_clear_error_with_the_override_named(bomb, no_limit_set):
    from instkit.sample import ImageTooLargeError

    with pytest.raises(ImageTooLargeError, match=r"196,000,000 pixels, more than the limit of 178,956,970.*INSTKIT_MAX_IMAGE_PIXELS") as info:
        load_image(bomb / "bomb.png")
    assert isinstance(info.value, ImageError) and str(bomb / "bomb.png") in str(info.value)


def test_the_limit_can_be_lowered_raised_and_lifted(tmp_path, bomb, no_limit_set, monkeypatch):
    from instkit.errors import InstkitError
    from instkit.sample import ImageTooLargeError, open_image, set_max_image_pixels

    Image.new("RGB", (30, 20)).save(tmp_path / "small.png")
    set_max_image_pixels(599)
    with pytest.raises(ImageTooLargeError, match="30x20 = 600 pixels, more than the limit of 599"):
        load_image(tmp_path / "small.png")
    set_max_image_pixels(600)
    assert load_image(tmp_path / "small.png")[0].shape == (20, 30, 3)
    monkeypatch.setenv("INSTKIT_MAX_IMAGE_PIXELS", "200000000")
    with open_image(bomb / "bomb.png") as opened:  # header only: nothing is decoded
        assert opened.size == (14000, 14000)
    set_max_image_pixels(None)
    with open_image(bomb / "bomb.png") as opened:
        assert opened.size == (14000, 14000)
    monkeypatch.setenv("INSTKIT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InstkitError, match="INSTKIT_MAX_IMAGE_PIXELS must be a whole number"):
        load_image(tmp_path / "small.png")


def test_show_and_report_refuse_the_bomb_clearly(bomb, tmp_path, no_limit_set):
    from click.testing import CliRunner

    from instkit.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["show", str(bomb / "ann.json"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2, result.output  # before: a DecompressionBombError traceback
    assert "decompression bombs" in result.output and "--max-image-pixels" in result.output
    result = runner.invoke(cli, ["--max-image-pixels", "100", "show", str(bomb / "ann.json"),
                                 "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "more than the limit of 100" in result.output
    result = runner.invoke(cli, ["report", "dataset", str(bomb / "ann.json"), "--no-validate",
                                 "--quiet", "--workers", "1", "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output  # the page says why the picture is missing
    assert "decompression bombs" in (tmp_path / "report" / "data.js").read_text()


def test_validate_images_reports_the_bomb(bomb, no_limit_set, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from instkit.cli import cli

    monkeypatch.setenv("INSTKIT_CRASH_DIR", str(tmp_path))  # an internal error would land here

    result = CliRunner().invoke(cli, ["validate", str(bomb / "ann.json"), "--images", str(bomb)])
    assert result.exit_code in (1, 2) and "decompression bombs" in result.output, result.output


def test_hf_rows_refuse_the_bomb(bomb, no_limit_set):
    from instkit.io.hf import _image_from_row
    from instkit.sample import ImageTooLargeError

    with pytest.raises(ImageTooLargeError, match="INSTKIT_MAX_IMAGE_PIXELS"):
        _image_from_row({"bytes": (bomb / "bomb.png").read_bytes(), "path": "bomb.png"}, None)


def test_jpegs_decoded_by_opencv_are_pillows_pixels(shared_data):
    from PIL import ImageOps

    import instkit.sample as sample_module

    paths = sorted(shared_data.glob("**/*.jpg"))
    assert len(paths) >= 30
    fast = plain = 0
    for path in paths:
        array, notes = load_image(path)
        with Image.open(path) as opened:
            fast += sample_module._opencv_jpeg(opened) is not None
            expect = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        plain += sample_module._plain_jpeg_size(path.read_bytes()) is not None
        assert array.flags.writeable and not notes
        np.testing.assert_array_equal(array, expect, err_msg=str(path))
    # the OpenCV paths were the ones compared (header read by instkit, and by Pillow)
    assert fast == plain == len(paths)


def _with_exif(jpeg: bytes, orientation: int, little: bool = True) -> bytes:
    """``jpeg`` with an EXIF block whose first directory holds one orientation tag."""
    order = "little" if little else "big"
    tiff = ((b"II" if little else b"MM") + (42).to_bytes(2, order) + (8).to_bytes(4, order)
            + (1).to_bytes(2, order) + (0x0112).to_bytes(2, order) + (3).to_bytes(2, order)
            + (1).to_bytes(4, order) + orientation.to_bytes(2, order) + bytes(2)
            + bytes(4))
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def _pillow_pixels(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as opened:
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))


@pytest.mark.parametrize("orientation,little,plain", [(1, True, True), (1, False, True),
                                                      (6, True, False), (3, False, False)])
def test_jpeg_header_read_by_instkit_leaves_rotations_to_pillow(shared_data, tmp_path,
                                                                orientation, little, plain):
    import instkit.sample as sample_module

    source = sorted(shared_data.glob("**/*.jpg"))[0].read_bytes()
    path = tmp_path / "exif.jpg"
    path.write_bytes(_with_exif(source, orientation, little))
    assert (sample_module._plain_jpeg_size(path.read_bytes()) is not None) == plain
    array, notes = load_image(path)
    np.testing.assert_array_equal(array, _pillow_pixels(path))
    assert bool(notes) == (not plain)  # "applied EXIF orientation N"


def test_grayscale_and_cmyk_jpegs_take_pillows_path(tmp_path):
    import instkit.sample as sample_module

    rng = np.random.default_rng(3)
    for mode in ("L", "CMYK"):
        path = tmp_path / f"{mode}.jpg"
        channels = {"L": (), "CMYK": (4,)}[mode]
        Image.fromarray(rng.integers(0, 255, (20, 30, *channels), dtype=np.uint8),
                        mode=mode).save(path, quality=90)
        assert sample_module._plain_jpeg_size(path.read_bytes()) is None
        np.testing.assert_array_equal(load_image(path)[0], _pillow_pixels(path))


def test_jpeg_headers_mutated_read_as_pillows_path_reads_them(shared_data, tmp_path,
                                                              monkeypatch):
    """Mutations of real JPEG headers: instkit's header reader gives Pillow's pixels or the
    same refusal as Pillow's path (never another outcome, never another exception)."""
    import instkit.sample as sample_module

    sources = sorted(shared_data.glob("**/*.jpg"))[:4]
    rng = np.random.default_rng(17)
    outcomes = {"same pixels": 0, "both refused": 0}
    plain_reader = sample_module._plain_jpeg
    for n in range(160):
        data = bytearray(sources[n % len(sources)].read_bytes())
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(2, 700))
            data[at] = int(rng.integers(0, 256))
        path = tmp_path / f"m{n}.jpg"
        path.write_bytes(bytes(data))
        results = []
        for reader in (plain_reader, lambda *args: None):
            monkeypatch.setattr(sample_module, "_plain_jpeg", reader)
            try:
                results.append(load_image(path)[0])
            except ImageError:
                results.append(None)
        mine, pillows = results
        if mine is None or pillows is None:
            assert mine is None and pillows is None, f"mutation {n}: one path refused"
            outcomes["both refused"] += 1
        else:
            np.testing.assert_array_equal(mine, pillows, err_msg=f"mutation {n}")
            outcomes["same pixels"] += 1
    assert min(outcomes.values()) > 0, outcomes


def test_a_truncated_jpeg_is_refused_not_filled_with_gray(shared_data, tmp_path):
    source = sorted(shared_data.glob("**/*.jpg"))[0]
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(source.read_bytes()[:20000])
    with pytest.raises(ImageError, match="truncated") as info:
        load_image(cut)
    assert "cut.jpg" in str(info.value)


def test_a_jpeg_header_claiming_too_many_pixels_is_refused_before_decoding(shared_data, tmp_path,
                                                                          no_limit_set):
    """The header read by instkit (not Pillow) still applies the pixel limit first."""
    import instkit.sample as sample_module
    from instkit.sample import ImageTooLargeError

    data = bytearray(sorted(shared_data.glob("**/*.jpg"))[0].read_bytes())
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):  # walk the markers to the frame header
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    data[at + 5 : at + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(data))
    assert sample_module._plain_jpeg_size(bytes(data)) == (60000, 60000)
    with pytest.raises(ImageTooLargeError, match="huge.jpg"):
        load_image(path)

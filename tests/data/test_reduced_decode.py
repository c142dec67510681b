"""Reduced-size JPEG decoding (libjpeg DCT scaling through Pillow's draft): the image is
decoded at 1/k and the instances follow it, so after the transform's resize boxes and masks agree
with the full decode's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("albumentations")

from PIL import Image  # noqa: E402

from instkit.data import InstanceDataset  # noqa: E402
from instkit.data.dataset import leading_resize, reduced_sample  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402
from instkit.sample import load_image  # noqa: E402
from instkit.transforms.presets import evaluation, train_default  # noqa: E402

SIZE = (150, 150)


def test_load_image_decodes_at_a_jpeg_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "a.jpg"
    Image.fromarray(rng.integers(0, 256, (401, 250, 3), dtype=np.uint8)).save(path)
    full, _ = load_image(path)
    assert full.shape == (401, 250, 3)
    half, notes = load_image(path, at_least=(200, 120))  # 1/2: ceil(401 / 2) = 201
    assert half.shape == (201, 125, 3) and "JPEG DCT scaling" in notes[0]
    assert load_image(path, at_least=(250, 120))[0].shape == full.shape  # 1/2 would be too small
    assert load_image(path, at_least=(50, 30))[0].shape == (51, 32, 3)  # 1/8
    png = tmp_path / "a.png"
    Image.fromarray(full).save(png)
    assert load_image(png, at_least=(50, 30))[0].shape == full.shape


def test_reduced_decode_follows_exif_orientation(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stored = Image.fromarray(rng.integers(0, 256, (160, 320, 3), dtype=np.uint8))  # W 320, H 160
    exif = stored.getexif()
    exif[0x0112] = 6  # displayed turned: 160 wide, 320 high
    path = tmp_path / "turned.jpg"
    stored.save(path, exif=exif)
    full, _ = load_image(path)
    assert full.shape == (320, 160, 3)
    reduced, _ = load_image(path, at_least=(80, 40))  # displayed H >= 80, W >= 40: 1/4
    assert reduced.shape == (80, 40, 3)


def test_leading_resize() -> None:
    assert leading_resize(evaluation(SIZE)) == SIZE
    assert leading_resize(train_default(SIZE)) is None  # flip and colour come first
    assert leading_resize(None) is None


def _paired(a, b):  # noqa: ANN001, ANN202
    ids_a, ids_b = list(a.instances.ids), list(b.instances.ids)
    assert sorted(ids_a) == sorted(ids_b)
    order = [ids_b.index(i) for i in ids_a]
    return a.instances, b.instances[np.array(order, dtype=np.int64)]


def check_agreement(full_data: InstanceDataset, reduced_data: InstanceDataset) -> int:
    reduced_count = 0
    for index in range(len(full_data)):
        a, b = full_data[index], reduced_data[index]
        assert a.image_size == b.image_size == SIZE
        reduced_count += any("DCT scaling" in note for note in b.meta.notes)
        if not len(a.instances):
            continue
        x, y = _paired(a, b)
        assert np.abs(x.boxes - y.boxes).max() <= 2.0
        dense_a, dense_b = x.masks.to_dense(), y.masks.to_dense()
        inter = (dense_a & dense_b).sum()
        union = (dense_a | dense_b).sum()
        assert inter / union >= 0.85
        assert np.abs(a.image.astype(np.int16) - b.image).mean() < 12
    return reduced_count


def test_reduced_decode_agrees_with_the_full_decode(tinycoco: dict[str, Path]) -> None:
    data = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    transform = evaluation(SIZE)
    reduced = check_agreement(InstanceDataset(data, transform),
                              InstanceDataset(data, transform, reduced_decode=True))
    assert reduced >= len(data) // 2  # the check saw reduced decodes


def test_agreement_check_fails_when_instances_are_not_scaled(
        tinycoco: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import instkit.data.dataset as dataset_module
    from instkit.sample import Sample

    def image_only(sample, at_least):  # noqa: ANN001, ANN202
        out = reduced_sample(sample, at_least)
        if out is sample:
            return out
        # the reduced image with the original instances pinned to its top-left corner
        from instkit.masks import Masks

        inst = sample.instances
        h, w = out.image_size
        return Sample.from_array(out.image, inst.replace(
            image_size=(h, w), masks=Masks(list(inst.masks.items), (h, w))), out.image_id,
            out.meta)

    monkeypatch.setattr(dataset_module, "reduced_sample", image_only)
    data = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    transform = evaluation(SIZE)
    with pytest.raises(AssertionError):
        check_agreement(InstanceDataset(data, transform),
                        InstanceDataset(data, transform, reduced_decode=True))

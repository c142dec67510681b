"""Collator image path: the OpenCV resize against torch's bilinear kernel (the processor's), and
``defer_images=True`` (uint8 until ``batch.to(device)``) against the immediate collator."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from instkit.data import Collator  # noqa: E402
from instkit.data.collate import RfDetrBatch, write_images  # noqa: E402
from instkit.synthetic import categories, make_samples  # noqa: E402

SIZE = {"shortest_edge": 100, "longest_edge": 150}


def varied() -> list:
    out = []
    for k, size in enumerate([(96, 128), (128, 80), (72, 72)]):
        out += make_samples(num_images=1, seed=30 + k, image_size=size, crowd_probability=0.0)
    return out


@pytest.mark.parametrize("out_size", [(150, 200), (37, 53), (96, 128), (200, 61)])
def test_resize_equals_torch_bilinear(out_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = torch.full((3, out_size[0] + 3, out_size[1] + 5), 7.0)
    write_images([image], [out_size], mean, std, [out[:, : out_size[0], : out_size[1]]])
    planar = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expect = F.interpolate(planar, size=out_size, mode="bilinear", align_corners=False)[0]
    expect = (expect - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(out[:, : out_size[0], : out_size[1]], expect, atol=1e-4)
    # nothing written outside the view
    assert (out[:, out_size[0] :] == 7).all() and (out[:, :, out_size[1] :] == 7).all()


def test_resize_check_fails_on_another_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    import instkit.data.collate as collate

    real = cv2.resize
    monkeypatch.setattr(collate.cv2, "resize",
                        lambda src, size, dst=None, interpolation=None:
                        real(src, size, dst=dst, interpolation=cv2.INTER_NEAREST))
    with pytest.raises(AssertionError):
        test_resize_equals_torch_bilinear((150, 200))


def assert_same(a: RfDetrBatch, b: RfDetrBatch) -> None:
    assert list(a) == list(b)
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["pixel_mask"], b["pixel_mask"])
    for x, y in zip(a["labels"], b["labels"], strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_deferred_batch_equals_the_immediate_one() -> None:
    samples = varied()
    now = Collator("rfdetr", size=SIZE)(samples)
    later = Collator("rfdetr", size=SIZE, defer_images=True)(samples)
    assert later.pending is not None
    # the collated batch holds no float image: only the packed uint8 images
    assert later.pending.region.dtype == torch.uint8
    assert "pixel_values" not in dict(dict.items(later))
    # nor any mask grid: the masks stay crops until the device
    assert all("masks" not in label for label in dict.__getitem__(later, "labels"))
    assert later.pending.masks is not None and later.pending.masks.crops.dtype == torch.uint8
    # pickled as DataLoader workers do, still deferred; built by .to(device)
    moved = pickle.loads(pickle.dumps(later))
    assert moved.pending is not None
    assert_same(moved.to("cpu"), now)
    # read as a dict (model(**batch)): built in place, once
    def unpack(**kwargs: object) -> dict[str, object]:
        return kwargs

    seen = unpack(**later)
    assert later.pending is None and sorted(seen) == ["labels", "pixel_mask", "pixel_values"]
    assert_same(later, now)
    assert later.info.image_ids == now.info.image_ids


def test_deferred_check_fails_on_a_wrong_normalisation() -> None:
    samples = varied()
    now = Collator("rfdetr", size=SIZE)(samples)
    later = Collator("rfdetr", size=SIZE, defer_images=True, image_std=(0.5, 0.5, 0.5))(samples)
    with pytest.raises(AssertionError):
        assert_same(later.to("cpu"), now)


def test_defer_images_is_for_model_targets_only() -> None:
    with pytest.raises(ValueError, match="defer_images"):
        Collator("instances", defer_images=True)


def assert_same_torchvision(a: tuple, b: tuple) -> None:
    images_a, targets_a = a
    images_b, targets_b = b
    assert len(images_a) == len(images_b) == len(targets_a) == len(targets_b)
    for x, y in zip(images_a, images_b, strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, y)
    for x, y in zip(targets_a, targets_b, strict=True):
        assert sorted(x) == sorted(y)
        for key in x:
            assert torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("size", [None, SIZE, (120, 90)])
def test_deferred_maskrcnn_batch_equals_the_immediate_one(size: object) -> None:
    samples = varied()
    now = Collator("maskrcnn", size=size)(samples)
    later = Collator("maskrcnn", size=size, defer_images=True)(samples)
    assert later.pending is not None and later.pending.region.dtype == torch.uint8
    # no float image and no mask grid exists yet: the targets wait for their masks
    assert tuple.__getitem__(later, 0) == []
    assert all("masks" not in t for t in tuple.__getitem__(later, 1))
    moved = pickle.loads(pickle.dumps(later))  # as DataLoader workers send it
    assert moved.pending is not None
    built = moved.to("cpu")
    assert built.pending is None and sum(len(t["masks"]) for t in built.targets) > 0
    assert_same_torchvision(built, now)
    # read where it is (unpacking, as a training loop does): built in place, once
    images, targets = later
    assert later.pending is None and images is later.images
    assert_same_torchvision((images, targets), now)
    assert later.info.image_ids == now.info.image_ids


def test_deferred_maskrcnn_check_fails_on_a_wrong_mask() -> None:
    samples = varied()
    now = Collator("maskrcnn", size=SIZE)(samples)
    later = Collator("maskrcnn", size=SIZE, defer_images=True)(samples).to("cpu")
    later.targets[0]["masks"][0, 0, 0] ^= 1
    with pytest.raises(AssertionError):
        assert_same_torchvision(later, now)


def test_deferred_keypointrcnn_batch_equals_the_immediate_one(
        pose_minicoco: dict[str, Path]) -> None:
    from instkit.io.coco import read_coco

    dataset = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    samples = [dataset[i] for i in range(3)]
    now = Collator("keypointrcnn", size=SIZE)(samples)
    later = Collator("keypointrcnn", size=SIZE, defer_images=True)(samples)
    assert later.pending is not None and later.pending.crops is None
    assert_same_torchvision(pickle.loads(pickle.dumps(later)).to("cpu"), now)


def test_rfdetr_trains_on_a_deferred_batch() -> None:
    pytest.importorskip("transformers")
    from instkit.models import build_model

    torch.manual_seed(0)
    adapter = build_model("rfdetr", categories(), tiny=True)
    samples = make_samples(2, seed=5, image_size=(96, 96), max_instances=3, crowd_probability=0.0)
    options = adapter.collator_options()
    model = adapter.model.train()
    batch = Collator("rfdetr", **options, defer_images=True)(samples).to("cpu")
    torch.manual_seed(1)  # the loss samples random points
    loss, parts = adapter.loss(model, batch)
    torch.manual_seed(1)
    reference, _ = adapter.loss(model, Collator("rfdetr", **options)(samples))
    assert torch.isfinite(loss) and parts
    assert batch["pixel_values"].dtype == torch.float32
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)

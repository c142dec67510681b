"""Collator: oracles are the transformers RfDetrImageProcessor and torchvision's detection
reference semantics (ConvertCocoPolysToMask), on synthetic and real COCO data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from instkit.data import CollateError, Collator, resized_size  # noqa: E402
from instkit.data.packing import mask_crop  # noqa: E402
from instkit.instances import Instances  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402
from instkit.masks import (  # noqa: E402
    BitmapMask,
    Masks,
    PolygonMask,
    decode_rle_counts,
    rle_crop,
)
from instkit.sample import Sample  # noqa: E402
from instkit.synthetic import make_samples  # noqa: E402
from instkit.testing import strategies as ist  # noqa: E402
from tests.conftest import available_devices  # noqa: E402

DEVICES = available_devices()


# --- helpers ----------------------------------------------------------------------------------


def coco_target(sample: Sample) -> dict[str, Any]:
    """The sample as the COCO annotation dict the transformers processor takes (exact masks:
    polygons stay polygons, other forms go as uncompressed RLE, category_id = instkit label)."""
    inst = sample.instances
    assert inst.masks is not None
    counts = inst.masks.rle_counts()
    annotations = []
    for i in range(len(inst)):
        item = inst.masks.items[i]
        if isinstance(item, PolygonMask):
            seg: Any = [part.tolist() for part in item.parts]
        else:
            seg = {"size": list(inst.image_size), "counts": decode_rle_counts(counts[i]).tolist()}
        x0, y0, x1, y1 = (float(v) for v in inst.boxes[i])
        annotations.append({
            "id": int(inst.ids[i]), "image_id": sample.image_id,
            "category_id": int(inst.labels[i]), "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": float(inst.masks[i].area()[0]), "iscrowd": int(inst.iscrowd[i]),
            "segmentation": seg,
        })
    return {"image_id": sample.image_id, "annotations": annotations}


def without_crowd(sample: Sample) -> Sample:
    # The processor pairs crowd masks with the wrong rows (it filters boxes, not masks), so the
    # oracle runs on crowd-free samples; crowd handling is tested separately.
    return sample.replace(instances=sample.instances[~sample.instances.iscrowd])


def mask_iou(a: Any, b: Any) -> Any:
    a, b = a.flatten(1).bool(), b.flatten(1).bool()
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def varied_samples() -> list[Sample]:
    """Synthetic samples of three different sizes (forces resize and padding)."""
    out = []
    for k, size in enumerate([(96, 128), (128, 80), (72, 72)]):
        out += [without_crowd(s) for s in make_samples(num_images=1, seed=10 + k, image_size=size)]
    return out


def run_processor(samples: list[Sample], size: dict[str, int]) -> Any:
    from transformers import RfDetrImageProcessor

    processor = RfDetrImageProcessor(size=size)
    return processor([s.image for s in samples], [coco_target(s) for s in samples],
                     return_segmentation_masks=True, return_tensors="pt")


def assert_matches_processor(ours: Any, ref: Any, stride: int) -> None:
    assert torch.equal(ours["pixel_mask"].cpu(), ref["pixel_mask"])
    assert torch.allclose(ours["pixel_values"].cpu(), ref["pixel_values"], atol=1e-4)
    hp, wp = ref["pixel_values"].shape[-2:]
    checked = 0
    for mine, theirs in zip(ours["labels"], ref["labels"], strict=True):
        assert torch.equal(mine["class_labels"].cpu(), theirs["class_labels"])
        assert torch.allclose(mine["boxes"].cpu(), theirs["boxes"], atol=1e-4)
        assert torch.equal(mine["image_id"].cpu(), theirs["image_id"])
        assert torch.equal(mine["orig_size"].cpu(), theirs["orig_size"])
        assert torch.equal(mine["size"].cpu(), theirs["size"])
        reference = theirs["masks"]
        if stride > 1:
            grid = (hp // stride, wp // stride)
            reference = F.interpolate(reference[:, None].float(), size=grid,
                                      mode="nearest-exact")[:, 0] > 0.5
        assert mine["masks"].shape == reference.shape
        if len(reference):
            assert mask_iou(mine["masks"].cpu(), reference).min() >= 0.99
            checked += len(reference)
    assert checked > 0


# --- RF-DETR vs the transformers processor -----------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [
    {"height": 112, "width": 144},
    {"shortest_edge": 100, "longest_edge": 150},
    {"max_height": 90, "max_width": 120},
])
def test_rfdetr_full_resolution_matches_processor(device: str, size: dict[str, int]) -> None:
    samples = varied_samples()
    ours = Collator("rfdetr", device=device, size=size, mask_stride=1)(samples)
    assert ours["pixel_values"].device.type == device
    assert_matches_processor(ours, run_processor(samples, size), stride=1)


@pytest.mark.parametrize("device", DEVICES)
def test_rfdetr_stride4_masks_are_processor_masks_sampled_at_cell_centres(device: str) -> None:
    samples = varied_samples()
    size = {"shortest_edge": 100, "longest_edge": 150}
    ours = Collator("rfdetr", device=device, size=size)(samples)
    ref = run_processor(samples, size)
    hp, wp = ref["pixel_values"].shape[-2:]
    assert ours["labels"][0]["masks"].shape[-2:] == (hp // 4, wp // 4)
    assert_matches_processor(ours, ref, stride=4)


def test_rfdetr_matches_processor_on_real_coco(tinycoco: dict[str, Path]) -> None:
    dataset = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    samples = [without_crowd(dataset[i]) for i in range(len(dataset))]
    size = {"shortest_edge": 240, "longest_edge": 320}
    ours = Collator("rfdetr", size=size, mask_stride=1)(samples)
    assert_matches_processor(ours, run_processor(samples, size), stride=1)


def test_oracle_comparison_fails_on_a_wrong_mask() -> None:
    samples = varied_samples()
    size = {"height": 112, "width": 144}
    ours = Collator("rfdetr", size=size, mask_stride=1)(samples)
    ref = run_processor(samples, size)
    ours["labels"][0]["masks"] = torch.roll(ours["labels"][0]["masks"], shifts=6, dims=2)
    with pytest.raises(AssertionError):
        assert_matches_processor(ours, ref, stride=1)


def test_resized_size_follows_the_processor_rules() -> None:
    from transformers.image_transforms import get_size_with_aspect_ratio
    from transformers.image_utils import get_image_size_for_max_height_width

    for h, w in [(480, 640), (640, 480), (333, 1000), (800, 800), (17, 900)]:
        assert resized_size((h, w), {"shortest_edge": 320, "longest_edge": 500}) == \
            get_size_with_aspect_ratio((h, w), 320, 500)
        assert resized_size((h, w), {"max_height": 300, "max_width": 400}) == \
            get_image_size_for_max_height_width((h, w), 300, 400)
    with pytest.raises(ValueError, match="size dict"):
        resized_size((10, 10), {"longest_edge": 3})


# --- crop-local rasterisation -----------------------------------------------------------------


@given(st.data())
def test_mask_crops_equal_full_rasterisation(data: st.DataObject) -> None:
    size = data.draw(ist.image_sizes(min_side=4, max_side=48))
    items = [data.draw(ist.polygons(size, allow_outside=True, degenerate=True)),
             data.draw(ist.mask_items(size, allow_empty=True))]
    masks = Masks(items, size)
    full = masks.to_dense()
    counts = masks.rle_counts()
    for k, item in enumerate(items):
        crop, y0, x0 = mask_crop(item, None if isinstance(item, BitmapMask) else counts[k], size)
        placed = np.zeros(size, dtype=bool)
        placed[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop.astype(bool)
        assert np.array_equal(placed, full[k])


@given(st.data())
def test_rle_crop_equals_full_decode(data: st.DataObject) -> None:
    size = data.draw(ist.image_sizes(min_side=1, max_side=40))
    rle = data.draw(ist.rles(size, compressed=True))
    counts = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
    full = mask_utils.decode({"size": rle["size"], "counts": counts}).astype(bool)
    item = rle_crop(counts, size)
    crop, (y0, x0) = item.bitmap, item.offset
    placed = np.zeros(size, dtype=bool)
    placed[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    assert np.array_equal(placed, full)
    if crop.size:  # box-tight: every edge row and column has a pixel
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


# --- Mask R-CNN: torchvision reference semantics ------------------------------------------------


def reference_maskrcnn_target(sample: Sample) -> dict[str, Any]:
    """torchvision references/detection/coco_utils.py ConvertCocoPolysToMask, on our data."""
    target = coco_target(sample)
    h, w = sample.image_size
    anno = [obj for obj in target["annotations"] if obj["iscrowd"] == 0]
    boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=w)
    boxes[:, 1::2].clamp_(min=0, max=h)
    classes = torch.tensor([obj["category_id"] + 1 for obj in anno], dtype=torch.int64)
    masks = []
    for obj in anno:
        rles = mask_utils.frPyObjects(obj["segmentation"], h, w)
        mask = mask_utils.decode(rles)
        if mask.ndim < 3:
            mask = mask[..., None]
        masks.append(torch.as_tensor(mask.any(axis=2), dtype=torch.uint8))
    mask_tensor = torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    return {"boxes": boxes[keep], "labels": classes[keep], "masks": mask_tensor[keep]}


def awkward_sample() -> Sample:
    """Crowd, a box partly outside, a box fully outside, a zero-width box, an empty mask."""
    h, w = 40, 50
    square = PolygonMask.from_coords([[5, 5, 20, 5, 20, 20, 5, 20]])
    edge = PolygonMask.from_coords([[40, 30, 60, 30, 60, 50, 40, 50]])
    crowd = BitmapMask(np.ones((6, 6), dtype=bool), (30, 2))
    empty = BitmapMask(np.zeros((0, 0), dtype=bool), (0, 0))
    masks = Masks([square, edge, crowd, square, square, empty], (h, w))
    boxes = np.array([[5, 5, 20, 20], [40, 30, 60, 50], [2, 30, 8, 36], [60, 50, 70, 60],
                      [7, 7, 7, 19], [10, 10, 20, 20]], dtype=np.float32)
    inst = Instances(image_size=(h, w), boxes=boxes, labels=[0, 1, 2, 0, 1, 2], masks=masks,
                     iscrowd=[0, 0, 1, 0, 0, 0], ids=[11, 12, 13, 14, 15, 16])
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Sample.from_array(image, inst, image_id=77)


@pytest.mark.parametrize("device", DEVICES)
def test_maskrcnn_targets_follow_the_torchvision_reference(device: str) -> None:
    samples = [awkward_sample()] + make_samples(num_images=2, seed=4)
    images, targets = Collator("maskrcnn", device=device)(samples)
    for sample, image, target in zip(samples, images, targets, strict=True):
        reference = reference_maskrcnn_target(sample)
        assert image.dtype == torch.float32 and image.shape == (3, *sample.image_size)
        expected = torch.as_tensor(sample.image).permute(2, 0, 1).float() / 255
        assert torch.allclose(image.cpu(), expected, atol=1e-6)
        assert torch.allclose(target["boxes"].cpu(), reference["boxes"])
        assert torch.equal(target["labels"].cpu(), reference["labels"])
        assert target["masks"].dtype == torch.uint8
        assert torch.equal(target["masks"].cpu(), reference["masks"])
        assert int(target["image_id"]) == sample.image_id
        assert target["iscrowd"].sum() == 0


def test_drops_are_reported_with_their_reasons() -> None:
    batch = Collator("maskrcnn")([awkward_sample()])
    reasons = {drop.annotation_id: drop.reason for _, _, drop in batch.info.drops}
    assert reasons == {13: "crowd", 14: "degenerate_box", 15: "degenerate_box"}
    assert batch.targets[0]["annotation_ids"].tolist() == [11, 12, 16]
    strict = Collator("maskrcnn", drop_empty_masks=True)([awkward_sample()])
    assert strict.info.drop_counts() == {"crowd": 1, "degenerate_box": 2, "empty_mask": 1}
    kept = Collator("instances")([awkward_sample()])
    assert kept.iscrowd[0].sum() == 1


def test_maskrcnn_trains_a_step() -> None:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=7,
                                  min_size=96, max_size=128)
    model.train()
    samples = make_samples(num_images=2, seed=5, image_size=(96, 112))
    images, targets = Collator("maskrcnn")(samples)
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert "loss_mask" in losses


def test_rfdetr_trains_a_step() -> None:
    from transformers import RfDetrConfig, RfDetrForInstanceSegmentation

    torch.manual_seed(0)
    config = RfDetrConfig(
        backbone_config={"model_type": "rf_detr_dinov2", "hidden_size": 32,
                         "num_hidden_layers": 4, "num_attention_heads": 2,
                         "intermediate_size": 64, "image_size": 128, "patch_size": 16,
                         "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        d_model=32, decoder_ffn_dim=64, decoder_layers=2, decoder_self_attention_heads=2,
        decoder_cross_attention_heads=2, num_queries=10, group_detr=2, intermediate_size=64,
        num_labels=6,
    )
    model = RfDetrForInstanceSegmentation(config)
    model.train()
    batch = Collator("rfdetr", size={"height": 128, "width": 128})(make_samples(2, seed=6))
    out = model(**batch)
    assert out.pred_masks.shape[-2:] == batch["labels"][0]["masks"].shape[-2:]
    assert torch.isfinite(out.loss)
    out.loss.backward()


# --- instances target, zero instances, bad input ----------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_instances_round_trip_without_resize(device: str) -> None:
    samples = make_samples(num_images=3, seed=8)
    batch = Collator("instances", device=device)(samples)
    assert batch.pixel_values.shape[0] == 3
    for sample, inst in zip(samples, batch.instances(), strict=True):
        assert inst.image_size == sample.image_size
        assert np.array_equal(inst.labels, sample.instances.labels)
        assert np.array_equal(inst.ids, sample.instances.ids)
        assert np.array_equal(inst.iscrowd, sample.instances.iscrowd)
        assert np.array_equal(inst.masks.to_dense(), sample.instances.masks.to_dense())
        assert np.allclose(inst.boxes, np.clip(sample.instances.boxes, 0, None))


@pytest.mark.parametrize("target", ["maskrcnn", "rfdetr", "instances"])
def test_zero_instance_images(target: str) -> None:
    empty = Sample.from_array(np.zeros((30, 40, 3), np.uint8), Instances.empty((30, 40)), 5)
    other = make_samples(num_images=1, seed=2)[0]
    batch = Collator(target)([empty, other])
    if target == "maskrcnn":
        assert batch.targets[0]["masks"].shape == (0, 30, 40)
        assert batch.targets[0]["boxes"].shape == (0, 4)
    elif target == "rfdetr":
        assert batch["labels"][0]["masks"].shape[0] == 0
        assert batch["labels"][0]["class_labels"].numel() == 0
    else:
        assert not batch.valid[0].any()
    all_empty = Collator(target)([empty])
    assert all_empty.info.image_ids == [5]


def test_grayscale_and_rgba_files_are_collated(tmp_path: Path) -> None:
    from PIL import Image

    samples = []
    for k, mode in enumerate(["L", "RGBA"]):
        path = tmp_path / f"{mode}.png"
        array = np.random.default_rng(k).integers(0, 256, (24, 32, 4), dtype=np.uint8)
        Image.fromarray(array, "RGBA").convert(mode).save(path)
        inst = Instances(image_size=(24, 32), boxes=[[2, 2, 10, 10]], labels=[0],
                         masks=Masks([BitmapMask(np.ones((8, 8), bool), (2, 2))], (24, 32)))
        samples.append(Sample(inst, image_id=k + 1, image_path=str(path)))
    batch = Collator("rfdetr", mask_stride=1)(samples)
    assert batch["pixel_values"].shape == (2, 3, 24, 32)
    assert batch["labels"][1]["masks"][0, 2:10, 2:10].all()


def test_bad_input_names_the_sample() -> None:
    good = make_samples(num_images=1, seed=1)[0]
    inst = Instances(image_size=(10, 10), boxes=[[0, 0, 5, 5]], labels=[0])
    with pytest.raises(CollateError, match=r"sample index 1"):
        Collator("maskrcnn")([good, Sample(inst, image_id=9)])
    with pytest.raises(CollateError, match=r"needs masks.*image_id=9, sample index 0"):
        Collator("maskrcnn")([Sample.from_array(np.zeros((10, 10, 3), np.uint8), inst, 9)])
    with pytest.raises(CollateError, match=r"sample index 1"):
        Collator("rfdetr")([good, {"image": 1}])
    with pytest.raises(CollateError, match="empty batch"):
        Collator("rfdetr")([])
    with pytest.raises(ValueError, match="target must be"):
        Collator("yolo")


@pytest.mark.parametrize("device", DEVICES)
def test_packed_batch_round_trip_and_bytes(device: str) -> None:
    samples = make_samples(num_images=2, seed=3, image_size=(64, 64))
    collator = Collator("rfdetr", device=device)
    packed = collator.pack(samples)
    image_bytes = sum(s.image.nbytes for s in samples)
    assert packed.image_bytes == image_bytes
    dense_bytes = sum(len(s.instances) * 64 * 64 for s in samples)
    assert packed.crop_bytes < dense_bytes
    batch = collator.finish(packed)
    assert batch.info.bytes_to_device == packed.nbytes
    direct = collator(samples)
    for a, b in zip(batch["labels"], direct["labels"], strict=True):
        assert torch.equal(a["masks"], b["masks"])


# --- slice paste, identity resize, crowded images ---------------------------------------------


def _paste_both(samples: list[Sample], collator: Collator) -> None:
    """``paste_crops`` (slices) against ``paste_masks`` (per-pixel gather) on one packed batch."""
    from instkit.data.collate import _host_ints, paste_crops, paste_masks
    from instkit.data.packing import INT_COLUMNS

    packed = collator.pack(samples)
    n = packed.num_instances
    buffer = packed.buffer
    ints = buffer[: n * 8 * INT_COLUMNS].view(torch.int64).view(n, INT_COLUMNS)
    crops = buffer[packed.table_bytes + packed.image_bytes:]
    orig = [(int(r[0]), int(r[1])) for r in packed.images]
    sizes = [resized_size(s, collator.size) for s in orig]
    canvas = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    stride = collator.mask_stride
    grid = (canvas[0] // stride, canvas[1] // stride)
    cells = grid[0] * grid[1]
    reference = paste_masks(crops, ints, [grid] * len(sizes), orig, sizes, [canvas] * len(sizes),
                            torch.arange(n) * cells, n * cells).view(n, *grid)
    ours = torch.zeros((n, *grid), dtype=torch.bool)
    starts, counts = packed.images[:, 3], packed.images[:, 4]
    paste_crops(crops, _host_ints(packed),
                [(ours[int(s) : int(s) + int(c)], int(s), int(c)) for s, c in zip(starts, counts)],
                orig, sizes, [canvas] * len(sizes))
    assert ours.any()
    assert torch.equal(ours, reference)


@pytest.mark.parametrize(("size", "stride"), [
    (None, 1), (None, 4), ((50, 70), 1), ((150, 210), 1), ((150, 210), 3),
    ({"shortest_edge": 61, "longest_edge": 99}, 2),
])
def test_slice_paste_equals_the_per_pixel_gather(size: Any, stride: int) -> None:
    samples = varied_samples() + [awkward_sample()]
    _paste_both(samples, Collator("instances", size=size, mask_stride=stride))


def test_slice_paste_check_fails_on_a_shifted_paste(monkeypatch: pytest.MonkeyPatch) -> None:
    import instkit.data.collate as collate

    original = collate.paste_crops

    def shifted(crops: Any, ints: np.ndarray, *args: Any) -> None:
        moved = ints.copy()
        moved[:, 2] += 1  # every crop one column to the right
        original(crops, moved, *args)

    monkeypatch.setattr(collate, "paste_crops", shifted)
    with pytest.raises(AssertionError):
        _paste_both(varied_samples(), Collator("instances"))


def test_size_equal_to_the_input_is_not_a_resize() -> None:
    samples = make_samples(num_images=2, seed=12, image_size=(48, 64))
    kept = Collator("rfdetr", mask_stride=1)(samples)
    same = Collator("rfdetr", size=(48, 64), mask_stride=1)(samples)
    assert torch.equal(kept["pixel_values"], same["pixel_values"])
    # ... and equal to what the bilinear resize to the same size gives (the processor's path)
    images = torch.stack([torch.as_tensor(s.image).permute(2, 0, 1).float() / 255 for s in samples])
    resized = F.interpolate(images, size=(48, 64), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(same["pixel_values"], (resized - mean) / std, atol=1e-5)
    for a, b in zip(kept["labels"], same["labels"], strict=True):
        assert torch.equal(a["masks"], b["masks"])
    images_m, _ = Collator("maskrcnn", size=(48, 64))(samples)
    assert torch.allclose(images_m[0], images[0], atol=1e-6)


def crowded_sample(n: int, size: tuple[int, int], seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    h, w = size
    y0 = rng.integers(0, h - 4, n)
    x0 = rng.integers(0, w - 4, n)
    bh = rng.integers(1, 5, n)
    bw = rng.integers(1, 5, n)
    masks = Masks([BitmapMask(np.ones((int(a), int(b)), bool), (int(y), int(x)))
                   for y, x, a, b in zip(y0, x0, bh, bw, strict=True)], size)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)
    inst = Instances(image_size=size, boxes=boxes, labels=np.zeros(n, np.int64), masks=masks,
                     ids=np.arange(n))
    return Sample.from_array(np.zeros((h, w, 3), np.uint8), inst, image_id=3)


def test_crowded_image_collates_to_exact_masks() -> None:
    sample = crowded_sample(1500, (64, 80))
    dense = torch.as_tensor(sample.instances.masks.to_dense())
    _, targets = Collator("maskrcnn")([sample])
    assert torch.equal(targets[0]["masks"], dense.to(torch.uint8))
    batch = Collator("instances")([sample])
    assert torch.equal(batch.masks[0], dense)


@pytest.mark.parametrize("target", ["maskrcnn", "instances", "rfdetr"])
def test_masks_that_do_not_fit_give_a_clear_error(target: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import instkit.data.collate as collate

    sample = crowded_sample(500, (64, 80))
    monkeypatch.setattr(collate, "_available_bytes", lambda: 1_000_000)  # 500 x 64 x 80 > 1 MB
    with pytest.raises(CollateError, match=r"GiB .*(size=|mask_stride)") as caught:
        Collator(target, mask_stride=1)([sample])
    assert not isinstance(caught.value, MemoryError)
    if target != "maskrcnn":  # at a stride the same batch fits
        Collator(target, mask_stride=4)([sample])


@pytest.mark.parametrize("target,options", [("maskrcnn", {}), ("rfdetr", {"size": (64, 80)})])
def test_host_batches_read_images_where_they_are(target: str, options: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """collator(samples) on the CPU does not copy the images into the packed batch first (it
    reads each from the sample); the batch equals finish(pack(samples)), which copies them."""
    from instkit.synthetic import make_samples

    samples = make_samples(num_images=5, seed=8, image_size=(90, 120))
    collator = Collator(target, **options)
    packed_seen = []
    started_seen = []
    real_finish = Collator._finish

    def spy(self: Collator, packed: object, started: object) -> object:
        packed_seen.append(packed)
        started_seen.append(started)
        return real_finish(self, packed, started)

    monkeypatch.setattr(Collator, "_finish", spy)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the images start before packing
    direct = collator(samples)
    assert packed_seen[-1].image_bytes == 0 and len(packed_seen[-1].host_images) == 5
    assert (started_seen[-1] is not None) == (target == "rfdetr")
    copied = collator.finish(collator.pack(samples))
    assert packed_seen[-1].image_bytes > 0 and packed_seen[-1].host_images is None
    assert started_seen[-1] is None
    if target == "rfdetr":
        assert torch.equal(direct["pixel_values"], copied["pixel_values"])
        assert torch.equal(direct["pixel_mask"], copied["pixel_mask"])
    else:
        for a, b in zip(direct[0], copied[0], strict=True):
            assert torch.equal(a, b)
        for a, b in zip(direct[1], copied[1], strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_host_batches_take_strided_images() -> None:
    """Images read where they are may be views (a flip, a crop of a larger array): the batch
    equals the one built from contiguous copies."""
    from instkit.sample import Sample
    from instkit.synthetic import make_samples

    base = make_samples(num_images=3, seed=9, image_size=(60, 84))
    wider = np.pad(base[0].image, ((0, 0), (0, 9), (0, 0)))
    views = [Sample.from_array(wider[:, :84], base[0].instances, base[0].image_id),
             Sample.from_array(base[1].image[:, ::-1], base[1].instances, base[1].image_id),
             base[2]]
    copies = [Sample.from_array(np.ascontiguousarray(v.image), v.instances, v.image_id)
              for v in views]
    assert not views[0].image.flags.c_contiguous and not views[1].image.flags.c_contiguous
    for target, options in (("maskrcnn", {}), ("rfdetr", {"size": (64, 80)})):
        collator = Collator(target, **options)
        a, b = collator(views), collator(copies)
        if target == "rfdetr":
            assert torch.equal(a["pixel_values"], b["pixel_values"])
        else:
            assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))


def test_a_batch_whose_images_started_before_packing_still_fails_cleanly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RF-DETR images start on other threads before packing; a sample that packing refuses
    still raises its error (after those threads are done), and a good batch is unchanged."""
    from instkit.sample import Sample
    from instkit.synthetic import make_samples

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    samples = make_samples(num_images=3, seed=12, image_size=(60, 84))
    collator = Collator("rfdetr", size=(64, 80))
    boxes_only = Instances(image_size=(60, 84), boxes=[[1.0, 2.0, 30.0, 40.0]], labels=[1])
    bad = Sample.from_array(np.zeros((60, 84, 3), np.uint8), boxes_only, 99)
    with pytest.raises(CollateError, match="needs masks") as caught:
        collator([samples[0], bad, samples[2]])
    assert caught.value.location.image_id == 99
    good = collator(samples)
    again = collator.finish(collator.pack(samples))
    for key in ("pixel_values", "pixel_mask"):
        assert torch.equal(good[key], again[key])


def test_an_unreadable_image_is_named_whether_or_not_images_start_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample whose file is gone: the same CollateError naming the file and the sample, with
    the images started before packing (two threads) or after it (one)."""
    from instkit.sample import Sample
    from instkit.synthetic import make_samples

    good = make_samples(num_images=2, seed=13, image_size=(40, 56))
    missing = Sample(good[1].instances, 77, good[1].meta, str(tmp_path / "gone.jpg"))
    messages = []
    for threads in (2, 1):
        monkeypatch.setattr(torch, "get_num_threads", lambda t=threads: t)
        with pytest.raises(CollateError) as caught:
            Collator("rfdetr", size=(48, 64))([good[0], missing])
        assert "gone.jpg" in str(caught.value) and caught.value.location.image_id == 77
        messages.append(str(caught.value))
    assert messages[0] == messages[1]

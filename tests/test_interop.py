"""instkit.interop on real data (tinycoco val), both ways: pycocotools RLE, supervision
Detections, torchvision tv_tensors (through a transforms.v2 pipeline), torchmetrics' mAP."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from instkit import Instances, Sample, read_coco
from instkit.evaluation import evaluate
from instkit.interop import (
    InteropError,
    from_supervision,
    from_tv_tensors,
    instances_from_masks,
    to_coco_rles,
    to_supervision,
    to_torchmetrics,
    to_tv_tensors,
    torchmetrics_coco_thresholds,
    tv_labels_getter,
)
from tests.test_evaluation import _perturbed_results, _samples_from_results


@pytest.fixture(scope="module")
def val(tinycoco: dict[str, Path]) -> list[Sample]:
    return list(read_coco(tinycoco["val_json"], tinycoco["val_images"]))


@pytest.fixture(scope="module")
def predicted(tinycoco: dict[str, Path], val: list[Sample]) -> list[Sample]:
    dataset = read_coco(tinycoco["val_json"])
    return _samples_from_results(_perturbed_results(tinycoco["val_json"], 11), val,
                                 dataset.categories)


def _same_masks(a: Instances, b: Instances) -> None:
    assert a.masks is not None and b.masks is not None
    assert [r["counts"] for r in a.masks.to_rle()] == [r["counts"] for r in b.masks.to_rle()]


def test_coco_rles_both_ways_without_image_size(val: list[Sample]) -> None:
    for sample in val:
        inst = sample.instances
        rles = to_coco_rles(inst)
        back = instances_from_masks(rles, inst.labels, boxes=inst.boxes, iscrowd=inst.iscrowd,
                                    ids=inst.ids)
        assert back.image_size == inst.image_size
        _same_masks(back, inst)
        assert np.array_equal(back.labels, inst.labels) and np.array_equal(back.ids, inst.ids)
        # uncompressed counts and dense masks carry their size too
        h, w = inst.image_size
        dense = inst.masks.to_dense()
        uncompressed = [{"size": [h, w], "counts": _runs(m)} for m in dense]
        _same_masks(instances_from_masks(uncompressed, inst.labels), inst)
        from_dense = instances_from_masks(dense, inst.labels)
        _same_masks(from_dense, inst)
        assert from_dense.image_size == (h, w)
        # pycocotools decodes ours to the same pixels
        assert np.array_equal(mask_utils.decode(rles).transpose(2, 0, 1), dense)
    rle = to_coco_rles(val[0].instances)[0]
    with pytest.raises(InteropError, match="disagree"):
        instances_from_masks([rle], [0], image_size=(rle["size"][0] + 1, rle["size"][1]))
    with pytest.raises(InteropError, match="image_size"):
        instances_from_masks([], [])


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], change])).tolist()


def test_supervision_both_ways(val: list[Sample], predicted: list[Sample]) -> None:
    sv = pytest.importorskip("supervision", reason="supervision is an optional extra "
                             "(pip install 'instkit[interop]')")
    for sample in predicted:
        inst = sample.instances.replace(extras={"tracker_id": np.arange(len(sample.instances))
                                                + 100})
        det = to_supervision(inst)
        assert isinstance(det, sv.Detections) and len(det) == len(inst)
        assert np.array_equal(det.class_id, inst.labels)
        assert np.array_equal(det.confidence, inst.scores)
        assert np.array_equal(det.tracker_id, inst.extras["tracker_id"])
        # supervision's own view of the masks: same areas as instkit's; its boxes are
        # inclusive of the last pixel, instkit's pixel-edge
        assert np.array_equal(det.area.astype(np.int64), inst.masks.area().astype(np.int64))
        nonempty = inst.masks.area() > 0
        tight = inst.with_boxes_from_masks().boxes
        assert np.allclose(sv.mask_to_xyxy(det.mask)[nonempty] + [0, 0, 1, 1], tight[nonempty])
        back = from_supervision(det)
        assert back == inst
    # a Detections made by supervision alone (masks, its boxes, no data) comes back too
    gt = val[0].instances
    dense = gt.masks.to_dense().astype(bool)
    plain = sv.Detections(xyxy=sv.mask_to_xyxy(dense).astype(np.float32), mask=dense,
                          class_id=gt.labels.copy())
    back = from_supervision(plain)
    assert back.image_size == gt.image_size and back.scores is None
    _same_masks(back, gt)
    boxes_only = sv.Detections(xyxy=gt.boxes.copy(), class_id=gt.labels.copy())
    with pytest.raises(InteropError, match="image_size"):
        from_supervision(boxes_only)
    assert from_supervision(boxes_only, image_size=gt.image_size).masks is None


def test_tv_tensors_both_ways_and_a_v2_pipeline(val: list[Sample]) -> None:
    torch = pytest.importorskip("torch", reason="torch/torchvision are an optional extra")
    tv_tensors = pytest.importorskip("torchvision.tv_tensors")
    from torchvision.transforms import v2

    sample = val[0]
    inst = sample.instances
    target = to_tv_tensors(inst)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(target["boxes"].canvas_size) == inst.image_size
    assert isinstance(target["masks"], tv_tensors.Mask)
    back = from_tv_tensors(target)
    assert back.image_size == inst.image_size
    _same_masks(back, inst)
    assert np.array_equal(back.boxes, inst.boxes) and np.array_equal(back.ids, inst.ids)

    # a user's v2 pipeline moves image, boxes and masks together; instkit reads the result
    h, w = inst.image_size
    image = tv_tensors.Image(torch.from_numpy(sample.image.transpose(2, 0, 1).copy()))
    pipeline = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.Pad([7, 3, 5, 9])])
    out_image, out = pipeline(image, target)
    moved = from_tv_tensors(out)
    assert moved.image_size == (h + 12, w + 12) == tuple(out_image.shape[-2:])
    expected = np.zeros((len(inst), h + 12, w + 12), dtype=bool)
    expected[:, 3 : 3 + h, 7 : 7 + w] = inst.masks.to_dense()[:, :, ::-1]
    assert np.array_equal(moved.masks.to_dense().astype(bool), expected)
    # flip + pad keep instkit's pixel-edge boxes exact: the boxes of the moved masks
    flipped = inst.boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [w + 7, 3, w + 7, 3]
    assert np.allclose(moved.boxes, flipped, atol=1e-4)
    # a crop that drops objects: SanitizeBoundingBoxes with tv_labels_getter keeps ids,
    # crowd flags and labels in step with the kept masks
    crop = v2.Compose([v2.CenterCrop((160, 160)),
                       v2.SanitizeBoundingBoxes(labels_getter=tv_labels_getter)])
    _, cropped = crop(image, to_tv_tensors(inst))
    kept = from_tv_tensors(cropped)
    assert 0 < len(kept) < len(inst)
    top, left = int(round((h - 160) / 2.0)), int(round((w - 160) / 2.0))
    window = inst.masks.to_dense()[:, top : top + 160, left : left + 160]
    for row, object_id in enumerate(kept.ids.tolist()):
        source = int(np.flatnonzero(inst.ids == object_id)[0])
        assert kept.labels[row] == inst.labels[source]
        assert kept.iscrowd[row] == inst.iscrowd[source]
        assert np.array_equal(kept.masks.to_dense()[row], window[source])
    # torchvision's default getter drops only labels: the columns disagree and instkit says so
    plain = v2.Compose([v2.CenterCrop((160, 160)), v2.SanitizeBoundingBoxes()])
    with pytest.raises(ValueError, match="iscrowd|ids"):
        from_tv_tensors(plain(image, to_tv_tensors(inst))[1])
    # another box format comes back as xyxy
    xywh = v2.ConvertBoundingBoxFormat("XYWH")(target["boxes"])
    assert np.allclose(from_tv_tensors({**target, "boxes": xywh}).boxes, inst.boxes, atol=1e-4)
    with pytest.raises(InteropError, match="disagree"):
        from_tv_tensors({**target, "masks": target["masks"][:, :-1]})


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_torchmetrics_map_equals_instkits(val: list[Sample], predicted: list[Sample],
                                          iou_type: str) -> None:
    pytest.importorskip("torchmetrics", reason="torchmetrics is an optional extra "
                        "(pip install 'instkit[interop]')")
    from torchmetrics.detection import MeanAveragePrecision

    ours = evaluate(val, predicted, iou_types=(iou_type,), progress=False)
    stats = ours.mask_stats if iou_type == "segm" else ours.box_stats
    preds, targets = to_torchmetrics(predicted, val, masks=iou_type == "segm")
    names = {"map": "AP", "map_50": "AP50", "map_75": "AP75", "map_small": "APs",
             "map_medium": "APm", "map_large": "APl", "mar_1": "AR1", "mar_10": "AR10",
             "mar_100": "AR100", "mar_small": "ARs", "mar_medium": "ARm", "mar_large": "ARl"}

    def run(**options: Any) -> dict[str, float]:
        metric = MeanAveragePrecision(iou_type=iou_type, backend="pycocotools", **options)
        metric.update(preds, targets)
        with contextlib.redirect_stdout(io.StringIO()):
            out = metric.compute()
        return {name: float(out[key]) for key, name in names.items()}

    theirs = run(**torchmetrics_coco_thresholds())
    for name in names.values():
        # torchmetrics returns float32: equal to that precision
        assert theirs[name] == pytest.approx(stats[name], abs=1e-7), name
    assert 0.2 < stats["AP"] < 0.95  # a real problem, not all zeros or ones
    # with its float32 default thresholds, recall samples on a threshold move: AP differs a
    # little (this data: ~1e-3), recall not at all
    default = run()
    gaps = {name: abs(default[name] - stats[name]) for name in names.values()}
    assert max(gaps.values()) < 3e-3
    assert max(gaps[name] for name in names.values() if name.startswith("AR")) < 1e-7
    assert max(gaps.values()) > 1e-5  # the thresholds are what made the difference


def test_instances_take_the_size_from_their_masks(val: list[Sample]) -> None:
    inst = val[0].instances
    dense = inst.masks.to_dense()
    from instkit import Masks
    from instkit.errors import InstancesError

    made = Instances(masks=Masks.from_dense(dense), labels=inst.labels)
    assert made.image_size == inst.image_size
    _same_masks(made, inst)
    with pytest.raises(InstancesError, match="image_size"):
        Instances(boxes=inst.boxes, labels=inst.labels)
    with pytest.raises(InstancesError, match="expected image size"):
        Instances(image_size=(1, 1), masks=Masks.from_dense(dense), labels=inst.labels)


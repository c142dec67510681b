"""Keypoint targets: ``Collator("keypointrcnn")`` for torchvision's Keypoint R-CNN and keypoints
in the ``"instances"`` target, on the real persons of pose_minicoco."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from instkit.data import CollateError, Collator  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402


@pytest.fixture(scope="module")
def persons(pose_minicoco: dict[str, Path]) -> list[Any]:
    """pose_minicoco train images with persons (the crowd region included), in file order."""
    dataset = read_coco(pose_minicoco["train_json"], pose_minicoco["train_images"])
    return [s for s in dataset if len(s.instances)]


def _kept(sample: Any) -> np.ndarray:
    """Keypoints of the instances a model target keeps: not crowd, box with area."""
    inst = sample.instances
    boxes = inst.boxes
    keep = ~inst.iscrowd & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return inst.keypoints[keep]


def test_keypointrcnn_targets_are_the_annotations(persons: list[Any]) -> None:
    batch = persons[:6]
    images, targets = Collator("keypointrcnn")(batch)
    assert len(images) == len(targets) == 6
    for sample, image, target in zip(batch, images, targets, strict=True):
        assert image.shape[1:] == sample.image_size
        kp = target["keypoints"]
        assert kp.dtype == torch.float32 and kp.shape[1:] == (17, 3)
        np.testing.assert_array_equal(kp.numpy(), _kept(sample))
        assert kp.shape[0] == target["boxes"].shape[0] == target["labels"].shape[0]
        assert (target["labels"] == 1).all()  # person is instkit label 0; 0 is background
        assert "masks" not in target
    # the crowd region of pose_minicoco is dropped with its reason, as for Mask R-CNN
    crowd = [s for s in persons if s.instances.iscrowd.any()]
    assert Collator("keypointrcnn")(crowd).info.drop_counts() == {"crowd": 1}


def test_packed_in_a_worker_finished_in_the_main_process(persons: list[Any]) -> None:
    import pickle

    collator = Collator("keypointrcnn", size=(200, 240))
    packed = pickle.loads(pickle.dumps(collator.pack(persons[:3])))  # what a worker returns
    direct = collator(persons[:3])
    for a, b in zip(collator.finish(packed).targets, direct.targets, strict=True):
        assert torch.equal(a["keypoints"], b["keypoints"]) and torch.equal(a["boxes"], b["boxes"])


def test_resized_keypoints_match_torchvision(persons: list[Any]) -> None:
    from torchvision.models.detection.transform import resize_keypoints

    size = {"shortest_edge": 200, "longest_edge": 333}
    labelled = [s for s in persons if (s.instances.keypoints[:, :, 2] > 0).any()][:4]
    batch = Collator("keypointrcnn", size=size)(labelled)
    for sample, target, new in zip(labelled, batch.targets, batch.info.sizes, strict=True):
        expected = resize_keypoints(torch.as_tensor(_kept(sample)), sample.image_size, new)
        torch.testing.assert_close(target["keypoints"], expected)
        assert tuple(target["size"].tolist()) == new != sample.image_size
        # and the checker sees keypoints that were not scaled
        assert not torch.allclose(target["keypoints"], torch.as_tensor(_kept(sample)))


def test_instances_target_carries_keypoints(persons: list[Any]) -> None:
    batch = Collator("instances", size=(240, 320))(persons[:5])
    assert batch.keypoints is not None and batch.keypoints.shape[2:] == (17, 3)
    assert batch.keypoints.shape[:2] == batch.labels.shape
    assert not batch.keypoints[~batch.valid].any()  # padding rows are zeros
    back = batch.instances()
    for sample, inst in zip(persons[:5], back, strict=True):
        h, w = sample.image_size
        expected = sample.instances.keypoints.copy()  # crowd kept by "instances"
        expected[:, :, 0] *= 320 / w
        expected[:, :, 1] *= 240 / h
        np.testing.assert_allclose(inst.keypoints, expected, rtol=1e-6)
    moved = batch.to("cpu")
    assert moved.keypoints is not None and torch.equal(moved.keypoints, batch.keypoints)


def test_bad_keypoint_input_is_refused(persons: list[Any]) -> None:
    from instkit.instances import Instances
    from instkit.sample import Sample

    sample = persons[0]
    bare = Instances(image_size=sample.image_size, boxes=sample.instances.boxes,
                     labels=sample.instances.labels, ids=sample.instances.ids)
    plain = Sample.from_array(sample.image, bare, sample.image_id, sample.meta)
    with pytest.raises(CollateError, match=rf"need keypoints.*image_id={plain.image_id}|"
                                           rf"need keypoints.*{plain.image_id}"):
        Collator("keypointrcnn")([plain])
    # a sample without keypoints beside samples with them: its rows are not supervised (v = 0)
    mixed = Collator("keypointrcnn")([plain, persons[1]])
    assert mixed.targets[0]["keypoints"].shape == (len(bare), 17, 3)
    assert not mixed.targets[0]["keypoints"].any()
    five = Instances(image_size=sample.image_size, boxes=sample.instances.boxes,
                     labels=sample.instances.labels, keypoints=sample.instances.keypoints[:, :5])
    other = Sample.from_array(sample.image, five, 99, sample.meta)
    with pytest.raises(CollateError, match=r"\[5, 17\] keypoints per instance"):
        Collator("keypointrcnn")([persons[1], other])


def _tiny_keypoint_rcnn() -> Any:
    """torchvision's Keypoint R-CNN with a three-convolution backbone and slim heads (random
    init, nothing downloaded): every loss the full model has, at a fraction of the cost."""
    from torch import nn
    from torchvision.models.detection import KeypointRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
    backbone.out_channels = 32  # type: ignore[assignment]
    return KeypointRCNN(
        backbone, min_size=160, max_size=224,  # 2 classes, 17 keypoints: the predictors
        rpn_anchor_generator=AnchorGenerator(sizes=((32, 64, 128),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(32 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, 2),
        keypoint_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        keypoint_head=KeypointRCNNHeads(32, (32, 32)), keypoint_predictor=KeypointRCNNPredictor(32, 17))


def test_tiny_keypoint_rcnn_trains_a_step(persons: list[Any]) -> None:
    model = _tiny_keypoint_rcnn()
    model.train()
    images, targets = Collator("keypointrcnn", size={"shortest_edge": 160, "longest_edge": 224})(
        persons[:2])
    assert sum(t["keypoints"][..., 2].gt(0).sum() for t in targets) > 0
    losses = model(images, targets)
    assert set(losses) >= {"loss_keypoint", "loss_classifier", "loss_box_reg", "loss_objectness"}
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_keypoint"] > 0
    total.backward()
    grad = model.roi_heads.keypoint_predictor.kps_score_lowres.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.step()
    # the keypoint loss reads the keypoints: with none visible it is zero
    hidden = [{**t, "keypoints": t["keypoints"] * torch.tensor([1.0, 1.0, 0.0])} for t in targets]
    assert model(images, hidden)["loss_keypoint"] == 0


def test_flip_pairs_stay_right_after_horizontal_flip(persons: list[Any]) -> None:
    """COCO's left/right pairs come from the category's keypoint names; after a horizontal
    flip, a person's left shoulder is still their left shoulder: on the image it is on the
    same side of their right shoulder as before (both are mirrored, then swapped)."""
    import albumentations as A

    from instkit.transforms import Augment

    names = persons[0].meta.categories[0].keypoints
    assert names[5] == "left_shoulder" and names[6] == "right_shoulder"

    def sides(samples: list[Any], collator: Collator) -> list[bool]:
        out = []
        for target in collator(samples).targets:
            kp = target["keypoints"]
            both = (kp[:, 5, 2] > 0) & (kp[:, 6, 2] > 0)
            out += (kp[both, 5, 0] > kp[both, 6, 0]).tolist()
        return out

    collator = Collator("keypointrcnn")
    before = sides(persons, collator)
    flip = Augment([A.HorizontalFlip(p=1.0)])
    after = sides([flip(s, seed=0) for s in persons], collator)
    assert len(before) == len(after) >= 20 and after == before
    # the check fails when the pairs are not swapped: every person's sides reverse
    unswapped = Augment([A.HorizontalFlip(p=1.0)], flip_pairs=[])
    assert sides([unswapped(s, seed=0) for s in persons], collator) == [not v for v in before]
    # and the mirrored coordinates: left after = right before, reflected
    sample = next(s for s in persons if (s.instances.keypoints[:, :, 2] > 0).sum() > 10)
    flipped = flip(sample, seed=0)
    w = sample.image_size[1]
    kp, kq = sample.instances.keypoints, flipped.instances.keypoints
    seen = (kp[:, 6, 2] > 0)
    np.testing.assert_allclose(kq[seen, 5, 0], w - 1 - kp[seen, 6, 0], atol=1e-3)
    np.testing.assert_array_equal(kq[seen, 5, 2], kp[seen, 6, 2])

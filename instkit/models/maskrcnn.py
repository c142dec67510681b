"""Mask R-CNN (torchvision) behind the ``ModelAdapter`` interface.

Backbones: ``resnet50`` (torchvision's ``maskrcnn_resnet50_fpn`` layout, so its COCO weights load),
``resnet18`` / ``resnet34`` and ``mobilenet_v3`` (lighter FPN backbones for small machines), and
``tiny`` (a resnet18 trunk with a 64-channel FPN and slim heads, for tests and CPU smoke runs).

Labels: the model's class 0 is background, so model label = instkit label + 1; predictions are
mapped back (model label - 1). Defaults follow the task spec: NMS 0.5, score threshold 0.05,
mask threshold 0.5, 100 detections per image.

Weights: ``weights=PATH`` loads a local file (a full Mask R-CNN state dict, e.g. torchvision's
COCO ``.pth``, or a backbone trunk's ImageNet weights; ``.pth`` / ``.pt`` / ``.safetensors``);
heads whose shape differs (another class count) are re-initialised. Without a path, torchvision's
COCO file is used if it is already in the torch hub cache; otherwise the model starts from random
initialisation (said once). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import InstkitError, Location, require
from instkit.instances import Instances
from instkit.masks import Masks
from instkit.models.base import ModelAdapter, TrainDefaults, announce_once, log

BACKBONES = ("resnet50", "resnet34", "resnet18", "mobilenet_v3", "tiny")

DEFAULTS = TrainDefaults(
    optimizer="sgd", lr=0.005, weight_decay=5e-4, momentum=0.9, scheduler="step", step_size=10,
    gamma=0.1, warmup_ratio=0.0, warmup_iters=1000, batch_size=4, epochs=50, patience=15,
    amp=False, grad_clip=None,
)


def default_config(backbone: str = "resnet50", image_size: int | None = None) -> dict[str, Any]:
    if backbone not in BACKBONES:
        raise InstkitError(f"unknown Mask R-CNN backbone {backbone!r}; choose one of {BACKBONES}")
    tiny = backbone == "tiny"
    min_size = image_size or (128 if tiny else 800)
    max_size = image_size or (128 if tiny else 1333)
    return {
        "kind": "maskrcnn",
        "backbone": backbone,
        "norm": "bn",
        "min_size": int(min_size),
        "max_size": int(max(max_size, min_size)),
        "nms_threshold": 0.5,
        "score_threshold": 0.05,
        "mask_threshold": 0.5,
        "detections_per_image": 100,
    }


def _build_module(config: dict[str, Any], num_classes: int) -> Any:
    """The torchvision ``MaskRCNN`` for ``config`` with ``num_classes`` + 1 outputs."""
    require("torchvision", "torch")
    from torch import nn
    from torchvision.models import resnet18, resnet34, resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import (
        BackboneWithFPN,
        _resnet_fpn_extractor,
        mobilenet_backbone,
    )
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    frozen = config.get("norm") == "frozen_bn"
    norm_layer = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    trainable = 3 if frozen else 5
    common: dict[str, Any] = {
        "min_size": config["min_size"],
        "max_size": config["max_size"],
        "box_nms_thresh": config["nms_threshold"],
        "box_score_thresh": config["score_threshold"],
        "box_detections_per_img": config["detections_per_image"],
    }
    backbone = config["backbone"]
    if backbone in ("resnet50", "resnet34", "resnet18"):
        trunk = {"resnet50": resnet50, "resnet34": resnet34, "resnet18": resnet18}[backbone](
            weights=None, norm_layer=norm_layer)
        fpn = _resnet_fpn_extractor(trunk, trainable)
        return MaskRCNN(fpn, num_classes=num_classes + 1, **common)
    if backbone == "mobilenet_v3":
        fpn = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                 trainable_layers=3 if frozen else 6, norm_layer=norm_layer)
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        return MaskRCNN(fpn, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                        rpn_score_thresh=0.05, **common)
    if backbone == "tiny":
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        trunk = resnet18(weights=None, norm_layer=norm_layer)
        channels = 64
        fpn = BackboneWithFPN(trunk, {"layer2": "0", "layer3": "1", "layer4": "2"},
                              [128, 256, 512], channels, extra_blocks=LastLevelMaxPool())
        anchors = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
        return MaskRCNN(
            fpn, num_classes=None, rpn_anchor_generator=anchors,
            box_head=TwoMLPHead(channels * 7 * 7, 256),
            box_predictor=FastRCNNPredictor(256, num_classes + 1),
            mask_head=MaskRCNNHeads(channels, [channels, channels], 1),
            mask_predictor=MaskRCNNPredictor(channels, channels, num_classes + 1),
            rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
            rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=100,
            box_batch_size_per_image=64, **common,
        )
    raise InstkitError(f"unknown Mask R-CNN backbone {backbone!r}; choose one of {BACKBONES}")


def _read_state_dict(path: str) -> dict[str, Any]:
    import torch

    if not Path(path).is_file():
        raise InstkitError("weights file not found", Location(file=path))
    state: object  # whatever the file holds; checked below
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InstkitError(f"weights file cannot be read: {exc}", Location(file=path)) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InstkitError("weights file does not hold a state dict", Location(file=path))
    return state


def _cached_coco_weights() -> str | None:
    """torchvision's COCO Mask R-CNN file, if it is already in the torch hub cache."""
    try:
        import torch
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        name = os.path.basename(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url)
        path = os.path.join(torch.hub.get_dir(), "checkpoints", name)
    except Exception:  # noqa: BLE001 - no cache is not an error
        return None
    return path if os.path.isfile(path) else None


def _load_weights(module: Any, state: dict[str, Any], path: str) -> None:
    """Load a full-model or a trunk-only state dict; heads of another shape are skipped."""
    full = any(k.startswith(("backbone.body.", "roi_heads.", "rpn.")) for k in state)
    target = module if full else module.backbone.body
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not usable:
        raise InstkitError("no tensor of the weights file fits this Mask R-CNN (another backbone?)",
                           Location(file=path))
    skipped = sorted(k for k in state if k in own and k not in usable)
    target.load_state_dict(usable, strict=False)
    missing = len(own) - len(usable)
    log.info("loaded %d tensors from %s (%d re-initialised: %s)", len(usable), path, missing,
             ", ".join(skipped[:4]) + ("..." if len(skipped) > 4 else ""))


class MaskRCNNAdapter(ModelAdapter):
    kind = "maskrcnn"
    collate_target = "maskrcnn"
    defaults = DEFAULTS

    @classmethod
    def build(cls, categories: Categories, *, backbone: str = "resnet50",
              weights: str | os.PathLike[str] | None = None, image_size: int | None = None,
              **overrides: Any) -> MaskRCNNAdapter:
        """A new Mask R-CNN for ``categories``; see the module notes for ``weights``."""
        config = default_config(backbone, image_size)
        unknown = set(overrides) - set(config)
        if unknown:
            raise InstkitError(f"unknown Mask R-CNN option(s) {sorted(unknown)}")
        config.update(overrides)
        path = os.fspath(weights) if weights is not None else None
        if path is None and backbone == "resnet50":
            path = _cached_coco_weights()
        state = _read_state_dict(path) if path is not None else None
        if state is not None:
            config["norm"] = "frozen_bn"  # as torchvision does for pretrained weights
        module = _build_module(config, len(categories))
        if state is not None:
            _load_weights(module, state, path)  # type: ignore[arg-type]
        else:
            announce_once(f"maskrcnn-random-{backbone}",
                          f"Mask R-CNN ({backbone}): no pretrained weights given or cached; "
                          "starting from random initialisation")
        return cls(module, categories, config, pretrained=path)

    @classmethod
    def from_config(cls, config: dict[str, Any], categories: Categories) -> MaskRCNNAdapter:
        return cls(_build_module(config, len(categories)), categories, dict(config))

    def loss(self, model: Any, batch: Any) -> tuple[Any, dict[str, float]]:
        images, targets = batch[0], batch[1]
        losses = model(images, targets)
        total = sum(losses.values())
        return total, {k: float(v.detach()) for k, v in losses.items()}

    def predict(self, model: Any, batch: Any, sizes: Sequence[tuple[int, int]]) -> list[Instances]:
        import torch
        import torch.nn.functional as F

        images = batch[0]
        if len(images) != len(sizes):
            raise InstkitError(f"{len(images)} images in the batch but {len(sizes)} sizes")
        threshold = float(self.config["mask_threshold"])
        with torch.no_grad():
            outputs = model(images)
        results = []
        for image, output, (height, width) in zip(images, outputs, sizes, strict=True):
            in_h, in_w = int(image.shape[-2]), int(image.shape[-1])
            boxes = output["boxes"].float()
            probs = output["masks"].float()  # (N, 1, in_h, in_w) in [0, 1]
            if (in_h, in_w) != (height, width):
                scale = boxes.new_tensor([width / in_w, height / in_h, width / in_w, height / in_h])
                boxes = boxes * scale
                if len(probs):
                    probs = F.interpolate(probs, size=(height, width), mode="bilinear",
                                          align_corners=False)
            binary = (probs[:, 0] > threshold).cpu().numpy() if len(probs) else np.zeros(
                (0, height, width), bool)
            boxes_np = boxes.cpu().numpy().astype(np.float32)
            boxes_np[:, 0::2] = boxes_np[:, 0::2].clip(0, width)
            boxes_np[:, 1::2] = boxes_np[:, 1::2].clip(0, height)
            results.append(Instances(
                image_size=(height, width),
                boxes=boxes_np,
                labels=output["labels"].cpu().numpy().astype(np.int64) - 1,
                scores=output["scores"].float().cpu().numpy(),
                masks=Masks.from_dense(binary),
            ))
        return results

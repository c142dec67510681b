"""RF-DETR-Seg (transformers ``RfDetrForInstanceSegmentation``) behind the ``ModelAdapter`` interface.

Labels: RF-DETR classifies with per-class sigmoids (no background class), so model label =
instkit label, and ``id2label`` / ``label2id`` come from the category table.

Weights: ``weights=`` a local folder saved with ``save_pretrained`` (or a hub id already in the
Hugging Face cache) is loaded with ``local_files_only=True`` and ``ignore_mismatched_sizes=True``
(the class head is re-initialised for another class count). Without ``weights`` the default
checkpoint id is looked up in the local cache only; when nothing is found the model starts from
random initialisation (said once). Nothing is ever downloaded.

Predictions follow ``RfDetrImageProcessor.post_process_instance_segmentation``: sigmoid class
scores, top-k over (query, class) pairs, a score threshold, mask logits upsampled bilinearly and
binarised at logit 0 (sigmoid 0.5), empty masks left out. Two differences, both needed for COCO
evaluation: each instance keeps its own mask (the processor's ``return_binary_maps``: no overlap
resolution), and the padding added by the collator is cut off before upsampling to the sample
size, so masks and boxes land on the sample's pixels even when its aspect ratio differs from the
batch's.
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

DEFAULT_MODEL_ID = "Roboflow/rf-detr-seg-medium"

DEFAULTS = TrainDefaults(
    optimizer="adamw", lr=1e-4, weight_decay=1e-4, momentum=0.9, scheduler="cosine", step_size=10,
    gamma=0.1, warmup_ratio=0.1, warmup_iters=0, batch_size=16, epochs=10, patience=None,
    amp=True, grad_clip=0.1,
    # RF-DETR's own recipe evaluates and ships an EMA of the weights (decay 0.993, tau 100)
    ema=True, ema_decay=0.993,
)

#: a few hundred thousand parameters: a training step on 128x128 CPU images takes about a second
TINY_CONFIG: dict[str, Any] = {
    "backbone_config": {
        "model_type": "rf_detr_dinov2", "hidden_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 2, "image_size": 128, "patch_size": 8, "num_windows": 2,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "d_model": 64, "decoder_layers": 2, "decoder_self_attention_heads": 2,
    "decoder_cross_attention_heads": 2, "decoder_ffn_dim": 128, "decoder_n_points": 2,
    "num_queries": 30, "group_detr": 2, "intermediate_size": 128, "c2f_num_blocks": 1,
}
TINY_IMAGE_SIZE = 128
DEFAULT_IMAGE_SIZE = 560


def _label_maps(categories: Categories) -> tuple[dict[int, str], dict[str, int]]:
    id2label = {i: name for i, name in enumerate(categories.names)}
    return id2label, {name: i for i, name in id2label.items()}


def _stride(config: Any) -> int:
    """Input sides must be multiples of this (patch size times windows per side)."""
    backbone = config.backbone_config
    patch = backbone.patch_size if isinstance(backbone.patch_size, int) else backbone.patch_size[0]
    return int(patch) * int(getattr(backbone, "num_windows", 1) or 1)


def _check_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    if size[0] <= 0 or size[1] <= 0 or size[0] % stride or size[1] % stride:
        raise InstkitError(f"RF-DETR image size {size[0]}x{size[1]} must be positive multiples of "
                           f"{stride} (patch size x windows)")
    return int(size[0]), int(size[1])


def _as_size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def _processor_size(source: str) -> tuple[int, int] | None:
    """The square input size of a local image-processor config, when it gives one."""
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
    except Exception:  # noqa: BLE001 - no processor config: keep our default
        return None
    size = getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "longest_edge" in size:
        return int(size["longest_edge"]), int(size["longest_edge"])
    return None


class RfDetrAdapter(ModelAdapter):
    kind = "rfdetr"
    collate_target = "rfdetr"
    defaults = DEFAULTS

    @classmethod
    def build(cls, categories: Categories, *, weights: str | os.PathLike[str] | None = None,
              tiny: bool = False, image_size: int | Sequence[int] | None = None,
              model_id: str | None = DEFAULT_MODEL_ID, score_threshold: float = 0.0,
              top_k: int = 100, config_overrides: dict[str, Any] | None = None) -> RfDetrAdapter:
        """A new RF-DETR-Seg for ``categories``; see the module notes for ``weights``."""
        transformers = require("transformers", "transformers")
        id2label, label2id = _label_maps(categories)
        module = None
        source: str | None = None
        if weights is not None:
            source = os.fspath(weights)
            if not Path(source).exists() and ("/" not in source or source.startswith((".", "/"))):
                raise InstkitError("RF-DETR weights folder not found", Location(file=source))
        elif not tiny and model_id:
            source = model_id
        if source is not None:
            try:
                module = transformers.RfDetrForInstanceSegmentation.from_pretrained(
                    source, id2label=id2label, label2id=label2id, num_labels=len(categories),
                    ignore_mismatched_sizes=True, local_files_only=True)
            except (OSError, ValueError) as exc:
                if weights is not None:
                    raise InstkitError(f"RF-DETR weights cannot be loaded: {exc}",
                                       Location(file=source)) from None
                module = None
                source = None
        if module is None:
            base: dict[str, Any] = dict(TINY_CONFIG) if tiny else {}
            base.update(config_overrides or {})
            config = transformers.RfDetrConfig(**base, id2label=id2label, label2id=label2id)
            module = transformers.RfDetrForInstanceSegmentation(config)
            announce_once(f"rfdetr-random-{'tiny' if tiny else 'full'}",
                          f"RF-DETR-Seg{' (tiny)' if tiny else ''}: no pretrained weights given "
                          "or cached; starting from random initialisation")
        else:
            log.info("RF-DETR-Seg weights loaded from %s", source)
        if image_size is not None:
            size = _as_size(image_size)
        elif source is not None:
            size = _processor_size(source) or (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
        else:
            size = _as_size(TINY_IMAGE_SIZE if tiny else DEFAULT_IMAGE_SIZE)
        size = _check_size(size, _stride(module.config))
        adapter_config = {
            "kind": "rfdetr",
            "variant": "tiny" if tiny else ("pretrained" if source else "default"),
            "image_size": list(size),
            "score_threshold": float(score_threshold),
            "mask_threshold": 0.0,
            "top_k": int(top_k),
            "hf_config": module.config.to_dict(),
        }
        return cls(module, categories, adapter_config, pretrained=source)

    @classmethod
    def from_config(cls, config: dict[str, Any], categories: Categories) -> RfDetrAdapter:
        transformers = require("transformers", "transformers")
        hf = dict(config["hf_config"])
        id2label, label2id = _label_maps(categories)
        hf_config = transformers.RfDetrConfig.from_dict({**hf, "id2label": id2label,
                                                         "label2id": label2id})
        module = transformers.RfDetrForInstanceSegmentation(hf_config)
        return cls(module, categories, dict(config))

    def collator_options(self) -> dict[str, Any]:
        return {"size": tuple(self.config["image_size"])}

    @staticmethod
    def _model_inputs(batch: Any) -> dict[str, Any]:
        inputs = {"pixel_values": batch["pixel_values"]}
        if batch.get("pixel_mask") is not None:
            inputs["pixel_mask"] = batch["pixel_mask"]
        return inputs

    def loss(self, model: Any, batch: Any) -> tuple[Any, dict[str, float]]:
        outputs = model(**self._model_inputs(batch), labels=batch["labels"])
        parts = {k: float(v.detach()) for k, v in (outputs.loss_dict or {}).items()
                 if not k[-1].isdigit() and not k.endswith("_enc")}
        return outputs.loss, parts

    def predict(self, model: Any, batch: Any, sizes: Sequence[tuple[int, int]]) -> list[Instances]:
        import torch

        with torch.no_grad():
            outputs = model(**self._model_inputs(batch))
        return self.postprocess(outputs.logits, outputs.pred_boxes, outputs.pred_masks,
                                sizes, batch.get("pixel_mask"))

    def postprocess(self, logits: Any, pred_boxes: Any, pred_masks: Any,
                    sizes: Sequence[tuple[int, int]], pixel_mask: Any = None) -> list[Instances]:
        """Raw outputs -> one ``Instances`` per image of size ``sizes[i]``.

        ``logits`` (B, Q, C), ``pred_boxes`` (B, Q, 4) cxcywh normalised to the padded input,
        ``pred_masks`` (B, Q, h, w) logits at 1/4 of the padded input, ``pixel_mask`` (B, Hp, Wp)
        1 on real pixels (None: no padding). Tensors or numpy arrays.
        """
        import torch
        import torch.nn.functional as F

        logits, pred_boxes, pred_masks = (torch.as_tensor(x) for x in (logits, pred_boxes,
                                                                       pred_masks))
        batch, queries, classes = logits.shape
        if len(sizes) != batch:
            raise InstkitError(f"{batch} images in the outputs but {len(sizes)} sizes")
        prob = logits.float().sigmoid()
        k = min(int(self.config["top_k"]), queries * classes)
        scores, flat = torch.topk(prob.reshape(batch, -1), k, dim=1)
        query_index = torch.div(flat, classes, rounding_mode="floor")
        labels = flat % classes
        mask_h, mask_w = int(pred_masks.shape[-2]), int(pred_masks.shape[-1])
        threshold = float(self.config["score_threshold"])
        results = []
        for b, (height, width) in enumerate(sizes):
            if pixel_mask is not None:
                valid = torch.as_tensor(pixel_mask[b]).bool()
                pad_h, pad_w = int(valid.shape[0]), int(valid.shape[1])
                valid_h = int(valid.any(dim=1).sum())
                valid_w = int(valid.any(dim=0).sum())
            else:
                pad_h, pad_w = mask_h * 4, mask_w * 4
                valid_h, valid_w = pad_h, pad_w
            keep = scores[b] > threshold
            q = query_index[b][keep]
            image_scores = scores[b][keep]
            image_labels = labels[b][keep]
            if len(q) == 0:
                results.append(Instances.empty((height, width)).replace(
                    scores=np.zeros(0, np.float32)))
                continue
            crop_h = max(1, round(valid_h * mask_h / pad_h))
            crop_w = max(1, round(valid_w * mask_w / pad_w))
            mask_logits = pred_masks[b, q, :crop_h, :crop_w].float()
            upsampled = F.interpolate(mask_logits[:, None], size=(height, width), mode="bilinear",
                                      align_corners=False)[:, 0]
            binary = upsampled > float(self.config["mask_threshold"])
            nonempty = binary.flatten(1).any(dim=1)
            cx, cy, w, h = pred_boxes[b, q].float().unbind(-1)
            sx, sy = pad_w / valid_w * width, pad_h / valid_h * height
            boxes = torch.stack([(cx - w / 2) * sx, (cy - h / 2) * sy,
                                 (cx + w / 2) * sx, (cy + h / 2) * sy], dim=-1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            sel = nonempty.cpu().numpy()
            results.append(Instances(
                image_size=(height, width),
                boxes=boxes.detach().cpu().numpy().astype(np.float32)[sel],
                labels=image_labels.cpu().numpy().astype(np.int64)[sel],
                scores=image_scores.detach().float().cpu().numpy()[sel],
                masks=Masks.from_dense(binary.cpu().numpy()[sel]),
            ))
        return results

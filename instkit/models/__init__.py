"""Instance-segmentation models behind one small adapter interface (``ModelAdapter``).

- ``maskrcnn``: torchvision Mask R-CNN (``resnet50`` FPN, or lighter backbones).
- ``rfdetr``: transformers RF-DETR-Seg (``RfDetrForInstanceSegmentation``).

``build_model(kind, categories, ...)`` makes a new model for a category table; ``adapter_from_config``
rebuilds one from the config stored in a checkpoint. torch / torchvision / transformers are
imported only when a model is built.
"""

from __future__ import annotations

from typing import Any

from instkit.categories import Categories
from instkit.errors import InstkitError
from instkit.models.base import ModelAdapter, TrainDefaults

MODEL_KINDS = ("maskrcnn", "rfdetr")


def _adapter_class(kind: str) -> Any:
    if kind == "maskrcnn":
        from instkit.models.maskrcnn import MaskRCNNAdapter

        return MaskRCNNAdapter
    if kind == "rfdetr":
        from instkit.models.rfdetr import RfDetrAdapter

        return RfDetrAdapter
    raise InstkitError(f"unknown model kind {kind!r}; choose one of {MODEL_KINDS}")


def build_model(kind: str, categories: Categories, **options: Any) -> ModelAdapter:
    """A new model of ``kind`` for ``categories``.

    ``maskrcnn`` options: ``backbone`` (resnet50, resnet34, resnet18, mobilenet_v3, tiny),
    ``weights`` (local file), ``image_size`` (min = max side), and config overrides
    (``nms_threshold``, ``score_threshold``, ``mask_threshold``, ``detections_per_image``).
    ``rfdetr`` options: ``weights`` (local folder or cached hub id), ``tiny``, ``image_size``,
    ``model_id``, ``score_threshold``, ``top_k``, ``config_overrides``.
    """
    if len(categories) == 0:
        raise InstkitError("cannot build a model for a dataset without categories")
    adapter: ModelAdapter = _adapter_class(kind).build(categories, **options)
    return adapter


def adapter_from_config(config: dict[str, Any], categories: Categories) -> ModelAdapter:
    """Rebuild the architecture described by ``config`` (weights not loaded)."""
    adapter: ModelAdapter = _adapter_class(str(config.get("kind"))).from_config(config, categories)
    return adapter


def default_train_settings(kind: str) -> TrainDefaults:
    """The training defaults of ``kind`` (task spec for Mask R-CNN, the guide for RF-DETR-Seg)."""
    return _adapter_class(kind).defaults


__all__ = ["MODEL_KINDS", "ModelAdapter", "TrainDefaults", "adapter_from_config", "build_model",
           "default_train_settings"]

"""Conversions between ``Instances`` and the objects other libraries use.

- supervision ``Detections`` (``to_supervision`` / ``from_supervision``): ``xyxy`` boxes,
  dense ``(N, H, W)`` bool ``mask``, ``class_id`` (instkit labels ``0..C-1``), ``confidence``
  (scores), ``tracker_id`` (``extras["tracker_id"]`` when present); ``data["instkit_id"]`` and
  ``data["iscrowd"]`` carry ids and crowd flags so a round trip is exact.
- torchvision ``tv_tensors`` (``to_tv_tensors`` / ``from_tv_tensors``): a target dict
  ``{"boxes": BoundingBoxes(XYXY, canvas_size=(H, W)), "masks": Mask (N, H, W) uint8,
  "labels": int64, "scores", "iscrowd", "ids"}``, the form ``torchvision.transforms.v2``
  pipelines transform together with the image. Boxes in XYWH or CXCYWH are converted back.
- torchmetrics ``MeanAveragePrecision`` input dicts (``to_torchmetrics``): per image a
  prediction dict (``boxes``, ``scores``, ``labels``, ``masks``) and a target dict (``boxes``,
  ``labels``, ``masks``, ``iscrowd``, ``area``: the COCO file's area, as instkit evaluates).
- pycocotools RLE dicts (``to_coco_rles`` / ``instances_from_masks``).

Every way back to ``Instances`` takes the image size from the masks when they carry it (dense
arrays, RLE ``size``, ``canvas_size``); ``image_size`` is needed only without masks.

Boxes stay instkit's: ``xyxy``, pixel-edge (a mask spanning columns 3..7 has ``x0=3, x1=8``).
supervision's own ``mask_to_xyxy`` gives ``x1=7`` for that mask. The target libraries are
optional extras (``instkit[interop]``), imported only inside these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import InstkitError
from instkit.instances import Instances
from instkit.masks import Masks
from instkit.sample import Sample


class InteropError(InstkitError, ValueError):
    """An object that cannot be converted (missing column, sizes that disagree)."""


def _need(module: str, extra: str = "interop") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed for this conversion: pip install "
                          f"'instkit[{extra}]' (or {module.split('.')[0]})") from exc


def _size_of(candidates: Sequence[tuple[int, int] | None], image_size: Any,
             what: str) -> tuple[int, int]:
    sizes = {tuple(int(v) for v in s) for s in candidates if s is not None}
    if image_size is not None:
        sizes.add((int(image_size[0]), int(image_size[1])))
    if len(sizes) > 1:
        raise InteropError(f"{what}: image sizes disagree: {sorted(sizes)}")
    if not sizes:
        raise InteropError(f"{what} carry no image size (no masks): pass image_size=(H, W)")
    (h, w), = sizes
    return h, w


# --- pycocotools RLE and dense masks -----------------------------------------------------------


def to_coco_rles(instances: Instances) -> list[dict[str, Any]]:
    """The masks as pycocotools compressed RLE dicts (``{"size": [H, W], "counts": bytes}``)."""
    if instances.masks is None:
        raise InteropError("these Instances have no masks")
    return instances.masks.to_rle()


def instances_from_masks(
    masks: np.ndarray | Sequence[Mapping[str, Any]],
    labels: Any,
    *,
    scores: Any = None,
    boxes: Any = None,
    iscrowd: Any = None,
    ids: Any = None,
    image_size: tuple[int, int] | None = None,
) -> Instances:
    """``Instances`` from dense ``(N, H, W)`` masks or pycocotools RLE dicts (compressed or not),
    the image size taken from the masks; boxes from the masks unless given (``xyxy``)."""
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise InteropError(f"dense masks must be (N, H, W), got shape {masks.shape}")
        size = _size_of([masks.shape[1:]], image_size, "masks")
        column = Masks.from_dense(masks.astype(bool, copy=False))
    else:
        rles = [dict(r) for r in masks]
        for index, rle in enumerate(rles):
            if "size" not in rle or "counts" not in rle:
                raise InteropError(f"mask {index} is not an RLE dict (needs 'size' and 'counts')")
        size = _size_of([tuple(r["size"]) for r in rles], image_size, "RLE masks")
        if not rles:
            column = Masks.empty(size)
        else:
            import pycocotools.mask as mask_utils

            rles = [mask_utils.frPyObjects(r, *size) if isinstance(r["counts"], list) else r
                    for r in rles]
            column = Masks.from_rles(rles, size)
    return Instances(image_size=size, masks=column, boxes=boxes, labels=labels, scores=scores,
                     iscrowd=iscrowd, ids=ids)


# --- supervision ----------------------------------------------------------------------------------


def to_supervision(instances: Instances) -> Any:
    """``Instances`` -> ``supervision.Detections`` (see the module docstring)."""
    sv = _need("supervision")
    tracker = instances.extras.get("tracker_id")
    return sv.Detections(
        xyxy=instances.boxes.astype(np.float32).reshape(-1, 4),
        mask=instances.masks.to_dense().astype(bool) if instances.masks is not None else None,
        confidence=instances.scores,
        class_id=instances.labels.astype(np.int64),
        tracker_id=None if tracker is None else np.asarray(tracker, dtype=np.int64),
        data={"instkit_id": instances.ids.copy(), "iscrowd": instances.iscrowd.copy()},
    )


def from_supervision(detections: Any, image_size: tuple[int, int] | None = None) -> Instances:
    """``supervision.Detections`` -> ``Instances``; the size comes from ``mask`` when present."""
    mask = detections.mask
    if mask is not None and not isinstance(mask, np.ndarray):
        mask = np.asarray(mask.to_dense() if hasattr(mask, "to_dense") else mask)
    if detections.class_id is None:
        raise InteropError("Detections.class_id is None: instkit needs a label per object")
    data = detections.data or {}
    extras = {}
    if detections.tracker_id is not None:
        extras["tracker_id"] = np.asarray(detections.tracker_id, dtype=np.int64)
    n = len(detections)
    if mask is not None:
        size = _size_of([mask.shape[1:]], image_size, "Detections")
        masks: Masks | None = Masks.from_dense(mask.astype(bool, copy=False))
    else:
        size = _size_of([], image_size, "Detections")
        masks = None
    return Instances(
        image_size=size, boxes=np.asarray(detections.xyxy, dtype=np.float32).reshape(n, 4),
        labels=np.asarray(detections.class_id, dtype=np.int64), masks=masks,
        scores=None if detections.confidence is None else np.asarray(detections.confidence,
                                                                      dtype=np.float32),
        ids=data.get("instkit_id"), iscrowd=data.get("iscrowd"), extras=extras or None,
    )


# --- torchvision tv_tensors ---------------------------------------------------------------------


def to_tv_tensors(instances: Instances) -> dict[str, Any]:
    """``Instances`` -> a ``torchvision.transforms.v2`` target dict (see the module docstring)."""
    torch = _need("torch", "torch")
    tv_tensors = _need("torchvision.tv_tensors", "torch")
    h, w = instances.image_size
    out = {
        "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(instances.boxes.copy()),
                                          format="XYXY", canvas_size=(h, w)),
        "labels": torch.from_numpy(instances.labels.astype(np.int64)),
        "iscrowd": torch.from_numpy(instances.iscrowd.astype(np.int64)),
        "ids": torch.from_numpy(instances.ids.astype(np.int64)),
    }
    if instances.masks is not None:
        out["masks"] = tv_tensors.Mask(torch.from_numpy(instances.masks.to_dense()
                                                        .astype(np.uint8)))
    if instances.scores is not None:
        out["scores"] = torch.from_numpy(instances.scores.copy())
    return out


_ROW_KEYS = ("labels", "iscrowd", "ids", "scores")


def tv_labels_getter(inputs: Any) -> tuple[Any, ...]:
    """``labels_getter`` for ``v2.SanitizeBoundingBoxes`` that keeps every per-object column of
    a :func:`to_tv_tensors` target in step when it drops boxes (its default keeps only
    ``labels``, so ``iscrowd``, ``ids`` and ``scores`` would no longer line up)."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else inputs
    return tuple(target[k] for k in _ROW_KEYS if k in target)


def from_tv_tensors(target: Mapping[str, Any], image_size: tuple[int, int] | None = None,
                    ) -> Instances:
    """A target dict of ``tv_tensors`` -> ``Instances``; the size comes from the boxes'
    ``canvas_size`` and the masks' shape, which must agree."""
    torch = _need("torch", "torch")
    tv_tensors = _need("torchvision.tv_tensors", "torch")
    from torchvision.ops import box_convert

    if "labels" not in target:
        raise InteropError("target has no 'labels'")
    sizes: list[tuple[int, int] | None] = []
    boxes = target.get("boxes")
    xyxy = None
    if boxes is not None:
        if isinstance(boxes, tv_tensors.BoundingBoxes):
            sizes.append(tuple(boxes.canvas_size))
            fmt = boxes.format.name.lower()
            plain = boxes.as_subclass(torch.Tensor)
            if fmt not in ("xyxy", "xywh", "cxcywh"):
                raise InteropError(f"box format {boxes.format.name} is not supported")
            xyxy = plain if fmt == "xyxy" else box_convert(plain, fmt, "xyxy")
        else:
            xyxy = torch.as_tensor(boxes)  # plain tensors are taken as XYXY
        xyxy = xyxy.detach().cpu().to(torch.float32).numpy().reshape(-1, 4)
    masks = target.get("masks")
    dense = None
    if masks is not None:
        dense = torch.as_tensor(masks).detach().cpu().numpy().astype(bool)
        if dense.ndim != 3:
            raise InteropError(f"masks must be (N, H, W), got shape {dense.shape}")
        sizes.append(dense.shape[1:])
    size = _size_of(sizes, image_size, "tv_tensors target")

    def column(key: str) -> Any:
        value = target.get(key)
        return None if value is None else torch.as_tensor(value).detach().cpu().numpy()

    return Instances(
        image_size=size, boxes=xyxy,
        masks=Masks.from_dense(dense) if dense is not None else None,
        labels=column("labels").astype(np.int64), scores=column("scores"),
        iscrowd=column("iscrowd"), ids=column("ids"),
    )


# --- torchmetrics -------------------------------------------------------------------------------


def _file_areas(sample: Sample, categories: Categories) -> np.ndarray:
    """The areas instkit's COCO evaluation uses (the file's while the instance is unchanged)."""
    from instkit.io.coco import sample_annotations

    return np.asarray([a["area"] for a in sample_annotations(sample, categories,
                                                             mask_format="rle")],
                      dtype=np.float32)


def torchmetrics_coco_thresholds() -> dict[str, list[float]]:
    """``MeanAveragePrecision`` keyword arguments with pycocotools' own IoU and recall
    thresholds. torchmetrics' defaults come from a float32 ``torch.linspace`` (0.55 becomes
    0.550000011920929, recall 0.2 becomes 0.20000000298...), which moves recall samples that
    fall exactly on a threshold (e.g. 1 of 5 objects found) and so changes AP by up to ~1e-3;
    with these, its figures equal COCOeval's to float32."""
    from pycocotools.cocoeval import Params

    params = Params(iouType="segm")
    return {"iou_thresholds": [float(v) for v in params.iouThrs],
            "rec_thresholds": [float(v) for v in params.recThrs]}


def to_torchmetrics(
    predictions: Sequence[Sample],
    ground_truth: Sequence[Sample] | None = None,
    categories: Categories | None = None,
    *,
    masks: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prediction and ground-truth samples (paired by ``image_id``; returned in image-id order)
    -> the ``preds`` and ``target`` lists of ``torchmetrics.detection.MeanAveragePrecision.update``. Labels are
    instkit's; targets carry ``iscrowd`` and the COCO ``area`` instkit evaluates with, so
    ``MeanAveragePrecision(iou_type="segm", **torchmetrics_coco_thresholds())`` gives
    ``instkit.evaluation.evaluate``'s figures (to float32). ``masks=False`` leaves masks out (``iou_type="bbox"``)."""
    torch = _need("torch", "torch")
    from instkit.sample import categories_of

    def pred_dict(inst: Instances) -> dict[str, Any]:
        if inst.scores is None:
            raise InteropError("predictions need scores")
        out = {"boxes": torch.from_numpy(inst.boxes.copy()),
               "scores": torch.from_numpy(inst.scores.copy()),
               "labels": torch.from_numpy(inst.labels.astype(np.int64))}
        if masks:
            if inst.masks is None:
                raise InteropError("predictions without masks: use masks=False")
            out["masks"] = torch.from_numpy(inst.masks.to_dense().astype(bool))
        return out

    preds = [pred_dict(p.instances) for p in predictions]
    if ground_truth is None:
        return preds, []
    cats = categories if categories is not None else categories_of(ground_truth)
    if cats is None:
        raise InteropError("no category table: pass categories=...")
    by_id = {p.image_id: p for p in predictions}
    preds, targets = [], []
    # in image-id order: torchmetrics numbers images by position and COCOeval concatenates
    # them in id order, so tied scores then break the same way as instkit's evaluation
    for sample in sorted(ground_truth, key=lambda s: s.image_id):
        pred = by_id.get(sample.image_id)
        preds.append(pred_dict(pred.instances if pred is not None
                               else Instances.empty(sample.image_size).replace(
                                   scores=np.zeros(0, np.float32),
                                   masks=Masks.empty(sample.image_size))))
        inst = sample.instances
        target = {"boxes": torch.from_numpy(inst.boxes.copy()),
                  "labels": torch.from_numpy(inst.labels.astype(np.int64)),
                  "iscrowd": torch.from_numpy(inst.iscrowd.astype(np.int64)),
                  "area": torch.from_numpy(_file_areas(sample, cats))}
        if masks:
            if inst.masks is None:
                raise InteropError(f"ground truth of image {sample.image_id} has no masks: use "
                                   "masks=False")
            target["masks"] = torch.from_numpy(inst.masks.to_dense().astype(bool))
        targets.append(target)
    return preds, targets


__all__ = [
    "InteropError",
    "from_supervision",
    "from_tv_tensors",
    "instances_from_masks",
    "to_coco_rles",
    "to_supervision",
    "to_torchmetrics",
    "torchmetrics_coco_thresholds",
    "to_tv_tensors",
]

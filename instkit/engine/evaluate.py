"""Running a model over a dataset: predictions as ``Sample``s, and their COCO evaluation.

With a process group (torchrun), each rank predicts every ``world_size``-th image; predictions
are gathered to every rank and rank 0 evaluates (pycocotools' COCOeval through
``instkit.evaluation.evaluate``), then shares the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from instkit.categories import Categories
from instkit.engine import distributed
from instkit.engine.checkpoint import unwrap
from instkit.engine.data import categories_of, label_map
from instkit.instances import Instances
from instkit.models import ModelAdapter
from instkit.sample import Sample, SampleMeta


class _EvalCollate:
    """``collate_fn`` for evaluation: the packed batch plus image-less copies of the samples."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, samples: Sequence[Sample]) -> tuple[Any, list[Sample]]:
        light = [Sample(s.instances, s.image_id, SampleMeta(categories=s.meta.categories,
                                                            file_name=s.meta.file_name))
                 for s in samples]
        return self.collator.pack(samples), light


def autocast_for(device: str, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA when ``enabled`` (float16 where bf16 is unsupported)."""
    if not enabled or not device.startswith("cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _compact(instances: Instances) -> Instances:
    if instances.masks is None:
        return instances
    return instances.replace(masks=instances.masks.to_rle_masks())


def predict_dataset(
    adapter: ModelAdapter,
    data: Sequence[Sample],
    *,
    model: Any = None,
    batch_size: int = 4,
    device: str = "cpu",
    num_workers: int = 0,
    transform: Callable[..., Sample] | None = None,
    amp: bool = False,
    progress: bool = True,
) -> tuple[list[Sample], list[Sample]]:
    """Predict every sample of ``data``; returns ``(ground_truth, predictions)`` in data order.

    Ground truth: the (transformed) samples without images. Predictions: samples with the same
    ``image_id`` whose ``Instances`` carry ``scores``, labels in the model's category table.
    """
    from torch.utils.data import DataLoader, Subset

    from instkit.data import InstanceDataset

    info = distributed.current()
    module = unwrap(model if model is not None else adapter.model)
    dataset = InstanceDataset(data, transform)
    indices = list(range(info.rank, len(dataset), info.world_size))
    collator = adapter.make_collator(device)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_EvalCollate(collator))
    was_training = module.training
    module.eval()
    mine: list[tuple[int, Sample, Sample]] = []
    position = 0
    try:
        bar = tqdm(loader, desc="predict", unit="batch", leave=False,
                   disable=True if not progress or not info.is_main else None)
        for packed, light in bar:
            batch = collator.finish(packed)
            sizes = [s.image_size for s in light]
            with torch.no_grad(), autocast_for(device, amp):
                predicted = adapter.predict(module, batch, sizes)
            for gt, inst in zip(light, predicted, strict=True):
                pred = Sample(_compact(inst), gt.image_id,
                              SampleMeta(categories=adapter.categories, file_name=gt.meta.file_name))
                mine.append((indices[position], gt, pred))
                position += 1
    finally:
        module.train(was_training)
    gathered = [item for part in distributed.all_gather_objects(mine) for item in part]
    gathered.sort(key=lambda item: item[0])
    return [g for _, g, _ in gathered], [p for _, _, p in gathered]


def to_data_labels(predictions: Sequence[Sample], model_categories: Categories,
                   data_categories: Categories) -> list[Sample]:
    """Predictions relabelled into the dataset's category table (classes it lacks dropped)."""
    if model_categories == data_categories:
        return list(predictions)
    mapping = label_map(model_categories, data_categories)
    out = []
    for sample in predictions:
        inst = sample.instances
        new_labels = mapping[inst.labels] if len(inst) else inst.labels
        keep = new_labels >= 0
        inst = inst[keep].replace(labels=new_labels[keep])
        meta = sample.meta.copy()
        meta.categories = data_categories
        out.append(sample.replace(instances=inst, meta=meta))
    return out


def evaluate_model(
    adapter: ModelAdapter,
    data: Sequence[Sample],
    *,
    model: Any = None,
    batch_size: int = 4,
    device: str = "cpu",
    num_workers: int = 0,
    transform: Callable[..., Sample] | None = None,
    amp: bool = False,
    progress: bool = True,
    score_threshold: float | str = 0.5,
) -> tuple[Any, list[Sample], list[Sample]]:
    """COCO evaluation of ``adapter`` on ``data``: ``(EvaluationResult, ground_truth,
    predictions)``. Mask mAP@0.5 (primary), mask mAP@.5:.95, box mAP@.5 and @.5:.95, per-class
    AP and the guide's union mean IoU; ``score_threshold`` applies to the per-image counts and
    the union IoU only (mAP uses every prediction, as COCO does); ``"f1"``: the score with the
    best F1 at IoU 0.5."""
    from instkit.evaluation import evaluate

    data_categories = categories_of(data)
    label_map(adapter.categories, data_categories, getattr(data, "file", None))
    ground_truth, predictions = predict_dataset(
        adapter, data, model=model, batch_size=batch_size, device=device,
        num_workers=num_workers, transform=transform, amp=amp, progress=progress)
    predictions = to_data_labels(predictions, adapter.categories, data_categories)
    result = None
    if distributed.current().is_main:
        has_masks = all(s.instances.masks is not None for s in ground_truth)
        result = evaluate(ground_truth, predictions, data_categories,
                          iou_types=("segm", "bbox") if has_masks else ("bbox",),
                          score_threshold=score_threshold, progress=False)
    result = distributed.broadcast_object(result)
    return result, ground_truth, predictions


def per_class_ap(result: Any) -> dict[str, float]:
    """Per-class mask AP@[.5:.95] by class name (box AP where there are no masks)."""
    out = {}
    for row in result.per_class:
        value = row.get("mask_ap")
        if value is None or not np.isfinite(value):  # box-only data: no mask AP
            value = row.get("box_ap")
        out[str(row["name"])] = float("nan") if value is None else float(value)
    return out


def is_better(value: float, best: float | None) -> bool:
    if value is None or not np.isfinite(value):
        return False
    return best is None or value > best

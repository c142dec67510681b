"""Fixtures of the viz tests: predictions made from a ground truth with known errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instkit import Instances, Masks, Sample, read_coco
from instkit.io.coco import CocoDataset

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viz"


def perturbed_predictions(dataset: CocoDataset, seed: int = 0) -> list[Sample]:
    """One prediction sample per image: most non-crowd objects found (masks shifted by 2 px),
    every fourth missed, plus one false positive (a found mask moved far away) per image."""
    rng = np.random.default_rng(seed)
    out = []
    for sample in dataset:
        gt = sample.instances
        keep = np.flatnonzero(~gt.iscrowd)
        keep = keep[np.arange(keep.size) % 4 != 3]
        h, w = gt.image_size
        if keep.size == 0 or gt.masks is None:
            inst = Instances(image_size=(h, w), masks=Masks.empty((h, w)),
                             labels=np.zeros(0, np.int64), scores=np.zeros(0, np.float32))
        else:
            dense = gt.masks[keep].to_dense()
            dense = np.pad(dense, ((0, 0), (0, 0), (2, 0)))[:, :, :w]
            shifted = np.roll(dense[:1], (h // 2, w // 2), axis=(1, 2))
            dense = np.concatenate([dense, shifted])
            labels = np.concatenate([gt.labels[keep], gt.labels[keep[:1]]])
            nonempty = dense.reshape(len(dense), -1).any(axis=1)
            scores = rng.uniform(0.55, 0.99, len(dense)).astype(np.float32)
            inst = Instances(image_size=(h, w), masks=Masks.from_dense(dense[nonempty]),
                             labels=labels[nonempty], scores=scores[nonempty])
        out.append(Sample(inst, sample.image_id, sample.meta.copy()))
    return out


def write_predictions(dataset: CocoDataset, path: Path, seed: int = 0) -> Path:
    from instkit.evaluation import to_coco_results

    results = to_coco_results(perturbed_predictions(dataset, seed), dataset.categories)
    path.write_text(json.dumps(results))
    return path


@pytest.fixture(scope="session")
def tinycoco_val(tinycoco: dict[str, Path]) -> CocoDataset:
    return read_coco(tinycoco["val_json"], tinycoco["val_images"])


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

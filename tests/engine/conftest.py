"""Shared by the engine tests: a small synthetic COCO set and the tiny RF-DETR-Seg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from instkit.synthetic import write_dataset


@pytest.fixture(scope="module")
def small_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engine-data")
    return write_dataset(root / "ds", num_images=4, seed=7, image_size=(64, 64), max_instances=3)


def tiny_rfdetr(data: Any) -> Any:
    """The tiny RF-DETR-Seg for ``data``'s categories, its weights seeded."""
    import torch

    from instkit.models import build_model

    torch.manual_seed(0)
    return build_model("rfdetr", data.categories, tiny=True)

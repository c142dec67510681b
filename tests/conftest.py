"""Shared fixtures: the real COCO subsets in ../shared/data and hypothesis profiles sized for CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile("dev", max_examples=10, deadline=None)
    settings.register_profile("thorough", max_examples=500, deadline=None)
    settings.load_profile(os.environ.get("INSTKIT_HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INSTKIT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the ../shared/data folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def tinycoco(shared_data: Path) -> dict[str, Path]:
    """Paths of tinycoco: ``train_json``, ``train_images``, ``val_json``, ``val_images``."""
    root = _require(shared_data / "tinycoco")
    return {
        "train_json": root / "annotations" / "instances_train2017.json",
        "train_images": root / "images" / "train2017",
        "val_json": root / "annotations" / "instances_val2017.json",
        "val_images": root / "images" / "val2017",
    }


@pytest.fixture(scope="session")
def pose_minicoco(shared_data: Path) -> dict[str, Path]:
    """Paths of pose_minicoco: ``train_json``, ``train_images``, ``val_json``, ``val_images``."""
    root = _require(shared_data / "pose_minicoco")
    return {
        "train_json": root / "annotations" / "person_keypoints_train2017.json",
        "train_images": root / "images" / "train2017",
        "val_json": root / "annotations" / "person_keypoints_val2017.json",
        "val_images": root / "images" / "val2017",
    }


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COCO dataset on disk (annotation file path; images beside it)."""
    from instkit.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synthetic"), num_images=8, seed=3)


def available_devices() -> list[str]:
    """``cpu`` always, ``cuda`` when present: parametrise device tests with this."""
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        pass
    return devices

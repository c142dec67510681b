"""Training, evaluation and prediction loops over any ``instkit.models`` adapter (needs torch).

- ``train(adapter, train_data, val_data, out_dir, TrainConfig(...))``: see ``instkit.engine.train``.
- ``evaluate_model(adapter, data)``: COCO mask/box mAP, per-class AP, union mean IoU.
- ``predict_paths(model_dir, images, out_dir)``: COCO results JSON (RLE) and overlay PNGs.
- ``save_checkpoint`` / ``load_adapter`` / ``restore_training``: safetensors checkpoints.
- multi-process: run under ``torchrun``; see ``instkit.engine.distributed``.
"""

from instkit.engine.checkpoint import (
    load_adapter,
    load_weights,
    read_metadata,
    resolve_checkpoint,
    restore_training,
    save_checkpoint,
)
from instkit.engine.data import label_map, open_dataset
from instkit.engine.evaluate import evaluate_model, predict_dataset
from instkit.engine.train import TrainConfig, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "evaluate_model",
    "label_map",
    "load_adapter",
    "load_weights",
    "open_dataset",
    "predict_dataset",
    "read_metadata",
    "resolve_checkpoint",
    "restore_training",
    "save_checkpoint",
    "train",
]

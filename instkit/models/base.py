"""What every model adapter provides to the model-agnostic loops in ``instkit.engine``.

An adapter owns one ``torch.nn.Module`` and knows three things the loops do not: which collated
batch format feeds it (a ``instkit.data.Collator`` target), how to get a scalar loss out of a
batch, and how to turn the model's raw outputs back into ``Instances`` in the frame of the
samples that were collated (contiguous instkit labels, ``scores``, masks thresholded to bool).

``config`` is a JSON-ready dict from which ``instkit.models.adapter_from_config`` rebuilds the same
architecture; it is stored in every checkpoint together with the category table.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from instkit.categories import Categories
from instkit.instances import Instances

log = logging.getLogger("instkit.models")
_ANNOUNCED: set[str] = set()


def announce_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        log.warning(message)


@dataclass(frozen=True)
class TrainDefaults:
    """Training hyper-parameters a model is trained with unless told otherwise.

    ``scheduler``: ``"step"`` (StepLR ``step_size`` epochs, ``gamma``) or ``"cosine"`` (per-step
    cosine decay after a linear warm-up over ``warmup_ratio`` of all steps). ``warmup_iters``:
    a linear warm-up over the first steps of epoch 0 (torchvision's detection references), used
    with ``"step"``. ``patience``: epochs without a better primary metric before stopping
    (``None``: never). ``amp``: mixed precision when training on a GPU. ``ema``: evaluate and
    save an exponential moving average of the weights (``instkit.engine.ema``) with ``ema_decay``.
    """

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    scheduler: str
    step_size: int
    gamma: float
    warmup_ratio: float
    warmup_iters: int
    batch_size: int
    epochs: int
    patience: int | None
    amp: bool
    grad_clip: float | None = None
    ema: bool = False
    ema_decay: float = 0.993

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelAdapter(ABC):
    """One model plus the glue between instkit batches and its inputs and outputs."""

    kind: str = ""
    collate_target: str = ""
    defaults: TrainDefaults

    def __init__(self, model: Any, categories: Categories, config: dict[str, Any],
                 *, pretrained: str | None = None) -> None:
        self.model = model
        self.categories = categories
        self.config = config
        #: where the initial weights came from (None: random initialisation)
        self.pretrained = pretrained

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def collator_options(self) -> dict[str, Any]:
        """Keyword arguments for ``instkit.data.Collator`` besides ``target`` and ``device``."""
        return {}

    def make_collator(self, device: str = "cpu") -> Any:
        from instkit.data import Collator

        return Collator(self.collate_target, device, **self.collator_options())

    @abstractmethod
    def loss(self, model: Any, batch: Any) -> tuple[Any, dict[str, float]]:
        """Forward ``batch`` through ``model`` (this adapter's module, maybe DDP-wrapped) in
        training mode; returns the scalar loss tensor and its named parts as floats."""

    @abstractmethod
    def predict(self, model: Any, batch: Any, sizes: Sequence[tuple[int, int]]) -> list[Instances]:
        """Forward ``batch`` in eval mode (no grad) and return one ``Instances`` per image, in the
        frame of the collated samples whose ``(H, W)`` are ``sizes``: boxes ``xyxy`` float32,
        labels int64 ``0..C-1``, ``scores`` float32, masks as bool ``Masks``."""

    @staticmethod
    def batch_size_of(batch: Any) -> int:
        if isinstance(batch, tuple):
            return len(batch[0])
        return int(batch["pixel_values"].shape[0])

    def describe(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        origin = self.pretrained or "random initialisation"
        return (f"{self.kind} ({self.config.get('backbone', self.config.get('variant', ''))}), "
                f"{self.num_classes} classes, {params / 1e6:.1f}M parameters, weights: {origin}")

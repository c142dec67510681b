"""An exponential moving average (EMA) of a model's weights, for evaluation and the checkpoints.

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, with the decay ramped
up as ``decay * (1 - exp(-updates / tau))`` (as Ultralytics' ``ModelEMA`` does), so the first
steps' random weights fade out quickly. DETR-family recipes (RF-DETR, LW-DETR, D-FINE) evaluate
and ship the EMA: it averages out the step-to-step wobble of a noisy, short training run.
Buffers (BatchNorm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch


class ModelEMA:
    """The averaged copy of ``model`` (``module``), updated by ``update(model)``."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, tau: float = 100.0,
                 updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1 (exclusive), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau)) if self.tau > 0 \
            else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        mine = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            target = mine[name]
            target.lerp_(param.detach().to(target.dtype), 1.0 - d)
        theirs = dict(model.named_buffers())
        for name, buffer in self.module.named_buffers():
            buffer.copy_(theirs[name])

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the averaged weights (JSON)."""
        return {"decay": self.decay, "tau": self.tau, "updates": self.updates}


__all__ = ["ModelEMA"]

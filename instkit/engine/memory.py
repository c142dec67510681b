"""A memory pre-flight for training: estimate what a batch needs before anything is built.

The estimate is a model of measured peaks (``ru_maxrss`` of one AdamW step on CPU, float32,
``torch`` 1 thread), not a probe: RF-DETR-Seg (32.8M parameters, the default "medium" config)
at 560x560 peaked at 4.6 GB with batch 1 and 8.0 GB with batch 2 (3.4 GB per image at that
size), so its defaults (batch 16) need ~56 GB and were killed by the kernel at 24 GB. Activations scale with the
number of pixels; bf16 autocast on a GPU roughly halves them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: measured (see the module notes); bytes
_RFDETR_BASE = 0.7e9  # interpreter, torch and libraries, beyond the parameters' 16 bytes
_RFDETR_PER_IMAGE_560 = 3.4e9  # activations kept for backward, per 560x560 image
_BYTES_PER_PARAM = 16  # float32 weight + gradient + AdamW's two moments


@dataclass(frozen=True)
class MemoryEstimate:
    needed: float
    available: float | None
    batch_size: int
    largest_batch: int

    @property
    def fits(self) -> bool:
        return self.available is None or self.needed <= self.available


def available_bytes(device: str) -> float | None:
    """Free memory of ``device``: CUDA's free memory, else the host's MemAvailable."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
            return float(torch.cuda.mem_get_info(index)[0])
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate_rfdetr(num_parameters: int, image_size: tuple[int, int], batch_size: int,
                    device: str, amp: bool, available: float | None = None) -> MemoryEstimate:
    """Peak memory of one RF-DETR-Seg training step and the largest batch that fits."""
    scale = (image_size[0] * image_size[1]) / (560 * 560)
    # activations grow with the model's width too: scaled by parameters against the measured 32.8M
    per_image = _RFDETR_PER_IMAGE_560 * scale * max(num_parameters / 32.8e6, 0.05)
    if amp and device.startswith("cuda"):
        per_image /= 2
    fixed = (_RFDETR_BASE if not device.startswith("cuda") else 0.0) \
        + num_parameters * _BYTES_PER_PARAM
    if available is None:
        available = available_bytes(device)
    largest = batch_size if available is None else max(0, int((available * 0.9 - fixed)
                                                                // per_image))
    return MemoryEstimate(needed=fixed + per_image * batch_size, available=available,
                          batch_size=batch_size, largest_batch=largest)


def gigabytes(value: float) -> str:
    return f"{value / 1e9:.1f} GB"

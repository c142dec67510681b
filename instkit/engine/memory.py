"""A memory pre-flight for training: what a batch needs, estimated or measured.

``estimate_rfdetr`` / ``estimate_maskrcnn`` are models of measured peaks (``ru_maxrss`` of one
training step on CPU, float32), cheap enough to run before every training: RF-DETR-Seg (32.8M
parameters, the default "medium" config) at 560x560 peaked at 4.6 GB with batch 1 and 8.0 GB
with batch 2 (3.4 GB per image at that size), so its defaults (batch 16) need ~56 GB and were
killed by the kernel at 24 GB. Activations scale with the number of pixels; bf16 autocast on a
GPU roughly halves them.

``measure_batches`` is what ``--batch-size auto`` uses, as Ultralytics' autobatch does: real
training steps (forward and backward) on real, augmented batches of 1 and 2 images, their peak
memory fitted by a line (fixed + per image), and the largest batch whose prediction fits a share
of the free memory. On CUDA the peak is the allocator's; on the host it is the process's resident
set, sampled every few milliseconds during the step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
                    device: str, amp: bool, available: float | None = None,
                    ema: bool = False) -> MemoryEstimate:
    """Peak memory of one RF-DETR-Seg training step and the largest batch that fits
    (``ema``: a float32 average of the weights is kept too)."""
    scale = (image_size[0] * image_size[1]) / (560 * 560)
    # activations grow with the model's width too: scaled by parameters against the measured 32.8M
    per_image = _RFDETR_PER_IMAGE_560 * scale * max(num_parameters / 32.8e6, 0.05)
    return _estimate(per_image, _RFDETR_BASE,
                     num_parameters * (_BYTES_PER_PARAM + (_EMA_BYTES_PER_PARAM if ema else 0)),
                     batch_size, device, amp, available)


def _estimate(per_image: float, base: float, parameter_bytes: float, batch_size: int,
              device: str, amp: bool, available: float | None) -> MemoryEstimate:
    """``per_image`` bytes of activations (halved under CUDA AMP) on top of the parameters'
    bytes and, off CUDA, the process's ``base``; the largest batch within 90% of ``available``
    (this device's free memory when None)."""
    if amp and device.startswith("cuda"):
        per_image /= 2
    fixed = (base if not device.startswith("cuda") else 0.0) + parameter_bytes
    if available is None:
        available = available_bytes(device)
    largest = batch_size if available is None else max(0, int((available * 0.9 - fixed)
                                                                // per_image))
    return MemoryEstimate(needed=fixed + per_image * batch_size, available=available,
                          batch_size=batch_size, largest_batch=largest)


#: measured with ``measure_batches`` (one forward and backward pass on CPU, float32, torch 2
#: threads, batches of 1 and 2 tinycoco images; the slope between them, rounded up): bytes per
#: input pixel and image, by backbone. resnet50 at min_size 800: 2.54 GB for one 800x1216
#: batch, 5.17 GB for two at 800x1248; resnet18, mobilenet_v3 and tiny measured at min_size
#: 400 (1.19e3, 1.52e3, 0.39e3); resnet34 not measured (between resnet18 and resnet50).
_MASKRCNN_BYTES_PER_PIXEL = {"resnet50": 2.6e3, "resnet34": 1.8e3, "resnet18": 1.3e3,
                             "mobilenet_v3": 1.6e3, "tiny": 0.45e3}
_MASKRCNN_BASE = 0.7e9  # interpreter, torch and libraries
_SGD_BYTES_PER_PARAM = 12  # float32 weight + gradient + momentum


def estimate_maskrcnn(num_parameters: int, backbone: str, min_size: int, max_size: int,
                      batch_size: int, device: str, amp: bool = False,
                      available: float | None = None, ema: bool = False) -> MemoryEstimate:
    """Peak memory of one Mask R-CNN training step and the largest batch that fits.

    Images are resized so the shorter side is ``min_size`` (the longer at most ``max_size``);
    the estimate takes a 2:3 image (COCO's 640x427 is the usual shape), padded to 32.
    """
    long_side = min(max_size, round(min_size * 3 / 2))
    pixels = (-(-min_size // 32) * 32) * (-(-long_side // 32) * 32)
    per_image = _MASKRCNN_BYTES_PER_PIXEL.get(backbone, _MASKRCNN_BYTES_PER_PIXEL["resnet50"]) \
        * pixels
    return _estimate(per_image, _MASKRCNN_BASE,
                     num_parameters * (_SGD_BYTES_PER_PARAM + (_EMA_BYTES_PER_PARAM if ema else 0)),
                     batch_size, device, amp, available)


@dataclass(frozen=True)
class BatchProfile:
    """Peak memory of real training steps: ``peaks[i]`` bytes above the state before the probe
    for a batch of ``batches[i]`` images, fitted as ``fixed + per_image * batch`` (``fixed``
    includes the optimizer's state, which the probe's steps do not create)."""

    device: str
    batches: tuple[int, ...]
    peaks: tuple[float, ...]
    fixed: float
    per_image: float
    seconds: float
    available: float | None  # free bytes on the device just before the probe

    def needed(self, batch_size: int) -> float:
        return self.fixed + self.per_image * batch_size

    def largest_batch(self, available: float, fraction: float = 0.8) -> int:
        """The largest batch predicted to use at most ``fraction`` of ``available`` bytes."""
        return max(0, int((available * fraction - self.fixed) // self.per_image))


class _ResidentPeak:
    """The process's largest resident set while the block runs (sampled every 2 ms)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> float:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return float(handle.read().split()[1]) * self._page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> _ResidentPeak:
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


_OPTIMIZER_STATE_BYTES = {"sgd": 4, "adamw": 8}  # momentum; AdamW's two moments (float32)
_EMA_BYTES_PER_PARAM = 4  # the weights' float32 average (``TrainConfig.ema``)


def measure_batches(adapter: Any, samples: Sequence[Any], *, transform: Any = None,
                    device: str = "cpu", batches: tuple[int, ...] = (1, 2), amp: bool = False,
                    optimizer: str = "sgd", seed: int = 0, ema: bool = False) -> BatchProfile:
    """Run one forward and backward pass per batch size on the first images of ``samples``
    (augmented by ``transform`` as in training) and fit their peak memory.

    Nothing is stepped and the buffers (BatchNorm statistics) are put back, so the model is left
    as it was. Raises ``InstkitError`` when even the smallest batch runs out of memory.
    """
    import torch

    from instkit.data import InstanceDataset
    from instkit.engine.evaluate import autocast_for
    from instkit.errors import InstkitError

    if len(samples) == 0:
        raise InstkitError("no images to measure a batch with")
    started = time.perf_counter()
    cuda = device.startswith("cuda")
    model = adapter.model.to(device)
    was_training = model.training
    buffers = {name: value.detach().clone() for name, value in model.named_buffers()}
    model.train()
    dataset = InstanceDataset(samples, transform, seed=seed)
    collator = adapter.make_collator(device)
    peaks: list[float] = []
    measured: list[int] = []
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = float(torch.cuda.memory_allocated(device))
    else:
        base = _ResidentPeak().rss()
    available = available_bytes(device)
    try:
        for batch_size in batches:
            items = [dataset[i % len(dataset)] for i in range(batch_size)]
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                    with autocast_for(device, amp):
                        loss, _ = adapter.loss(model, collator.finish(collator.pack(items)))
                    loss.backward()
                    torch.cuda.synchronize(device)
                    peak = float(torch.cuda.max_memory_allocated(device)) - base
                else:
                    with _ResidentPeak() as watch:
                        loss, _ = adapter.loss(model, collator.finish(collator.pack(items)))
                        loss.backward()
                    peak = watch.peak - base
            except (torch.OutOfMemoryError, MemoryError):
                if not measured:
                    raise InstkitError(f"not even a batch of {batch_size} fits on {device}; "
                                       "lower --image-size") from None
                break
            finally:
                model.zero_grad(set_to_none=True)
                loss = None
                if cuda:
                    torch.cuda.empty_cache()
            peaks.append(max(peak, 0.0))
            measured.append(batch_size)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # what the probe's steps do not create: the optimizer's state and the weights' average
    state = params * (_OPTIMIZER_STATE_BYTES.get(optimizer, 8)
                      + (_EMA_BYTES_PER_PARAM if ema else 0))
    if len(measured) >= 2 and peaks[-1] > peaks[0]:
        per_image = (peaks[-1] - peaks[0]) / (measured[-1] - measured[0])
        fixed = max(peaks[0] - per_image * measured[0], 0.0)
    else:  # one point, or no growth seen: all of it per image (the safe side)
        per_image = max(peaks[-1] / measured[-1], 1.0)
        fixed = 0.0
    return BatchProfile(device=device, batches=tuple(measured), peaks=tuple(peaks),
                        fixed=fixed + state, per_image=per_image,
                        seconds=time.perf_counter() - started, available=available)


def gigabytes(value: float) -> str:
    return f"{value / 1e9:.1f} GB"

"""The training loop, the same for every model (through its ``ModelAdapter``).

Per epoch: shuffled batches (``DistributedSampler``, deterministic from ``(seed, epoch)``, so a
resumed run sees the same order), forward / backward / step, a per-step learning-rate schedule,
one JSON line per logged step; then COCO evaluation on the validation data, one JSON line for
the epoch, ``last/`` saved every epoch and ``best/`` whenever mask mAP@0.5 improves; early
stopping after ``patience`` epochs without improvement. At the end, ``curves.png``.

Run folder: ``metrics.jsonl``, ``last/``, ``best/``, ``curves.png``, ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from instkit.engine import distributed
from instkit.engine.checkpoint import (
    load_weights,
    resolve_checkpoint,
    restore_training,
    save_checkpoint,
    unwrap,
)
from instkit.engine.data import categories_of
from instkit.engine.evaluate import autocast_for, evaluate_model, is_better, per_class_ap
from instkit.engine.logging import MetricsLog, plot_curves
from instkit.errors import InstkitError, Location
from instkit.io.files import atomic_write
from instkit.models import ModelAdapter
from instkit.sample import Sample


@dataclass
class TrainConfig:
    """Training settings; ``None`` means the model's default (``adapter.defaults``).

    ``max_steps`` stops after that many optimizer steps in all (a fixed budget);
    ``save_every_steps`` also saves ``last/`` inside an epoch (resume continues from that batch);
    ``log_every`` writes every n-th step to ``metrics.jsonl``.
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    optimizer: str | None = None
    scheduler: str | None = None
    step_size: int | None = None
    gamma: float | None = None
    warmup_ratio: float | None = None
    warmup_iters: int | None = None
    patience: int | None = None
    amp: bool | None = None
    grad_clip: float | None = None
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    eval_batch_size: int | None = None
    eval_every: int = 1
    log_every: int = 1
    save_every_steps: int | None = None
    max_steps: int | None = None
    progress: bool = True
    find_unused_parameters: bool = True

    def resolved(self, adapter: ModelAdapter) -> TrainConfig:
        """A copy with every ``None`` hyper-parameter replaced by the model's default."""
        defaults = adapter.defaults.as_dict()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, default in defaults.items():
            if values.get(key) is None and key != "patience" and key != "grad_clip":
                values[key] = default
        if self.patience is None:
            values["patience"] = defaults["patience"]
        if self.grad_clip is None:
            values["grad_clip"] = defaults["grad_clip"]
        out = TrainConfig(**values)
        if out.optimizer not in ("sgd", "adamw"):
            raise InstkitError(f"optimizer must be 'sgd' or 'adamw', got {out.optimizer!r}")
        if out.scheduler not in ("step", "cosine", "constant"):
            raise InstkitError(f"scheduler must be 'step', 'cosine' or 'constant', got "
                               f"{out.scheduler!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(out, name)) < 1:
                raise InstkitError(f"{name} must be at least 1, got {getattr(out, name)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    run_dir: Path
    epochs_run: int
    steps: int
    best_metric: float | None
    best_epoch: int | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    last_eval: Any = None


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum,  # type: ignore[arg-type]
                               weight_decay=cfg.weight_decay)  # type: ignore[arg-type]
    return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)  # type: ignore[arg-type]


def lr_factor(cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier of each optimizer step.

    ``step``: torchvision's detection recipe: a linear warm-up from 1/1000 over the first
    ``min(warmup_iters, steps_per_epoch - 1)`` steps, and ``gamma`` every ``step_size`` epochs
    (StepLR, applied per step). ``cosine``: transformers' cosine schedule with a linear warm-up
    over ``warmup_ratio`` of all steps. ``constant``: 1.
    """
    if cfg.scheduler == "cosine":
        warm = int(math.ceil(total_steps * float(cfg.warmup_ratio or 0.0)))

        def cosine(step: int) -> float:
            if step < warm:
                return float(step + 1) / float(max(1, warm))
            progress = (step - warm) / float(max(1, total_steps - warm))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

        return cosine
    if cfg.scheduler == "constant":
        return lambda step: 1.0
    warm_iters = min(int(cfg.warmup_iters or 0), max(steps_per_epoch - 1, 0))

    def stepped(step: int) -> float:
        factor = float(cfg.gamma) ** ((step // max(1, steps_per_epoch)) // int(cfg.step_size))  # type: ignore[arg-type]
        if step < warm_iters:
            alpha = step / warm_iters
            factor *= 0.001 * (1 - alpha) + alpha
        return factor

    return stepped


class _ResumeSampler(torch.utils.data.Sampler):
    """A ``DistributedSampler`` whose first ``skip`` indices of the current epoch are left out."""

    def __init__(self, inner: torch.utils.data.DistributedSampler) -> None:
        self.inner = inner
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _check_data(adapter: ModelAdapter, data: Sequence[Sample], role: str) -> None:
    categories = categories_of(data)
    if categories != adapter.categories:
        mine = {(c.id, c.name) for c in adapter.categories}
        theirs = {(c.id, c.name) for c in categories}
        extra = sorted(theirs - mine)
        detail = (f"classes the model does not know: {extra[:10]}" if extra
                  else f"{len(categories)} classes vs the model's {len(adapter.categories)}")
        raise InstkitError(f"{role} data has other categories than the model ({detail})",
                           Location(file=getattr(data, "file", None) or getattr(data, "source", None)))
    if len(data) == 0:
        raise InstkitError(f"{role} data has no images",
                           Location(file=getattr(data, "file", None)))


def train(
    adapter: ModelAdapter,
    train_data: Sequence[Sample],
    val_data: Sequence[Sample] | None = None,
    out_dir: str | os.PathLike[str] = "runs/train",
    config: TrainConfig | None = None,
    *,
    transform: Callable[..., Sample] | None = None,
    val_transform: Callable[..., Sample] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``adapter`` on ``train_data``, evaluating on ``val_data`` each ``eval_every`` epochs.

    ``transform``: an instkit transform for training samples (e.g. a preset);
    ``val_transform``: for validation samples (none by default: Mask R-CNN and the collator
    resize for the model). ``resume=True`` continues from ``out_dir/last``. Works the same under
    torchrun (one process per GPU or CPU share).
    """
    from torch.utils.data import DataLoader, DistributedSampler

    from instkit.data import InstanceDataset

    cfg = (config or TrainConfig()).resolved(adapter)
    dist_info = distributed.init_distributed(cfg.device)
    device = dist_info.device
    run_dir = Path(out_dir)
    _check_data(adapter, train_data, "training")
    if val_data is not None:
        _check_data(adapter, val_data, "validation")
    if not resume and dist_info.is_main and (run_dir / "last").exists():
        raise InstkitError("run folder already holds a training run; pass resume or choose a new "
                           "folder", Location(file=str(run_dir)))
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    torch.manual_seed(cfg.seed)

    model = adapter.model.to(device)
    optimizer = make_optimizer(model.parameters(), cfg)
    dataset = InstanceDataset(train_data, transform, seed=cfg.seed)
    sampler = _ResumeSampler(DistributedSampler(
        dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
        seed=cfg.seed, drop_last=False))
    collator = adapter.make_collator(device)
    batch_size = int(cfg.batch_size)  # type: ignore[arg-type]
    steps_per_epoch = math.ceil(len(sampler.inner) / batch_size)
    total_steps = steps_per_epoch * int(cfg.epochs)  # type: ignore[arg-type]
    if cfg.max_steps is not None:
        total_steps = min(total_steps, int(cfg.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg, steps_per_epoch, total_steps))
    use_amp = bool(cfg.amp) and device.startswith("cuda")
    fp16 = use_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if fp16 else None

    start_epoch, step, skip_batches = 0, 0, 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs = 0
    if resume:
        checkpoint = resolve_checkpoint(run_dir / "last")
        load_weights(adapter, checkpoint, device=device)
        state = restore_training(checkpoint, optimizer=optimizer, scheduler=scheduler,
                                 scaler=scaler)
        step = int(state.get("step", 0))
        start_epoch = int(state.get("epoch", 0))
        skip_batches = int(state.get("batch_in_epoch", 0))
        if skip_batches >= steps_per_epoch:
            start_epoch, skip_batches = start_epoch + 1, 0
        best = state.get("best_metric")
        best_epoch = state.get("best_epoch")
        bad_epochs = int(state.get("bad_epochs", 0))

    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if device.startswith("cuda") else None,
            find_unused_parameters=cfg.find_unused_parameters)
    pin = device.startswith("cuda")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=collator.pack, pin_memory=pin,
                        persistent_workers=cfg.num_workers > 0,
                        # its own generator: the global RNG (dropout) then resumes exactly
                        generator=torch.Generator().manual_seed(cfg.seed))
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=dist_info.is_main)
    settings = cfg.as_dict()
    if dist_info.is_main:
        log.write({"type": "start", "resumed": resume, "epoch": start_epoch, "step": step,
                   "world_size": dist_info.world_size, "device": device,
                   "model": adapter.describe(), "train_images": len(train_data),
                   "val_images": len(val_data) if val_data is not None else 0,
                   "config": settings})
    history: list[dict[str, Any]] = []
    stopped_early = False
    last_eval = None
    non_finite = 0
    epoch = start_epoch
    for epoch in range(start_epoch, int(cfg.epochs)):  # type: ignore[arg-type]
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip_batches * batch_size)
        model.train()
        losses: list[float] = []
        started = time.perf_counter()
        images_seen = 0
        batch_in_epoch = skip_batches
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not cfg.progress or not dist_info.is_main, leave=False,
                   initial=skip_batches, total=steps_per_epoch)
        for packed in bar:
            batch = collator.finish(packed)
            with autocast_for(device, use_amp):
                loss, parts = adapter.loss(model, batch)
            finite = bool(torch.isfinite(loss.detach()))
            if dist_info.enabled:  # all ranks skip together, or DDP's all-reduce would hang
                finite = distributed.mean_over_ranks({"ok": float(finite)}, device)["ok"] == 1.0
            if not finite:
                non_finite += 1
                optimizer.zero_grad(set_to_none=True)
                if non_finite >= 10:
                    raise InstkitError("training diverged: 10 consecutive non-finite losses "
                                       f"(epoch {epoch}, step {step}); lower the learning rate")
                continue
            non_finite = 0
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.grad_clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            value = float(loss.detach())
            losses.append(value)
            images_seen += adapter.batch_size_of(batch)
            if step % max(1, cfg.log_every) == 0:
                step_means = distributed.mean_over_ranks({"loss": value, **parts}, device)
                log.write({"type": "step", "epoch": epoch, "step": step,
                           "lr": optimizer.param_groups[0]["lr"], **step_means})
            bar.set_postfix(loss=f"{value:.4f}")
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and dist_info.is_main:
                save_checkpoint(run_dir / "last", adapter, train_config=settings,
                                optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                state={"epoch": epoch, "step": step,
                                       "batch_in_epoch": batch_in_epoch, "best_metric": best,
                                       "best_epoch": best_epoch, "bad_epochs": bad_epochs})
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        bar.close()
        skip_batches = 0
        seconds = time.perf_counter() - started
        epoch_done = batch_in_epoch >= steps_per_epoch
        train_loss = distributed.mean_over_ranks(
            {"loss": float(np.mean(losses)) if losses else float("nan")}, device)["loss"]
        record: dict[str, Any] = {
            "type": "epoch", "epoch": epoch, "step": step, "train_loss": train_loss,
            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
            "images_per_second": images_seen * dist_info.world_size / max(seconds, 1e-9),
        }
        last_epoch = epoch + 1 >= int(cfg.epochs) or (  # type: ignore[arg-type]
            cfg.max_steps is not None and step >= cfg.max_steps)
        improved = False
        if val_data is not None and ((epoch + 1) % max(1, cfg.eval_every) == 0 or last_epoch):
            result, _, _ = evaluate_model(
                adapter, val_data, model=model, batch_size=cfg.eval_batch_size or batch_size,
                device=device, num_workers=cfg.num_workers, transform=val_transform,
                amp=use_amp, progress=cfg.progress)
            last_eval = result
            record.update(result.summary())
            record["per_class_mask_ap"] = per_class_ap(result)
            if is_better(result.primary, best):
                best, best_epoch, bad_epochs, improved = float(result.primary), epoch, 0, True
            else:
                bad_epochs += 1
        elif val_data is None:
            improved = True  # without validation data the latest weights are the best known
            best_epoch = epoch
        record["best_mask_map50"] = best
        history.append(record)
        log.write(record)
        state = {"epoch": epoch, "step": step,
                 "batch_in_epoch": batch_in_epoch if not epoch_done else steps_per_epoch,
                 "best_metric": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs}
        if dist_info.is_main:
            save_checkpoint(run_dir / "last", adapter, train_config=settings, optimizer=optimizer,
                            scheduler=scheduler, scaler=scaler, state=state)
            if improved:
                save_checkpoint(run_dir / "best", adapter, train_config=settings, state=state)
        distributed.barrier()
        if cfg.patience is not None and bad_epochs >= int(cfg.patience):
            stopped_early = True
            if dist_info.is_main:
                log.write({"type": "early_stop", "epoch": epoch, "step": step,
                           "patience": cfg.patience, "best_epoch": best_epoch})
            break
    result = TrainResult(run_dir=run_dir, epochs_run=len(history), steps=step, best_metric=best,
                         best_epoch=best_epoch, stopped_early=stopped_early, history=history,
                         last_eval=last_eval)
    if dist_info.is_main:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        summary = {"best_mask_map50": best, "best_epoch": best_epoch, "steps": step,
                   "epochs_run": len(history), "stopped_early": stopped_early,
                   "model": adapter.describe(),
                   "last_eval": last_eval.as_dict() if last_eval is not None else None}
        with atomic_write(run_dir / "summary.json") as handle:
            json.dump(summary, handle, indent=2, default=str)
    unwrap(model)  # the adapter keeps the bare module
    return result


__all__ = ["TrainConfig", "TrainResult", "lr_factor", "make_optimizer", "train"]

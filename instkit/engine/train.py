"""The training loop, the same for every model (through its ``ModelAdapter``).

Per epoch: shuffled batches (``DistributedSampler``, deterministic from ``(seed, epoch)``, so a
resumed run sees the same order), forward / backward / step, a per-step learning-rate schedule,
one JSON line per logged step; then COCO evaluation on the validation data, one JSON line for
the epoch, a row of the console table, ``results.csv`` and ``curves.png`` rewritten, ``last/``
saved every epoch and ``best/`` whenever mask mAP@0.5 improves; early stopping after
``patience`` epochs without improvement.

Run folder: ``config.json`` (the resolved settings), ``metrics.jsonl``, ``results.csv``,
``curves.png``, ``confusion.json`` / ``confusion.png`` (the last evaluation's), ``last/``,
``best/``, ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
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
    load_training_weights,
    load_weights,
    read_metadata,
    resolve_checkpoint,
    restore_training,
    save_checkpoint,
    unwrap,
)
from instkit.engine.data import categories_of
from instkit.engine.ema import ModelEMA
from instkit.engine.evaluate import autocast_for, evaluate_model, is_better, per_class_ap
from instkit.engine.logging import (
    MetricsLog,
    epoch_row,
    plot_confusion,
    plot_curves,
    write_results_csv,
)
from instkit.errors import InstkitError, Location
from instkit.io.files import atomic_write
from instkit.models import ModelAdapter
from instkit.sample import Sample


@dataclass
class TrainConfig:
    """Training settings; ``None`` means the model's default (``adapter.defaults``).

    ``max_steps`` stops after that many optimizer steps in all (a fixed budget);
    ``save_every_steps`` also saves ``last/`` inside an epoch (resume continues from that batch);
    ``log_every`` writes every n-th step to ``metrics.jsonl``; ``ema``: evaluate, keep as
    ``best/`` and ``last/`` weights, and leave in the adapter at the end an exponential moving
    average of the weights (``instkit.engine.ema``, decay ``ema_decay``).
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
    ema: bool | None = None
    ema_decay: float | None = None
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

    def resolved(self, adapter: ModelAdapter) -> ResolvedConfig:
        """Every ``None`` hyper-parameter replaced by the model's default, checked."""
        defaults = adapter.defaults.as_dict()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, default in defaults.items():
            if values.get(key) is None and key != "patience" and key != "grad_clip":
                values[key] = default
        if self.patience is None:
            values["patience"] = defaults["patience"]
        if self.grad_clip is None:
            values["grad_clip"] = defaults["grad_clip"]
        out = ResolvedConfig(**values)
        if out.optimizer not in ("sgd", "adamw"):
            raise InstkitError(f"optimizer must be 'sgd' or 'adamw', got {out.optimizer!r}")
        if out.scheduler not in ("step", "cosine", "constant"):
            raise InstkitError(f"scheduler must be 'step', 'cosine' or 'constant', got "
                               f"{out.scheduler!r}")
        if not 0.0 < float(out.ema_decay) < 1.0:
            raise InstkitError(f"ema_decay must be between 0 and 1 (exclusive), got "
                               f"{out.ema_decay}")
        for name in ("epochs", "batch_size"):
            if int(getattr(out, name)) < 1:
                raise InstkitError(f"{name} must be at least 1, got {getattr(out, name)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ResolvedConfig:
    """``TrainConfig`` with every model default filled in (what a run actually uses)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    momentum: float
    optimizer: str
    scheduler: str
    step_size: int
    gamma: float
    warmup_ratio: float
    warmup_iters: int
    patience: int | None
    amp: bool
    grad_clip: float | None
    ema: bool
    ema_decay: float
    seed: int
    device: str | None
    num_workers: int
    eval_batch_size: int | None
    eval_every: int
    log_every: int
    save_every_steps: int | None
    max_steps: int | None
    progress: bool
    find_unused_parameters: bool

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
    #: the last evaluation's predictions (validation order, the data's labels)
    last_predictions: list[Sample] | None = None


def make_optimizer(params: Any, cfg: ResolvedConfig) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: ResolvedConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
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
        factor = float(cfg.gamma) ** ((step // max(1, steps_per_epoch)) // int(cfg.step_size))
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


@dataclass
class _Progress:
    """Where the run stands; what ``last/`` saves and a resume restores."""

    epoch: int = 0
    step: int = 0
    skip_batches: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    non_finite: int = 0

    def state(self, batch_in_epoch: int) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": batch_in_epoch,
                "best_metric": self.best, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs}


@dataclass
class _Loop:
    """Everything one run's epochs use, built once by ``_build_loop``."""

    cfg: ResolvedConfig
    dist_info: distributed.DistInfo
    run_dir: Path
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any
    dataset: Any
    sampler: _ResumeSampler
    collator: Any
    loader: Any
    steps_per_epoch: int
    total_steps: int
    use_amp: bool
    settings: dict[str, Any]
    ema: ModelEMA | None = None
    last_plot: float = field(default_factory=time.monotonic)

    @property
    def device(self) -> str:
        return self.dist_info.device

    @property
    def eval_model(self) -> Any:
        """The weights evaluated and saved: the EMA where there is one."""
        return self.ema.module if self.ema is not None else self.model

    def stop_for_steps(self, step: int) -> bool:
        return self.cfg.max_steps is not None and step >= self.cfg.max_steps

    def save(self, name: str, adapter: ModelAdapter, state: dict[str, Any],
             with_optimizer: bool = True) -> None:
        if with_optimizer:
            save_checkpoint(self.run_dir / name, adapter, train_config=self.settings,
                            optimizer=self.optimizer, scheduler=self.scheduler,
                            scaler=self.scaler, state=state, ema=self.ema)
        else:
            save_checkpoint(self.run_dir / name, adapter, train_config=self.settings, state=state,
                            ema=self.ema)


def _prepare_run_dir(run_dir: Path, resume: bool, dist_info: distributed.DistInfo,
                     cfg: ResolvedConfig) -> None:
    if not resume and dist_info.is_main and (run_dir / "last").exists():
        raise InstkitError("run folder already holds a training run; pass --resume (resume=True) "
                           "to continue it, or choose a new folder", Location(file=str(run_dir)))
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "config.json") as handle:
            json.dump(cfg.as_dict(), handle, indent=2, default=str)
    distributed.barrier()


def _build_loop(adapter: ModelAdapter, train_data: Sequence[Sample], transform: Any,
                cfg: ResolvedConfig, dist_info: distributed.DistInfo, run_dir: Path) -> _Loop:
    from torch.utils.data import DataLoader, DistributedSampler

    from instkit.data import InstanceDataset

    device = dist_info.device
    model = adapter.model.to(device)
    optimizer = make_optimizer(model.parameters(), cfg)
    dataset = InstanceDataset(train_data, transform, seed=cfg.seed)
    sampler = _ResumeSampler(DistributedSampler(
        dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
        seed=cfg.seed, drop_last=False))
    collator = adapter.make_collator(device)
    steps_per_epoch = math.ceil(len(sampler.inner) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, int(cfg.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg, steps_per_epoch, total_steps))
    use_amp = bool(cfg.amp) and device.startswith("cuda")
    fp16 = use_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=collator.pack,
                        pin_memory=device.startswith("cuda"),
                        persistent_workers=cfg.num_workers > 0,
                        # its own generator: the global RNG (dropout) then resumes exactly
                        generator=torch.Generator().manual_seed(cfg.seed))
    ema = ModelEMA(model, decay=float(cfg.ema_decay)) if cfg.ema else None
    return _Loop(cfg=cfg, dist_info=dist_info, run_dir=run_dir, model=model,
                 optimizer=optimizer, scheduler=scheduler, scaler=scaler, dataset=dataset,
                 sampler=sampler, collator=collator, loader=loader,
                 steps_per_epoch=steps_per_epoch, total_steps=total_steps, use_amp=use_amp,
                 settings=cfg.as_dict(), ema=ema)


def _restore(loop: _Loop, adapter: ModelAdapter) -> _Progress:
    """The progress saved in ``last/``, its weights and optimizer state loaded."""
    checkpoint = resolve_checkpoint(loop.run_dir / "last")
    load_weights(adapter, checkpoint, device=loop.device)  # the EMA's, where it kept one
    saved_ema = read_metadata(checkpoint).get("ema")
    if loop.ema is not None:
        loop.ema.module.load_state_dict(unwrap(loop.model).state_dict())
        loop.ema.updates = int(saved_ema["updates"]) if saved_ema else 0
    load_training_weights(checkpoint, loop.model, device=loop.device)
    state = restore_training(checkpoint, optimizer=loop.optimizer, scheduler=loop.scheduler,
                             scaler=loop.scaler)
    progress = _Progress(epoch=int(state.get("epoch", 0)), step=int(state.get("step", 0)),
                         skip_batches=int(state.get("batch_in_epoch", 0)),
                         best=state.get("best_metric"), best_epoch=state.get("best_epoch"),
                         bad_epochs=int(state.get("bad_epochs", 0)))
    if progress.skip_batches >= loop.steps_per_epoch:
        progress.epoch, progress.skip_batches = progress.epoch + 1, 0
    return progress


def _wrap_distributed(loop: _Loop) -> None:
    if loop.dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        loop.model = DistributedDataParallel(
            loop.model,
            device_ids=[loop.dist_info.local_rank] if loop.device.startswith("cuda") else None,
            find_unused_parameters=loop.cfg.find_unused_parameters)
        if loop.ema is not None:  # DDP broadcast rank 0's weights; the average follows them
            import torch.distributed as dist

            for tensor in loop.ema.module.state_dict().values():
                dist.broadcast(tensor, src=0)


def _optimizer_step(loop: _Loop, adapter: ModelAdapter, batch: Any,
                    progress: _Progress) -> tuple[float, dict[str, float]] | None:
    """Forward, backward and one optimizer step; ``None`` when the loss was not finite (skipped)."""
    cfg, optimizer = loop.cfg, loop.optimizer
    with autocast_for(loop.device, loop.use_amp):
        loss, parts = adapter.loss(loop.model, batch)
    finite = bool(torch.isfinite(loss.detach()))
    if loop.dist_info.enabled:  # all ranks skip together, or DDP's all-reduce would hang
        finite = distributed.mean_over_ranks({"ok": float(finite)}, loop.device)["ok"] == 1.0
    if not finite:
        progress.non_finite += 1
        optimizer.zero_grad(set_to_none=True)
        if progress.non_finite >= 10:
            raise InstkitError("training diverged: 10 consecutive non-finite losses "
                               f"(epoch {progress.epoch}, step {progress.step}); lower the "
                               "learning rate (--lr) or clip gradients (--grad-clip)")
        return None
    progress.non_finite = 0
    scaler = loop.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(loop.model.parameters(), float(cfg.grad_clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loop.scheduler.step()
    if loop.ema is not None:
        loop.ema.update(unwrap(loop.model))
    return float(loss.detach()), parts


def _train_epoch(loop: _Loop, adapter: ModelAdapter, progress: _Progress,
                 log: MetricsLog) -> tuple[list[float], dict[str, list[float]], int, int]:
    """One epoch's batches (the ones left of it on a resume): ``(losses, loss parts, images,
    batch_in_epoch)``."""
    cfg, epoch = loop.cfg, progress.epoch
    loop.dataset.set_epoch(epoch)
    loop.sampler.set_epoch(epoch, progress.skip_batches * cfg.batch_size)
    loop.model.train()
    losses: list[float] = []
    parts_seen: dict[str, list[float]] = {}
    images_seen = 0
    batch_in_epoch = progress.skip_batches
    bar = tqdm(loop.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
               disable=True if not cfg.progress or not loop.dist_info.is_main else None,
               leave=False, initial=progress.skip_batches, total=loop.steps_per_epoch)
    for packed in bar:
        batch = loop.collator.finish(packed)
        done = _optimizer_step(loop, adapter, batch, progress)
        if done is None:
            continue
        value, parts = done
        progress.step += 1
        batch_in_epoch += 1
        losses.append(value)
        for key, part in parts.items():
            parts_seen.setdefault(key, []).append(float(part))
        images_seen += adapter.batch_size_of(batch)
        if progress.step % max(1, cfg.log_every) == 0:
            step_means = distributed.mean_over_ranks({"loss": value, **parts}, loop.device)
            log.write({"type": "step", "epoch": epoch, "step": progress.step,
                       "lr": loop.optimizer.param_groups[0]["lr"], **step_means})
        bar.set_postfix(loss=f"{value:.4f}")
        if cfg.save_every_steps and progress.step % cfg.save_every_steps == 0 \
                and loop.dist_info.is_main:
            loop.save("last", adapter, progress.state(batch_in_epoch))
        if loop.stop_for_steps(progress.step):
            break
    bar.close()
    return losses, parts_seen, images_seen, batch_in_epoch


def _validate(loop: _Loop, adapter: ModelAdapter, val_data: Sequence[Sample],
              val_transform: Any, record: dict[str, Any], progress: _Progress,
              final: bool = False) -> tuple[Any, list[Sample], bool]:
    """Evaluate, add the metrics to ``record``, update best / patience; ``(result,
    predictions, improved)``.
    ``final``: also the error analysis, written as ``confusion.json`` / ``confusion.png``."""
    cfg = loop.cfg
    result, truth, predicted = evaluate_model(
        adapter, val_data, model=loop.eval_model, batch_size=cfg.eval_batch_size or cfg.batch_size,
        device=loop.device, num_workers=cfg.num_workers, transform=val_transform,
        amp=loop.use_amp, progress=cfg.progress,
        # the confusion matrix and counts at the model's own best-F1 score, whatever its scale
        score_threshold="f1")
    record.update(result.summary())
    record["per_class_mask_ap"] = per_class_ap(result)
    if final and loop.dist_info.is_main:
        result = _write_confusion(loop.run_dir, result, truth, predicted)
    if is_better(result.primary, progress.best):
        progress.best, progress.best_epoch, progress.bad_epochs = \
            float(result.primary), progress.epoch, 0
        return result, predicted, True
    progress.bad_epochs += 1
    return result, predicted, False


def _write_confusion(run_dir: Path, result: Any, truth: Sequence[Sample],
                     predicted: Sequence[Sample]) -> Any:
    """The last evaluation's confusion matrix (with a background row and column) and error
    analysis (``instkit.analysis``): ``confusion.json`` and ``confusion.png``."""
    from instkit.analysis import add_analysis

    result = add_analysis(result, truth, predicted, categories_of(truth))
    analysis = result.analysis
    with atomic_write(run_dir / "confusion.json") as handle:
        json.dump(analysis.as_dict(), handle, indent=1, default=str)
    plot_confusion(analysis.confusion, [*analysis.names, "background"],
                   run_dir / "confusion.png",
                   title=f"{analysis.iou_type} IoU >= {analysis.iou_threshold}, score >= "
                         f"{analysis.score_threshold}")
    return result


#: without an evaluation, curves.png is redrawn at most this often (a plot costs ~0.5 s)
_PLOT_EVERY_SECONDS = 60.0


def _report_epoch(loop: _Loop, records: list[dict[str, Any]], evaluated: bool) -> None:
    """The console row of the epoch and ``results.csv``; ``curves.png`` redrawn after each
    evaluation (and once a minute otherwise), so an interrupted run has them."""
    if not loop.dist_info.is_main:
        return
    header, row = epoch_row(records[-1], loop.cfg.epochs)
    if len(records) == 1:
        tqdm.write(header, file=sys.stderr)
    tqdm.write(row, file=sys.stderr)
    write_results_csv(loop.run_dir / "metrics.jsonl", loop.run_dir / "results.csv")
    now = time.monotonic()
    if evaluated or now - loop.last_plot >= _PLOT_EVERY_SECONDS:
        plot_curves(loop.run_dir / "metrics.jsonl", loop.run_dir / "curves.png")
        loop.last_plot = now


def _write_summary(loop: _Loop, adapter: ModelAdapter, result: TrainResult) -> None:
    run_dir = loop.run_dir
    files = {name: str(run_dir / name) for name in
             ("config.json", "metrics.jsonl", "results.csv", "curves.png", "confusion.json",
              "confusion.png", "last", "best")
             if (run_dir / name).exists()}
    summary = {"best_mask_map50": result.best_metric, "best_epoch": result.best_epoch,
               "steps": result.steps, "epochs_run": result.epochs_run,
               "stopped_early": result.stopped_early, "model": adapter.describe(),
               "files": files, "config": loop.settings,
               "last_eval": result.last_eval.as_dict() if result.last_eval is not None else None}
    with atomic_write(run_dir / "summary.json") as handle:
        json.dump(summary, handle, indent=2, default=str)


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
    cfg = (config or TrainConfig()).resolved(adapter)
    dist_info = distributed.init_distributed(cfg.device)
    run_dir = Path(out_dir)
    _check_data(adapter, train_data, "training")
    if val_data is not None:
        _check_data(adapter, val_data, "validation")
    _prepare_run_dir(run_dir, resume, dist_info, cfg)
    torch.manual_seed(cfg.seed)
    loop = _build_loop(adapter, train_data, transform, cfg, dist_info, run_dir)
    progress = _restore(loop, adapter) if resume else _Progress()
    _wrap_distributed(loop)
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=dist_info.is_main)
    if dist_info.is_main:
        log.write({"type": "start", "resumed": resume, "epoch": progress.epoch,
                   "step": progress.step, "world_size": dist_info.world_size,
                   "device": loop.device, "model": adapter.describe(),
                   "train_images": len(train_data),
                   "val_images": len(val_data) if val_data is not None else 0,
                   "config": loop.settings})
    history: list[dict[str, Any]] = []
    stopped_early = False
    last_eval = None
    last_predictions: list[Sample] | None = None
    for epoch in range(progress.epoch, cfg.epochs):
        progress.epoch = epoch
        if loop.stop_for_steps(progress.step):
            break
        started = time.perf_counter()
        losses, parts, images_seen, batch_in_epoch = _train_epoch(loop, adapter, progress, log)
        progress.skip_batches = 0
        seconds = time.perf_counter() - started
        epoch_done = batch_in_epoch >= loop.steps_per_epoch
        means = {"loss": float(np.mean(losses)) if losses else float("nan"),
                 **{f"train_{k}": float(np.mean(v)) for k, v in parts.items()}}
        means = distributed.mean_over_ranks(means, loop.device)
        record: dict[str, Any] = {
            "type": "epoch", "epoch": epoch, "step": progress.step,
            "train_loss": means.pop("loss"), **means,
            "lr": loop.optimizer.param_groups[0]["lr"], "seconds": seconds,
            "images_per_second": images_seen * dist_info.world_size / max(seconds, 1e-9),
        }
        last_epoch = epoch + 1 >= cfg.epochs or loop.stop_for_steps(progress.step)
        improved = False
        evaluate = val_data is not None and ((epoch + 1) % max(1, cfg.eval_every) == 0
                                             or last_epoch)
        if evaluate:
            assert val_data is not None
            last_eval, last_predictions, improved = _validate(
                loop, adapter, val_data, val_transform, record, progress, final=last_epoch)
        elif val_data is None:
            improved = True  # without validation data the latest weights are the best known
            progress.best_epoch = epoch
        record["best_mask_map50"] = progress.best
        history.append(record)
        log.write(record)
        state = progress.state(batch_in_epoch if not epoch_done else loop.steps_per_epoch)
        if dist_info.is_main:
            loop.save("last", adapter, state)
            if improved:
                loop.save("best", adapter, state, with_optimizer=False)
        _report_epoch(loop, history, evaluated=evaluate)
        distributed.barrier()
        if cfg.patience is not None and progress.bad_epochs >= int(cfg.patience):
            stopped_early = True
            if dist_info.is_main:
                log.write({"type": "early_stop", "epoch": epoch, "step": progress.step,
                           "patience": cfg.patience, "best_epoch": progress.best_epoch})
            break
    result = TrainResult(run_dir=run_dir, epochs_run=len(history), steps=progress.step,
                         best_metric=progress.best, best_epoch=progress.best_epoch,
                         stopped_early=stopped_early, history=history, last_eval=last_eval,
                         last_predictions=last_predictions)
    if dist_info.is_main:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        _write_summary(loop, adapter, result)
    if loop.ema is not None:  # the adapter leaves with the weights evaluated and saved
        unwrap(loop.model).load_state_dict(loop.ema.module.state_dict())
    return result


__all__ = ["ResolvedConfig", "TrainConfig", "TrainResult", "lr_factor", "make_optimizer", "train"]

"""``instkit train {maskrcnn,rfdetr}``: train a model on COCO or Hugging Face data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from instkit.cli.commands._options import echo_json, format_option, progress_option

RUN_FILES = ("metrics.jsonl", "results.csv", "config.json", "last", "best", "curves.png",
             "confusion.json", "confusion.png", "summary.json")


def _batch_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or 'auto'") from None
    if number < 1:
        raise click.BadParameter("must be at least 1")
    return number
_DATA_HELP = "COCO annotation file, or a Hugging Face dataset folder (instkit convert --to hf)"


@click.command("train")
@click.argument("model_kind", type=click.Choice(["maskrcnn", "rfdetr"]))
@click.option("--train", "train_path", required=True, type=click.Path(path_type=Path),
              help=f"Training data: {_DATA_HELP}.")
@click.option("--train-images", type=click.Path(path_type=Path), default=None,
              help="Image folder of a COCO training file (default: beside the file).")
@click.option("--val", "val_path", type=click.Path(path_type=Path), default=None,
              help=f"Validation data (evaluated each epoch): {_DATA_HELP}.")
@click.option("--val-images", type=click.Path(path_type=Path), default=None,
              help="Image folder of a COCO validation file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config.json, metrics.jsonl, results.csv, curves.png, last/, "
                   "best/, summary.json.")
@click.option("--weights", default=None,
              help="Pretrained weights: a local file (Mask R-CNN) or folder / cached hub id "
                   "(RF-DETR). Default: cached weights if any, else random initialisation.")
@click.option("--backbone", default=None,
              help="Mask R-CNN backbone: resnet50 (default), resnet34, resnet18, mobilenet_v3, tiny.")
@click.option("--tiny", is_flag=True, help="A tiny model for smoke runs on a CPU.")
@click.option("--image-size", type=int, default=None,
              help="Model input side in pixels (Mask R-CNN min=max size; RF-DETR square input).")
@click.option("--preset", type=click.Choice(["train", "yolo-seg", "eval", "none"]), default="train",
              show_default=True, help="Training augmentation preset (instkit.transforms.presets).")
@click.option("--epochs", type=int, default=None, help="Default: 50 (Mask R-CNN), 10 (RF-DETR).")
@click.option("--batch-size", default=None, callback=_batch_size,
              help="Images per step, or 'auto': the largest predicted to fit 80% of the free "
                   "memory, from real training steps of 1 and 2 images. Default: 4 (Mask "
                   "R-CNN), 16 (RF-DETR).")
@click.option("--lr", type=float, default=None, help="Default: 0.005 SGD / 1e-4 AdamW.")
@click.option("--weight-decay", type=float, default=None)
@click.option("--momentum", type=float, default=None, help="SGD momentum (default 0.9).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None)
@click.option("--scheduler", type=click.Choice(["step", "cosine", "constant"]), default=None)
@click.option("--step-size", type=click.IntRange(1), default=None,
              help="step scheduler: epochs between learning-rate drops.")
@click.option("--gamma", type=float, default=None,
              help="step scheduler: learning-rate factor at each drop.")
@click.option("--warmup-iters", type=click.IntRange(0), default=None,
              help="step scheduler: linear warm-up steps (in the first epoch).")
@click.option("--warmup-ratio", type=click.FloatRange(0, 1), default=None,
              help="cosine scheduler: share of all steps spent warming up.")
@click.option("--grad-clip", type=click.FloatRange(0), default=None,
              help="Clip the gradient norm to this (0: off). Default: 0.1 RF-DETR, off Mask R-CNN.")
@click.option("--ema/--no-ema", default=None,
              help="Evaluate and save an exponential moving average of the weights (best/, last/ "
                   "hold it; the raw weights are kept for --resume). Default: on RF-DETR, off "
                   "Mask R-CNN.")
@click.option("--ema-decay", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="EMA decay per step (ramped up over the first ~100 steps). "
                                 "Default: 0.993.")
@click.option("--eval-batch-size", type=click.IntRange(1), default=None,
              help="Validation batch size (default: --batch-size).")
@click.option("--log-every", type=click.IntRange(1), default=1, show_default=True,
              help="Write every N-th step to metrics.jsonl.")
@click.option("--patience", type=int, default=None,
              help="Early stopping after this many epochs without a better mask mAP@0.5.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps.")
@click.option("--save-every-steps", type=int, default=None,
              help="Also save last/ every N steps (resume continues from that batch).")
@click.option("--eval-every", type=int, default=1, show_default=True, help="Evaluate every N epochs.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on GPU (RF-DETR default on).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present).")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last/ checkpoint.")
@click.option("--memory-check/--no-memory-check", default=True, show_default=True,
              help="Stop before training when the batch is estimated not to fit in memory.")
@progress_option
@format_option
def command(model_kind: str, train_path: Path, train_images: Path | None, val_path: Path | None,
            val_images: Path | None, out_dir: Path, weights: str | None, backbone: str | None,
            tiny: bool, image_size: int | None, preset: str, epochs: int | None,
            batch_size: int | str | None, lr: float | None, weight_decay: float | None,
            momentum: float | None, optimizer: str | None, scheduler: str | None,
            step_size: int | None, gamma: float | None, warmup_iters: int | None,
            warmup_ratio: float | None, grad_clip: float | None, ema: bool | None,
            ema_decay: float | None, eval_batch_size: int | None,
            log_every: int, patience: int | None, max_steps: int | None,
            save_every_steps: int | None, eval_every: int, amp: bool | None,
            device: str | None, workers: int, seed: int, resume: bool, memory_check: bool,
            progress: bool, output_format: str) -> None:
    """Train Mask R-CNN or RF-DETR-Seg; evaluates on --val each epoch, keeps best/ by mask mAP@0.5.

    Multi-GPU or multi-node: run under torchrun, e.g.
    `torchrun --nproc-per-node 4 -m instkit train maskrcnn ...`.
    """
    from instkit.io.files import refuse_overwrite

    inputs = [train_path, train_images, val_path, val_images]
    if any(p is not None and p.resolve() == out_dir.resolve() for p in inputs):
        raise click.UsageError(f"--out {out_dir} is one of the inputs; choose a new run folder")
    refuse_overwrite([out_dir / name for name in RUN_FILES], inputs, what="--out")

    from instkit.engine import TrainConfig, load_adapter, open_dataset, train
    from instkit.engine.data import categories_of, check_image_files
    from instkit.models import build_model

    train_data = open_dataset(train_path, train_images)
    val_data = open_dataset(val_path, val_images) if val_path is not None else None
    # before the model is built: a wrong image folder is the usual first mistake
    check_image_files(train_data, "--train-images", "training")
    if val_data is not None:
        check_image_files(val_data, "--val-images", "validation")
    categories = categories_of(train_data)
    if resume:
        adapter, meta = load_adapter(out_dir / "last")
        if meta["kind"] != model_kind:
            raise click.UsageError(f"{out_dir} holds a {meta['kind']} run, not {model_kind}")
    else:
        options: dict[str, Any] = {"weights": weights, "image_size": image_size}
        if model_kind == "maskrcnn":
            options["backbone"] = "tiny" if tiny else (backbone or "resnet50")
        else:
            if backbone is not None:
                raise click.UsageError("--backbone applies to maskrcnn only")
            options["tiny"] = tiny
        adapter = build_model(model_kind, categories, **options)
    click.echo(f"instkit train: {adapter.describe()}", err=True)
    transform = _preset(preset, adapter, train_data, seed)
    batch = _check_memory(adapter, batch_size, amp, device, memory_check, optimizer,
                          adapter.defaults.ema if ema is None else ema, train_data,
                          transform, seed)
    config = TrainConfig(
        epochs=epochs, batch_size=batch, lr=lr, weight_decay=weight_decay, momentum=momentum,
        optimizer=optimizer, scheduler=scheduler, step_size=step_size, gamma=gamma,
        warmup_ratio=warmup_ratio, warmup_iters=warmup_iters, grad_clip=grad_clip, ema=ema,
        ema_decay=ema_decay, patience=patience, amp=amp, seed=seed, device=device, num_workers=workers,
        eval_batch_size=eval_batch_size, eval_every=eval_every, log_every=log_every,
        max_steps=max_steps, save_every_steps=save_every_steps, progress=progress)
    result = train(adapter, train_data, val_data, out_dir, config, transform=transform,
                   resume=resume)
    if output_format == "json":
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        echo_json({**summary, "run_dir": str(out_dir), "history": result.history})
        return
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    click.echo(f"instkit train: {result.epochs_run} epoch(s), {result.steps} steps; best mask "
               f"mAP@0.5 {best} (epoch {None if result.best_epoch is None else result.best_epoch + 1}); "
               f"{'stopped early; ' if result.stopped_early else ''}run folder {out_dir}/")
    for name in ("results.csv", "curves.png", "confusion.png", "best", "last", "summary.json"):
        if (out_dir / name).exists():
            click.echo(f"  {out_dir / name}")


def _check_memory(adapter: Any, batch_size: int | str | None, amp: bool | None,
                  device: str | None, enabled: bool, optimizer: str | None, ema: bool, data: Any,
                  transform: Any, seed: int) -> int | None:
    """The batch size to train with: ``auto`` measured with real batches; an explicit (or
    default) batch checked against the estimate, stopping (exit 2) when it cannot fit."""
    from instkit.engine.distributed import pick_device
    from instkit.engine.memory import estimate_maskrcnn, estimate_rfdetr, gigabytes
    from instkit.errors import InstkitError

    where = pick_device(device)
    use_amp = bool(adapter.defaults.amp if amp is None else amp)
    if batch_size == "auto":
        return _auto_batch(adapter, where, use_amp, optimizer or adapter.defaults.optimizer,
                           ema, data, transform, seed)
    if not enabled:
        return batch_size if isinstance(batch_size, int) else None
    requested = adapter.defaults.batch_size if batch_size is None else int(batch_size)
    params = sum(p.numel() for p in adapter.model.parameters())
    if adapter.kind == "rfdetr":
        h, w = (int(v) for v in adapter.config["image_size"])
        size = f"{h}x{w}"
        estimate = estimate_rfdetr(params, (h, w), requested, where, use_amp, ema=ema)
    else:
        low, high = int(adapter.config["min_size"]), int(adapter.config["max_size"])
        size = f"{low}-{high} px"
        estimate = estimate_maskrcnn(params, str(adapter.config["backbone"]), low, high,
                                     requested, where, use_amp, ema=ema)
    if not estimate.fits:
        hint = (f"--batch-size {estimate.largest_batch} fits" if estimate.largest_batch >= 1
                else "not even --batch-size 1 fits")
        raise InstkitError(
            f"batch {requested} of {size} images needs about "
            f"{gigabytes(estimate.needed)}, {gigabytes(estimate.available or 0)} free on {where}"
            f"; {hint}: lower --batch-size (or 'auto') or --image-size, or train --tiny "
            "(--no-memory-check to try anyway)")
    return None if batch_size is None else int(batch_size)


#: the most ``--batch-size auto`` picks (larger batches rarely train better on one device)
_AUTO_BATCH_CAP = 64


def _auto_batch(adapter: Any, where: str, amp: bool, optimizer: str, ema: bool, data: Any,
                transform: Any, seed: int) -> int:
    """Ultralytics' autobatch: real steps of 1 and 2 images, a line through their peaks, the
    largest batch predicted to fit 80% of the free memory."""
    from instkit.engine.memory import gigabytes, measure_batches
    from instkit.errors import InstkitError

    click.echo(f"instkit train: --batch-size auto: measuring training steps of 1 and 2 images "
               f"on {where}...", err=True)
    profile = measure_batches(adapter, data, transform=transform, device=where, amp=amp,
                              optimizer=optimizer, seed=seed, ema=ema)
    free = profile.available
    largest = _AUTO_BATCH_CAP if free is None else profile.largest_batch(free)
    if largest < 1:
        raise InstkitError(f"not even batch 1 fits: about {gigabytes(profile.needed(1))} needed, "
                           f"{gigabytes(free or 0)} free on {where}; lower --image-size"
                           + (" or use --tiny" if adapter.kind == "rfdetr" else
                              " or use a lighter --backbone"))
    chosen = min(largest, _AUTO_BATCH_CAP, len(data))
    click.echo(f"instkit train: --batch-size auto: {chosen} (measured {gigabytes(profile.fixed)} "
               f"+ {gigabytes(profile.per_image)} per image; {gigabytes(free or 0)} free on "
               f"{where}; {profile.seconds:.0f} s)", err=True)
    return chosen


def _input_size(adapter: Any) -> tuple[int, int]:
    if adapter.kind == "rfdetr":
        h, w = adapter.config["image_size"]
        return int(h), int(w)
    side = int(adapter.config["min_size"])
    return side, side


def _preset(name: str, adapter: Any, data: Any, seed: int) -> Any:
    if name == "none":
        return None
    from instkit.transforms.presets import PRESETS

    size = _input_size(adapter)
    if name == "yolo-seg":
        return PRESETS[name](pool=data, size=size, seed=seed)
    if name == "eval":
        return PRESETS[name](size=size)
    return PRESETS[name](size=size, seed=seed)

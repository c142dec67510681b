"""``instkit train {maskrcnn,rfdetr}``: train a model on COCO or Hugging Face data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

RUN_FILES = ("metrics.jsonl", "last", "best", "curves.png", "summary.json")
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
              help="Run folder: metrics.jsonl, last/, best/, curves.png, summary.json.")
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
@click.option("--batch-size", type=int, default=None, help="Default: 4 (Mask R-CNN), 16 (RF-DETR).")
@click.option("--lr", type=float, default=None, help="Default: 0.005 SGD / 1e-4 AdamW.")
@click.option("--weight-decay", type=float, default=None)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None)
@click.option("--scheduler", type=click.Choice(["step", "cosine", "constant"]), default=None)
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
@click.option("--progress/--no-progress", default=True, show_default=True)
def command(model_kind: str, train_path: Path, train_images: Path | None, val_path: Path | None,
            val_images: Path | None, out_dir: Path, weights: str | None, backbone: str | None,
            tiny: bool, image_size: int | None, preset: str, epochs: int | None,
            batch_size: int | None, lr: float | None, weight_decay: float | None,
            optimizer: str | None, scheduler: str | None, patience: int | None,
            max_steps: int | None, save_every_steps: int | None, eval_every: int,
            amp: bool | None, device: str | None, workers: int, seed: int, resume: bool,
            progress: bool) -> None:
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
    from instkit.engine.data import categories_of
    from instkit.models import build_model

    train_data = open_dataset(train_path, train_images)
    val_data = open_dataset(val_path, val_images) if val_path is not None else None
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
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        optimizer=optimizer, scheduler=scheduler, patience=patience, amp=amp, seed=seed,
        device=device, num_workers=workers, eval_every=eval_every, max_steps=max_steps,
        save_every_steps=save_every_steps, progress=progress)
    result = train(adapter, train_data, val_data, out_dir, config, transform=transform,
                   resume=resume)
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    click.echo(f"instkit train: {result.epochs_run} epoch(s), {result.steps} steps; best mask "
               f"mAP@0.5 {best} (epoch {result.best_epoch}); "
               f"{'stopped early; ' if result.stopped_early else ''}run folder {out_dir}/")


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

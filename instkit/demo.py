"""instkit's main job end to end, on its synthetic dataset or on a user's COCO data.

Steps: data (synthetic shapes written as COCO, or a user's file split into train/val) ->
``instkit validate`` -> the YOLO-seg augmentation preset checked for alignment, with a
before/after picture -> brief training of the tiny RF-DETR-Seg and the light Mask R-CNN with
instkit's loader and collator -> COCO evaluation (mask mAP) -> the dataset and evaluation pages.
Nothing touches the network; both models start from random initialisation unless weights are
given.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instkit.errors import InstkitError
from instkit.io.coco import CocoDataset, read_coco, write_coco
from instkit.sample import Sample

#: the demo's synthetic data: three shape classes, up to three objects of 15-32 px radius on
#: 128x128 images, no crowds. Validation images are generated the same way from another seed
#: (200 of them: with 32, mask mAP@0.5 varied by about +-0.05 between evaluations).
DEMO_CLASSES = ("circle", "square", "triangle")

#: RF-DETR-Seg's tiny config, changed for a short run from random initialisation: 5 query
#: groups (each group is matched separately, so every step supervises 5x more queries; RF-DETR's
#: own 13 made a step twice as slow, mostly in the matcher's mask costs, for the same mAP after
#: 400 steps, so 5 groups buy twice the steps), 20 queries for at most 3 objects, no dropout
#: (1,000 steps over 2,048 images show each image about four times).
RFDETR_DEMO_OVERRIDES: dict[str, Any] = {"group_detr": 5, "num_queries": 20, "dropout": 0.0}


@dataclass
class DemoSettings:
    out_dir: Path = Path("instkit-demo")
    coco: Path | None = None
    images: Path | None = None
    train_images: int = 2048
    val_images: int = 200
    image_size: int = 128
    model_size: int = 128
    classes: tuple[str, ...] = DEMO_CLASSES
    max_instances: int = 3
    radius_range: tuple[float, float] = (0.12, 0.25)
    crowd_probability: float = 0.0
    seed: int = 0
    models: tuple[str, ...] = ("rfdetr", "maskrcnn")
    steps: dict[str, int] = field(default_factory=lambda: {"rfdetr": 1000, "maskrcnn": 450})
    batch_size: dict[str, int] = field(default_factory=lambda: {"rfdetr": 8, "maskrcnn": 8})
    # AdamW for both: from random initialisation it brought Mask R-CNN to mask mAP@0.5 0.32 in
    # 128 steps, SGD (lr 0.02) to 0.12
    optimizer: dict[str, str] = field(default_factory=lambda: {"rfdetr": "adamw",
                                                               "maskrcnn": "adamw"})
    lr: dict[str, float] = field(default_factory=lambda: {"rfdetr": 2e-3, "maskrcnn": 1e-3})
    # cosine decay after a linear warm-up over 5% of the steps, for both
    scheduler: dict[str, str] = field(
        default_factory=lambda: {"rfdetr": "cosine", "maskrcnn": "cosine"})
    warmup_ratio: float = 0.05
    #: evaluate (and keep) an EMA of the weights (instkit.engine.ema); see docs/training.md
    ema: dict[str, bool] = field(default_factory=lambda: {"rfdetr": True, "maskrcnn": False})
    ema_decay: float = 0.993
    #: validation evaluations during each run (the last one at its end), for the curves
    evaluations: int = 3
    augment_samples: int = 8
    pages: bool = True


@dataclass
class DemoSummary:
    out_dir: Path
    train_file: Path
    val_file: Path
    validation: dict[str, int] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: dict[str, Path] = field(default_factory=dict)
    pictures: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    load_average: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {k: plain(v) for k, v in self.__dict__.items()}


def _step(summary: DemoSummary, name: str, say: Callable[[str], None]) -> Callable[[], None]:
    start = time.perf_counter()
    say(f"[{name}]")

    def done() -> None:
        summary.seconds[name] = round(time.perf_counter() - start, 1)

    return done


def _prepare_data(settings: DemoSettings, say: Callable[[str], None]) -> tuple[Path, Path, Path | None]:
    """Train and val COCO files (and the image root for both)."""
    out = settings.out_dir / "data"
    if settings.coco is None:
        from instkit.synthetic import write_dataset

        size = (settings.image_size, settings.image_size)
        options: dict[str, Any] = {
            "image_size": size, "classes": settings.classes,
            "max_instances": settings.max_instances, "radius_range": settings.radius_range,
            "crowd_probability": settings.crowd_probability}
        train = write_dataset(out / "train", settings.train_images, seed=settings.seed, **options)
        val = write_dataset(out / "val", settings.val_images, seed=settings.seed + 1, **options)
        say(f"  synthetic shapes ({', '.join(settings.classes)}; 1-{settings.max_instances} per "
            f"image): {settings.train_images} train + {settings.val_images} held-out val images "
            f"of {size[0]}x{size[1]} (seeds {settings.seed}, {settings.seed + 1})")
        return train, val, None
    dataset = read_coco(settings.coco, settings.images)
    if len(dataset) < 2:
        raise InstkitError("the demo needs at least 2 images to split into train and val")
    images = settings.images or settings.coco.resolve().parent
    val_rows = set(range(0, len(dataset), 5))  # every fifth image, deterministic
    train_samples = [dataset[i] for i in range(len(dataset)) if i not in val_rows]
    val_samples = [dataset[i] for i in sorted(val_rows)]
    train = write_coco(train_samples, out / "train.json", dataset.categories,
                       info=dataset.info, licenses=dataset.licenses)
    val = write_coco(val_samples, out / "val.json", dataset.categories,
                     info=dataset.info, licenses=dataset.licenses)
    say(f"  {settings.coco}: {len(train_samples)} train + {len(val_samples)} val images")
    return train, val, Path(images)


def _augment(settings: DemoSettings, train: CocoDataset, summary: DemoSummary,
             say: Callable[[str], None]) -> None:
    from instkit.testing import find_violations
    from instkit.transforms.presets import yolo_seg

    size = (settings.image_size, settings.image_size)
    augment = yolo_seg(pool=train, size=size, seed=settings.seed)
    reasons: Counter[str] = Counter()
    kept = offered = violations = 0
    first: tuple[Sample, Sample] | None = None
    for index in range(min(settings.augment_samples, len(train))):
        before = train[index]
        after = augment(before, seed=settings.seed * 1000 + index)
        violations += len(find_violations(before, after))
        reasons.update(drop.reason for drop in after.meta.drops)
        kept += len(after.instances)
        offered += len(after.instances) + len(after.meta.drops)
        if first is None and len(before.instances):
            first = (before, after)
    summary.augmentation = {"preset": "yolo-seg", "samples": min(settings.augment_samples,
                                                                   len(train)),
                            "instances_out": kept, "dropped": dict(reasons),
                            "alignment_violations": violations}
    say(f"  YOLO-seg preset on {summary.augmentation['samples']} samples: {kept} instances out, "
        f"dropped {dict(reasons) or 'none'}, alignment violations: {violations}")
    if first is not None:
        from instkit.viz import draw_comparison, save_image

        picture = settings.out_dir / "augment_before_after.png"
        save_image(draw_comparison(*first, categories=train.categories), picture)
        summary.pictures["augmentation"] = picture


def _train_transform() -> Any:
    """Flips only: a run of a few hundred steps learns faster without the heavy YOLO-seg
    pipeline, and 2,048 generated images keep it from memorising them (with 256, RF-DETR's
    validation mAP fell while its training loss kept falling)."""
    from instkit.transforms._albu import A
    from instkit.transforms.augment import Augment

    return Augment([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], stage="demo_train")


def _train_model(kind: str, settings: DemoSettings, train: Sequence[Sample],
                 val: Sequence[Sample], summary: DemoSummary,
                 say: Callable[[str], None]) -> Path:
    import torch

    from instkit.engine import TrainConfig, evaluate_model
    from instkit.engine import train as train_loop
    from instkit.evaluation import to_coco_results
    from instkit.io.files import atomic_write
    from instkit.models import build_model

    categories = train.categories  # type: ignore[attr-defined]
    size = settings.model_size
    # the initial weights follow --seed too: torch's own default seed differs in every process,
    # and from random initialisation the result depends on them (docs/training.md)
    torch.manual_seed(settings.seed)
    if kind == "rfdetr":
        adapter = build_model("rfdetr", categories, tiny=True, image_size=size,
                              config_overrides=RFDETR_DEMO_OVERRIDES)
    else:
        adapter = build_model("maskrcnn", categories, backbone="tiny", image_size=size)
    steps = settings.steps[kind]
    batch = settings.batch_size[kind]
    steps_per_epoch = max(1, -(-len(train) // batch))
    epochs = max(1, -(-steps // steps_per_epoch))
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=settings.lr[kind],
                         optimizer=settings.optimizer[kind], scheduler=settings.scheduler[kind],
                         warmup_ratio=settings.warmup_ratio, max_steps=steps, seed=settings.seed,
                         ema=settings.ema.get(kind, False), ema_decay=settings.ema_decay,
                         eval_every=max(1, epochs // max(1, settings.evaluations)),
                         patience=10**6, progress=True, log_every=max(1, steps // 100))
    run_dir = settings.out_dir / "runs" / kind
    started = time.perf_counter()
    result = train_loop(adapter, train, val, run_dir, config,
                        transform=_train_transform())
    seconds = time.perf_counter() - started
    if result.last_eval is not None and result.last_predictions is not None:
        # the run's own evaluation after its last step, of the weights the adapter now holds
        evaluation, predictions = result.last_eval, result.last_predictions
    else:
        evaluation, _, predictions = evaluate_model(adapter, val, progress=False,
                                                    score_threshold="f1")
    results_file = settings.out_dir / "runs" / kind / "val_results.json"
    with atomic_write(results_file) as handle:
        json.dump(to_coco_results(predictions, categories), handle)
    losses = [r["train_loss"] for r in result.history if r.get("train_loss") is not None]
    summary.models[kind] = {
        "model": adapter.describe(),
        "steps": result.steps,
        "batch_size": batch,
        "seconds_per_step": round(seconds / max(1, result.steps), 3),
        "first_epoch_loss": round(float(losses[0]), 4) if losses else None,
        "last_epoch_loss": round(float(losses[-1]), 4) if losses else None,
        "mask_map50": round(float(evaluation.mask_map50), 4),
        "mask_map": round(float(evaluation.mask_map), 4),
        "box_map50": round(float(evaluation.box_map50), 4),
        "mean_iou": round(float(evaluation.mean_iou), 4),
        "score_threshold": round(float(evaluation.score_threshold), 3),
        "run_dir": run_dir,
        "results": results_file,
    }
    figures = summary.models[kind]
    for picture in ("curves", "confusion"):
        if (run_dir / f"{picture}.png").is_file():
            summary.pictures[f"{picture} {kind}"] = run_dir / f"{picture}.png"
    say(f"  {kind}: {result.steps} steps of {batch} images ({figures['seconds_per_step']:.2f} "
        f"s/step), loss {figures['first_epoch_loss']} -> {figures['last_epoch_loss']}; mask "
        f"mAP@0.5 {figures['mask_map50']:.3f}, mask mAP {figures['mask_map']:.3f}, box mAP@0.5 "
        f"{figures['box_map50']:.3f}, union IoU {figures['mean_iou']:.3f} (scores >= "
        f"{figures['score_threshold']:g}, the best F1)")
    return results_file


def run_demo(settings: DemoSettings, say: Callable[[str], None] = print) -> DemoSummary:
    """Run every step; returns what was written and the figures."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(settings.out_dir, Path(), Path())
    summary.load_average["start"] = _load_average()

    done = _step(summary, "data", say)
    train_file, val_file, image_root = _prepare_data(settings, say)
    summary.train_file, summary.val_file = train_file, val_file
    train = read_coco(train_file, image_root)
    val = read_coco(val_file, image_root)
    done()

    done = _step(summary, "validate", say)
    from instkit.validate import validate_file

    report = validate_file(train_file, images=image_root or train_file.parent, progress=False)
    severities = Counter(f.severity for f in report.findings)
    summary.validation = {k: severities.get(k, 0) for k in ("error", "warning", "info")}
    say(f"  {train_file.name}: {summary.validation['error']} errors, "
        f"{summary.validation['warning']} warnings, {summary.validation['info']} notes")
    done()

    done = _step(summary, "augment", say)
    _augment(settings, train, summary, say)
    done()

    results: dict[str, Path] = {}
    for kind in settings.models:
        done = _step(summary, f"train {kind}", say)
        results[kind] = _train_model(kind, settings, train, val, summary, say)
        done()

    if settings.pages:
        done = _step(summary, "pages", say)
        from instkit.viz.pages import dataset_report, eval_report

        pages = settings.out_dir / "pages"
        summary.pages["dataset"] = dataset_report(
            train_file, image_root or train_file.parent, pages / "dataset", progress=False,
            title="instkit demo: training data")
        for kind, results_file in results.items():
            summary.pages[f"eval {kind}"] = eval_report(
                val_file, results_file, image_root or val_file.parent, pages / f"eval-{kind}",
                score_threshold="f1", progress=False,
                title=f"instkit demo: {kind} on the validation images")
        done()
    summary.load_average["end"] = _load_average()
    with (settings.out_dir / "summary.json").open("w") as handle:
        json.dump(summary.as_dict(), handle, indent=2)
    return summary


def _load_average() -> float:
    """The 1-minute load average (0 where the system has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0

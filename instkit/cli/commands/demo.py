"""``instkit demo``: instkit's main job, end to end, on its embedded synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import click

from instkit.demo import DemoSettings

_DEFAULTS = DemoSettings()


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("instkit-demo"), show_default=True, help="Folder for everything written.")
@click.option("--coco", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Run on this COCO file instead of the synthetic dataset (every fifth image "
                   "becomes validation).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Image folder of --coco [default: the file's folder].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data and training.")
@click.option("--train-images", type=click.IntRange(1), default=_DEFAULTS.train_images,
              show_default=True, help="Synthetic training images.")
@click.option("--val-images", type=click.IntRange(1), default=_DEFAULTS.val_images,
              show_default=True, help="Synthetic validation images (held out, same generator).")
@click.option("--image-size", type=click.IntRange(16), default=_DEFAULTS.image_size,
              show_default=True, help="Side of the synthetic images.")
@click.option("--model-size", type=click.IntRange(16), default=_DEFAULTS.model_size,
              show_default=True,
              help="Side of the models' input (training and evaluation; RF-DETR: a multiple "
                   "of 16).")
@click.option("--rfdetr-steps", type=click.IntRange(1), default=_DEFAULTS.steps["rfdetr"],
              show_default=True, help="Training steps of the tiny RF-DETR-Seg.")
@click.option("--maskrcnn-steps", type=click.IntRange(1), default=_DEFAULTS.steps["maskrcnn"],
              show_default=True, help="Training steps of the light Mask R-CNN.")
@click.option("--models", default="rfdetr,maskrcnn", show_default=True,
              help="Comma-separated models to train (rfdetr, maskrcnn; empty for none).")
@click.option("--no-pages", is_flag=True, help="Skip the HTML pages.")
def command(out_dir: Path, coco: Path | None, images: Path | None, seed: int, train_images: int,
            val_images: int, image_size: int, model_size: int, rfdetr_steps: int, maskrcnn_steps: int, models: str,
            no_pages: bool) -> None:
    """Generate data, validate, augment, train two models briefly, evaluate, write the pages.

    With no options: instkit's synthetic shapes (three classes, occluding one another;
    triangles with keypoints) as COCO; `instkit validate`; the YOLO-seg augmentation preset
    checked for alignment; the tiny RF-DETR-Seg and the light Mask R-CNN trained on the CPU from
    random initialisation (a few minutes each); mask mAP on held-out validation images; the
    dataset and evaluation pages. No network is used.
    """
    from instkit.demo import run_demo
    from instkit.io.files import refuse_overwrite

    refuse_overwrite([out_dir], [coco, images], what="--out")

    chosen = tuple(m for m in (part.strip() for part in models.split(",")) if m)
    unknown = set(chosen) - {"rfdetr", "maskrcnn"}
    if unknown:
        raise click.BadParameter(f"unknown model(s) {sorted(unknown)}", param_hint="--models")
    settings = DemoSettings(
        out_dir=out_dir, coco=coco, images=images, seed=seed, train_images=train_images,
        val_images=val_images, image_size=image_size, model_size=model_size,
        models=chosen,
        steps={"rfdetr": rfdetr_steps, "maskrcnn": maskrcnn_steps}, pages=not no_pages,
    )
    click.echo(f"instkit demo -> {out_dir}/")
    summary = run_demo(settings, say=click.echo)
    click.echo("\nsummary")
    click.echo(f"  data:        {summary.train_file}, {summary.val_file}")
    v = summary.validation
    click.echo(f"  validate:    {v.get('error', 0)} errors, {v.get('warning', 0)} warnings, "
               f"{v.get('info', 0)} notes")
    a = summary.augmentation
    click.echo(f"  augment:     {a.get('instances_out', 0)} instances from {a.get('samples', 0)} "
               f"samples, alignment violations: {a.get('alignment_violations', 0)}")
    for kind, figures in summary.models.items():
        click.echo(f"  {kind:11s}  mask mAP@0.5 {figures['mask_map50']:.3f}  "
                   f"(mask mAP {figures['mask_map']:.3f}, box mAP@0.5 {figures['box_map50']:.3f};"
                   f" {figures['steps']} steps, {figures['seconds_per_step']:.2f} s/step)"
                   f"  run: {figures['run_dir']}")
    click.echo("  open:")
    for name, path in {**summary.pictures, **summary.pages}.items():
        click.echo(f"    {name:20s} {path}")
    total = sum(summary.seconds.values())
    click.echo(f"  time:        {total:.0f} s (" + ", ".join(
        f"{k} {s:.0f} s" for k, s in summary.seconds.items()) + ")")
    load = summary.load_average
    if load:
        click.echo(f"  load:        {load['start']:.2f} at the start, {load['end']:.2f} at the end "
                   "(1-minute load average; other work on the machine slows the demo)")

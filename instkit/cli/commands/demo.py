"""``instkit demo``: instkit's main job on its embedded synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("instkit-demo"), show_default=True, help="Folder for everything written.")
@click.option("--images", "num_images", type=int, default=24, show_default=True,
              help="Number of synthetic images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generator.")
def command(out_dir: Path, num_images: int, seed: int) -> None:
    """Generate a synthetic dataset, write it as COCO, read it back and summarise it."""
    from instkit import read_coco
    from instkit.synthetic import write_dataset

    click.echo(f"instkit demo: writing {num_images} synthetic images (seed {seed}) to {out_dir}/")
    annotation_file = write_dataset(out_dir / "dataset", num_images, seed=seed)
    dataset = read_coco(annotation_file)
    counts = np.zeros(len(dataset.categories), dtype=np.int64)
    forms: dict[str, int] = {}
    crowd = keypointed = 0
    for sample in dataset:
        inst = sample.instances
        np.add.at(counts, inst.labels, 1)
        crowd += int(inst.iscrowd.sum())
        if inst.keypoints is not None:
            keypointed += int((inst.keypoints[:, :, 2] > 0).any(axis=1).sum())
        for kind in inst.masks.kinds if inst.masks is not None else []:
            forms[kind] = forms.get(kind, 0) + 1
    click.echo(f"  COCO file:   {annotation_file}")
    click.echo(f"  read back:   {dataset}")
    click.echo("  per class:   " + ", ".join(
        f"{name}={int(c)}" for name, c in zip(dataset.categories.names, counts)))
    click.echo(f"  crowd regions: {crowd}; instances with keypoints: {keypointed}")
    click.echo("  mask forms:  " + ", ".join(f"{k}={v}" for k, v in sorted(forms.items())))

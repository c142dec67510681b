"""``instkit check-pipeline``: run the alignment checker on a user's transform over a COCO set."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click


def load_transform(spec: str) -> Any:
    """``package.module:NAME`` or ``path/to/file.py:NAME`` -> the object (``a.b`` for nested)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:FUNCTION, got {spec!r}", param_hint="TRANSFORM")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="TRANSFORM")
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        if loaded is None or loaded.loader is None:
            raise click.BadParameter(f"cannot import {path}", param_hint="TRANSFORM")
        module = importlib.util.module_from_spec(loaded)
        sys.modules[path.stem] = module
        loaded.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # the user's own modules beside them
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise click.BadParameter(f"cannot import {module_name!r}: {exc}",
                                     param_hint="TRANSFORM") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise click.BadParameter(f"{module_name!r} has no {attr!r}", param_hint="TRANSFORM")
        target = getattr(target, part)
    if not callable(target):
        raise click.BadParameter(f"{spec} is not callable", param_hint="TRANSFORM")
    return target


@click.command("check-pipeline")
@click.argument("transform_spec", metavar="MODULE:FUNCTION")
@click.option("--coco", "coco", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="COCO annotation file of the samples to check.")
@click.option("--images", "images", default=None,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder of the images (default: beside the annotation file).")
@click.option("--max-samples", type=click.IntRange(1), default=100, show_default=True,
              help="Check the first N images.")
@click.option("--image-id", "image_ids", type=int, multiple=True,
              help="Check only these images (repeatable).")
@click.option("--annotation-ids", default=None,
              help="Keep only these rows of the image (comma separated, or 'none'): the shrunk "
                   "example of a violation.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the first image (the next get seed+1, seed+2, ...).")
@click.option("--generated", type=click.IntRange(0), default=0, show_default=True,
              help="Also check N hypothesis-generated samples.")
@click.option("--min-fraction", type=click.FloatRange(0, 1), default=None,
              help="Fraction of a mask that must carry its code (default 0.9).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="Violations printed.")
def command(transform_spec: str, coco: Path, images: Path | None, max_samples: int,
            image_ids: tuple[int, ...], annotation_ids: str | None, seed: int, generated: int,
            min_fraction: float | None, limit: int) -> None:
    """Check that MODULE:FUNCTION (a transform `f(sample, *, seed=None) -> Sample`) keeps images,
    masks, boxes, keypoints and labels aligned on the images of a COCO file. Every violation is
    printed with the command that reproduces it. Exit code 0: aligned; 1: violations found."""
    from instkit.io.coco import read_coco
    from instkit.testing.alignment import MIN_FRACTION, _pool_of, check_alignment

    transform = load_transform(transform_spec)
    dataset = read_coco(coco, images)
    if image_ids:
        index = {int(dataset[i].image_id): i for i in range(len(dataset))}
        missing = [i for i in image_ids if i not in index]
        if missing:
            raise click.BadParameter(f"image id(s) {missing} are not in {coco}",
                                     param_hint="--image-id")
        samples = [dataset[index[i]] for i in image_ids]
    else:
        samples = [dataset[i] for i in range(min(max_samples, len(dataset)))]
    if annotation_ids is not None:
        keep = set() if annotation_ids.strip() in ("", "none") else {
            int(v) for v in annotation_ids.split(",")}
        samples = [s.replace(instances=s.instances[[int(i) in keep for i in s.instances.ids]])
                   for s in samples]
    base = ["instkit", "check-pipeline", transform_spec, "--coco", str(coco)]
    if images is not None:
        base += ["--images", str(images)]

    def reproduce(violation: Any) -> str | None:
        if violation.example is None or violation.example.meta.source == "hypothesis":
            return None
        rows = ",".join(str(int(i)) for i in violation.example.instances.ids) or "none"
        parts = [*base, "--image-id", str(violation.image_id), "--seed", str(violation.seed),
                 "--annotation-ids", rows]
        if min_fraction is not None:
            parts += ["--min-fraction", str(min_fraction)]
        return " ".join(shlex.quote(p) for p in parts)

    report = check_alignment(
        transform, samples, max_examples=generated, seed=seed, generated=generated > 0,
        min_fraction=MIN_FRACTION if min_fraction is None else min_fraction,
        pool=dataset if _pool_of(transform) is None else None, command=reproduce,
    )
    click.echo(report.to_text(limit=limit))
    sys.exit(1 if report.violations else 0)  # EXIT_FINDINGS when the check found violations

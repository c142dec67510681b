"""``predict_paths``: images or folders in; COCO results JSON (RLE masks) and overlay PNGs out.

Output folder: ``predictions.json`` (a COCO results list: ``image_id``, ``category_id``,
``score``, ``bbox`` xywh, ``segmentation`` compressed RLE; pycocotools' ``loadRes`` reads it),
``images.json`` (a COCO document with the ``images`` and ``categories`` those ids refer to, so
the results can be evaluated or shown) and ``overlays/<name>.png``.

``predict_coco`` predicts the images of a COCO file instead: results carry the file's own image
and category ids, so ``instkit report eval`` / ``instkit.evaluation`` read them against it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from instkit.engine.checkpoint import load_adapter
from instkit.engine.distributed import pick_device
from instkit.engine.evaluate import predict_dataset
from instkit.errors import InstkitError, Location
from instkit.instances import Instances
from instkit.io.files import atomic_write, same_file
from instkit.models import ModelAdapter
from instkit.sample import Sample, SampleMeta, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named in ``inputs``; folders are searched (recursively) for image suffixes."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise InstkitError("image or folder not found", Location(file=str(path)))
    if not found:
        raise InstkitError("no images found in " + ", ".join(str(i) for i in inputs))
    return found


class _ImageFiles(Sequence[Sample]):
    """Image files as samples without annotations (each loaded when asked for)."""

    def __init__(self, paths: list[Path], categories: Any) -> None:
        self.paths = paths
        self.categories = categories

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        path = self.paths[index]
        image, notes = load_image(path)
        meta = SampleMeta(source=str(path), file_name=str(path), categories=self.categories,
                          original_size=(int(image.shape[0]), int(image.shape[1])), notes=notes)
        return Sample.from_array(image, Instances.empty(image.shape[:2]), image_id=index + 1,
                                 meta=meta)


def _overlay_name(path: Path, used: set[str]) -> str:
    name = f"{path.stem}.png"
    k = 1
    while name in used:
        name = f"{path.stem}-{k}.png"
        k += 1
    used.add(name)
    return name


def _write_overlays(items: Sequence[tuple[Path, Sample]], folder: Path, categories: Any,
                    threshold: float, progress: bool) -> list[str]:
    from instkit.viz import draw_instances, save_image

    used: set[str] = set()
    written: list[str] = []
    for path, pred in tqdm(list(items), desc="overlays", unit="image",
                           disable=True if not progress else None, leave=False):
        inst = pred.instances
        if inst.scores is not None:
            inst = inst[inst.scores >= threshold]
        image, _ = load_image(path)
        target = folder / _overlay_name(path, used)
        if same_file(target, path):
            raise InstkitError("overlay would overwrite its input", Location(file=str(path)))
        save_image(draw_instances(image, inst, categories), target)
        written.append(str(target))
    return written


def predict_coco(
    model: str | os.PathLike[str] | ModelAdapter,
    annotation_file: str | os.PathLike[str],
    images: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 2,
    device: str | None = None,
    overlays: bool = False,
    overlay_threshold: float = 0.5,
    progress: bool = True,
    results_name: str = "predictions.json",
) -> dict[str, Any]:
    """Predict every image of the COCO file ``annotation_file`` (images under ``images``, default
    beside it) and write ``out_dir/predictions.json`` keyed to the file's own image ids and
    category ids (classes the file lacks are dropped), ready for ``instkit report eval`` or
    ``instkit.evaluation.read_coco_results``. Returns counts and the paths written.
    """
    from instkit.engine.data import label_map
    from instkit.engine.evaluate import to_data_labels
    from instkit.evaluation import to_coco_results
    from instkit.io.coco import read_coco

    if images is not None and not Path(images).is_dir():
        raise InstkitError("image folder not found", Location(file=os.fspath(images)))
    out = Path(out_dir)
    results_file = out / results_name
    if same_file(annotation_file, results_file):
        raise InstkitError("output would overwrite an input", Location(file=str(results_file)))
    device = pick_device(device)
    adapter = model if isinstance(model, ModelAdapter) else load_adapter(model, device=device)[0]
    adapter.model.to(device)
    data = read_coco(annotation_file, images)
    label_map(adapter.categories, data.categories, os.fspath(annotation_file))
    _, predictions = predict_dataset(adapter, data, batch_size=batch_size, device=device,
                                     progress=progress)
    predictions = to_data_labels(predictions, adapter.categories, data.categories)
    out.mkdir(parents=True, exist_ok=True)
    results = to_coco_results(predictions, data.categories)
    with atomic_write(results_file) as handle:
        json.dump(results, handle)
    written: list[str] = []
    if overlays:
        paths = [Path(str(data.image_path(i))) for i in range(len(data))]
        written = _write_overlays(list(zip(paths, predictions, strict=True)), out / "overlays",
                                  data.categories, overlay_threshold, progress)
    return {"images": len(data), "instances": len(results), "predictions": str(results_file),
            "ground_truth": os.fspath(annotation_file), "overlays": written}


def predict_paths(
    model: str | os.PathLike[str] | ModelAdapter,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 2,
    device: str | None = None,
    overlays: bool = True,
    overlay_threshold: float = 0.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict ``inputs`` with a run / checkpoint folder (or an adapter) and write ``out_dir``.

    Every prediction goes to ``predictions.json``; overlays draw those scoring at least
    ``overlay_threshold``. Returns counts and the paths written.
    """
    from instkit.evaluation import to_coco_results

    device = pick_device(device)
    adapter = model if isinstance(model, ModelAdapter) else load_adapter(model, device=device)[0]
    adapter.model.to(device)
    paths = collect_images(inputs)
    out = Path(out_dir)
    results_file = out / "predictions.json"
    for path in paths:
        if same_file(path, results_file) or same_file(path, out / "images.json"):
            raise InstkitError("output would overwrite an input", Location(file=str(path)))
    images = _ImageFiles(paths, adapter.categories)
    _, predictions = predict_dataset(adapter, images, batch_size=batch_size, device=device,
                                     progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    results = to_coco_results(predictions, adapter.categories)
    with atomic_write(results_file) as handle:
        json.dump(results, handle)
    sizes = {s.image_id: s.image_size for s in predictions}
    document = {
        "images": [{"id": i + 1, "file_name": str(p), "height": sizes[i + 1][0],
                    "width": sizes[i + 1][1]} for i, p in enumerate(paths)],
        "categories": adapter.categories.to_coco(),
    }
    with atomic_write(out / "images.json") as handle:
        json.dump(document, handle, indent=1)
    written: list[str] = []
    if overlays:
        written = _write_overlays(list(zip(paths, predictions, strict=True)), out / "overlays",
                                  adapter.categories, overlay_threshold, progress)
    return {"images": len(paths), "instances": len(results), "predictions": str(results_file),
            "images_file": str(out / "images.json"), "overlays": written}

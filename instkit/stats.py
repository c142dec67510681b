"""Dataset statistics: per-class counts, instances per image, COCO size split, crowds, vertices.

Size split follows COCOeval: small ``area < 32**2``, medium ``< 96**2``, large otherwise, using the
annotation's own ``area`` (as COCOeval does) and the mask's pixel count where it has none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.masks import PolygonMask
from instkit.sample import Sample

SMALL, MEDIUM = 32**2, 96**2


@dataclass
class DatasetStats:
    """Counts over a dataset; ``per_class`` rows hold name, category_id, instances, crowd, images."""

    num_images: int = 0
    num_instances: int = 0
    num_crowd: int = 0
    per_class: list[dict[str, Any]] = field(default_factory=list)
    instances_per_image: list[int] = field(default_factory=list)
    size_split: dict[str, int] = field(default_factory=lambda: {"small": 0, "medium": 0, "large": 0})
    areas: list[float] = field(default_factory=list)
    polygon_vertices: list[int] = field(default_factory=list)
    mask_forms: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def as_dict(self) -> dict[str, Any]:
        per_image = np.asarray(self.instances_per_image or [0])
        vertices = np.asarray(self.polygon_vertices or [0])
        return {
            "images": self.num_images,
            "instances": self.num_instances,
            "crowd": self.num_crowd,
            "images_without_instances": int(sum(1 for n in self.instances_per_image if n == 0)),
            "instances_per_image": {"mean": float(per_image.mean()), "median": float(np.median(per_image)),
                                    "max": int(per_image.max())},
            "size_split": dict(self.size_split),
            "polygon_vertices": {"parts": len(self.polygon_vertices), "mean": float(vertices.mean()),
                                 "median": float(np.median(vertices)), "max": int(vertices.max()),
                                 "min": int(vertices.min())},
            "mask_forms": dict(self.mask_forms),
            "per_class": self.per_class,
            "skipped_annotations": self.skipped,
        }

    def to_text(self) -> str:
        d = self.as_dict()
        ipi, pv, split = d["instances_per_image"], d["polygon_vertices"], d["size_split"]
        lines = [
            f"images: {d['images']}   instances: {d['instances']}   crowd: {d['crowd']}   "
            f"images without instances: {d['images_without_instances']}",
            f"instances per image: mean {ipi['mean']:.2f}, median {ipi['median']:g}, max {ipi['max']}",
            f"size (COCO): small {split['small']}, medium {split['medium']}, large {split['large']}",
            f"polygon parts: {pv['parts']}, vertices per part: mean {pv['mean']:.1f}, median "
            f"{pv['median']:g}, min {pv['min']}, max {pv['max']}",
            "mask forms: " + (", ".join(f"{k} {v}" for k, v in sorted(d["mask_forms"].items())) or "none"),
        ]
        if self.skipped:
            lines.append(f"skipped (unreadable) annotations: {self.skipped}; run instkit validate")
        width = max([len(r["name"]) for r in self.per_class] + [5])
        lines += ["", f"{'class':<{width}}  {'id':>5}  {'instances':>9}  {'crowd':>5}  {'images':>6}"]
        for row in self.per_class:
            lines.append(f"{row['name']:<{width}}  {row['category_id']:>5}  {row['instances']:>9}  "
                         f"{row['crowd']:>5}  {row['images']:>6}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """A PNG of histograms: instances per class, per image, areas, polygon vertices."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from instkit.io.files import atomic_write

        fig, axes = plt.subplots(2, 2, figsize=(12, 8))
        rows = [r for r in self.per_class if r["instances"]]
        rows.sort(key=lambda r: -r["instances"])
        rows = rows[:30]
        axes[0, 0].bar(range(len(rows)), [r["instances"] for r in rows], color="tab:blue")
        axes[0, 0].set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=70, fontsize=7)
        axes[0, 0].set_title("instances per class" + (" (top 30)" if len(self.per_class) > 30 else ""))
        per_image = self.instances_per_image or [0]
        axes[0, 1].hist(per_image, bins=range(0, max(per_image) + 2), color="tab:green")
        axes[0, 1].set_title("instances per image")
        areas = np.asarray([a for a in self.areas if a > 0] or [1.0])
        axes[1, 0].hist(np.sqrt(areas), bins=40, color="tab:orange")
        for edge in (32, 96):
            axes[1, 0].axvline(edge, color="k", linestyle="--", linewidth=1)
        axes[1, 0].set_title("sqrt(area) in pixels (COCO small | medium | large at 32, 96)")
        axes[1, 1].hist(self.polygon_vertices or [0], bins=40, color="tab:purple")
        axes[1, 1].set_title("vertices per polygon part")
        fig.tight_layout()
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)


def compute_stats(samples: Sequence[Sample], categories: Categories | None = None, *,
                  progress: bool = False) -> DatasetStats:
    """Statistics of samples (a ``CocoDataset``, an ``HFDataset`` or a list); ``progress``: a
    bar on stderr, shown only when stderr is a terminal."""
    from tqdm.auto import tqdm

    categories = categories or getattr(samples, "categories", None)
    stats = DatasetStats()
    counts: dict[int, list[int]] = {}
    # disable=None: tqdm stays quiet when stderr is not a terminal
    for sample in tqdm(samples, total=len(samples), desc="stats", unit="img", leave=False,
                       disable=None if progress else True):
        inst = sample.instances
        categories = categories or sample.meta.categories
        stats.num_images += 1
        stats.num_instances += len(inst)
        stats.num_crowd += int(inst.iscrowd.sum())
        stats.instances_per_image.append(len(inst))
        stats.skipped += len(sample.meta.drops)
        for label in np.unique(inst.labels):
            counts.setdefault(int(label), [0, 0, 0])[2] += 1
        for label, crowd in zip(inst.labels.tolist(), inst.iscrowd.tolist(), strict=True):
            row = counts.setdefault(int(label), [0, 0, 0])
            row[0] += 1
            row[1] += int(crowd)
        area = np.asarray(inst.extras.get("coco_area", np.full(len(inst), np.nan)), dtype=np.float64)
        if inst.masks is not None and np.isnan(area).any():
            area = np.where(np.isnan(area), inst.masks.area(), area)
        elif np.isnan(area).any():
            box = inst.boxes.astype(np.float64)
            area = np.where(np.isnan(area), (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), area)
        for value in area.tolist():
            stats.areas.append(value)
            key = "small" if value < SMALL else "medium" if value < MEDIUM else "large"
            stats.size_split[key] += 1
        if inst.masks is not None:
            for kind in inst.masks.kinds:
                stats.mask_forms[kind] = stats.mask_forms.get(kind, 0) + 1
            for item in inst.masks.items:
                if isinstance(item, PolygonMask):
                    stats.polygon_vertices.extend(part.size // 2 for part in item.parts)
    if categories is None:
        raise ValueError("compute_stats needs categories")
    for label, category in enumerate(categories):
        instances, crowd, images = counts.get(label, [0, 0, 0])
        stats.per_class.append({"name": category.name, "category_id": category.id,
                                "instances": instances, "crowd": crowd, "images": images})
    return stats


__all__ = ["DatasetStats", "compute_stats"]

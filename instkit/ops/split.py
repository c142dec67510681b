"""Split a dataset by image: stratified by class, groups kept together, seeded.

The stratification is iterative stratification (Sechidis, Tsoumakas and Vlahavas, "On the
stratification of multi-label data", ECML PKDD 2011), run on *groups* of images rather than on
single images: a group (all frames of one video, say) is one example whose label counts are the
number of its images holding each class. The rarest class still to place goes first; each of its
groups goes to the split that still wants the most images of that class (ties: the split that
wants the most images overall, then a seeded draw). One change to the paper: while a class has
not yet reached ``min_per_split`` images in a split, that split is served first, so a class
with at least as many groups as there are splits appears in every split (an evaluation split
without a class cannot measure it) - except where that group also holds the last images of
another class: it then goes where the fewest shares of splits lose a class for good, so a
one-image class stays in the largest split (train) rather than in val. Groups without annotations fill the splits that still want
images. The result depends only on the input and the seed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instkit.categories import Categories
from instkit.errors import InstkitError
from instkit.ops.common import write_samples
from instkit.sample import Sample


@dataclass
class SplitResult:
    """Which images go to which split (``subsets``: name -> dataset indices, in input order),
    with per-split counts per class."""

    ratios: dict[str, float]
    seed: int
    subsets: dict[str, list[int]]
    image_ids: dict[str, list[int]]
    num_groups: int
    ungrouped: int
    counts: dict[str, dict[str, dict[str, int]]]  # split -> class -> {"images", "instances"}
    totals: dict[str, dict[str, int]]  # split -> {"images", "instances"}
    group_by: str | None = None
    joined: int = 0  # groups joined because ``together`` linked them (duplicate images)
    outputs: dict[str, str] = field(default_factory=dict)

    def missing(self) -> dict[str, list[str]]:
        """Per split, the classes present in the dataset but absent from it."""
        present = {name for split in self.counts.values() for name, c in split.items()
                   if c["images"]}
        return {split: sorted(name for name in present if not table[name]["images"])
                for split, table in self.counts.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": "split",
            "ratios": self.ratios,
            "seed": self.seed,
            "group_by": self.group_by,
            "groups": self.num_groups,
            "ungrouped_images": self.ungrouped,
            "groups_joined_by_duplicates": self.joined,
            "splits": {name: {"images": self.totals[name]["images"],
                              "instances": self.totals[name]["instances"],
                              "image_ids": self.image_ids[name],
                              "per_class": self.counts[name],
                              "classes_missing": self.missing()[name],
                              "file": self.outputs.get(name)}
                       for name in self.subsets},
        }

    def to_text(self) -> str:
        names = list(self.subsets)
        lines = [f"instkit split: {sum(len(v) for v in self.subsets.values())} images into "
                 + ", ".join(f"{n} {self.ratios[n]:.3g}" for n in names)
                 + f" (seed {self.seed})"]
        if self.group_by:
            lines.append(f"  groups by {self.group_by}: {self.num_groups} groups"
                         + (f" ({self.ungrouped} images matched no group: each its own)"
                            if self.ungrouped else "") + "; no group is split")
        if self.joined:
            lines.append(f"  {self.joined} group(s) joined to keep duplicate images in one split")
        lines.append("  " + "  ".join(f"{n}: {self.totals[n]['images']} images, "
                                      f"{self.totals[n]['instances']} instances" for n in names))
        classes = [c for c in next(iter(self.counts.values()))] if self.counts else []
        width = max([len(c) for c in classes] + [5])
        header = "  ".join(f"{n[:16]:>16}" for n in names)
        lines += ["", f"  {'class':<{width}}  {header}", f"  {'':<{width}}  "
                  + "  ".join(f"{'images/instances':>16}" for _ in names)]
        for name in classes:
            if not any(self.counts[n][name]["images"] for n in names):
                continue  # a category no image holds
            cells = "  ".join(f"{self.counts[n][name]['images']:>7}/{self.counts[n][name]['instances']:<8}"
                              for n in names)
            lines.append(f"  {name:<{width}}  {cells}")
        for split in names:
            if not self.totals[split]["images"] and any(t["images"] for t in self.totals.values()):
                lines.append(f"  note: {split} is empty (too few images or groups for its share)")
        for split, absent in self.missing().items():
            if absent:
                lines.append(f"  note: {len(absent)} class(es) absent from {split} (too few images "
                             f"or groups to reach every split): {', '.join(absent[:10])}"
                             + (" ..." if len(absent) > 10 else ""))
        for split, path in self.outputs.items():
            lines.append(f"  wrote {split}: {path}")
        return "\n".join(lines)


def _scan(dataset: Sequence[Sample], group_by: str | None, group_field: str | None,
          ) -> tuple[list[tuple[Any, Any, int]], list[np.ndarray], int]:
    """One pass over the samples: each image's group key (with its image id last), its labels,
    and how many images matched no group."""
    keys: list[tuple[Any, Any, int]] = []
    labels: list[np.ndarray] = []
    ungrouped = 0
    pattern = None
    if group_by is not None:
        try:
            pattern = re.compile(group_by)
        except re.error as exc:
            raise InstkitError(f"--group-by {group_by!r} is not a regular expression: {exc}") from None
    if group_field in ("id", "file_name", "width", "height"):
        raise InstkitError(f"--group-field {group_field!r} is unique per image or not a grouping "
                           "field; name an extra image field such as video_id")
    for index, sample in enumerate(dataset):
        key: Any = None
        if pattern is not None:
            match = pattern.search(sample.meta.file_name or "")
            if match is not None:
                key = ("re", match.group(1) if pattern.groups else match.group(0))
        elif group_field is not None:
            fields = sample.meta.extra.get("coco_image", {})
            if fields.get(group_field) is not None:
                key = ("field", json.dumps(fields[group_field], sort_keys=True))
        if key is None:
            if pattern is not None or group_field is not None:
                ungrouped += 1
            key = ("image", index)
        keys.append((*key, int(sample.image_id)))
        labels.append(np.asarray(sample.instances.labels, dtype=np.int64))
    return keys, labels, ungrouped


def stratify(group_labels: Sequence[dict[int, int]], group_sizes: Sequence[int],
             ratios: Sequence[float], num_classes: int, *, seed: int = 0,
             min_per_split: int = 1) -> list[int]:
    """Iterative stratification of groups: the split index of every group.

    ``group_labels[g]``: class -> number of the group's images holding it; ``group_sizes[g]``:
    its images. ``ratios``: the wanted share of each split (sum 1)."""
    rng = np.random.default_rng(seed)
    num_groups = len(group_sizes)
    folds = len(ratios)
    share = np.asarray(ratios, dtype=np.float64)
    wanted_images = share * float(sum(group_sizes))
    totals = np.zeros(num_classes, dtype=np.float64)
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    # A seeded order of the groups breaks every tie the same way for the same seed.
    order = rng.permutation(num_groups)
    rank = np.empty(num_groups, dtype=np.int64)
    rank[order] = np.arange(num_groups)
    for g in order:
        for label, count in group_labels[g].items():
            totals[label] += count
            by_class[label].append(int(g))
    wanted = share[None, :] * totals[:, None]  # (C, folds)
    got = np.zeros((num_classes, folds), dtype=np.int64)
    remaining = totals.copy()
    class_tiebreak = rng.permutation(num_classes)
    assigned = np.full(num_groups, -1, dtype=np.int64)

    def stranded(g: int) -> np.ndarray:
        """Per split: the share of the other splits that would never get a class of group
        ``g`` (one whose every remaining image is in ``g``) if ``g`` went there."""
        cost = np.zeros(folds, dtype=np.float64)
        for other, count in group_labels[g].items():
            if remaining[other] == count:
                missing = (got[other] == 0) & (share > 0)
                cost += (share * missing).sum() - share * missing
        return cost

    def choose(label: int | None, g: int) -> int:
        candidates = np.arange(folds)
        if label is not None:
            # A group holding the last images of some class goes where fewest splits lose it
            # for good (a one-image class stays in the largest split).
            if min_per_split > 0:
                cost = stranded(g)
                candidates = candidates[cost <= cost.min() + 1e-9]
            short = candidates[(got[label, candidates] < min_per_split) & (share[candidates] > 0)]
            if short.size:
                candidates = short
            best = wanted[label, candidates].max()
            candidates = candidates[wanted[label, candidates] >= best - 1e-9]
        best = wanted_images[candidates].max()
        candidates = candidates[wanted_images[candidates] >= best - 1e-9]
        return int(candidates[0] if candidates.size == 1 else rng.choice(candidates))

    def place(g: int, fold: int) -> None:
        assigned[g] = fold
        wanted_images[fold] -= group_sizes[g]
        for label, count in group_labels[g].items():
            wanted[label, fold] -= count
            got[label, fold] += count
            remaining[label] -= count

    while True:
        open_classes = np.flatnonzero(remaining > 0)
        if open_classes.size == 0:
            break
        # The rarest class still to place (ties by a seeded order of the classes).
        label = int(min(open_classes, key=lambda c: (remaining[c], class_tiebreak[c])))
        groups = [g for g in by_class[label] if assigned[g] < 0]
        # Large groups first: they are the hardest to fit; then the seeded order.
        groups.sort(key=lambda g: (-group_labels[g][label], -group_sizes[g], rank[g]))
        for g in groups:
            place(g, choose(label, g))
    for g in order:
        if assigned[g] < 0:
            place(int(g), choose(None, int(g)))
    return [int(f) for f in assigned]


def split_dataset(dataset: Sequence[Sample], ratios: dict[str, float], *, seed: int = 0,
                  group_by: str | None = None, group_field: str | None = None,
                  min_per_split: int = 1, categories: Categories | None = None,
                  together: Sequence[Sequence[int]] = ()) -> SplitResult:
    """Split ``dataset`` by image (see the module docstring).

    ``ratios``: split name -> share (``instkit.ops.parse_ratios`` reads ``train=0.8,...``).
    ``group_by``: a regular expression searched in each ``file_name``; images with the same
    match (its first group if it has one) stay in the same split. ``group_field``: an image
    field of the COCO file (``video_id``...) doing the same. Images that match no group are each
    their own group (counted in ``ungrouped``). ``together``: more sets of dataset indices to
    keep in one split, joining their groups (``instkit.ops.dedup.duplicate_groups`` gives the
    duplicate images, so that no copy of an image lands in another split)."""
    if group_by is not None and group_field is not None:
        raise InstkitError("give --group-by or --group-field, not both")
    if min_per_split < 0:
        raise InstkitError(f"min_per_split must be >= 0, got {min_per_split}")
    cats = categories or getattr(dataset, "categories", None)
    if cats is None:
        raise InstkitError("split_dataset needs the categories (pass categories=...)")
    keys, labels_of, ungrouped = _scan(dataset, group_by, group_field)
    first_of: dict[Any, int] = {}
    parent = list(range(len(keys)))  # union-find over images: the first image of a group leads

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for index, key in enumerate(keys):
        parent[index] = find(first_of.setdefault(key[:2], index))
    joined = 0
    for linked in together:
        indices = [int(i) for i in linked]
        for i in indices:
            if not 0 <= i < len(keys):
                raise InstkitError(f"together: index {i} is out of range for {len(keys)} images")
        for i in indices[1:]:
            a, b = find(indices[0]), find(i)
            if a != b:
                parent[max(a, b)] = min(a, b)
                joined += 1
    group_of: dict[int, int] = {}
    members: list[list[int]] = []
    group_labels: list[dict[int, int]] = []
    for index in range(len(keys)):
        g = group_of.setdefault(find(index), len(members))
        if g == len(members):
            members.append([])
            group_labels.append({})
        members[g].append(index)
        for label in np.unique(labels_of[index]).tolist():
            group_labels[g][int(label)] = group_labels[g].get(int(label), 0) + 1
    names = list(ratios)
    assignment = stratify(group_labels, [len(m) for m in members], [ratios[n] for n in names],
                          len(cats), seed=seed, min_per_split=min_per_split)
    subsets: dict[str, list[int]] = {name: [] for name in names}
    for g, fold in enumerate(assignment):
        subsets[names[fold]].extend(members[g])
    for name in names:
        subsets[name].sort()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    totals: dict[str, dict[str, int]] = {}
    ids: dict[str, list[int]] = {}
    image_ids = [int(k[2]) for k in keys]
    for name, indices in subsets.items():
        images = np.zeros(len(cats), dtype=np.int64)
        instances = np.zeros(len(cats), dtype=np.int64)
        for i in indices:
            if labels_of[i].size:
                instances += np.bincount(labels_of[i], minlength=len(cats))
                images[np.unique(labels_of[i])] += 1
        counts[name] = {c.name: {"images": int(images[label]), "instances": int(instances[label])}
                        for label, c in enumerate(cats)}
        totals[name] = {"images": len(indices), "instances": int(instances.sum())}
        ids[name] = [image_ids[i] for i in indices]
    how = (f"regex {group_by!r} on file_name" if group_by is not None
           else f"image field {group_field!r}" if group_field is not None else None)
    return SplitResult(dict(ratios), seed, subsets, ids, len(members), ungrouped, counts, totals,
                       group_by=how, joined=joined)


def write_splits(dataset: Sequence[Sample], result: SplitResult, out_dir: str | os.PathLike[str],
                 *, inputs: Sequence[str | os.PathLike[str] | None] = (),
                 categories: Categories | None = None) -> dict[str, str]:
    """Write one COCO file per split, ``out_dir/NAME.json``, every one with the same categories;
    image and annotation ids and ``file_name``s as in the input. Returns name -> path."""
    cats = categories or getattr(dataset, "categories", None)
    if cats is None:
        raise InstkitError("write_splits needs the categories (pass categories=...)")
    source = getattr(dataset, "file", None)
    all_inputs = [*inputs, source]
    paths = {name: Path(out_dir) / f"{name}.json" for name in result.subsets}
    from instkit.io.files import refuse_overwrite

    refuse_overwrite(list(paths.values()), all_inputs, what="output")
    for name, indices in result.subsets.items():
        write_samples([dataset[i] for i in indices], paths[name], cats, inputs=all_inputs,
                      source=dataset)
        result.outputs[name] = str(paths[name])
    return dict(result.outputs)


__all__ = ["SplitResult", "split_dataset", "stratify", "write_splits"]

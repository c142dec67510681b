"""Alignment checks for instance-segmentation transforms (public API).

``assert_aligned(before, after)`` checks one transformed sample against its input;
``check_alignment(transform, samples=..., max_examples=...)`` runs a transform on
hypothesis-generated samples and on given real ones and reports every violated invariant with
the sample and seed that reproduce it (``transform(violation.example, seed=violation.seed)``).

Invariants, per instance id (ids are the row identity):

- ``unique_ids``: ids are unique in the output (also after Mosaic / CopyAndPaste);
- ``label``: an id present before and after keeps its label and crowd flag;
- ``box_is_mask_box``: the box is the tight box of the mask;
- ``mask_not_empty``: no surviving mask is empty;
- ``keypoints_inside``: every keypoint lies inside the image or has visibility 0;
- ``accounting``: every input id either survives or is recorded in ``meta.drops``, not both;
- ``deterministic``: the same seed gives the same output (image and instances).

A transform here is any callable ``transform(sample, *, seed=None) -> Sample``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from instkit.sample import Sample

Transform = Callable[..., Sample]


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with what reproduces it."""

    invariant: str
    message: str
    image_id: int | None = None
    annotation_id: int | None = None
    seed: int | None = None
    example: Sample | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        where = [f"image_id={self.image_id}"] if self.image_id is not None else []
        if self.annotation_id is not None:
            where.append(f"annotation id={self.annotation_id}")
        if self.seed is not None:
            where.append(f"seed={self.seed}")
        return f"[{self.invariant}] {self.message} ({', '.join(where)})"


@dataclass
class AlignmentReport:
    """What ``check_alignment`` found: ``violations`` (empty when aligned) and counts."""

    violations: list[Violation] = field(default_factory=list)
    samples_checked: int = 0
    instances_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def invariants(self) -> set[str]:
        return {v.invariant for v in self.violations}

    def to_text(self, limit: int = 20) -> str:
        head = (f"alignment: {self.samples_checked} samples, {self.instances_checked} instances, "
                f"{len(self.violations)} violation(s)")
        lines = [head] + [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if self.violations:
            raise AssertionError(self.to_text())


def find_violations(before: Sample, after: Sample, *, seed: int | None = None) -> list[Violation]:
    """Every invariant ``after`` breaks with respect to its input ``before``."""
    out: list[Violation] = []
    image_id = before.image_id

    def add(invariant: str, message: str, annotation_id: int | None = None) -> None:
        out.append(Violation(invariant, message, image_id, annotation_id, seed, before))

    src, dst = before.instances, after.instances
    ids = [int(i) for i in dst.ids]
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            add("unique_ids", f"id {i} appears more than once after the transform", i)
        seen.add(i)
    source_row = {int(i): r for r, i in enumerate(src.ids)}
    for r, i in enumerate(ids):
        if i in source_row:
            s = source_row[i]
            if int(src.labels[s]) != int(dst.labels[r]):
                add("label", f"label changed from {int(src.labels[s])} to {int(dst.labels[r])}", i)
            if bool(src.iscrowd[s]) != bool(dst.iscrowd[r]):
                add("label", "crowd flag changed", i)
    if dst.masks is not None and len(dst):
        tight = dst.masks.boxes()
        area = dst.masks.area()
        for r, i in enumerate(ids):
            if area[r] == 0:
                add("mask_not_empty", "the mask is empty", i)
            elif not np.allclose(tight[r], dst.boxes[r], atol=1e-3):
                add("box_is_mask_box", f"box {np.round(dst.boxes[r], 2).tolist()} is not the "
                    f"mask's tight box {tight[r].tolist()}", i)
    if dst.keypoints is not None and len(dst):
        h, w = dst.image_size
        kp = dst.keypoints
        outside = (kp[..., 0] < 0) | (kp[..., 0] >= w) | (kp[..., 1] < 0) | (kp[..., 1] >= h)
        bad = outside & (kp[..., 2] > 0)
        for row in np.flatnonzero(bad.any(axis=1)):
            add("keypoints_inside", f"keypoints {np.flatnonzero(bad[row]).tolist()} lie outside "
                f"the {h}x{w} image but are marked visible", ids[row])
    new_drops = after.meta.drops[len(before.meta.drops):]
    dropped = [int(d.annotation_id) for d in new_drops]
    survived = set(ids) & set(source_row)
    for i in source_row:
        if i not in survived and i not in dropped:
            add("accounting", "the instance disappeared without a recorded drop", i)
        if i in survived and i in dropped:
            add("accounting", "the instance survived but is also recorded as dropped", i)
    for i in dropped:
        if i not in source_row:
            add("accounting", "a drop is recorded for an id that was not in the input", i)
    return out


def assert_aligned(before: Sample, after: Sample) -> None:
    """Raise ``AssertionError`` listing every invariant ``after`` breaks (for pytest)."""
    report = AlignmentReport(find_violations(before, after), 1, len(before.instances))
    report.raise_if_failed()


def _same(a: Sample, b: Sample) -> bool:
    return bool(np.array_equal(a.image, b.image)) and a.instances == b.instances


def check_sample(transform: Transform, sample: Sample, seed: int) -> list[Violation]:
    """Run ``transform`` twice on ``sample`` with ``seed`` and check every invariant."""
    first = transform(sample, seed=seed)
    violations = find_violations(sample, first, seed=seed)
    second = transform(sample, seed=seed)
    if not _same(first, second):
        violations.append(Violation("deterministic", "the same seed gave a different output",
                                    sample.image_id, None, seed, sample))
    return violations


def check_alignment(
    transform: Transform,
    samples: Sequence[Sample] = (),
    max_examples: int = 25,
    *,
    seed: int = 0,
    generated: bool = True,
    num_keypoints: int | None = 3,
    max_side: int = 96,
    max_instances: int = 6,
) -> AlignmentReport:
    """Check ``transform`` on ``max_examples`` hypothesis-generated samples and on ``samples``.

    Mixing transforms (``needs_pool``) are bound to ``samples`` (or to generated ones) first.
    Returns an ``AlignmentReport``; every violation carries its example sample and seed.
    """
    report = AlignmentReport()
    real = list(samples)
    if getattr(transform, "needs_pool", False):
        pool: list[Sample] = real
        if not pool:
            from instkit.synthetic import make_samples

            pool = make_samples(4, seed=seed, image_size=(64, 64))
        transform = transform.with_pool(pool)  # type: ignore[attr-defined]
    for index, sample in enumerate(real):
        report.violations.extend(check_sample(transform, sample, seed + index))
        report.samples_checked += 1
        report.instances_checked += len(sample.instances)
    if generated and max_examples > 0:
        _run_generated(transform, report, max_examples, num_keypoints, max_side, max_instances)
    return report


def _run_generated(
    transform: Transform, report: AlignmentReport, max_examples: int,
    num_keypoints: int | None, max_side: int, max_instances: int,
) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from instkit.testing import strategies as st_inst

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=(Phase.explicit, Phase.reuse, Phase.generate),
              suppress_health_check=list(HealthCheck))
    @given(st_inst.samples(max_side=max_side, max_instances=max_instances,
                           num_keypoints=num_keypoints), st.integers(0, 2**31 - 1))
    def run(sample: Sample, seed: int) -> None:
        report.violations.extend(check_sample(transform, sample, seed))
        report.samples_checked += 1
        report.instances_checked += len(sample.instances)

    run()


__all__ = ["AlignmentReport", "Violation", "assert_aligned", "check_alignment", "check_sample",
           "find_violations"]

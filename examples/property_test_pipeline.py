"""Property-test your own augmentation pipeline with instkit.testing.

    python examples/property_test_pipeline.py [--examples 25]

``check_alignment`` runs the pipeline on hypothesis-generated samples (random polygons, RLEs,
bitmaps, keypoints, crowds) and on real ones, and reports every broken object-row invariant with
the sample and seed that reproduce it. The second half shows it catching a pipeline that forgets
to update boxes after a crop, the kind of bug that otherwise surfaces months later.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

# instkit.transforms first: it switches albumentationsx's telemetry and update check off.
from instkit.transforms import Augment

# isort: split
import albumentations as A

from instkit.synthetic import make_samples
from instkit.testing import check_alignment


def my_pipeline(seed: int = 0) -> Augment:
    return Augment(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-30, 30), scale=(0.8, 1.2), p=1.0),
            A.RandomCrop(height=48, width=48, pad_if_needed=True, p=1.0),
        ],
        min_area=4.0,
        seed=seed,
    )


def forgets_boxes(sample, *, seed=None):
    """A broken pipeline: it crops masks and image but leaves the old boxes."""
    out = my_pipeline()(sample, seed=seed)
    inst = out.instances
    stale = np.clip(inst.boxes + 3.0, 0, None)
    return out.replace(instances=inst.replace(boxes=stale))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=25, help="hypothesis examples")
    args = parser.parse_args()
    real = make_samples(3, seed=1, image_size=(96, 96))

    good = check_alignment(my_pipeline(), samples=real, max_examples=args.examples)
    print("my_pipeline:", good.to_text(limit=5))

    bad = check_alignment(forgets_boxes, samples=real, max_examples=args.examples)
    print("forgets_boxes:", bad.to_text(limit=3))
    if bad.violations:
        first = bad.violations[0]
        print(f"reproduce with: forgets_boxes(violation.example, seed={first.seed})")
    return 0 if good.ok and "box_is_mask_box" in bad.invariants() else 1


if __name__ == "__main__":
    sys.exit(main())

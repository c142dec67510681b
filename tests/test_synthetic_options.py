"""The synthetic generator's difficulty options (used by the demo): a class subset and the
object size range; the defaults are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from instkit.synthetic import CLASS_NAMES, categories, make_samples


def test_a_class_subset_keeps_its_ids_and_labels():
    table = categories(("square", "triangle"))
    assert [c.name for c in table] == ["square", "triangle"]
    assert [c.id for c in table] == [c.id for c in categories() if c.name in ("square",
                                                                               "triangle")]
    samples = make_samples(6, seed=3, image_size=(64, 64), classes=("square", "triangle"),
                           crowd_probability=1.0)
    labels = np.concatenate([s.instances.labels for s in samples])
    assert len(labels) and set(labels.tolist()) <= {0, 1}
    assert all(s.meta.categories == table for s in samples)
    assert any(s.instances.iscrowd.any() for s in samples)  # crowds get the first class


def test_radius_range_sets_the_object_size():
    def mean_area(radius_range):
        samples = make_samples(8, seed=1, image_size=(128, 128), max_instances=2,
                               crowd_probability=0.0, classes=("circle",),
                               radius_range=radius_range)
        areas = np.concatenate([s.instances.masks.area() for s in samples])
        return float(areas.mean())

    small, large = mean_area((0.05, 0.06)), mean_area((0.2, 0.21))
    assert 0.6 * np.pi * (0.055 * 128) ** 2 < small < 1.2 * np.pi * (0.055 * 128) ** 2
    assert large > 8 * small


def test_defaults_are_unchanged_and_bad_classes_refused():
    assert [c.name for c in categories()] == list(CLASS_NAMES)
    a = make_samples(2, seed=0, image_size=(64, 64))
    b = make_samples(2, seed=0, image_size=(64, 64), classes=CLASS_NAMES)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="hexagon"):
        categories(("circle", "hexagon"))
    with pytest.raises(ValueError):
        make_samples(1, classes=())

"""A pytest plugin for checking your own pipelines: add one line to your ``conftest.py``::

    pytest_plugins = ["instkit.testing.pytest_plugin"]

and use the ``check_pipeline`` fixture in any test::

    def test_my_augmentation_is_aligned(check_pipeline, my_samples):
        check_pipeline(my_transform, my_samples)

It runs ``instkit.testing.check_alignment`` (row invariants and probe images, on your samples and
on hypothesis-generated ones) and fails the test with the report: every violation, its shrunk
example and seed. ``pytest --alignment-examples N`` sets how many samples are generated (default
25; 0 checks only the samples you pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from instkit.sample import Sample
from instkit.testing.alignment import AlignmentReport, check_alignment


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("instkit")
    group.addoption("--alignment-examples", type=int, default=None,
                    help="hypothesis-generated samples per check_pipeline call (default 25)")


@pytest.fixture
def check_pipeline(request: Any) -> Callable[..., AlignmentReport]:
    """``check_pipeline(transform, samples=(), **check_alignment_options)``: fails the test when
    the transform breaks an alignment invariant; returns the report otherwise."""
    examples = request.config.getoption("--alignment-examples", default=None)

    def run(transform: Callable[..., Sample], samples: Sequence[Sample] = (),
            **options: Any) -> AlignmentReport:
        if examples is not None:
            options["max_examples"] = examples
            options.setdefault("generated", examples > 0)
        report = check_alignment(transform, samples, **options)
        if report.violations:
            pytest.fail(report.to_text(), pytrace=False)
        return report

    return run

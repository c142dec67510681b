"""The fuzz harness in the suite: mutated real documents never crash, hang or disagree.

A bounded run here (``INSTKIT_FUZZ_EXAMPLES``, default 120 documents); the long run is
``make fuzz`` (``tests/fuzz/run.py``). The harness is first shown to catch planted failures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import Fuzzer, dumps, failures, load_sources, mutated_documents

SOURCES = load_sources()
pytestmark = pytest.mark.skipif(not SOURCES, reason="real data (../shared/data) not found")


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[Fuzzer]:
    runner = Fuzzer(timeout=60.0)
    yield runner
    runner.close()


@pytest.mark.parametrize(("plant", "expected"), [
    ("segv", "crash (SIGSEGV)"), ("fpe", "crash (SIGFPE)"), ("abort", "crash (SIGABRT)"),
    ("exception", "exception in validate: builtins.ValueError"),
    ("disagree", "validate clean but read_coco refuses (planted)"),
])
def test_the_harness_catches_planted_failures(fuzzer: Fuzzer, plant: str, expected: str) -> None:
    text = json.dumps(SOURCES[0])
    assert failures(fuzzer.run(text)) == []  # the control: the real file passes
    assert failures(fuzzer.run(text, plant=plant)) == [expected]
    assert failures(fuzzer.run(text)) == []  # and the worker comes back after a crash


def test_the_harness_catches_a_hang() -> None:
    runner = Fuzzer(timeout=5.0)
    try:
        assert failures(runner.run(json.dumps(SOURCES[0]), plant="hang")) == ["hang"]
    finally:
        runner.close()


def test_the_issue_reproducers_pass_the_harness(fuzzer: Fuzzer) -> None:
    base = SOURCES[0]
    image = base["images"][0]
    ann = next(a for a in base["annotations"] if a["image_id"] == image["id"]
               and isinstance(a["segmentation"], list))
    one = {"images": [image], "categories": base["categories"]}
    docs: list[str] = [
        json.dumps(dict(one, annotations=[dict(ann, id=k + 1) for k in range(256)])),
        json.dumps(dict(one, annotations=[dict(ann, segmentation=[[0, 0, 1e9, 0, 0, 1e9]])])),
        json.dumps(dict(one, images=[dict(image, width=10**6, height=10**6)], annotations=[ann])),
        json.dumps(dict(one, annotations=[dict(ann, bbox=[10**400, 1, 9, 9])])),
        json.dumps(dict(one, annotations=[ann]))[:-1] + ', "deep": ' + "[" * 1000 + "]" * 1000 + "}",
        json.dumps(dict(one, annotations=[ann]))[:-1] + ', "deep": ' + "[" * 500 + "]" * 500 + "}",
        json.dumps(dict(one, annotations=[dict(ann, segmentation={"size": ["x", 20], "counts": "a"})])),
        json.dumps(dict(one, images=[dict(image, file_name="a\x00.jpg")], annotations=[ann])),
        json.dumps(dict(one, images=[dict(image, file_name="a\ud800.jpg")], annotations=[ann])),
        json.dumps(dict(one, annotations=[dict(ann, segmentation={
            "size": [image["height"], image["width"]], "counts": "PPPPPPPPPPPPPPPPP?`<"})])),
    ]
    for text in docs:
        outcome = fuzzer.run(text)
        assert failures(outcome) == [], (text[:200], outcome)


EXAMPLES = int(os.environ.get("INSTKIT_FUZZ_EXAMPLES", "120"))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_real_documents(fuzzer: Fuzzer, tmp_path_factory: Any, data: Any) -> None:
    document = data.draw(mutated_documents(SOURCES))
    text = dumps(document)
    outcome = fuzzer.run(text)
    found = failures(outcome)
    if found:
        saved = Path(tmp_path_factory.mktemp("fuzz-failure")) / "document.json"
        saved.write_text(text)
        pytest.fail(f"{found} on {saved}: {json.dumps(outcome.result)[:2000]}")

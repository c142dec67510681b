"""validate (and --fix) on arbitrary JSON-like documents: any findings, never a crash."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from instkit.errors import FormatError
from instkit.testing.strategies import coco_documents
from instkit.validate import repair_document, validate_document

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
_json = st.recursive(_scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=20)
_coco_keys = st.sampled_from(["images", "annotations", "categories", "id", "image_id",
                              "category_id", "segmentation", "bbox", "area", "iscrowd",
                              "keypoints", "num_keypoints", "size", "counts", "width", "height",
                              "file_name", "name"])
_coco_like = st.recursive(_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(_coco_keys, children, max_size=6)),
    max_leaves=30)


def _check(document: Any) -> None:
    report = validate_document(document)
    for finding in report.findings:
        assert finding.severity in ("error", "warning", "info")
    json.dumps(report.as_dict())  # the report is always serialisable
    report.to_text()
    try:
        fixed, _ = repair_document(document)
    except FormatError:
        assert not isinstance(document, dict)
        return
    again = validate_document(fixed)
    assert again.errors == [], again.to_text()
    json.dumps(fixed, allow_nan=False)


@settings(max_examples=20)
@given(_json)
def test_arbitrary_json_never_crashes(document: Any) -> None:
    _check(document)


@settings(max_examples=20)
@given(_coco_like)
def test_coco_shaped_junk_never_crashes(document: Any) -> None:
    _check(document)


@settings(max_examples=20)
@given(coco_documents(valid=False))
def test_mutated_coco_documents_never_crash(document: Any) -> None:
    _check(document)


@settings(max_examples=20)
@given(coco_documents(valid=True))
def test_valid_documents_have_no_errors(document: dict[str, Any]) -> None:
    report = validate_document(document)
    assert report.errors == [], report.to_text()

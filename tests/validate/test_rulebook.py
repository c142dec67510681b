"""The COCO rulebook: one rule, one place. validate, read_coco (strict and lenient), --fix, the
results and Hugging Face readers agree on every rule; the bounds hold before native code; the
reproducers of issue 12 are fixed at their cause."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytest

import instkit
from instkit import errors as E
from instkit.validate import RULES, Limits, repair_document, validate_document, validate_file
from instkit.validate.rules import CHECKS, SEVERITIES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _doc(anns: list[dict[str, Any]], width: int = 20, height: int = 20, **image: Any) -> dict[str, Any]:
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height, **image}],
            "categories": [{"id": 1, "name": "x"}], "annotations": anns}


def _ann(k: int = 1, seg: Any = None, **fields: Any) -> dict[str, Any]:
    out = {"id": k, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 9.0,
           "bbox": [1.0, 1.0, 3.0, 3.0], "segmentation": seg if seg is not None else [[1, 1, 4, 1, 4, 4, 1, 4]]}
    out.update(fields)
    return out


def _write(tmp_path: Path, doc: Any, name: str = "in.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_every_rule_has_a_severity_an_error_class_and_a_documented_row() -> None:
    table = (DOCS / "validate.md").read_text()
    for code, rule in RULES.items():
        assert rule.code == code and rule.severity in SEVERITIES
        assert issubclass(rule.error, E.InstkitError) and issubclass(rule.error, ValueError)
        row = re.search(rf"^\| `{re.escape(code)}` \| (\w+) \| `?(\w+)`? \|", table, re.M)
        assert row, f"{code} has no row in docs/validate.md"
        assert row.group(1) == rule.severity and row.group(2) == rule.error.__name__, code
    assert CHECKS == {code: (r.severity, r.explanation) for code, r in RULES.items()}


# Issue 12's reproducers: (document text, the code validate and read_coco name).
_POLY = [[0, 0, 4, 0, 4, 4]]
REPRODUCERS: list[tuple[str, str, str | None]] = [
    ("1: 256 annotations in one image", json.dumps(_doc([_ann(k + 1, _POLY, area=8.0, bbox=[0, 0, 4, 4]) for k in range(256)], 10, 10)), None),
    ("2: polygon at 1e9", json.dumps(_doc([_ann(1, [[0, 0, 1e9, 0, 0, 1e9]])])), "coordinate-out-of-range"),
    ("2: 1e6 x 1e6 image", json.dumps(_doc([_ann(1, [[0, 0, 9, 0, 9, 9], [20, 20, 29, 20, 29, 29]])], 10**6, 10**6)), "image-too-large"),
    ("2: 2**40 side", json.dumps(_doc([_ann()], 2**40, 2**40)), "image-too-large"),
    ("2: outline too long", json.dumps(_doc([_ann(1, [[0, 0, 1e6, 0, 0, 1, 1e6, 1, 0, 2, 1e6, 2, 0, 3, 1e6, 3, 0, 4]])])), "polygon-too-large"),
    ("3: bbox 1e400 as an integer", json.dumps(_doc([_ann(bbox=[10**400, 1, 9, 9])])), "coordinate-out-of-range"),
    ("3: id beyond int64", json.dumps(_doc([_ann(2**64)])), "number-out-of-range"),
    ("3: area beyond float64", json.dumps(_doc([_ann(area=10**400)])), "number-out-of-range"),
    ("3: keypoint beyond float64", json.dumps(_doc([_ann(keypoints=[10**400, 1, 2])])), "number-out-of-range"),
    ("4: nested 1000 deep", json.dumps(_doc([_ann()]))[:-1] + ', "deep": ' + "[" * 1000 + "]" * 1000 + "}", "json-too-deep"),
    ("4: nested 500 deep", json.dumps(_doc([_ann()]))[:-1] + ', "deep": ' + "[" * 500 + "]" * 500 + "}", "json-too-deep"),
    ("5: RLE size ['x', 20]", json.dumps(_doc([_ann(1, {"size": ["x", 20], "counts": "abc"})])), "schema-type"),
    ("5: RLE size [null, 20]", json.dumps(_doc([_ann(1, {"size": [None, 20], "counts": "abc"})])), "schema-type"),
    ("5: non-ASCII counts", json.dumps(_doc([_ann(1, {"size": [20, 20], "counts": "é"})])), "rle-invalid"),
    ("6: NUL in file_name", json.dumps(_doc([_ann()], file_name="a\x00.jpg")), "file-name-invalid"),
    ("6: lone surrogate in file_name", json.dumps(_doc([_ann()], file_name="a\ud800.jpg")), "file-name-invalid"),
    ("fuzz: RLE resized into a 640x1000000 image", json.dumps(_doc([_ann(1, {"size": [480, 640], "counts": [1000, 50, 480 * 640 - 1050]})], 640, 1_000_000)), "rle-size-mismatch"),
    ("7: counts pycocotools reads differently", json.dumps(_doc([_ann(1, {"size": [20, 20], "counts": "PPPPPPPPPPPPPPPPP?`<"})])), "rle-invalid"),
]


@pytest.mark.parametrize(("name", "text", "code"), REPRODUCERS, ids=[r[0] for r in REPRODUCERS])
def test_reproducers_agree_in_validate_read_coco_and_fix(tmp_path: Path, name: str, text: str,
                                                         code: str | None) -> None:
    path = _write(tmp_path, text)
    report = validate_file(path, progress=False, fix=tmp_path / "fixed.json")
    errors = {f.code for f in report.errors}
    if code is None:  # a valid document: everything works on it
        assert errors == set()
        dataset = instkit.read_coco(path)
        assert len(dataset[0].instances.masks.area()) == 256
        instkit.write_coco(dataset, tmp_path / "out.json")
        assert len(repair_document(json.loads(text))[0]["annotations"]) == 256
        return
    assert code in errors, (name, report.to_text())
    with pytest.raises(RULES[code].error) as info:
        instkit.read_coco(path)
    assert info.value.code in errors  # the first error the reader meets is one validate names
    lenient = instkit.read_coco(path, strict=False) if code != "json-too-deep" or "1000" not in name else None
    if lenient is not None:
        # plus what pointed at a left-out image or category
        assert {p.code for p in lenient.problems} <= errors | {"unknown-image", "unknown-category"}
    if report.fixed_file is not None:  # JSON too deep to parse has nothing to repair
        fixed = instkit.read_coco(report.fixed_file)  # every --fix output is accepted
        for sample in fixed:
            if sample.instances.masks is not None:
                sample.instances.masks.area()


def test_limits_are_configurable(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc([_ann(1, [[1, 1, 15, 1, 15, 15]], area=98.0, bbox=[1, 1, 14, 14])]))
    assert instkit.read_coco(path).num_annotations == 1
    tight = Limits(max_coordinate=10.0)
    with pytest.raises(E.LimitError):
        instkit.read_coco(path, limits=tight)
    assert "coordinate-out-of-range" in validate_file(path, progress=False, limits=tight).codes()
    small = Limits(max_image_pixels=100)
    with pytest.raises(E.LimitError) as info:
        instkit.read_coco(path, limits=small)
    assert info.value.code == "image-too-large"


def test_crowded_image_validates_reads_and_repairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    anns = []
    for k in range(5000):
        x, y = rng.uniform(0, 1000, 2)
        s = float(rng.uniform(3, 20))
        anns.append(_ann(k + 1, [[x, y, x + s, y, x + s, y + s, x, y + s]], area=s * s,
                         bbox=[x, y, s, s]))
    path = _write(tmp_path, _doc(anns, 1024, 1024))
    assert validate_file(path, progress=False).errors == []
    sample = instkit.read_coco(path)[0]
    areas = sample.instances.masks.area()
    assert len(areas) == 5000 and (areas > 0).all()
    reference = mask_utils.area(mask_utils.frPyObjects(anns[4999]["segmentation"], 1024, 1024))
    assert areas[4999] == reference[0]
    assert len(sample.instances.masks.to_bitmaps()) == 5000  # box-tight, not 5000 x 1024 x 1024


def test_repair_keeps_holes_and_reports_areas() -> None:
    keyhole = [0, 0, 100, 0, 100, 100, 0, 100, 0, 0, 30, 30, 30, 70, 70, 70, 70, 30, 30, 30]
    before = int(mask_utils.area(mask_utils.frPyObjects([keyhole], 120, 120))[0])
    doc = _doc([_ann(1, [keyhole], area=before, bbox=[0, 0, 100, 100])], 120, 120)
    assert "polygon-self-intersection" in validate_document(doc).codes()
    fixed, changes = repair_document(doc)
    segmentation = fixed["annotations"][0]["segmentation"]
    assert isinstance(segmentation, dict)  # a polygon cannot hold the hole: RLE
    after = int(mask_utils.area({"size": segmentation["size"],
                                 "counts": segmentation["counts"].encode()}))
    assert abs(after - before) <= 0.05 * before  # the hole stayed a hole
    area_changes = [c for c in changes if "mask area" in c.what]
    assert [(c.before, c.after) for c in area_changes] == [(before, after)]
    assert "within" in area_changes[0].what
    assert validate_document(fixed).errors == []


def test_repair_says_so_when_the_area_moves_beyond_tolerance() -> None:
    twice = [0, 0, 10, 0, 10, 10, 0, 10, 0, 0, 10, 0, 10, 10, 0, 10]  # even-odd: empty
    fixed, changes = repair_document(_doc([_ann(1, [twice])]))
    moved = [c for c in changes if "mask area" in c.what]
    assert moved and "beyond the repair tolerance" in moved[0].what
    assert moved[0].before == 0 and moved[0].after > 0


def test_rle_of_another_size_is_resized_without_decoding_the_image() -> None:
    big = np.zeros((40000, 30), dtype=np.uint8, order="F")
    big[2:5, 3:6] = 1
    rle = mask_utils.encode(big)
    doc = _doc([_ann(1, {"size": [40000, 30], "counts": rle["counts"].decode()})], 30, 20)
    fixed, changes = repair_document(doc)
    segmentation = fixed["annotations"][0]["segmentation"]
    assert segmentation["size"] == [20, 30]
    dense = mask_utils.decode({"size": [20, 30], "counts": segmentation["counts"].encode()})
    assert np.array_equal(dense, big[:20])
    assert any("mask area" in c.what and c.before == c.after == 9 for c in changes)


def test_write_coco_keeps_unknown_top_level_keys(tmp_path: Path) -> None:
    doc = _doc([_ann()])
    doc["scene_annotations"] = [{"id": 1, "scene_id": [1, 2]}]
    doc["scene_categories"] = [{"id": 1, "name": "street"}]
    dataset = instkit.read_coco(_write(tmp_path, doc))
    written = json.loads(instkit.write_coco(dataset, tmp_path / "out.json").read_text())
    assert written["scene_annotations"] == doc["scene_annotations"]
    assert written["scene_categories"] == doc["scene_categories"]


def test_lenient_reading_records_by_code(tmp_path: Path) -> None:
    doc = _doc([_ann(1), _ann(1), _ann(2, [[1, 1, 2, 2]]), _ann(3, keypoints=[1, 1, 3])])
    dataset = instkit.read_coco(_write(tmp_path, doc), strict=False)
    assert [p.code for p in dataset.problems] == ["duplicate-annotation-id", "polygon-4-number-trap",
                                                  "keypoints-visibility"]
    assert dataset.num_annotations == 1
    assert [d.reason for d in dataset[0].meta.drops] == [p.code for p in dataset.problems]


def test_results_and_hugging_face_readers_use_the_same_rules() -> None:
    from instkit.io.hf import hf_row_to_sample

    row = {"image_id": 1, "width": 10, "height": 10,
           "objects": {"id": [1], "category": [0], "bbox": [[1, 1, 0, 4]], "area": [4.0],
                       "iscrowd": [0], "segmentation": [[[1, 1, 5, 1, 5, 5]]]}}
    with pytest.raises(E.BoxError) as info:
        hf_row_to_sample(row)
    assert info.value.code == "bbox-invalid"
    row["objects"]["bbox"] = [[1, 1, 4, 4]]
    row["objects"]["segmentation"] = [[[0, 0, 1e9, 0, 0, 1e9]]]
    with pytest.raises(E.LimitError):
        hf_row_to_sample(row)
    row["objects"]["segmentation"] = [[[True, 1, 5, 1, 5, 5]]]
    with pytest.raises(E.SchemaError):
        hf_row_to_sample(row)
    row["width"] = 10**6
    row["height"] = 10**6
    with pytest.raises(E.LimitError):
        hf_row_to_sample(row)


def test_json_too_deep_to_parse_is_a_documented_error_everywhere(tmp_path: Path) -> None:
    import subprocess
    import sys

    from instkit.io.files import load_json

    path = _write(tmp_path, '{"images": ' + "[" * 1000 + "]" * 1000 + "}")
    with pytest.raises(E.JSONDepthError) as info:
        load_json(path)
    assert info.value.code == "json-too-deep"
    assert [f.code for f in validate_file(path, progress=False).findings] == ["json-too-deep"]
    result = subprocess.run([sys.executable, "-m", "instkit", "stats", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "too deeply" in result.stderr
    assert result.returncode == 2  # bad input (helper 12b's exit codes)

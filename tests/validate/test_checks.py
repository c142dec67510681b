"""Planted defects in copies of real COCO files: each is reported with the right code at the
right place, absent from the clean file, and ``--fix`` leaves a file with no errors."""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instkit.validate import CHECKS, repair_document, validate_document, validate_file

Doc = dict[str, Any]


def _ann(doc: Doc, kind: str = "polygon", crowd: int | None = None) -> tuple[int, Doc]:
    for index, ann in enumerate(doc["annotations"]):
        is_poly = isinstance(ann["segmentation"], list)
        if (kind == "polygon") == is_poly and (crowd is None or ann["iscrowd"] == crowd):
            return index, ann
    raise LookupError(kind)


# Each defect: (code, base file "coco" or "pose", mutate(doc, tmp) -> (json_path prefix, image_id, annotation_id))
def d_nonfinite(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["bbox"][0] = math.nan
    return f"annotations[{i}].bbox[0]", None, None


def d_schema_type(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][0]["width"] = "640"
    return "images[0].width", doc["images"][0]["id"], None


def d_schema_missing(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    ann = doc["annotations"][1]
    del ann["category_id"]
    return "annotations[1].category_id", ann["image_id"], ann["id"]


def d_dup_image(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][1]["id"] = doc["images"][0]["id"]
    return "images[1].id", doc["images"][0]["id"], None


def d_dup_ann(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["annotations"][3]["id"] = doc["annotations"][2]["id"]
    return "annotations[3].id", doc["annotations"][3]["image_id"], doc["annotations"][2]["id"]


def d_dup_cat(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["categories"][5]["id"] = doc["categories"][4]["id"]
    return "categories[5].id", None, None


def d_dup_cat_name(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["categories"][5]["name"] = doc["categories"][4]["name"]
    return "categories[5].name", None, None


def d_unknown_image(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["annotations"][4]["image_id"] = 987654321
    return "annotations[4].image_id", 987654321, doc["annotations"][4]["id"]


def d_unknown_category(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["annotations"][4]["category_id"] = 9999
    return "annotations[4].category_id", doc["annotations"][4]["image_id"], doc["annotations"][4]["id"]


def d_image_missing(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][2]["file_name"] = "no_such_image.jpg"
    return "images[2]", doc["images"][2]["id"], None


def d_image_unreadable(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    (tmp / doc["images"][2]["file_name"]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return "images[2]", doc["images"][2]["id"], None


def d_image_size(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][2]["width"] += 1
    return "images[2]", doc["images"][2]["id"], None


def d_image_escape(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][2]["file_name"] = "../../etc/passwd"
    return "images[2]", doc["images"][2]["id"], None


def _poly(doc: Doc, change: Callable[[list[Any]], None], part: int = 0) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    change(ann["segmentation"])
    return f"annotations[{i}].segmentation[{part}]", ann["image_id"], ann["id"]


def d_too_few(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    return _poly(doc, lambda s: s.append([10.0, 10.0]), 1)


def d_odd(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    return _poly(doc, lambda s: s[0].append(12.5))


def d_trap(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    return _poly(doc, lambda s: s.append([10.0, 10.0, 40.0, 40.0]), 1)


def d_poly_nan(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    return _poly(doc, lambda s: s[0].__setitem__(3, math.inf))


def d_self_intersection(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    def bowtie(s: list[Any]) -> None:
        s[0] = [100.0, 100.0, 200.0, 200.0, 200.0, 100.0, 100.0, 200.0]
    return _poly(doc, bowtie)


def d_outside(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    def shift(s: list[Any]) -> None:
        s[0] = [v + 500.0 if k % 2 == 0 else v for k, v in enumerate(s[0])]
    path, image_id, ann_id = _poly(doc, shift)
    i, ann = _ann(doc)
    # keep the box/area consistent with what the shifted polygon rasterises to is not needed:
    return f"annotations[{i}].segmentation", image_id, ann_id


def d_rle_size(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc, "rle")
    h, w = ann["segmentation"]["size"]
    ann["segmentation"]["size"] = [w, h]
    return f"annotations[{i}].segmentation.size", ann["image_id"], ann["id"]


def d_rle_sum(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc, "rle")
    ann["segmentation"]["counts"].append(7)
    return f"annotations[{i}].segmentation.counts", ann["image_id"], ann["id"]


def d_rle_invalid(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc, "rle")
    ann["segmentation"]["counts"] = [5, -3, 10]
    return f"annotations[{i}].segmentation.counts", ann["image_id"], ann["id"]


def d_mask_empty(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["segmentation"] = [[5.2, 5.2, 5.3, 5.2, 5.25, 5.3]]
    return f"annotations[{i}].segmentation", ann["image_id"], ann["id"]


def d_bbox_invalid(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["bbox"][2] = 0
    return f"annotations[{i}].bbox", ann["image_id"], ann["id"]


def d_bbox_mismatch(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["bbox"][0] += 50
    return f"annotations[{i}].bbox", ann["image_id"], ann["id"]


def d_area_mismatch(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["area"] *= 3
    return f"annotations[{i}].area", ann["image_id"], ann["id"]


def d_crowd_quirk(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc, "rle", crowd=1)
    ann["area"] *= 2
    return f"annotations[{i}].area", ann["image_id"], ann["id"]


def d_iscrowd_invalid(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["iscrowd"] = 2
    return f"annotations[{i}].iscrowd", ann["image_id"], ann["id"]


def d_iscrowd_geometry(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["iscrowd"] = 1
    return f"annotations[{i}].iscrowd", ann["image_id"], ann["id"]


def _kp(doc: Doc) -> tuple[int, Doc]:
    for index, ann in enumerate(doc["annotations"]):
        if ann.get("num_keypoints", 0) >= 3 and isinstance(ann["segmentation"], list):
            return index, ann
    raise LookupError


def d_kp_count(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _kp(doc)
    ann["keypoints"] = ann["keypoints"][:-3]
    return f"annotations[{i}].keypoints", ann["image_id"], ann["id"]


def d_kp_visibility(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _kp(doc)
    ann["keypoints"][2] = 5
    return f"annotations[{i}].keypoints", ann["image_id"], ann["id"]


def d_num_kp(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _kp(doc)
    ann["num_keypoints"] += 2
    return f"annotations[{i}].num_keypoints", ann["image_id"], ann["id"]


def d_kp_outside(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _kp(doc)
    k = next(j for j in range(0, len(ann["keypoints"]), 3) if ann["keypoints"][j + 2] > 0)
    ann["keypoints"][k] = 5000
    return f"annotations[{i}].keypoints", ann["image_id"], ann["id"]


def d_category_unused(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["categories"].append({"id": 77, "name": "ghost", "supercategory": "none"})
    return f"categories[{len(doc['categories']) - 1}]", None, None


def d_no_annotations(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    image_id = doc["annotations"][0]["image_id"]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != image_id]
    index = next(k for k, im in enumerate(doc["images"]) if im["id"] == image_id)
    return f"images[{index}]", image_id, None


def d_too_deep(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    ann = doc["annotations"][0]
    deep: Any = []
    for _ in range(150):
        deep = [deep]
    ann["attributes"] = deep
    return "annotations[0].attributes", ann["image_id"], ann["id"]


def d_annotations_missing(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    del doc["annotations"]
    return "annotations", None, None


def d_number_range(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    ann = doc["annotations"][2]
    ann["id"] = 2**70
    return "annotations[2].id", ann["image_id"], None


def d_coordinate_range(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    return _poly(doc, lambda s: s[0].__setitem__(2, 1e9))


def d_image_too_large(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][2]["width"] = doc["images"][2]["height"] = 100_000
    return "images[2]", doc["images"][2]["id"], None


def d_polygon_too_large(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    ann["segmentation"].append([0, 0, 1e6, 0, 0, 1, 1e6, 1, 0, 2, 1e6, 2, 0, 3, 1e6, 3, 0, 4])
    return f"annotations[{i}].segmentation", ann["image_id"], ann["id"]


def d_file_name_invalid(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    doc["images"][2]["file_name"] = "a\x00b.jpg"
    return "images[2].file_name", doc["images"][2]["id"], None


def d_mask_missing(doc: Doc, tmp: Path) -> tuple[str, Any, Any]:
    i, ann = _ann(doc)
    del ann["segmentation"]
    return f"annotations[{i}].segmentation", ann["image_id"], ann["id"]


DEFECTS: list[tuple[str, str, Callable[[Doc, Path], tuple[str, Any, Any]]]] = [
    ("json-too-deep", "coco", d_too_deep),
    ("annotations-missing", "coco", d_annotations_missing),
    ("number-out-of-range", "coco", d_number_range),
    ("coordinate-out-of-range", "coco", d_coordinate_range),
    ("image-too-large", "coco", d_image_too_large),
    ("polygon-too-large", "coco", d_polygon_too_large),
    ("file-name-invalid", "coco", d_file_name_invalid),
    ("mask-missing", "coco", d_mask_missing),
    ("json-nonfinite", "coco", d_nonfinite),
    ("schema-type", "coco", d_schema_type),
    ("schema-missing", "coco", d_schema_missing),
    ("duplicate-image-id", "coco", d_dup_image),
    ("duplicate-annotation-id", "coco", d_dup_ann),
    ("duplicate-category-id", "coco", d_dup_cat),
    ("duplicate-category-name", "coco", d_dup_cat_name),
    ("unknown-image", "coco", d_unknown_image),
    ("unknown-category", "coco", d_unknown_category),
    ("image-missing", "coco", d_image_missing),
    ("image-unreadable", "coco", d_image_unreadable),
    ("image-size-mismatch", "coco", d_image_size),
    ("image-path-escape", "coco", d_image_escape),
    ("polygon-too-few-points", "coco", d_too_few),
    ("polygon-odd-coordinates", "coco", d_odd),
    ("polygon-4-number-trap", "coco", d_trap),
    ("polygon-nonfinite", "coco", d_poly_nan),
    ("polygon-self-intersection", "coco", d_self_intersection),
    ("polygon-outside-image", "coco", d_outside),
    ("rle-size-mismatch", "coco", d_rle_size),
    ("rle-counts-sum", "coco", d_rle_sum),
    ("rle-invalid", "coco", d_rle_invalid),
    ("mask-empty", "coco", d_mask_empty),
    ("bbox-invalid", "coco", d_bbox_invalid),
    ("bbox-mismatch", "coco", d_bbox_mismatch),
    ("area-mismatch", "coco", d_area_mismatch),
    ("crowd-area-quirk", "coco", d_crowd_quirk),
    ("iscrowd-invalid", "coco", d_iscrowd_invalid),
    ("iscrowd-geometry", "coco", d_iscrowd_geometry),
    ("keypoints-count", "pose", d_kp_count),
    ("keypoints-visibility", "pose", d_kp_visibility),
    ("num-keypoints-mismatch", "pose", d_num_kp),
    ("keypoints-outside-image", "pose", d_kp_outside),
    ("category-unused", "pose", d_category_unused),
    ("image-no-annotations", "coco", d_no_annotations),
]


@pytest.fixture(scope="module")
def bases(tinycoco: dict[str, Path], pose_minicoco: dict[str, Path]) -> dict[str, tuple[Doc, Path]]:
    return {
        "coco": (json.loads(tinycoco["val_json"].read_text()), tinycoco["val_images"]),
        "pose": (json.loads(pose_minicoco["val_json"].read_text()), pose_minicoco["val_images"]),
    }


# Rules about several shards at once: planted in tests/shards/test_validate.py.
SHARD_DEFECTS = {"shard-categories-mismatch", "shard-manifest-mismatch", "shard-unreadable"}


def test_every_check_code_has_a_planted_defect():
    planted = {code for code, _, _ in DEFECTS} | {"json-parse"}
    assert planted | (SHARD_DEFECTS & set(CHECKS)) == set(CHECKS)


@pytest.mark.parametrize(("code", "base", "mutate"), DEFECTS, ids=[d[0] for d in DEFECTS])
def test_planted_defect_is_found_and_fixed(code: str, base: str, mutate: Any, bases: Any,
                                           tmp_path: Path) -> None:
    clean, image_dir = bases[base]
    images = tmp_path / "images"
    shutil.copytree(image_dir, images)
    clean_report = validate_document(clean, images=images)
    assert code not in clean_report.codes(), "the clean file must pass this check"
    doc = copy.deepcopy(clean)
    json_path, image_id, annotation_id = mutate(doc, images)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))  # NaN is written as the non-standard token NaN
    report = validate_file(path, images, progress=False, fix=tmp_path / "fixed.json")
    hits = [f for f in report.findings if f.code == code]
    assert hits, f"{code} not reported; got {sorted(report.codes())}"
    assert any(
        (f.location.json_path or "").startswith(json_path)
        and (image_id is None or f.location.image_id == image_id)
        and (annotation_id is None or f.location.annotation_id == annotation_id)
        and f.location.file == str(path)
        for f in hits
    ), [f.location for f in hits]
    assert all(f.severity == CHECKS[code][0] for f in hits)
    # --fix: the repaired file has no errors, the input is untouched, every change is listed.
    assert json.loads(path.read_text(), parse_constant=float).keys() == doc.keys()
    fixed = validate_file(tmp_path / "fixed.json", images, progress=False)
    assert fixed.errors == [], fixed.to_text()
    if CHECKS[code][0] == "error":
        assert report.changes, "an error was found but --fix changed nothing"
    if code in ("bbox-mismatch", "area-mismatch", "polygon-self-intersection", "polygon-outside-image",
                "num-keypoints-mismatch", "keypoints-outside-image", "keypoints-visibility"):
        assert code not in fixed.codes()


def test_json_parse_error_has_line_and_column(tmp_path: Path, tinycoco: dict[str, Path]) -> None:
    lines = json.dumps(json.loads(tinycoco["val_json"].read_text()), indent=1).splitlines()
    lines.insert(2, "  oops,")
    broken = tmp_path / "broken.json"
    broken.write_text("\n".join(lines))
    report = validate_file(broken, progress=False)
    assert [f.code for f in report.findings] == ["json-parse"]
    assert "line 3, column 3" in report.findings[0].message
    assert report.exit_code == 1


def test_fix_repairs_what_it_claims(bases: Any) -> None:
    clean, _ = bases["coco"]
    doc = copy.deepcopy(clean)
    d_bbox_mismatch(doc, Path("."))
    d_dup_ann(doc, Path("."))
    i, _ = _ann(doc)
    fixed, changes = repair_document(doc)
    whats = {c.what for c in changes}
    assert "bbox recomputed from the mask" in whats and "annotation id renumbered" in whats
    ids = [a["id"] for a in fixed["annotations"]]
    assert len(ids) == len(set(ids))
    import pycocotools.mask as mask_utils

    image = next(im for im in fixed["images"] if im["id"] == fixed["annotations"][i]["image_id"])
    rle = mask_utils.merge(mask_utils.frPyObjects(fixed["annotations"][i]["segmentation"],
                                                  image["height"], image["width"]))
    assert fixed["annotations"][i]["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]
    assert doc["annotations"][i]["bbox"] != fixed["annotations"][i]["bbox"]  # input untouched


def test_fix_never_overwrites_the_input(tmp_path: Path, tinycoco: dict[str, Path]) -> None:
    from instkit.errors import InstkitError

    copy_path = tmp_path / "a.json"
    shutil.copy(tinycoco["val_json"], copy_path)
    with pytest.raises(InstkitError, match="new file"):
        validate_file(copy_path, fix=copy_path, progress=False)

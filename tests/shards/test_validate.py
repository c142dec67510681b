"""validate over shards: per-shard findings located in the member, and the dataset-wide ones
reduced so that they match one walk over the merged file."""

from __future__ import annotations

import copy
import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from instkit.shards import open_shards, validate_shards
from instkit.validate import validate_document
from tests.shards.conftest import add_member, sa1b_rows, split_coco, write_sa1b_tars


def _keys(findings: Any) -> Counter[tuple[str, Any, Any]]:
    return Counter((f.code, f.location.image_id, f.location.annotation_id) for f in findings)


def _broken_parts(small_coco: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A document with problems that only the whole dataset shows, cut into 3 COCO shards."""
    document = json.loads(small_coco.read_text())
    parts = split_coco(document, 3)
    # an image id of shard 0 again in shard 2, an annotation id of shard 0 again in shard 1
    moved = parts[2]["images"][0]["id"]
    reused = parts[0]["images"][1]["id"]
    parts[2]["images"][0]["id"] = reused
    for ann in parts[2]["annotations"]:
        if ann["image_id"] == moved:
            ann["image_id"] = reused
    parts[1]["annotations"][0]["id"] = parts[0]["annotations"][0]["id"]
    # a duplicate within a shard too, and a category used in one shard only
    parts[1]["annotations"][2]["id"] = parts[1]["annotations"][1]["id"]
    extra = {"id": 99, "name": "only-in-shard-2"}
    for part in parts:
        part["categories"] = part["categories"] + [extra]
    parts[2]["annotations"][0]["category_id"] = 99
    parts[0]["annotations"][3]["bbox"] = [0, 0, -1, 5]  # a per-shard error
    merged = {"images": [i for p in parts for i in p["images"]],
              "annotations": [a for p in parts for a in p["annotations"]],
              "categories": parts[0]["categories"]}
    return merged, parts


def _write(folder: Path, parts: list[dict[str, Any]]) -> Path:
    folder.mkdir()
    for k, part in enumerate(parts):
        (folder / f"part-{k}.json").write_text(json.dumps(part))
    return folder


def test_reduce_matches_one_walk_of_the_merged_file(small_coco: Path, tmp_path: Path) -> None:
    merged, parts = _broken_parts(small_coco)
    folder = _write(tmp_path / "parts", parts)
    one = validate_shards(open_shards(folder), workers=1)
    whole = validate_document(merged)
    assert _keys(one.findings) == _keys(whole.findings)
    codes = Counter(f.code for f in one.findings)
    assert codes["duplicate-image-id"] == 1 and codes["duplicate-annotation-id"] == 2
    assert codes["bbox-invalid"] == 1
    assert not any(f.code == "category-unused" and "only-in" in f.message for f in one.findings)
    cross = next(f for f in one.findings if f.code == "duplicate-image-id")
    assert cross.location.file == str(folder / "part-2.json")
    assert cross.location.json_path == "images[0].id" and "part-0.json" in cross.message
    assert one.counts == {"shards": 3, "images": 24, "annotations": len(merged["annotations"]),
                          "categories": len(merged["categories"])}
    # the same report with two worker processes, and with the ids reduced in buckets on disk
    assert validate_shards(open_shards(folder), workers=2).as_dict() == one.as_dict()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    bucketed = validate_shards(open_shards(folder), workers=2, scratch=scratch, buckets=3)
    assert bucketed.as_dict() == one.as_dict()
    assert not list(scratch.iterdir())  # cleaned up


def test_a_clean_split_reports_what_the_file_reports(small_coco: Path, tmp_path: Path) -> None:
    document = json.loads(small_coco.read_text())
    folder = _write(tmp_path / "clean", split_coco(document, 4))
    report = validate_shards(open_shards(folder), workers=2)
    assert _keys(report.findings) == _keys(validate_document(document).findings)


def test_category_tables_that_disagree(small_coco: Path, tmp_path: Path) -> None:
    parts = split_coco(json.loads(small_coco.read_text()), 3)
    parts[1]["categories"] = copy.deepcopy(parts[1]["categories"])
    parts[1]["categories"][0]["name"] = "renamed"
    folder = _write(tmp_path / "tables", parts)
    report = validate_shards(open_shards(folder))
    [finding] = [f for f in report.findings if f.code == "shard-categories-mismatch"]
    assert finding.location.file == str(folder / "part-1.json")
    assert "'renamed' here" in finding.message and report.exit_code == 1


def test_instkit_shards_and_manifest_counts(small_coco: Path, small_shards: Path,
                                            tmp_path: Path) -> None:
    report = validate_shards(open_shards(small_shards), workers=2)
    whole = validate_document(json.loads(small_coco.read_text()))
    assert _keys(report.findings) == _keys(whole.findings)
    assert all(".tar/" in (f.location.file or "") or f.code == "category-unused"
               for f in report.findings)
    manifest = json.loads((small_shards / "manifest.json").read_text())
    manifest["shards"][2]["samples"] = 5
    lying = tmp_path / "lying"
    lying.mkdir()
    for path in small_shards.iterdir():
        (lying / path.name).write_bytes(path.read_bytes())
    (lying / "manifest.json").write_text(json.dumps(manifest))
    bad = validate_shards(open_shards(lying))
    [finding] = [f for f in bad.findings if f.code == "shard-manifest-mismatch"]
    assert finding.location.file == str(lying / "shard-000002.tar")
    assert "says 5 samples" in finding.message


def test_sa1b_tars_findings_in_members(small_coco: Path, tmp_path: Path) -> None:
    rows = sa1b_rows(small_coco)
    clean = validate_shards(open_shards(write_sa1b_tars(tmp_path / "ok", rows, 8)),
                            check_images=True, workers=2)
    assert not clean.errors, clean.to_text()
    assert clean.counts["images"] == 24 and clean.counts["categories"] == 1
    broken = [(copy.deepcopy(r), img) for r, img in rows]
    broken[3][0]["annotations"][0]["segmentation"]["counts"] = "!!"
    broken[9][0]["annotations"][1]["id"] = broken[2][0]["annotations"][0]["id"]
    broken[10][0]["image"]["width"] += 1  # the PNG is not that wide
    broken[20][0]["annotations"][0]["area"] = float("nan")
    folder = write_sa1b_tars(tmp_path / "bad", broken, 8)
    with tarfile.open(folder / "sa_000002.tar", "a") as archive:  # a row that is no JSON
        add_member(archive, "sa_999.png", broken[0][1])
        add_member(archive, "sa_999.json", b"{not json")
    with tarfile.open(folder / "sa_000002.tar", "a") as archive:  # a row without its image
        add_member(archive, "sa_998.json", json.dumps(dict(broken[0][0], image=dict(
            broken[0][0]["image"], image_id=998))).encode())
    report = validate_shards(open_shards(folder), check_images=True, workers=2)
    by_code = {f.code: f for f in report.findings}
    rle = by_code["rle-invalid"]
    assert rle.location.file == f"{folder}/sa_000000.tar/sa_{rows[3][0]['image']['image_id']}.json"
    assert rle.location.json_path.startswith("annotations[0].segmentation")
    [duplicate] = [f for f in report.findings if f.code == "duplicate-annotation-id"
                   and "sa_000001.tar" in (f.location.file or "")]
    assert duplicate.location.file.endswith(f"sa_{rows[9][0]['image']['image_id']}.json")
    assert duplicate.location.json_path == "annotations[1].id"
    assert by_code["image-size-mismatch"].location.file.endswith(".png")
    assert by_code["json-parse"].location.file.endswith("sa_000002.tar/sa_999.json")
    nan = by_code["json-nonfinite"]
    assert nan.location.file.endswith(f"sa_{rows[20][0]['image']['image_id']}.json")
    assert nan.location.json_path == "annotations[0].area"
    assert by_code["image-missing"].location.file.endswith("sa_000002.tar/sa_998.json")
    # the id of sa_998 repeats image 0's annotation ids: reported across shards
    assert sum(f.code == "duplicate-annotation-id" for f in report.findings) == 1 + len(
        rows[0][0]["annotations"])
    bucketed = validate_shards(open_shards(folder), check_images=True, scratch=tmp_path,
                               buckets=5)
    assert bucketed.as_dict() == report.as_dict()


def test_validate_cli_checks_tar_images(small_coco: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from instkit.cli import cli

    rows = sa1b_rows(small_coco)
    rows[5] = (rows[5][0], rows[5][1][:200])  # a cut PNG
    folder = write_sa1b_tars(tmp_path / "cut", rows, 12)
    plain = CliRunner().invoke(cli, ["validate", str(folder), "--format", "json"])
    assert plain.exit_code == 0 and not json.loads(plain.output)["images_checked"]
    checked = CliRunner().invoke(cli, ["validate", str(folder), "--check-images", "--format",
                                       "json", "--workers", "2"])
    assert checked.exit_code == 1
    report = json.loads(checked.output)
    assert report["images_checked"] and report["by_code"] == {"image-unreadable": 1}
    assert report["findings"][0]["location"]["file"].endswith(
        f"sa_000000.tar/sa_{rows[5][0]['image']['image_id']}.png")


def test_validate_cli_on_shards(small_shards: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from instkit.cli import cli

    runner = CliRunner()
    one = runner.invoke(cli, ["validate", str(small_shards), "--format", "json", "--workers", "1"])
    two = runner.invoke(cli, ["validate", str(small_shards), "--format", "json", "--workers", "2"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.output) == json.loads(two.output)
    assert json.loads(one.output)["counts"]["shards"] == 6
    fixed = runner.invoke(cli, ["validate", str(small_shards), "--fix", str(tmp_path / "x.json")])
    assert fixed.exit_code == 2 and "one COCO file" in fixed.output


def test_unreadable_shard_is_a_finding(small_shards: Path, tmp_path: Path) -> None:
    folder = tmp_path / "one-bad"
    folder.mkdir()
    for path in small_shards.glob("*.tar"):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "shard-000003.tar").write_bytes(io.BytesIO(b"x" * 1000).read())
    report = validate_shards(open_shards(folder), workers=2)
    bad = [f for f in report.findings if f.location.file == str(folder / "shard-000003.tar")]
    assert [f.code for f in bad] == ["shard-unreadable"] and report.exit_code == 1
    assert report.counts["images"] == 20


@pytest.mark.parametrize("engine", ["nope"])
def test_unknown_engine(small_shards: Path, engine: str) -> None:
    with pytest.raises(ValueError, match="engine must be"):
        validate_shards(open_shards(small_shards), engine=engine)

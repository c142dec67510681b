"""stats over shards: the statistics of one process over the same samples, merged per shard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from instkit.cli import cli
from instkit.errors import InstkitError
from instkit.io.coco import read_coco
from instkit.shards import open_shards, stats_shards
from instkit.stats import compute_stats
from tests.shards.conftest import sa1b_rows, split_coco, write_sa1b_tars


def test_stats_equal_one_process_over_the_file(small_coco: Path, small_shards: Path,
                                               tmp_path: Path) -> None:
    expected = compute_stats(read_coco(small_coco, strict=False)).as_dict()
    for workers in (1, 2):
        stats, problems = stats_shards(open_shards(small_shards), workers=workers)
        assert stats.as_dict() == expected and problems == []
    parts = split_coco(json.loads(small_coco.read_text()), 5)  # uneven: 5,5,5,5,4
    folder = tmp_path / "coco-parts"
    folder.mkdir()
    for k, part in enumerate(parts):
        (folder / f"p{k}.json").write_text(json.dumps(part))
    stats, _ = stats_shards(open_shards(folder), workers=2)
    assert stats.as_dict() == expected


def test_sa1b_stats_count_one_class(small_coco: Path, tmp_path: Path) -> None:
    stats, _ = stats_shards(open_shards(write_sa1b_tars(tmp_path / "t", sa1b_rows(small_coco), 10)))
    source = read_coco(small_coco)
    assert stats.num_images == 24 and stats.num_instances == source.num_annotations
    assert [row["name"] for row in stats.per_class] == ["object"]
    assert stats.mask_forms == {"rle": source.num_annotations}


def test_left_out_rows_and_annotations_are_reported(small_coco: Path, tmp_path: Path) -> None:
    parts = split_coco(json.loads(small_coco.read_text()), 2)
    parts[1]["annotations"][0]["bbox"] = "nope"
    folder = tmp_path / "p"
    folder.mkdir()
    for k, part in enumerate(parts):
        (folder / f"p{k}.json").write_text(json.dumps(part))
    stats, problems = stats_shards(open_shards(folder))
    assert stats.skipped == 1 and len(problems) == 1
    assert problems[0].location.file == str(folder / "p1.json")


def test_categories_that_disagree_are_refused(small_coco: Path, tmp_path: Path) -> None:
    parts = split_coco(json.loads(small_coco.read_text()), 2)
    parts[1]["categories"] = [dict(c, name=c["name"] + "!") for c in parts[1]["categories"]]
    folder = tmp_path / "p"
    folder.mkdir()
    for k, part in enumerate(parts):
        (folder / f"p{k}.json").write_text(json.dumps(part))
    with pytest.raises(InstkitError, match="categories differ") as info:
        stats_shards(open_shards(folder), workers=2)
    assert info.value.location.file == str(folder / "p1.json")


def test_stats_cli(small_coco: Path, small_shards: Path) -> None:
    runner = CliRunner()
    one = runner.invoke(cli, ["stats", str(small_shards), "--format", "json", "--workers", "1"])
    two = runner.invoke(cli, ["stats", str(small_shards), "--format", "json", "--workers", "2"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.output) == json.loads(two.output)
    assert json.loads(one.output)["images"] == 24 and json.loads(one.output)["shards"] == 6
    single = runner.invoke(cli, ["stats", str(small_coco), "--format", "json"])
    expected = json.loads(single.output)
    assert {k: v for k, v in json.loads(one.output).items() if k not in ("shards", "left_out")} \
        == expected

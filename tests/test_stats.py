"""instkit.stats against counts taken straight from the JSON with pycocotools."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from pycocotools.coco import COCO

from instkit.cli import cli
from instkit.io.coco import read_coco
from instkit.stats import compute_stats


def test_counts_match_pycocotools(tinycoco: dict[str, Path]) -> None:
    coco = COCO(str(tinycoco["train_json"]))
    stats = compute_stats(read_coco(tinycoco["train_json"])).as_dict()
    anns = coco.dataset["annotations"]
    assert stats["instances"] == len(anns) and stats["images"] == len(coco.imgs)
    assert stats["crowd"] == sum(a["iscrowd"] for a in anns)
    per_class = Counter(a["category_id"] for a in anns)
    assert {r["category_id"]: r["instances"] for r in stats["per_class"] if r["instances"]} == per_class
    for row in stats["per_class"]:
        assert row["images"] == len(coco.getImgIds(catIds=[row["category_id"]]))
    small = sum(a["area"] < 32**2 for a in anns)
    large = sum(a["area"] >= 96**2 for a in anns)
    assert stats["size_split"] == {"small": small, "medium": len(anns) - small - large, "large": large}
    parts = [p for a in anns if isinstance(a["segmentation"], list) for p in a["segmentation"]]
    assert stats["polygon_vertices"]["parts"] == len(parts)
    assert stats["polygon_vertices"]["max"] == max(len(p) // 2 for p in parts)
    per_image = Counter(a["image_id"] for a in anns)
    assert stats["instances_per_image"]["max"] == max(per_image.values())
    assert stats["images_without_instances"] == len(coco.imgs) - len(per_image)


def test_cli_table_json_and_plot(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["stats", str(tinycoco["val_json"]), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["instances"] == 136
    png = tmp_path / "stats.png"
    result = runner.invoke(cli, ["stats", str(tinycoco["val_json"]), "--plot", str(png)])
    assert result.exit_code == 0 and "person" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(png).size[0] >= 800


def test_cli_reads_any_registered_format(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    from instkit.io import registry

    dataset = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    registry.save(dataset, tmp_path / "yolo", format="yolo")
    result = CliRunner().invoke(cli, ["stats", str(tmp_path / "yolo"), "--format", "json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["images"] == len(dataset)
    assert stats["instances"] == dataset.num_annotations

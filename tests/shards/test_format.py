"""instkit's shard format: what convert --to shards writes, and reading tar shards."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from instkit.errors import InstkitError
from instkit.io.coco import read_coco
from instkit.shards import (
    ShardError,
    convert_shards,
    convert_to_shards,
    iter_tar,
    looks_sharded,
    open_shards,
)
from tests.shards.conftest import add_member


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_manifest_counts_and_members(small_coco: Path, small_shards: Path) -> None:
    manifest = json.loads((small_shards / "manifest.json").read_text())
    source = read_coco(small_coco)
    assert manifest["format"] == "instkit-shards" and manifest["version"] == 1
    assert [s["samples"] for s in manifest["shards"]] == [4] * 6
    assert manifest["samples"] == len(source) == 24
    assert manifest["annotations"] == source.num_annotations
    assert manifest["categories"] == source.categories.to_coco()
    first = manifest["shards"][0]
    data = (small_shards / first["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == first["sha256"] and len(data) == first["bytes"]
    records = list(iter_tar(str(small_shards / first["path"])))
    assert [r.key for r in records] == ["000000", "000001", "000002", "000003"]
    row = json.loads(records[0].members[".json"][1])
    assert row["image"]["id"] == source[0].image_id
    # the image file's own bytes, not a re-encoding
    assert records[0].members[".png"][1] == Path(source[0].image_path or "").read_bytes()
    assert not [p for p in small_shards.iterdir() if p.name.startswith(".")]


def test_shards_to_coco_round_trip(small_coco: Path, small_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "back" / "annotations.json"
    counts = convert_shards(open_shards(small_shards), out, "coco", workers=2)
    assert counts == {"shards_read": 6, "images": 24,
                      "objects": read_coco(small_coco).num_annotations}
    before, after = read_coco(small_coco), read_coco(out, out.parent / "images")
    assert list(before.image_ids) == list(after.image_ids)
    for a, b in zip(before, after):
        assert a.meta.file_name == b.meta.file_name
        np.testing.assert_array_equal(a.instances.ids, b.instances.ids)
        np.testing.assert_array_equal(a.instances.boxes, b.instances.boxes)
        assert a.instances.masks is not None and b.instances.masks is not None
        assert a.instances.masks.rle_counts() == b.instances.masks.rle_counts()
        np.testing.assert_array_equal(a.image, b.image)


def test_same_bytes_with_one_or_two_workers(small_coco: Path, small_shards: Path,
                                            tmp_path: Path) -> None:
    opener = functools.partial(read_coco, small_coco)
    two = tmp_path / "two"
    convert_to_shards(small_coco, "coco", two, shard_size=4, opener=opener, engine="local",
                      workers=2, address=None, progress=False)
    assert _digests(two) == _digests(small_shards)
    # re-sharding a shard set: the same files whatever the number of workers
    one_r, two_r = tmp_path / "r1", tmp_path / "r2"
    convert_shards(open_shards(small_shards), one_r, "shards", shard_size=3, workers=1)
    convert_shards(open_shards(small_shards), two_r, "shards", shard_size=3, workers=2)
    assert _digests(one_r) == _digests(two_r)
    assert json.loads((one_r / "manifest.json").read_text())["samples"] == 24


def test_a_failed_conversion_leaves_nothing(small_coco: Path, tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(small_coco.parent, copy)
    document = json.loads((copy / "annotations.json").read_text())
    (copy / document["images"][13]["file_name"]).unlink()  # the 14th image is gone
    out = tmp_path / "out"
    opener = functools.partial(read_coco, copy / "annotations.json")
    with pytest.raises(InstkitError, match="not found"):
        convert_to_shards(copy / "annotations.json", "coco", out, shard_size=4, opener=opener,
                          engine="local", workers=2, address=None, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_tar_reading_errors_name_the_shard(tmp_path: Path, small_shards: Path) -> None:
    whole = (small_shards / "shard-000000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ShardError, match="truncated or corrupt") as info:
        list(iter_tar(str(cut)))
    assert info.value.location.file == str(cut)
    scattered = tmp_path / "scattered.tar"
    with tarfile.open(scattered, "w") as archive:
        add_member(archive, "a.json", b"{}")
        add_member(archive, "b.json", b"{}")
        add_member(archive, "a.png", b"x")
    with pytest.raises(ShardError, match="must be consecutive"):
        list(iter_tar(str(scattered)))
    not_tar = tmp_path / "x.tar"
    not_tar.write_bytes(b"hello" * 200)
    with pytest.raises(ShardError, match="tar"):
        list(iter_tar(str(not_tar)))


def test_open_shards_kinds(small_coco: Path, small_shards: Path, sa1b_dir: Path,
                           tmp_path: Path) -> None:
    assert open_shards(small_shards).kind == "instkit"
    assert open_shards(small_shards / "manifest.json").num_samples == 24
    tars = open_shards(sa1b_dir)
    assert tars.kind == "tar" and len(tars) == 3 and tars.num_samples is None
    assert open_shards(str(sa1b_dir / "*.tar")).kind == "tar"
    assert looks_sharded(small_shards) and looks_sharded(sa1b_dir)
    assert not looks_sharded(small_coco) and not looks_sharded(small_coco.parent)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(sa1b_dir / "sa_000000.tar", mixed)
    shutil.copy(small_coco, mixed)
    with pytest.raises(ShardError, match="not a mix"):
        open_shards(mixed)
    manifest = json.loads((small_shards / "manifest.json").read_text())
    manifest["shards"][0]["path"] = "../elsewhere.tar"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="inside its folder"):
        open_shards(bad)


def test_fsspec_url(small_shards: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in small_shards.iterdir():
        fs.pipe(f"/fmt-test/{path.name}", path.read_bytes())
    shards = open_shards("memory://fmt-test")
    assert shards.kind == "instkit" and shards.shards[0].path.startswith("memory://")
    records = list(iter_tar(shards.shards[1].path))
    assert len(records) == 4
    assert io.BytesIO(records[0].members[".json"][1]).read().startswith(b"{")
    tars = open_shards("memory://fmt-test/shard-*.tar")  # a glob of tars: no manifest needed
    assert tars.kind == "tar" and len(tars) == 6 and tars.root == "memory://fmt-test/shard-*.tar"
    with pytest.raises(ShardError, match="no shards match"):
        open_shards("memory://fmt-test/nothing-*.tar")
    with pytest.raises(ShardError, match="no manifest here"):
        open_shards("memory://no-such-folder")


def test_convert_cli(small_coco: Path, small_shards: Path, sa1b_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from instkit.cli import cli

    runner = CliRunner()
    out = tmp_path / "cli-shards"
    result = runner.invoke(cli, ["convert", str(small_coco), str(out), "--to", "shards",
                                 "--shard-size", "4", "--workers", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"] == {"images": 24, "objects": read_coco(
        small_coco).num_annotations, "shards": 6}
    assert _digests(out) == _digests(small_shards)
    coco = tmp_path / "from-sa1b" / "all.json"
    result = runner.invoke(cli, ["convert", str(sa1b_dir), str(coco), "--to", "coco",
                                 "--workers", "2"])
    assert result.exit_code == 0, result.output
    back = read_coco(coco, coco.parent / "images")
    assert len(back) == 24 and [c.name for c in back.categories] == ["object"]
    assert back[0].instances.extras["coco_fields"][0]["predicted_iou"] == 0.9
    again = runner.invoke(cli, ["convert", str(small_shards), str(tmp_path / "y"), "--to", "yolo"])
    assert again.exit_code == 2 and "coco or shards" in again.output


def test_sa1b_read_by_its_reader_to_shards_keeps_image_bytes(small_coco: Path,
                                                             tmp_path: Path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from instkit.cli import cli
    from tests.shards.conftest import sa1b_rows, write_sa1b_tars

    rows = []
    for row, data in sa1b_rows(small_coco):  # PNGs that a re-encoding would not reproduce
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, format="PNG", compress_level=1)
        rows.append((row, buffer.getvalue()))
    folder = write_sa1b_tars(tmp_path / "fast-png", rows, 10)
    out = tmp_path / "from-reader"
    result = CliRunner().invoke(cli, ["convert", str(folder), str(out), "--to", "shards",
                                      "--from", "sa1b", "--shard-size", "10"])
    assert result.exit_code == 0, result.output
    originals = {row["image"]["image_id"]: data for row, data in rows}
    written = [r for tar in sorted(out.glob("*.tar")) for r in iter_tar(str(tar))]
    assert len(written) == 24
    for record in written:
        image_id = json.loads(record.members[".json"][1])["image"]["id"]
        assert record.members[".png"][1] == originals[image_id]  # copied, not re-encoded


def test_jpeg_files_are_copied_as_they_are(tinycoco: dict[str, Path], tmp_path: Path) -> None:
    opener = functools.partial(read_coco, tinycoco["val_json"], tinycoco["val_images"])
    out = tmp_path / "val"
    convert_to_shards(tinycoco["val_json"], "coco", out, shard_size=4, opener=opener,
                      engine="local", workers=1, address=None, progress=False)
    records = [r for tar in sorted(out.glob("*.tar")) for r in iter_tar(str(tar))]
    assert len(records) == len(opener())
    for record in records:
        name = json.loads(record.members[".json"][1])["image"]["file_name"]
        assert record.members[".jpg"][1] == (tinycoco["val_images"] / name).read_bytes()

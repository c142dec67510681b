"""The Ray engine on a local Ray instance with 2 workers: the same report, statistics and files
as one local process. One Ray instance for the module (it takes seconds to start)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from instkit.shards import convert_shards, open_shards, stats_shards, validate_shards
from tests.shards.conftest import split_coco

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_ray_gives_what_one_process_gives(local_ray: None, small_coco: Path, small_shards: Path,
                                          tmp_path: Path) -> None:
    parts = split_coco(json.loads(small_coco.read_text()), 3)
    parts[2]["images"][0]["id"] = parts[0]["images"][0]["id"]  # found only by the reduce
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, part in enumerate(parts):
        (folder / f"p{k}.json").write_text(json.dumps(part))
    local = validate_shards(open_shards(folder), engine="local", workers=1)
    on_ray = validate_shards(open_shards(folder), engine="ray", workers=2)
    assert on_ray.as_dict() == local.as_dict()
    bucketed = validate_shards(open_shards(folder), engine="ray", workers=2, scratch=tmp_path,
                               buckets=2)
    assert bucketed.as_dict() == local.as_dict()
    assert "duplicate-image-id" in on_ray.codes()

    stats_local, _ = stats_shards(open_shards(small_shards), engine="local", workers=1)
    stats_ray, _ = stats_shards(open_shards(small_shards), engine="ray", workers=2)
    assert stats_ray.as_dict() == stats_local.as_dict()

    one, two = tmp_path / "one", tmp_path / "two"
    convert_shards(open_shards(small_shards), one, "shards", shard_size=3, workers=1)
    convert_shards(open_shards(small_shards), two, "shards", shard_size=3, engine="ray", workers=2)
    assert _digests(two) == _digests(one)
    # a single COCO file written as shards by Ray tasks: the same bytes as one process wrote
    from instkit.cli.commands.convert import read_any
    from instkit.shards import convert_to_shards

    from_file = tmp_path / "from-file"
    convert_to_shards(small_coco, "coco", from_file, shard_size=4, engine="ray", workers=2,
                      opener=functools.partial(read_any, small_coco, "coco", None),
                      address=None, progress=False)
    assert _digests(from_file) == _digests(small_shards)
    assert ray.is_initialized()  # a Ray instance it did not start is left running


def test_a_task_error_comes_back_as_itself(local_ray: None, small_shards: Path,
                                           tmp_path: Path) -> None:
    from instkit.errors import InstkitError

    folder = tmp_path / "bad"
    folder.mkdir()
    for path in small_shards.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "shard-000004.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(InstkitError, match="tar") as info:
        stats_shards(open_shards(folder), engine="ray", workers=2)
    assert info.value.location.file == str(folder / "shard-000004.tar")

"""StreamingDataset: every sample once per epoch across ranks x workers, deterministic
reshuffles, mid-epoch resume, fsspec URLs, InstanceDataset's transforms, instkit's Collator."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from instkit.data.dataset import derive_seed  # noqa: E402
from instkit.data.streaming import StreamingDataset  # noqa: E402
from instkit.errors import InstkitError  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402
from tests.shards.conftest import add_member  # noqa: E402


def _ids(batch: list[Any]) -> list[int]:
    return [int(s.image_id) for s in batch]


def _loader(dataset: StreamingDataset, workers: int, batch_size: int = 3) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_ids)


def _epoch(dataset: StreamingDataset, workers: int) -> list[int]:
    return [i for batch in _loader(dataset, workers) for i in batch]


def test_two_ranks_two_workers_read_every_sample_once(small_coco: Path,
                                                      small_shards: Path) -> None:
    everything = sorted(int(i) for i in read_coco(small_coco).image_ids)
    per_rank = []
    for rank in range(2):
        dataset = StreamingDataset(small_shards, rank=rank, world_size=2, shuffle_buffer=5, seed=3)
        per_rank.append(_epoch(dataset, workers=2))
    assert sorted(per_rank[0] + per_rank[1]) == everything
    assert not set(per_rank[0]) & set(per_rank[1])
    assert [len(p) for p in per_rank] == StreamingDataset(
        small_shards, rank=0, world_size=2, seed=3).samples_per_rank(num_workers=2)
    # the next epoch: a different split and order, still every sample once
    next_epoch = []
    for rank in range(2):
        dataset = StreamingDataset(small_shards, rank=rank, world_size=2, shuffle_buffer=5, seed=3)
        dataset.set_epoch(1)
        next_epoch += _epoch(dataset, workers=2)
    assert sorted(next_epoch) == everything and next_epoch != per_rank[0] + per_rank[1]


def test_set_epoch_reshuffles_deterministically(small_shards: Path) -> None:
    def order(epoch: int, seed: int = 0) -> list[int]:
        dataset = StreamingDataset(small_shards, shuffle_buffer=6, seed=seed)
        dataset.set_epoch(epoch)
        return [int(s.image_id) for s in dataset]

    assert order(0) == order(0) and order(4) == order(4)
    assert order(0) != order(1) and sorted(order(0)) == sorted(order(1))
    assert order(0, seed=1) != order(0)
    plain = StreamingDataset(small_shards, shuffle=False)
    assert [int(s.image_id) for s in plain] == sorted(order(0), key=[
        int(s.image_id) for s in plain].index)


def test_resume_in_process_continues_the_same_order(small_shards: Path) -> None:
    full = [int(s.image_id) for s in StreamingDataset(small_shards, shuffle_buffer=5, seed=2)]
    dataset = StreamingDataset(small_shards, shuffle_buffer=5, seed=2)
    iterator = iter(dataset)
    first = [int(next(iterator).image_id) for _ in range(10)]
    state = dataset.state_dict()
    assert state["consumed"] == [10]
    resumed = StreamingDataset(small_shards, shuffle_buffer=5, seed=2)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # it survives JSON
    rest = [int(s.image_id) for s in resumed]
    assert first + rest == full


@pytest.fixture(scope="module")
def uneven_shards(small_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 5 (5, 5, 5, 5, 4): two workers get 3 and 2 shards, one runs dry first."""
    import functools

    from instkit.shards import convert_to_shards

    out = tmp_path_factory.mktemp("uneven") / "set"
    convert_to_shards(small_coco, "coco", out, shard_size=5,
                      opener=functools.partial(read_coco, small_coco), engine="local",
                      workers=1, address=None, progress=False)
    return out


@pytest.mark.parametrize("batches", [1, 7, 12])  # 12: after one worker ran dry
def test_resume_through_a_loader_with_workers(uneven_shards: Path, batches: int) -> None:
    def make() -> StreamingDataset:
        return StreamingDataset(uneven_shards, shuffle_buffer=3, seed=5)

    full = _epoch(make(), workers=2)
    dataset = make()
    iterator = iter(_loader(dataset, workers=2, batch_size=2))
    first = [i for _ in range(batches) for i in next(iterator)]
    del iterator
    state = dataset.state_dict(batches=batches, batch_size=2, num_workers=2)
    assert sum(state["consumed"]) == len(first)
    resumed = make()
    resumed.load_state_dict(state)
    rest = _epoch(resumed, workers=2)
    assert Counter(first + rest) == Counter(full) and len(first + rest) == len(full) == 24
    # a state for another layout is refused rather than losing or repeating samples
    other = make()
    other.load_state_dict(state)
    with pytest.raises(InstkitError, match="dealt differently"):
        list(other)


def test_resume_through_two_ranks(small_shards: Path) -> None:
    def make(rank: int) -> StreamingDataset:
        return StreamingDataset(small_shards, rank=rank, world_size=2, shuffle_buffer=3, seed=5)

    seen: list[int] = []
    for rank in range(2):
        dataset = make(rank)
        iterator = iter(_loader(dataset, workers=2))
        seen += next(iterator)
        del iterator
        resumed = make(rank)
        resumed.load_state_dict(dataset.state_dict(batches=1, batch_size=3, num_workers=2))
        seen += _epoch(resumed, workers=2)
    assert sorted(seen) == sorted(_epoch(make(0), 2) + _epoch(make(1), 2))
    assert len(set(seen)) == len(seen) == 24


def test_an_fsspec_url_in_loader_workers(small_coco: Path, small_shards: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in small_shards.iterdir():
        fs.pipe(f"/stream-test/{path.name}", path.read_bytes())
    dataset = StreamingDataset("memory://stream-test", shuffle_buffer=4)
    assert sorted(_epoch(dataset, workers=2)) == sorted(int(i) for i in read_coco(small_coco).image_ids)


def test_transforms_as_instance_dataset_and_collator(small_coco: Path, small_shards: Path) -> None:
    pytest.importorskip("albumentations")
    from instkit.data import Collator
    from instkit.transforms.presets import train_default

    transform = train_default(size=(48, 48))
    source = read_coco(small_coco)
    in_order = StreamingDataset(small_shards, transform=transform, shuffle=False, seed=7)
    streamed = list(in_order)
    for k in (0, 5, 23):  # shard k // 4, position k % 4
        expected = transform(source[k], seed=derive_seed(7, 0, ((k // 4) << 32) | (k % 4)))
        np.testing.assert_array_equal(streamed[k].image, expected.image)
        np.testing.assert_array_equal(streamed[k].instances.boxes, expected.instances.boxes)
    # the augmentation of a sample does not depend on the worker that read it
    shuffled = StreamingDataset(small_shards, transform=transform, shuffle_buffer=4, seed=7)
    by_worker = DataLoader(shuffled, batch_size=4, num_workers=2, collate_fn=lambda b: b)
    seen = {int(s.image_id): s for batch in by_worker for s in batch}
    for sample in streamed:
        np.testing.assert_array_equal(seen[int(sample.image_id)].image, sample.image)
    batch = Collator("maskrcnn")(streamed[:4])
    assert batch.info.image_ids == [int(s.image_id) for s in streamed[:4]]


def test_a_broken_row_names_its_member(small_shards: Path, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for path in small_shards.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    with tarfile.open(small_shards / "shard-000001.tar") as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive]  # type: ignore[union-attr]
    row = json.loads(members[1][1])
    row["annotations"][0]["bbox"] = [0, 0, -3, 4]
    members[1] = (members[1][0], json.dumps(row).encode())
    with tarfile.open(folder / "shard-000001.tar", "w") as archive:
        for name, data in members:
            add_member(archive, name, data)
    with pytest.raises(InstkitError, match="bbox") as info:
        list(StreamingDataset(folder, shuffle=False))
    assert info.value.location.file == f"{folder}/shard-000001.tar/000000.json"
    assert info.value.location.json_path == "annotations[0].bbox"


def test_sa1b_tars_stream(small_coco: Path, sa1b_dir: Path) -> None:
    samples = list(StreamingDataset(sa1b_dir, shuffle=False))
    source = read_coco(small_coco)
    assert [s.image_id for s in samples] == [int(i) for i in source.image_ids]
    assert samples[0].meta.categories is not None and samples[0].meta.categories[0].name == "object"
    np.testing.assert_array_equal(samples[3].image, source[3].image)
    with pytest.raises(InstkitError, match="per-shard sample counts"):
        StreamingDataset(sa1b_dir).state_dict(batches=1, batch_size=2, num_workers=2)


def test_sa1b_rows_read_as_instkit_io_sa1b_reads_them(sa1b_dir: Path) -> None:
    from instkit.io.sa1b import read_sa1b

    theirs = {int(s.image_id): s for s in read_sa1b(sa1b_dir)}
    mine = list(StreamingDataset(sa1b_dir, shuffle=False))
    assert sorted(theirs) == sorted(int(s.image_id) for s in mine)
    for sample in mine:
        other = theirs[int(sample.image_id)]
        a, b = sample.instances, other.instances
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert a.masks is not None and b.masks is not None
        assert a.masks.rle_counts() == b.masks.rle_counts()
        assert a.extras["coco_fields"][0]["predicted_iou"] == b.extras["coco_fields"][0][
            "predicted_iou"]
        np.testing.assert_array_equal(sample.image, other.image)

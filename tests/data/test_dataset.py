"""InstanceDataset with real DataLoaders: workers, persistent workers, DistributedSampler,
seeded transforms, mixing-transform pools and Hugging Face sources."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

from instkit.data import Collator, InstanceDataset, buffers, derive_seed, hf_transform  # noqa: E402
from instkit.io.coco import read_coco  # noqa: E402
from instkit.sample import Sample  # noqa: E402
from instkit.synthetic import make_samples  # noqa: E402


class FlipBySeed:
    """A seeded transform: horizontal flip iff the seed is odd (records the seed it saw)."""

    def __call__(self, sample: Sample, *, seed: int | None = None) -> Sample:
        out = sample
        if seed is not None and seed % 2:
            inst = sample.instances
            masks = inst.masks
            from instkit.masks import Masks

            dense = masks.to_dense()[:, :, ::-1] if masks is not None else None
            w = sample.image_size[1]
            boxes = inst.boxes.copy()
            boxes[:, [0, 2]] = w - inst.boxes[:, [2, 0]]
            out = sample.replace(
                image=np.ascontiguousarray(sample.image[:, ::-1]),
                instances=inst.replace(boxes=boxes, masks=None if dense is None
                                       else Masks.from_dense(dense)),
            )
        out.meta.extra["seed"] = seed
        return out


class PoolUser:
    needs_pool = True

    def __init__(self, pool: Sequence[Sample] | None = None) -> None:
        self.pool = pool

    def with_pool(self, pool: Sequence[Sample]) -> PoolUser:
        return PoolUser(pool)

    def __call__(self, sample: Sample, *, seed: int | None = None) -> Sample:
        if self.pool is None:
            raise RuntimeError("not bound to a pool")
        partner = self.pool[(seed or 0) % len(self.pool)]
        out = sample.replace()
        out.meta.extra["partner"] = partner.image_id
        return out


def test_coco_dataset_with_two_persistent_workers(tinycoco: dict[str, Path]) -> None:
    coco = read_coco(tinycoco["val_json"], tinycoco["val_images"])
    dataset = InstanceDataset(coco, FlipBySeed(), seed=3)
    collator = Collator("maskrcnn")
    loader = DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=True,
                        collate_fn=collator.pack, pin_memory=torch.cuda.is_available())
    seen: dict[int, list[int]] = {}
    for epoch in range(2):
        dataset.set_epoch(epoch)
        ids = []
        for packed in loader:
            images, targets = collator.finish(packed)
            assert len(images) == len(targets) == packed.batch_size
            ids += [int(t["image_id"]) for t in targets]
        seen[epoch] = ids
    assert seen[0] == seen[1] == [int(i) for i in coco.image_ids]
    # Workers saw the epoch: every sample's seed is derived from (seed, epoch, index).
    direct = [dataset[i] for i in range(len(dataset))]
    assert [s.meta.extra["seed"] for s in direct] == [derive_seed(3, 1, i) for i in range(len(coco))]


def test_transform_seeds_do_not_depend_on_workers() -> None:
    samples = make_samples(num_images=6, seed=2, image_size=(48, 48))
    dataset = InstanceDataset(samples, FlipBySeed(), seed=11)
    collator = Collator("instances", mask_stride=1)

    def run(workers: int) -> list[Any]:
        loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collator)
        return [b.masks for b in loader]

    single, double = run(0), run(2)
    for a, b in zip(single, double, strict=True):
        assert torch.equal(a, b)
    dataset.set_epoch(1)
    changed = run(0)
    assert any(not torch.equal(a, b) for a, b in zip(single, changed, strict=True))


def test_distributed_sampler_splits_the_data() -> None:
    samples = make_samples(num_images=7, seed=1, image_size=(32, 32))
    dataset = InstanceDataset(samples)
    collator = Collator("rfdetr")
    covered = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=2,
                            collate_fn=collator)
        for batch in loader:
            covered += batch.info.image_ids
    assert sorted(set(covered)) == sorted(s.image_id for s in samples)
    assert len(covered) == 8  # DistributedSampler pads 7 to 2 x 4


def test_mixing_transforms_get_the_source_as_pool() -> None:
    samples = make_samples(num_images=4, seed=5, image_size=(32, 32))
    dataset = InstanceDataset(samples, PoolUser())
    assert dataset.transform.pool is samples
    partners = {dataset[i].meta.extra["partner"] for i in range(4)}
    assert partners <= {s.image_id for s in samples}


def test_real_transform_preset_through_a_loader() -> None:
    presets = pytest.importorskip("instkit.transforms.presets")
    samples = make_samples(num_images=4, seed=7, image_size=(64, 80))
    dataset = InstanceDataset(samples, presets.train_default(size=(64, 64)), seed=1)
    first = [dataset[i] for i in range(4)]
    again = [dataset[i] for i in range(4)]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image)
        assert a.instances == b.instances
    batch = Collator("rfdetr")(first)
    assert batch["pixel_values"].shape[-2:] == (64, 64)


def test_hugging_face_sources(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from instkit.io.hf import read_hf, write_hf
    from instkit.synthetic import categories

    samples = make_samples(num_images=3, seed=9, image_size=(40, 48))
    write_hf(samples, tmp_path / "hf", categories())
    raw = datasets.load_from_disk(str(tmp_path / "hf"))
    dataset = InstanceDataset(raw, categories=categories())
    assert len(dataset) == 3
    reference = Collator("maskrcnn")(samples)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=Collator("maskrcnn"))
    (images, targets), = list(loader)
    for mine, theirs in zip(targets, reference.targets, strict=True):
        assert int(mine["image_id"]) == int(theirs["image_id"])
        assert torch.equal(mine["labels"], theirs["labels"])
        assert torch.equal(mine["masks"], theirs["masks"])
    # The same rows through with_transform
    lazy = raw.with_transform(hf_transform(categories=read_hf(raw, categories=categories())
                                           .categories))
    batch = Collator("maskrcnn")([lazy[i] for i in range(3)])
    assert batch.info.image_ids == [s.image_id for s in samples]
    for mine, theirs in zip(batch.targets, reference.targets, strict=True):
        assert torch.equal(mine["masks"], theirs["masks"])


def test_bad_sources_and_transforms() -> None:
    with pytest.raises(TypeError, match="InstanceDataset needs"):
        InstanceDataset(42)
    dataset = InstanceDataset(make_samples(num_images=1, seed=0), lambda s: "oops")
    with pytest.raises(ValueError, match="not a Sample.*sample index 0"):
        dataset[0]


def test_workers_pack_into_shared_memory_and_deferred_batches_cross_as_packed() -> None:
    samples = make_samples(num_images=4, seed=4, image_size=(48, 40), crowd_probability=0.0)
    dataset = InstanceDataset(samples)
    collator = Collator("maskrcnn")
    packed = list(DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collator.pack))
    # written in the worker's shared-memory segments (instkit.data.buffers): nothing copied to send
    assert all(isinstance(p.segment, buffers.Received) for p in packed)
    assert len({p.segment for p in packed}) == len(packed)  # both held here: never one segment
    here = collator.pack(samples[:2])  # not in a worker: plain memory
    assert here.segment is None and not here.buffer.is_shared()
    deferred = Collator("maskrcnn", defer_images=True)
    crossed = list(DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=deferred))
    for k, (p, d) in enumerate(zip(packed, crossed, strict=True)):
        assert d.pending is not None and d.pending.region.is_shared()
        now = collator(samples[2 * k : 2 * k + 2])
        for a, b in zip(collator.finish(p).targets + d.to("cpu").targets, now.targets * 2,
                        strict=True):
            assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["boxes"], b["boxes"])

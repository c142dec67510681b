"""``StreamingDataset``: an ``IterableDataset`` of ``Sample``s read from tar shards in sequence.

    dataset = StreamingDataset("s3://bucket/coco-shards", transform=train_default(), seed=0)
    loader = DataLoader(dataset, batch_size=16, num_workers=4, collate_fn=collator.pack)
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for packed in loader: ...

Source: a shard folder written by ``instkit convert --to shards`` (its ``manifest.json``, local
or any fsspec URL: ``pip install 'instkit[shards]'``), a folder of SA-1B-style tars, or a
``ShardSet``. Shards are read front to back as streams (no seeking, so object stores work), and
each image is decoded only when its sample is handed out.

Splitting: in each epoch the shards are permuted (``seed``, ``epoch``) and dealt to the
``world_size x num_workers`` readers: rank ``r``'s DataLoader worker ``w`` reads shards
``order[r * num_workers + w :: world_size * num_workers]``. Every sample is read exactly once
per epoch, by one reader. Ranks and workers get whole shards, so with fewer shards than readers
some readers idle, and ranks can differ by up to one shard's samples (write more, smaller
shards than ``world_size * num_workers``; ``samples_per_rank`` tells the counts).

Shuffling: a buffer of ``shuffle_buffer`` samples per reader (seeded by ``seed``, ``epoch``,
rank and worker), as webdataset does; ``set_epoch`` reshuffles deterministically (it reaches
persistent workers through shared memory, as ``InstanceDataset``'s does).

Transforms are applied as ``InstanceDataset`` applies them: a transform that takes ``seed=`` gets
``derive_seed(seed, epoch, index)``, where ``index`` names the sample by shard and position, so
its augmentation does not depend on which worker read it.

Resuming mid-epoch: ``state_dict()`` records, per reader of this rank, how many samples of its
stream were consumed; ``load_state_dict`` makes the next iteration of that epoch skip them (the
stream is regenerated, so the skipped samples are read but not decoded). Iterated in the main
process (``num_workers=0``) the dataset counts itself; through a DataLoader with workers, pass
what the loop consumed: ``state_dict(batches=n, batch_size=b, num_workers=w)`` (the DataLoader
takes batches from its workers in turn, each worker batching its own stream, and the manifest's
per-shard counts say when a worker runs dry, so the per-reader counts follow exactly; keep
``drop_last=False``). Create the DataLoader after ``load_state_dict``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from instkit.data.dataset import _accepts_seed, apply_transform, derive_seed
from instkit.errors import InstkitError, Location, require
from instkit.sample import Sample
from instkit.shards.dataset import (
    SA1B_CATEGORY,
    ShardSet,
    coco_row,
    iter_tar,
    open_shards,
    parse_row,
)

if TYPE_CHECKING:
    import torch
else:  # at run time, a clear error naming the extra when torch is missing
    torch = require("torch", "torch")

_Raw = tuple[int, int, str, bytes, str | None, bytes | None]  # shard, position, member, row, image


def row_sample(row: dict[str, Any], table: list[dict[str, Any]], where: str,
               image: bytes | None, *, sa1b: bool = False) -> Sample:
    """One shard row (and its image bytes) as a ``Sample``, checked as ``read_coco`` checks a
    file (strict): a broken row is an error naming its tar member."""
    from instkit.io.coco import CocoDataset
    from instkit.shards.jobs import relocate_row_error

    if sa1b:
        row = coco_row(row)
    document = {"images": [row["image"]], "annotations": row.get("annotations") or [],
                "categories": table}
    try:
        sample = CocoDataset(document, file=where, strict=True)[0]
    except InstkitError as exc:
        raise relocate_row_error(exc, where, len(document["annotations"])) from None
    if image is None:
        raise InstkitError("the sample has no image member", Location(file=where))
    from instkit.io.sa1b import decode_image  # one decoder of image bytes (EXIF, pixel limit)

    array, notes = decode_image(image, where)
    sample.meta.notes.extend(notes)
    return sample.replace(image=array)


class StreamingDataset(torch.utils.data.IterableDataset):
    """Samples streamed from tar shards; see the module docstring.

    ``source``: shard folder / manifest / URL, or a ``ShardSet``. ``transform``: as for
    ``InstanceDataset``. ``shuffle``: permute shards per epoch and shuffle through a buffer of
    ``shuffle_buffer`` samples (``False``: manifest order). ``rank`` / ``world_size``: this
    process's place in distributed training (default: ``torch.distributed`` when initialised,
    else 0 / 1; pass them to simulate ranks)."""

    def __init__(self, source: Any, transform: Callable[..., Sample] | None = None, *,
                 seed: int = 0, shuffle: bool = True, shuffle_buffer: int = 1000,
                 rank: int | None = None, world_size: int | None = None) -> None:
        shards = source if isinstance(source, ShardSet) else open_shards(source)
        if shards.kind == "coco":
            raise InstkitError("StreamingDataset reads tar shards; write COCO files as shards "
                               "first (instkit convert FILE --to shards OUT)",
                               Location(file=shards.root))
        if transform is not None and getattr(transform, "needs_pool", False):
            raise TypeError("a mixing transform (needs_pool) draws partners at random from the "
                            "whole dataset; use InstanceDataset for it")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.shards = shards
        self.table = list(shards.categories) if shards.categories is not None \
            else [dict(SA1B_CATEGORY)]
        self.transform = transform
        self._seeded = transform is not None and _accepts_seed(transform)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = int(shuffle_buffer)
        self._rank, self._world_size = rank, world_size
        if (rank is None) != (world_size is None):
            raise ValueError("pass rank and world_size together")
        if world_size is not None and not 0 <= int(rank or 0) < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._resume: dict[str, Any] | None = None
        self._consumed: list[int] = [0]  # main-process iteration only (num_workers=0)

    # --- placement ---------------------------------------------------------------------------

    @property
    def categories(self) -> Any:
        from instkit.categories import Categories

        return Categories.from_coco(self.table)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (deterministically); a resume state of another epoch is dropped."""
        self._epoch[0] = int(epoch)
        if self._resume is not None and self._resume["epoch"] != int(epoch):
            self._resume = None

    def rank_and_world(self) -> tuple[int, int]:
        if self._world_size is not None:
            return int(self._rank or 0), int(self._world_size)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def shard_order(self, epoch: int) -> np.ndarray:
        """The shards of ``epoch`` in the order they are dealt to readers."""
        n = len(self.shards)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def reader_shards(self, epoch: int, rank: int, world_size: int, worker: int,
                      num_workers: int) -> list[int]:
        """The shards that worker ``worker`` of rank ``rank`` reads in ``epoch``."""
        readers = world_size * max(1, num_workers)
        return [int(s) for s in self.shard_order(epoch)[rank * max(1, num_workers) + worker::readers]]

    def samples_per_rank(self, num_workers: int = 0, epoch: int | None = None) -> list[int]:
        """Samples each rank reads in ``epoch`` (needs the manifest's counts)."""
        _, world = self.rank_and_world()
        epoch = self.epoch if epoch is None else epoch
        return [sum(self._worker_lengths(epoch, r, world, num_workers)) for r in range(world)]

    def _worker_lengths(self, epoch: int, rank: int, world: int, num_workers: int) -> list[int]:
        lengths = []
        for worker in range(max(1, num_workers)):
            counts = [self.shards.shards[s].samples
                      for s in self.reader_shards(epoch, rank, world, worker, num_workers)]
            if any(c is None for c in counts):
                raise InstkitError("the shard set has no per-shard sample counts (only instkit's "
                                   "manifest has them): resume through a DataLoader with "
                                   "workers needs them", Location(file=self.shards.root))
            lengths.append(sum(c for c in counts if c is not None))
        return lengths

    # --- reading -------------------------------------------------------------------------------

    def _raw(self, shard_ids: list[int]) -> Iterator[_Raw]:
        for shard in shard_ids:
            path = self.shards.shards[shard].path
            for position, record in enumerate(iter_tar(path)):
                row = record.row_member()
                if row is None:
                    raise InstkitError(f"sample {record.key!r} has no .json row",
                                       Location(file=path))
                image = record.image_member()
                yield (shard, position, row[0], row[1], image[0] if image else None,
                       image[1] if image else None)

    def _shuffled(self, items: Iterator[_Raw], rng: np.random.Generator) -> Iterator[_Raw]:
        if not self.shuffle or self.shuffle_buffer == 1:
            yield from items
            return
        buffer: list[_Raw] = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            k = int(rng.integers(len(buffer)))
            yield buffer[k]
            buffer[k] = item
        for k in rng.permutation(len(buffer)):
            yield buffer[int(k)]

    def _sample(self, raw: _Raw, epoch: int) -> Sample:
        shard, position, member, row_bytes, _, image = raw
        where = f"{self.shards.shards[shard].path}/{member}"
        row = parse_row(row_bytes, where)
        sample = row_sample(row, self.table, where, image, sa1b=self.shards.kind == "tar")
        if self.transform is None:
            return sample
        index = (shard << 32) | position  # names the sample, whoever reads it
        seed = derive_seed(self.seed, epoch, index) if self._seeded else None
        return apply_transform(self.transform, sample, seed,
                               Location(file=where, image_id=sample.image_id))

    def __iter__(self) -> Iterator[Sample]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 0)
        rank, world = self.rank_and_world()
        epoch = self.epoch
        shard_ids = self.reader_shards(epoch, rank, world, worker, num_workers)
        if len(self.shards) < world * max(1, num_workers) and worker == 0 and rank == 0:
            warnings.warn(f"{len(self.shards)} shards for {world * max(1, num_workers)} readers: "
                          "some readers get no shard", stacklevel=2)
        skip = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            state = self._resume
            if (state["rank"], state["world_size"], state["num_workers"]) != (rank, world,
                                                                               num_workers):
                raise InstkitError(
                    f"the resume state is for rank {state['rank']} of {state['world_size']} with "
                    f"{state['num_workers']} workers, not rank {rank} of {world} with "
                    f"{num_workers}: shards are dealt differently")
            skip = int(state["consumed"][worker])
        if info is None:
            self._consumed = [skip]
        rng = np.random.default_rng([self.seed, epoch, rank, worker, 1])
        for k, raw in enumerate(self._shuffled(self._raw(shard_ids), rng)):
            if k < skip:
                continue  # consumed before the state was saved: read, not decoded
            sample = self._sample(raw, epoch)
            if info is None:
                self._consumed[0] = k + 1
            yield sample

    # --- resuming ------------------------------------------------------------------------------

    def state_dict(self, *, batches: int | None = None, batch_size: int | None = None,
                   num_workers: int | None = None) -> dict[str, Any]:
        """Where this rank is in the epoch. Without arguments: what the main process iterated
        (``num_workers=0``). With ``batches`` / ``batch_size`` / ``num_workers``: after that
        many batches from a DataLoader with that many workers (see the module docstring)."""
        rank, world = self.rank_and_world()
        epoch = self.epoch
        start = [0]
        if batches is None:
            if batch_size is not None or num_workers not in (None, 0):
                raise ValueError("pass batches, batch_size and num_workers together")
            consumed, workers = list(self._consumed), 0
        else:
            if batch_size is None or num_workers is None:
                raise ValueError("pass batches, batch_size and num_workers together")
            workers = int(num_workers)
            lengths = self._worker_lengths(epoch, rank, world, workers)
            start = [0] * len(lengths)
            if self._resume is not None and self._resume["epoch"] == epoch:
                start = [int(c) for c in self._resume["consumed"]]
            consumed = _after_batches(lengths, start, int(batches), int(batch_size))
        return {"epoch": epoch, "seed": self.seed, "rank": rank, "world_size": world,
                "num_workers": workers, "shards": len(self.shards), "consumed": consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration of ``state["epoch"]`` skips what was consumed."""
        missing = {"epoch", "seed", "rank", "world_size", "num_workers", "consumed"} - set(state)
        if missing:
            raise ValueError(f"not a StreamingDataset state: {sorted(missing)} missing")
        if int(state["seed"]) != self.seed or state.get("shards", len(self.shards)) != len(
                self.shards):
            raise InstkitError("the state is for another seed or shard set: the stream would "
                               "differ", Location(file=self.shards.root))
        self._resume = dict(state)
        self._epoch[0] = int(state["epoch"])

    def __repr__(self) -> str:
        return (f"StreamingDataset({self.shards.root!r}: {len(self.shards)} {self.shards.kind} "
                f"shards, shuffle={self.shuffle}, buffer={self.shuffle_buffer}, seed={self.seed}, "
                f"epoch={self.epoch})")


def _after_batches(lengths: list[int], start: list[int], batches: int, batch_size: int
                   ) -> list[int]:
    """Per-worker samples consumed after ``batches`` batches of a DataLoader that takes a batch
    from each worker in turn, skipping workers that have run dry (its in-order behaviour)."""
    remaining = [max(0, n - s) for n, s in zip(lengths, start)]
    consumed = list(start)
    active = [True] * len(lengths)
    worker, produced = 0, 0
    while produced < batches and any(active):
        if active[worker]:
            if remaining[worker] == 0:
                active[worker] = False
            else:
                take = min(batch_size, remaining[worker])
                remaining[worker] -= take
                consumed[worker] += take
                produced += 1
        worker = (worker + 1) % len(lengths)
    return consumed


__all__ = ["StreamingDataset", "row_sample"]

"""Shared-memory batch buffers reused by DataLoader workers (instkit.data.buffers): a segment is
written again only after the main process has let go of every view of the batch in it."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from instkit.data import Collator, InstanceDataset, buffers  # noqa: E402
from instkit.data.packing import pack_samples  # noqa: E402
from instkit.synthetic import make_samples  # noqa: E402

needs_memfd = pytest.mark.skipif(not hasattr(__import__("os"), "memfd_create"),
                                 reason="pooled shared segments need memfd_create (Linux)")


def _same(a: object, b: object) -> None:
    images_a, targets_a = a  # type: ignore[misc]
    images_b, targets_b = b  # type: ignore[misc]
    for x, y in zip(images_a, images_b, strict=True):
        assert torch.equal(x, y)
    for x, y in zip(targets_a, targets_b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


@pytest.fixture(scope="module")
def samples() -> list:
    return make_samples(num_images=24, seed=11, image_size=(64, 72), crowd_probability=0.2)


@needs_memfd
def test_segments_are_reused_once_let_go_and_batches_stay_exact(samples: list) -> None:
    collator = Collator("maskrcnn")
    loader = DataLoader(InstanceDataset(samples), batch_size=2, num_workers=1,
                        collate_fn=collator.pack)
    seen = []
    for k, packed in enumerate(loader):  # each batch let go of before the next arrives
        assert isinstance(packed.segment, buffers.Received)
        seen.append(packed.segment)
        _same(collator.finish(packed), collator(samples[2 * k : 2 * k + 2]))
        del packed
        gc.collect()
    assert len(seen) == 12
    assert len({s.ident for s in seen}) <= buffers.POOL_SIZE  # 12 batches in at most 4 segments


@needs_memfd
@pytest.mark.parametrize("reachable", [True, False])
def test_a_segment_passes_its_descriptor_once_when_the_receiver_can_reopen_it(
        samples: list, monkeypatch: pytest.MonkeyPatch, reachable: bool) -> None:
    """A descriptor over a socket costs a connection and a handshake per batch: once the main
    process has checked that it can open the worker's descriptor by its /proc path, later
    batches in that segment send only its number. Where it cannot, every batch passes it."""
    ways: list[tuple[int, bool]] = []
    receive = buffers.receive

    def spy(wrapped_fd, worker_fd, sender, capacity, nbytes):  # type: ignore[no-untyped-def]
        ways.append((sender.ident, wrapped_fd is not None))
        return receive(wrapped_fd, worker_fd, sender, capacity, nbytes)

    monkeypatch.setattr(buffers, "receive", spy)
    if not reachable:
        monkeypatch.setattr(buffers, "_same_file", lambda fd, path: False)
    collator = Collator("maskrcnn")
    loader = DataLoader(InstanceDataset(samples), batch_size=2, num_workers=1,
                        collate_fn=collator.pack)
    for k, packed in enumerate(loader):
        _same(collator.finish(packed), collator(samples[2 * k : 2 * k + 2]))
        del packed
        gc.collect()
    assert len(ways) == 12
    passed = [ident for ident, by_socket in ways if by_socket]
    if reachable:
        assert sorted(passed) == sorted(set(passed))  # once per segment
        assert len(passed) == len({ident for ident, _ in ways}) < len(ways)
    else:
        assert len(passed) == len(ways)


@needs_memfd
def test_a_held_batch_is_never_overwritten(samples: list) -> None:
    collator = Collator("maskrcnn")
    loader = DataLoader(InstanceDataset(samples), batch_size=2, num_workers=1,
                        collate_fn=collator.pack)
    held = list(loader)  # every batch kept: the worker must not write into any of them
    pooled = [p.segment for p in held if isinstance(p.segment, buffers.Received)]
    assert len(pooled) == buffers.POOL_SIZE and len(set(pooled)) == len(pooled)
    assert sum(p.segment is None for p in held) == len(held) - buffers.POOL_SIZE  # fresh memory
    for k, packed in enumerate(held):
        _same(collator.finish(packed), collator(samples[2 * k : 2 * k + 2]))


@needs_memfd
def test_a_view_kept_after_the_batch_keeps_its_segment(samples: list) -> None:
    """In one process: the receiving side's last view, not the batch object, hands the segment
    back; the sender then reuses it, and a second sending of one batch is a copy."""
    packed = pack_samples(samples[:2], shared="pooled")
    segment = packed.segment
    assert isinstance(segment, buffers.Segment)
    data = pickle.dumps(packed)
    assert segment.in_use()  # sent: held by the receiver
    received = pickle.loads(data)
    assert isinstance(received.segment, buffers.Received)
    assert torch.equal(received.buffer, packed.buffer)
    assert pickle.loads(pickle.dumps(packed)).segment is None  # sent twice: a copy
    view = received.buffer[10:20]
    del received, packed
    gc.collect()
    assert segment.in_use()  # the view still reads it
    before = view.clone()
    again = pack_samples(samples[2:4], shared="pooled")
    assert again.segment is not segment and torch.equal(view, before)
    second = again.segment
    del view
    gc.collect()
    del again
    gc.collect()
    assert not segment.in_use() and not second.in_use()
    third = pack_samples(samples[4:6], shared="pooled")
    fourth = pack_samples(samples[6:8], shared="pooled")
    assert {id(third.segment), id(fourth.segment)} == {id(segment), id(second)}  # reused
    np.testing.assert_array_equal(third.buffer.numpy(),
                                  pack_samples(samples[4:6]).buffer.numpy())


# --- host blocks: the tensors a collator builds on the CPU -----------------------------------


def _build(samples: list, target: str, k: int) -> object:
    return Collator(target)(samples[2 * k : 2 * k + 2])


def _big_samples() -> list:
    # large enough images that the float images and mask grids come from the host pool
    return make_samples(num_images=12, seed=5, image_size=(400, 480), crowd_probability=0.0)


@pytest.mark.parametrize("target", ["maskrcnn", "rfdetr"])
def test_host_blocks_of_held_batches_are_never_overwritten(target: str, monkeypatch) -> None:
    samples = _big_samples()
    gc.collect()
    buffers.release_host_pool()  # blocks earlier tests let go of
    held = [_build(samples, target, k) for k in range(6)]  # all kept while later ones are built
    held_bytes, in_use = buffers.host_pool_bytes()
    assert in_use > 0 and in_use == held_bytes  # built in pooled memory, none of it reusable
    monkeypatch.setattr(buffers, "HOST_POOL_BYTES", 0)  # plain torch memory for the reference
    for k, batch in enumerate(held):
        fresh = _build(samples, target, k)
        if target == "maskrcnn":
            _same(batch, fresh)
        else:
            for key in ("pixel_values", "pixel_mask"):
                assert torch.equal(batch[key], fresh[key]), key
            for a, b in zip(batch["labels"], fresh["labels"], strict=True):
                assert torch.equal(a["masks"], b["masks"])


def test_host_blocks_are_reused_once_let_go_and_a_view_keeps_one(monkeypatch) -> None:
    samples = _big_samples()
    buffers.release_host_pool()
    for k in range(6):  # one pass: each batch dropped before the next
        _build(samples, "maskrcnn", k)
        gc.collect()
    held_bytes, in_use = buffers.host_pool_bytes()
    assert in_use == 0 and held_bytes > 0
    for k in range(6):  # the same batches again
        _build(samples, "maskrcnn", k)
        gc.collect()
    assert buffers.host_pool_bytes() == (held_bytes, 0)  # nothing new was needed
    batch = _build(samples, "maskrcnn", 0)
    row = batch.images[0][1, 7]  # a small view of the first image
    expected = row.clone()
    del batch
    gc.collect()
    assert buffers.host_pool_bytes()[1] > 0  # its block is still in use
    for k in range(6):
        _build(samples, "maskrcnn", k)
    assert torch.equal(row, expected)  # never written again while viewed
    del row
    gc.collect()
    assert buffers.host_pool_bytes()[1] == 0
    monkeypatch.setattr(buffers, "HOST_POOL_BYTES", 4 << 20)  # a small limit: still correct
    buffers.release_host_pool()
    small = _build(samples, "maskrcnn", 1)
    assert buffers.host_pool_bytes()[0] <= 4 << 20
    monkeypatch.setattr(buffers, "HOST_POOL_BYTES", 0)
    _same(small, _build(samples, "maskrcnn", 1))


@needs_memfd
def test_a_segment_is_reused_only_when_the_batch_fits_after_its_header(samples: list) -> None:
    first = pack_samples(samples[:2], shared="pooled")
    segment = first.segment
    del first
    gc.collect()
    room = segment.capacity - buffers.HEADER
    tensor, again = buffers.batch_buffer(room)  # exactly fits
    assert again is segment and tensor.numel() == room
    del tensor
    gc.collect()
    tensor, other = buffers.batch_buffer(room + 1)  # one byte more: another segment
    assert other is not segment and tensor.numel() == room + 1


@needs_memfd
def test_a_batch_outlives_the_worker_that_packed_it(samples: list) -> None:
    """Workers that are not persistent exit after each epoch: a batch kept from the first epoch
    still reads what was packed (its segment stays mapped here), while the next epoch's new
    workers pack into segments of their own."""
    collator = Collator("maskrcnn")
    loader = DataLoader(InstanceDataset(samples), batch_size=2, num_workers=1,
                        collate_fn=collator.pack, persistent_workers=False)
    kept = next(iter(loader))  # the iterator and its worker are gone after this line
    gc.collect()
    later = list(loader)
    assert {p.segment.pid for p in later if p.segment} != {kept.segment.pid}
    _same(collator.finish(kept), collator(samples[:2]))
    for k, packed in enumerate(later):
        _same(collator.finish(packed), collator(samples[2 * k : 2 * k + 2]))

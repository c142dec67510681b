"""Shared-memory batch buffers reused by DataLoader workers (instkit.data.shm): a segment is
written again only after the main process has let go of every view of the batch in it."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from instkit.data import Collator, InstanceDataset, shm  # noqa: E402
from instkit.data.packing import pack_samples  # noqa: E402
from instkit.synthetic import make_samples  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "memfd_create"),
                                reason="pooled segments need memfd_create (Linux)")


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


def test_segments_are_reused_once_let_go_and_batches_stay_exact(samples: list) -> None:
    collator = Collator("maskrcnn")
    loader = DataLoader(InstanceDataset(samples), batch_size=2, num_workers=1,
                        collate_fn=collator.pack)
    seen = []
    for k, packed in enumerate(loader):  # each batch let go of before the next arrives
        assert isinstance(packed.segment, shm.Received)
        seen.append(packed.segment)
        _same(collator.finish(packed), collator(samples[2 * k : 2 * k + 2]))
        del packed
        gc.collect()
    assert len(seen) == 12
    assert len({s.ident for s in seen}) <= shm.POOL_SIZE  # 12 batches in at most 4 segments


def test_a_held_batch_is_never_overwritten(samples: list) -> None:
    collator = Collator("maskrcnn")
    loader = DataLoader(InstanceDataset(samples), batch_size=2, num_workers=1,
                        collate_fn=collator.pack)
    held = list(loader)  # every batch kept: the worker must not write into any of them
    pooled = [p.segment for p in held if isinstance(p.segment, shm.Received)]
    assert len(pooled) == shm.POOL_SIZE and len(set(pooled)) == len(pooled)
    assert sum(p.segment is None for p in held) == len(held) - shm.POOL_SIZE  # fresh memory
    for k, packed in enumerate(held):
        _same(collator.finish(packed), collator(samples[2 * k : 2 * k + 2]))


def test_a_view_kept_after_the_batch_keeps_its_segment(samples: list) -> None:
    """In one process: the receiving side's last view, not the batch object, hands the segment
    back; the sender then reuses it, and a second sending of one batch is a copy."""
    packed = pack_samples(samples[:2], shared="pooled")
    segment = packed.segment
    assert isinstance(segment, shm.Segment)
    data = pickle.dumps(packed)
    assert segment.in_use()  # sent: held by the receiver
    received = pickle.loads(data)
    assert isinstance(received.segment, shm.Received)
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

"""Shared-memory batch buffers that a DataLoader worker reuses.

A worker sends each packed batch to the main process through shared memory. Fresh shared
memory costs about 1 ms per 800x800 image on first write (the kernel allocates and zeroes each
page), as much as packing the batch itself; ``default_collate`` pays it for every batch. Here
each worker keeps a few segments (``memfd_create``: anonymous, so not limited by the size of
``/dev/shm``) and writes the next batch into one that the main process has let go of, whose
pages are already there.

Who may write a segment:

- a segment's first 8 bytes say whether the main process holds it (1) or not (0); the worker
  sets 1 when it sends the batch (``PackedBatch.__reduce__``), and the main process sets 0 when
  the last tensor viewing its mapping is gone (the mapping's ``__del__``);
- the worker reuses a segment only when that flag is 0 and nothing in the worker views it (its
  mapping's reference count is back to the pool's own);
- a batch pickled a second time, a full pool, or a system without ``memfd_create`` falls back to
  fresh shared memory: slower, never shared by two batches.
"""

from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass
from typing import Any

HEADER = 64  # the in-use flag, padded so the batch's int64 / float64 tables stay aligned
POOL_SIZE = 4  # per worker: DataLoader keeps up to prefetch_factor (2) batches in flight
_GROWTH = 1.25  # headroom: the next batch's crops may take a little more room


class _SharedMapping(mmap.mmap):
    """A segment's mapping; in the main process, letting go of it hands the segment back."""

    release_on_delete = False

    def __del__(self) -> None:
        if self.release_on_delete and not self.closed:
            self[0:8] = bytes(8)
            self.close()


@dataclass(eq=False)
class Segment:
    """A worker's pooled segment."""

    fd: int
    mapping: _SharedMapping
    capacity: int
    pid: int
    ident: int
    sent: bool = False

    def in_use(self) -> bool:
        local = sys.getrefcount(self.mapping) > _POOL_REFS
        return local or self.mapping[0:8] != bytes(8)


# references to a pooled mapping that are not a batch's: the segment's attribute and
# getrefcount's own argument
_POOL_REFS = 2
_POOLS: dict[int, list[Segment]] = {}
_CREATED: dict[int, int] = {}


@dataclass(frozen=True)
class Received:
    """On the receiving side: which worker (``pid``) and which of its segments (``ident``) a
    batch came in."""

    pid: int
    ident: int


def batch_buffer(nbytes: int) -> tuple[Any, Segment | None]:
    """A 1-D uint8 tensor of ``nbytes`` in shared memory, and the pooled segment behind it
    (None: fresh shared memory from torch)."""
    import torch

    segment = _take(nbytes) if hasattr(os, "memfd_create") and nbytes > 0 else None
    if segment is None:
        storage = torch.UntypedStorage._new_shared(max(nbytes, 1))
        return torch.empty(0, dtype=torch.uint8).set_(storage)[:nbytes], None
    tensor = torch.frombuffer(segment.mapping, dtype=torch.uint8, offset=HEADER, count=nbytes)
    return tensor, segment


def _take(nbytes: int) -> Segment | None:
    pid = os.getpid()
    pool = _POOLS.setdefault(pid, [])
    free = [s for s in pool if not s.in_use()]
    fits = [s for s in free if s.capacity >= nbytes]
    if fits:
        segment = min(fits, key=lambda s: s.capacity)
        segment.sent = False
        return segment
    if len(pool) >= POOL_SIZE:
        if not free:
            return None
        smallest = min(free, key=lambda s: s.capacity)  # too small for today's batches
        pool.remove(smallest)
        _close(smallest)
    capacity = HEADER + int(nbytes * _GROWTH) + (1 << 20)
    try:
        fd = os.memfd_create("instkit-batch", os.MFD_CLOEXEC)
        os.ftruncate(fd, capacity)
        mapping = _SharedMapping(fd, capacity)
    except OSError:
        return None
    _CREATED[pid] = _CREATED.get(pid, 0) + 1
    segment = Segment(fd, mapping, capacity, pid, _CREATED[pid])
    pool.append(segment)
    return segment


def _close(segment: Segment) -> None:
    try:
        segment.mapping.close()
    except BufferError:  # still viewed: left to the garbage collector
        pass
    os.close(segment.fd)


def send(segment: Segment) -> Any | None:
    """Mark ``segment`` as held by the receiver and return its descriptor, wrapped for
    pickling (None when it was already sent: the caller then sends a copy)."""
    from multiprocessing.reduction import DupFd

    if segment.sent or segment.pid != os.getpid():
        return None
    segment.sent = True
    segment.mapping[0:8] = (1).to_bytes(8, "little")
    return DupFd(segment.fd)


def receive(wrapped_fd: Any, capacity: int, nbytes: int) -> Any:
    """The receiving side: map the segment and view its batch (a 1-D uint8 tensor); when the
    last view is gone the segment goes back to the sender's pool."""
    import torch

    fd = wrapped_fd.detach()
    try:
        mapping = _SharedMapping(fd, capacity)
    finally:
        os.close(fd)
    mapping.release_on_delete = True
    return torch.frombuffer(mapping, dtype=torch.uint8, offset=HEADER, count=nbytes)


__all__ = ["HEADER", "POOL_SIZE", "Received", "Segment", "batch_buffer", "receive", "send"]

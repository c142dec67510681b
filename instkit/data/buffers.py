"""Memory the data path reuses instead of asking the kernel for fresh pages every batch.

Fresh memory costs on first write: the kernel allocates and zeroes every page. For a batch of
eight 800x800 images that is about 1 ms per image for the shared memory a DataLoader worker
sends a packed batch in, and about 3 ms per image for the float32 images and uint8 mask grids
a CPU collator writes (Mask R-CNN, ~13 MB per image), half the collator's time: glibc hands such
large blocks back to the kernel when they are freed, so every batch starts from fresh pages.

Two pools, each per process, each keeping memory that nothing views any more for the next
batch:

- **shared segments** (``batch_buffer``): a worker's packed batches (``Collator.pack``);
- **host blocks** (``host_empty`` / ``host_zeros``): the tensors a collator builds on the CPU
  (float images, ``pixel_values`` / ``pixel_mask``, mask grids), up to ``HOST_POOL_BYTES``.

A block is written again only when every tensor and array over it is gone (its mapping's
reference count is back to the pool's own) -- so a batch the training loop still holds, or any
view of it, is never overwritten.

Shared segments (``memfd_create``: anonymous, so not bounded by the size of ``/dev/shm``) are
also held by the main process once sent:

- a segment's first 8 bytes say whether the main process holds it (1) or not (0); the worker
  sets 1 when it sends the batch (``PackedBatch.__reduce__``), and the main process sets 0 when
  the last tensor viewing its mapping is gone (the mapping's ``__del__``);
- the worker reuses a segment only when that flag is 0 and nothing in the worker views it;
- a batch pickled a second time, a full pool, or a system without ``memfd_create`` falls back to
  fresh shared memory: slower, never shared by two batches.

How the receiver gets the segment: the first time, as a descriptor passed over a socket
(multiprocessing's ``DupFd``: a connection, an authentication handshake and a thread in the
worker, per batch). The receiver then checks whether it can open the worker's descriptor itself
(``/proc/<pid>/fd/<fd>``, the same file) and, if so, says so in the header's next 8 bytes; from
then on the worker sends only the descriptor's number and the receiver opens it there.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

HEADER = 64  # the two flags, padded so the batch's int64 / float64 tables stay aligned
_IN_USE = slice(0, 8)  # 1 while the receiver holds the segment
_REOPENS = slice(8, 16)  # 1 once the receiver has opened the segment by its /proc path
POOL_SIZE = 4  # per worker: DataLoader keeps up to prefetch_factor (2) batches in flight
_GROWTH = 1.25  # headroom: the next batch's crops may take a little more room


class _SharedMapping(mmap.mmap):
    """A segment's mapping; in the main process, letting go of it hands the segment back."""

    release_on_delete = False

    def __del__(self) -> None:
        if self.release_on_delete and not self.closed:
            self[_IN_USE] = bytes(8)
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
        return local or self.mapping[_IN_USE] != bytes(8)


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
    fits = [s for s in free if s.capacity >= HEADER + nbytes]
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
    fd = -1
    try:
        fd = os.memfd_create("instkit-batch", os.MFD_CLOEXEC)
        os.ftruncate(fd, capacity)
        mapping = _SharedMapping(fd, capacity)
    except OSError:
        if fd >= 0:
            os.close(fd)
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


def send(segment: Segment) -> tuple[Any, int] | None:
    """Mark ``segment`` as held by the receiver; return how the receiver reaches it --
    ``(DupFd or None, this process's descriptor number)``, None meaning "by its /proc path" --
    or None when it was already sent (the caller then sends a copy)."""
    from multiprocessing.reduction import DupFd

    if segment.sent or segment.pid != os.getpid():
        return None
    segment.sent = True
    segment.mapping[_IN_USE] = (1).to_bytes(8, "little")
    reopens = segment.mapping[_REOPENS] != bytes(8)
    return (None if reopens else DupFd(segment.fd)), segment.fd


def receive(wrapped_fd: Any, worker_fd: int, sender: Received, capacity: int,
            nbytes: int) -> Any:
    """The receiving side: map the segment and view its batch (a 1-D uint8 tensor); when the
    last view is gone the segment goes back to the sender's pool."""
    import torch

    path = f"/proc/{sender.pid}/fd/{worker_fd}"
    if wrapped_fd is None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise OSError(f"a batch's shared memory cannot be opened at {path} (sent by "
                          f"process {sender.pid}, which this process could reach before): "
                          f"{exc}") from None
        reopened = False
    else:
        fd = wrapped_fd.detach()
        reopened = _same_file(fd, path)
    try:
        mapping = _SharedMapping(fd, capacity)
    finally:
        os.close(fd)
    mapping.release_on_delete = True
    if reopened:
        mapping[_REOPENS] = (1).to_bytes(8, "little")
    return torch.frombuffer(mapping, dtype=torch.uint8, offset=HEADER, count=nbytes)


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` opens the file ``fd`` is (a process in another PID namespace, or one
    not allowed to read the sender's descriptors, cannot)."""
    try:
        other = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        a, b = os.fstat(fd), os.fstat(other)
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    finally:
        os.close(other)


# --- host blocks ------------------------------------------------------------------------------

HOST_POOL_BYTES = 1 << 30  # per process: beyond it, tensors come from torch.empty as usual
_HOST_MIN_BYTES = 1 << 20  # smaller tensors: malloc keeps reusing them anyway
_HOST_ALIGN = 2 << 20  # whole huge pages
_HOST: dict[int, list[_HostBlock]] = {}
_HOST_LOCK = threading.Lock()


@dataclass(eq=False)
class _HostBlock:
    mapping: mmap.mmap
    capacity: int

    def in_use(self) -> bool:
        return sys.getrefcount(self.mapping) > _POOL_REFS


def host_empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised CPU tensor, from the host pool when it is large (see the module
    docstring); a plain ``torch.empty`` otherwise, and in DataLoader workers (whose batches
    are copied into shared memory to be sent anyway)."""
    import torch
    from torch.utils.data import get_worker_info

    numel = 1
    for side in shape:
        numel *= int(side)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if nbytes >= _HOST_MIN_BYTES and get_worker_info() is None:
        with _HOST_LOCK:  # the tensor holds its block before another thread can take it
            block = _host_block(nbytes)
            if block is not None:
                return torch.frombuffer(block.mapping, dtype=dtype, count=numel).view(shape)
    return torch.empty(shape, dtype=dtype)


def host_zeros(shape: tuple[int, ...], dtype: Any) -> Any:
    """``host_empty`` filled with zeros."""
    return host_empty(shape, dtype).zero_()


def host_pool_bytes() -> tuple[int, int]:
    """``(held, in use)`` bytes of this process's host pool."""
    with _HOST_LOCK:
        pool = _HOST.get(os.getpid(), [])
        return (sum(b.capacity for b in pool),
                sum(b.capacity for b in pool if b.in_use()))


def release_host_pool() -> None:
    """Give this process's unused host blocks back to the kernel."""
    with _HOST_LOCK:
        pool = _HOST.get(os.getpid(), [])
        pool[:] = [b for b in pool if b.in_use()]


def _host_block(nbytes: int) -> _HostBlock | None:
    """A free block of at least ``nbytes`` (the caller holds ``_HOST_LOCK``)."""
    pool = _HOST.setdefault(os.getpid(), [])
    free = [b for b in pool if not b.in_use()]
    # a free block of about this size (never a much larger one for a small tensor)
    fits = [b for b in free if nbytes <= b.capacity <= 2 * nbytes + _HOST_ALIGN]
    if fits:
        return min(fits, key=lambda b: b.capacity)
    capacity = -(-nbytes // _HOST_ALIGN) * _HOST_ALIGN
    held = sum(b.capacity for b in pool)
    for block in sorted(free, key=lambda b: b.capacity):  # room: unused blocks go first
        if held + capacity <= HOST_POOL_BYTES:
            break
        pool.remove(block)
        held -= block.capacity
    if held + capacity > HOST_POOL_BYTES:
        return None
    try:
        mapping = mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:
        return None
    if hasattr(mmap, "MADV_HUGEPAGE"):
        mapping.madvise(mmap.MADV_HUGEPAGE)
    block = _HostBlock(mapping, capacity)
    pool.append(block)
    return block


__all__ = ["HEADER", "HOST_POOL_BYTES", "POOL_SIZE", "Received", "Segment", "batch_buffer",
           "host_empty", "host_pool_bytes", "host_zeros", "receive", "release_host_pool", "send"]

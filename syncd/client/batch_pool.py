"""Batch buffers a DataLoader worker reuses once the training process has let go.

A fresh shared-memory tensor per batch (what torch's collate allocates) costs the
kernel a new zeroed page for every 4 KB written: on the VM syncd was measured on,
about 10 ms for a 6.6 MB batch, more than the MGET that fills it. So each worker
keeps a few buffers (Linux memfds) and receives batches into them again. A buffer
is taken again only when both sides are done with it:

- the worker: no array or tensor of its own still refers to it (a weak reference to
  the array it handed out), and
- the training process: its first byte, the "in use" flag, set by the worker when
  the batch is sent, is cleared by the training process when the last tensor or
  view of the batch is freed (with `pin_memory=True`, once the pinned copy is made):
  the tensor is made with `torch.frombuffer` over a memoryview of the mapping, and a
  finalizer on that memoryview clears the flag.

A buffer's descriptor goes to the training process once, with the first batch in
it (passing a descriptor costs a connection to the worker's resource sharer, about
as much as the batch's copy); later batches in it send only the pool's token and the
buffer's number, and the training process keeps the mapping it made. A buffer the
worker drops is named in its next batch and unmapped there; the mappings of a worker
that has exited go when the next descriptor arrives (and at most MAX_MAPPED stay).

A tensor the training process passes on to another process is first copied into
shared memory of its own by torch, so that copy never sees a reused buffer. With
every buffer in use (the training loop keeps many batches), batches go back to a
fresh shared-memory tensor each. Without memfds (not Linux) there is no pool.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import secrets
import weakref
from dataclasses import dataclass
from multiprocessing.reduction import DupFd
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

HEADER = 64  # the flag byte, then padding: the data stay 64-byte aligned
MAX_BUFFERS = 8  # per worker: DataLoader's prefetch, the batch in use, and slack
MAX_MAPPED = 64  # buffers the training process keeps mapped, all workers together
_FREE, _IN_USE = 0, 1


@dataclass
class _Buffer:
    fd: int
    size: int
    mm: mmap.mmap
    number: int = 0  # within its pool
    sent: bool = False  # its descriptor went to the training process
    handed: Any = None  # weak reference to the array last handed out

    def idle(self) -> bool:
        return self.mm[0] == _FREE and (self.handed is None or self.handed() is None)


class BatchPool:
    """One worker's buffers (not thread-safe; one per process)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.token = secrets.token_hex(8)  # names this pool's buffers in the training process
        self.buffers: list[_Buffer] = []
        self.retired: list[int] = []  # dropped buffers the training process still maps
        self.made = 0

    def take(self, shape: tuple[int, ...]) -> tuple[np.ndarray, _Buffer] | None:
        """A float32 array of `shape` in an idle buffer, or None (all in use)."""
        size = HEADER + 4 * math.prod(shape)
        idle = [b for b in self.buffers if b.idle()]
        buffer = next((b for b in idle if b.size >= size), None)
        if buffer is None:
            if len(self.buffers) >= MAX_BUFFERS:
                if not idle:
                    return None
                self.drop(idle[0])  # too small for this batch: make room
            buffer = _new_buffer(size)
            if buffer is None:
                return None
            self.made += 1
            buffer.number = self.made
            self.buffers.append(buffer)
        array = np.frombuffer(buffer.mm, np.float32, math.prod(shape), HEADER).reshape(shape)
        buffer.handed = weakref.ref(array)
        return array, buffer

    def drop(self, buffer: _Buffer) -> None:
        self.buffers.remove(buffer)
        if buffer.sent:
            self.retired.append(buffer.number)
        os.close(buffer.fd)
        with contextlib.suppress(BufferError):  # an array of it not yet freed: the
            buffer.mm.close()                    # mapping goes with that array


def _new_buffer(size: int) -> _Buffer | None:
    """A memfd of `size` bytes, mapped; None when the system refuses (out of memory or
    descriptors): the batch then goes in a fresh shared-memory tensor, as torch's."""
    fd = -1
    try:
        fd = os.memfd_create("syncd-batch", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return _Buffer(fd, size, mmap.mmap(fd, size))
    except OSError as exc:
        log.warning("no reusable batch buffer (%s): a fresh tensor for this batch", exc)
        if fd >= 0:
            os.close(fd)
        return None


_pool: BatchPool | None = None


def pooled_array(shape: tuple[int, ...]) -> tuple[np.ndarray, _Buffer] | None:
    """This process' pool's array for a batch of `shape` (None: no memfds, or all in use)."""
    global _pool
    if not hasattr(os, "memfd_create"):
        return None
    if _pool is None or _pool.pid != os.getpid():
        _pool = BatchPool()
    return _pool.take(shape)


class ShippedBatch(list):
    """`[eeg, labels]` whose eeg lives in a pool buffer: sent to the training process
    as the buffer's descriptor (the data stay where they are), rebuilt there by
    `_arrive` as a tensor over the mapping."""

    def __init__(self, eeg: torch.Tensor, labels: torch.Tensor, buffer: _Buffer) -> None:
        super().__init__([eeg, labels])
        self.buffer = buffer

    def __reduce__(self) -> Any:
        eeg, labels = self
        buffer = self.buffer
        buffer.mm[0] = _IN_USE  # until the training process frees the batch
        try:
            label_part: Any = labels.numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16): torch shares it
            label_part = labels
        fd_ref = None if buffer.sent else DupFd(buffer.fd)
        buffer.sent = True
        pool = _pool
        retired: tuple[int, ...] = ()
        if pool is not None and pool.retired:
            retired, pool.retired = tuple(pool.retired), []
        token = pool.token if pool is not None else ""
        return (_arrive, ((token, os.getpid(), buffer.number, retired), fd_ref, buffer.size,
                          tuple(eeg.shape), label_part, labels.dtype))


# The training process' mappings of worker buffers: (pool token, number) -> (pid, mapping).
_mapped: dict[tuple[str, int], tuple[int, mmap.mmap]] = {}


def _arrive(ident: tuple[str, int, int, tuple[int, ...]], fd_ref: Any, size: int,
            shape: tuple[int, ...], labels: Any, label_dtype: torch.dtype) -> list[torch.Tensor]:
    """In the training process: the batch as tensors over the worker's buffer (mapped
    when its descriptor came, with the buffer's first batch)."""
    token, pid, number, retired = ident
    for gone in retired:
        _unmap((token, gone))
    if fd_ref is not None:
        fd = fd_ref.detach()
        try:
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _forget_exited()
        _unmap((token, number))
        _mapped[(token, number)] = (pid, mm)
    else:
        mm = _mapped[(token, number)][1]
    view = memoryview(mm)[HEADER:HEADER + 4 * math.prod(shape)]
    eeg = torch.frombuffer(view, dtype=torch.float32).view(shape)
    weakref.finalize(view, _release, mm)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels).to(label_dtype)
    return [eeg, labels]


def _unmap(key: tuple[str, int]) -> None:
    """Forget a mapping (it is unmapped once no tensor of it is left)."""
    entry = _mapped.pop(key, None)
    if entry is not None:
        with contextlib.suppress(BufferError, ValueError):
            entry[1].close()


def _forget_exited() -> None:
    """Mappings of workers that have exited (and the oldest, past MAX_MAPPED)."""
    for key, (pid, _) in list(_mapped.items()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _unmap(key)
        except OSError:
            pass
    while len(_mapped) >= MAX_MAPPED:
        _unmap(next(iter(_mapped)))


def _release(mm: mmap.mmap) -> None:
    """The batch's last tensor is gone: the worker may fill the buffer again."""
    with contextlib.suppress(ValueError, BufferError):  # closed already
        mm[0] = _FREE

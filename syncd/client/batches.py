"""One contiguous tensor per batch: what CachedWindowDataset hands DataLoader.

DataLoader calls `dataset.__getitems__(indices)` in a worker, collates the result
and sends it to the training process. With per-window tensors, the default collate
copies every window once more into a new batch tensor. Here a batch's windows are
received (MGET `recv_into`, checksum checked) or read from HDF5 straight into their
slices of one preallocated float32 tensor, which in a DataLoader worker lives in
shared memory already (as torch's own collate allocates it), so sending it moves
a file descriptor, not 6.6 MB.

`WindowBatch` is still the list of `(eeg, label)` pairs the default collate expects
(views of the two batch tensors), so existing code keeps working. Those pairs are
`WindowItem`s, a tuple type registered in torch's `default_collate_fn_map` (the
registry torch documents for extending `default_collate`): given a whole `WindowBatch`,
the default collate hands the two batch tensors on as `collate_windows` does, so a
plain `DataLoader(dataset, batch_size=64, num_workers=2)` gets the fast path; given any
other list of pairs, it collates them as it collates tuples. `collate_fn=collate_windows`
does the same explicitly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from syncd.client.batch_pool import ShippedBatch, pooled_array
from syncd.client.mget_targets import decode_into_targets, mget_into_targets


class WindowItem(tuple):
    """One `(eeg, label)` pair of a batch: a plain tuple to its users; its type tells the
    default collate that the batch may be a `WindowBatch` (see the module's doc)."""

    __slots__ = ()


class WindowBatch(list):
    """A batch as one `eeg` tensor `(batch, *window)` and one `labels` tensor
    `(batch, *label)`; as a list, the per-window `(eeg, label)` views of them."""

    def __init__(self, eeg: torch.Tensor, labels: torch.Tensor, buffer: Any = None) -> None:
        super().__init__(map(WindowItem, zip(eeg.unbind(0), labels.unbind(0))))
        self.eeg, self.labels, self.buffer = eeg, labels, buffer

    def __reduce__(self) -> Any:
        """Sent as it is (a collate_fn that returns it): the plain list of pairs."""
        return (list, (list(self),))


def collate_windows(batch: Any) -> Any:
    """DataLoader's `collate_fn` for CachedWindowDataset: a `WindowBatch` becomes
    `[eeg, labels]` without a copy (what the default collate returns, copied);
    anything else goes to the default collate."""
    if isinstance(batch, WindowBatch):
        if batch.buffer is not None:
            return ShippedBatch(batch.eeg, batch.labels, batch.buffer)
        return [batch.eeg, batch.labels]
    return default_collate(batch)


def _collate_items(batch: Any, *, collate_fn_map: Any = None) -> Any:
    """The default collate's rule for `WindowItem`s: a `WindowBatch` as `collate_windows`
    hands it on; other pairs as the default collate does tuples (one collated value
    per position, in a list)."""
    if isinstance(batch, WindowBatch):
        return collate_windows(batch)
    return [collate(list(samples), collate_fn_map=collate_fn_map) for samples in zip(*batch)]


default_collate_fn_map[WindowItem] = _collate_items


def new_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; in a DataLoader worker, in shared memory (as
    torch's default collate allocates its output), so sending it copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    storage = torch.UntypedStorage._new_shared(4 * math.prod(shape))
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)


def gather_labels(rows: list[Any], dtype: torch.dtype) -> torch.Tensor | list[torch.Tensor]:
    """One batch's labels as one tensor, or one tensor each when their shapes differ."""
    arrays = [np.asarray(a) for a in rows]
    if len({a.shape for a in arrays}) == 1:
        return torch.as_tensor(np.stack(arrays) if arrays else np.empty(0)).to(dtype)
    return [torch.as_tensor(a).to(dtype) for a in arrays]


def targets_for(shapes: list[tuple[int, ...]]
                ) -> tuple[torch.Tensor | None, Any, list[np.ndarray]]:
    """Where each window of a batch goes: slices of one batch tensor when every window
    has the same shape (returned too, with its pool buffer in a DataLoader worker),
    else an array each."""
    if not shapes or len(set(shapes)) != 1:
        return None, None, [torch.empty(s, dtype=torch.float32).numpy() for s in shapes]
    batch, buffer, whole = batch_arrays((len(shapes), *shapes[0]))
    return batch, buffer, list(whole)


def batch_arrays(shape: tuple[int, ...], pinned: Any = None
                 ) -> tuple[torch.Tensor, Any, np.ndarray]:
    """A batch's tensor, its pool buffer (None outside the pool) and the same memory as
    an array: in a DataLoader worker a reusable pool buffer (else shared memory); in the
    training process `pinned(shape, dtype)` if given and it gives one, else plain memory."""
    if get_worker_info() is not None:
        pooled = pooled_array(shape)
        if pooled is not None:
            whole, buffer = pooled
            return torch.from_numpy(whole), buffer, whole
    else:
        batch = pinned(shape, torch.float32) if pinned is not None else None
        if batch is not None:
            return batch, None, batch.numpy()
        # numpy's allocation (malloc) reuses freed batches' pages; torch.empty's faults
        # in fresh ones (measured ~25 % of a local-tier batch on the 2-vCPU VM)
        whole = np.empty(shape, np.float32)
        return torch.from_numpy(whole), None, whole
    batch = new_batch(shape)
    return batch, None, batch.numpy()


__all__ = ["WindowBatch", "WindowItem", "batch_arrays", "collate_windows", "decode_into_targets",
           "gather_labels", "mget_into_targets", "new_batch", "targets_for"]

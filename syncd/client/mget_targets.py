"""A batch's windows received from Redis into the arrays they end up in (no torch here:
`syncd warm --local` and `WindowCache` use it too)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from syncd.client.cluster_mget import Mget
from syncd.client.mget import BAD, HIT, MISS, byte_view
from syncd.client.sealed import decode_sealed
from syncd.sinks.cache import CacheError, FileMeta

_FLOAT32 = np.dtype("<f4")


def mget_into_targets(direct: Mget, keys: list[str], metas: list[FileMeta],
                      targets: list[np.ndarray]) -> list[int]:
    """MGET `keys` into `targets` (float32 arrays of the windows' shapes); HIT, MISS or
    BAD each (mget.py). float32 values land in place; other dtypes land in an array
    of their own and are converted. Raises MgetError (Redis unavailable)."""
    scratch: list[np.ndarray | None] = []
    views = []
    for meta, target in zip(metas, targets):
        if meta.shape != target.shape:
            scratch.append(None)
            views.append(None)  # not this file's shape: a miss, read from the file
        elif meta.dtype == _FLOAT32:
            scratch.append(None)
            views.append(byte_view(target))
        else:
            array = np.empty(meta.shape, meta.dtype)
            scratch.append(array)
            views.append(byte_view(array))
    status = direct.mget_into(keys, views)
    for i, array in enumerate(scratch):
        if array is not None and status[i] == HIT:
            targets[i][...] = array
    for i, view in enumerate(views):
        if view is None:
            status[i] = MISS
    return status


def decode_into_targets(values: Sequence[bytes | None], keys: list[str],
                        metas: list[FileMeta], targets: list[np.ndarray]) -> list[int]:
    """redis-py's values (TLS URLs) checked and copied into `targets`; as above."""
    status = []
    for key, value, meta, target in zip(keys, values, metas, targets):
        if value is None or meta.shape != target.shape:
            status.append(MISS)
            continue
        try:
            array = decode_sealed(key, value, meta.dtype, meta.shape)
        except CacheError:
            status.append(BAD)
            continue
        target[...] = array
        status.append(HIT)
    return status

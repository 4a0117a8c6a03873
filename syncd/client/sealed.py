"""A value read from the cache, checked and viewed as an array: the one decoding step
every reader shares (`WindowCache`, the Dataset's batches, a local shard's fill).

Below the readers on purpose: it needs only the writer's error type and checksum
(syncd.sinks), so each reader can use it without importing another reader.
"""

from __future__ import annotations

import math

import numpy as np

from syncd.sinks.cache import CacheError
from syncd.sinks.checksum import unseal


def decode(value: bytes | None, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
    """`value` as a read-only array of `dtype` and `shape`; None stays None; a bad length raises."""
    if value is None:
        return None
    expected = dtype.itemsize * math.prod(shape)
    if len(value) != expected:
        raise CacheError(f"cached value has {len(value)} bytes, expected {expected} "
                         f"({dtype} {list(shape)})")
    return np.frombuffer(value, dtype).reshape(shape)


def decode_sealed(key: str, value: bytes | None, dtype: np.dtype,
                  shape: tuple[int, ...]) -> np.ndarray | None:
    """A checksummed value read from `key` as an array; None stays None; a bad one raises."""
    try:
        payload = unseal(key, value, dtype.itemsize * math.prod(shape))
    except ValueError as exc:
        raise CacheError(f"{key}: {exc}") from None
    return None if payload is None else np.frombuffer(payload, dtype).reshape(shape)

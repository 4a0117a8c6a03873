"""Every value syncd puts in the cache carries a checksum trailer, checked on every read.

A value is the array's raw bytes followed by 4 bytes, little-endian: the low 32 bits
of the XXH3-64 hash of those bytes, seeded with the hash of the key's name.
Right-sized garbage, a value from another key and a value of the older format
without a trailer (4 bytes short) all fail the check, and a reader treats them as not
cached. XXH3 (the xxhash package, in C) costs about 1.7 us per 100 KB window on one
core, against 24 us for zlib's CRC-32, so checking every read costs the training loop
next to nothing; the trailer sits inside the value, so a batch is still one MGET.
"""

from __future__ import annotations

from typing import Any

import xxhash

CHECKSUM_BYTES = 4
# The cache format: 2 = values carry the trailer; 3 = value keys carry a hash tag per file
# generation; 4 = one hash tag per block of windows, blocks spread over a cluster's slots
# (syncd.sinks.cache.Keys). Metadata without a format is 1 (no trailer).
# Metadata of an older format is a miss to readers, and a warm writes its values again.
FORMAT = 4


def checksum(key: str, payload: Any) -> int:
    """The 32-bit check of `payload` (any bytes-like object), seeded with the key's name."""
    seed = xxhash.xxh3_64_intdigest(key.encode())
    return xxhash.xxh3_64_intdigest(payload, seed) & 0xFFFFFFFF


def seal(key: str, payload: Any) -> bytes:
    """`payload` with its checksum trailer, as stored under `key`."""
    return b"".join((payload, checksum(key, payload).to_bytes(CHECKSUM_BYTES, "little")))


def unseal(key: str, value: bytes | None, size: int) -> memoryview | None:
    """The payload of a value read from `key`, if it is `size` bytes and its checksum holds.

    None when there is no value; raises ValueError (with why) when it is not a good one.
    """
    if value is None:
        return None
    if len(value) != size + CHECKSUM_BYTES:
        raise ValueError(f"cached value has {len(value)} bytes, expected {size} + "
                         f"{CHECKSUM_BYTES} (checksum)")
    view = memoryview(value)
    payload = view[:size]
    if checksum(key, payload) != int.from_bytes(view[size:], "little"):
        raise ValueError("cached value fails its checksum")
    return payload

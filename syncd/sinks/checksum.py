"""Every value syncd puts in the cache carries a CRC-32 trailer, checked on every read.

A value is the array's raw bytes followed by 4 bytes, little-endian: the CRC-32 of
those bytes, seeded with the CRC-32 of the key's name. Right-sized garbage, a value
from another key and a value of the older format without a trailer (4 bytes short)
all fail the check, and a reader treats them as not cached. CRC-32 (zlib, in C, the
GIL released for large values) costs about 25 us per 100 KB window on one core; the
trailer sits inside the value, so a batch is still one MGET.
"""

from __future__ import annotations

import zlib
from typing import Any

CHECKSUM_BYTES = 4
# The cache format: 2 = values carry the trailer. Metadata without a format is 1 (no trailer).
FORMAT = 2


def checksum(key: str, payload: Any) -> int:
    """CRC-32 of `payload` (any bytes-like object), seeded with the key's name."""
    return zlib.crc32(payload, zlib.crc32(key.encode()))


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

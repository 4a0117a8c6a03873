"""Where a file's blocks of windows go on a Redis Cluster: evenly over the slot space.

A Redis Cluster puts a key in slot CRC16(hash tag) mod 16384 and gives each master a
range of slots. Hashing a block's name would scatter a file's blocks at random: a
file of 125 blocks on 3 masters would be off its fair share by about 13 % per master
at one standard deviation, so a few large files could not be spread reliably. Here
block `b` of a file generation goes to slot `(base + b * STEP) mod 16384`, `base`
being the slot of the generation's own name and STEP about 16384 / golden ratio: a
Weyl sequence, which gives every range of slots its share of the blocks, give or
take a block or two, whatever the file's size and wherever the masters' ranges
start. `slot_tag(slot)` is a short hash tag that lands in `slot` (found once per
process, by computing CRC16 of every 3-character string over [0-9A-Za-z]).
"""

from __future__ import annotations

import functools
from binascii import crc_hqx
from collections.abc import Iterable

import numpy as np

SLOTS = 16384
BLOCK_WINDOWS = 16  # windows that share a hash tag: a slice of 64 consecutive ones is 4 slots
STEP = 10125  # odd (so every slot comes round) and close to 16384 * 0.618...
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def key_slot(text: str) -> int:
    """The cluster slot of a hash tag's content (Redis' CRC16-XMODEM, mod 16384)."""
    return crc_hqx(text.encode(), 0) % SLOTS


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For every slot, the first 3-character string over ALPHABET whose slot it is."""
    table = np.array([crc_hqx(bytes([b]), 0) for b in range(256)], np.uint32)
    chars = np.frombuffer(ALPHABET.encode(), np.uint8)
    combos = np.stack(np.meshgrid(chars, chars, chars, indexing="ij"), -1).reshape(-1, 3)
    crc = np.zeros(len(combos), np.uint32)
    for k in range(3):  # table-driven CRC16-XMODEM, as crc_hqx computes it
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ combos[:, k]) & 0xFF]
    slots, first = np.unique(crc % SLOTS, return_index=True)
    if len(slots) != SLOTS:  # pragma: no cover - a fact of CRC16, checked by the tests
        raise AssertionError("the tag alphabet does not reach every cluster slot")
    return tuple(combos[i].tobytes().decode() for i in first)


def block_tag(name: str, block: int) -> str:
    """The hash tag of one block of the file generation `name` (e.g. 'fid:gen')."""
    return slot_tags()[(crc_hqx(name.encode(), 0) + block * STEP) % SLOTS]


def block_tags(name: str, blocks: Iterable[int]) -> list[str]:
    """The hash tags of `blocks` of the file generation `name` (e.g. 'fid:gen')."""
    tags = slot_tags()
    base = key_slot(name)
    return [tags[(base + b * STEP) % SLOTS] for b in blocks]

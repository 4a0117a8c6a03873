"""The CPU controls of the coexistence phases (bench/sync_coexist.py), each its own
process: no syncd, no triggers, never touching metadata.db or MongoDB.

    python -m bench.controls burn SHARE END_AT        busy for SHARE of every 10 ms
    python -m bench.controls echo DB SHARE GAP END_AT  wakes on DB's file events as syncd
                                                       does (at most every GAP s) and
                                                       burns SHARE cores' worth per wake
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def burn(share: float, end_at: float) -> None:
    while time.time() < end_at:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.01 * share:
            pass
        time.sleep(0.01 * (1 - share))


def echo(db: str, share: float, gap: float, end_at: float) -> None:
    from syncd.daemon.wake import Waker  # only the echo control needs syncd

    woke = threading.Event()
    waker = Waker([Path(db)], woke)
    waker.start()
    last = 0.0
    while time.time() < end_at:
        if not woke.wait(0.2):
            continue
        rest = last + gap - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        woke.clear()
        last = t = time.monotonic()
        while time.monotonic() - t < share * gap:
            pass
    waker.stop()


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.controls", *args], cwd=ROOT)


def start_burners(share: float, seconds: float) -> list[subprocess.Popen[bytes]]:
    """Processes that together use `share` cores (each at most one) for `seconds`."""
    end_at = time.time() + seconds
    procs = []
    while share > 0.005:
        part = min(share, 1.0)
        procs.append(_start("burn", str(part), str(end_at)))
        share -= part
    return procs


def start_echo(db_path: Path, share: float, gap: float,
               seconds: float) -> list[subprocess.Popen[bytes]]:
    end_at = time.time() + seconds
    return [_start("echo", str(db_path), str(min(share, 1.0)), str(gap), str(end_at))]


if __name__ == "__main__":
    if sys.argv[1] == "burn":
        burn(float(sys.argv[2]), float(sys.argv[3]))
    else:
        echo(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))

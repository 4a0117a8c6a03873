"""What every bench shares: the machine line, the servers, timing, percentiles and the
RESULT lines, so that each bench file holds only what it measures.

Benches run from the repository root as modules (`python -m bench.<name>`): the
checkout's own `syncd` is then first on sys.path, in this process and in every child
it starts with `cwd=ROOT`, whatever version is installed. A RESULT line is

    RESULT <what, usually a ratio "x / y">: <value> [(goal ...)] [details]

and other people grep it (README, docs/performance.md): print it with `result()`.
Beside it: bench/legacy_writer.py (the legacy writer, its own program),
bench/syncd_run.py (a real `syncd run` and a change-stream watcher) and
bench/redis_cluster.py (local redis-servers and a Redis Cluster).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from syncd.embedded import EmbeddedMongo, EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


# -- the machine -------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """CPU model, core count and Python version, as one line."""
    return f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load() -> str:
    """The load average (1, 5, 15 min): other work on the same cores moves every figure."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cores_note() -> str:
    """Said beside the goals that need cores free of other work (issue 14)."""
    cores = os.cpu_count() or 1
    return "" if cores >= 8 else f"  ({cores} cores here: this figure depends on free cores)"


# -- printing ------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def result_line(what: str, value: str, rest: str = "") -> str:
    """`RESULT what: value rest` (rest starts with its own spacing), for a bench that
    prints its RESULT lines together at the end."""
    return f"RESULT {what}: {value}{rest}"


def result(what: str, value: str, rest: str = "") -> None:
    """Print one RESULT line now."""
    say(result_line(what, value, rest))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# -- timing --------------------------------------------------------------------------------


class Timer:
    """Wall-clock and CPU seconds of one pass. On a machine shared with other work the
    CPU time of the measuring thread is the steadier figure: a pass that loses the core
    to another process for a while is not charged for that while."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.thread_time() - self.cpu


def median_seconds(func: Callable[[], Any], rounds: int,
                   before: Callable[[], Any] = lambda: None) -> float:
    """The median wall-clock seconds of `rounds` calls of `func`, `before` run untimed
    ahead of each (a cache emptied, say): what "the median of --rounds" means in every
    bench that says it."""
    seconds = []
    for _ in range(rounds):
        before()
        began = time.perf_counter()
        func()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, utime + stime in seconds) of every process (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError, ValueError):
                continue
    return out


def cpu_seconds(pid: int | None, children: bool = False) -> float:
    """utime + stime of a process, with `children` also of its live descendants (the
    embedded Redis a `syncd run` starts), 0 if unknown."""
    if pid is None:
        return 0.0
    stats = _proc_stats()
    family, total = {pid}, 0.0
    changed = children
    while changed:
        changed = False
        for other, (parent, _) in stats.items():
            if parent in family and other not in family:
                family.add(other)
                changed = True
    for member in family:
        total += stats.get(member, (0, 0.0))[1]
    return total


def rss_mib() -> float:
    """This process's resident memory (Linux /proc), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


# -- servers and child processes -------------------------------------------------------------


@contextlib.contextmanager
def mongo_server(state: Path, url: str | None = None) -> Iterator[tuple[str, int | None]]:
    """(url, server pid): the given `url` as is (pid None), else syncd's embedded
    SecantusDB (`--sync-on-commit`, as users get it) in `state`, stopped on exit."""
    if url is not None:
        yield url, None
        return
    server = EmbeddedMongo(state)
    started = server.start()
    try:
        yield started, server.process.pid if server.process else None
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server(state: Path) -> Iterator[str]:
    """The URL of syncd's embedded redis-server in `state`, stopped on exit."""
    server = EmbeddedRedis(state)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def syncd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m syncd args` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "syncd", *args], cwd=ROOT,
                          capture_output=True, text=True)


def timed_get(url: str, timeout: float) -> float:
    """Seconds for one GET of `url`, its body read (a new connection each time)."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        answer.read()
    return time.perf_counter() - start

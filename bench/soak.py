"""An operator's chaos soak of `syncd run` (embedded servers) under two legacy writers.

A real `syncd run` (embedded SecantusDB and Redis, restarted as systemd's `Restart=`
would) follows an EEG2025-shaped metadata.db that two bench/soak_writer.py processes
write the legacy way. At random moments: SIGTERM or kill -9 and restart, kill -9 of
the embedded MongoDB or Redis (syncd restarts them), a 10 s BEGIN IMMEDIATE, VACUUM,
ALTER TABLE ADD COLUMN; every --backup-every s a copy by the backup API under a write
lock (the state as of that moment T); every 10 s a sample of syncd's resources.

At the end: `syncd verify`; `syncd restore --as-of T` of each copy compared with it
(every table's rows with typeof(), the SQL, sqlite_sequence); `_syncd_history`
against what the writers did, row by row, in order; the log (tracebacks, warnings,
the embedded servers' passwords). Work files stay in --work for a look.

    python -m bench.soak [--minutes 20] [--rows 10000] [--rate 10] [--work DIR]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, describe, load, result, say, verdict

SOURCE = "soak"


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (Linux /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                out[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes().replace(
                    b"\0", b" ").decode(errors="replace"))
            except (OSError, IndexError, ValueError):
                continue
    return out


def status_kb(pid: int, field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(found.group(1)) if found else -1


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Syncd:
    """`syncd run` as the service manager runs it."""

    def __init__(self, work: Path, db: Path, events: Any) -> None:
        self.work, self.db, self.event = work, db, events
        self.state, self.log = work / "state", work / "syncd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "SYNCD_MONGO_URL": "", "SYNCD_REDIS_URL": "",
                    "PYTHONPATH": str(ROOT)}

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "syncd", *args, "--sqlite", str(self.db), "--state-dir",
                str(self.state), "--source-id", SOURCE, "--timezone", "UTC"]

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd("run", "--http", "127.0.0.1:0"), cwd=self.work,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.event("start", pid=self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def daemon(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state / "daemon.json").read_text()))
        except (OSError, ValueError):
            return {}

    def ready(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc is not None:
            if self.daemon().get("pid") == self.proc.pid and self.daemon().get("ready"):
                return True
            time.sleep(0.5)
        return False

    def family(self) -> tuple[set[int], dict[int, tuple[int, str]]]:
        table, fam = processes(), set()
        if self.alive():
            assert self.proc is not None
            fam = {self.proc.pid}
            for _ in range(3):
                fam |= {p for p, (pp, _) in table.items() if pp in fam}
        return fam, table

    def child(self, name: str) -> int | None:
        fam, table = self.family()
        return next((p for p in fam if name in table[p][1]), None)

    def strays(self) -> list[int]:
        """Embedded servers of this state dir that the running syncd did not start."""
        fam, table = self.family()
        return [p for p, (_, cmd) in table.items() if p not in fam and (
            "secantusd" in cmd or "redis-server" in cmd) and (
            str(self.state) in cmd or os.path.realpath(f"/proc/{p}/cwd").startswith(
                str(self.state)))]

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        began = time.time()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.event("stopped", sig=int(sig), code=code, seconds=round(time.time() - began, 1))
        return code


def sample(s: Syncd) -> dict[str, Any]:
    """syncd's RSS, threads, fds, children; the state dir's and the change log's size."""
    row: dict[str, Any] = {"t": time.time(), "state_bytes": du(s.state)}
    try:
        if s.alive() and s.proc is not None:
            pid, (fam, _) = s.proc.pid, s.family()
            row.update(pid=pid, rss_kb=status_kb(pid, "VmRSS"), fds=len(os.listdir(
                f"/proc/{pid}/fd")), threads=status_kb(pid, "Threads"), children=len(fam) - 1,
                strays=len(s.strays()), **{f"{n}_rss_kb": status_kb(p, "VmRSS") for n in (
                    "secantusd", "redis") if (p := s.child(n))})
        c = sqlite3.connect(f"file:{s.db}?mode=ro", uri=True, timeout=1)
        row["changes_rows"] = c.execute("SELECT count(*) FROM _syncd_changes").fetchone()[0]
        c.close()
    except (OSError, sqlite3.Error) as exc:  # a process that just ended, a locked file
        row["error"] = str(exc)
    return row


def backup(db: Path, dest: Path) -> float:
    """A copy and the moment T it is the state of: a write lock is held (no statement
    pending) while another connection copies; a later statement's time is after T."""
    lock = sqlite3.connect(db, isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")
    try:
        src, dst = sqlite3.connect(db), sqlite3.connect(dest)
        src.backup(dst)
        dst.close()
        src.close()
        at = time.time()
        time.sleep(0.01)  # SQLite's 'now' is in whole milliseconds
    finally:
        lock.execute("COMMIT")
        lock.close()
    return at


def chaos(s: Syncd, a: argparse.Namespace, until: float, rng: random.Random,
          copies: list[tuple[Path, float]], stats: collections.Counter,
          locks: list[tuple[float, float]]) -> None:
    acts, weights = ["sigterm", "kill9", "secantusd", "redis", "lock", "vacuum", "alter"], \
        [3, 3, 2, 2, 2, 2, 1]
    next_copy, next_act, alters = time.time() + a.backup_every / 2, time.time() + 15, 0
    while time.time() < until:
        time.sleep(0.5)
        if not s.alive():  # Restart=on-failure, RestartSec=2
            s.event("exited-by-itself", code=s.proc.returncode if s.proc else None)
            stats["exited_by_itself"] += 1
            time.sleep(2)
            s.start()
        if time.time() >= next_copy:
            dest = s.work / f"copy-{len(copies)}.db"
            copies.append((dest, backup(s.db, dest)))
            s.event("copy", path=dest.name, at=iso(copies[-1][1]))
            next_copy = time.time() + a.backup_every
        if time.time() < next_act:
            continue
        next_act = time.time() + rng.uniform(10, 35)
        act = rng.choices(acts, weights)[0]
        act = "vacuum" if act == "alter" and alters >= 5 else act
        stats[act] += 1
        began = time.time()
        if act in ("sigterm", "kill9"):
            code = s.stop(signal.SIGTERM if act == "sigterm" else signal.SIGKILL)
            stats["sigterm_not_0"] += act == "sigterm" and code != 0
            time.sleep(rng.uniform(0, 3))
            s.start()
        elif act in ("secantusd", "redis"):
            pid = s.child(act)
            if pid is None:
                stats[f"{act}_not_found"] += 1
            else:
                os.kill(pid, signal.SIGKILL)
                s.event(f"kill -9 {act}", pid=pid)
        else:
            c = sqlite3.connect(s.db, isolation_level=None, timeout=30)
            try:
                if act == "lock":
                    c.execute("BEGIN IMMEDIATE")
                    time.sleep(10)
                    c.execute("COMMIT")
                elif act == "vacuum":
                    c.execute("VACUUM")
                else:
                    table = ("training_runs", "epoch_history", "subjects", "model_checkpoints",
                             "config")[alters]
                    c.execute(f"ALTER TABLE {table} ADD COLUMN soak_c{alters} TEXT"
                              + " DEFAULT 'x'" * (alters % 2))
                    alters += 1
                s.event(act, seconds=round(time.time() - began, 2))
            except sqlite3.Error as exc:
                s.event(f"{act} failed", err=str(exc))
            finally:
                c.close()
            locks.append((began, time.time()))


def dump(path: Path) -> dict[str, Any]:
    """Every legacy table's rows (rowid, values, typeof), the SQL, sqlite_sequence."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    c.text_factory = bytes
    mine = "name NOT LIKE '\\_syncd%' ESCAPE '\\'"
    out: dict[str, Any] = {"sqlite_sequence": c.execute(
        f"SELECT name, seq FROM sqlite_sequence WHERE {mine} ORDER BY name").fetchall()}
    for kind, name, sql in c.execute(f"SELECT type, name, sql FROM sqlite_master WHERE {mine}"
                                     " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").fetchall():
        out[f"{kind.decode()} {name.decode()}"] = sql
        if kind == b"table":
            cols = [f'"{r[1].decode()}"'
                    for r in c.execute(f'PRAGMA table_info("{name.decode()}")')]
            out[f"rows {name.decode()}"] = c.execute(
                f"SELECT rowid, {', '.join(cols + [f'typeof({x})' for x in cols])} "
                f'FROM "{name.decode()}" ORDER BY rowid').fetchall()
    c.close()
    return out


def check_history(url: str, work: Path) -> collections.Counter:
    """Each row's versions against what its writer did, in order. Counted apart: a
    `found` version equal to the row's state then (a duplicate) or not (new), and a
    delete just before the same log entry's insert that no writer caused (phantom)."""
    from pymongo import MongoClient

    from syncd.sinks.history import decode_row
    want: dict[tuple[str, Any], list] = collections.defaultdict(list)
    counts: collections.Counter = collections.Counter()
    for f in sorted(work.glob("writer-*.jsonl")):
        for item in map(json.loads, f.read_text().splitlines()):
            counts["writes_ok" if item["ok"] else "writes_failed"] += 1
            if item["ok"]:
                key, vals = (item["table"], item["key"]), item["vals"]
                if item["op"] == "replace" and vals.pop("_existed"):
                    want[key].append(("delete", {}))
                want[key].append(("insert" if item["op"] == "replace" else item["op"], vals))
    have: dict[tuple[str, Any], list] = collections.defaultdict(list)
    client = MongoClient(url)
    for d in client["syncd"]["_syncd_history"].find({"source": SOURCE, "op": {
            "$ne": "snapshot"}}).sort([("jd", 1), ("seq", 1), ("n", 1)]):
        have[(d["table"], d["key"][0])].append((d["op"], decode_row(d) or {}, d.get("found"),
                                                d["seq"]))
    client.close()
    for key in set(want) | set(have):
        expected, got, i, state = want.get(key, []), have.get(key, []), 0, None
        for j, (op, row, found, seq) in enumerate(got):
            if found:
                same = state == (None if op == "delete" else row)
                counts["found_duplicate" if same else "found_new"] += 1
            elif (op == "delete" and j + 1 < len(got) and got[j + 1][0] == "insert"
                  and got[j + 1][3] == seq and (i >= len(expected) or expected[i][0] != "delete")):
                counts["phantom_delete"] += 1
                continue
            elif i >= len(expected):
                counts["extra"] += 1
            else:
                wop, wvals = expected[i]
                counts["wrong"] += wop != op or any(row.get(k) != v for k, v in wvals.items())
                i += 1
            state = None if op == "delete" else row
        counts["missing"] += len(expected) - i
    return counts


def log_check(s: Syncd) -> dict[str, Any]:
    text = s.log.read_text(errors="replace")
    secrets = [p.read_text().strip() for p in s.state.glob("*/credentials")]
    logs = [s.log, *sorted((s.state / "logs").glob("*"))]
    shapes = collections.Counter(re.sub(r"\d+", "N", m.group(0))[:140] for m in re.finditer(
        r"(WARNING|ERROR|CRITICAL) .*", text))
    leaks = [str(f) for f in logs for x in secrets if x and x in f.read_text(errors="replace")]
    return {"tracebacks": text.count("Traceback"), "leaks": leaks,
            "warnings": shapes.most_common(12)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=10.0, help="writes/s of each of 2 writers")
    ap.add_argument("--backup-every", type=float, default=180)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--work", type=Path, help="default: a new folder under /tmp")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="syncd-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"soak: {describe()}, load {load()}; work files in {work}")
    from syncd.embedded import EmbeddedMongo
    from syncd.sample import make_eeg2025
    db, rng = work / "metadata.db", random.Random(a.seed)
    make_eeg2025(db, rows=a.rows)

    def event(what: str, **extra: Any) -> None:
        say(f"{time.strftime('%H:%M:%S')} {what} {extra or ''}")

    s, stats = Syncd(work, db, event), collections.Counter()
    s.start()
    if not s.ready(300):
        s.stop(signal.SIGTERM)
        sys.exit(f"syncd run was not ready in 300 s: see {s.log}")
    halt, samples = threading.Event(), [sample(s)]
    threading.Thread(target=lambda: [samples.append(sample(s)) for _ in iter(
        lambda: halt.wait(10), True)], daemon=True).start()
    end_at = time.time() + a.minutes * 60
    writers = [subprocess.Popen([sys.executable, "-m", "bench.soak_writer", json.dumps(
        {"wid": w, "db": str(db), "end_at": end_at, "rate": a.rate, "seed": a.seed * 10 + w,
         "out": str(work / f"writer-{w}.jsonl")})], cwd=ROOT) for w in (0, 1)]
    copies: list[tuple[Path, float]] = []
    locks: list[tuple[float, float]] = []
    try:
        chaos(s, a, end_at - 20, rng, copies, stats, locks)
    finally:  # the writers end at end_at; after an error they are stopped
        codes = [w.wait() if sys.exc_info()[0] is None else w.kill() for w in writers]
        _ = sys.exc_info()[0] is not None and s.alive() and s.stop(signal.SIGTERM)
    last_copy = work / f"copy-{len(copies)}.db"
    copies.append((last_copy, backup(db, last_copy)))
    if not s.alive():
        s.start()
    last = sqlite3.connect(db).execute("SELECT max(seq) FROM _syncd_changes").fetchone()[0]
    deadline = time.time() + 300  # caught up: the daemon's position reaches the log's end
    while s.daemon().get("pid") != s.proc.pid or s.daemon().get("seq", -1) < (last or 0):
        if time.time() > deadline:
            sys.exit(f"syncd run did not catch up in 300 s: see {s.log}")
        time.sleep(1)
    history = check_history(EmbeddedMongo(s.state).running_url() or "", work)
    samples.append(sample(s))
    halt.set()
    stop_code, strays = s.stop(signal.SIGTERM), s.strays()
    verify = subprocess.run(s.cmd("verify"), cwd=work, env=s.env, capture_output=True, text=True)
    exact = []
    for path, at in copies:
        to = work / f"restored-{path.name}"
        began = time.time()
        done = subprocess.run(s.cmd("restore", "--to", str(to), "--as-of", iso(at)), cwd=work,
                              env=s.env, capture_output=True, text=True)
        same = done.returncode == 0 and dump(path) == dump(to)
        exact.append(same)
        event("restore", copy=path.name, code=done.returncode, exact=same,
              seconds=round(time.time() - began, 1))
    writes = [json.loads(x) for f in work.glob("writer-*.jsonl")
              for x in f.read_text().splitlines()]
    outside = [x for x in writes if not x["ok"] and x["err"] and not any(
        b - 6 <= x["t1"] <= e + 1 for b, e in locks)]
    first, end = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    say(f"chaos: {dict(stats)}; writers' exit codes {codes}; log: {log_check(s)}")
    result("soak verify after the chaos", verdict(verify.returncode == 0 and stop_code == 0),
           f"  (exit {verify.returncode}; last SIGTERM exit {stop_code}; strays {strays})")
    result("soak restores --as-of equal to the copy", f"{sum(exact)}/{len(exact)}")
    result("soak history: versions missing / wrong / new found", f"{history['missing']} / "
           f"{history['wrong']} / {history['found_new']}", f"  ({dict(history)})")
    result("soak legacy writes failed outside the chaos' own locks", str(len(outside)))
    result("soak syncd RSS MiB / fds / threads, start -> end",
           f"{first.get('rss_kb', 0) / 1024:.0f} -> {end.get('rss_kb', 0) / 1024:.0f} / "
           f"{first.get('fds')} -> {end.get('fds')} / "
           f"{first.get('threads')} -> {end.get('threads')}",
           f"  (max RSS {max(x.get('rss_kb', 0) for x in samples) / 1024:.0f} MiB; state dir "
           f"{first['state_bytes'] / 2**20:.0f} -> {end['state_bytes'] / 2**20:.0f} MiB; change "
           f"log rows max {max(x.get('changes_rows', 0) for x in samples)})")
    (work / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))


if __name__ == "__main__":
    main()

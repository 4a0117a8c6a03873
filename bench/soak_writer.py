"""The soak's legacy writer (bench/soak.py), its own process: the legacy scripts'
pattern (a new connection per write, default 5 s busy timeout), a mix of epoch_history
INSERTs, training_runs UPDATEs, INSERT OR REPLACE and DELETEs, each write and whether
it committed logged as a JSON line, for the soak to compare history with. Each writer
owns the runs whose run_id % 2 is its number, so it knows whether a row exists. It
imports nothing of syncd's.

    python -m bench.soak_writer '{"wid": 0, "db": ..., "end_at": T, "rate": 10,
                                  "seed": N, "out": PATH}'
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
from typing import Any

STATUSES = ("running", "completed", "failed", "stopped", "queued")


def do(db: str, sql: str, params: tuple[Any, ...]) -> tuple[bool, int | None, int, str]:
    """One write: (committed, lastrowid, rowcount, error)."""
    try:
        c = sqlite3.connect(db)  # a new connection per write, default 5 s timeout
        try:
            cur = c.execute(sql, params)
            c.commit()
            return True, cur.lastrowid, cur.rowcount, ""
        finally:
            c.close()
    except sqlite3.OperationalError as exc:
        return False, None, 0, str(exc)


def writer(cfg: dict[str, Any]) -> None:
    wid, db, rng = cfg["wid"], cfg["db"], random.Random(cfg["seed"])
    conn = sqlite3.connect(db)
    live = {r for (r,) in conn.execute("SELECT run_id FROM training_runs WHERE run_id % 2 = ?",
                                       (wid,))}
    conn.close()
    gone: set[int] = set()
    epochs: list[int] = []
    new_run, due, n = 1_000_000 + wid, time.time(), 0
    with open(cfg["out"], "a", buffering=1) as out:
        while time.time() < cfg["end_at"]:
            due += 1.0 / cfg["rate"]
            time.sleep(max(0.0, due - time.time()))
            n, r, t0 = n + 1, rng.random(), time.time()
            stamp, note = time.strftime("%Y-%m-%dT%H:%M:%S"), f"w{wid}-{n}" + "-é✓" * (n % 7 == 0)
            if r < 0.55 or not live:
                vals: dict[str, Any] = {"run_id": rng.choice(sorted(live | {1})), "epoch": n,
                                        "train_loss": rng.random(), "val_loss": rng.random(),
                                        "duration_seconds": rng.uniform(1, 9), "timestamp": stamp}
                op, table = "insert", "epoch_history"
                ok, key, _, err = do(db, f"INSERT INTO epoch_history ({', '.join(vals)}) VALUES "
                                     f"({', '.join('?' * len(vals))})", tuple(vals.values()))
                if ok:
                    epochs.append(key)
            elif r < 0.80:
                key, op, table = rng.choice(sorted(live)), "update", "training_runs"
                vals = {"status": rng.choice(STATUSES), "notes": note}
                ok, _, count, err = do(db, "UPDATE training_runs SET status = ?, notes = ? "
                                       "WHERE run_id = ?", (vals["status"], note, key))
                ok = ok and count == 1
            elif r < 0.88:
                if rng.random() < 0.3 and gone:
                    key = rng.choice(sorted(gone))
                elif rng.random() < 0.3:
                    new_run += 2
                    key = new_run
                else:
                    key = rng.choice(sorted(live))
                vals = {"run_id": key, "challenge": rng.choice((1, 2)), "model_name": "EEGNeX",
                        "start_time": stamp, "status": "running", "notes": note,
                        "best_val_loss": 2 ** 62 if n % 11 == 0 else float(n)}
                op, table = "replace", "training_runs"
                ok, _, _, err = do(db, f"INSERT OR REPLACE INTO training_runs ({', '.join(vals)}) "
                                   f"VALUES ({', '.join('?' * len(vals))})", tuple(vals.values()))
                if ok:
                    vals["_existed"] = key in live
                    live.add(key)
                    gone.discard(key)
            elif r < 0.96 and epochs:
                key, vals, op, table = epochs.pop(rng.randrange(len(epochs))), {}, "delete", \
                    "epoch_history"
                ok, _, _, err = do(db, "DELETE FROM epoch_history WHERE id = ?", (key,))
                if not ok:
                    epochs.append(key)
            elif len(live) > 3:
                key, vals, op, table = rng.choice(sorted(live)), {}, "delete", "training_runs"
                ok, _, _, err = do(db, "DELETE FROM training_runs WHERE run_id = ?", (key,))
                if ok:
                    live.discard(key)
                    gone.add(key)
            else:
                continue
            out.write(json.dumps({"ok": ok, "op": op, "table": table, "key": key, "vals": vals,
                                  "t0": t0, "t1": time.time(), "err": err}) + "\n")


if __name__ == "__main__":
    writer(json.loads(sys.argv[1]))

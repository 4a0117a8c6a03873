"""A legacy writer keeps committing, exactly as the EEG2025 scripts do, while syncd migrates."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from syncd.sample import make_eeg2025
from tests.conftest import run_cli

WRITER = textwrap.dedent("""
    import sqlite3, sys, time, json
    path, stop = sys.argv[1], sys.argv[2]
    import os
    commits = errors = 0
    worst = 0.0
    run = 0
    while not os.path.exists(stop):
        t = time.perf_counter()
        try:
            conn = sqlite3.connect(path)  # a new connection per write, default 5 s timeout
            cur = conn.execute("INSERT INTO training_runs (challenge, model_name, start_time, "
                               "status, config) VALUES (2, 'EEGNeX', '2025-10-20T10:00:00', "
                               "'running', '{}')")
            run = cur.lastrowid
            conn.execute("INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss, "
                         "learning_rate, duration_seconds, timestamp) VALUES "
                         "(?, 1, 0.1, 0.2, 0.002, 1.0, '2025-10-20T10:01:00')", (run,))
            conn.commit()
            conn.execute("UPDATE training_runs SET status='completed' WHERE run_id=?", (run,))
            conn.commit()
            conn.close()
            commits += 1
        except sqlite3.OperationalError as exc:
            errors += 1
            print("ERROR", exc, file=sys.stderr)
        worst = max(worst, time.perf_counter() - t)
    print(json.dumps({"commits": commits, "errors": errors, "worst": worst}))
""")


def test_legacy_writer_never_fails_while_migrate_reads(tmp_path, target_args, db):
    legacy = tmp_path / "metadata.db"
    make_eeg2025(legacy, rows=40000)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(legacy), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        migrated = run_cli("migrate", "--sqlite", legacy, "--chunk-size", "2000", *target_args)
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=60)
    assert migrated.code == 0, migrated
    stats = json.loads(out)
    assert stats["errors"] == 0, err
    assert stats["commits"] > 0
    # A backfill copies each chunk as it was when read; the next migrate catches up.
    again = run_cli("migrate", "--sqlite", legacy, "--json", *target_args)
    assert json.loads(again.out)["kind"] == "reconcile"
    assert run_cli("verify", "--sqlite", legacy, *target_args).code == 0

"""Lossless: every row comes back exactly from MongoDB (issue 23, section 1).

Awkward legacy values go through `syncd migrate` into a real SecantusDB; the stored
documents are read back and inverted, and each value must equal the legacy one with
its `typeof()`. `syncd verify --lossless` must agree, name table, key and column when
an inverse is wrong, and call a builder without an inverse lossy (exit 3).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.values import RawText, text_factory
from syncd.client.tracker import Tracker
from syncd.engine.migration_files import build_model, load_migrations
from syncd.projection.canonical import canonical, canonical_row, typeof
from syncd.projection.context import RowContext
from syncd.projection.envelope import ORIG
from syncd.projection.inverse import Inverter
from syncd.projection.project import Params
from syncd.sample import make_eeg2025
from tests.conftest import NEWEST, ROOT, run_cli

TIMES = {  # start_time text -> what `_orig` must hold for it (None: nothing)
    1: ("2025-10-20T14:03:38", None),                   # isoformat(), whole seconds
    2: ("2025-10-20T14:03:38.728000", None),            # isoformat(), whole milliseconds
    3: ("2025-10-20T14:03:38.728523", 523),             # isoformat(): the lost microseconds
    4: ("2025-10-20 14:03:38.728523", "2025-10-20 14:03:38.728523"),  # another form: text
    5: ("2025-10-20T14:03:38+02:00", "2025-10-20T14:03:38+02:00"),    # an offset: text
    6: ("2025-10-20", "2025-10-20"),                    # a date alone: text
    7: ("yesterday", None),                             # not a time: kept in the field
}
CONFIGS = {  # config text -> whether `_orig` must keep it
    1: ('{"a": 1.0, "b": [1, 2.5, null, true]}', False),  # what json.dumps writes
    2: ('{"a": 1e3}', True),                               # 1e3 reads as 1000.0
    3: ('{"z": 1, "a": 2}', False),                        # key order survives by itself
    4: ('{"a": 1, "a": 2}', True),                         # duplicate keys
    5: ('{"a":1}', True),                                  # spacing
    6: ('{"s": "caf\\u00e9", "t": "café"}', True),         # a raw non-ASCII character
    7: ('[1, 2]', False),                                  # JSON, not an object: kept
}


def awkward_db(path: Path) -> None:
    """The EEG2025 sample, plus rows with every awkward value a legacy script can write."""
    make_eeg2025(path, runs=3)
    conn = sqlite3.connect(path)
    for i in TIMES:
        conn.execute(
            "INSERT INTO training_runs (run_id, challenge, model_name, start_time, end_time, "
            "status, best_val_loss, best_epoch, total_epochs, config, notes) "
            "VALUES (?, ?, 'm', ?, ?, 'completed', ?, 3, ?, ?, ?)",
            (1000 + i, 2, TIMES[i][0], TIMES[8 - i][0], [-0.0, float("inf"), 1.5, None, 2,
             "low", 0.25][i - 1], 2**63 - 1 if i == 1 else -(2**63), CONFIGS[i][0],
             sqlite3.Binary(b"\x00\xff") if i == 2 else None))
    conn.execute("UPDATE training_runs SET notes = CAST(x'ff00c3' AS TEXT) WHERE run_id = 1003")
    conn.execute("UPDATE training_runs SET model_name = CAST(x'c328' AS TEXT), "
                 "start_time = CAST(x'80' AS TEXT) WHERE run_id = 1004")
    for i, flag in enumerate([1, 0, sqlite3.Binary(b"\x01"), "true", 1.0, "maybe", None]):
        conn.execute("INSERT INTO model_checkpoints (run_id, epoch, val_loss, file_path, "
                     "timestamp, is_best) VALUES (1001, ?, 0.5, 'p', ?, ?)",
                     (i, TIMES[i + 1][0], flag))
    conn.execute("INSERT INTO epoch_history (run_id, epoch, train_loss, timestamp) "
                 "VALUES (1001, 9223372036854775807, -0.0, '2025-03-30T02:30:00.000001')")
    conn.execute('CREATE TABLE odd (k INTEGER PRIMARY KEY, v, "a.b" TEXT, "_orig" TEXT)')
    for value in (None, -0.0, float("inf"), float("-inf"), 2**63 - 1, -(2**63), 1.0, 1,
                  "1", "", "a\x00b", sqlite3.Binary(b""), sqlite3.Binary(b"\x00\xff")):
        conn.execute('INSERT INTO odd (v, "a.b", "_orig") VALUES (?, ?, ?)', (value, "x", "y"))
    conn.execute("INSERT INTO odd (v) VALUES (CAST(x'ff' AS TEXT))")
    conn.execute("CREATE TABLE nopk (a, b)")
    conn.executemany("INSERT INTO nopk VALUES (?, ?)", [(1, 1.0), (1, 1.0), ("x", None)])
    conn.commit()
    conn.close()


def legacy_rows(path: Path, table: str) -> dict[Any, list[tuple[Any, str]]]:
    """Each row's (value, typeof) pairs, by rowid, as SQLite itself says."""
    conn = sqlite3.connect(path)
    conn.text_factory = text_factory
    names = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    cols = ", ".join(f'"{n}", typeof("{n}")' for n in names)
    out = {}
    for row in conn.execute(f'SELECT rowid, {cols} FROM "{table}"'):
        out[row[0]] = [(row[1 + 2 * i], row[2 + 2 * i]) for i in range(len(names))]
    conn.close()
    return out


@pytest.fixture
def awkward(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.db"
    awkward_db(path)
    return path


def test_canonical_tells_apart_what_python_calls_equal() -> None:
    values = [1, 1.0, "1", b"1", RawText(b"1\xff"), None, 0.0, -0.0, float("inf"), True]
    assert len({canonical(v) for v in values}) == len(values)
    assert canonical(RawText(b"\xff")) == ("text", b"\xff") != canonical(b"\xff")
    assert canonical_row([2**63 - 1, -(2**63)]) == (("integer", 2**63 - 1),
                                                    ("integer", -(2**63)))
    assert typeof(3.5) == "real" and typeof("é") == "text" and typeof(b"") == "blob"


def test_the_quick_time_check_agrees_with_isoformat() -> None:
    """RowContext.datetime decides `_orig` by the text's shape; isoformat() must agree."""
    ctx = RowContext(Params("s", "UTC"))
    ctx.keeping = True
    texts = ["2025-10-20T14:03:38", "2025-10-20T14:03:38.728523", "2025-10-20T14:03:38.000000",
             "2025-10-20T14:03:38.728000", "2025-10-20T14:03:38.728", "2025-10-20 14:03:38",
             "2025-10-20T14:03:38,728523", "2025-W43-1T14:03:38.728523", "2025-W43-1T14:03:38",
             "20251020T140338.728523", "2025-10-20T14:03", "2025-10-20T24:00:00",
             "2025-10-20T14:03:38.7285", "0001-01-01T00:00:00.000001", "2025-10-20x14:03:38"]
    for text in texts:
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        ctx.orig = None
        assert ctx.datetime(text, "t") == parsed
        rest = parsed.microsecond % 1000
        want = text if parsed.isoformat() != text else (rest or None)
        assert (ctx.orig or {}).get("t") == want, text


def test_every_awkward_row_comes_back_from_mongodb(awkward, target_args, db):
    assert run_cli("migrate", "--sqlite", awkward, *target_args).code == 0
    result = run_cli("verify", "--lossless", "--sqlite", awkward, *target_args)
    assert result.code == 0, result
    assert "every row given back exactly" in result.out
    assert "hdf5_files is filled from the legacy hdf5 files" in result.out

    # The stored documents alone, inverted, equal the legacy rows with their typeof().
    model = build_model(load_migrations(), NEWEST)
    source = SQLiteSource(awkward)
    params = Params("testhost", "UTC", NEWEST)
    checked = 0
    for info, mapping in model.resolve(source.schema()):
        inverter = Inverter(info, mapping, params)
        legacy = legacy_rows(awkward, info.name)
        docs = list(db[mapping.collection].find({"_source": "testhost"}))
        assert len(docs) == len(legacy), info.name
        back = sorted((inverter.row(d) for d in docs), key=lambda r: repr(canonical_row(r)))
        want = sorted(([v for v, _ in row] + ([rowid] if inverter.with_rowid else [])
                       for rowid, row in legacy.items()), key=lambda r: repr(canonical_row(r)))
        assert [canonical_row(r) for r in back] == [canonical_row(r) for r in want], info.name
        types = sorted(tuple(t for _, t in row) for row in legacy.values())
        assert sorted(tuple(map(typeof, r[:len(info.column_names)])) for r in back) == types
        checked += len(docs)
    assert checked > 50

    # `_orig` holds only what a conversion drops.
    for i, (text, kept) in TIMES.items():
        doc = db.experiments.find_one({"run_id": 1000 + i})
        orig = doc.get(ORIG, {})
        if i != 4:
            assert orig.get("start_time") == kept, text
        assert ("config" in orig) == CONFIGS[i][1], CONFIGS[i][0]
        if CONFIGS[i][1]:
            assert orig["config"] == CONFIGS[i][0]
    assert db.experiments.find_one({"run_id": 1001})["config"] == {"a": 1.0, "b": [1, 2.5,
                                                                           None, True]}
    assert list(db.experiments.find_one({"run_id": 1003})["config"]) == ["z", "a"]
    plain = db.experiments.find_one({"run_id": 2})  # the sample: isoformat() with microseconds
    assert set(plain[ORIG]) == {"start_time", "end_time"}
    assert all(isinstance(v, int) for v in plain[ORIG].values())
    flags = {c["epoch"]: c.get(ORIG, {}).get("is_best", "-") for c in db.checkpoints.find(
        {"run_id": 1001})}
    # (1.0 in a BOOLEAN column is stored as the INTEGER 1: NUMERIC affinity.)
    assert flags == {0: "-", 1: "-", 2: b"\x01", 3: "true", 4: "-", 5: "-", 6: "-"}
    epoch = db.epochs.find_one({"epoch": 2**63 - 1})
    assert epoch["id"] > 0 and epoch["timestamp"].microsecond == 0 and epoch[ORIG]


def test_a_zone_with_summer_time_round_trips(awkward, mongo_url, db_name, db):
    args = ["--mongo-url", mongo_url, "--database", db_name, "--source-id", "berlin",
            "--timezone", "Europe/Berlin"]
    assert run_cli("migrate", "--sqlite", awkward, *args).code == 0
    result = run_cli("verify", "--lossless", "--sqlite", awkward, *args)
    assert result.code == 0, result
    gap = db.epochs.find_one({"epoch": 2**63 - 1})  # 02:30 on 30 March: no such wall time
    assert gap[ORIG] == {"timestamp": "2025-03-30T02:30:00.000001"}


def write_migrations(folder: Path, inverse: str) -> Path:
    """The bundled migrations, and a 0006 mapping `odd` with a builder and `inverse`."""
    shutil.copytree(ROOT / "migrations", folder, ignore=shutil.ignore_patterns("__*"))
    (folder / f"{NEWEST + 1:04d}_odd.py").write_text(
        f"VERSION = {NEWEST + 1}\nDESCRIPTION = 'odd, built'\n\n"
        "def build(row, ctx):\n    return {'k': row['k'], 'value': row['v'], 'ab': row['a.b'],"
        " 'o': row['_orig']}\n\n"
        "def back(doc, ctx):\n    return {'k': doc['k'], 'v': doc['value'] if doc['k'] != 3 "
        "else 3, 'a.b': doc['ab'], '_orig': doc['o']}\n\n"
        "def upgrade(model):\n"
        f"    model.map_table('odd', 'odd', build=build{inverse})\n")
    return folder


def test_a_wrong_inverse_is_named_by_table_key_and_column(awkward, target_args, tmp_path):
    folder = write_migrations(tmp_path / "m", ", inverse=back")
    args = ["--sqlite", awkward, "--migrations", folder, *target_args]
    assert run_cli("migrate", *args).code == 0
    result = run_cli("verify", "--lossless", *args)
    assert result.code == 1, result
    assert ('odd (table odd): row {"k": 3}, column v: real inf, given back integer 3'
            in result.out), result.out
    data = json.loads(run_cli("verify", "--lossless", "--json", *args).out)
    odd = next(c for c in data["collections"] if c["collection"] == "odd")
    assert odd["not_given_back"] == 1 and data["totals"]["not_given_back"] == 1
    assert odd["samples"]["not_given_back"] == [
        {"key": {"k": 3}, "column": "v", "row": "real inf", "given_back": "integer 3"}]
    assert run_cli("verify", *args).code == 0  # target == projection still holds


def test_a_builder_without_inverse_is_lossy(awkward, target_args, tmp_path):
    folder = write_migrations(tmp_path / "m", "")
    args = ["--sqlite", awkward, "--migrations", folder, *target_args]
    assert run_cli("migrate", *args).code == 0
    result = run_cli("verify", "--lossless", *args)
    assert result.code == 3, result
    assert (f"lossy: table odd -> odd: migration {NEWEST + 1:04d} builds its documents and "
            "declares no inverse") in result.out
    assert "LOSSY" in result.out
    assert run_cli("verify", *args).code == 0


def test_a_database_of_the_old_model_keeps_working_and_upgrades(awkward, target_args, db):
    """A target migrated by 0002 (no inverse) verifies as before, is called lossy by
    --lossless, and the move to the lossless version re-projects it with `_orig`."""
    old = NEWEST - 1
    args = ["--sqlite", awkward, *target_args]
    assert run_cli("migrate", "--to", old, *args).code == 0
    doc = db.epochs.find_one({"run_id": 1})
    assert ORIG not in doc and "id" not in doc
    assert run_cli("verify", *args).code == 0
    result = run_cli("verify", "--lossless", *args)
    assert result.code == 3 and "migration 0002 builds its documents" in result.out, result
    assert run_cli("migrate", *args).code == 0  # what `syncd run` does at start-up too
    doc = db.epochs.find_one({"run_id": 1})
    assert doc["id"] > 0 and isinstance(doc[ORIG]["timestamp"], int)
    assert run_cli("verify", "--lossless", *args).code == 0


def test_the_real_fixture_is_lossless_and_readers_never_see_orig(fixture_db, target_args, db):
    args = ["--sqlite", fixture_db, *target_args]
    assert run_cli("migrate", *args).code == 0
    result = run_cli("verify", "--lossless", *args)
    assert result.code == 0, result
    assert db.experiments.count_documents({ORIG: {"$exists": True}}) == 37
    found = Tracker(db).history(34)
    docs = [found["experiment"], *found["epochs"], *found["checkpoints"]]
    assert len(docs) == 5 and not any(ORIG in d for d in docs)
    shown = run_cli("experiments", "history", "34", "--json", *target_args)
    assert shown.code == 0 and ORIG not in shown.out and '"checkpoint_id"' in shown.out

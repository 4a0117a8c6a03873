"""`CounterWatch`: the AUTOINCREMENT counters legacy scripts write themselves.

A restore gives each AUTOINCREMENT table the counter its last schema record read,
moved on by the rows inserted from that record's moment on (syncd.engine.restore): an
INSERT raises `sqlite_sequence` to its rowid, and the change log holds every insert.
What the log cannot hold is a counter moved by no insert: a script writing
`sqlite_sequence` itself (the reset idiom `DELETE FROM sqlite_sequence WHERE name =
't'`, an `UPDATE` of it), or an INSERT that takes an id and inserts nothing (`INSERT OR
IGNORE` of a row a UNIQUE column refuses, an UPSERT that ends in its UPDATE): no
trigger fires for the counter, and no schema version moves.

So each step that finds a commit (`PRAGMA data_version` moved, or a file event) also
reads `sqlite_sequence` (one small SELECT in the step's read transaction, beside the
change log), and compares each counter with what a restore would make of it: the
counter known (read at a record, or at an earlier step) and the inserts the rounds
held since. An equal counter is explained by the inserts and costs nothing more;
one that differs is recorded at once (`VersionRecorder.record_schemas`: stamped
before its read, in memory before the round is written), so "caught up" means
"recorded". The moment recorded is when syncd saw the change: a restore as of the
few milliseconds between a script's write and the next step still has the old
counter. When the step's round is a whole batch (more committed than one round
reads), the counter already holds inserts of rounds not read yet: the comparison
waits for the next step, which comes at once, after those rounds are written. A
change made while syncd was stopped is recorded at its next start (every
AUTOINCREMENT table's counter is recorded then).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legacy_adapters.feed import FeedRound, Then


class CounterWatch:
    """The counters of the followed AUTOINCREMENT tables a restore would give now."""

    def __init__(self) -> None:
        # table -> (its counter as a restore makes it, the moment its record was stamped)
        self.known: dict[str, tuple[int | None, float]] = {}
        # table -> the highest rowid inserted (at or after that moment) since the last read
        self.pending: dict[str, int] = {}
        self._settled: FeedRound | None = None

    def recorded(self, jd: float, counters: Mapping[str, int | None],
                 gone: list[str]) -> None:
        """Schema records stamped at `jd` hold these counters; `gone` tables are no longer
        AUTOINCREMENT tables syncd follows."""
        for table in gone:
            self.known.pop(table, None)
            self.pending.pop(table, None)
        for table, counter in counters.items():
            self.known[table] = (counter, jd)
            self.pending.pop(table, None)

    def saw(self, round_: FeedRound) -> None:
        """Count the inserts of a round being written (once: the one read beside the
        counters was counted then)."""
        if round_ is not self._settled:
            self._note(round_)

    def _note(self, round_: FeedRound) -> None:
        known, pending = self.known, self.pending
        if not known:
            return
        for change in round_.changes:
            if change.op != "i" or change.rowid is None or change.table not in known:
                continue
            at = change.at
            if at is not None and at < known[change.table][1]:
                continue  # its record's counter holds it already (or a reset undid it)
            if change.rowid > pending.get(change.table, change.rowid - 1):
                pending[change.table] = change.rowid
        if round_.changes:
            return
        for item in round_.items:  # a scan: the new rows it found
            name = item.table.name
            if item.inserted is True and item.table.rowid and name in known and item.chunk.rows:
                top = max(row[0] for row in item.chunk.rows)
                if top > pending.get(name, top - 1):
                    pending[name] = top

    def unexplained(self, now: Mapping[str, int],
                    first: FeedRound | None) -> list[str] | None:
        """The tables whose counter `now` (read beside the round `first`) is not what the
        inserts since make of the known one: those a record must fix. The others'
        counters become the known ones. None when `first` is not all that was committed
        (a whole batch: `now` holds inserts of rounds still to read), so no comparison
        is possible: the step after the log is drained compares."""
        if first is not None:
            self._note(first)
        self._settled = first
        if first is not None and first.then is not Then.DONE:
            return None  # the inserts counted so far stay pending until then
        out = []
        for table, (counter, since) in self.known.items():
            inserted = self.pending.get(table)
            expected: Any = counter if inserted is None else max(counter or 0, inserted)
            new = now.get(table)
            if new != expected:
                out.append(table)
            elif new != counter:
                self.known[table] = (new, since)
        self.pending.clear()
        return out

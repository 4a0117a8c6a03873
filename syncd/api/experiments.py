"""Queries of the synced experiment model (migration 0002), as the legacy tracker made them.

Every source of the database by default; `source` narrows to one. `as_of` (a time,
syncd.client.asof): the experiments as they were then, rebuilt from history with the
configured migrations. One command's queries share one `ExperimentsReader` (one
connection: `experiments_reader(settings, ...)`); each function below is one query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bson.json_util import dumps
from pymongo.errors import OperationFailure

from syncd.api.options import endpoints
from syncd.client.compare import Comparison, compare
from syncd.config import Settings
from syncd.connect.mongo import open_target
from syncd.connect.reasons import REFUSED_CODES, mongo_reason
from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.client.tracker import Tracker


@dataclass
class Experiments:
    """Experiment documents; when there are none, `why_none` says what the database holds.
    `total`: how many match in all (`docs` are those after the first `offset`)."""

    docs: list[dict[str, Any]]
    why_none: str | None = None
    total: int | None = None
    offset: int = 0


class ExperimentsReader:
    """Every query one command makes, on one open target (an embedded MongoDB is
    started once per command, not once per query); `as_of`: as they were then."""

    def __init__(self, settings: Settings, db: Any, source: str | None,
                 as_of: str | None) -> None:
        self.settings, self.db, self.source, self.as_of = settings, db, source, as_of
        self._tracker: Tracker | None = None

    def tracker(self) -> Tracker:
        """The live Tracker, or (`as_of`) the one of that moment, with the configured
        migrations (the model the documents of then are projected with); made once."""
        from syncd.api.shared import migration_files
        from syncd.client.tracker import Tracker

        if self._tracker is None:
            self._tracker = (Tracker(self.db, self.source) if self.as_of is None else
                             Tracker(self.db, self.source, as_of=self.as_of,
                                     migrations=migration_files(self.settings)))
        return self._tracker

    def scope(self) -> dict[str, Any]:
        """Which moment `as_of` is, the sources whose history reaches it, and what the
        answers as of it cannot show (raises for a moment before history starts)."""
        from syncd.client.asof import scope

        if self.as_of is None:
            raise ConfigError("no --as-of moment was given")
        tracker = self.tracker()
        found = getattr(tracker, "scope", None) or scope(self.db, self.as_of, self.source)
        return dict(found.to_dict())

    def best(self, challenge: int, n: int = 10, status: str | None = "completed",
             offset: int = 0) -> Experiments:
        """The `n` best experiments of `challenge` by best_val_loss (`status` None: any),
        after the first `offset`."""
        tracker = self.tracker()
        docs, total = tracker.best_page(challenge, n, status, offset)
        why = None if total else tracker.why_no_best(challenge, status)
        return Experiments(docs, why, total, offset)

    def compare(self, refs: Sequence[str]) -> Comparison:
        """Several experiments (run_ids or _ids) side by side: what differs between them."""
        return compare(self.tracker().compare(list(refs)))

    def search(self, query: Mapping[str, Any], limit: int = 0, offset: int = 0
               ) -> Experiments:
        """Experiments matching a MongoDB filter (at most `limit`, after the first
        `offset`)."""
        tracker = self.tracker()
        try:
            docs = list(tracker.search(dict(query), limit=limit, offset=offset))
            total = len(docs) + offset if not limit and (docs or not offset) \
                else tracker.count(dict(query))
        except OperationFailure as exc:  # the filter itself ($where, an unknown operator):
            if exc.code in REFUSED_CODES:  # bad input, one line and exit 2; not credentials
                raise
            why = (exc.details or {}).get("errmsg") or mongo_reason(exc)
            raise ConfigError(f"filter {dumps(query)}: refused by MongoDB ({why})") from None
        return Experiments(docs, None if total else tracker.why_no_match(dict(query)),
                           total, offset)

    def history(self, ref: str) -> dict[str, Any]:
        """One experiment with its epochs and checkpoints."""
        return dict(self.tracker().history(ref))

    def versions(self, ref: str) -> Any:
        """One run's versions (syncd.client.versions.RunVersions): what changed, when (up
        to `as_of`, if given)."""
        from syncd.api.shared import migration_files
        from syncd.client.versions import run_versions

        until = None
        if self.as_of is not None:  # the moment of the other queries, refused as they are
            # (before history starts, before `[history] keep`), with --json too
            until = self.tracker().scope.jd  # type: ignore[attr-defined]
        return run_versions(self.db, ref, self.source, until, migration_files(self.settings))


@contextlib.contextmanager
def experiments_reader(settings: Settings, source: str | None = None, as_of: str | None = None
                ) -> Iterator[ExperimentsReader]:
    """An `ExperimentsReader` on the configured target, open for the block (a bad
    `as_of` is refused before anything starts)."""
    from syncd.api.shared import checked_moment

    if as_of is not None:
        checked_moment(as_of)
    with open_target(endpoints(settings)) as target:
        yield ExperimentsReader(settings, target.db, source, as_of)


def experiments_as_of(settings: Settings, as_of: str, source: str | None = None
                      ) -> dict[str, Any]:
    """Which moment `as_of` is, the sources whose history reaches it, and what the
    answers as of it cannot show (raises for a moment before history starts)."""
    with experiments_reader(settings, source, as_of) as reader:
        return reader.scope()


def experiments_best(settings: Settings, challenge: int, n: int = 10,
                     status: str | None = "completed", source: str | None = None,
                     offset: int = 0, as_of: str | None = None) -> Experiments:
    """The `n` best experiments of `challenge` by best_val_loss (`status` None: any),
    after the first `offset`."""
    with experiments_reader(settings, source, as_of) as reader:
        return reader.best(challenge, n, status, offset)


def experiments_compare(settings: Settings, refs: Sequence[str], source: str | None = None,
                        as_of: str | None = None) -> Comparison:
    """Several experiments (run_ids or _ids) side by side: what differs between them."""
    with experiments_reader(settings, source, as_of) as reader:
        return reader.compare(refs)


def experiments_search(settings: Settings, query: Mapping[str, Any], limit: int = 0,
                       source: str | None = None, offset: int = 0,
                       as_of: str | None = None) -> Experiments:
    """Experiments matching a MongoDB filter (at most `limit`, after the first `offset`)."""
    with experiments_reader(settings, source, as_of) as reader:
        return reader.search(query, limit, offset)


def experiments_history(settings: Settings, ref: str, source: str | None = None,
                        as_of: str | None = None) -> dict[str, Any]:
    """One experiment with its epochs and checkpoints."""
    with experiments_reader(settings, source, as_of) as reader:
        return reader.history(ref)


def experiments_versions(settings: Settings, ref: str, source: str | None = None,
                         as_of: str | None = None) -> Any:
    """One run's versions (syncd.client.versions.RunVersions): what changed, when (up to
    `as_of`, if given)."""
    with experiments_reader(settings, source, as_of) as reader:
        return reader.versions(ref)

"""Which tables `syncd run` must reconcile before its copy can be trusted again.

A table needs a reconcile when something the change log cannot replay happened to
it: it appeared or changed shape, its triggers were missing, the log has a gap
(another consumer pruned it, or the log was recreated), the target may have lost
acknowledged writes (its connection was reset), or a user asked (`syncd
reconcile`, SIGUSR1). The set is saved in MongoDB (journaled) *before* the event
is acted on and a table leaves it only after its reconcile succeeded, so neither a
failed reconcile nor a restart can drop one.

Owns the `_syncd_state` documents `resync` (the pending set), `reconcile_request`
and `reconcile_done` (the on-demand reconcile handed to a running daemon).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from syncd.checkpoint.store import StateStore, durable, utcnow
from syncd.connect.resets import RESETS, PoolResets

log = logging.getLogger(__name__)

PENDING_ID = "resync"
REQUEST_ID = "reconcile_request"
DONE_ID = "reconcile_done"


class PendingReconciles:
    """The tables waiting for a reconcile: the pending set (saved), the tables written
    since their last reconcile (in memory), and the target's connection resets seen."""

    def __init__(self, store: StateStore, resets: PoolResets = RESETS) -> None:
        self.state = durable(store.state)
        self.pending_id, self.request_id, self.done_id = (
            store.key(PENDING_ID), store.key(REQUEST_ID), store.key(DONE_ID))
        self.source_id = store.source_id
        self.resets = resets
        self.pending: set[str] = set()
        self.touched: set[str] = set()
        self._resets_seen = resets.count
        self._request: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> set[str]:
        """The pending set a previous run left (it may have died mid-reconcile)."""
        doc = self.state.find_one({"_id": self.pending_id}) or {}
        self.pending |= set(doc.get("tables") or [])
        return set(self.pending)

    def _save(self) -> None:
        self.state.replace_one({"_id": self.pending_id},
                               {"kind": PENDING_ID, "source_id": self.source_id,
                                "tables": sorted(self.pending), "updated_at": utcnow()},
                               upsert=True)

    def add(self, tables: Iterable[str], why: str) -> None:
        """Mark `tables` for a reconcile, saved before anything acts on the reason."""
        new = set(tables) - self.pending
        if not new:
            return
        self.pending |= new
        try:
            self._save()
        except Exception:
            self.pending -= new  # not saved: the caller retries the whole step
            raise
        log.warning("%s: reconciling %s", why, ", ".join(sorted(new)))

    def done(self, table: str, wrote: bool) -> None:
        """`table` was reconciled; if that wrote documents they count as touched."""
        if wrote:
            self.touched.add(table)
        else:
            self.touched.discard(table)
        if table in self.pending:
            self.pending.discard(table)
            self._save()

    def forget(self, tables: Iterable[str]) -> None:
        """Tables no longer synced (dropped from the legacy schema)."""
        gone = self.pending & set(tables)
        if gone:
            self.pending -= gone
            self._save()

    def check_resets(self) -> bool:
        """If the target's connection was reset since the last look, mark every table
        written since its last reconcile (the server may have lost those writes)."""
        count = self.resets.count
        if count == self._resets_seen:
            return False
        self.add(self.touched, "the connection to MongoDB was reset and the server may have "
                 "lost acknowledged writes")
        self._resets_seen = count
        return True

    # -- on-demand reconciles (`syncd reconcile`, handed over through MongoDB) ------------

    def poll_request(self) -> None:
        """Take a waiting request (the heartbeat thread calls this)."""
        doc = self.state.find_one_and_delete({"_id": self.request_id})
        if doc:
            with self._lock:
                self._request = doc

    def take_request(self) -> dict[str, Any] | None:
        with self._lock:
            request, self._request = self._request, None
        return request

    def finish_request(self, request: dict[str, Any], reports: dict[str, Any]) -> None:
        self.state.replace_one({"_id": self.done_id}, {"request": request["request"],
                                                  "tables": reports, "at": utcnow()},
                               upsert=True)


def request_reconcile(store: StateStore, tables: list[str]) -> str:
    """Hand a reconcile of `tables` (all when empty) to the source's daemon; its id."""
    request = uuid.uuid4().hex
    durable(store.state).replace_one(
        {"_id": store.key(REQUEST_ID)},
        {"request": request, "tables": tables, "at": utcnow()}, upsert=True)
    return request


def reconcile_result(store: StateStore, request: str) -> dict[str, Any] | None:
    """The daemon's per-table report of `request`, once it is done."""
    doc = store.state.find_one({"_id": store.key(DONE_ID)})
    return doc.get("tables") if doc and doc.get("request") == request else None


def forget_reconciles(store: StateStore, dry_run: bool) -> dict[str, int]:
    """The source's pending reconciles and requests, when the source is removed."""
    return store.forget_kinds((PENDING_ID, REQUEST_ID, DONE_ID), dry_run)

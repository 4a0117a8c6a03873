"""The lease: a time-limited lock document (`_syncd_state` `lease:<source id>`).

Only one syncd migrates or follows a source at a time (other sources of the same
database have their own leases); a holder that died
(killed, crashed) is recognised on its own host by its process token, elsewhere
the lease simply expires.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from syncd.cancel import Cancelled, CancelToken
from syncd.checkpoint.store import StateStore, utcnow
from syncd.errors import MigrationError

LEASE_ID = "lease"
LEASE_SECONDS = 60.0


def current_lease(store: StateStore) -> dict[str, Any] | None:
    """The source's lease document while it is held (not yet expired), for `syncd status`."""
    lease = store.state.find_one({"_id": store.key(LEASE_ID)})
    if lease and lease.get("expires_at") and lease["expires_at"] < utcnow():
        return None
    return lease


def process_token(pid: int) -> str | None:
    """Boot id and start time of process `pid` (Linux): who it is, beyond its number."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def held_message(held: dict[str, Any], source_id: str) -> str:
    """Why a second syncd is refused: who holds the lease (host, pid) and what to do.

    A `run` lease is held by a daemon that renews it for as long as it runs: waiting
    does not help, stopping it does. A `migrate` lease ends with the migrate.
    """
    what, host, pid = held.get("what", "?"), held.get("host") or "?", held.get("pid")
    who = f"pid {pid} on {host}" if pid else f"owner {held.get('owner', '?')}"
    until = f"until {held.get('expires_at', '?')} UTC"
    if what == "run":
        how = f"`kill {pid}` on {host}" if pid else f"stop it on {host}"
        return (f"another syncd holds the run lease on source {source_id!r}: a `syncd run` "
                f"daemon ({who}) follows it and renews the lease while it runs ({until}); "
                f"stop it first (`systemctl stop syncd` or `syncd@NAME` where it runs as a "
                f"service, else {how}), or leave the syncing to it")
    return (f"another syncd holds the {what} lease on source {source_id!r}: a `syncd {what}` "
            f"({who}) is at work ({until}); wait for it to finish, or stop it"
            + (f" (`kill {pid}` on {host})" if pid else "")
            + "; a crashed holder's lease expires by itself")


class Lease:
    """A time-limited lock document: only one syncd migrates a database at a time."""

    def __init__(self, store: StateStore, what: str = "migrate",
                 seconds: float = LEASE_SECONDS, stop: CancelToken | None = None) -> None:
        self.collection = store.state
        self.lease_id = store.key(LEASE_ID)
        self.source_id = store.source_id
        self.seconds = seconds
        self.what = what
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._renewed: dt.datetime | None = None
        # Called at every renew (once per chunk of long work): the daemon notes there
        # that it is alive. It only observes: stopping is `stop`, checked by `renew`.
        self.on_renew: Callable[[], None] | None = None
        self.stop = stop

    def _dead_local_holder(self, held: dict[str, Any]) -> bool:
        """The holder ran on this host and its process is gone (killed, crashed).

        A pid alone is not enough: a container restarted in place has the same host
        name and often the same pid. The process's start time (and the boot id) tell
        the old holder from a new process that happens to have its pid.
        """
        pid = held.get("pid")
        if held.get("host") != self.host or not isinstance(pid, int):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        token = held.get("process")
        return bool(token) and token != process_token(pid)

    def acquire(self) -> None:
        now = utcnow()
        claim = {"$set": {"owner": self.owner, "host": self.host, "pid": self.pid,
                          "process": process_token(self.pid), "what": self.what,
                          "acquired_at": now, "kind": LEASE_ID, "source_id": self.source_id,
                          "expires_at": now + dt.timedelta(seconds=self.seconds)}}
        try:
            self.collection.find_one_and_update(
                {"_id": self.lease_id,
                 "$or": [{"expires_at": {"$lt": now}}, {"owner": self.owner}]},
                claim, upsert=True, return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            held = self.collection.find_one({"_id": self.lease_id}) or {}
            if self._dead_local_holder(held) and self.collection.update_one(
                    {"_id": self.lease_id, "owner": held.get("owner")}, claim).matched_count:
                self._renewed = now
                return
            raise MigrationError(held_message(held, self.source_id)) from None
        self._renewed = now

    def renew(self) -> None:
        """Extend the lease; cheap to call often (writes at most every few seconds).

        Long work renews at every chunk: there, a requested stop (`stop`) ends it
        with `Cancelled`, at a chunk boundary where the checkpoint is safe.
        """
        if self.on_renew is not None:
            self.on_renew()
        if self.stop is not None and self.stop.is_set():
            raise Cancelled("stopped during long work; the next start resumes from the "
                            "checkpoint")
        self.renew_idle()

    def renew_idle(self) -> None:
        """Extend the lease without the `on_renew` hook (a heartbeat while idle)."""
        now = utcnow()
        if self._renewed and (now - self._renewed).total_seconds() < self.seconds / 6:
            return
        result = self.collection.update_one(
            {"_id": self.lease_id, "owner": self.owner},
            {"$set": {"expires_at": now + dt.timedelta(seconds=self.seconds)}},
        )
        if result.matched_count == 0:
            raise MigrationError("lost the migration lease (it expired and another syncd took "
                                 "it); stopping without writing further")
        self._renewed = now

    def release(self) -> None:
        self.collection.delete_one({"_id": self.lease_id, "owner": self.owner})


def forget_lease(store: StateStore, dry_run: bool) -> dict[str, int]:
    """The source's lease document, when the source is removed (`syncd source remove`
    holds the lease itself while it deletes, then releases it: this counts it)."""
    return store.forget_kinds((LEASE_ID,), dry_run)

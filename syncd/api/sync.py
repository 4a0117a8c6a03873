"""migrate, verify, status and reconcile: the commands on the MongoDB target's state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.api.hdf5 import hdf5_check_config, hdf5_status, verify_cache
from syncd.api.options import (
    check_source_file,
    endpoints,
    migrate_options,
    source_ref,
    state_store,
    target_label,
)
from syncd.api.shared import migration_files, open_source, where
from syncd.checkpoint.daemon_doc import live_daemon
from syncd.checkpoint.resync import reconcile_result, request_reconcile
from syncd.config import Settings
from syncd.connect.mongo import TargetUnreachable, open_target
from syncd.engine.migration_files import mark_drift
from syncd.engine.migrator import Migrator
from syncd.engine.status import collect_fleet, collect_status
from syncd.engine.verify import verify as verify_target
from syncd.errors import SyncdError
from syncd.faults import crashpoint
from syncd.progress import Progress
from syncd.sinks.mongo import MongoSink

log = logging.getLogger("syncd")


# -- migrate, verify, status ------------------------------------------------------------


@dataclass
class MigrateResult:
    """What `migrate` did (`report`) or, on a dry run, would do (`plan` only), and where."""

    plan: Any
    report: Any | None
    target: str
    embedded: bool


def migrate(settings: Settings, to: int | None = None, *, dry_run: bool = False,
            adopt_file: bool = False, progress: Progress | None = None) -> MigrateResult:
    """Bring the target to migration version `to` (default: the latest), resumably.

    The file is checked against the one the source mirrors once, and recorded (unless
    this is a dry run) before anything is written.
    """
    progress = progress or Progress(enabled=False)
    migrations = migration_files(settings)
    with open_source(settings) as source, open_target(endpoints(settings)) as target:
        shown = where(settings, target)
        state = state_store(target.db, settings)
        check_source_file(state, settings, record_it=not dry_run, adopt=adopt_file)
        migrator = Migrator(migrate_options(settings, state.source_id), source, target.db,
                            migrations, progress)
        plan = migrator.plan(to)
        for skipped in plan.not_mirrored:
            log.warning("%s", skipped.line)
        if dry_run:
            return MigrateResult(plan, None, shown, target.embedded)
        log.info("migrating %s to %s: version %d -> %d (%s)", settings.sqlite, shown,
                 plan.current, plan.target, plan.kind)
        with progress:
            report = migrator.run(plan, MongoSink(target.db))
        return MigrateResult(plan, report, shown, target.embedded)


def verify(settings: Settings, progress: Progress | None = None,
           lossless: bool = False) -> Any:
    """Compare every legacy row's projection with its document and its history (the
    configured source's only); `lossless`: and every row with what its document gives
    back; with `--hdf5-dir`: and the cache in Redis with its index. The report says if ok."""
    migrations = migration_files(settings)
    cache_config = hdf5_check_config(settings)  # with --hdf5-dir: the cache is checked too
    with open_source(settings) as source, open_target(endpoints(settings)) as target, \
            (progress or Progress(enabled=False)) as shown_progress:
        state = state_store(target.db, settings)
        check_source_file(state, settings, verb="verify")
        report = verify_target(target.db, source, migrations, settings.chunk_size,
                               shown_progress, state.source_id, lossless)
        if cache_config is not None and report.version is not None:
            report.cache = verify_cache(settings, cache_config, target.db, state.source_id)
        return report


def status(settings: Settings) -> dict[str, Any]:
    """The target's state (what `syncd status --json` prints).

    The configured source's, or (no --source-id and no --sqlite named one, and the
    database holds several sources) every source's: `source_id` None and each one's
    state under `source_details` (engine.status.collect_fleet). With MongoDB
    unreachable the answer is `{"error": ..., "daemon": <what the daemon last wrote
    beside the state, or None>}` instead: exit 1 for a health check, whether or not
    this host runs the daemon (exit 2 would read as a mistake in the settings). A
    daemon.json of a `syncd run` on another target (or database), or one that does not
    say which, is not this target's: `daemon` None and `daemon_elsewhere` names its own.
    """
    try:
        with open_target(endpoints(settings)) as target:
            crashpoint("status.connected")  # a test stops status here, its server up
            store = state_store(target.db, settings)
            ref = source_ref(settings)
            if not ref.named and ref.sqlite is None and len(store.sources()) > 1:
                found = collect_fleet(target.db)  # none to pick: each source's state
            else:
                found = collect_status(target.db, store.source_id)
                _mark_drift(found, settings)
            found["target"] = where(settings, target)
            found["hdf5"] = hdf5_status(target.db, settings)
    except TargetUnreachable as exc:
        from syncd.daemon.health import read_local_status  # numpy, through sinks.events

        daemon = read_local_status(settings.state_dir / "daemon.json")
        if daemon is None or (daemon.get("target"), daemon.get("database")) == \
                (target_label(settings), settings.database):
            return {"error": str(exc), "daemon": daemon}
        # a `syncd run` of this state dir on another target: not this target's state
        return {"error": str(exc), "daemon": None,
                "daemon_elsewhere": {"target": daemon.get("target"),
                                     "database": daemon.get("database")}}
    return found


def _mark_drift(found: dict[str, Any], settings: Settings) -> None:
    """Beside each applied migration, whether the configured folder still holds it as
    applied (`on_disk`); a folder that does not load is said once (`migrations_error`)."""
    try:
        mark_drift(found["changelog"], migration_files(settings))
    except SyncdError as exc:
        found["migrations_error"] = str(exc)


# `syncd status` exit codes (README "Commands", docs/operations.md): the first that applies.
STATUS_TARGET_DOWN = 1  # MongoDB unreachable (what the daemon last wrote is shown)
STATUS_NO_DAEMON = 3  # a `syncd run` followed this source and has no fresh heartbeat now
STATUS_UNHEALTHY = 4  # it runs, but is not ready, waits out an outage, or lags too far
STATUS_QUARANTINE = 5  # rows are in quarantine (`syncd status` lists them)
DEFAULT_MAX_LAG = 60.0


def status_health(found: dict[str, Any], max_lag: float = DEFAULT_MAX_LAG) -> tuple[int, str]:
    """The exit code for a status document, and why, so that a shell check can use it.

    0 when a daemon runs with a fresh heartbeat, is ready (the first sync is done),
    sees no outage, lags no table by more than `max_lag` seconds, and no row is
    quarantined; and 0 for a source that `syncd migrate` brought up to date and no
    daemon ever followed (nothing stopped; `_migrated_only`).
    """
    if "error" in found:
        return STATUS_TARGET_DOWN, f"MongoDB is not reachable: {found['error']}"
    if found.get("source_details") is not None:  # several sources, none named
        return _fleet_health(sources_health(found, max_lag))
    daemon = found.get("daemon")
    if not daemon and found.get("version") is not None:
        return _migrated_only(found)
    if not daemon or not daemon.get("running"):
        return STATUS_NO_DAEMON, (f"no syncd run is following database "
                                  f"{found.get('database')!r} (no fresh heartbeat)")
    if daemon.get("outage"):
        outage = daemon["outage"]
        return STATUS_UNHEALTHY, f"{outage.get('what')} unavailable: {outage.get('error')}"
    if not daemon.get("ready"):
        return STATUS_UNHEALTHY, "the daemon's first sync is not done yet"
    lag = max((t.get("lag_seconds") or 0.0 for t in daemon.get("tables") or []), default=0.0)
    if lag > max_lag:
        return STATUS_UNHEALTHY, f"lag {lag:.1f} s is over {max_lag:g} s"
    if found.get("quarantined"):
        return STATUS_QUARANTINE, f"{found['quarantined']} row(s) quarantined"
    return 0, f"in sync (lag {lag:.1f} s)"


def sources_health(found: dict[str, Any], max_lag: float = DEFAULT_MAX_LAG
                   ) -> list[tuple[str, int, str]]:
    """(source id, exit code, why) of each source of a status of several sources, by the
    rules `status_health` applies to one."""
    return [(sid, *status_health({**detail, "database": found.get("database")}, max_lag))
            for sid, detail in (found.get("source_details") or {}).items()]


def _fleet_health(each: list[tuple[str, int, str]]) -> tuple[int, str]:
    """The exit code of several sources: the first that applies to any of them (3, 4,
    then 5, as for one source), naming the sources it applies to."""
    failing = [c for _, c, _ in each if c]
    if not failing:
        return 0, f"every source is fine ({len(each)} sources)"
    code = min(failing)
    hit = [(sid, why) for sid, c, why in each if c == code]
    more = f" (and {len(hit) - 1} more source(s) with exit {code})" if len(hit) > 1 else ""
    return code, f"source {hit[0][0]!r}: {hit[0][1]}{more}"


def _migrated_only(found: dict[str, Any]) -> tuple[int, str]:
    """The health of a source that `syncd migrate` brought up to date and no daemon has
    ever followed (the quick start): nothing has stopped, so nothing is stale.

    A daemon that ran and stopped (or died) leaves its heartbeat document behind and
    stays exit 3; rows in quarantine and an interrupted migration count here too.
    """
    if found.get("checkpoint"):
        return STATUS_UNHEALTHY, (f"a migration to version "
                                  f"{found['checkpoint'].get('target_version')} was interrupted: "
                                  "syncd migrate (or syncd run) finishes it")
    if found.get("quarantined"):
        return STATUS_QUARANTINE, f"{found['quarantined']} row(s) quarantined"
    run = found.get("last_run") or {}
    at = run.get("at")
    when = (at.isoformat(sep=" ", timespec="seconds") + " UTC" if hasattr(at, "isoformat")
            else at or f"to version {found.get('version')}")
    return 0, f"no daemon running (last migrate {when}; `syncd run` follows changes)"


def reconcile(settings: Settings, tables: Sequence[str] = (), timeout: float = 3600.0,
              asked: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Have the running `syncd run` reconcile `tables` (default all) now; its answer.

    `asked(daemon)` is called once the request is made, before the wait.
    """
    with open_target(endpoints(settings)) as target:
        state = state_store(target.db, settings)
        daemon = live_daemon(state)
        if daemon is None:
            raise SyncdError(f"no syncd run is following source {state.source_id!r} into "
                             f"database {settings.database!r} (no fresh heartbeat); without a "
                             "daemon `syncd migrate` "
                             "reconciles every table")
        request = request_reconcile(state, list(tables))
        if asked is not None:
            asked(daemon)
        what = ", ".join(tables) if tables else "every table"
        deadline = time.monotonic() + timeout
        while (result := reconcile_result(state, request)) is None:
            if time.monotonic() > deadline:
                raise SyncdError(f"the reconcile of {what} has not finished within "
                                 f"{timeout:g} s; the daemon goes on with it "
                                 "(see syncd status)")
            time.sleep(0.25)
    return dict(result)

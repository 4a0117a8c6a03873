"""/metrics: the daemon's live state in the Prometheus text format.

One collector reads the status document (the same one `syncd status --json` shows)
and the probe's last view of the targets at scrape time, so no counter is sprinkled
through the sync path and the numbers cannot drift from what `syncd status` says.
The registry is syncd's own (not prometheus-client's global one): a test or an
embedding program can build several apps without "duplicated timeseries" errors.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd.http.probe import TargetView
from syncd.projection.unmirrored import REASONS


def _timestamp(value: Any) -> float | None:
    """A status document's time (naive UTC datetime, or its ISO text from daemon.json)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.rstrip("Z"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is not None:
        return value.timestamp()
    return calendar.timegm(value.timetuple()) + value.microsecond / 1e6


class SyncdCollector(Collector):
    """Builds every syncd_* family from one status document and one target view."""

    def __init__(self, source: str, status: Callable[[], dict[str, Any] | None],
                 view: Callable[[], TargetView]) -> None:
        self.source, self.status, self.view = source, status, view

    def collect(self) -> Iterator[Metric]:
        doc = self.status() or {}
        view = self.view()
        src = self.source
        up = GaugeMetricFamily("syncd_up", "1 while this syncd process serves metrics")
        up.add_metric([], 1)
        yield up

        lag_s = GaugeMetricFamily("syncd_lag_seconds", "Age of the oldest unapplied change",
                                  labels=["source", "table"])
        lag_r = GaugeMetricFamily("syncd_lag_rows", "Changed rows not applied yet",
                                  labels=["source", "table"])
        applied = CounterMetricFamily("syncd_applied_rows", "Rows written to MongoDB by "
                                      "this process", labels=["source", "table", "op"])
        errors = 0
        last: float | None = None
        for table in doc.get("tables") or []:
            name = table["table"]
            if "lag_rows" in table:
                lag_s.add_metric([src, name], float(table.get("lag_seconds") or 0.0))
                lag_r.add_metric([src, name], float(table.get("lag_rows") or 0))
            if "applied" in table:
                applied.add_metric([src, name, "upsert"], float(table["applied"]))
                applied.add_metric([src, name, "delete"], float(table.get("deleted") or 0))
            errors += int(table.get("errors") or 0)
            at = _timestamp(table.get("last_applied_at"))
            if at is not None and (last is None or at > last):
                last = at
        yield from (lag_s, lag_r, applied)

        family = GaugeMetricFamily("syncd_tables_not_mirrored", "Legacy tables syncd "
                                   "cannot mirror (syncd status says why)",
                                   labels=["source", "reason"])
        skipped = Counter(str(t.get("kind")) for t in doc.get("not_mirrored") or [])
        for kind in sorted(set(REASONS) | set(skipped)):
            family.add_metric([src, kind], float(skipped[kind]))
        yield family
        family = CounterMetricFamily("syncd_apply_errors", "Failed table writes (retried)",
                                     labels=["source"])
        family.add_metric([src], float(errors))
        yield family
        if view.quarantined is not None:
            family = GaugeMetricFamily("syncd_quarantined_rows", "Rows in quarantine",
                                       labels=["source"])
            family.add_metric([src], float(view.quarantined))
            yield family
        family = GaugeMetricFamily("syncd_target_up", "1 if the target answered the last "
                                   "probe", labels=["target"])
        family.add_metric(["mongodb"], 1.0 if view.mongo_up else 0.0)
        if view.redis_up is not None:
            family.add_metric(["redis"], 1.0 if view.redis_up else 0.0)
        yield family
        if last is not None:
            family = GaugeMetricFamily("syncd_last_apply_timestamp_seconds",
                                       "When rows were last applied", labels=["source"])
            family.add_metric([src], last)
            yield family
        events = doc.get("events") or {}
        family = GaugeMetricFamily("syncd_event_queue_depth",
                                   "Events waiting to be published to Redis")
        family.add_metric([], float(events.get("buffered") or 0))
        yield family
        yield from self._hdf5(view.hdf5)

    def _hdf5(self, hdf5: dict[str, Any] | None) -> Iterator[Metric]:
        if not hdf5:
            return
        family = GaugeMetricFamily("syncd_cache_bytes", "Bytes of cached HDF5 windows")
        family.add_metric([], float((hdf5.get("memory") or {}).get("used_bytes") or 0))
        yield family
        cached, total = int(hdf5.get("windows_cached") or 0), int(hdf5.get("windows_total") or 0)
        family = GaugeMetricFamily("syncd_cache_windows", "HDF5 windows by cache state",
                                   labels=["state"])
        family.add_metric(["cached"], float(cached))
        family.add_metric(["missing"], float(max(0, total - cached)))
        yield family
        family = GaugeMetricFamily("syncd_hdf5_files", "HDF5 files by state", labels=["state"])
        for state, count in sorted((hdf5.get("states") or {}).items()):
            family.add_metric([state], float(count))
        yield family


def registry(source: str, status: Callable[[], dict[str, Any] | None],
             view: Callable[[], TargetView]) -> CollectorRegistry:
    """syncd's own registry: the syncd_* collector and the process collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SyncdCollector(source, status, view))
    ProcessCollector(registry=reg)
    return reg

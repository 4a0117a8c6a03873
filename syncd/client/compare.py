"""What differs between experiments, side by side (as MLflow's run comparison shows it).

Every experiment is flattened into dotted keys in three sections: the run's own
fields (challenge, status, model, times, source), its `config` and its `metrics`.
A key whose value is the same in every experiment is *equal* and folded away by
default: two runs of a 40-key config usually differ in two or three keys, and those
are what a person comparing them is looking for. A config key or metric missing from
an experiment is `MISSING` there, not null: a run without `prefetch_factor` and one
with `prefetch_factor: null` differ (the one may have taken a default, the other not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncd.redact import secret_key

SECTIONS = ("run", "config", "metrics")
RUN_FIELDS = ("challenge", "status", "model", "start_time", "end_time", "notes", "source")
NOUNS = {"run": ("run field", "run fields"), "config": ("config key", "config keys"),
         "metrics": ("metric", "metrics")}


class _Missing:
    """A key an experiment does not have (shown as `missing`, never equal to null)."""

    def __repr__(self) -> str:
        return "missing"


MISSING: Any = _Missing()


@dataclass
class Row:
    """One key across the compared experiments (values in the order asked)."""

    section: str
    key: str
    values: list[Any]

    @property
    def same(self) -> bool:
        return all(_same(v, self.values[0]) for v in self.values[1:])

    @property
    def shown(self) -> list[Any]:
        """The values as shown: `***` for a credential's (a config's `api_key`)."""
        if secret_key(self.key):
            return [v if v is None or v is MISSING else "***" for v in self.values]
        return self.values

    def as_json(self) -> dict[str, Any]:
        """The values for JSON: a missing one as null, and `missing` says which are."""
        return {"values": [None if v is MISSING else v for v in self.shown],
                "missing": [v is MISSING for v in self.values]}


@dataclass
class Comparison:
    """Experiments side by side: `runs` (their labels), every key's `rows`, the documents."""

    runs: list[dict[str, Any]]
    rows: list[Row] = field(default_factory=list)
    docs: list[dict[str, Any]] = field(default_factory=list)

    def shown(self, show_all: bool = False) -> list[Row]:
        """The rows to show: the differing ones (every one with `show_all`, or when there
        is only one experiment)."""
        every = show_all or len(self.runs) < 2
        return [r for r in self.rows if every or not r.same]

    def folded(self) -> dict[str, int]:
        """Per section, how many keys are equal in every experiment (and not shown)."""
        if len(self.runs) < 2:
            return {}
        counts = {s: 0 for s in SECTIONS}
        for row in self.rows:
            if row.same:
                counts[row.section] += 1
        return {s: n for s, n in counts.items() if n}

    def to_dict(self, show_all: bool = False) -> dict[str, Any]:
        return {"runs": self.runs,
                "differences": [{"section": r.section, "key": r.key, **r.as_json(),
                                 "same": r.same} for r in self.shown(show_all)],
                "equal": self.folded(), "experiments": self.docs}


def folded_line(section: str, count: int) -> str:
    """'12 equal config keys not shown (--all shows them)'."""
    one, many = NOUNS[section]
    return f"{count} equal {one if count == 1 else many} not shown (--all shows them)"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (`optimizer.lr`); lists and scalars are leaves."""
    if not isinstance(value, Mapping) or (prefix and not value):
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _run_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    model = doc.get("model")
    return {"challenge": doc.get("challenge"), "status": doc.get("status"),
            "model": model.get("name") if isinstance(model, Mapping) else model,
            "start_time": doc.get("start_time"), "end_time": doc.get("end_time"),
            "notes": doc.get("notes"), "source": doc.get("_source")}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _label(doc: Mapping[str, Any], clash: bool) -> str:
    label = f"run {doc.get('run_id')}"
    return f"{label} ({doc.get('_source')})" if clash else label


def compare(docs: Sequence[Mapping[str, Any]]) -> Comparison:
    """The experiments' run fields, config and metrics side by side, in the order given."""
    run_ids = [d.get("run_id") for d in docs]
    clash = len({repr(r) for r in run_ids}) < len(run_ids)
    runs = [{"label": _label(d, clash), "id": d.get("_id"), "run_id": d.get("run_id"),
             "source": d.get("_source")} for d in docs]
    flat = [{"run": _run_fields(d),
             "config": flatten(d.get("config") if isinstance(d.get("config"), Mapping)
                               else {"(config)": d.get("config")} if d.get("config") else {}),
             "metrics": flatten(d.get("metrics") or {})} for d in docs]
    rows = []
    for section in SECTIONS:
        keys = list(RUN_FIELDS) if section == "run" else sorted(
            {k for f in flat for k in f[section]})
        rows += [Row(section, key, [f[section].get(key, MISSING) for f in flat])
                 for key in keys]
    return Comparison(runs, rows, [dict(d) for d in docs])

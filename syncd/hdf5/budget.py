"""The memory budget planner: which files get their labels and how many windows, in warm order.

Pure: it takes the documents of the warmable files (with the extractors each one
gets) and the settings, and returns a plan; nothing here reads or writes a store.
Every file's labels come first; then windows (with their features) are given out
file by file in warm order: files matching `[cache] warm_first` globs in the listed
order, then newest first. A file may get part of its windows (the first ones).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from syncd.sinks.cache import KEY_OVERHEAD

META_BYTES = 1024  # the metadata hash and the files index entry, for the budget
FEATURE_DTYPE = "<f4"


@dataclass
class FilePlan:
    """One file's share of the budget: windows 0..target-1 and (if labels) its labels."""

    doc: dict[str, Any]
    extractors: dict[str, Any]
    shapes: dict[str, tuple[list[int], str]]
    target: int
    cost: int
    labels: bool


@dataclass
class CachePlan:
    files: list[FilePlan]
    used_bytes: int


def warm_order(doc: dict[str, Any], warm_first: Sequence[str]) -> tuple[int, int, str]:
    """The sort key: the first `warm_first` glob matching the path or name, then newest first."""
    for i, glob in enumerate(warm_first):
        if fnmatch.fnmatchcase(doc["path"], glob) or fnmatch.fnmatchcase(doc["name"], glob):
            return (i, 0, doc["path"])
    return (len(warm_first), -int(doc["mtime_ns"]), doc["path"])


def per_window_bytes(doc: dict[str, Any], feature_shapes: dict[str, tuple[list[int], str]]) -> int:
    """What one cached window costs: its value and its feature rows, each with key overhead."""
    cost = int(doc["window_bytes"]) + KEY_OVERHEAD
    for shape, dtype in feature_shapes.values():
        cost += np.dtype(dtype).itemsize * int(np.prod(shape)) + KEY_OVERHEAD
    return cost


def fixed_bytes(doc: dict[str, Any]) -> int:
    """What a file costs before any window: its metadata and all its labels."""
    label_item = np.dtype(doc["label_dtype"]).itemsize * int(np.prod(doc["label_shape"] or [1]))
    return META_BYTES + KEY_OVERHEAD + int(doc["n_windows"]) * label_item


def plan_budget(files: Sequence[tuple[dict[str, Any], dict[str, Any]]], max_bytes: int,
                max_value_bytes: int, warm_first: Sequence[str]) -> CachePlan:
    """Share `max_bytes` over `files`, pairs of (document, {feature key: extractor}).

    The plan lists the files in warm order; a window larger than `max_value_bytes` is
    never cached (its file gets its labels only)."""
    ordered = sorted(files, key=lambda pair: warm_order(pair[0], warm_first))
    remaining = max_bytes
    plans = []
    for doc, extractors in ordered:
        shapes = {k: (ex.output_shape(doc["window_shape"]), FEATURE_DTYPE)
                  for k, ex in extractors.items()}
        fixed = fixed_bytes(doc)
        labels = remaining >= fixed
        if labels:
            remaining -= fixed
        plans.append(FilePlan(doc, extractors, shapes, 0, fixed if labels else 0, labels))
    for plan in plans:
        per_window = per_window_bytes(plan.doc, plan.shapes)
        if plan.labels and int(plan.doc["window_bytes"]) <= max_value_bytes:
            plan.target = min(int(plan.doc["n_windows"]), remaining // per_window)
            remaining -= plan.target * per_window
            plan.cost += plan.target * per_window
    return CachePlan(plans, max_bytes - remaining)

"""The budget planner on its own: pure, so no server is needed."""

from __future__ import annotations

from typing import Any

from syncd.hdf5.budget import fixed_bytes, per_window_bytes, plan_budget, warm_order
from syncd.hdf5.features import Extractor


def doc(name: str, n: int, mtime_ns: int) -> dict[str, Any]:
    return {"path": f"/data/{name}", "name": name, "mtime_ns": mtime_ns, "n_windows": n,
            "window_shape": [4, 10], "window_bytes": 160, "label_shape": [],
            "label_dtype": "<f4"}


def test_labels_first_then_windows_in_warm_order() -> None:
    old, new, first = doc("old.h5", 10, 1), doc("new.h5", 10, 2), doc("R5_x.h5", 10, 0)
    per = per_window_bytes(old, {})
    budget = sum(fixed_bytes(d) for d in (old, new, first)) + 15 * per
    plan = plan_budget([(old, {}), (new, {}), (first, {})], budget, 1 << 20, ["R5_*"])
    assert [p.doc["name"] for p in plan.files] == ["R5_x.h5", "new.h5", "old.h5"]
    assert [p.target for p in plan.files] == [10, 5, 0]
    assert all(p.labels for p in plan.files)
    assert plan.used_bytes == budget
    assert warm_order(first, ["R5_*"]) < warm_order(new, ["R5_*"]) < warm_order(old, ["R5_*"])


def test_features_cost_and_oversized_windows() -> None:
    band = Extractor("band_power", (("alpha", 8.0, 13.0), ("beta", 13.0, 30.0)), 100.0)
    d = doc("a.h5", 3, 1)
    plan = plan_budget([(d, {band.key: band})], 1 << 20, 1 << 20, [])
    only = plan.files[0]
    assert only.shapes == {band.key: ([4, 2], "<f4")}
    assert only.target == 3
    assert only.cost == fixed_bytes(d) + 3 * per_window_bytes(d, only.shapes)
    # A window over max_value_bytes is never cached; the labels still are.
    small = plan_budget([(d, {})], 1 << 20, 100, []).files[0]
    assert (small.labels, small.target, small.cost) == (True, 0, fixed_bytes(d))
    # No room even for the labels: nothing.
    none = plan_budget([(d, {})], 10, 1 << 20, []).files[0]
    assert (none.labels, none.target, none.cost) == (False, 0, 0)

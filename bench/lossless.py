"""What losslessness costs: document size and projection CPU, before and after, one run.

For the real EEG2025 fixture (when it is beside the clone) and an EEG2025-shaped sample
of --rows rows, projects every table with the model before the lossless migration
(the latest version less one: 0002's builders, no inverse, no `_orig`) and with the
latest (0005: `epochs.id`, `checkpoints.checkpoint_id`, `_orig` where needed), and
prints per collection the BSON bytes of all documents and how many hold `_orig`, then
the read + project CPU time of both models (the same rows, alternated, best of
--passes). The end-to-end figure (`syncd migrate`, wall and CPU of syncd and of the
server) is bench/migrate_trees.py's, base tree against this one.

    python -m bench.lossless [--rows 50000] [--passes 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import bson

from bench.harness import Timer, describe, load, result, say
from legacy_adapters.sqlite import SQLiteSource
from syncd.engine.backfill import read_projected
from syncd.engine.migration_files import build_model, load_migrations
from syncd.projection.envelope import ORIG
from syncd.projection.project import Params, Projector
from syncd.sample import make_eeg2025

FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "eeg2025" \
    / "metadata.db"
SHOWN = ("experiments", "epochs", "checkpoints")


def project_all(db_path: Path, version: int, sizes: dict[str, list[int]] | None = None
                ) -> tuple[float, float]:
    """Read and project every table with the model of `version`; (wall, CPU) seconds.
    `sizes`: filled with [BSON bytes, documents, documents with `_orig`] per collection."""
    source = SQLiteSource(db_path)
    model = build_model(load_migrations(), version)
    params = Params("bench-host", "UTC", version)
    timer = Timer()
    for info, mapping in model.resolve(source.schema()):
        projector = Projector(info, mapping, params)
        upto = source.high_water(info)
        if upto is None:
            continue
        for _, projected in read_projected(source, info, projector, None, 5000, upto):
            if sizes is not None:
                entry = sizes.setdefault(mapping.collection, [0, 0, 0])
                entry[0] += sum(len(bson.encode(d)) for d in projected.docs)
                entry[1] += len(projected.docs)
                entry[2] += sum(ORIG in d for d in projected.docs)
    seconds = timer.stop()
    source.close()
    return seconds


def sizes_of(name: str, db_path: Path, old: int, new: int) -> None:
    before: dict[str, list[int]] = {}
    after: dict[str, list[int]] = {}
    project_all(db_path, old, before)
    project_all(db_path, new, after)
    for coll in SHOWN:
        b, a = before.get(coll, [0, 0, 0]), after.get(coll, [0, 0, 0])
        if not a[1]:
            continue
        result(f"{name} {coll} bytes per document", f"{b[0] / b[1]:.0f} -> {a[0] / a[1]:.0f}",
               f"  (x{a[0] / b[0]:.3f}; {a[2]} of {a[1]} documents hold _orig)")
    total_b = sum(v[0] for v in before.values())
    total_a = sum(v[0] for v in after.values())
    result(f"{name} all documents", f"{total_b:,} -> {total_a:,} bytes",
           f"  (x{total_a / total_b:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    new = len(load_migrations())
    old = new - 1
    say(f"{describe()}; load {load()}; models: version {old} (before) and {new} (lossless)")
    if FIXTURE.exists():
        sizes_of("fixture", FIXTURE, old, new)
    else:
        say(f"(no fixture at {FIXTURE}: its sizes are skipped)")
    with tempfile.TemporaryDirectory(prefix="syncd-bench-lossless-") as work:
        sample = Path(work) / "metadata.db"
        rows = sum(make_eeg2025(sample, rows=args.rows).values())
        sizes_of(f"sample ({rows:,} rows)", sample, old, new)
        best = {old: (float("inf"), float("inf")), new: (float("inf"), float("inf"))}
        for p in range(args.passes):
            for version in (old, new) if p % 2 == 0 else (new, old):
                wall, cpu = project_all(sample, version)
                best[version] = (min(best[version][0], wall), min(best[version][1], cpu))
        for i, what in enumerate(("wall", "CPU")):
            result(f"read + project {what}, best of {args.passes}",
                   f"{best[old][i]:.3f} s -> {best[new][i]:.3f} s",
                   f"  (x{best[new][i] / best[old][i]:.3f}; {rows / best[new][i]:,.0f} rows/s)")
    say(f"load after: {load()}")


if __name__ == "__main__":
    main()

"""Part (2) of bench/sync.py: the legacy writers' commit latency with and without
syncd, in alternating phases (ABBA), with the triggers-only and CPU controls, and
`syncd verify` after the last phase (docs/sync-bench.md says what each figure means)."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.controls import start_burners, start_echo
from bench.harness import (
    cores_note,
    cpu_seconds,
    load,
    ms,
    pct,
    result_line,
    say,
    syncd_cli,
    verdict,
)
from bench.http_load import HttpLoad, wait_url
from bench.legacy_writer import finish_writers, start_writers
from bench.syncd_run import SOURCE_ID, TIMEZONE, SyncdRun, Target, capture_cli
from syncd.daemon.options import DEFAULTS as DAEMON_DEFAULTS
from syncd.sample import make_eeg2025


def second_blocks(phases: list[dict[str, Any]]) -> list[list[float]]:
    """The phases' write latencies in blocks of the second each write began in.

    Writes close in time share their fate (one slow fsync delays all three writers),
    so resampling single writes would overstate how sure a p99 is; whole seconds
    are resampled instead.
    """
    blocks: list[list[float]] = []
    for phase in phases:
        by_second: dict[int, list[float]] = {}
        for lat, began in zip(phase["lat"], phase["starts"], strict=True):
            by_second.setdefault(int(began), []).append(lat)
        blocks.extend(by_second.values())
    return blocks


def ratio_interval(top: list[list[float]], bottom: list[list[float]], q: float = 99,
                   resamples: int = 400, seed: int = 1) -> tuple[float, float]:
    """A 95 % interval of pct(top, q) / pct(bottom, q) by a block bootstrap."""
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        a = [x for _ in top for x in rng.choice(top)]
        b = [x for _ in bottom for x in rng.choice(bottom)]
        ratios.append(pct(a, q) / pct(b, q))
    return pct(ratios, 2.5), pct(ratios, 97.5)


def slow_share(values: list[float], limit: float = 0.02) -> float:
    """The share of writes slower than `limit` (SQLite's busy handler sleeps 1, 2, 5, 10,
    15, 20 ... ms between tries, so a write that waited once for a lock is slow)."""
    return sum(v > limit for v in values) / len(values) if values else float("nan")


PHASE_NAMES = {"without": "without syncd", "triggers": "triggers only",
               "with": "with syncd run", "http": "run+HTTP load", "cpu": "CPU control",
               "echo": "echo control"}
CONTROLS = ("triggers", "cpu", "echo")


def phase_kinds(args: argparse.Namespace) -> list[str]:
    """One round's phases. Scan mode installs no triggers: no triggers-only control."""
    controls = args.controls
    if args.coexist_capture == "scan":
        controls = [c for c in controls if c != "triggers"]
    before = ["triggers"] if "triggers" in controls else []
    after = [c for c in ("cpu", "echo") if c in controls]  # they copy the phase before
    loaded = ["http"] if args.http_load else []  # syncd run under the HTTP load
    return ["without", *before, "with", *loaded, *after]


def coexist(args: argparse.Namespace, work: Path, target: Target) -> dict[str, Any]:
    """Phases: without syncd, [triggers installed but no daemon,] with `syncd run`,
    [the CPU control]; then a `syncd run` catches up (if the last phase was not one)
    and `syncd verify` checks the copy."""
    base = work / "coexist"
    base.mkdir()
    legacy = base / "metadata.db"
    make_eeg2025(legacy, rows=args.rows)
    database = "bench_coexist"
    target.drop(database)
    db = target.client[database]
    phases: list[dict[str, Any]] = []
    scan = args.coexist_capture == "scan"  # updates show only at the periodic reconcile
    kinds = phase_kinds(args)
    # Every other round in reverse (ABBA): the legacy file grows and its pages move
    # from phase to phase, and a fixed order would charge that drift to the later
    # phases (the triggers, syncd run). A reversed round's CPU control copies the
    # share of the round before's `syncd run`.
    order = [k for r in range(args.rounds) for k in (kinds if r % 2 == 0 else kinds[::-1])]
    burners: list[subprocess.Popen[bytes]] = []
    share = 0.0  # CPU (cores) syncd and the server used in the last `with` phase
    for n, kind in enumerate(order):
        daemon = None
        if kind == "cpu":
            burners = start_burners(share, args.writer_seconds + 2.0)
        elif kind == "echo":
            gap = target.daemon_options(args.coexist_capture).get(
                "min_step_seconds", DAEMON_DEFAULTS["min_step_seconds"])
            burners = start_echo(legacy, share, gap, args.writer_seconds + 2.0)
        if kind == "triggers":
            capture_cli("install", legacy)
        http_load = None
        if kind in ("with", "http"):
            daemon = SyncdRun(base, f"syncd-{n}", legacy, target.url, database,
                              target.daemon_options(args.coexist_capture), http=kind == "http")
            daemon.start()
            daemon.wait_ready(db, args.ready_timeout)
            if kind == "http":
                http_load = HttpLoad(wait_url(daemon.state)).start()
        cpu_d, cpu_m = (cpu_seconds(daemon.pid if daemon else None, children=True),
                        cpu_seconds(target.mongo_pid))
        before = load()
        procs, outs, start_at = start_writers(legacy, base, str(n), args.writers, "cycle",
                                              args.writer_seconds, epochs=20,
                                              pace=args.writer_rate)
        results = finish_writers(procs, outs)
        elapsed = time.time() - start_at
        for burner in burners:
            burner.wait()
        burners = []
        http_stats = http_load.stop() if http_load is not None else None
        phase = {"kind": kind, "load": before,
                 "lat": [x for r in results for x in r["lat"]],
                 "starts": [x for r in results for x in r["starts"]],
                 "commit": [x for r in results for x in r["commit_lat"]],
                 "locked": sum(r["locked"] for r in results),
                 "errors": [e for r in results for e in r["errors"]],
                 "seconds": elapsed, "http": http_stats}
        if daemon is not None:
            phase["drain"] = daemon.wait_caught_up(db)
            phase["daemon_cpu"] = (cpu_seconds(daemon.pid, children=True) - cpu_d) / elapsed
            phase["mongo_cpu"] = (cpu_seconds(target.mongo_pid) - cpu_m) / elapsed
            share = phase["daemon_cpu"] + phase["mongo_cpu"]
            daemon.stop()
        if kind in ("triggers", "with", "http") and n != len(order) - 1:  # the next starts clean
            capture_cli("uninstall", legacy)
        phases.append(phase)
        lat = phase["lat"]
        say(f"  phase {n + 1} {PHASE_NAMES[kind]:14s}: {len(lat):6,} writes, p50 "
            f"{ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, p99.9 {ms(pct(lat, 99.9))}, max "
            f"{ms(max(lat, default=float('nan')))}, {slow_share(lat):.1%} over 20 ms, "
            f"COMMIT p99 {ms(pct(phase['commit'], 99))}, locked {phase['locked']}"
            + (f", caught up {phase['drain']:.2f} s after the writers stopped"
               if kind in ("with", "http") else "")
            + (f", syncd CPU (with its Redis) {phase['daemon_cpu']:.0%}, server CPU "
               f"{phase['mongo_cpu']:.0%}" if kind in ("with", "http") else "")
            + (f", {http_stats['scrapes']} scrapes (p99 {ms(http_stats['scrape_p99'])}), "
               f"{http_stats['errors']} HTTP errors"
               + (f" ({http_stats['error_kinds']})" if http_stats["errors"] else "")
               + f", clients followed {http_stats['followed']}"
               if http_stats else "")
            + (f", burning {share:.0%} of a core" if kind in ("cpu", "echo") else "")
            + f" (load {before})")
    if order[-1] not in ("with", "http"):  # a control phase last: one more run catches up
        daemon = SyncdRun(base, "syncd-last", legacy, target.url, database,
                          target.daemon_options(args.coexist_capture))
        daemon.start()
        daemon.wait_ready(db, args.ready_timeout)
        daemon.wait_caught_up(db)
        daemon.stop()
    done = syncd_cli("-q", "verify", "--json", "--sqlite", str(legacy), "--mongo-url",
                     target.url, "--database", database, "--source-id", SOURCE_ID,
                     "--timezone", TIMEZONE)
    target.drop(database)
    try:
        totals = json.loads(done.stdout)["totals"]
    except (ValueError, KeyError):
        sys.exit(f"syncd verify failed:\n{(done.stdout + done.stderr)[-2000:]}")
    # Scan mode finds updates only by its periodic reconcile (reconcile_seconds): rows
    # updated after they were first synced differ until then, by design. Lost (missing)
    # or stale extra documents are failures in both modes.
    lost = totals["missing"] + totals["extra"]
    ok = lost == 0 and (scan or totals["different"] == 0)
    return {"phases": phases, "verify": ok, "verify_totals": totals,
            "verify_out": (done.stdout + done.stderr)[-2000:]}


def coexist_results(pooled: Any, blocks: Any, locked: int, ratio: float,
                    interval: tuple[float, float]) -> list[str]:
    """The writers' RESULT lines: p50 ratios (triggers only, syncd run) and the p99 ratio,
    each with the CPU control (no syncd, that CPU spent beside the writers) beside it."""
    without = pooled("without")

    def p50(kind: str) -> float:
        return pct(pooled(kind), 50) / pct(without, 50) if pooled(kind) else float("nan")

    def span(kind: str, q: float) -> str:
        if not pooled(kind):
            return "n/a"
        low, high = ratio_interval(blocks(kind), blocks("without"), q=q)
        return f"{low:.2f}-{high:.2f}"

    cpu50 = f"CPU control {p50('cpu'):.2f}" if pooled("cpu") else "no CPU control phase"
    cpu99 = (f"CPU control {pct(pooled('cpu'), 99) / pct(without, 99):.2f}" if pooled("cpu")
             else "no CPU control phase")
    out = []
    if pooled("triggers"):
        out.append(result_line("writer p50 triggers only / without", f"{p50('triggers'):.2f}",
                               f" (goal <= 1.15)  95% interval {span('triggers', 50)}; {cpu50}"))
    out.append(result_line("writer p50 syncd run / without", f"{p50('with'):.2f}",
                           f" (goal <= 1.2)  95% interval {span('with', 50)}; {cpu50}"
                           + cores_note()))
    out.append(result_line("writer p99 syncd run / without", f"{ratio:.2f}",
                           f" (goal <= 1.05)  95% interval {interval[0]:.2f}-{interval[1]:.2f}; "
                           f"{cpu99}" + cores_note()))
    out.append(result_line("writer lock errors", str(locked), " (goal <= 0)"))
    return out


def report(args: argparse.Namespace, work: Path, target: Target, figures: list[str],
           results: list[str]) -> None:
    """Run part (2) and print its figures; the summary lines go to figures and results."""
    say()
    speed = (f"at {args.writer_rate:g} writes/s each" if args.writer_rate
             else "as fast as they can")
    say(f"(2) legacy writers: {args.writers} processes, the legacy cycle {speed}, "
        f"{args.writer_seconds:g} s per phase; syncd run in {args.coexist_capture} "
        f"mode (load {load()})")
    r = coexist(args, work, target)
    def pooled(kind: str, phases: list[dict[str, Any]] = r["phases"],
               key: str = "lat") -> list[float]:
        return [x for p in phases if p["kind"] == kind for x in p[key]]

    without, with_ = pooled("without"), pooled("with")
    base99 = pct(without, 99)
    ratio = pct(with_, 99) / base99

    def blocks(kind: str, phases: list[dict[str, Any]] = r["phases"]) -> list[list[float]]:
        return second_blocks([p for p in phases if p["kind"] == kind])
    locked = sum(p["locked"] for p in r["phases"])
    locked_with = sum(p["locked"] for p in r["phases"] if p["kind"] == "with")
    rounds = []
    size = len(phase_kinds(args))
    for i in range(0, len(r["phases"]), size):
        group = {p["kind"]: p for p in r["phases"][i:i + size]}
        base = pct(group["without"]["lat"], 99)
        controls = ", ".join(f"{PHASE_NAMES[k]} {pct(group[k]['lat'], 99) / base:.2f}"
                             for k in CONTROLS if k in group)
        rounds.append(f"{pct(group['with']['lat'], 99) / base:.2f}"
                      + (f" ({controls})" if controls else ""))
    intervals: dict[str, tuple[float, float]] = {}
    for kind in ("without", "triggers", "with", "http", "cpu", "echo"):
        lat = pooled(kind)
        if not lat:
            continue
        low, high = intervals[kind] = ratio_interval(blocks(kind), blocks("without"))
        say(f"  pooled {PHASE_NAMES[kind]:14s}: {len(lat):6,} writes, p50 "
            f"{ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, {slow_share(lat):.1%} over "
            f"20 ms; p99 / p99 without = {pct(lat, 99) / base99:.2f}"
            + (f" (95% interval {low:.2f}-{high:.2f})" if kind != "without" else "")
            + f", p50 / p50 without = {pct(lat, 50) / pct(without, 50):.2f}"
            + f", COMMIT p99 {ms(pct(pooled(kind, key='commit'), 99))}")
    say(f"  p99 ratio with/without per round: {', '.join(rounds)}")
    t = r["verify_totals"]
    say(f"  syncd verify after the last phase: {t['missing']} missing, {t['different']} "
        f"different, {t['extra']} extra"
        + (" (scan mode: updated rows differ until the periodic reconcile)"
           if args.coexist_capture == "scan" and t["different"] else ""))
    low, high = intervals["with"]
    figures.append(f"writer commit p99 with/without syncd ({args.coexist_capture}): "
                   f"{ratio:.2f}, 95% interval {low:.2f}-{high:.2f}   (goal <= 1.2)  "
                   f"{verdict(ratio <= 1.2)}")
    if args.http_load:
        loaded = pct(pooled("http"), 99) / base99
        low, high = intervals["http"]
        figures.append(f"writer commit p99 with syncd + HTTP load/without syncd: "
                       f"{loaded:.2f}, 95% interval {low:.2f}-{high:.2f}   (within "
                       f"noise of {ratio:.2f} above)")
    results.extend(coexist_results(pooled, blocks, locked, ratio, intervals["with"]))
    figures.append(f"lock errors (all phases / with syncd): {locked} / {locked_with}   "
                   f"(goal 0)  {verdict(locked == 0)}")
    figures.append(f"syncd verify after the writers: {t['missing']} missing, "
                   f"{t['different']} different, {t['extra']} extra  "
                   f"{verdict(r['verify'])}")

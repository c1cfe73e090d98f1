"""Arbiter decision time with 64 queued radio tasks, and C slack() against Python.

Run: ``python benchmarks/bench_arbiter.py [--decisions N] [--json PATH]``.

Two kinds of decision are timed, each with 64 radio tasks queued:

* ``radio pick``: 64 released tasks wait; the decision picks the earliest deadline
  and issues its next slice.
* ``AI admission``: 64 announced tasks (not yet released) are known; the decision
  predicts the AI slice, checks it against the largest slice and against the
  announced work's slack (the C ``slack()`` over 64 entries), and issues it.

Only the ``dispatch`` call is timed (the arbiter's own work, the issue included);
completions are handled outside the timed region. The same run measures the C
``slack()`` against the same computation in Python (``bench_slack.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from airan.core.estimator import Estimator
from airan.core.policy import Policy
from airan.core.slices import AiJob, RanTask, Slice, SliceKind
from airan.sched.arbiter import Arbiter
from airan.sched.executors import NEVER, DurationDist, SimExecutor

sys.path.insert(0, str(Path(__file__).parent))
from bench_slack import measure_slack

QUEUED = 64
US = 1000


def _setup(announce_only: bool) -> tuple[Arbiter, SimExecutor, list[Slice], list[int]]:
    rs = [Slice.make(SliceKind.RAN, "ran", 50 * US, {"i": i}) for i in range(4)]
    ai = Slice.make(SliceKind.AI, "ai", 100 * US, tokens=1)
    profile = {s.key: DurationDist(20 * US, 50 * US) for s in rs}
    profile[ai.key] = DurationDist(50 * US, 100 * US)
    ex = SimExecutor(profile, seed=1)
    arb = Arbiter(ex, Policy(lookahead_us=1e6), Estimator())
    arb.add_job(AiJob(iter(lambda: ai, None)))
    counter = [0]
    return arb, ex, rs, counter


def _task(rs: list[Slice], rng: np.random.Generator, now: int, release: int) -> RanTask:
    deadline = release + int(rng.integers(10_000, 1_000_000)) * US
    return RanTask(release, deadline, (rs[int(rng.integers(0, 4))],))


def _finish_one(arb: Arbiter, ex: SimExecutor) -> None:
    ex.wait(NEVER)
    done: list[tuple[object, int, int, int]] = []
    ex.poll(done)
    for c in done:
        arb._complete(c)


def bench_radio_pick(n: int) -> np.ndarray:
    arb, ex, rs, _ = _setup(False)
    rng = np.random.default_rng(0)
    strat = arb.strategy
    for _ in range(QUEUED):
        t = _task(rs, rng, 0, 0)
        arb._announce(t)
        arb._release(t)
    out = np.empty(n, dtype=np.int64)
    perf = time.perf_counter_ns
    for i in range(n):
        now = ex.clock.now_ns()
        t0 = perf()
        strat.dispatch(now)
        out[i] = perf() - t0
        _finish_one(arb, ex)  # the slice completes, its task ends: queue one more
        t = _task(rs, rng, now, ex.clock.now_ns())
        arb._announce(t)
        arb._release(t)
        assert len(arb.ready) == QUEUED
    return out


def bench_ai_admission(n: int) -> np.ndarray:
    arb, ex, rs, _ = _setup(True)
    rng = np.random.default_rng(1)
    strat = arb.strategy
    far = 10**15
    for _ in range(QUEUED):
        arb._announce(_task(rs, rng, 0, far))
    out = np.empty(n, dtype=np.int64)
    perf = time.perf_counter_ns
    for i in range(n):
        now = ex.clock.now_ns()
        t0 = perf()
        strat.dispatch(now)
        out[i] = perf() - t0
        assert arb.ai_inflight == 1 and len(arb.known) == QUEUED and not arb.ready
        _finish_one(arb, ex)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=50_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results: dict[str, object] = {"queued_radio_tasks": QUEUED}
    print(f"arbiter decision time, {QUEUED} radio tasks queued, {args.decisions} decisions each")
    print(f"{'decision':<16}{'p50 µs':>10}{'p99 µs':>10}")
    for name, fn in (("radio pick", bench_radio_pick), ("AI admission", bench_ai_admission)):
        d = fn(args.decisions) / 1000.0
        p50, p99 = (float(x) for x in np.percentile(d, [50, 99]))
        results[name.replace(" ", "_")] = {"p50_us": p50, "p99_us": p99}
        print(f"{name:<16}{p50:>10.2f}{p99:>10.2f}")
    slack = measure_slack(QUEUED)
    results["slack"] = slack
    print(
        f"\nslack() over {QUEUED} tasks: C {slack['c_ns']:.0f} ns, Python {slack['py_ns']:.0f} ns"
        f" per call (median of batches): Python / C = {slack['ratio']:.1f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
from collections.abc import Callable
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


def _setup() -> tuple[Arbiter, SimExecutor, list[Slice]]:
    rs = [Slice.make(SliceKind.RAN, "ran", 50 * US, {"i": i}) for i in range(4)]
    ai = Slice.make(SliceKind.AI, "ai", 100 * US, tokens=1)
    profile = {s.key: DurationDist(20 * US, 50 * US) for s in rs}
    profile[ai.key] = DurationDist(50 * US, 100 * US)
    ex = SimExecutor(profile, seed=1)
    arb = Arbiter(ex, Policy(lookahead_us=1e6), Estimator())
    arb.add_job(AiJob(iter(lambda: ai, None)))
    return arb, ex, rs


def _task(rs: list[Slice], rng: np.random.Generator, release: int) -> RanTask:
    deadline = release + int(rng.integers(10_000, 1_000_000)) * US
    return RanTask(release, deadline, (rs[int(rng.integers(0, 4))],))


def _finish_one(arb: Arbiter, ex: SimExecutor) -> None:
    ex.wait(NEVER)
    done: list[tuple[object, int, int, int]] = []
    ex.poll(done)
    for c in done:
        arb._complete(c)


def _time_dispatch(arb: Arbiter, ex: SimExecutor, n: int, after: Callable[[], None]) -> np.ndarray:
    """Time ``n`` decisions (the dispatch call only); ``after`` restores the state."""
    out = np.empty(n, dtype=np.int64)
    perf = time.perf_counter_ns
    dispatch = arb.strategy.dispatch
    for i in range(n):
        now = ex.clock.now_ns()
        t0 = perf()
        dispatch(now)
        out[i] = perf() - t0
        after()
    return out


def bench_radio_pick(n: int) -> np.ndarray:
    arb, ex, rs = _setup()
    rng = np.random.default_rng(0)

    def release_one() -> None:
        t = _task(rs, rng, ex.clock.now_ns())
        arb._announce(t)
        arb._release(t)

    for _ in range(QUEUED):
        release_one()

    def after() -> None:  # the slice completes, its task ends: release one more
        _finish_one(arb, ex)
        release_one()
        assert len(arb.ready) == QUEUED

    return _time_dispatch(arb, ex, n, after)


def bench_ai_admission(n: int) -> np.ndarray:
    arb, ex, rs = _setup()
    rng = np.random.default_rng(1)
    for _ in range(QUEUED):
        arb._announce(_task(rs, rng, 10**15))

    def after() -> None:
        assert arb.ai_inflight == 1 and len(arb.known) == QUEUED and not arb.ready
        _finish_one(arb, ex)

    return _time_dispatch(arb, ex, n, after)


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

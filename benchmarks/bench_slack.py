"""Benchmark: slack of 64 queued radio tasks, C (DeadlineQueue.slack) vs pure Python.

    python benchmarks/bench_slack.py [--tasks 64] [--batches 31] [--calls 20000]
                                     [--json PATH]

``measure_slack()`` returns the same figures to other scripts
(``benchmarks/bench_arbiter.py`` uses it).

Both sides compute the processor-demand slack
``min_j(deadline_j - now - sum(cost_1..cost_j))`` over the same tasks in EDF
order.  The Python side is the obvious loop with a running sum over a sorted
list of ``(deadline_ns, cost_ns)`` tuples (no saturation: Python ints do not
overflow).  The C side is measured twice: through the public
``DeadlineQueue.slack(now)`` (argument check + cffi call) and as the bare
``lib.edfq_slack`` cffi call.

Each figure is the median over ``--batches`` batches of the per-call time of a
batch of ``--calls`` back-to-back calls (``time.perf_counter_ns``); batches of
the implementations are interleaved so drift affects them alike, and the
garbage collector is off while timing.  The cost of the bare ``for`` loop is
measured too and reported separately (it is included in every figure).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from airan.sched.queue import SLACK_INF, DeadlineQueue
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airan.sched.queue import SLACK_INF, DeadlineQueue

from airan._edfq import lib


def python_slack(entries: list[tuple[int, int]], now_ns: int) -> int:
    """Slack over ``(deadline_ns, cost_ns)`` pairs sorted by deadline (the obvious loop)."""
    best = SLACK_INF
    demand = 0
    for deadline_ns, cost_ns in entries:
        demand += cost_ns
        slack = deadline_ns - now_ns - demand
        if slack < best:
            best = slack
    return best


def make_tasks(n: int, now_ns: int, seed: int = 1) -> list[tuple[int, int]]:
    """``n`` radio-like tasks: deadlines 0.5-10 ms ahead, costs 5-60 us."""
    rng = random.Random(seed)
    return [
        (now_ns + rng.randrange(500_000, 10_000_000), rng.randrange(5_000, 60_000))
        for _ in range(n)
    ]


def time_batch(fn: Callable[..., object], args: tuple[object, ...], calls: int) -> float:
    """Nanoseconds per call of ``fn(*args)`` over one batch of ``calls`` calls."""
    loop = range(calls)
    t0 = time.perf_counter_ns()
    for _ in loop:
        fn(*args)
    return (time.perf_counter_ns() - t0) / calls


def noop(*_: object) -> None:
    """Baseline: a Python-level call that does nothing."""


def measure_slack(tasks: int = 64, batches: int = 31, calls: int = 20_000) -> dict[str, float]:
    """Time C and Python slack over ``tasks`` queued tasks; figures in ns per call.

    Returns ``c_ns`` (``DeadlineQueue.slack``), ``c_raw_ns`` (bare
    ``lib.edfq_slack``), ``py_ns`` (``python_slack``), ``loop_ns`` (empty call
    + loop, included in the others), ``ratio`` (``py_ns / c_ns``),
    ``ratio_raw`` (``py_ns / c_raw_ns``), ``slack_ns`` (the value computed) and
    the ``tasks``/``batches``/``calls`` used.  Each time is the median over
    ``batches`` of the mean per-call time of ``calls`` back-to-back calls.
    """
    if tasks < 1 or batches < 1 or calls < 1:
        raise ValueError(f"tasks, batches and calls must be >= 1, got {tasks}, {batches}, {calls}")
    now_ns = 1_000_000_000_000
    pairs = make_tasks(tasks, now_ns)
    queue = DeadlineQueue(tasks)
    for task_id, (deadline_ns, cost_ns) in enumerate(pairs):
        queue.push(deadline_ns, task_id, cost_ns)
    entries = sorted(pairs, key=lambda t: t[0])  # stable: FIFO among equal deadlines
    expected = python_slack(entries, now_ns)
    raw_q = queue._q
    if queue.slack(now_ns) != expected or lib.edfq_slack(raw_q, now_ns) != expected:
        raise RuntimeError(f"C slack {queue.slack(now_ns)} != Python slack {expected}")

    # name -> (callable, its arguments); every row pays the same fn(*args) call
    candidates: dict[str, tuple[Callable[..., object], tuple[object, ...]]] = {
        "c_ns": (queue.slack, (now_ns,)),
        "c_raw_ns": (lib.edfq_slack, (raw_q, now_ns)),
        "py_ns": (python_slack, (entries, now_ns)),
        "loop_ns": (noop, (now_ns,)),
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for fn, fn_args in candidates.values():  # warm-up
            time_batch(fn, fn_args, min(calls, 1_000))
        for _ in range(batches):  # interleaved, so drift hits every row alike
            for name, (fn, fn_args) in candidates.items():
                samples[name].append(time_batch(fn, fn_args, calls))
    finally:
        if gc_was_enabled:
            gc.enable()

    result = {name: statistics.median(values) for name, values in samples.items()}
    result["ratio"] = result["py_ns"] / result["c_ns"]
    result["ratio_raw"] = result["py_ns"] / result["c_raw_ns"]
    result.update(slack_ns=expected, tasks=tasks, batches=batches, calls=calls)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64, help="queued tasks (default 64)")
    parser.add_argument("--batches", type=int, default=31, help="batches (default 31)")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per batch")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.batches < 1 or args.calls < 1:
        parser.error("--tasks, --batches and --calls must be >= 1")

    r = measure_slack(args.tasks, args.batches, args.calls)
    print(
        f"slack over {args.tasks} queued tasks: median of {args.batches} batches "
        f"x {args.calls} calls"
    )
    print(f"  {'implementation':<46} {'ns/call':>9}")
    rows = [
        ("C   DeadlineQueue.slack(now)", r["c_ns"]),
        ("C   lib.edfq_slack(q, now)  (bare cffi call)", r["c_raw_ns"]),
        ("Py  python_slack(entries, now)", r["py_ns"]),
        ("    empty-function call + loop (in every row)", r["loop_ns"]),
    ]
    for label, value in rows:
        print(f"  {label:<46} {value:>9.1f}")
    print(f"  Python / DeadlineQueue.slack  = {r['ratio']:.1f}x")
    print(f"  Python / bare lib.edfq_slack  = {r['ratio_raw']:.1f}x")

    if args.json:
        figures: dict[str, object] = {"benchmark": "slack", **r}
        figures.update(
            python=sys.version.split()[0],
            implementation=platform.python_implementation(),
            machine=platform.machine(),
            platform=platform.platform(),
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Record two policies on the same workload, write a Perfetto trace and the bench figure.

    python examples/trace_and_plot.py                  # virtual time, 2,000 slots
    python examples/trace_and_plot.py --slots 200 --out /tmp/x

Open ``OUT/trace.json`` in https://ui.perfetto.dev: one process per policy, with a radio
track, an arbiter-decision track, one track per AI tenant and the slot boundaries;
``OUT/figure.png`` (with matplotlib, the ``plot`` extra) shows the same side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from airan.core.policy import Policy
from airan.runner import simulate
from airan.synthetic import SyntheticConfig
from airan.telemetry.trace import Recorder, write_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("trace-example"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    workload = SyntheticConfig(radio_load=0.6, burst_load=0.95)
    reports, recorders = [], []
    for name in ("fifo", "airan"):
        rec = Recorder(500_000, label=name)
        report = simulate(args.slots, Policy(name=name), seed=7, workload=workload, recorder=rec)
        reports.append(report)
        recorders.append(rec)
        print(
            f"{name:6s} radio tasks {report.ran.tasks}, misses {report.ran.misses}, "
            f"AI harvest {report.ai.harvest_ratio:.3f}, tokens {report.ai.tokens}"
        )
    n = write_trace(args.out / "trace.json", recorders, {"example": "trace_and_plot"})
    print(f"trace: {n} events in {args.out / 'trace.json'} (open it in https://ui.perfetto.dev)")
    try:
        from airan.telemetry.plots import bench_figure, miss_window, timeline
    except ImportError:  # pragma: no cover - plots import matplotlib lazily
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('figure: skipped (pip install -e ".[plot]" for matplotlib)')
        return
    start = miss_window(recorders, 6)
    slot_us = workload.slot_us
    tls = [timeline(r, start, 6 * slot_us) for r in recorders]
    bench_figure(reports, tls, args.out / "figure.png", title="fifo against airan, virtual time")
    print(f"figure: {args.out / 'figure.png'}")


if __name__ == "__main__":
    main()

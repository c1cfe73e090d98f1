"""Fault injection: plant faults in a live node, watch the O1 alarms, read the blame.

    python examples/fault_injection.py [--seconds 3]

A live node in real time on a simulated device (the MAC schedules every slot, an AI
tenant uses the slack) gets a fault plan (``airan.core.faults``): a radio slice that
overruns its prediction five-fold, an AI slice that hangs for 150 ms, an AI job that
raises, an executor error on a radio slice and an L2 that goes silent for 600 ms. An
O1 service watches it. The example prints each alarm as O1 raises it, then the run
report's fault section: what was injected, what the arbiter detected, how long AI was
shed and which misses were blamed on which fault. The same plan goes into
``airan serve`` as ``[[faults]]`` tables (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import time

from airan.core.faults import FaultPlan
from airan.node import Node, NodeConfig
from airan.ric.o1 import O1Service

PLAN = {
    "faults": [
        {"kind": "radio_overrun", "at_s": 0.3, "factor": 5.0},
        {"kind": "ai_hang", "at_s": 0.6, "hang_ms": 150.0},
        {"kind": "ai_raise", "at_s": 1.0},
        {"kind": "executor_error", "at_s": 1.3, "target": "radio"},
        {"kind": "l2_silence", "at_s": 1.6, "duration_ms": 600.0},
    ]
}
CONDITIONS = ("radioFault", "aiFault", "executorFault", "l2Silence", "deadlineMissRatio")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    config = NodeConfig.parse(
        {"policy": {"shed_hold_us": 20_000.0}, "alarms": {"l2_silence_ms": 100.0, "window_s": 5.0}}
    )
    node = Node.simulated(config, seed=1)
    node.install_faults(FaultPlan.parse(PLAN))
    o1 = O1Service(node, None, monitor=False)
    seen: set[str] = set()
    node.start(args.seconds)
    t0 = time.monotonic()
    try:
        while node.running:
            o1.poll()
            for cond in CONDITIONS:
                if o1.is_active(cond) and cond not in seen:
                    seen.add(cond)
                    ff = next(
                        a.fault_fields
                        for a in o1.active_alarms()
                        if a.fault_fields.alarm_condition == cond
                    )
                    print(
                        f"t={time.monotonic() - t0:5.2f} s  O1 alarm {cond:<17} "
                        f"{ff.event_severity:<8} {ff.specific_problem[:90]}"
                    )
            time.sleep(0.02)
    finally:
        node.stop()
        o1.close()
    r = node.report()
    f = r.faults
    print(f"\nradio: {r.ran.tasks} tasks, {r.ran.misses} misses; AI: {r.ai.slices} slices")
    print(f"failed AI jobs: {r.ai.failed_jobs}")
    print("injected:")
    for j in f.injected:
        print(
            f"  {j['kind']:<15} due {j['due_us'] / 1e3:7.1f} ms, "
            f"fired {j['fired_us'] / 1e3:7.1f} ms on {j['target']}"
        )
    print(f"detected: {f.detected}; AI shed {f.shed_us / 1e3:.1f} ms")
    for rec in f.records:
        print(f"  fault {rec['fault_id']} {rec['kind']:<15} t={rec['t_us'] / 1e3:7.1f} ms, "
              f"{rec['misses']} miss(es) blamed: {rec['detail'][:80]}")  # fmt: skip
    print(f"misses blamed on a fault: {f.misses_blamed}; unexplained: {f.misses_unexplained}")
    print(f"alarms raised: {', '.join(sorted(seen))}")


if __name__ == "__main__":
    main()

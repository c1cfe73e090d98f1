"""The four policies side by side: same synthetic workload, same seed, one run.

Run: ``python benchmarks/bench_policies.py [--slots N] [--seed S] [--json PATH]``.
Each policy runs in virtual time (``airan simulate``); two run at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from airan.core.policy import POLICY_NAMES, Policy
from airan.core.report import RunReport
from airan.runner import simulate


def _run(args: tuple[str, int, int]) -> str:
    name, slots, seed = args
    return simulate(slots, Policy(name=name), seed=seed).to_json()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with ProcessPoolExecutor(max_workers=2) as pool:
        docs = list(pool.map(_run, [(n, args.slots, args.seed) for n in POLICY_NAMES]))
    reports = [RunReport.model_validate_json(d) for d in docs]
    head = (
        "| policy | radio misses | deadline met | radio p50 / p99 / max µs | AI busy | "
        "harvest | tokens/s | wall s |\n|---|---|---|---|---|---|---|---|"
    )
    print(f"{args.slots} slots of {reports[0].workload['slot_us']:g} µs, seed {args.seed}\n")
    print(head)
    for r in reports:
        lat = r.ran.latency_us
        print(
            f"| {r.policy['name']} | {r.ran.misses} | {r.ran.deadline_met_ratio:.6f} | "
            f"{lat.p50:.0f} / {lat.p99:.0f} / {lat.max:.0f} | {r.ai.busy_ratio:.3f} | "
            f"{r.ai.harvest_ratio:.4f} | {r.ai.tokens_per_s:.0f} | {r.wall_time_s:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps([json.loads(d) for d in docs], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""AI throughput alone and co-scheduled with the radio, in one run.

Run: ``python benchmarks/bench_ai.py [--seconds S] [--backend auto|numpy|cupy] [--json PATH]``.

For each AI tenant (the built-in transformer decoder serving a closed-loop chat load,
and the synthetic decoder), the same run measures tokens per second with the device to
itself, then beside the synthetic radio workload under the ``airan`` policy: the ratio
is what sharing costs the AI, and ``ai.harvest_ratio`` how much of the radio's idle
time it used. Policy as ``airan demo`` uses it on that backend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from airan.backend import select_backend
from airan.core.policy import Policy
from airan.runner import device_defaults, run_on_device
from airan.synthetic import SyntheticConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    backend = select_backend(args.backend)
    knobs, slot_us = device_defaults(backend.name == "cupy")  # as airan demo uses them
    policy = Policy.parse(knobs)
    cfg = SyntheticConfig(slot_us=slot_us)
    print(f"{backend.name} on {backend.device}; {args.seconds:g} s per run; policy {policy.name}")
    print(
        "| AI tenant | tokens/s alone | tokens/s with radio | ratio | harvest | "
        "radio deadline-met | TTFT p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    results = {}
    for ai in ("transformer", "synthetic"):
        alone = run_on_device(backend, args.seconds, policy, args.seed, cfg, ai=ai, radio=False)
        shared = run_on_device(backend, args.seconds, policy, args.seed, cfg, ai=ai)
        ratio = shared.ai.tokens_per_s / max(alone.ai.tokens_per_s, 1e-9)
        t = shared.ai.ttft_ms
        ttft = f"{t.p50:.1f} / {t.p99:.1f}" if shared.ai.requests else "-"
        print(
            f"| {ai} | {alone.ai.tokens_per_s:.0f} | {shared.ai.tokens_per_s:.0f} | "
            f"{ratio:.2f} | {shared.ai.harvest_ratio:.3f} | "
            f"{shared.ran.deadline_met_ratio:.4f} | {ttft} |"
        )
        results[ai] = {
            "alone": json.loads(alone.to_json()),
            "with_radio": json.loads(shared.to_json()),
            "ratio": ratio,
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The grid's router against round-robin and nearest-site, on the same load, one run.

Run: ``python benchmarks/bench_grid.py [--seconds 10] [--rate 20] [--seed 1] [--json PATH]``.

Four site processes on loopback (simulated nodes serving the CPU-size decoder; see
``docs/grid.md``) of different AI capacity (AI share cap, batch) and distance; one
router per strategy in front of them, the same seeded Poisson load through each
(network round trips emulated by the router). Reported per strategy: SLO attainment
(TTFT and total latency within the SLO, of all requests sent), mean and p99 latency,
where the requests went, and the placement decision time. Then the router's throughput:
closed-loop clients sending one-token requests for a few seconds, no emulated network.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from airan.grid.loadgen import Mix, poisson_arrivals, run_load, summarize
from airan.grid.router import STRATEGIES, GridRouter, serve_router
from airan.grid.score import GridPolicy, SiteFacts
from airan.grid.site import SiteHandle, spawn_site
from airan.ric.inference import GenerateSpec, InferenceClient

# site, jurisdiction, AI share cap, max batch, price, RTT (ms) from each area
SITES: list[tuple[str, str, float, int, float, dict[str, float]]] = [
    ("edge-near", "EU-DE", 0.15, 4, 0.30, {"eu": 4.0, "us": 95.0}),
    ("edge-2", "EU-DE", 0.30, 4, 0.25, {"eu": 12.0, "us": 90.0}),
    ("regional", "EU-FR", 0.60, 8, 0.15, {"eu": 30.0, "us": 80.0}),
    ("dc-us", "US-VA", 1.00, 8, 0.08, {"eu": 90.0, "us": 8.0}),
]
TENANTS = ["acme", "globex"]


def policy() -> GridPolicy:
    return GridPolicy.parse(
        {
            "tenants": {
                "acme": {"jurisdictions": ["EU-DE", "EU-FR"], "ttft_ms": 500, "total_ms": 1500},
                "globex": {"ttft_ms": 500, "total_ms": 1500},
            }
        }
    )


def max_lag(router: GridRouter) -> float:
    """The largest pacing lag (ms) any site's simulated device reported: how far its
    clock fell behind the wall clock because the host could not compute fast enough."""
    return max(st.max_lag_ms for st in router.registry.sites.values())


def wait_idle(handles: list[SiteHandle], timeout_s: float = 30.0) -> None:
    """Until no site has a request waiting or running."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        depth = 0
        for h in handles:
            with InferenceClient(h.target) as c:
                depth += c.status().queue_depth
        if depth == 0:
            return
        time.sleep(0.2)


def throughput(facts: list[SiteFacts], seconds: float, clients: int) -> dict[str, float]:
    """Closed loop: ``clients`` threads, each sending one-token requests back to back."""
    srv = serve_router(facts, policy(), kpm_period_ms=100)
    try:
        srv.wait_ready(30)
        done = [0] * clients
        stop = time.monotonic() + seconds

        def client(k: int) -> None:
            with InferenceClient(srv.target) as c:
                i = 0
                while time.monotonic() < stop:
                    c.generate_all(
                        GenerateSpec(f"tp-{k}-{i}", "globex", (1, 2, 3, 4), 1, user_area="eu")
                    )
                    done[k] += 1
                    i += 1

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        dec = srv.call(srv.router.decision_us)
        return {"requests_per_s": sum(done) / wall, "requests": float(sum(done)), **dec}
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="load per strategy")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--throughput-s", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=16, help="closed-loop clients (throughput)")
    ap.add_argument(
        "--layer-us", type=float, default=400.0, help="simulated AI device: µs per layer call"
    )
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args(argv)

    handles: list[SiteHandle] = []
    results: dict[str, Any] = {}
    try:
        for i, (sid, _, cap, batch, _, _) in enumerate(SITES):
            handles.append(
                spawn_site(
                    {
                        "site_id": sid,
                        "tenants": TENANTS,
                        "seed": i,
                        "ai_share_cap": cap,
                        "max_batch": batch,
                        "ai_layer_us": ns.layer_us,
                    }
                )
            )
        facts = [
            SiteFacts.parse(
                {
                    "site_id": sid,
                    "target": h.target,
                    "jurisdiction": j,
                    "latency_ms": rtt,
                    "energy_price_per_kwh": price,
                    "max_inflight": 2 * batch,
                }
            )
            for (sid, j, _, batch, price, rtt), h in zip(SITES, handles, strict=True)
        ]
        mix = Mix(
            tenants=(("acme", 0.6), ("globex", 0.4)),
            areas=(("eu", 0.85), ("us", 0.15)),
            prompt_tokens=(8, 32),
            new_tokens=(16, 48),
            ttft_ms=500.0,
            total_ms=1500.0,
        )
        arrivals = poisson_arrivals(ns.rate, ns.seconds, ns.seed, mix)
        for strategy in STRATEGIES:
            srv = serve_router(
                facts, policy(), strategy=strategy, emulate_network=True, kpm_period_ms=100
            )
            try:
                srv.wait_ready(30)
                outs = run_load(srv.target, arrivals)
                sm: dict[str, Any] = dict(summarize(outs))
                sm["decision_us"] = srv.call(srv.router.decision_us)
                sm["placed"] = srv.call(srv.router.site_load)
                sm["max_pacing_lag_ms"] = srv.call(partial(max_lag, srv.router))
                results[strategy] = sm
            finally:
                srv.stop()
            wait_idle(handles)
        results["throughput"] = throughput(facts, ns.throughput_s, ns.clients)
    finally:
        for h in handles:
            h.stop()

    print(
        f"{len(arrivals)} requests over {ns.seconds:g} s (Poisson, {ns.rate:g}/s, seed "
        f"{ns.seed}); SLO: TTFT <= 500 ms, total <= 1500 ms; {platform.machine()}, "
        f"{platform.python_version()}\n"
    )
    print(
        "| strategy | SLO attainment | mean latency ms | p99 latency ms | mean TTFT ms | "
        "lost | placed (" + " / ".join(s[0] for s in SITES) + ") | decision p50 / p99 µs | "
        "max pacing lag ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for strategy in STRATEGIES:
        r = results[strategy]
        placed = " / ".join(str(r["placed"][s[0]]) for s in SITES)
        d = r["decision_us"]
        print(
            f"| {strategy} | {100 * r['slo_attainment']:.1f} % | {r['mean_latency_ms']:.0f} | "
            f"{r['p99_latency_ms']:.0f} | {r['mean_ttft_ms']:.0f} | {r['lost']:.0f} | {placed} | "
            f"{d['p50']:.0f} / {d['p99']:.0f} | {r['max_pacing_lag_ms']:.1f} |"
        )
    tp = results["throughput"]
    print(
        f"\nrouter throughput: {tp['requests_per_s']:.0f} requests/s ({ns.clients} closed-loop "
        f"clients, one-token requests, {tp['requests']:.0f} in {ns.throughput_s:g} s); "
        f"placement decision p50 {tp['p50']:.0f} µs, p99 {tp['p99']:.0f} µs"
    )
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

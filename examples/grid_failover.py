"""The AI grid with a site killed mid-run: three AI-RAN sites, a router, a load.

    python examples/grid_failover.py                      # 20 s at 8 requests/s
    python examples/grid_failover.py --seconds 5 --rate 6 --audit audit.jsonl --meter bill.csv

Three sites run as separate processes on loopback (``python -m airan.grid.site``): each
a simulated node (DU + arbiter) whose AI tenants serve a real transformer decoder (same
weights everywhere), in three jurisdictions, with different AI share caps, energy prices
and network distances. The router places a seeded Poisson load of two tenants — ``acme``
(its data must stay in the EU) and ``globex`` (anywhere, cost-aware) — from three user
areas, with the documented score. Network round trips are emulated by the router
(loopback has none). At ``--kill-at`` of the run the busiest site (the most requests in
flight, as soon as one has any) is SIGKILLed; the requests it was serving resume on other
sites from their last streamed token.

It prints per-site load, SLO attainment, latency, and the lost requests and duplicated
tokens the client saw (both 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from airan.grid.router import serve_router
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airan.grid.router import serve_router

from airan.grid.loadgen import Mix, poisson_arrivals, run_load, summarize
from airan.grid.metering import AuditLog
from airan.grid.score import GridPolicy, SiteFacts
from airan.grid.site import SiteHandle, spawn_site

SITES = [
    # site, jurisdiction, AI share cap, price per kWh, RTT (ms) from each user area
    ("edge-berlin", "EU-DE", 0.4, 0.30, {"eu-central": 4.0, "eu-west": 18.0, "us-east": 95.0}),
    ("edge-paris", "EU-FR", 0.7, 0.18, {"eu-central": 14.0, "eu-west": 5.0, "us-east": 80.0}),
    ("dc-virginia", "US-VA", 1.0, 0.08, {"eu-central": 95.0, "eu-west": 82.0, "us-east": 6.0}),
]
TENANTS = ["acme", "globex"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the load")
    ap.add_argument("--rate", type=float, default=8.0, help="requests per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction of the run")
    ap.add_argument("--audit", type=Path, help="write the placement audit (JSON Lines) here")
    ap.add_argument("--meter", type=Path, help="write the metering (.json or .csv) here")
    ns = ap.parse_args(argv)
    if not 0 < ns.kill_at < 1:
        ap.error("--kill-at must be in (0, 1)")

    handles: list[SiteHandle] = []
    try:
        for i, (sid, _, cap, _, _) in enumerate(SITES):
            handles.append(
                spawn_site({"site_id": sid, "tenants": TENANTS, "seed": i, "ai_share_cap": cap})
            )
        facts = [
            SiteFacts.parse(
                {
                    "site_id": sid,
                    "target": h.target,
                    "jurisdiction": j,
                    "latency_ms": rtt,
                    "energy_price_per_kwh": price,
                    "max_inflight": 8,
                }
            )
            for (sid, j, _, price, rtt), h in zip(SITES, handles, strict=True)
        ]
        policy = GridPolicy.parse(
            {
                "tenants": {
                    "acme": {
                        "jurisdictions": ["EU-DE", "EU-FR"],
                        "weights": {"latency": 1.0, "cost": 0.1},
                        "cost_ref": 1e-7,
                    },
                    "globex": {
                        "weights": {"latency": 1.0, "cost": 1.0},
                        "cost_ref": 1e-7,
                    },
                },
                "stale_after_s": 1.0,
            }
        )
        audit = AuditLog(ns.audit)
        srv = serve_router(facts, policy, audit=audit, emulate_network=True, kpm_period_ms=100)
        try:
            srv.wait_ready(30)
            mix = Mix(
                tenants=(("acme", 0.5), ("globex", 0.5)),
                areas=(("eu-central", 0.4), ("eu-west", 0.4), ("us-east", 0.2)),
                ttft_ms=1000.0,
                total_ms=3000.0,
            )
            arrivals = poisson_arrivals(ns.rate, ns.seconds, ns.seed, mix)
            print(
                f"grid: {len(handles)} sites, router at {srv.target}; {ns.seconds:g} s of load "
                f"at {ns.rate:g} requests/s (seed {ns.seed}): {len(arrivals)} requests"
            )
            killed: list[tuple[str, float, int]] = []

            def during(elapsed: float) -> None:
                if killed or elapsed < ns.kill_at * ns.seconds:
                    return
                inflight = srv.call(
                    lambda: {k: s.live.inflight for k, s in srv.router.registry.sites.items()}
                )
                victim = max(inflight, key=lambda k: (inflight[k], k))
                if inflight[victim] == 0:
                    return  # nothing running anywhere this instant: look again in 50 ms
                next(h for h in handles if h.site == victim).kill()
                killed.append((victim, elapsed, inflight[victim]))

            outs = run_load(srv.target, arrivals, during)
            for victim, at, n in killed:
                print(f"killed {victim} at {at:.1f} s (SIGKILL) with {n} requests in flight there")
            rows = srv.router.meter.rows()
            status = srv.call(srv.router.status)
            print(
                f"{'site':<12} {'jurisdiction':<12} {'placed':>6} {'tokens':>7} "
                f"{'device ms':>9}  radio deadline-met  state"
            )
            placed = srv.call(srv.router.site_load)
            for s in status.sites:
                tok = sum(r.tokens for r in rows if r.site == s.site)
                dev = sum(r.device_us for r in rows if r.site == s.site) / 1000.0
                state = "up" if s.healthy else f"down ({s.reason})"
                print(
                    f"{s.site:<12} {s.jurisdiction:<12} {placed[s.site]:>6} {tok:>7} "
                    f"{dev:>9.1f}  {s.deadline_met_ratio:>18.4f}  {state}"
                )
            sm = summarize(outs)
            stats = srv.call(lambda: dict(srv.router.stats))
            dec = srv.call(srv.router.decision_us)
            print(
                f"requests: {sm['requests']:.0f} sent, {sm['completed']:.0f} completed, "
                f"{sm['refused']:.0f} refused; {sm['tokens']:.0f} tokens"
            )
            print(
                f"SLO attainment: {100 * sm['slo_attainment']:.1f} % (TTFT <= "
                f"{mix.ttft_ms:g} ms and total <= {mix.total_ms:g} ms)"
            )
            print(
                f"latency: mean {sm['mean_latency_ms']:.0f} ms, p99 {sm['p99_latency_ms']:.0f} ms; "
                f"mean TTFT {sm['mean_ttft_ms']:.0f} ms; placement decision p50 "
                f"{dec['p50']:.0f} us, p99 {dec['p99']:.0f} us"
            )
            print(f"failover: {sm['failed_over']:.0f} requests moved ({stats['failovers']} moves)")
            print(f"lost requests: {sm['lost']:.0f}")
            print(f"duplicated tokens: {sm['duplicated_tokens']:.0f} (gaps: {sm['gaps']:.0f})")
            residency_ok = all(
                o.final_site in ("edge-berlin", "edge-paris")
                and o.sites_seen <= {"edge-berlin", "edge-paris"}
                for o in outs
                if o.spec.tenant == "acme" and o.complete
            )
            print(f"acme served only in the EU: {'yes' if residency_ok else 'NO'}")
            if ns.meter is not None:
                srv.router.meter.export(ns.meter)
                print(f"metering written to {ns.meter}")
            if ns.audit is not None:
                print(f"{len(audit.records())} audit records written to {ns.audit}")
        finally:
            srv.stop()
            audit.close()
    finally:
        for h in handles:
            h.stop()


if __name__ == "__main__":
    main()

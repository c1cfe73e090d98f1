"""Benchmark: the E2 agent under many KPM subscribers, and control-to-effect latency.

    python benchmarks/bench_e2.py [--seconds 60] [--subscribers 50] [--period-ms 10]
                                  [--controls 200] [--target HOST:PORT] [--json PATH]
                                  [--sync-server] [--switch-interval-ms MS]

Without ``--target`` a :class:`~airan.testing.FakeNode` (a live simulated node with its
E2 agent) runs in a child process, so the node and this client do not share a GIL.

* ``--subscribers`` asyncio subscribers (one :class:`~airan.ric.xapp.AsyncE2Client`
  channel each) subscribe to E2SM-KPM REPORT style 1 at ``--period-ms`` for
  ``--seconds``, then delete their subscriptions. **Lost indications**: per subscriber,
  the sequence numbers the node says it sent (the deletion notice's last SN) minus the
  distinct ones received; must be 0. **Delivery latency**: from the indication's
  collection end time stamp (the node's ``time.time_ns`` when it read its counters) to
  its receipt here, p50 / p99 / max.
* Meanwhile ``--controls`` co-scheduling controls (``ai_share_cap`` alternating 0.5 /
  1.0), evenly spread over the run: **control-to-effect** latency (the arbiter's ticket,
  ``applied_ns - requested_ns``: request handed to the loop → applied before its next
  decision) and the control RPC round trip, p50 / p99.

Also reported: the CPU of the client process and of the node child (whole process, and
per thread group: the node's loop ``airan-node``, the E2 event loop ``airan-e2-aio`` or
the sync server's ``airan-grpc`` pool and ``airan-e2-timers``, gRPC's poller), the
node's garbage-collection pauses, and (``--json``) the worst delivery latency in each
second of the run. ``--sync-server`` serves the node with the sync gRPC server instead
of ``grpc.aio``; ``--switch-interval-ms`` sets the node child's
``sys.setswitchinterval``.

Prints a table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    from airan.ric.xapp import AsyncE2Client, AsyncKpmSubscription
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airan.ric.xapp import AsyncE2Client, AsyncKpmSubscription

MEASUREMENTS = ("DRB.UEThpDl", "airan.AiBusy", "airan.RadioSlackLowUs", "airan.HarvestRatio")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's live threads, grouped by the Python
    thread name without its trailing number (``os:<comm>`` for threads Python did not
    start, e.g. gRPC core's)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:  # not Linux
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        name = re.sub(r"[_-]?\d+$", "", names.get(int(tid), "os:" + comm))
        out[name] = out.get(name, 0.0) + cpu
    return out


def _node_process(
    conn: Any, max_subscriptions: int, seed: int, switch_ms: float, aio: bool = True
) -> None:
    """Child: run a FakeNode until the parent says stop; report its target and the CPU
    it used meanwhile (per thread group)."""
    from airan.testing import FakeNode

    if switch_ms > 0:
        sys.setswitchinterval(switch_ms / 1e3)

    gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)
    gc_t0 = [0.0]

    def gc_watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_pauses.append((int(info["generation"]), time.perf_counter() - gc_t0[0]))

    gc.callbacks.append(gc_watch)
    with FakeNode(seed=seed, o1=False, max_subscriptions=max_subscriptions, aio=aio) as fake:
        t0, cpu0, threads0 = time.perf_counter(), time.process_time(), _thread_cpu()
        conn.send(fake.e2_target)
        conn.recv()  # stop
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        threads = {
            k: round(v - threads0.get(k, 0.0), 2)
            for k, v in sorted(_thread_cpu().items(), key=lambda kv: -kv[1])
        }
        stats = {
            "overflows": fake.agent.overflows,
            "late_periods": fake.agent._timers.late,
            "cpu_cores": round(cpu / wall, 3),
            "gc_collections": len(gc_pauses),
            "gc_pause_max_ms": round(max((d for _, d in gc_pauses), default=0.0) * 1e3, 2),
            "gc_pause_total_ms": round(sum(d for _, d in gc_pauses) * 1e3, 1),
            "thread_cpu_s": {k: v for k, v in threads.items() if v > 0},
        }
    conn.send(stats)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def _subscriber(
    target: str, period_ms: int, stop: asyncio.Event, out: dict[str, Any], t0: float
) -> None:
    async with AsyncE2Client(target) as e2:
        sub: AsyncKpmSubscription = await e2.kpm.subscribe(list(MEASUREMENTS), period_ms=period_ms)
        seqs: list[int] = []
        lat: list[float] = []
        worst: dict[int, float] = {}  # second of the run -> worst latency (ms)

        async def read() -> None:
            async for r in sub:
                seqs.append(r.sequence)
                ms = r.latency_s * 1e3
                lat.append(ms)
                sec = int(time.monotonic() - t0)
                worst[sec] = max(worst.get(sec, 0.0), ms)

        reader = asyncio.create_task(read())
        await stop.wait()
        await sub.delete()  # the stream then ends with the deletion notice
        await asyncio.wait_for(reader, 30)
        end = sub.ended
        sent = end.last_sequence.get(1, 0) if end is not None else max(seqs, default=0)
        out["sent"] = sent
        out["received"] = len(seqs)
        out["lost"] = sent - len(set(seqs))
        out["out_of_order"] = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        out["latency_ms"] = lat
        out["worst"] = worst
        out["ended_by"] = None if end is None else end.ended_by


async def _controls(target: str, n: int, seconds: float, out: dict[str, Any]) -> None:
    effect: list[float] = []
    rtt: list[float] = []
    async with AsyncE2Client(target) as e2:
        await asyncio.sleep(min(1.0, seconds / 10))
        gap = max(0.0, (seconds * 0.8) / max(n, 1))
        for i in range(n):
            r = await e2.cosched.set_policy(ai_share_cap=0.5 if i % 2 == 0 else 1.0)
            effect.append(r.control_to_effect_ns / 1e3)
            rtt.append(r.rtt_ns / 1e3)
            await asyncio.sleep(gap)
        await e2.cosched.set_policy(ai_share_cap=1.0)
    out["effect_us"] = effect
    out["rtt_us"] = rtt


async def _run(args: argparse.Namespace, target: str) -> dict[str, Any]:
    stop = asyncio.Event()
    subs: list[dict[str, Any]] = [{} for _ in range(args.subscribers)]
    ctl: dict[str, Any] = {}
    start = time.monotonic()
    tasks = [asyncio.create_task(_subscriber(target, args.period_ms, stop, s, start)) for s in subs]
    t0, cpu0 = time.perf_counter(), time.process_time()
    ctl_task = asyncio.create_task(_controls(target, args.controls, args.seconds, ctl))
    await asyncio.sleep(args.seconds)
    await ctl_task
    stop.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    lat = [x for s in subs for x in s["latency_ms"]]
    worst: dict[int, float] = {}
    for s in subs:
        for sec, ms in s["worst"].items():
            worst[sec] = max(worst.get(sec, 0.0), ms)
    sent = sum(s["sent"] for s in subs)
    return {
        "subscribers": args.subscribers,
        "period_ms": args.period_ms,
        "seconds": args.seconds,
        "wall_s": round(wall, 3),
        "indications_sent": sent,
        "indications_received": sum(s["received"] for s in subs),
        "indications_lost": sum(s["lost"] for s in subs),
        "out_of_order": sum(s["out_of_order"] for s in subs),
        "indications_per_s": round(sent / wall, 1),
        "client_cpu_cores": round(client_cpu / wall, 3),
        "ended_by_ric": sum(1 for s in subs if s["ended_by"] == "ric"),
        "delivery_latency_ms": {
            "p50": round(pct(lat, 0.50), 3),
            "p99": round(pct(lat, 0.99), 3),
            "max": round(max(lat, default=float("nan")), 3),
            "mean": round(statistics.fmean(lat), 3) if lat else float("nan"),
        },
        "worst_latency_ms_by_second": {k: round(v, 1) for k, v in sorted(worst.items())},
        "controls": len(ctl["effect_us"]),
        "control_to_effect_us": {
            "p50": round(pct(ctl["effect_us"], 0.50), 1),
            "p99": round(pct(ctl["effect_us"], 0.99), 1),
            "max": round(max(ctl["effect_us"], default=float("nan")), 1),
        },
        "control_rtt_us": {
            "p50": round(pct(ctl["rtt_us"], 0.50), 1),
            "p99": round(pct(ctl["rtt_us"], 0.99), 1),
            "max": round(max(ctl["rtt_us"], default=float("nan")), 1),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--period-ms", type=int, default=10)
    ap.add_argument("--controls", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--switch-interval-ms",
        type=float,
        default=0.0,
        help="sys.setswitchinterval of the FakeNode child (0: Python's default, 5 ms)",
    )
    ap.add_argument(
        "--sync-server",
        action="store_true",
        help="serve the FakeNode with the sync gRPC server (one thread per subscriber) "
        "instead of grpc.aio",
    )
    ap.add_argument("--target", help="an E2 node's host:port (default: a FakeNode child)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.subscribers < 1 or args.period_ms < 1 or args.controls < 0:
        ap.error("--seconds, --subscribers, --period-ms must be positive, --controls >= 0")
    proc = None
    node_stats: dict[str, Any] = {}
    if args.target is None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_node_process,
            args=(
                child,
                args.subscribers + 16,
                args.seed,
                args.switch_interval_ms,
                not args.sync_server,
            ),
            daemon=True,
        )
        proc.start()
        target = parent.recv()
    else:
        target = args.target
    try:
        res = asyncio.run(_run(args, target))
    finally:
        if proc is not None:
            parent.send("stop")
            if parent.poll(30):
                node_stats = parent.recv()
            proc.join(30)
    res.update(
        {
            "node": "FakeNode child process" if proc is not None else target,
            "node_server": "sync" if args.sync_server else "aio",
            "node_switch_interval_ms": args.switch_interval_ms or 5.0,
            **{f"node.{k}": v for k, v in node_stats.items()},
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        }
    )
    d, c, r = res["delivery_latency_ms"], res["control_to_effect_us"], res["control_rtt_us"]
    rows = [
        ("subscribers x period", f"{res['subscribers']} x {res['period_ms']} ms"),
        ("run", f"{res['wall_s']:.1f} s"),
        (
            "indications sent / received",
            f"{res['indications_sent']} / {res['indications_received']}",
        ),
        ("indications lost", f"{res['indications_lost']}"),
        ("indications per second", f"{res['indications_per_s']:.0f}"),
        ("client: CPU (cores, whole process)", f"{res['client_cpu_cores']:.2f}"),
        (
            "delivery latency p50 / p99 / max",
            f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f} ms",
        ),
        ("controls", f"{res['controls']}"),
        ("control-to-effect p50 / p99", f"{c['p50']:.0f} / {c['p99']:.0f} us"),
        ("control RPC round trip p50 / p99", f"{r['p50']:.0f} / {r['p99']:.0f} us"),
    ]
    if node_stats:
        rows.append(("node: subscriptions ended (overflow)", f"{node_stats['overflows']}"))
        rows.append(("node: periods reported late", f"{node_stats['late_periods']}"))
        rows.append(("node: CPU (cores, whole process)", f"{node_stats['cpu_cores']:.2f}"))
        rows.append(
            (
                "node: gc collections / max / total pause",
                f"{node_stats['gc_collections']} / {node_stats['gc_pause_max_ms']:.1f} / "
                f"{node_stats['gc_pause_total_ms']:.0f} ms",
            )
        )
        top = list(node_stats["thread_cpu_s"].items())[:6]
        rows.append(("node: CPU s by thread", ", ".join(f"{k} {v:.1f}" for k, v in top)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()

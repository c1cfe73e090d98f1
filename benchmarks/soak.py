"""Soak: a long ``airan serve`` run with AI saturating the device, many subscribed
xApps and random controls; the node's memory, file descriptors and threads sampled
all along (``docs/reliability.md``, "Soak").

    python benchmarks/soak.py --minutes 30 --xapps 20 --out soak-out

What runs:

* ``airan serve`` in its own process (NumPy on a CPU, CuPy on a GPU) with two AI
  tenants that always want the device (a transformer with a closed-loop chat load and
  the synthetic decoder), E2 and O1 on one port, metrics, a report at stop;
* ``--xapps`` xApps in a second process, each with an E2 client and a KPM REPORT
  subscription (node measurements, a period of 100, 200, 500 or 1000 ms); every
  ``--churn-s`` one xApp closes its channel without deleting (a crash) and a new one
  subscribes in its place;
* random controls from a third thread every ``--control-s``: E2 co-scheduling policy
  knobs (valid and invalid values), tenant pause/resume, slice PRB quotas, O1 sets of
  the alarm configuration and O1 gets;
* every ``--sample-s`` the node process's resident memory, open file descriptors and
  threads (``/proc``), and its metrics (tasks, misses, AI tokens).

At the end the node is stopped with SIGTERM and the figures are written to
``OUT/soak.json`` (all samples, the summary) and printed. "Flat" is judged on the
second half of the run (after warm-up): the least-squares slope of the resident
memory (MiB per hour) and the range of descriptors and threads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

CONFIG = """\
[node]
node_id = "soak-node"

[node.policy]
name = "airan"

[node.policy.tenants.llm]
weight = 2.0

[node.policy.tenants.batch]
weight = 1.0

[device]
backend = "{backend}"
seed = 7

[ai.tenants.llm]
kind = "transformer"

[ai.tenants.batch]
kind = "synthetic"

[e2]
address = "127.0.0.1"
port = 0
max_subscriptions = 256

[o1]
state = "o1-state.json"
measurement_s = 10.0

[metrics]
address = "127.0.0.1"
port = 0

[report]
path = "report.json"
"""

NODE_MEASUREMENTS = [
    "DRB.UEThpDl", "DRB.UEThpUl", "RRU.PrbTotDl", "airan.DeadlineMetRatio",
    "airan.HarvestRatio", "airan.AiTokensPerS", "airan.RadioMisses",
]  # fmt: skip


def _proc_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(Vm\w+|RssAnon):\s+(.*)$", status, re.M)}
    return {
        "rss_mib": kb.get("VmRSS", 0) / 1024,
        "rss_anon_mib": kb.get("RssAnon", 0) / 1024,
        "hwm_mib": kb.get("VmHWM", 0) / 1024,
        "threads": float(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)),  # type: ignore[union-attr]
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
    }


def _metrics(url: str) -> dict[str, float]:
    """The node's counters of interest from its Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    want = {
        "airan_radio_tasks": "tasks",
        "airan_radio_deadline_misses": "misses",
        "airan_ai_tokens": "ai_tokens",
        "airan_e2_subscriptions": "e2_subscriptions",
    }
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        key = want.get(family.name)
        if key is not None:
            out[key] = sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return out


def _xapps_main(target: str, n: int, seconds: float, churn_s: float, control_s: float,
                result_path: str, seed: int) -> None:  # fmt: skip
    """The xApps and the controller (a separate process, so that they do not share the
    node's CPU accounting or its file descriptors)."""
    from airan.ric.o1 import O1Client
    from airan.ric.xapp import E2Client, E2Error

    rng = random.Random(seed)
    lock = threading.Lock()
    counts: dict[str, int] = {
        "reports": 0, "subscribed": 0, "churned": 0, "controls_ok": 0, "controls_refused": 0,
        "o1_ok": 0, "o1_refused": 0, "errors": 0,
    }  # fmt: skip

    def count(key: str, k: int = 1) -> None:
        with lock:
            counts[key] += k

    def subscribe() -> tuple[Any, Any]:
        client = E2Client(target, timeout_s=10.0)
        period = rng.choice([100, 200, 500, 1000])
        sub = client.kpm.subscribe(NODE_MEASUREMENTS, period, callback=lambda _r: count("reports"))
        count("subscribed")
        return client, sub

    xapps = [subscribe() for _ in range(n)]
    stop = threading.Event()

    def controller() -> None:
        e2 = E2Client(target, timeout_s=10.0)
        o1 = O1Client(target, timeout_s=10.0)
        while not stop.wait(control_s * rng.uniform(0.5, 1.5)):
            kind = rng.random()
            try:
                if kind < 0.45:
                    knobs: dict[str, Any] = {}
                    if rng.random() < 0.5:
                        knobs["guard_us"] = rng.choice([5.0, 10.0, 20.0, 40.0, -1.0])
                    if rng.random() < 0.5:
                        knobs["ai_share_cap"] = rng.choice([0.3, 0.6, 0.9, 1.0, 1.5])
                    if rng.random() < 0.3:
                        knobs["tenants"] = {"llm": {"weight": rng.choice([0.5, 1.0, 2.0, 4.0])}}
                    if rng.random() < 0.2:
                        knobs["max_ai_slice_us"] = rng.choice([800.0, 1000.0, 1200.0, 0.0])
                    e2.cosched.set_policy(**knobs)
                    count("controls_ok")
                elif kind < 0.65:
                    tenant = rng.choice(["llm", "batch", "nobody"])
                    if rng.random() < 0.5:
                        e2.cosched.pause_tenant(tenant)
                    else:
                        e2.cosched.resume_tenant(tenant)
                    count("controls_ok")
                elif kind < 0.8:
                    from airan.core.rrm import SliceQuota

                    lo = rng.choice([0, 10, 20])
                    q = {"snssai": {"sst": 1, "sd": rng.choice([1, 2])}, "min_ratio": lo}
                    e2.rc.slice_prb_quota([SliceQuota.parse(q)])
                    count("controls_ok")
                elif kind < 0.92:
                    o1.set("/alarms/window_s", rng.choice([0.5, 1.0, 2.0, -3.0]))
                    count("o1_ok")
                else:
                    o1.get(rng.choice(["/", "/policy", "/alarms", "/nonexistent"]))
                    count("o1_ok")
            except E2Error:
                count("controls_refused")
            except Exception as exc:  # an O1 refusal, or worse: count both
                count("o1_refused" if type(exc).__name__.startswith("O1") else "errors")
                if not type(exc).__name__.startswith("O1"):
                    print(f"soak controller: {type(exc).__name__}: {exc}", file=sys.stderr)
        e2.close()
        o1.close()

    ctl = threading.Thread(target=controller, daemon=True)
    ctl.start()
    t_end = time.monotonic() + seconds
    next_churn = time.monotonic() + churn_s
    while time.monotonic() < t_end:
        time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        if time.monotonic() >= next_churn:
            next_churn += churn_s
            i = rng.randrange(len(xapps))
            client, _sub = xapps[i]
            client.channel.close()  # a crash: no delete; the node must clean up
            try:
                xapps[i] = subscribe()
                count("churned")
            except E2Error as exc:
                count("errors")
                print(f"soak: re-subscribe refused: {exc}", file=sys.stderr)
    stop.set()
    ctl.join(15)
    for client, sub in xapps:
        try:
            sub.delete()
        except Exception:
            count("errors")
        client.close()
    Path(result_path).write_text(json.dumps(counts))


def _slope_per_hour(ts: list[float], ys: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    cov = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True))
    return 0.0 if var == 0 else cov / var * 3600


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--xapps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("soak-out"))
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "cupy"])
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--churn-s", type=float, default=60.0)
    ap.add_argument("--control-s", type=float, default=1.0)
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "soak.toml"
    cfg.write_text(CONFIG.format(backend=args.backend))
    seconds = args.minutes * 60.0
    log = (out / "serve.log").open("w")
    node = subprocess.Popen(
        [sys.executable, "-m", "airan", "serve", "--config", str(cfg),
         "--seconds", str(int(seconds + 600))],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
    )  # fmt: skip
    assert node.stdout is not None
    e2_target = metrics_url = ""
    for line in node.stdout:
        log.write(line)
        log.flush()
        if m := re.search(r"e2 listening on (\S+)", line):
            e2_target = m.group(1)
        if m := re.search(r"metrics listening on (\S+)", line):
            metrics_url = m.group(1)
        if e2_target and metrics_url:
            break
    if not e2_target:
        print("airan serve did not start; see", out / "serve.log", file=sys.stderr)
        return 1
    threading.Thread(target=lambda: [log.write(x) for x in node.stdout], daemon=True).start()  # type: ignore[union-attr]
    url = metrics_url if metrics_url.endswith("/metrics") else metrics_url.rstrip("/") + "/metrics"
    print(f"soak: node pid {node.pid}, e2 {e2_target}, metrics {url}; {args.minutes:g} min")
    xres = out / "xapps.json"
    ctx = mp.get_context("spawn")
    xp = ctx.Process(
        target=_xapps_main,
        args=(e2_target, args.xapps, seconds, args.churn_s, args.control_s, str(xres), 7),
    )
    xp.start()
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds and node.poll() is None:
            s = {"t_s": time.monotonic() - t0, **_proc_figures(node.pid), **_metrics(url)}
            samples.append(s)
            print(
                f"  t={s['t_s']:7.0f}s rss={s['rss_mib']:7.1f} MiB fds={s['fds']:4.0f} "
                f"threads={s['threads']:3.0f} tasks={s.get('tasks', 0):9.0f} "
                f"misses={s.get('misses', 0):6.0f} subs={s.get('e2_subscriptions', 0):3.0f}",
                flush=True,
            )
            time.sleep(max(0.0, args.sample_s - (time.monotonic() - t0 - s["t_s"])))
    finally:
        xp.join(120)
        if xp.is_alive():
            xp.terminate()
        t_stop = time.monotonic()
        if node.poll() is None:
            os.kill(node.pid, signal.SIGTERM)
        rc = node.wait(120)
        stop_s = time.monotonic() - t_stop
    half = [s for s in samples if s["t_s"] >= seconds / 2]
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    xapps = json.loads(xres.read_text()) if xres.exists() else {}
    summary = {
        "minutes": args.minutes,
        "xapps": args.xapps,
        "exit_code": rc,
        "stop_s": round(stop_s, 3),
        "samples": len(samples),
        "rss_mib": {
            "first": samples[0]["rss_mib"] if samples else None,
            "at_half": half[0]["rss_mib"] if half else None,
            "last": samples[-1]["rss_mib"] if samples else None,
            "max": max((s["rss_mib"] for s in samples), default=None),
            "slope_second_half_mib_per_h": round(
                _slope_per_hour([s["t_s"] for s in half], [s["rss_mib"] for s in half]), 2
            ),
        },
        "fds": {"min": min((s["fds"] for s in samples), default=None),
                "max": max((s["fds"] for s in samples), default=None),
                "second_half": sorted({s["fds"] for s in half})},
        "threads": {"min": min((s["threads"] for s in samples), default=None),
                    "max": max((s["threads"] for s in samples), default=None),
                    "second_half": sorted({s["threads"] for s in half})},
        "xapps_process": xapps,
        "report": {
            "ran": {k: report.get("ran", {}).get(k) for k in ("tasks", "misses", "dropped",
                                                              "deadline_met_ratio")},
            "ai": {k: report.get("ai", {}).get(k) for k in ("slices", "tokens", "harvest_ratio",
                                                            "requests", "failed_jobs")},
            "faults": report.get("faults", {}).get("detected"),
        },
    }  # fmt: skip
    (out / "soak.json").write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

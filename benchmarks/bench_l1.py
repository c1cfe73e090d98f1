"""Benchmark: per-slot L1 time of one cell on a ladder of cell configurations.

    python benchmarks/bench_l1.py [--backend numpy|cupy|auto] [--slots 200]
                                  [--warmup 2] [--max-rung-s 40] [--test-vectors 4]
                                  [--quick] [--json PATH]

For each rung of :data:`LADDER` (µ = 1, from 5 MHz / 1 antenna / 1 layer / 2 UEs up to
100 MHz / 8 antennas / 4 layers / 16 UEs) and each variant, the benchmark builds
``DuWorkload(config, l1=[L1Work(...)])`` and runs the slices of ``radio_tasks(0, N)`` in
order, calling every slice's ``work()``:

* ``numpy``: the CPU. A task's time is the sum of its slices' ``work()`` wall times.
* ``cupy`` / ``cupy+graphs`` (when a GPU is usable): ``L1Work(graphs=False/True)``, all
  work issued on one non-blocking stream; a task's time is host wall time from its first
  launch to the end of ``stream.synchronize()`` after its last slice (launch overhead,
  device time and the sync: what the radio waits for). Per-stage times are CUDA event
  times between the slices.

**Per-slot L1 time** = the sum of the times of the slot's tasks (its PUSCH receive:
front end, equalisation, decoding; its PDSCH transmit), over the slots after
``--warmup``. A rung **meets µ=1 timing** when the per-slot p99 is at most the slot,
500 µs: the device then finishes a slot's L1 work within a slot on average and at the
tail. Each rung runs ``--slots`` slots or until ``--max-rung-s`` seconds have passed,
whichever comes first (``slots`` in the table says how many were measured).

Also reported: the ratio of uplink CRCs that passed (the test vectors are recorded at
each UE's SNR through its own multipath channel; a failing CRC decodes with every LDPC
iteration, so it costs the most), and ``dl_reuse``, the share of DL slots whose exact
grant set (and slot number) is in a 32-entry cache of recent ones: the hit rate a
per-grant-set CUDA graph cache for the downlink would get.

``--quick``: two small rungs, a few slots (the smoke test's run).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # timing: one BLAS thread

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import platform
import sys
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from airan.backend import cpu_device, cupy_unavailable_reason, probe_cupy
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airan.backend import cpu_device, cupy_unavailable_reason, probe_cupy

from airan.ran.config import RanConfig
from airan.ran.du import DuWorkload
from airan.ran.l1 import L1Work, to_sch
from airan.ran.mac import Mac
from airan.ran.numerology import SlotId

#: (name, RanConfig fields) from small to large; µ = 1 throughout
LADDER: tuple[tuple[str, dict[str, int]], ...] = (
    ("5MHz-1x1-2ue", {"bandwidth_mhz": 5, "antennas": 1, "layers": 1, "ues": 2}),
    ("10MHz-2x1-4ue", {"bandwidth_mhz": 10, "antennas": 2, "layers": 1, "ues": 4}),
    ("20MHz-2x2-4ue", {"bandwidth_mhz": 20, "antennas": 2, "layers": 2, "ues": 4}),
    ("20MHz-4x2-8ue", {"bandwidth_mhz": 20, "antennas": 4, "layers": 2, "ues": 8}),
    ("40MHz-4x2-8ue", {"bandwidth_mhz": 40, "antennas": 4, "layers": 2, "ues": 8}),
    ("40MHz-8x4-8ue", {"bandwidth_mhz": 40, "antennas": 8, "layers": 4, "ues": 8}),
    ("100MHz-4x2-16ue", {"bandwidth_mhz": 100, "antennas": 4, "layers": 2, "ues": 16}),
    ("100MHz-8x4-16ue", {"bandwidth_mhz": 100, "antennas": 8, "layers": 4, "ues": 16}),
)
QUICK = LADDER[:2]
STAGES = ("pusch.front_end", "pusch.equalise", "pusch.decode", "pdsch.tx")
SHORT = {"pusch.front_end": "fe", "pusch.equalise": "eq", "pusch.decode": "dec", "pdsch.tx": "dl"}


def rung_config(fields: dict[str, int]) -> RanConfig:
    """The rung's cell: µ = 1, every UE schedulable in a slot (up to 16)."""
    return RanConfig(numerology=1, max_ues_per_slot=min(fields["ues"], 16), **fields)


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64)
    p50, p99 = np.percentile(a, [50.0, 99.0])
    return {
        "p50": round(float(p50), 1),
        "p99": round(float(p99), 1),
        "max": round(float(a.max()), 1),
        "mean": round(float(a.mean()), 1),
    }


def dl_reuse(config: RanConfig, seed: int, slots: int, cache: int = 32) -> float:
    """Share of DL slots whose exact grant set and slot number is among the ``cache``
    most recently seen (the DU's cell-0 MAC, same seed)."""
    mac = Mac(config, seed, cell=0)
    seen: OrderedDict[Any, None] = OrderedDict()
    hits = total = 0
    for i in range(slots):
        slot = SlotId.from_index(i, config.numerology)
        dec = mac.schedule(slot)
        if not dec.dl:
            continue
        key = (tuple(to_sch(g, config) for g in dec.dl), slot.slot)
        total += 1
        if key in seen:
            hits += 1
            seen.move_to_end(key)
        else:
            seen[key] = None
            if len(seen) > cache:
                seen.popitem(last=False)
    return hits / total if total else 0.0


def run_variant(
    name: str, config: RanConfig, variant: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Time one rung on one variant; the row of the report."""
    gpu = variant != "numpy"
    xp: Any = np
    stream: Any = None
    sync: Callable[[], None] = lambda: None  # noqa: E731
    events: list[Any] = []
    if gpu:
        import cupy

        xp = cupy
        stream = cupy.cuda.Stream(non_blocking=True)
        sync = stream.synchronize
        events = [cupy.cuda.Event() for _ in range(8)]
    ctx: contextlib.AbstractContextManager[Any] = stream if gpu else contextlib.nullcontext()
    t_init = time.perf_counter()
    with ctx:
        l1 = L1Work(
            config,
            xp,
            seed=args.seed,
            sync=sync,
            test_vectors=args.test_vectors,
            graphs=variant == "cupy+graphs",
        )
    init_s = time.perf_counter() - t_init
    du = DuWorkload(config, seed=args.seed, l1=[l1])
    per_slot: dict[int, float] = defaultdict(float)
    stages: dict[str, list[float]] = defaultdict(list)
    # the MAC schedules slot_ahead - 1 slots ahead: the first slots carry no work
    first = config.slot_ahead - 1 + args.warmup
    total = first + args.slots
    last_ul = -1
    perf = time.perf_counter_ns
    t_stop = time.perf_counter() + args.max_rung_s
    with ctx:
        for task in du.radio_tasks(0, total):
            if time.perf_counter() > t_stop:
                break
            durs: list[float] = []
            t0 = perf()
            if gpu:
                events[0].record(stream)
                for k, s in enumerate(task.slices):
                    assert s.work is not None
                    s.work()
                    events[k + 1].record(stream)
                stream.synchronize()
                wall_us = (perf() - t0) / 1e3
                elapsed = xp.cuda.get_elapsed_time
                durs = [elapsed(events[k], events[k + 1]) * 1e3 for k in range(len(task.slices))]
            else:
                for s in task.slices:
                    assert s.work is not None
                    ts = perf()
                    s.work()
                    durs.append((perf() - ts) / 1e3)
                wall_us = sum(durs)
            if task.slot < first:
                continue
            per_slot[task.slot] += wall_us
            for s, d in zip(task.slices, durs, strict=True):
                stages[s.op].append(d)
            if task.name == "pusch":
                last_ul = max(last_ul, task.slot)
    # a slot is complete once its uplink ran (its downlink ran slot_ahead - 1 slots before)
    slot_times = [v for s, v in sorted(per_slot.items()) if s <= last_ul]
    if not slot_times:
        raise SystemExit(f"{name}/{variant}: no complete slot in {args.max_rung_s} s")
    pct = percentiles(slot_times)
    budget_us = config.slot_ns / 1e3
    return {
        "rung": name,
        "config": {
            "numerology": config.numerology,
            "bandwidth_mhz": config.bandwidth_mhz,
            "n_prb": config.n_prb,
            "antennas": config.antennas,
            "layers": config.layers,
            "ues": config.ues,
            "max_ues_per_slot": config.max_ues_per_slot,
        },
        "variant": variant,
        "graphs": l1.graphs,
        "graph_error": l1.graph_error,
        "slots": len(slot_times),
        "init_s": round(init_s, 2),
        "slot_us": pct,
        "stages_us": {op: round(float(np.median(v)), 1) for op, v in sorted(stages.items()) if v},
        "meets_timing": pct["p99"] <= budget_us,
        "crc_ok_ratio": round(du.l1_crc_ok / du.l1_crc_total, 3) if du.l1_crc_total else None,
    }


def phy_digest() -> str:
    """A digest of the L1 kernels' sources (they change: say which ones were timed)."""
    import airan.ran.phy as phy

    h = hashlib.sha256()
    for f in sorted(Path(phy.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def variants_for(backend: str) -> tuple[list[str], str | None]:
    """The variants to run and the GPU's name (``None``: no GPU)."""
    gpu = probe_cupy() if backend != "numpy" else None
    if backend == "cupy" and gpu is None:
        raise SystemExit(f"--backend cupy: no usable CUDA device ({cupy_unavailable_reason()})")
    out = [] if backend == "cupy" else ["numpy"]
    if gpu is not None:
        out += ["cupy", "cupy+graphs"]
    return out, gpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("numpy", "cupy", "auto"), default="auto")
    ap.add_argument("--slots", type=int, default=200, help="measured slots per rung (at most)")
    ap.add_argument("--warmup", type=int, default=2, help="slots run before measuring")
    ap.add_argument("--max-rung-s", type=float, default=40.0, help="time cap per rung and variant")
    ap.add_argument("--test-vectors", type=int, default=4, help="uplink TVs per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="two small rungs, a few slots")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    if args.slots < 1 or args.warmup < 0 or args.test_vectors < 1 or args.max_rung_s <= 0:
        ap.error("need --slots >= 1, --warmup >= 0, --test-vectors >= 1, --max-rung-s > 0")
    ladder = LADDER
    if args.quick:
        ladder = QUICK
        args.slots = min(args.slots, 6)
        args.warmup = min(args.warmup, 1)
        args.test_vectors = min(args.test_vectors, 2)
    variants, gpu = variants_for(args.backend)
    load_start = round(os.getloadavg()[0], 2)  # other processes skew the tail
    devices = {v: (cpu_device() if v == "numpy" else str(gpu)) for v in variants}
    budget_us = rung_config(dict(ladder[0][1])).slot_ns / 1e3
    rows: list[dict[str, Any]] = []
    head = (
        f"{'rung':<17} {'PRB':>4} {'variant':<12} {'slots':>5} {'p50 µs':>9} {'p99 µs':>9} "
        f"{'fe':>7} {'eq':>7} {'dec':>8} {'dl':>7} {'crc':>5} {'dl_reuse':>8} {'meets':>5}"
    )
    print(f"L1 per-slot time, µ=1 (slot {budget_us:.0f} µs); OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}")  # fmt: skip
    print(head)
    for name, fields in ladder:
        config = rung_config(dict(fields))
        reuse = dl_reuse(config, args.seed, 200 if args.quick else 2000)
        for variant in variants:
            row = run_variant(name, config, variant, args)
            row["dl_reuse"] = round(reuse, 4)
            rows.append(row)
            st = row["stages_us"]
            cells = " ".join(
                f"{st.get(op, float('nan')):>{8 if op == 'pusch.decode' else 7}.0f}"
                for op in STAGES
            )
            print(
                f"{name:<17} {config.n_prb:>4} {variant:<12} {row['slots']:>5} "
                f"{row['slot_us']['p50']:>9.0f} {row['slot_us']['p99']:>9.0f} {cells} "
                f"{row['crc_ok_ratio'] if row['crc_ok_ratio'] is not None else '-':>5} "
                f"{reuse:>8.3f} {'yes' if row['meets_timing'] else 'no':>5}",
                flush=True,
            )
            if row["graph_error"]:
                print(f"  (graph capture failed, ran uncaptured: {row['graph_error']})")
    largest: dict[str, str | None] = {}
    for variant in variants:
        ok = [r["rung"] for r in rows if r["variant"] == variant and r["meets_timing"]]
        largest[variant] = ok[-1] if ok else None  # the ladder runs small to large
        where = f"{devices[variant]}" + ("" if variant == "numpy" else f", {variant}")
        print(
            f"largest configuration meeting µ=1 timing on {where}: "
            f"{largest[variant] or 'none of the ladder'}"
        )
    report = {
        "benchmark": "l1",
        "backend": args.backend,
        "device": devices,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        },
        "phy_sha256_16": phy_digest(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "slot_budget_us": budget_us,
        "stages": list(STAGES),
        "rows": rows,
        "largest_meeting": largest,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

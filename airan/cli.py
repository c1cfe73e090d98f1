"""The ``airan`` command line: ``demo`` (a real device) and ``simulate`` (virtual time)."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from airan.core.errors import FieldError
from airan.core.policy import POLICY_NAMES, Policy
from airan.core.profile import PROFILE_P, DeviceProfile
from airan.core.report import RunReport
from airan.outputs import check_output_path, write_atomic
from airan.ran.config import RanConfig
from airan.sched.arbiter import Progress as RunProgress
from airan.serve import add_parser as add_serve_parser
from airan.serve import cmd_serve
from airan.synthetic import SyntheticConfig
from airan.telemetry.trace import TRACE_EVENTS, Recorder, write_trace

#: the policies ``airan bench`` runs, in this order
BENCH_POLICIES = ("exclusive", "fifo", "tdm", "airan")

SYNTHETIC_NOTE = "radio workload: SYNTHETIC (calibrated FFT work per slot, not the DU)"


def du_note(ran: RanConfig, device: str) -> str:
    return (
        f"radio workload: DU ({ran.cells} cell(s), µ={ran.numerology}, {ran.bandwidth_mhz} MHz, "
        f"{ran.n_prb} PRBs, {ran.antennas} rx antennas, {ran.layers} layer(s), {ran.ues} UEs) "
        f"- MAC scheduling and the L1 kernels on {device}; the uplink replays test vectors "
        "recorded at start-up"
    )


def _number(flag: str, kind: Callable[[str], Any], lo: float | None = None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a {kind.__name__}, got {text!r}"
            ) from None
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"{flag} must be >= {lo}, got {text!r}")
        return v

    return parse


def _policy_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in POLICY_NAMES]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"--policies must be distinct names among {', '.join(POLICY_NAMES)}, "
            f"comma-separated; got {text!r}"
        )
    return names


def _add_common(
    p: argparse.ArgumentParser, workload_default: str | None, *, bench: bool = False
) -> None:
    if bench:
        p.add_argument(
            "--policies",
            type=_policy_list,
            default=list(BENCH_POLICIES),
            help="the policies to run, in this order (default: all four)",
        )
    else:
        p.add_argument("--policy", choices=POLICY_NAMES, default="airan", help="sharing strategy")
    p.add_argument("--seed", type=_number("--seed", int, 0), default=0, help="random seed")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the run report here")
    p.add_argument(
        "--trace",
        type=Path,
        metavar="PATH",
        help="write a Chrome / Perfetto trace of the run here (open in ui.perfetto.dev)",
    )
    g = p.add_argument_group("policy knobs")
    g.add_argument("--guard-us", type=_number("--guard-us", float), help="guard per AI slice")
    g.add_argument("--max-ai-slice-us", type=_number("--max-ai-slice-us", float))
    g.add_argument("--ai-share-cap", type=_number("--ai-share-cap", float))
    g.add_argument("--tdm-radio-share", type=_number("--tdm-radio-share", float))
    g.add_argument("--fifo-depth", type=_number("--fifo-depth", int))
    p.add_argument(
        "--workload",
        choices=("du", "synthetic"),
        default=workload_default,
        help="radio workload: the DU (MAC + L1) or the synthetic one (default "
        + (workload_default or "du on a GPU, synthetic on a CPU")
        + ")",
    )
    r = p.add_argument_group("cell (the du workload)")
    r.add_argument("--numerology", type=_number("--numerology", int), help="µ, 0-3")
    r.add_argument("--bandwidth-mhz", type=_number("--bandwidth-mhz", int))
    r.add_argument("--antennas", type=_number("--antennas", int), help="receive antennas")
    r.add_argument("--layers", type=_number("--layers", int), help="MIMO layers per UE")
    r.add_argument("--ues", type=_number("--ues", int), help="UEs per cell")
    r.add_argument("--cells", type=_number("--cells", int))
    r.add_argument("--ul-deadline-slots", type=_number("--ul-deadline-slots", int))
    w = p.add_argument_group("workload (synthetic)")
    w.add_argument("--radio-load", type=_number("--radio-load", float), help="mean radio load")
    w.add_argument("--burst-load", type=_number("--burst-load", float), help="load in bursts")
    w.add_argument("--burst-fraction", type=_number("--burst-fraction", float))
    w.add_argument("--slot-us", type=_number("--slot-us", float), help="slot length in µs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airan",
        description="Share one accelerator between a 5G radio and AI inference, radio first.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="run the slot workload and an AI job on the best device found"
    )
    demo.add_argument("--seconds", type=_number("--seconds", float), default=10.0)
    demo.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto")
    demo.add_argument(
        "--ai",
        choices=("transformer", "synthetic"),
        default="transformer",
        help="AI tenant: the built-in transformer decoder (default) or the synthetic one",
    )
    _add_common(demo, "du")
    bench = sub.add_parser(
        "bench",
        help="run the four policies side by side on the same workload and seed, one run",
    )
    bench.add_argument(
        "--seconds", type=_number("--seconds", float), default=10.0, help="per policy"
    )
    bench.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto")
    bench.add_argument(
        "--ai", choices=("transformer", "synthetic"), default="transformer", help="AI tenant"
    )
    bench.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="write the figure here (needs the plot extra: matplotlib)",
    )
    bench.add_argument(
        "--timeline-slots",
        type=_number("--timeline-slots", int, 1),
        default=8,
        help="slots of device time in the figure's timeline",
    )
    _add_common(bench, None, bench=True)
    sim = sub.add_parser("simulate", help="run the same in virtual time")
    sim.add_argument("--slots", type=_number("--slots", int, 1), default=1_000_000)
    sim.add_argument(
        "--profile",
        type=Path,
        metavar="JSON",
        help="replay the slice durations measured by `airan profile` (the DU, its cell)",
    )
    sim.add_argument(
        "--capacity",
        action="store_true",
        help="with --profile: add cells until one misses; how many fit, what AI is left",
    )
    sim.add_argument("--max-cells", type=_number("--max-cells", int, 1), default=16)
    _add_common(sim, "synthetic")
    prof = sub.add_parser(
        "profile", help="measure the slice durations of a cell and the AI on this device"
    )
    prof.add_argument("--out", type=Path, metavar="JSON", required=True)
    prof.add_argument("--slots", type=_number("--slots", int, 30), default=3000)
    prof.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto")
    prof.add_argument("--ai", choices=("transformer", "synthetic"), default="transformer")
    prof.add_argument("--ai-seconds", type=_number("--ai-seconds", float), default=3.0)
    prof.add_argument("--seed", type=_number("--seed", int, 0), default=0)
    r = prof.add_argument_group("cell")
    for flag in _RAN_FLAGS:
        r.add_argument("--" + flag.replace("_", "-"), type=_number("--" + flag, int))
    add_serve_parser(sub)
    return parser


_POLICY_FLAGS = ("guard_us", "max_ai_slice_us", "ai_share_cap", "tdm_radio_share", "fifo_depth")
_WORKLOAD_FLAGS = ("radio_load", "burst_load", "burst_fraction", "slot_us")
_RAN_FLAGS = (
    "numerology",
    "bandwidth_mhz",
    "antennas",
    "layers",
    "ues",
    "cells",
    "ul_deadline_slots",
)


def _ran(args: argparse.Namespace, gpu: bool) -> RanConfig | None:
    """The DU's cell: the device's defaults, overridden by the flags given (validated)."""
    given = [k for k in _RAN_FLAGS if getattr(args, k) is not None]
    if args.workload != "du":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise FieldError(flags, "applies to --workload du only")
        return None
    from airan.runner import ran_defaults

    data: dict[str, object] = dict(ran_defaults(gpu))
    data.update({k: getattr(args, k) for k in given})
    return RanConfig.parse(data, where="ran")


def _policy(
    args: argparse.Namespace, defaults: dict[str, object] | None = None, name: str | None = None
) -> Policy:
    data: dict[str, object] = {"name": name or args.policy, **(defaults or {})}
    data.update({k: getattr(args, k) for k in _POLICY_FLAGS if getattr(args, k) is not None})
    return Policy.parse(data, where="policy")


def _workload(
    args: argparse.Namespace,
    default_slot_us: float | None,
    defaults: dict[str, object] | None = None,
) -> SyntheticConfig:
    data: dict[str, object] = {} if default_slot_us is None else {"slot_us": default_slot_us}
    data.update(defaults or {})
    data.update({k: getattr(args, k) for k in _WORKLOAD_FLAGS if getattr(args, k) is not None})
    return SyntheticConfig.parse(data, where="workload")


def summary_table(report: RunReport) -> Table:
    t = Table(title=f"airan run: policy={report.policy['name']} backend={report.backend}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    r, a = report.ran, report.ai
    rows = [
        ("device", report.device),
        ("duration", f"{report.duration_s:.3f} s ({report.slots} slots)"),
        ("radio tasks", f"{r.tasks}"),
        ("radio misses", f"{r.misses} (dropped {r.dropped})"),
        ("radio deadline-met ratio", f"{r.deadline_met_ratio:.6f}"),
        ("radio busy ratio", f"{r.busy_ratio:.3f}"),
        (
            "radio latency p50/p99/p99.9/max",
            f"{r.latency_us.p50:.0f} / {r.latency_us.p99:.0f} / {r.latency_us.p999:.0f}"
            f" / {r.latency_us.max:.0f} µs",
        ),
        ("AI slices", f"{a.slices}"),
        ("AI busy ratio", f"{a.busy_ratio:.3f}"),
        ("AI harvest ratio", f"{a.harvest_ratio:.4f}"),
        ("AI tokens (tokens/s)", f"{a.tokens} ({a.tokens_per_s:.0f}/s)"),
        (
            "AI requests, time to first token p50/p99",
            f"{a.requests}, {a.ttft_ms.p50:.1f} / {a.ttft_ms.p99:.1f} ms" if a.requests else "-",
        ),
        ("AI overruns", f"{a.overruns}"),
        (
            "arbiter decision p50/p99",
            f"{report.arbiter.decision_us.p50:.2f} / {report.arbiter.decision_us.p99:.2f} µs",
        ),
        ("wall time", f"{report.wall_time_s:.2f} s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


def _finish(report: RunReport, args: argparse.Namespace, console: Console) -> int:
    console.print(summary_table(report))
    trace = report.workload.get("trace")
    if isinstance(trace, dict):
        console.print(f"trace written to {trace['path']}: open it in https://ui.perfetto.dev")
    if args.json is not None:
        write_atomic(args.json, report.to_json() + "\n")
        console.print(f"run report written to {args.json}")
    return 0


def _profile_cell(args: argparse.Namespace, prof: DeviceProfile) -> RanConfig:
    """The profiled cell; only ``--cells`` and ``--ul-deadline-slots`` may change (other
    flags would change the slices' shapes, whose durations were not measured)."""
    bad = [k for k in _RAN_FLAGS if getattr(args, k) is not None]
    bad = [k for k in bad if k not in ("cells", "ul_deadline_slots")]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise FieldError(flags, "the cell is the profiled one: profile that cell instead")
    data = dict(prof.ran)
    data.update({k: getattr(args, k) for k in ("cells", "ul_deadline_slots") if getattr(args, k)})
    return RanConfig.parse(data, where="ran")


def _load_profile(path: Path) -> DeviceProfile:
    if not path.is_file():
        raise FieldError("--profile", f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FieldError("--profile", f"cannot read {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FieldError("--profile", f"{path} is not JSON: {e}") from None
    return DeviceProfile.parse(data, where=f"profile ({path})")


def _cmd_profile(args: argparse.Namespace, console: Console) -> int:
    from airan.backend import select_backend
    from airan.profiling import measure_profile
    from airan.runner import ran_defaults

    check_output_path(args.out, "--out")
    backend = select_backend(args.backend)
    data: dict[str, object] = dict(ran_defaults(backend.name == "cupy"))
    data.update({k: getattr(args, k) for k in _RAN_FLAGS if getattr(args, k) is not None})
    ran = RanConfig.parse(data, where="ran")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    console.print(f"[dim]{du_note(ran.model_copy(update={'cells': 1}), backend.device)}[/dim]")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("measuring the L1 slot by slot", total=1.0)
        prof = measure_profile(
            backend,
            ran,
            args.slots,
            args.seed,
            ai=args.ai,
            ai_seconds=args.ai_seconds,
            command="airan " + " ".join(sys.argv[1:]),
            progress=lambda f: bar.update(task, completed=f),
        )
    t = Table(title=f"profile of {prof.device} ({prof.slots} slots, one cell)")
    for col in ("slice", "shape", "n", "p50 µs", "p99 µs", "max µs"):
        t.add_column(col, justify="left" if col in ("slice", "shape") else "right")
    i50, i99 = PROFILE_P.index(0.5), PROFILE_P.index(0.99)
    for sp in prof.slices:
        q = sp.quantiles_us
        shape = " ".join(f"{k}={v}" for k, v in sorted(sp.shape.items()))
        t.add_row(sp.op, shape, str(sp.n), f"{q[i50]:.0f}", f"{q[i99]:.0f}", f"{q[-1]:.0f}")
    console.print(t)
    w = prof.slot_work_us
    console.print(
        f"radio work per slot: p50 {w[i50]:.0f} µs, p99 {w[i99]:.0f} µs, max {w[-1]:.0f}"
        f" µs; AI ({prof.ai_tenant}) {prof.ai_tokens_per_device_s:.0f} tokens per device second"
    )
    write_atomic(args.out, prof.model_dump_json(indent=2) + "\n")
    console.print(f"profile written to {args.out}")
    return 0


def _cmd_capacity(
    args: argparse.Namespace, console: Console, prof: DeviceProfile, policy: Policy
) -> int:
    from airan.runner import CellsRun, plan_capacity

    ran = RanConfig.parse(prof.ran, where="profile.ran")
    if args.ul_deadline_slots is not None:
        ran = RanConfig.parse(
            {**prof.ran, "ul_deadline_slots": args.ul_deadline_slots}, where="ran"
        )
    console.print(
        f"[dim]capacity of {prof.device} for cells like the profiled one "
        f"({ran.bandwidth_mhz} MHz µ={ran.numerology}, {ran.antennas} rx, {ran.layers} "
        f"layer(s), {ran.ues} UEs), measured {prof.measured_at}; {args.slots} slots per "
        f"step in virtual time, AI saturating under {policy.name}[/dim]"
    )

    def step(run: CellsRun) -> None:
        mark = "[red]misses[/red]" if run.misses else "0 misses"
        console.print(
            f"  {run.cells:2d} cell(s): {run.tasks} radio tasks, {mark} {run.misses or ''}, "
            f"radio busy {run.radio_busy:.3f}, AI busy {run.ai_busy:.3f}"
        )

    plan = plan_capacity(prof, ran, args.slots, policy, args.seed, args.max_cells, step)
    b = plan.bounds
    console.print(
        f"[bold]{plan.fit} cell(s) fit with zero misses[/bold]"
        + (f" (the most tried: {args.max_cells})" if plan.fit == args.max_cells else "")
        + f"; AI left beside them: {plan.ai_device_ms_per_s:.0f} device ms per second, "
        f"about {plan.ai_tokens_per_s:.0f} tokens/s ({prof.ai_tenant})"
    )
    console.print(
        f"check: EDF utilisation bound (necessary) {b.necessary} cell(s) at "
        f"{b.utilisation_per_cell:.3f} of the device per cell; density test with blocking "
        f"B={b.blocking_us:.0f} µs, D_min={b.min_deadline_us:.0f} µs (sufficient) "
        f"{b.sufficient} cell(s)"
    )
    if not b.sufficient <= plan.fit <= b.necessary:
        console.print("[red]the simulated answer lies outside the analytic bounds[/red]")
    if args.json is not None:
        write_atomic(args.json, json.dumps(plan.to_dict(), indent=2) + "\n")
        console.print(f"plan written to {args.json}")
    return 0


def _cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from airan.runner import simulate

    policy = _policy(args)
    prof: DeviceProfile | None = None
    if args.capacity and args.profile is None:
        raise FieldError("--capacity", "needs --profile (a profile from `airan profile`)")
    if args.profile is not None:
        prof = _load_profile(args.profile)
        if args.workload == "synthetic" and any(
            getattr(args, k) is not None for k in _WORKLOAD_FLAGS
        ):
            raise FieldError(
                "--profile", "replays the DU: the synthetic workload flags do not apply"
            )
        args.workload = "du"
        if args.capacity:
            check_output_path(args.json, "--json")
            return _cmd_capacity(args, console, prof, policy)
    ran = _ran(args, gpu=True) if prof is None else _profile_cell(args, prof)
    cfg = _workload(args, 500.0)
    check_output_path(args.json, "--json")
    check_output_path(args.trace, "--trace")
    if ran is not None:
        source = "the L1 cost model" if prof is None else f"the profile of {prof.device}"
        note = du_note(ran, f"a simulated device (durations from {source})")
        console.print(f"[dim]{note}; virtual time[/dim]")
    else:
        console.print(f"[dim]{SYNTHETIC_NOTE}; virtual time[/dim]")
    with Progress(
        TextColumn("simulating {task.fields[policy]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%  misses {task.fields[misses]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("sim", total=args.slots, policy=policy.name, misses=0)
        slot_ns = cfg.slot_us * 1000.0 if ran is None else float(ran.slot_ns)

        def progress(p: RunProgress) -> None:
            bar.update(task, completed=min(args.slots, p.now_ns / slot_ns), misses=p.ran_misses)

        rec = Recorder(TRACE_EVENTS) if args.trace is not None else None
        report = simulate(args.slots, policy, args.seed, ran or cfg, progress, rec, prof)
    if rec is not None:
        _write_trace(args.trace, [rec], report, console)
    return _finish(report, args, console)


def _write_trace(
    path: Path, recorders: list[Recorder], report: RunReport | None, console: Console
) -> None:
    meta: dict[str, Any] = {"command": " ".join(sys.argv[1:])}
    if report is not None:
        meta.update(backend=report.backend, device=report.device, seed=report.seed)
    n = write_trace(path, recorders, meta)
    dropped = sum(r.dropped_events for r in recorders)
    note = f" (the oldest {dropped} events did not fit and were left out)" if dropped else ""
    console.print(f"trace ({n} events) written to {path}{note}: open it in https://ui.perfetto.dev")


def _device_child(params: dict[str, Any], shared: Any, conn: Any) -> None:
    """Runs the policies of ``params`` one after the other on the real device, in its own
    process, so that drawing the progress bar never delays the radio."""
    from airan.backend import select_backend
    from airan.runner import device_defaults, run_on_device
    from airan.telemetry.plots import miss_window, timeline

    try:
        backend = select_backend(params["backend"])
        policies = [Policy.model_validate(p) for p in params["policies"]]  # validated
        workload = dict(params["workload"])
        workload.setdefault("slot_us", device_defaults(backend.name == "cupy")[1])
        cfg: SyntheticConfig | RanConfig = SyntheticConfig.parse(workload, where="workload")
        if params["ran"] is not None:
            cfg = RanConfig.parse(params["ran"], where="ran")
        slot_us = cfg.slot_ns / 1000.0 if isinstance(cfg, RanConfig) else cfg.slot_us

        def progress(p: RunProgress) -> None:
            shared[0] = p.now_ns / max(p.duration_ns, 1)
            shared[1] = p.ran_tasks
            shared[2] = p.ran_misses
            shared[3] = p.ai_tokens

        reports: list[RunReport] = []
        recorders: list[Recorder] = []
        for i, policy in enumerate(policies):
            conn.send(("start", backend.name, backend.device, slot_us, policy.name, i))
            rec = Recorder(TRACE_EVENTS, label=policy.name) if params["record"] else None
            report = run_on_device(
                backend,
                params["seconds"],
                policy,
                params["seed"],
                cfg,
                progress,
                params["ai"],
                recorder=rec,
            )
            reports.append(report)
            if rec is not None:
                recorders.append(rec)
        if params["trace"] is not None:
            _write_trace(Path(params["trace"]), recorders, reports[0], Console(quiet=True))
            for r, rec in zip(reports, recorders, strict=True):
                r.workload["trace"] = {"path": params["trace"], "dropped": rec.dropped_events}
        timelines = []
        if params["timeline_slots"] and recorders:
            start = miss_window(recorders, params["timeline_slots"])
            length = params["timeline_slots"] * slot_us
            timelines = [timeline(rec, start, length).to_dict() for rec in recorders]
        out = {"reports": [r.model_dump(mode="json") for r in reports], "timelines": timelines}
        conn.send(("report", json.dumps(out)))
    except FieldError as e:
        conn.send(("error", "field", e.field, e.reason))
    except Exception as e:  # report, never hang the parent
        conn.send(("error", "runtime", type(e).__name__, str(e)))


def _run_on_device(
    params: dict[str, Any], console: Console, note: Callable[[str], str], ai: str
) -> tuple[list[RunReport], list[dict[str, Any]]]:
    """Run ``_device_child`` in a spawned process with a progress bar; its reports and
    timelines."""
    # One BLAS thread: the arbiter owns the CPU it runs on, and timing stays repeatable.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = mp.get_context("spawn")
    shared = ctx.Array("d", 4, lock=False)
    parent, child = ctx.Pipe(duplex=False)
    # not a daemon: the run starts the DU's L2 processes of its own
    proc = ctx.Process(target=_device_child, args=(params, shared, child), daemon=False)
    proc.start()
    child.close()
    msg: tuple[Any, ...] | None = None
    n = len(params["policies"])
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("radio tasks {task.fields[tasks]:.0f}  misses {task.fields[misses]:.0f}"),
        TextColumn("AI tokens {task.fields[tokens]:.0f}"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("calibrating device", total=1.0, tasks=0, misses=0, tokens=0)
        while proc.is_alive() or parent.poll():
            if parent.poll(0.1):
                try:
                    msg = parent.recv()
                except EOFError:
                    break
                if msg[0] == "start":
                    _, name, device, slot_us, policy, i = msg
                    if i == 0:
                        console.print(f"[dim]{note(device)}[/dim]")
                        console.print(
                            f"backend {name} on {device}; slot {slot_us:.0f} µs; AI tenant: "
                            f"{ai}; {params['seconds']:g} s per policy"
                        )
                    label = f"running {policy}" + (f" ({i + 1}/{n})" if n > 1 else "")
                    bar.update(task, description=label, completed=0)
                    continue
                break
            bar.update(
                task, completed=shared[0], tasks=shared[1], misses=shared[2], tokens=shared[3]
            )
    proc.join(timeout=10)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=5)
    if msg is None or msg[0] not in ("report", "error"):
        raise RuntimeError(f"the run process ended without a report (exit {proc.exitcode})")
    if msg[0] == "error":
        if msg[1] == "field":
            raise FieldError(msg[2], msg[3])
        raise RuntimeError(f"{msg[2]}: {msg[3]}")
    out = json.loads(msg[1])
    return [RunReport.model_validate(r) for r in out["reports"]], out["timelines"]


def _device_params(
    args: argparse.Namespace,
    policies: Sequence[Policy],
    workload: dict[str, object],
    ran: RanConfig | None,
    timeline_slots: int,
) -> dict[str, Any]:
    """What :func:`_device_child` runs (plain data: it crosses a process boundary). The
    runs are recorded when a trace or a timeline is asked for."""
    return {
        "backend": args.backend,
        "policies": [p.model_dump() for p in policies],
        "workload": workload,
        "seconds": args.seconds,
        "seed": args.seed,
        "ai": args.ai,
        "ran": None if ran is None else ran.model_dump(mode="json"),
        "trace": None if args.trace is None else str(args.trace),
        "record": args.trace is not None or timeline_slots > 0,
        "timeline_slots": timeline_slots,
    }


def _gpu(args: argparse.Namespace) -> bool:
    from airan.backend import probe_cupy

    return args.backend == "cupy" or (args.backend == "auto" and probe_cupy() is not None)


def _check_seconds(args: argparse.Namespace) -> None:
    if not 0 < args.seconds <= 86_400:
        raise FieldError("--seconds", f"must be in (0, 86400], got {args.seconds}")


def _note(ran: RanConfig | None) -> Callable[[str], str]:
    return lambda device: SYNTHETIC_NOTE if ran is None else du_note(ran, device)


def bench_table(reports: Sequence[RunReport]) -> Table:
    """The policies side by side: one row each."""
    first = reports[0]
    t = Table(title=f"airan bench: {first.backend} on {first.device}, seed {first.seed}")
    for col in (
        "policy",
        "tasks",
        "misses",
        "met",
        "radio µs p50/p99/max",
        "radio busy",
        "AI busy",
        "harvest",
        "tok/s",
    ):
        if col == "policy":
            t.add_column(col, no_wrap=True, min_width=9)
        else:
            t.add_column(col, justify="right")
    for r in reports:
        lat = r.ran.latency_us
        t.add_row(
            r.policy["name"],
            f"{r.ran.tasks}",
            f"[red]{r.ran.misses}[/red]" if r.ran.misses else "0",
            f"{r.ran.deadline_met_ratio:.4f}",
            f"{lat.p50:.0f}/{lat.p99:.0f}/{lat.max:.0f}",
            f"{r.ran.busy_ratio:.3f}",
            f"{r.ai.busy_ratio:.3f}",
            f"{r.ai.harvest_ratio:.3f}",
            f"{r.ai.tokens_per_s:.0f}",
        )
    return t


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    _check_seconds(args)
    from airan.runner import bench_defaults

    gpu = _gpu(args)
    kind, wl_defaults, knobs = bench_defaults(gpu)
    if args.workload is None:
        given = [k for k in _RAN_FLAGS if getattr(args, k) is not None]
        args.workload = "du" if given else kind
    policies = [_policy(args, knobs, name) for name in args.policies]
    ran = _ran(args, gpu)
    workload: dict[str, object] = {}
    if ran is None:
        synthetic = wl_defaults if kind == "synthetic" else {}
        workload = _workload(args, None, synthetic).model_dump(mode="json")
    check_output_path(args.json, "--json")
    check_output_path(args.trace, "--trace")
    if args.plot is not None:
        from airan.telemetry.plots import require_matplotlib

        check_output_path(args.plot, "--plot")
        require_matplotlib()
    timeline = args.timeline_slots if args.plot is not None else 0
    params = _device_params(args, policies, workload, ran, timeline)
    reports, timelines = _run_on_device(params, console, _note(ran), args.ai)
    console.print(bench_table(reports))
    if args.json is not None:
        doc = {
            "bench": {
                "command": "airan " + " ".join(sys.argv[1:]),
                "seconds_per_policy": args.seconds,
                "seed": args.seed,
                "policies": args.policies,
            },
            "runs": [r.model_dump(mode="json") for r in reports],
        }
        write_atomic(args.json, json.dumps(doc, indent=2) + "\n")
        console.print(f"run reports written to {args.json}")
    if args.trace is not None:
        console.print(f"trace written to {args.trace}: open it in https://ui.perfetto.dev")
    if args.plot is not None:
        from airan.telemetry.plots import Timeline, bench_figure

        first = reports[0]
        wl = first.workload.get("workload", "synthetic")
        bench_figure(
            reports,
            [Timeline.from_dict(t) for t in timelines],
            args.plot,
            title=f"airan bench: {wl} radio workload, AI tenant {args.ai}, "
            f"{args.seconds:g} s per policy, seed {args.seed} - {first.device}",
        )
        console.print(f"figure written to {args.plot}")
    return 0


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    _check_seconds(args)
    from airan.runner import device_defaults

    gpu = _gpu(args)
    policy = _policy(args, device_defaults(gpu)[0])
    ran = _ran(args, gpu)
    check_output_path(args.json, "--json")
    check_output_path(args.trace, "--trace")
    # Validated here (bad flags fail before anything starts); the slot length, unless
    # given, is chosen in the child once the backend is known.
    _workload(args, 1000.0)
    workload = {k: getattr(args, k) for k in _WORKLOAD_FLAGS if getattr(args, k) is not None}
    params = _device_params(args, [policy], workload, ran, 0)
    reports, _ = _run_on_device(params, console, _note(ran), args.ai)
    return _finish(reports[0], args, console)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=False)
    commands: dict[str, Callable[[argparse.Namespace, Console], int]] = {
        "demo": _cmd_demo,
        "bench": _cmd_bench,
        "profile": _cmd_profile,
        "simulate": _cmd_simulate,
        "serve": cmd_serve,
    }
    try:
        return commands[args.command](args, console)
    except FieldError as e:
        print(f"airan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"airan {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

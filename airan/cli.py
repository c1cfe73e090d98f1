"""The ``airan`` command line: ``demo`` (a real device) and ``simulate`` (virtual time)."""

from __future__ import annotations

import argparse
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
from airan.core.report import RunReport
from airan.ran.config import RanConfig
from airan.sched.arbiter import Progress as RunProgress
from airan.synthetic import SyntheticConfig

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


def _add_common(p: argparse.ArgumentParser, workload_default: str) -> None:
    p.add_argument("--policy", choices=POLICY_NAMES, default="airan", help="sharing strategy")
    p.add_argument("--seed", type=_number("--seed", int, 0), default=0, help="random seed")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the run report here")
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
        help=f"radio workload: the DU (MAC + L1) or the synthetic one (default {workload_default})",
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
    sim = sub.add_parser("simulate", help="run the same in virtual time")
    sim.add_argument("--slots", type=_number("--slots", int, 1), default=1_000_000)
    _add_common(sim, "synthetic")
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


def _policy(args: argparse.Namespace, defaults: dict[str, object] | None = None) -> Policy:
    data: dict[str, object] = {"name": args.policy, **(defaults or {})}
    data.update({k: getattr(args, k) for k in _POLICY_FLAGS if getattr(args, k) is not None})
    return Policy.parse(data, where="policy")


def _workload(args: argparse.Namespace, default_slot_us: float | None) -> SyntheticConfig:
    data: dict[str, object] = {} if default_slot_us is None else {"slot_us": default_slot_us}
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


def _check_json_path(path: Path | None) -> None:
    """Refuse an unwritable ``--json`` path before the run, not after it."""
    if path is None:
        return
    if path.is_dir():
        raise FieldError("--json", f"{path} is a directory; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FieldError("--json", f"the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise FieldError("--json", f"{path} is not writable")


def _finish(report: RunReport, args: argparse.Namespace, console: Console) -> int:
    console.print(summary_table(report))
    if args.json is not None:
        args.json.write_text(report.to_json() + "\n")
        console.print(f"run report written to {args.json}")
    return 0


def _cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from airan.runner import simulate

    policy = _policy(args)
    ran = _ran(args, gpu=True)
    cfg = _workload(args, 500.0)
    _check_json_path(args.json)
    if ran is not None:
        note = du_note(ran, "a simulated device (durations from the L1 cost model)")
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

        report = simulate(args.slots, policy, args.seed, ran or cfg, progress)
    return _finish(report, args, console)


def _demo_child(params: dict[str, Any], shared: Any, conn: Any) -> None:
    """Runs in its own process, so that drawing the progress bar never delays the radio."""
    from airan.backend import select_backend
    from airan.runner import device_defaults, run_on_device

    try:
        backend = select_backend(params["backend"])
        policy = Policy.model_validate(params["policy"])  # validated by the parent
        workload = dict(params["workload"])
        workload.setdefault("slot_us", device_defaults(backend.name == "cupy")[1])
        cfg: SyntheticConfig | RanConfig = SyntheticConfig.parse(workload, where="workload")
        if params["ran"] is not None:
            cfg = RanConfig.parse(params["ran"], where="ran")
        slot_us = cfg.slot_ns / 1000.0 if isinstance(cfg, RanConfig) else cfg.slot_us
        conn.send(("start", backend.name, backend.device, slot_us))

        def progress(p: RunProgress) -> None:
            shared[0] = p.now_ns / max(p.duration_ns, 1)
            shared[1] = p.ran_tasks
            shared[2] = p.ran_misses
            shared[3] = p.ai_tokens

        report = run_on_device(
            backend, params["seconds"], policy, params["seed"], cfg, progress, params["ai"]
        )
        conn.send(("report", report.to_json()))
    except FieldError as e:
        conn.send(("error", "field", e.field, e.reason))
    except Exception as e:  # report, never hang the parent
        conn.send(("error", "runtime", type(e).__name__, str(e)))


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    if not 0 < args.seconds <= 86_400:
        raise FieldError("--seconds", f"must be in (0, 86400], got {args.seconds}")
    from airan.backend import probe_cupy
    from airan.runner import device_defaults

    gpu = args.backend == "cupy" or (args.backend == "auto" and probe_cupy() is not None)
    policy = _policy(args, device_defaults(gpu)[0])
    ran = _ran(args, gpu)
    _check_json_path(args.json)
    # Validated here (bad flags fail before anything starts); the slot length, unless
    # given, is chosen in the child once the backend is known.
    _workload(args, 1000.0)
    workload = {k: getattr(args, k) for k in _WORKLOAD_FLAGS if getattr(args, k) is not None}
    params = {
        "backend": args.backend,
        "policy": policy.model_dump(),
        "workload": workload,
        "seconds": args.seconds,
        "seed": args.seed,
        "ai": args.ai,
        "ran": None if ran is None else ran.model_dump(mode="json"),
    }
    # One BLAS thread: the arbiter owns the CPU it runs on, and timing stays repeatable.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = mp.get_context("spawn")
    shared = ctx.Array("d", 4, lock=False)
    parent, child = ctx.Pipe(duplex=False)
    # not a daemon: the run starts the DU's L2 processes of its own
    proc = ctx.Process(target=_demo_child, args=(params, shared, child), daemon=False)
    proc.start()
    child.close()
    msg: tuple[Any, ...] | None = None
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
                    note = SYNTHETIC_NOTE if ran is None else du_note(ran, msg[2])
                    console.print(f"[dim]{note}[/dim]")
                    console.print(
                        f"backend {msg[1]} on {msg[2]}; slot {msg[3]:.0f} µs; "
                        f"policy {policy.name}; AI tenant: {args.ai}; {args.seconds:g} s"
                    )
                    bar.update(task, description=f"running {policy.name}")
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
        console.print(f"[red]error: the demo process ended without a report (exit {proc.exitcode})")
        return 1
    if msg[0] == "error":
        if msg[1] == "field":
            raise FieldError(msg[2], msg[3])
        raise RuntimeError(f"{msg[2]}: {msg[3]}")
    return _finish(RunReport.model_validate_json(msg[1]), args, console)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=False)
    try:
        if args.command == "simulate":
            return _cmd_simulate(args, console)
        return _cmd_demo(args, console)
    except FieldError as e:
        print(f"airan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"airan {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

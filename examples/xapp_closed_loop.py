"""A closed-loop xApp: protect the radio's slack by steering how much device time AI gets.

    python examples/xapp_closed_loop.py                       # starts a FakeNode itself
    python examples/xapp_closed_loop.py --target HOST:PORT [--token T --ca CA.pem]
        [--seconds 10] [--period-ms 200] [--low-us 815] [--high-us 840]

Every period the node reports (E2SM-KPM style 1) ``airan.RadioSlackLowUs`` — the 1st
percentile of the radio tasks' slack (deadline minus completion) — and ``airan.AiBusy``.
When the slack falls below ``--low-us`` the xApp halves ``ai_share_cap`` (the largest
share of device time AI may use) through the co-scheduling RAN function's policy
control; when it is back above ``--high-us`` it raises the cap again (x1.5, up to 1).
Between the two thresholds it holds (hysteresis). Each decision is printed with the
control-to-effect latency the node measured.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    from airan.ric.xapp import E2Client
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airan.ric.xapp import E2Client

from airan.ric.security import ClientSecurity

MIN_CAP = 0.05  # with the default share window (10 ms) a cap must hold one 200 us slice


@contextlib.contextmanager
def node_target(target: str | None) -> Iterator[str]:
    if target is not None:
        yield target
        return
    from airan.testing import FakeNode

    with FakeNode(seed=2) as fake:
        print(f"started a FakeNode at {fake.e2_target}")
        yield fake.e2_target


def decide(slack_us: float, cap: float, low_us: float, high_us: float) -> float:
    """The next ``ai_share_cap`` (the same one: hold)."""
    if slack_us < 0:  # no radio task finished in the period: nothing to learn
        return cap
    if slack_us < low_us and cap > MIN_CAP:
        return max(MIN_CAP, round(cap / 2, 3))
    if slack_us > high_us and cap < 1.0:
        return min(1.0, round(cap * 1.5, 3))
    return cap


def run_loop(
    e2: E2Client,
    *,
    seconds: float,
    period_ms: int,
    low_us: float,
    high_us: float,
    cap: float,
    log: Callable[[str], object] = print,
) -> tuple[float, int]:
    """Run the loop for ``seconds`` from ``cap`` (the ``ai_share_cap`` in force); return
    the cap in force at the end and how many controls changed it."""
    decisions = 0
    end = time.monotonic() + seconds
    with e2.kpm.subscribe(
        ["airan.RadioSlackLowUs", "airan.AiBusy", "airan.DeadlineMetRatio"],
        period_ms=period_ms,
    ) as sub:
        for r in sub:
            slack = r.values["airan.RadioSlackLowUs"]
            new = decide(slack, cap, low_us, high_us)
            line = (
                f"seq={r.sequence:<4} slack_low={slack:8.1f} us  "
                f"ai_busy={r.values['airan.AiBusy']:.3f}  "
                f"met={r.values['airan.DeadlineMetRatio']:.4f}  cap={cap:.3f}"
            )
            if new != cap:
                verb = "lower" if new < cap else "raise"
                res = e2.cosched.set_policy(ai_share_cap=new)
                decisions += 1
                line += (
                    f"  -> {verb} ai_share_cap to {new:.3f} "
                    f"(in effect after {res.control_to_effect_ns / 1e3:.0f} us)"
                )
                cap = new
            log(line)
            if time.monotonic() >= end:
                break
    return cap, decisions


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="the node's E2 host:port (default: start a FakeNode)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--period-ms", type=int, default=200)
    ap.add_argument("--low-us", type=float, default=815.0, help="lower the cap below this")
    ap.add_argument("--high-us", type=float, default=840.0, help="raise the cap above this")
    ap.add_argument("--start-cap", type=float, default=1.0, help="ai_share_cap to start from")
    ap.add_argument("--keep-cap", action="store_true", help="leave the last cap (default: 1)")
    ap.add_argument("--token", help="this xApp's bearer token (needs the control permission)")
    ap.add_argument("--ca", type=Path, help="CA bundle of the node's certificate (TLS)")
    ap.add_argument("--plaintext-token", action="store_true", help="send the token without TLS")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.period_ms < 1 or args.low_us > args.high_us:
        ap.error("--seconds, --period-ms must be positive and --low-us <= --high-us")
    if not MIN_CAP <= args.start_cap <= 1.0:
        ap.error(f"--start-cap must be in [{MIN_CAP}, 1]")
    security = ClientSecurity(
        ca=args.ca, token=args.token, allow_plaintext_token=args.plaintext_token
    )
    with node_target(args.target) as target, E2Client(target, security) as e2:
        e2.cosched.set_policy(ai_share_cap=args.start_cap)
        print(
            f"closed loop on {e2.setup().node_id}: slack low {args.low_us} us, high "
            f"{args.high_us} us, period {args.period_ms} ms"
        )
        cap, decisions = run_loop(
            e2,
            seconds=args.seconds,
            period_ms=args.period_ms,
            low_us=args.low_us,
            high_us=args.high_us,
            cap=args.start_cap,
        )
        if not args.keep_cap:
            e2.cosched.set_policy(ai_share_cap=1.0)
    print(f"{decisions} decisions, last cap {cap:.3f}")


if __name__ == "__main__":
    main()

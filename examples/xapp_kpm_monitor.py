"""A KPM monitor xApp: print a node's measurements and its per-UE measurements.

    python examples/xapp_kpm_monitor.py                      # starts a FakeNode itself
    python examples/xapp_kpm_monitor.py --target HOST:PORT [--token TOKEN --ca CA.pem]
                                        [--seconds 3] [--period-ms 500]

Two E2SM-KPM subscriptions on the node's KPM RAN function (found by its OID): REPORT
style 1 (E2 node measurement: throughput, PRB usage, and the co-scheduling metrics) and
style 5 (measurements for multiple UEs). Reports arrive through callbacks.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

try:
    from airan.ric.xapp import E2Client, KpmReport
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airan.ric.xapp import E2Client, KpmReport

from airan.ric.security import ClientSecurity

NODE = (
    "DRB.UEThpDl",
    "DRB.UEThpUl",
    "RRU.PrbTotDl",
    "RRU.PrbTotUl",
    "airan.DeadlineMetRatio",
    "airan.RadioBusy",
    "airan.AiBusy",
    "airan.HarvestRatio",
    "airan.RadioSlackLowUs",
    "airan.AiTokensPerS",
)
UE = ("DRB.UEThpDl", "DRB.UEThpUl", "RRU.PrbUsedDl", "RRU.PrbUsedUl")


@contextlib.contextmanager
def node_target(target: str | None) -> Iterator[str]:
    """``target``, or a FakeNode started here for the duration."""
    if target is not None:
        yield target
        return
    from airan.testing import FakeNode

    with FakeNode(seed=1) as fake:
        print(f"started a FakeNode at {fake.e2_target}")
        yield fake.e2_target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="the node's E2 host:port (default: start a FakeNode)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--period-ms", type=int, default=500)
    ap.add_argument("--token", help="this xApp's bearer token (needs TLS or --plaintext-token)")
    ap.add_argument("--ca", type=Path, help="CA bundle of the node's certificate (TLS)")
    ap.add_argument("--plaintext-token", action="store_true", help="send the token without TLS")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.period_ms < 1:
        ap.error("--seconds and --period-ms must be positive")
    security = ClientSecurity(
        ca=args.ca, token=args.token, allow_plaintext_token=args.plaintext_token
    )
    lock = threading.Lock()

    def on_node(r: KpmReport) -> None:
        vals = "  ".join(f"{k}={v:.4g}" for k, v in sorted(r.values.items()))
        with lock:
            print(f"[node] t={r.time:.3f} seq={r.sequence}  {vals}")

    def on_ues(r: KpmReport) -> None:
        with lock:
            print(f"[ues ] t={r.time:.3f} seq={r.sequence}  {len(r.ues)} UEs")
            for ue, vals in sorted(r.ues.items()):
                cells = "  ".join(f"{k}={v:.4g}" for k, v in sorted(vals.items()))
                print(f"       ue {ue}: {cells}")

    with node_target(args.target) as target, E2Client(target, security) as e2:
        setup = e2.setup()
        print(f"node {setup.node_id} (PLMN {setup.plmn_identity}), RAN functions:")
        for f in setup.functions:
            print(f"  {f.ran_function_id}: {f.short_name} {f.oid} rev {f.revision}")
        kpm = e2.function("1.3.6.1.4.1.53148.1.2.2.2")
        names = [n for n in NODE if n in kpm.measurements(1)]
        ue_names = [n for n in UE if n in kpm.measurements(5)]
        node_sub = e2.kpm.subscribe(names, period_ms=args.period_ms, callback=on_node)
        ue_sub = e2.kpm.subscribe(ue_names, period_ms=args.period_ms, style=5, callback=on_ues)
        time.sleep(args.seconds)
        node_sub.cancel()
        ue_sub.cancel()
        for sub in (node_sub, ue_sub):
            if sub.error is not None:
                raise sub.error
            if sub.ended is not None:
                print(f"subscription ended by {sub.ended.ended_by}: {sub.ended.reason}")
    print("done")


if __name__ == "__main__":
    main()

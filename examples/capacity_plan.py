"""How many cells fit on a device with zero misses, and what AI capacity is left.

    python examples/capacity_plan.py                         # the CPU profile shipped
    python examples/capacity_plan.py --profile my-gpu.json   # one from `airan profile`
    python examples/capacity_plan.py --ul-deadline-slots 16 --slots 5000

Replays a device profile (slice durations measured by ``airan profile``) in virtual time,
adding cells like the profiled one until one misses a deadline, and checks the answer
against the EDF utilisation bound and the density test with blocking.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from airan.core.policy import Policy
from airan.core.profile import DeviceProfile
from airan.ran.config import RanConfig
from airan.runner import plan_capacity

SHIPPED = Path(__file__).resolve().parent.parent / "profiles" / "cpu-x86_64-2vcpu.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", type=Path, default=SHIPPED)
    ap.add_argument("--slots", type=int, default=20_000, help="virtual slots per step")
    ap.add_argument("--ul-deadline-slots", type=int, help="override the cell's uplink budget")
    ap.add_argument("--max-cells", type=int, default=16)
    args = ap.parse_args()
    prof = DeviceProfile.parse(json.loads(args.profile.read_text()), where="profile")
    ran_data = dict(prof.ran)
    if args.ul_deadline_slots is not None:
        ran_data["ul_deadline_slots"] = args.ul_deadline_slots
    ran = RanConfig.parse(ran_data, where="ran")
    print(
        f"device: {prof.device} (measured {prof.measured_at}); cell: {ran.bandwidth_mhz} MHz "
        f"µ={ran.numerology}, {ran.antennas} rx, {ran.ues} UEs, uplink due "
        f"{ran.ul_deadline_slots} slots after its slot"
    )
    plan = plan_capacity(prof, ran, args.slots, Policy(), seed=1, max_cells=args.max_cells)
    for run in plan.runs:
        print(
            f"  {run.cells:2d} cell(s): misses {run.misses:5d}  radio busy {run.radio_busy:.3f}"
            f"  AI busy {run.ai_busy:.3f}"
        )
    b = plan.bounds
    print(
        f"fit: {plan.fit} cell(s) with zero misses; AI left: {plan.ai_device_ms_per_s:.0f} "
        f"device ms/s, about {plan.ai_tokens_per_s:.0f} tokens/s"
    )
    print(
        f"check: sufficient (density test with blocking) {b.sufficient} <= fit <= "
        f"necessary (utilisation bound) {b.necessary}: "
        + ("holds" if b.sufficient <= plan.fit <= b.necessary else "VIOLATED")
    )


if __name__ == "__main__":
    main()

"""Median µs per `Mac.schedule()` slot (2000 slots after 200 warm-up, median of 5)."""

from __future__ import annotations

import statistics
import sys
import time

from airan.ran.config import RanConfig
from airan.ran.mac import Mac
from airan.ran.numerology import SlotId

CASES = {
    "default": {},
    "16ue_100mhz": {"ues": 16, "bandwidth_mhz": 100, "antennas": 4, "layers": 2},
}


def bench(cfg: dict[str, object], slots: int = 2000, warm: int = 200, reps: int = 5) -> float:
    out = []
    for _ in range(reps):
        mac = Mac(RanConfig.parse(cfg), 1)
        s = SlotId(0, 0, mac.mu)
        for _ in range(warm):
            mac.schedule(s)
            s = s + 1
        t0 = time.perf_counter()
        for _ in range(slots):
            mac.schedule(s)
            s = s + 1
        out.append((time.perf_counter() - t0) / slots * 1e6)
    return statistics.median(out)


if __name__ == "__main__":
    for name in sys.argv[1:] or list(CASES):
        print(f"{name}: {bench(CASES[name]):.1f} us/slot")

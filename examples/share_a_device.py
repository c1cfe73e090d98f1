"""Share a device between your own radio work and your own AI job, through the API.

An integrator's view of airan: describe the radio's slot work as `RanTask`s (a chain
of slices, a release time and an absolute deadline), hand AI work over as an `AiJob`
(any iterable of slices), and let the `Arbiter` run both on an executor.

    python examples/share_a_device.py              # 2 s on the CPU (NumPy), wall clock
    python examples/share_a_device.py --sim        # the same work in virtual time
    python examples/share_a_device.py --seconds 0.5 --policy fifo

The radio work here is a 1024-point FFT per receive antenna and symbol of a slot
(14 symbols, TS 38.211 §4.3.2) and a channel-estimate average; the AI work is a small
MLP step. Slot length: 1 ms (numerology 0), so a CPU keeps up.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

# One BLAS thread: on a shared CPU, BLAS worker threads that spin for each other turn a
# 20 µs matrix product into milliseconds. Set before NumPy loads its BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from airan.core import AiJob, Estimator, Policy, RanTask, Slice, SliceKind
from airan.sched.arbiter import Arbiter
from airan.sched.executors import DurationDist, NumpyExecutor, SimExecutor

SLOT_NS = 1_000_000
SYMBOLS = 14


def radio_slices(antennas: int) -> tuple[Slice, Slice]:
    rng = np.random.default_rng(0)
    grid = (rng.standard_normal((antennas, SYMBOLS, 1024)) + 0j).astype(np.complex64)
    freq = np.empty_like(grid)

    def fft() -> None:
        freq[...] = np.fft.fft(grid, axis=-1)

    def chest() -> float:
        return float(np.abs(freq[:, 2, :].mean()))  # DMRS on symbol 2

    shape = {"antennas": antennas}
    return (
        Slice.make(SliceKind.RAN, "ofdm.fft", 400_000, shape, fft),
        Slice.make(SliceKind.RAN, "chest", 200_000, shape, chest),
    )


def ai_steps() -> Iterator[Slice]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32) / 16

    def step() -> None:
        np.tanh(x @ w, out=x)

    s = Slice.make(SliceKind.AI, "mlp.step", 250_000, {"batch": 8}, step, tokens=8)
    while True:
        yield s


def tasks(slots: int, slices: tuple[Slice, Slice], start_ns: int) -> Iterator[RanTask]:
    for n in range(slots):
        release = start_ns + n * SLOT_NS
        yield RanTask(release, release + SLOT_NS, slices, name="pusch", slot=n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--policy", default="airan", choices=["airan", "exclusive", "fifo", "tdm"])
    ap.add_argument("--antennas", type=int, default=2)
    ap.add_argument("--sim", action="store_true", help="virtual time instead of the CPU")
    args = ap.parse_args(argv)

    slices = radio_slices(args.antennas)
    ai = ai_steps()
    policy = Policy(name=args.policy, max_ai_slice_us=300, tdm_period_us=SLOT_NS / 1000)
    if args.sim:
        first = next(ai)
        profile = {s.key: DurationDist(s.bound_ns / 2, s.bound_ns) for s in (*slices, first)}
        executor: NumpyExecutor | SimExecutor = SimExecutor(profile, seed=1)
    else:
        executor = NumpyExecutor()
    arbiter = Arbiter(executor, policy, Estimator(min_samples=200))
    arbiter.add_job(AiJob(ai, tenant="my-model"))
    slots = int(args.seconds * 1e9 // SLOT_NS)
    start = executor.clock.now_ns() + SLOT_NS
    arbiter.run(tasks(slots, slices, start), start - executor.clock.now_ns() + slots * SLOT_NS)
    report = arbiter.report(seed=None, slots=slots, workload={"example": "share_a_device"})
    r, a = report.ran, report.ai
    print(f"{report.backend} {report.policy['name']}: {r.tasks} radio tasks, {r.misses} missed")
    print(f"  radio busy {r.busy_ratio:.2f}, latency p50 {r.latency_us.p50:.0f} µs")
    print(f"  AI: {a.slices} slices, {a.tokens} tokens, harvest {a.harvest_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

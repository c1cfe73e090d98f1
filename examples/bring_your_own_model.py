"""Bring your own model: your own inference steps as AI slices beside the radio.

    python examples/bring_your_own_model.py            # on the CPU, 2 s
    python examples/bring_your_own_model.py --sim      # in virtual time

Here "your model" is a small NumPy MLP whose step cost depends on the batch; each step
is wrapped as a `UserStep` with its shape and a declared worst case. On a GPU, a step
would enqueue on the AI stream, for PyTorch through `torch_ai_stream(executor)`:

    s = torch_ai_stream(executor)
    def step():
        with torch.cuda.stream(s):
            logits = model(batch)           # enqueued, not synchronised
    UserStep(step, {"batch": 8}, bound_ns=150_000, tokens=8)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from airan.ai.adapter import UserStep, user_job
from airan.core import Policy, RanTask, Slice, SliceKind
from airan.core.policy import TenantPolicy
from airan.sched.arbiter import Arbiter
from airan.sched.executors import DurationDist, NumpyExecutor, SimExecutor

SLOT_NS = 1_000_000


def my_model_steps(batches: list[int]) -> Iterator[UserStep]:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((128, 256)).astype(np.float32) / 11
    w2 = rng.standard_normal((256, 128)).astype(np.float32) / 16
    x = {b: rng.standard_normal((b, 128)).astype(np.float32) for b in batches}

    def step_for(b: int) -> UserStep:
        def fn() -> None:
            x[b][...] = np.tanh(np.maximum(x[b] @ w1, 0) @ w2)

        return UserStep(fn, {"batch": b}, bound_ns=40_000 + 10_000 * b, tokens=b)

    steps = [step_for(b) for b in batches]
    n = 0
    while True:
        yield steps[n % len(steps)]
        n += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sim", action="store_true")
    args = ap.parse_args(argv)
    radio = Slice.make(SliceKind.RAN, "radio", 400_000, work=lambda: np.fft.fft(np.ones(4096)))
    policy = Policy(tenants={"team-a": TenantPolicy(weight=2), "team-b": TenantPolicy(weight=1)})
    job_a = user_job(my_model_steps([1, 4, 8]), tenant="team-a")
    job_b = user_job(my_model_steps([2, 12]), tenant="team-b")
    if args.sim:
        keys = [("radio", ())] + [("ai.user", (("batch", b),)) for b in (1, 2, 4, 8, 12)]
        means = [200_000] + [20_000 + 5_000 * b for b in (1, 2, 4, 8, 12)]
        profile = {k: DurationDist(m, int(m * 1.5)) for k, m in zip(keys, means, strict=True)}
        executor: NumpyExecutor | SimExecutor = SimExecutor(profile, seed=1)
    else:
        executor = NumpyExecutor()
    arbiter = Arbiter(executor, policy)
    arbiter.add_job(job_a)
    arbiter.add_job(job_b)
    slots = int(args.seconds * 1e9 // SLOT_NS)
    t0 = executor.clock.now_ns() + SLOT_NS
    tasks = (RanTask(t0 + n * SLOT_NS, t0 + (n + 1) * SLOT_NS, (radio,)) for n in range(slots))
    arbiter.run(tasks, t0 - executor.clock.now_ns() + slots * SLOT_NS)
    r = arbiter.report(seed=None, slots=slots)
    print(f"{r.backend}: {r.ran.tasks} radio tasks, {r.ran.misses} missed")
    for name, u in sorted(r.ai.tenants.items()):
        print(
            f"  {name}: weight {u.weight:g}, {u.busy_us / 1000:.1f} ms of device, {u.tokens} tokens"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

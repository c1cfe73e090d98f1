"""One AI grid site: a live simulated node that serves inference, with its E2 agent.

The node is :class:`~airan.ric.inference.InferenceNode`: the DU of ``Node.simulated``
(the MAC schedules every slot; each slot's L1 work becomes radio tasks whose durations
are drawn from the DU's stated GPU-class cost model), its arbiter (radio first) and one
transformer-decoder engine per AI tenant (:class:`~airan.ric.inference.InferenceHost`).

The device is simulated, the AI is not. :class:`~airan.sched.executors.PacedSimExecutor`
draws every slice's duration in virtual time paced to the wall clock, but does not run
the slices' work, so a simulated node's AI would make no tokens. :class:`AiSimExecutor`
is the same paced simulated device that also *runs the work of each AI slice* (the
real NumPy decoder layers, KV cache and greedy sampling) on the host CPU, at the moment
the slice completes on the simulated device, in device order. Durations stay those of
the device model (the radio's: ``airan.ran.du.cost_model``; the AI's: a stated
:class:`~airan.ai.engine.CostModel`, ``ai_layer_us`` per layer call plus ``ai_gflops``),
so the arbiter schedules exactly as on that device; the tokens are the model's real
output, streamed when their slice ends. If the host CPU cannot keep up (computing a slice
takes longer than the device model says), the virtual clock falls behind the wall clock;
the node reports by how much (KPM ``airan.Infer.PacingLagMs``). ``wake()`` lets a new
request wake the loop at once instead of at the next radio event.

Run a site in a process of its own::

    python -m airan.grid.site --site-id edge-a --tenants acme,globex --ai-share-cap 0.5

It prints one JSON line, ``{"site": ..., "target": "127.0.0.1:PORT", ...}``, then serves
until stdin closes or it gets SIGTERM / SIGINT. :func:`spawn_site` does this from Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from airan.ai.engine import CostModel
from airan.ai.model import ModelConfig, TransformerDecoder
from airan.core.errors import FieldError
from airan.core.policy import TENANT_NAME, CheckedModel, Policy
from airan.core.slices import Slice, SliceKey, SliceKind
from airan.ran.config import RanConfig
from airan.runner import CPU_MODEL, ran_defaults
from airan.sched.executors import NEVER, DurationDist, PacedSimExecutor, Stream

__all__ = ["AiSimExecutor", "Site", "SiteHandle", "SiteOptions", "build_site", "spawn_site"]

#: the arbiter's guard on AI slices (µs)
GUARD_US = 20.0


class AiSimExecutor(PacedSimExecutor):
    """:class:`PacedSimExecutor` whose AI slices' work runs on the host when the slice
    ends on the simulated device (see the module docstring).

    ``radio_model``: durations of radio slices by key (the DU's cost model); ``ai_cost``:
    the AI device model; ``seed``: the duration draws."""

    backend = "sim-paced+cpu-ai"

    def __init__(
        self,
        radio_model: Callable[[SliceKey], DurationDist],
        ai_cost: CostModel,
        seed: int = 0,
    ) -> None:
        self._radio_model = radio_model
        self._ai_cost = ai_cost
        super().__init__({}, seed, model=self._dist)
        self.device = "simulated device (real time), AI computed on the host CPU"
        self._works: dict[int, tuple[object, Callable[[], object]]] = {}
        self._kick = threading.Event()
        self.work_ns = 0  # host time spent computing AI slices
        self.wakes = 0

    def _dist(self, key: SliceKey) -> DurationDist:
        if key[0].startswith("ai."):
            return self._ai_cost.dist(key)
        return self._radio_model(key)

    def submit(self, s: Slice, stream: Stream, tag: object) -> None:
        super().submit(s, stream, tag)
        if s.kind is SliceKind.AI and s.work is not None:
            self._works[id(tag)] = (tag, s.work)

    def wake(self) -> None:
        """Wake a waiting loop now (from any thread): new work has arrived."""
        self._kick.set()

    def lag_ns(self) -> int:
        """How far the simulated clock lags the wall clock (0 when paced)."""
        return max(0, self._wall.now_ns() - self.clock.t)

    def wait(self, until_ns: int) -> None:
        if self._done:
            return
        end = self._end
        target = end if 0 <= end <= until_ns else until_ns
        if NEVER > target > self.clock.t:
            remaining = target - self._wall.now_ns()
            if remaining > 0 and self._kick.wait(remaining / 1e9):
                self._kick.clear()
                self.wakes += 1
                now = self._wall.now_ns()
                if now < target:  # woken early: time moves to now, nothing completes
                    self.clock.t = max(self.clock.t, now)
                    return
        n = len(self._done)
        super(PacedSimExecutor, self).wait(until_ns)  # SimExecutor.wait: no more sleeping
        for c in self._done[n:]:
            entry = self._works.pop(id(c[0]), None)
            if entry is not None:
                t0 = time.perf_counter_ns()
                entry[1]()
                self.work_ns += time.perf_counter_ns() - t0


class SiteOptions(CheckedModel):
    """What a site runs: its node id, radio cell, AI device model, tenants and model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "site"

    site_id: str = Field("site-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Radio and duration draws.")
    model_seed: int = Field(
        7, ge=0, le=2**32 - 1, description="Weights: the same on every site of a grid."
    )
    model: ModelConfig = CPU_MODEL
    tenants: tuple[str, ...] = Field(("default",), min_length=1, max_length=64)
    max_batch: int = Field(8, ge=1, le=256)
    ai_share_cap: float = Field(
        1.0, gt=0.0, le=1.0, description="The arbiter's AI share cap (operator's radio margin)."
    )
    ai_layer_us: float = Field(
        400.0,
        gt=0.0,
        le=100_000.0,
        description="Simulated AI device: time per layer call (slow enough that a shared "
        "CPU host computes the CPU-size model's slices within it).",
    )
    ai_gflops: float = Field(5.0, gt=0.0, le=1e6, description="Simulated AI device: GFLOP/s.")
    max_ai_slice_us: float | None = Field(
        None,
        ge=50.0,
        le=100_000.0,
        description="Largest AI slice; None: three times the smallest decode slice's bound "
        "(at least 1 ms). It is the radio's blocking term: the light cell's 8-slot budgets "
        "take a few ms.",
    )
    ran: RanConfig = Field(default_factory=lambda: RanConfig.parse(ran_defaults(gpu=False)))

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if not re.fullmatch(TENANT_NAME, t):
                raise ValueError(f"tenant name {t!r} must be 1 to 64 of [A-Za-z0-9._:-]")
        if len(set(v)) != len(v):
            raise ValueError(f"tenant names must be distinct, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _a_decode_row_fits(self) -> SiteOptions:
        need = self.smallest_slice_us() + GUARD_US
        if self.max_ai_slice_us is not None and self.max_ai_slice_us < need:
            raise ValueError(
                f"max_ai_slice_us ({self.max_ai_slice_us:g}) must hold the smallest decode "
                f"slice (one row, one layer and the output head at full context: {need:.0f} us "
                "with the guard), or no token could ever be made"
            )
        return self

    def smallest_slice_us(self) -> float:
        """The declared bound (:meth:`CostModel.bound_ns`) of the smallest slice that ends
        a decode step: one row through one layer and the head, at full context."""
        m = self.model
        d = m.d_model
        flops = 8 * d * d + 4 * d * m.d_ff + 4 * m.max_context * d + 2 * d * m.vocab_size
        mean_us = 1.2 * self.ai_layer_us + flops / self.ai_gflops / 1000.0
        return 2.0 * mean_us + 20.0

    def slice_us(self) -> float:
        """``max_ai_slice_us``, or its default."""
        if self.max_ai_slice_us is not None:
            return self.max_ai_slice_us
        return max(1000.0, 3.0 * (self.smallest_slice_us() + GUARD_US))

    def policy(self) -> Policy:
        """The node's arbiter policy: the tenants, the AI share cap, slices up to
        :meth:`slice_us` (the light cell keeps its deadlines with that blocking)."""
        slice_us = self.slice_us()
        window = max(10_000.0, 2.0 * slice_us / self.ai_share_cap)
        return Policy.parse(
            {
                "max_ai_slice_us": slice_us,
                "guard_us": GUARD_US,
                "lookahead_us": max(1000.0, slice_us),
                "ai_share_cap": self.ai_share_cap,
                "share_window_us": window,
                "tenants": {t: {} for t in self.tenants},
            }
        )


@dataclass
class Site:
    """A built site (not serving yet): :meth:`start` serves E2 and inference on a port."""

    options: SiteOptions
    node: Any  # InferenceNode
    host: Any  # InferenceHost
    executor: AiSimExecutor
    server: Any = None  # E2Server

    @property
    def target(self) -> str:
        if self.server is None:
            raise FieldError("site", "is not started")
        return str(self.server.target)

    def start(self, port: int = 0, host: str = "127.0.0.1", seconds: float = 86_400.0) -> Site:
        from airan.ric.e2 import serve_e2
        from airan.ric.inference import InferenceService

        self.node.start(seconds)
        try:
            self.server = serve_e2(
                self.node, port, None, host, [InferenceService(self.host).registration()]
            )
        except BaseException:
            self.node.stop()
            raise
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        if self.server is not None:
            self.server.stop(grace_s)
            self.server = None
        self.node.stop()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_site(options: SiteOptions | Mapping[str, Any] | None = None) -> Site:
    """A site from its options (a :class:`SiteOptions` or its JSON fields)."""
    from airan.node import NodeConfig
    from airan.ran.du import DuWorkload
    from airan.ric.inference import InferenceHost, InferenceNode
    from airan.sched.arbiter import Arbiter

    opts = options if isinstance(options, SiteOptions) else SiteOptions.parse(dict(options or {}))
    cfg = NodeConfig.parse({"node_id": opts.site_id, "policy": opts.policy(), "ran": opts.ran})
    model = TransformerDecoder.from_seed(opts.model, opts.model_seed)
    cost = CostModel(model, fixed_ns=opts.ai_layer_us * 1000.0, ns_per_flop=1.0 / opts.ai_gflops)
    du = DuWorkload(cfg.ran, seed=opts.seed)
    ex = AiSimExecutor(du.cost_model, cost, seed=opts.seed)
    arb = Arbiter(ex, cfg.policy, queue_capacity=1 << 14)
    node = InferenceNode(cfg, arb, du)
    host = InferenceHost(
        node, model, cost, tenants=opts.tenants, max_batch=opts.max_batch, wake=ex.wake
    )
    return Site(opts, node, host, ex)


# ----------------------------------------------------------------------------- processes


@dataclass
class SiteHandle:
    """A site running in a child process (:func:`spawn_site`)."""

    site: str
    target: str
    proc: subprocess.Popen[str]
    log: IO[str] | None = None  # the child's stderr (a temporary file)

    def kill(self) -> None:
        """SIGKILL: the site vanishes mid-work, as on a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask it to end (stdin closes), then wait; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self.log):
            if f is not None:
                f.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn_site(
    options: SiteOptions | Mapping[str, Any], timeout_s: float = 60.0, port: int = 0
) -> SiteHandle:
    """Start ``python -m airan.grid.site`` with these options on a loopback port and wait
    for its address line."""
    opts = options if isinstance(options, SiteOptions) else SiteOptions.parse(dict(options))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the handle owns it; not a pipe: nobody drains one
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airan.grid.site",
            "--options",
            opts.model_dump_json(),
            "--port",
            str(port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    line = _read_line(proc.stdout, timeout_s)
    if not line:
        proc.kill()
        proc.wait(10)
        log.seek(0)
        err = log.read()
        log.close()
        if proc.stdout is not None:
            proc.stdout.close()
        raise FieldError("site", f"{opts.site_id} did not start: {err.strip()[-2000:]}")
    info = json.loads(line)
    return SiteHandle(info["site"], info["target"], proc, log)


def _read_line(f: IO[str] | None, timeout_s: float) -> str:
    if f is None:
        return ""
    ready, _, _ = select.select([f], [], [], timeout_s)
    return f.readline().strip() if ready else ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m airan.grid.site",
        description="Run one AI grid site (a simulated node serving inference and E2).",
    )
    ap.add_argument("--options", default="{}", help="SiteOptions as JSON (see docs/grid.md)")
    ap.add_argument("--site-id", help="overrides options.site_id")
    ap.add_argument("--tenants", help="comma-separated; overrides options.tenants")
    ap.add_argument("--ai-share-cap", type=float, help="overrides options.ai_share_cap")
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--seconds", type=float, default=86_400.0)
    ns = ap.parse_args(argv)
    try:
        raw = json.loads(ns.options)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--options: not JSON: {exc}") from None
    if ns.site_id is not None:
        raw["site_id"] = ns.site_id
    if ns.tenants is not None:
        raw["tenants"] = [t for t in ns.tenants.split(",") if t]
    if ns.ai_share_cap is not None:
        raw["ai_share_cap"] = ns.ai_share_cap
    try:
        site = build_site(SiteOptions.parse(raw)).start(ns.port, ns.host, ns.seconds)
    except FieldError as exc:
        raise SystemExit(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(
        json.dumps(
            {
                "site": site.options.site_id,
                "target": site.target,
                "pid": os.getpid(),
                "model_digest": site.host.digest,
            }
        ),
        flush=True,
    )
    try:
        while not stop.is_set() and site.node.running:
            r, _, _ = select.select([sys.stdin], [], [], 0.2)
            if r and not sys.stdin.readline():  # stdin closed: the parent is done
                break
    finally:
        site.stop()


if __name__ == "__main__":
    main()

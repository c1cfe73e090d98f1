"""A seeded open-loop load for the grid: requests arriving as a Poisson process, each
streamed to its end and checked (every token once, in order), with its latency measured
at the client. The example and the benchmark use it; the same seed gives the same
requests at the same offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from airan.core.errors import FieldError
from airan.ric.inference import AsyncInferenceClient, GenerateSpec, InferenceError

__all__ = ["Arrival", "Mix", "Outcome", "poisson_arrivals", "run_load", "summarize"]


@dataclass(frozen=True, slots=True)
class Mix:
    """Who asks: tenants and user areas (with weights), prompt and answer lengths, SLO."""

    tenants: Sequence[tuple[str, float]] = (("default", 1.0),)
    areas: Sequence[tuple[str, float]] = (("area-1", 1.0),)
    prompt_tokens: tuple[int, int] = (8, 32)  # inclusive range
    new_tokens: tuple[int, int] = (16, 48)
    vocab_size: int = 512
    ttft_ms: float = 1000.0
    total_ms: float = 3000.0


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float
    spec: GenerateSpec


def _pick(rng: np.random.Generator, items: Sequence[tuple[str, float]]) -> str:
    w = np.array([x[1] for x in items], dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))][0]


def poisson_arrivals(rate: float, seconds: float, seed: int, mix: Mix) -> list[Arrival]:
    """Requests at ``rate`` per second for ``seconds`` (exponential gaps), seeded."""
    if not 0 < rate <= 100_000:
        raise FieldError("rate", f"must be in (0, 100000] requests per second, got {rate}")
    if not 0 < seconds <= 86_400:
        raise FieldError("seconds", f"must be in (0, 86400], got {seconds}")
    rng = np.random.default_rng(seed)
    out: list[Arrival] = []
    t = float(rng.exponential(1.0 / rate))
    i = 0
    while t < seconds:
        p = int(rng.integers(mix.prompt_tokens[0], mix.prompt_tokens[1] + 1))
        n = int(rng.integers(mix.new_tokens[0], mix.new_tokens[1] + 1))
        spec = GenerateSpec(
            f"load-{seed}-{i}",
            _pick(rng, mix.tenants),
            tuple(int(x) for x in rng.integers(0, mix.vocab_size, p)),
            n,
            ttft_ms=mix.ttft_ms,
            total_ms=mix.total_ms,
            user_area=_pick(rng, mix.areas),
        )
        out.append(Arrival(t, spec))
        t += float(rng.exponential(1.0 / rate))
        i += 1
    return out


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request."""

    spec: GenerateSpec
    site: str = ""  # admitted at
    final_site: str = ""
    tokens: list[int] = field(default_factory=list)
    ttft_ms: float = -1.0
    total_ms: float = -1.0
    error: str = ""  # the status code name of a refusal or failure
    duplicates: int = 0  # tokens received at an index already received
    gaps: int = 0  # tokens received past the next expected index
    failovers: int = 0
    sites_seen: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return not self.error and len(self.tokens) == self.spec.max_new_tokens

    @property
    def slo_met(self) -> bool:
        s = self.spec
        return (
            self.complete
            and 0 <= self.ttft_ms <= (s.ttft_ms or float("inf"))
            and self.total_ms <= (s.total_ms or float("inf"))
        )


async def _one(client: AsyncInferenceClient, a: Arrival, t0: float, out: Outcome) -> None:
    await asyncio.sleep(max(0.0, t0 + a.at_s - time.perf_counter()))
    start = time.perf_counter()
    try:
        async for ev in client.generate(a.spec, timeout_s=120.0):
            which = ev.WhichOneof("event")
            if which == "admission":
                out.site = ev.admission.site
            elif which == "tokens":
                i = ev.tokens.start_index
                for tok in ev.tokens.tokens:
                    if i < len(out.tokens):
                        out.duplicates += 1
                    elif i > len(out.tokens):
                        out.gaps += 1
                    else:
                        if not out.tokens:
                            out.ttft_ms = (time.perf_counter() - start) * 1000.0
                        out.tokens.append(tok)
                    i += 1
                out.sites_seen.add(ev.tokens.site)
            elif which == "done":
                out.final_site = ev.done.site
                out.failovers = ev.done.failovers
        out.total_ms = (time.perf_counter() - start) * 1000.0
    except InferenceError as exc:
        out.error = exc.code.name


async def _run(target: str, arrivals: Sequence[Arrival], outs: list[Outcome]) -> None:
    client = AsyncInferenceClient(target)
    try:
        t0 = time.perf_counter() + 0.05
        await asyncio.gather(*(_one(client, a, t0, o) for a, o in zip(arrivals, outs, strict=True)))
    finally:
        await client.close()


def run_load(
    target: str,
    arrivals: Sequence[Arrival],
    during: Callable[[float], None] | None = None,
) -> list[Outcome]:
    """Send ``arrivals`` to ``target`` (open loop) and wait for every answer.
    ``during(elapsed_s)``, if given, is called about every 50 ms from another thread
    while the load runs (to kill a site mid-run, say)."""
    import threading

    outs = [Outcome(a.spec) for a in arrivals]
    stop = threading.Event()
    watcher = None
    if during is not None:
        t0 = time.perf_counter()

        def watch() -> None:
            while not stop.wait(0.05):
                during(time.perf_counter() - t0)

        watcher = threading.Thread(target=watch, name="loadgen-during", daemon=True)
        watcher.start()
    try:
        asyncio.run(_run(target, arrivals, outs))
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(5)
    return outs


def summarize(outs: Sequence[Outcome]) -> dict[str, float]:
    """Request counts, SLO attainment (of all requests sent), latency (of completed ones),
    lost requests (admitted, then not completed), duplicated and out-of-order tokens."""
    done = [o for o in outs if o.complete]
    lat = sorted(o.total_ms for o in done)
    ttft = sorted(o.ttft_ms for o in done)
    n = len(outs)

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")

    return {
        "requests": float(n),
        "completed": float(len(done)),
        "refused": float(sum(1 for o in outs if o.error and not o.site)),
        "lost": float(sum(1 for o in outs if o.site and not o.complete)),
        "slo_attainment": sum(1 for o in outs if o.slo_met) / n if n else float("nan"),
        "mean_latency_ms": float(np.mean(lat)) if lat else float("nan"),
        "p99_latency_ms": pct(lat, 0.99),
        "mean_ttft_ms": float(np.mean(ttft)) if ttft else float("nan"),
        "duplicated_tokens": float(sum(o.duplicates for o in outs)),
        "gaps": float(sum(o.gaps for o in outs)),
        "failed_over": float(sum(1 for o in outs if o.failovers)),
        "tokens": float(sum(len(o.tokens) for o in outs)),
    }

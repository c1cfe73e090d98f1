"""The AI grid's router: the node's inference API (``airan.infer.v1.Inference``) in front
of many sites.

For each ``Generate`` the router (all of it on one asyncio loop):

1. validates the request and refuses, before any site is touched, an unknown tenant
   (``INVALID_ARGUMENT``), a residency rule no site can satisfy (``FAILED_PRECONDITION``)
   and a request whose predicted cost is over its cap everywhere it may go
   (``PERMISSION_DENIED``) — :func:`airan.grid.score.precheck`;
2. places it (:func:`airan.grid.score.place`: hard filters, then the documented score;
   or a baseline, ``round-robin`` / ``nearest``), waiting up to ``queue_timeout_s`` while
   every eligible site is full (spill-over happens inside the placement: a full site is
   filtered, the next best is chosen); every decision goes to the audit log;
3. streams the site's tokens to the client. If the site errors, stops streaming for
   ``stall_timeout_s``, or stops reporting KPM (the registry's ``on_down``), the router
   marks it unhealthy and resumes the request on the best other site *from its last
   streamed token* (``resume_tokens``): the client sees every token exactly once, in
   order; a token a site sends twice is dropped (counted in :attr:`GridRouter.stats`).

Request ids are idempotency keys at the router too: a ``Generate`` with the id of a
running or recent request joins it (same tenant, prompt, length) or is refused
(``ALREADY_EXISTS``). When the last reader of a running request goes away, the request is
cancelled.

Network latency between user areas and sites is a static fact of each site. On
loopback there is none; ``emulate_network=True`` makes the router wait each attempt's
round trip (``latency_ms[user_area]``) before the site's stream starts, so that measured
latencies include it (the example and the benchmark use it; it is off by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import grpc.aio

from airan.core.errors import FieldError
from airan.grid.metering import AuditLog, Meter
from airan.grid.registry import Registry
from airan.grid.score import (
    Demand,
    GridPolicy,
    Placement,
    Refused,
    SiteFacts,
    demand,
    place,
    place_nearest,
    place_round_robin,
    precheck,
)
from airan.infer.v1 import infer_pb2, infer_pb2_grpc
from airan.ric.inference import (
    INFER_SERVICE,
    REASON_CANCELLED,
    Finished,
    GenerateSpec,
    Generation,
    InferenceError,
    admission_event,
    done_event,
    expire_ended,
    spec_from_pb,
    tokens_event,
)
from airan.ric.security import ServerSecurity
from airan.ric.server import EventLoopThread, ServiceRegistration, build_aio_server

__all__ = ["STRATEGIES", "GridRouter", "RouterServer", "serve_router"]

log = logging.getLogger(__name__)

Strategy = Literal["score", "round-robin", "nearest"]
STRATEGIES: tuple[Strategy, ...] = ("score", "round-robin", "nearest")
_T = TypeVar("_T")
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

#: a site's refusal of the request itself: passed to the client, the site stays healthy
_REQUEST_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.ALREADY_EXISTS,
}

#: filter codes that mean "no room now" (the request waits), not "never here"
_CAPACITY = {"full", "power", "radio"}


class _StreamError(Exception):
    """A site's stream broke the protocol (a gap, a different token, no done)."""


@dataclass(eq=False)
class _Job:
    """One request at the router."""

    spec: GenerateSpec
    gen: Generation
    site: str = ""
    attempt: int = 0
    call: Any = None
    node_rid: str = ""
    abandoned: str = ""  # why the router dropped the current attempt ("" if it did not)
    cancelled: bool = False
    failed: set[str] = field(default_factory=set)
    sites_at: list[tuple[int, str]] = field(default_factory=list)  # (first index, site)
    device_us: float = 0.0
    task: asyncio.Task[None] | None = None
    predicted_latency_ms: float = 0.0
    predicted_cost: float = 0.0
    decision_id: str = ""


def _code(name: str) -> grpc.StatusCode:
    return grpc.StatusCode[name]


class GridRouter:
    """Places requests on ``sites`` under ``policy`` (see the module docstring).

    ``strategy``: ``score`` (the documented score), or a baseline: ``round-robin``,
    ``nearest``; ``audit``/``meter``: where decisions and usage go (new ones by
    default); ``kpm_period_ms``: the sites' KPM reporting period; ``queue_timeout_s``:
    how long a request waits for room when every eligible site is full;
    ``stall_timeout_s``: a site silent this long mid-stream is abandoned;
    ``error_holdoff_s``: a site whose call failed stays unhealthy this long at least;
    ``keep_finished_s``: how long finished request ids stay known (joins, refusals).

    Use it on one asyncio loop (``await start()`` ... ``await stop()``), or through
    :func:`serve_router`, which hosts it behind the gRPC API.
    """

    def __init__(
        self,
        sites: Sequence[SiteFacts],
        policy: GridPolicy,
        *,
        strategy: Strategy = "score",
        audit: AuditLog | None = None,
        meter: Meter | None = None,
        kpm_period_ms: int = 100,
        emulate_network: bool = False,
        queue_timeout_s: float = 5.0,
        stall_timeout_s: float = 10.0,
        error_holdoff_s: float = 2.0,
        keep_finished_s: float = 120.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise FieldError(
                "strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        if not isinstance(policy, GridPolicy):
            raise FieldError("policy", f"must be a GridPolicy, got {type(policy).__name__}")
        for name, v in (
            ("queue_timeout_s", queue_timeout_s),
            ("stall_timeout_s", stall_timeout_s),
            ("keep_finished_s", keep_finished_s),
        ):
            if not 0 <= v <= 86_400:
                raise FieldError(name, f"must be in [0, 86400], got {v!r}")
        self.policy = policy
        self.strategy: Strategy = strategy
        self.audit = audit if audit is not None else AuditLog()
        self.meter = meter if meter is not None else Meter()
        self.emulate_network = emulate_network
        self.queue_timeout_s = queue_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.keep_finished_s = keep_finished_s
        self.registry = Registry(
            sites,
            kpm_period_ms=kpm_period_ms,
            stale_after_s=policy.stale_after_s,
            error_holdoff_s=error_holdoff_s,
            on_down=self._site_down,
        )
        self._jobs: dict[str, _Job] = {}
        self._order: deque[tuple[str, Generation]] = deque()
        self._turn = 0
        self.decision_ns: deque[int] = deque(maxlen=200_000)
        self.stats: dict[str, int] = {
            "requests": 0,  # admitted
            "refused": 0,
            "completed": 0,
            "cancelled": 0,
            "failed": 0,  # admitted, then lost (no site left)
            "failovers": 0,
            "duplicate_tokens_dropped": 0,
            "joined": 0,
        }

    # -- lifetime ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.registry.start()

    async def stop(self) -> None:
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.registry.stop()

    def set_policy(self, policy: GridPolicy) -> None:
        """Replace the policy (whole; validated already as a :class:`GridPolicy`)."""
        if not isinstance(policy, GridPolicy):
            raise FieldError("policy", f"must be a GridPolicy, got {type(policy).__name__}")
        self.policy = policy
        self.registry.stale_after_s = policy.stale_after_s

    # -- placement -------------------------------------------------------------------
    def _decide(self, d: Demand) -> Placement:
        t0 = time.perf_counter_ns()
        views = self.registry.views()
        if self.strategy == "score":
            p = place(d, self.policy, views)
        elif self.strategy == "round-robin":
            p = place_round_robin(d, self.policy, views, self._turn)
            self._turn += 1
        else:
            p = place_nearest(d, self.policy, views)
        self.decision_ns.append(time.perf_counter_ns() - t0)
        return p

    async def _place(self, d: Demand, spec: GenerateSpec, attempt: int) -> tuple[Placement, str]:
        """Place ``d``, waiting while only capacity stands in the way; audit it."""
        t0 = time.monotonic()
        while True:
            p = self._decide(d)
            if p.chosen is not None or not p.filtered:
                break
            blockers = p.reasons() - {"residency", "no-route", "excluded"}
            if not blockers or not blockers <= _CAPACITY:
                break
            if time.monotonic() - t0 >= self.queue_timeout_s:
                break
            await asyncio.sleep(0.005)
        did = self.audit.write(
            "placement",
            {
                "request_id": spec.request_id,
                "tenant": spec.tenant,
                "attempt": attempt,
                "strategy": self.strategy,
                "user_area": d.user_area,
                "prompt_tokens": d.prompt_tokens,
                "new_tokens": d.new_tokens,
                "deadline_ms": d.deadline_ms,
                "cost_cap": d.cost_cap,
                "waited_ms": round((time.monotonic() - t0) * 1000.0, 3),
                "chosen": p.chosen,
                "candidates": [
                    {
                        "site": c.site,
                        "score": _num(c.score),
                        "latency_ms": _num(c.latency_ms),
                        "cost": c.cost,
                        "headroom": c.headroom,
                        "terms": {
                            "latency": _num(c.terms[0]),
                            "cost": c.terms[1],
                            "power": c.terms[2],
                            "miss_penalty": c.terms[3],
                        },
                    }
                    for c in p.candidates
                ],
                "filtered": p.filtered,
            },
        )
        return p, did

    def _no_site(self, p: Placement, spec: GenerateSpec) -> InferenceError:
        blockers = p.reasons()
        if blockers and blockers - {"residency", "no-route", "excluded"} <= _CAPACITY:
            return InferenceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "capacity",
                "request",
                f"every site that may serve it is full (waited {self.queue_timeout_s} s): "
                + "; ".join(f"{k}: {v}" for k, v in sorted(p.filtered.items())),
            )
        return InferenceError(
            grpc.StatusCode.UNAVAILABLE,
            "no-site",
            "request",
            "no site can serve it now: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(p.filtered.items())),
        )

    # -- the API -----------------------------------------------------------------------
    async def open(self, spec: GenerateSpec) -> tuple[_Job, bool]:
        """Admit and place ``spec`` (or join the request with its id); raises
        :class:`InferenceError` for a refusal (nothing runs then)."""
        self._expire()
        old = self._jobs.get(spec.request_id)
        if old is not None:
            if not old.spec.same_work(spec):
                raise self._refuse(
                    spec,
                    InferenceError(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "duplicate",
                        "request_id",
                        f"{spec.request_id!r} is the id of another request (a different "
                        "tenant, prompt or length)",
                    ),
                )
            k = len(spec.resume)
            if len(old.gen.tokens) >= k and old.gen.tokens[:k] != list(spec.resume):
                raise self._refuse(
                    spec,
                    InferenceError.bad(
                        "resume_tokens", "differ from the tokens this request produced"
                    ),
                )
            self.stats["joined"] += 1
            return old, True
        try:
            d = demand(
                self.policy,
                spec.tenant,
                len(spec.prompt),
                spec.max_new_tokens - len(spec.resume),
                spec.user_area,
                spec.total_ms,
                spec.cost_cap,
            )
            vocab, ctx = self.registry.model_limits()
            if vocab:
                spec.check_model(vocab, ctx)
            precheck(d, self.policy, self.registry.views())
        except Refused as exc:
            raise self._refuse(
                spec, InferenceError(_code(exc.status), exc.refusal, exc.field, exc.reason)
            ) from None
        except InferenceError as exc:
            raise self._refuse(spec, exc) from None
        gen = Generation(spec, "grid")
        job = _Job(spec, gen)
        self._jobs[spec.request_id] = job  # a join while it is being placed waits for it
        self._order.append((spec.request_id, gen))
        try:
            p, did = await self._place(d, spec, 0)
        except BaseException:
            del self._jobs[spec.request_id]
            gen.fail(
                InferenceError(grpc.StatusCode.UNAVAILABLE, "no-site", "request", "not placed")
            )
            raise
        if p.chosen is None:
            del self._jobs[spec.request_id]
            refusal = self._no_site(p, spec)
            gen.fail(refusal)  # a join made while it waited for room ends with it
            raise self._refuse(spec, refusal, audited=did)
        best = next((c for c in p.candidates if c.site == p.chosen), None)
        job.site = p.chosen
        job.decision_id = did
        if best is not None:
            job.predicted_latency_ms = _num(best.latency_ms)
            job.predicted_cost = best.cost
        self.stats["requests"] += 1
        job.task = asyncio.get_running_loop().create_task(self._drive(job, p.chosen))
        return job, False

    def _refuse(self, spec: GenerateSpec, exc: InferenceError, audited: str = "") -> InferenceError:
        self.stats["refused"] += 1
        self.audit.write(
            "refusal",
            {
                "request_id": spec.request_id,
                "tenant": spec.tenant,
                "user_area": spec.user_area,
                "status": exc.code.name,
                "refusal": exc.refusal,
                "field": exc.field,
                "reason": exc.reason,
                "decision": audited or None,
            },
        )
        return exc

    async def stream(
        self, job: _Job, start: int, joined: bool
    ) -> AsyncIterator[infer_pb2.GenerateEvent]:
        """The client's events from token ``start``: admission, tokens, done. The last
        reader leaving a running request cancels it."""
        gen = job.gen
        gen.add_reader()
        try:
            yield admission_event(
                job.site,
                start,
                joined,
                job.predicted_latency_ms,
                job.predicted_cost,
                job.decision_id,
            )
            async for pos, chunk in gen.aread(start):
                for a, b, site in _split(job.sites_at, pos, pos + len(chunk)):
                    yield tokens_event(a, chunk[a - pos : b - pos], site)
        finally:
            if gen.drop_reader() == 0 and not gen.ended:
                self._cancel_job(job)
        assert gen.finished is not None
        yield done_event(gen.finished)

    async def cancel(self, request_id: str, tenant: str) -> bool:
        """Cancel a running request; ``False`` if it had ended."""
        job = self._jobs.get(request_id)
        if job is None:
            raise InferenceError(
                grpc.StatusCode.NOT_FOUND,
                "unknown-request",
                "request_id",
                f"no running or recent request {request_id!r}",
            )
        if job.spec.tenant != tenant:
            raise InferenceError(
                grpc.StatusCode.PERMISSION_DENIED,
                "unknown-request",
                "tenant",
                f"request {request_id!r} is not tenant {tenant!r}'s",
            )
        if job.gen.ended or job.cancelled:
            return False
        self._cancel_job(job)
        return True

    def _cancel_job(self, job: _Job) -> None:
        job.cancelled = True
        if job.call is not None:
            job.abandoned = "cancelled by the client"
            job.call.cancel()

    def _site_down(self, site: str, reason: str) -> None:
        """The registry saw ``site`` go down: move the requests running there."""
        for job in self._jobs.values():
            if job.site == site and job.call is not None and not job.gen.ended:
                job.abandoned = reason
                job.call.cancel()

    def _expire(self) -> None:
        expire_ended(self._order, self._jobs, self.keep_finished_s)

    # -- one request's life ------------------------------------------------------------
    async def _drive(self, job: _Job, site: str) -> None:
        spec = job.spec
        try:
            while True:
                if job.cancelled:  # before it reached a site
                    self.stats["cancelled"] += 1
                    job.gen.finish(
                        Finished(
                            REASON_CANCELLED, len(job.gen.tokens), job.device_us, "", job.attempt
                        )
                    )
                    return
                done, reason = await self._attempt(job, site)
                if done is not None:
                    job.device_us += done.device_us
                    self.meter.ended(spec.tenant, site, done.device_us, True)
                    self.stats["cancelled" if done.reason == REASON_CANCELLED else "completed"] += 1
                    gen = job.gen
                    gen.finish(
                        Finished(
                            done.reason,
                            len(gen.tokens),
                            job.device_us,
                            site,
                            job.attempt,
                            (gen.first_token_ns - gen.created_ns) / 1e6
                            if gen.first_token_ns >= 0
                            else 0.0,
                            (time.perf_counter_ns() - gen.created_ns) / 1e6,
                        )
                    )
                    return
                self.meter.ended(spec.tenant, site, None, False)
                if job.cancelled:
                    self.stats["cancelled"] += 1
                    job.gen.finish(
                        Finished(
                            REASON_CANCELLED, len(job.gen.tokens), job.device_us, site, job.attempt
                        )
                    )
                    return
                self.registry.mark_error(site, reason)
                job.failed.add(site)
                job.attempt += 1
                self.stats["failovers"] += 1
                self.audit.write(
                    "failover",
                    {
                        "request_id": spec.request_id,
                        "tenant": spec.tenant,
                        "from": site,
                        "reason": reason,
                        "attempt": job.attempt,
                        "resume_from": len(job.gen.tokens),
                    },
                )
                if job.attempt > self.policy.max_failovers:
                    raise InferenceError(
                        grpc.StatusCode.UNAVAILABLE,
                        "no-site",
                        "request",
                        f"failed on {job.attempt} sites ({', '.join(sorted(job.failed))}); "
                        f"max_failovers is {self.policy.max_failovers}",
                    )
                d = demand(
                    self.policy,
                    spec.tenant,
                    len(spec.prompt),
                    spec.max_new_tokens - len(job.gen.tokens),
                    spec.user_area,
                    spec.total_ms,
                    spec.cost_cap,
                    job.failed,
                )
                p, _ = await self._place(d, spec, job.attempt)
                if p.chosen is None:
                    raise self._no_site(p, spec)
                site = p.chosen
        except InferenceError as exc:
            self.stats["failed"] += 1
            job.gen.fail(exc)
        except asyncio.CancelledError:
            job.gen.fail(
                InferenceError(
                    grpc.StatusCode.UNAVAILABLE, "no-site", "request", "the router stopped"
                )
            )
            raise
        except Exception as exc:  # a defect: the client gets an error, not a hang
            log.exception("request %s", spec.request_id)
            self.stats["failed"] += 1
            job.gen.fail(
                InferenceError(
                    grpc.StatusCode.INTERNAL, "error", "request", f"{type(exc).__name__}: {exc}"
                )
            )

    async def _attempt(self, job: _Job, site: str) -> tuple[Finished | None, str]:
        """Run ``job`` on ``site`` from its last token: the site's ``Done``, or ``None`` and
        why the attempt failed."""
        st = self.registry.sites[site]
        spec = job.spec
        st.live.inflight += 1
        st.placed += 1
        self.meter.attempt(spec.tenant, site)
        job.site = site
        job.abandoned = ""
        job.sites_at.append((len(job.gen.tokens), site))
        resume = spec.resumed(job.gen.tokens)
        req = resume.to_pb()
        job.node_rid = (
            spec.request_id if job.attempt == 0 else f"{spec.request_id[:100]}:f{job.attempt}"
        )
        req.request_id = job.node_rid
        try:
            if self.emulate_network:
                rtt = st.facts.latency_ms.get(spec.user_area, 0.0)
                await asyncio.sleep(rtt / 1000.0)
            if job.cancelled:
                return None, "cancelled by the client"
            assert st.client is not None
            job.call = st.client.generate_call(req)
            return await self._relay(job, job.call, len(resume.resume)), ""
        except asyncio.CancelledError:
            if not job.abandoned:
                raise
            return None, job.abandoned
        except TimeoutError:
            return None, f"no token for {self.stall_timeout_s} s"
        except grpc.RpcError as err:
            if job.abandoned:
                return None, job.abandoned
            if err.code() in _REQUEST_ERRORS:  # the site refused the request, not failed
                raise InferenceError.from_rpc_error(err) from None
            return None, f"{err.code().name}: {err.details()}"
        except _StreamError as exc:
            return None, str(exc)
        finally:
            job.call = None
            st.live.inflight -= 1

    async def _relay(self, job: _Job, call: Any, resume_from: int) -> Finished:
        gen = job.gen
        tenant = job.spec.tenant
        while True:
            ev = await asyncio.wait_for(call.read(), self.stall_timeout_s)
            if ev is _EOF:
                raise _StreamError("the site's stream ended without a done event")
            which = ev.WhichOneof("event")
            if which == "tokens":
                got = 0
                base = ev.tokens.start_index
                for i, tok in enumerate(ev.tokens.tokens, start=base):
                    n = len(gen.tokens)
                    if i < n:
                        if gen.tokens[i] != tok:
                            raise _StreamError(
                                f"token {i} is {tok} here but {gen.tokens[i]} was delivered"
                            )
                        self.stats["duplicate_tokens_dropped"] += 1
                        continue
                    if i > n:
                        raise _StreamError(f"token {i} came before token {n}")
                    gen.append(i, tok)
                    got += 1
                if got:
                    self.meter.tokens(tenant, job.site, got)
            elif which == "done":
                return Finished.from_pb(ev.done)
            elif which == "admission" and ev.admission.resume_from != resume_from:
                raise _StreamError(
                    f"the site resumes from {ev.admission.resume_from}, not {resume_from}"
                )

    # -- status ------------------------------------------------------------------------
    def status(self) -> infer_pb2.GetStatusResponse:
        vocab, ctx = self.registry.model_limits()
        views = self.registry.views()
        return infer_pb2.GetStatusResponse(
            site="grid",
            model_digest=self.registry.digest,
            vocab_size=vocab,
            max_context=ctx,
            tenants=sorted(self.policy.tenants),
            queue_depth=sum(1 for j in self._jobs.values() if not j.gen.ended),
            counters=[
                infer_pb2.TenantCounters(
                    tenant=r.tenant,
                    site=r.site,
                    requests=r.requests,
                    tokens=r.tokens,
                    device_us=r.device_us,
                )
                for r in self.meter.rows()
            ],
            sites=[
                infer_pb2.SiteStatus(
                    site=v.site_id,
                    jurisdiction=v.facts.jurisdiction,
                    healthy=v.live.healthy,
                    reason=v.live.reason,
                    inflight=v.live.inflight,
                    ai_slack_ms_per_s=v.live.ai_slack_ms_per_s,
                    deadline_met_ratio=v.live.deadline_met_ratio,
                    tokens_per_s=v.live.tokens_per_s,
                    queue_depth=v.live.queue_depth,
                )
                for v in views
            ],
        )

    def decision_us(self) -> dict[str, float]:
        """Placement decision time (µs): p50, p99, max, count."""
        d = sorted(self.decision_ns)
        if not d:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
        n = len(d)
        return {
            "p50": d[n // 2] / 1000.0,
            "p99": d[min(n - 1, int(n * 0.99))] / 1000.0,
            "max": d[-1] / 1000.0,
            "count": n,
        }

    def site_load(self) -> dict[str, int]:
        """Attempts placed on each site so far."""
        return {k: s.placed for k, s in sorted(self.registry.sites.items())}


def _num(x: float) -> float:
    """JSON has no infinity: a large finite stand-in."""
    return x if math.isfinite(x) else 1e300


def _split(sites_at: list[tuple[int, str]], a: int, b: int) -> list[tuple[int, int, str]]:
    """Cut the token range [a, b) where the producing site changes."""
    out: list[tuple[int, int, str]] = []
    for i, (start, site) in enumerate(sites_at):
        end = sites_at[i + 1][0] if i + 1 < len(sites_at) else math.inf
        lo, hi = max(a, start), min(b, end)
        if lo < hi:
            out.append((lo, int(hi), site))
    if not out:
        out.append((a, b, sites_at[-1][1] if sites_at else ""))
    return out


# ----------------------------------------------------------------------------- serving


class _RouterServicer(infer_pb2_grpc.InferenceServicer):
    def __init__(self, router: GridRouter) -> None:
        self.router = router

    async def Generate(
        self, request: infer_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[infer_pb2.GenerateEvent]:
        try:
            spec = spec_from_pb(request)
            job, joined = await self.router.open(spec)
        except InferenceError as exc:
            await context.abort(exc.code, str(exc), exc.trailers())
        try:
            async for ev in self.router.stream(job, len(spec.resume), joined):
                yield ev
        except InferenceError as exc:
            await context.abort(exc.code, str(exc), exc.trailers())

    async def Cancel(
        self, request: infer_pb2.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> infer_pb2.CancelResponse:
        try:
            ok = await self.router.cancel(request.request_id, request.tenant)
        except InferenceError as exc:
            await context.abort(exc.code, str(exc), exc.trailers())
        return infer_pb2.CancelResponse(cancelled=ok)

    async def GetStatus(
        self, request: infer_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> infer_pb2.GetStatusResponse:
        return self.router.status()


class RouterServer:
    """A :class:`GridRouter` behind the inference API on a port, on an event-loop thread
    of its own (:func:`serve_router`)."""

    def __init__(
        self,
        router: GridRouter,
        server: grpc.aio.Server,
        loop: EventLoopThread,
        host: str,
        port: int,
    ) -> None:
        self.router = router
        self.server = server
        self.loop = loop
        self.host = host
        self.port = port

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def call(self, fn: Callable[[], _T], timeout_s: float | None = 30.0) -> _T:
        """Run ``fn()`` on the router's loop (to read or change it safely)."""
        return self.loop.call(fn, timeout_s)

    def wait_ready(self, timeout_s: float = 30.0, sites: int | None = None) -> None:
        """Until the sites (all, or ``sites`` of them) report healthy."""
        self.loop.run(self.router.registry.wait_ready(timeout_s, sites), timeout_s + 5.0)

    def stop(self, grace_s: float = 1.0) -> None:
        if self.loop.loop.is_closed():
            return

        async def down() -> None:
            await self.server.stop(grace_s)
            await self.router.stop()

        try:
            self.loop.run(down(), grace_s + 10.0)
        finally:
            self.loop.stop()

    def __enter__(self) -> RouterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_router(
    sites: Sequence[SiteFacts],
    policy: GridPolicy,
    port: int = 0,
    host: str = "127.0.0.1",
    security: ServerSecurity | None = None,
    **router_kwargs: Any,
) -> RouterServer:
    """Start a :class:`GridRouter` (``router_kwargs``: its options) serving the inference
    API on ``host:port`` (``0``: any free port)."""
    lt = EventLoopThread("airan-grid-router")
    try:

        async def start() -> tuple[GridRouter, grpc.aio.Server, int]:
            router = GridRouter(sites, policy, **router_kwargs)
            servicer = _RouterServicer(router)
            reg = ServiceRegistration(
                service=INFER_SERVICE,
                add_to_server=lambda s: infer_pb2_grpc.add_InferenceServicer_to_server(servicer, s),
                add_to_aio_server=lambda s: infer_pb2_grpc.add_InferenceServicer_to_server(
                    servicer, s
                ),
            )
            server, bound = await build_aio_server(port, security, [reg], host=host)
            await router.start()
            await server.start()
            return router, server, bound

        router, server, bound = lt.run(start(), 30.0)
    except BaseException:
        lt.stop()
        raise
    return RouterServer(router, server, lt, host, bound)


def main(argv: list[str] | None = None) -> None:
    """``python -m airan.grid.router --config grid.json``: serve a router whose config is
    ``{"sites": [SiteFacts...], "policy": GridPolicy, "strategy": "score", ...}``."""
    ap = argparse.ArgumentParser(prog="python -m airan.grid.router", description=main.__doc__)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--audit", type=Path, help="JSON Lines audit log (appended)")
    ns = ap.parse_args(argv)
    try:
        raw = json.loads(ns.config.read_text())
        sites = [SiteFacts.parse(s, where=f"sites.{i}") for i, s in enumerate(raw["sites"])]
        policy = GridPolicy.parse(raw["policy"])
        strategy = raw.get("strategy", "score")
        srv = serve_router(
            sites,
            policy,
            ns.port,
            strategy=strategy,
            audit=AuditLog(ns.audit) if ns.audit else None,
            emulate_network=bool(raw.get("emulate_network", False)),
        )
    except (OSError, KeyError, json.JSONDecodeError, FieldError) as exc:
        raise SystemExit(f"--config: {exc}") from None
    print(json.dumps({"target": srv.target}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

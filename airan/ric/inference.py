"""Inference on a node: the ``airan.infer.v1.Inference`` gRPC service, its host and clients.

A node serves generation requests through its AI tenants, under its arbiter (radio
first): :class:`InferenceHost` gives each tenant a :class:`~airan.ai.engine.DecoderEngine`
over one shared :class:`~airan.ai.model.TransformerDecoder` and adds it to the node's
arbiter as that tenant's :class:`~airan.core.slices.AiJob`. The engine's slices run when
and only when the arbiter admits them; its tokens are the model's real greedy output,
streamed to readers as soon as the slice that computes them has run.

Threads. gRPC handlers (any thread, or the asyncio loop of a ``grpc.aio`` server) never
touch an engine: a submit or a cancel goes into the tenant's mailbox, which the arbiter's
loop drains the next time it asks the tenant for a slice; tokens come back through a
:class:`Generation`, which any number of readers (threads or coroutines) follow.

Device time. The arbiter measures each AI slice's device time per job (``AiJob.busy_ns``,
``AiJob.slices_done``). Slices complete in the order they were issued, so each time the
engine is asked for a slice, the time of the slices completed since is shared among the
requests they served (equally per row: a decode step serves one row per request, a
prefill chunk one request): exact under the ``airan`` policy, where one AI slice at a
time is in flight. A request ends (its ``Done`` event) once its last slice is accounted.

Request ids are idempotency keys: a second ``Generate`` with the id of a running or
recently finished request joins it (same tenant, prompt and length) or is refused with
``ALREADY_EXISTS``; nothing is run twice.

KPM. :class:`InferenceNode` is a :class:`~airan.node.Node` whose E2SM-KPM node
measurements (O-RAN.WG3.E2SM-KPM §7.4.1, report style 1) add the inference figures the
AI grid routes by (:data:`INFER_MEASUREMENTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
import grpc.aio

from airan.ai.engine import CostModel, DecoderEngine, Request
from airan.ai.model import TransformerDecoder
from airan.core.errors import FieldError
from airan.core.policy import TENANT_NAME
from airan.core.slices import AiJob, Slice
from airan.infer.v1 import infer_pb2, infer_pb2_grpc
from airan.node import Node, NodeConfig, NodeSnapshot
from airan.ric.security import ClientSecurity
from airan.ric.server import ServiceRegistration

if TYPE_CHECKING:
    from airan.node import Measurements
    from airan.ran.du import DuWorkload
    from airan.sched.arbiter import Arbiter

__all__ = [
    "INFER_MEASUREMENTS",
    "INFER_SERVICE",
    "AsyncInferenceClient",
    "Finished",
    "GenerateSpec",
    "Generation",
    "InferenceClient",
    "InferenceError",
    "InferenceHost",
    "InferenceNode",
    "InferenceService",
    "model_digest",
]

INFER_SERVICE = "airan.infer.v1.Inference"

#: trailing metadata of a refused call
FIELD_KEY = "airan-field"
REFUSAL_KEY = "airan-refusal"

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
USER_AREA = re.compile(r"[A-Za-z0-9._:-]{0,64}")
_TENANT = re.compile(TENANT_NAME)
MAX_PROMPT = 1 << 20

#: E2SM-KPM node measurements an :class:`InferenceNode` adds (report style 1)
INFER_MEASUREMENTS: tuple[str, ...] = (
    "airan.Infer.QueueDepth",  # requests waiting or running at the period's end
    "airan.Infer.AiCapacity",  # share of device time AI may use: min(1 - RadioBusy, cap)
    "airan.Infer.AiSlackMsPerS",  # device ms per s AI may use and did not: 1000 (cap - busy)
    "airan.Infer.DeviceUsPerToken",  # AI device µs per token over the period (-1: none)
    "airan.Infer.Healthy",  # 1: the loop runs and no tenant's job failed
    "airan.Infer.PacingLagMs",  # simulated device: how far its clock lags the wall clock
)


# ----------------------------------------------------------------------------- errors


class InferenceError(FieldError):
    """A refused inference call: the gRPC status ``code``, a short ``refusal`` code
    (``bad-request``, ``unknown-tenant``, ``residency``, ``cost-cap``, ``duplicate``,
    ``capacity``, ``no-site``, ``unknown-request``), the offending ``field`` and the
    ``reason``."""

    def __init__(self, code: grpc.StatusCode, refusal: str, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.code = code
        self.refusal = refusal

    def trailers(self) -> tuple[tuple[str, str], ...]:
        asc = self.field.encode("ascii", "backslashreplace").decode("ascii")
        return ((FIELD_KEY, asc), (REFUSAL_KEY, self.refusal))

    @classmethod
    def bad(cls, field: str, reason: str) -> InferenceError:
        return cls(grpc.StatusCode.INVALID_ARGUMENT, "bad-request", field, reason)

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> InferenceError:
        """Decode a failed call (status, details and the trailers above)."""
        code_fn = getattr(err, "code", None)
        code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
        details_fn = getattr(err, "details", None)
        details = (details_fn() if callable(details_fn) else None) or str(err)
        md_fn = getattr(err, "trailing_metadata", None)
        md = (md_fn() if callable(md_fn) else None) or ()
        fld, refusal = "", "error"
        for key, value in md:
            if key == FIELD_KEY and isinstance(value, str):
                fld = value
            elif key == REFUSAL_KEY and isinstance(value, str):
                refusal = value
        reason = details
        if fld and details.startswith(f"{fld}: "):
            reason = details[len(fld) + 2 :]
        return cls(code, refusal, fld or "call", reason)


# ----------------------------------------------------------------------------- requests


def _finite(name: str, v: float, *, positive: bool = False) -> float:
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise InferenceError.bad(name, f"must be a finite number {'>' if positive else '>='} 0")
    return float(v)


@dataclass(frozen=True, slots=True)
class GenerateSpec:
    """A validated generation request (what ``GenerateRequest`` carries)."""

    request_id: str
    tenant: str
    prompt: tuple[int, ...]
    max_new_tokens: int
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    user_area: str = ""
    cost_cap: float | None = None
    resume: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not REQUEST_ID.fullmatch(self.request_id):
            raise InferenceError.bad(
                "request_id", f"must be 1 to 128 of [A-Za-z0-9._:-], got {self.request_id!r}"
            )
        if not isinstance(self.tenant, str) or not _TENANT.fullmatch(self.tenant):
            raise InferenceError.bad(
                "tenant", f"must be 1 to 64 of [A-Za-z0-9._:-], got {self.tenant!r}"
            )
        if not self.prompt:
            raise InferenceError.bad("prompt", "must hold at least one token")
        if len(self.prompt) > MAX_PROMPT:
            raise InferenceError.bad("prompt", f"holds more than {MAX_PROMPT} tokens")
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.prompt):
            raise InferenceError.bad("prompt", "token ids must be integers >= 0")
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InferenceError.bad("max_new_tokens", f"must be an integer >= 1, got {n!r}")
        _finite("slo.ttft_ms", self.ttft_ms)
        _finite("slo.total_ms", self.total_ms)
        if self.ttft_ms and self.total_ms and self.total_ms < self.ttft_ms:
            raise InferenceError.bad(
                "slo.total_ms", f"({self.total_ms}) must be >= slo.ttft_ms ({self.ttft_ms})"
            )
        if not isinstance(self.user_area, str) or not USER_AREA.fullmatch(self.user_area):
            raise InferenceError.bad(
                "user_area", f"must be 0 to 64 of [A-Za-z0-9._:-], got {self.user_area!r}"
            )
        if self.cost_cap is not None:
            _finite("cost_cap", self.cost_cap)
        if len(self.resume) >= n:
            raise InferenceError.bad(
                "resume_tokens",
                f"{len(self.resume)} tokens already delivered: must be fewer than "
                f"max_new_tokens ({n})",
            )
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.resume):
            raise InferenceError.bad("resume_tokens", "token ids must be integers >= 0")

    def check_model(self, vocab_size: int, max_context: int) -> None:
        """Refuse tokens outside the vocabulary and requests longer than the context."""
        for name, toks in (("prompt", self.prompt), ("resume_tokens", self.resume)):
            bad = next((t for t in toks if t >= vocab_size), None)
            if bad is not None:
                raise InferenceError.bad(name, f"token {bad} is not in [0, {vocab_size})")
        if len(self.prompt) + self.max_new_tokens > max_context:
            raise InferenceError.bad(
                "max_new_tokens",
                f"{len(self.prompt)} prompt tokens + {self.max_new_tokens} new tokens exceed "
                f"the model's context of {max_context} tokens",
            )

    def same_work(self, other: GenerateSpec) -> bool:
        """Whether ``other`` asks for the same answer (a join, not a conflict)."""
        return (
            self.tenant == other.tenant
            and self.prompt == other.prompt
            and self.max_new_tokens == other.max_new_tokens
        )

    def resumed(self, tokens: Sequence[int]) -> GenerateSpec:
        """The same request, resumed after ``tokens`` (already delivered)."""
        return GenerateSpec(
            self.request_id,
            self.tenant,
            self.prompt,
            self.max_new_tokens,
            self.ttft_ms,
            self.total_ms,
            self.user_area,
            self.cost_cap,
            tuple(tokens),
        )

    @classmethod
    def from_pb(cls, pb: infer_pb2.GenerateRequest) -> GenerateSpec:
        return cls(
            request_id=pb.request_id,
            tenant=pb.tenant,
            prompt=tuple(pb.prompt),
            max_new_tokens=pb.max_new_tokens,
            ttft_ms=pb.slo.ttft_ms,
            total_ms=pb.slo.total_ms,
            user_area=pb.user_area,
            cost_cap=pb.cost_cap if pb.HasField("cost_cap") else None,
            resume=tuple(pb.resume_tokens),
        )

    def to_pb(self) -> infer_pb2.GenerateRequest:
        pb = infer_pb2.GenerateRequest(
            request_id=self.request_id,
            tenant=self.tenant,
            prompt=self.prompt,
            max_new_tokens=self.max_new_tokens,
            slo=infer_pb2.Slo(ttft_ms=self.ttft_ms, total_ms=self.total_ms),
            user_area=self.user_area,
            resume_tokens=self.resume,
        )
        if self.cost_cap is not None:
            pb.cost_cap = self.cost_cap
        return pb


def spec_from_pb(pb: infer_pb2.GenerateRequest) -> GenerateSpec:
    """:meth:`GenerateSpec.from_pb` that turns any malformed field into a refusal."""
    try:
        return GenerateSpec.from_pb(pb)
    except InferenceError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. a negative int32 token
        raise InferenceError.bad("request", str(exc)) from None


# ----------------------------------------------------------------------------- streams

REASON_LENGTH = "length"
REASON_CANCELLED = "cancelled"
_REASON_PB = {
    REASON_LENGTH: infer_pb2.FINISH_REASON_LENGTH,
    REASON_CANCELLED: infer_pb2.FINISH_REASON_CANCELLED,
}
_REASON_NAME = {v: k for k, v in _REASON_PB.items()}


@dataclass(frozen=True, slots=True)
class Finished:
    """How a stream ended (its ``Done`` event)."""

    reason: str  # "length" | "cancelled"
    tokens: int
    device_us: float
    site: str
    failovers: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0

    def to_pb(self) -> infer_pb2.Done:
        return infer_pb2.Done(
            reason=_REASON_PB.get(self.reason, infer_pb2.FINISH_REASON_UNSPECIFIED),
            tokens=self.tokens,
            device_us=self.device_us,
            site=self.site,
            failovers=self.failovers,
            ttft_ms=self.ttft_ms,
            total_ms=self.total_ms,
        )

    @classmethod
    def from_pb(cls, pb: infer_pb2.Done) -> Finished:
        return cls(
            _REASON_NAME.get(pb.reason, "unspecified"),
            pb.tokens,
            pb.device_us,
            pb.site,
            pb.failovers,
            pb.ttft_ms,
            pb.total_ms,
        )


class Generation:
    """The answer of one request as it grows, for any number of readers.

    ``tokens`` is the whole answer so far (the resumed prefix first); :meth:`append`
    adds the next token (a token at an index already held is a duplicate and ignored);
    :meth:`finish` ends it, :meth:`fail` ends it with an error. Readers follow it from
    any index with :meth:`read` (a thread) or :meth:`aread` (a coroutine), and get every
    token from there exactly once, in order."""

    def __init__(self, spec: GenerateSpec, site: str = "") -> None:
        self.spec = spec
        self.site = site
        self.tokens: list[int] = list(spec.resume)
        self.start = len(spec.resume)
        self.created_ns = time.perf_counter_ns()
        self.first_token_ns = -1
        self.finished: Finished | None = None
        self.error: InferenceError | None = None
        self.finished_at = 0.0  # time.monotonic() of the end
        self.readers = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def ended(self) -> bool:
        return self.finished is not None or self.error is not None

    def append(self, index: int, token: int) -> bool:
        """Token number ``index`` of the answer; ``False`` if it was already held."""
        with self._cond:
            if self.ended or index < len(self.tokens):
                return False
            if index > len(self.tokens):
                raise FieldError(
                    "index", f"token {index} arrived before token {len(self.tokens)} (a gap)"
                )
            self.tokens.append(token)
            if self.first_token_ns < 0:
                self.first_token_ns = time.perf_counter_ns()
            self._notify()
        return True

    def finish(self, how: Finished) -> None:
        with self._cond:
            if self.ended:
                return
            self.finished = how
            self.finished_at = time.monotonic()
            self._notify()

    def fail(self, error: InferenceError) -> None:
        with self._cond:
            if self.ended:
                return
            self.error = error
            self.finished_at = time.monotonic()
            self._notify()

    def _notify(self) -> None:  # under the lock
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, ev in waiters:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                ev.set()
            else:
                with contextlib.suppress(RuntimeError):  # a closed loop has no reader left
                    loop.call_soon_threadsafe(ev.set)

    def add_reader(self) -> None:
        with self._cond:
            self.readers += 1

    def drop_reader(self) -> int:
        """One reader fewer; returns how many are left."""
        with self._cond:
            self.readers -= 1
            return self.readers

    def _take(self, pos: int) -> tuple[list[int], bool]:  # under the lock
        return self.tokens[pos:], self.ended

    def read(
        self, start: int | None = None, timeout_s: float | None = None
    ) -> Iterator[tuple[int, list[int]]]:
        """``(index, tokens)`` chunks from token ``start`` (default: the first new one)
        until the end; raises the error of a failed generation, and :class:`TimeoutError`
        if nothing new comes for ``timeout_s``."""
        pos = self.start if start is None else start
        while True:
            with self._cond:
                chunk, ended = self._take(pos)
                if not chunk and not ended:
                    if not self._cond.wait(timeout_s):
                        raise TimeoutError(f"no token for {timeout_s} s")
                    continue
            if chunk:
                yield pos, chunk
                pos += len(chunk)
                continue
            if self.error is not None:
                raise self.error
            return

    async def aread(self, start: int | None = None) -> AsyncIterator[tuple[int, list[int]]]:
        """:meth:`read` for a coroutine (on the caller's running loop)."""
        pos = self.start if start is None else start
        loop = asyncio.get_running_loop()
        while True:
            ev: asyncio.Event | None = None
            with self._cond:
                chunk, ended = self._take(pos)
                if not chunk and not ended:
                    ev = asyncio.Event()
                    self._waiters.append((loop, ev))
            if ev is not None:
                await ev.wait()
                continue
            if chunk:
                yield pos, chunk
                pos += len(chunk)
                continue
            if self.error is not None:
                raise self.error
            return


def expire_ended(
    order: deque[tuple[str, Generation]], table: dict[str, Any], keep_s: float
) -> None:
    """Drop from ``table`` (request id -> entry holding the generation) the requests of
    ``order`` (oldest first) that ended more than ``keep_s`` ago; stops at the first one
    still running or recent."""
    cutoff = time.monotonic() - keep_s
    while order:
        rid, gen = order[0]
        if not gen.ended or gen.finished_at >= cutoff:
            return
        order.popleft()
        entry = table.get(rid)
        held = entry[0] if isinstance(entry, tuple) else getattr(entry, "gen", None)
        if held is gen:
            del table[rid]


# ----------------------------------------------------------------------------- the host


def model_digest(model: TransformerDecoder) -> str:
    """SHA-256 over the model's architecture and weights (hex): sites that agree on it
    compute the same greedy tokens, so a request can move between them."""
    import numpy as np

    h = hashlib.sha256()
    cfg = model.cfg
    h.update(repr([(f, getattr(cfg, f)) for f in ("vocab_size", "d_model", "n_heads")]).encode())
    h.update(repr([(f, getattr(cfg, f)) for f in ("n_layers", "d_ff", "norm_eps")]).encode())
    h.update(cfg.dtype.encode())
    for name, w in sorted(model.weights().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(w.get() if hasattr(w, "get") else w)).tobytes())
    return h.hexdigest()


@dataclass(slots=True)
class TenantCounters:
    """Cumulative per-tenant figures of a node (device time in ns)."""

    requests: int = 0
    tokens: int = 0
    device_ns: float = 0.0


@dataclass(eq=False)
class _Live:
    """A request in an engine: its generation, device time so far, slices not yet
    accounted."""

    gen: Generation
    req: Request | None = None
    offset: int = 0  # answer index of the engine request's generated[0]
    device_ns: float = 0.0
    outstanding: int = 0
    cancel: bool = False


class _TenantSource:
    """One tenant's engine as the slice source of its :class:`AiJob` (see the module
    docstring: mailbox in, device-time accounting, ``Done`` once accounted)."""

    def __init__(self, host: InferenceHost, tenant: str, engine: DecoderEngine) -> None:
        self.host = host
        self.tenant = tenant
        self.engine = engine
        engine.on_token = self._on_token
        self.job: AiJob | None = None
        self.inbox: deque[tuple[str, _Live]] = deque()
        self._live: dict[int, _Live] = {}  # engine request id -> live (running)
        self._offered: tuple[Slice, tuple[_Live, ...]] | None = None
        self._pending: deque[tuple[int, tuple[_Live, ...]]] = deque()  # issued, unaccounted
        self._seen_busy = 0
        self._seen_slices = 0

    # -- the AiJob's source --------------------------------------------------------
    @property
    def done(self) -> bool:
        """Never: ``next_slice`` returning ``None`` means "nothing now"; the job serves
        until the node stops."""
        return False

    def next_slice(self) -> Slice | None:
        if self._offered is not None:  # the arbiter took it (a refusal clears it first)
            taken, lives = self._offered
            self._offered = None
            for lv in lives:
                lv.outstanding += 1
            self._pending.append((taken.bound_ns, lives))
        self._drain()
        self._account()
        s = self.engine.next_slice()
        if s is not None:
            off = self.engine.last_offered
            reqs = off[1] if off is not None and off[0] is s else ()
            found = (self._live.get(r.request_id) for r in reqs)
            self._offered = (s, tuple(lv for lv in found if lv is not None))
        self._finish_ended()
        return s

    def refused(self, s: Slice) -> None:
        if self._offered is not None and self._offered[0] is s:
            self._offered = None
        self.engine.refused(s)

    # -- on the arbiter's thread ------------------------------------------------------
    def _drain(self) -> None:
        while self.inbox:
            what, lv = self.inbox.popleft()
            if what == "submit":
                spec = lv.gen.spec
                try:
                    r = self.engine.submit(
                        spec.prompt + spec.resume, spec.max_new_tokens - len(spec.resume)
                    )
                except FieldError as exc:  # validated before; a defect if it happens
                    lv.gen.fail(InferenceError.bad(exc.field, exc.reason))
                    continue
                lv.req = r
                lv.offset = len(spec.resume)
                self._live[r.request_id] = lv
                if lv.cancel:
                    self.engine.cancel(r)
            elif lv.req is not None:  # cancel
                self.engine.cancel(lv.req)

    def _account(self) -> None:
        job = self.job
        if job is None:
            return
        busy, n = job.busy_ns, job.slices_done
        k = min(n - self._seen_slices, len(self._pending))
        if k > 0:
            done = [self._pending.popleft() for _ in range(k)]
            delta = busy - self._seen_busy
            weight = sum(b for b, _ in done) or 1
            counters = self.host.counters[self.tenant]
            for bound, lives in done:
                share = delta * bound / weight
                counters.device_ns += share
                for lv in lives:
                    lv.device_ns += share / len(lives)
                    lv.outstanding -= 1
        self._seen_busy, self._seen_slices = busy, n

    def _finish_ended(self) -> None:
        """End the requests that are done and fully accounted: finished (or cancelled),
        out of the engine's batch (a step in progress may still hold a cancelled one),
        no slice of theirs unaccounted or just offered."""
        offered = self._offered[1] if self._offered is not None else ()
        active = self.engine.active
        for rid, lv in list(self._live.items()):
            r = lv.req
            if (
                r is not None
                and r.finished
                and lv.outstanding == 0
                and lv not in offered
                and r not in active
            ):
                del self._live[rid]
                self._finish(lv)

    def _finish(self, lv: _Live) -> None:
        gen, r = lv.gen, lv.req
        assert r is not None
        now = time.perf_counter_ns()
        ttft = (gen.first_token_ns - gen.created_ns) / 1e6 if gen.first_token_ns >= 0 else 0.0
        gen.finish(
            Finished(
                REASON_CANCELLED if r.cancelled else REASON_LENGTH,
                len(gen.tokens),
                lv.device_ns / 1000.0,
                self.host.site,
                ttft_ms=ttft,
                total_ms=(now - gen.created_ns) / 1e6,
            )
        )

    def _on_token(self, r: Request, index: int, token: int) -> None:
        lv = self._live.get(r.request_id)
        if lv is None:
            return
        try:
            fresh = lv.gen.append(lv.offset + index, token)
        except FieldError as exc:  # a gap: a defect; that request fails, the node goes on
            lv.gen.fail(InferenceError(grpc.StatusCode.INTERNAL, "error", exc.field, exc.reason))
            return
        if fresh:
            self.host.counters[self.tenant].tokens += 1

    def queue_depth(self) -> int:
        return len(self.inbox) + len(self.engine.waiting) + len(self.engine.active)


class InferenceHost:
    """Serves generation requests on ``node`` through one engine per AI tenant.

    ``model``: the decoder every tenant shares (weights from a seed shared by all sites,
    so greedy answers agree across sites); ``cost``: its :class:`CostModel` (the declared
    bounds of slices the estimator has not learned); ``tenants``: the tenants served
    (default: those of the node's policy, else ``"default"``); ``max_batch``: each
    engine's batch; ``wake``: called after each submit or cancel, to wake the arbiter's
    loop early (a simulated device's ``wake``); ``keep_finished_s``: how long a finished
    request's id stays known (joins replay it; a different request with its id is
    refused).

    The node must not be running yet: the jobs join its arbiter here.
    """

    def __init__(
        self,
        node: Node,
        model: TransformerDecoder,
        cost: CostModel,
        *,
        tenants: Sequence[str] | None = None,
        max_batch: int = 8,
        wake: Callable[[], None] | None = None,
        keep_finished_s: float = 120.0,
    ) -> None:
        if node.running:
            raise FieldError("node", "must not be running: AI jobs join its arbiter first")
        names = list(tenants or node.config.policy.tenants or ["default"])
        if not names or len(set(names)) != len(names):
            raise FieldError("tenants", f"must be distinct tenant names, got {names!r}")
        for t in names:
            if not isinstance(t, str) or not _TENANT.fullmatch(t):
                raise FieldError("tenants", f"{t!r} is not a valid tenant name")
        if not 0 < keep_finished_s <= 86_400:
            raise FieldError("keep_finished_s", f"must be in (0, 86400], got {keep_finished_s}")
        self.node = node
        self.model = model
        self.cost = cost
        self.site = node.node_id
        self.max_batch = max_batch
        self.digest = model_digest(model)
        self.keep_finished_s = keep_finished_s
        self._wake = wake
        self._lock = threading.Lock()
        self._gens: dict[str, tuple[Generation, _Live, _TenantSource]] = {}
        self._order: deque[tuple[str, Generation]] = deque()
        self.counters: dict[str, TenantCounters] = {t: TenantCounters() for t in names}
        arb = node.arbiter
        self.sources: dict[str, _TenantSource] = {}
        for t in names:
            engine = DecoderEngine(
                model,
                cost,
                now=arb.executor.clock.now_ns,
                fits=arb.fits_ai_slice,
                max_batch=max_batch,
                tenant=t,
            )
            src = _TenantSource(self, t, engine)
            job = AiJob(src, tenant=t)
            src.job = job
            arb.add_job(job)
            self.sources[t] = src
        if isinstance(node, InferenceNode):
            node.inference = self

    @property
    def tenants(self) -> list[str]:
        return list(self.sources)

    def submit(self, spec: GenerateSpec) -> tuple[Generation, bool]:
        """Queue ``spec`` (or join the request with its id); returns the generation and
        whether it was joined. Raises :class:`InferenceError` (nothing queued then)."""
        src = self.sources.get(spec.tenant)
        if src is None:
            raise InferenceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "unknown-tenant",
                "tenant",
                f"unknown tenant {spec.tenant!r}; this node serves "
                f"{', '.join(sorted(self.sources))}",
            )
        cfg = self.model.cfg
        spec.check_model(cfg.vocab_size, cfg.max_context)
        if not self.node.running:
            raise InferenceError(
                grpc.StatusCode.UNAVAILABLE, "no-site", "node", "the node's loop is not running"
            )
        with self._lock:
            self._expire()
            old = self._gens.get(spec.request_id)
            if old is not None:
                gen = old[0]
                if not gen.spec.same_work(spec):
                    raise InferenceError(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "duplicate",
                        "request_id",
                        f"{spec.request_id!r} is the id of another request (a different "
                        "tenant, prompt or length)",
                    )
                k = len(spec.resume)
                if len(gen.tokens) >= k and gen.tokens[:k] != list(spec.resume):
                    raise InferenceError.bad(
                        "resume_tokens", "differ from the tokens this request produced"
                    )
                return gen, True
            gen = Generation(spec, self.site)
            lv = _Live(gen)
            self._gens[spec.request_id] = (gen, lv, src)
            self._order.append((spec.request_id, gen))
            self.counters[spec.tenant].requests += 1
            src.inbox.append(("submit", lv))
        if self._wake is not None:
            self._wake()
        return gen, False

    def cancel(self, request_id: str, tenant: str) -> bool:
        """Cancel a request; ``False`` if it had ended. :class:`InferenceError` if the id is
        unknown or the tenant is not the request's."""
        with self._lock:
            entry = self._gens.get(request_id)
            if entry is None:
                raise InferenceError(
                    grpc.StatusCode.NOT_FOUND,
                    "unknown-request",
                    "request_id",
                    f"no running or recent request {request_id!r}",
                )
            gen, lv, src = entry
            if gen.spec.tenant != tenant:
                raise InferenceError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "unknown-request",
                    "tenant",
                    f"request {request_id!r} is not tenant {tenant!r}'s",
                )
            if gen.ended or lv.cancel:
                return False
            lv.cancel = True
            src.inbox.append(("cancel", lv))
        if self._wake is not None:
            self._wake()
        return True

    def _expire(self) -> None:  # under the lock
        """Forget requests ended over ``keep_finished_s`` ago, oldest first (amortized
        O(1): it stops at the first one still running or recent)."""
        expire_ended(self._order, self._gens, self.keep_finished_s)

    def queue_depth(self) -> int:
        """Requests waiting or running, all tenants."""
        return sum(s.queue_depth() for s in self.sources.values())

    def device_us_per_token(self) -> float:
        """The cost model's device time per decoded token at full batch (a decode step of
        ``max_batch`` rows over all layers and the head, at half the context)."""
        cfg = self.model.cfg
        step = self.cost.mean_ns(self.max_batch, cfg.max_context // 2, cfg.n_layers, True)
        return step / self.max_batch / 1000.0

    def status(self) -> infer_pb2.GetStatusResponse:
        cfg = self.model.cfg
        return infer_pb2.GetStatusResponse(
            site=self.site,
            model_digest=self.digest,
            vocab_size=cfg.vocab_size,
            max_context=cfg.max_context,
            tenants=self.tenants,
            queue_depth=self.queue_depth(),
            max_batch=self.max_batch,
            device_us_per_token=self.device_us_per_token(),
            counters=[
                infer_pb2.TenantCounters(
                    tenant=t,
                    site=self.site,
                    requests=c.requests,
                    tokens=c.tokens,
                    device_us=c.device_ns / 1000.0,
                )
                for t, c in self.counters.items()
            ],
        )

    def failed_tenants(self) -> list[str]:
        """Tenants whose job ended with an error (a defect): the node is then unhealthy."""
        return [t for t, src in self.sources.items() if src.job is not None and src.job.error]

    def totals(self) -> tuple[int, float]:
        """Tokens and device ns, all tenants (cumulative)."""
        cs = list(self.counters.values())
        return sum(c.tokens for c in cs), sum(c.device_ns for c in cs)


# ----------------------------------------------------------------------------- the node


@dataclass(frozen=True, slots=True)
class InferenceSnapshot(NodeSnapshot):
    """A node snapshot with the inference counters (cumulative tokens and device ns)."""

    tokens: int = 0
    device_ns: float = 0.0
    queue_depth: int = 0
    ai_share_cap: float = 1.0
    healthy: bool = True
    lag_ns: int = 0


class InferenceNode(Node):
    """A :class:`Node` that serves inference (:attr:`inference`, set by
    :class:`InferenceHost`) and reports :data:`INFER_MEASUREMENTS` over KPM too."""

    NODE_MEASUREMENTS: ClassVar[tuple[str, ...]] = (*Node.NODE_MEASUREMENTS, *INFER_MEASUREMENTS)

    def __init__(self, config: NodeConfig, arbiter: Arbiter, du: DuWorkload) -> None:
        super().__init__(config, arbiter, du)
        self.inference: InferenceHost | None = None

    def snapshot(self) -> InferenceSnapshot:
        base = super().snapshot()
        host = self.inference
        tokens, dev = host.totals() if host is not None else (0, 0.0)
        lag = getattr(self.arbiter.executor, "lag_ns", None)
        return InferenceSnapshot(
            base.t_ns,
            base.arbiter,
            base.du,
            tokens=tokens,
            device_ns=dev,
            queue_depth=host.queue_depth() if host is not None else 0,
            ai_share_cap=self.config.policy.ai_share_cap,
            healthy=self.running and not (host is not None and host.failed_tenants()),
            lag_ns=int(lag()) if callable(lag) else 0,
        )

    @staticmethod
    def measurements(a: NodeSnapshot, b: NodeSnapshot) -> Measurements:
        m = Node.measurements(a, b)
        if isinstance(a, InferenceSnapshot) and isinstance(b, InferenceSnapshot):
            n = m.node
            cap = max(0.0, min(1.0 - n.get("airan.RadioBusy", 0.0), b.ai_share_cap))
            tokens = b.tokens - a.tokens
            n["airan.Infer.QueueDepth"] = float(b.queue_depth)
            n["airan.Infer.AiCapacity"] = cap
            n["airan.Infer.AiSlackMsPerS"] = 1000.0 * max(0.0, cap - n.get("airan.AiBusy", 0.0))
            n["airan.Infer.DeviceUsPerToken"] = (
                (b.device_ns - a.device_ns) / 1000.0 / tokens if tokens > 0 else -1.0
            )
            n["airan.Infer.Healthy"] = 1.0 if b.healthy else 0.0
            n["airan.Infer.PacingLagMs"] = b.lag_ns / 1e6
        return m


# ----------------------------------------------------------------------------- the service


def admission_event(
    site: str,
    resume_from: int,
    joined: bool,
    predicted_latency_ms: float = 0.0,
    predicted_cost: float = 0.0,
    decision_id: str = "",
) -> infer_pb2.GenerateEvent:
    return infer_pb2.GenerateEvent(
        admission=infer_pb2.Admission(
            site=site,
            resume_from=resume_from,
            joined=joined,
            predicted_latency_ms=predicted_latency_ms,
            predicted_cost=predicted_cost,
            decision_id=decision_id,
        )
    )


def tokens_event(start: int, tokens: Sequence[int], site: str) -> infer_pb2.GenerateEvent:
    return infer_pb2.GenerateEvent(
        tokens=infer_pb2.Tokens(start_index=start, tokens=tokens, site=site)
    )


def done_event(f: Finished) -> infer_pb2.GenerateEvent:
    return infer_pb2.GenerateEvent(done=f.to_pb())


class _SyncServicer(infer_pb2_grpc.InferenceServicer):
    def __init__(self, host: InferenceHost) -> None:
        self.host = host

    def Generate(
        self, request: infer_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[infer_pb2.GenerateEvent]:
        try:
            spec = spec_from_pb(request)
            gen, joined = self.host.submit(spec)
        except InferenceError as exc:
            context.set_trailing_metadata(exc.trailers())
            context.abort(exc.code, str(exc))
        start = len(spec.resume)
        gen.add_reader()
        try:
            yield admission_event(self.host.site, start, joined)
            for pos, chunk in gen.read(start):
                yield tokens_event(pos, chunk, self.host.site)
        except InferenceError as exc:
            context.set_trailing_metadata(exc.trailers())
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        finally:
            if gen.drop_reader() == 0 and not gen.ended:  # the client went away
                with contextlib.suppress(InferenceError):
                    self.host.cancel(spec.request_id, spec.tenant)
        assert gen.finished is not None
        yield done_event(gen.finished)

    def Cancel(
        self, request: infer_pb2.CancelRequest, context: grpc.ServicerContext
    ) -> infer_pb2.CancelResponse:
        try:
            return infer_pb2.CancelResponse(
                cancelled=self.host.cancel(request.request_id, request.tenant)
            )
        except InferenceError as exc:
            context.set_trailing_metadata(exc.trailers())
            context.abort(exc.code, str(exc))

    def GetStatus(
        self, request: infer_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> infer_pb2.GetStatusResponse:
        return self.host.status()


class _AioServicer(infer_pb2_grpc.InferenceServicer):
    def __init__(self, host: InferenceHost) -> None:
        self.host = host

    async def Generate(
        self, request: infer_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[infer_pb2.GenerateEvent]:
        try:
            spec = spec_from_pb(request)
            gen, joined = self.host.submit(spec)
        except InferenceError as exc:
            await context.abort(exc.code, str(exc), exc.trailers())
        start = len(spec.resume)
        gen.add_reader()
        try:
            yield admission_event(self.host.site, start, joined)
            async for pos, chunk in gen.aread(start):
                yield tokens_event(pos, chunk, self.host.site)
        except InferenceError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc), exc.trailers())
        finally:
            if gen.drop_reader() == 0 and not gen.ended:  # the client went away
                with contextlib.suppress(InferenceError):
                    self.host.cancel(spec.request_id, spec.tenant)
        assert gen.finished is not None
        yield done_event(gen.finished)

    async def Cancel(
        self, request: infer_pb2.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> infer_pb2.CancelResponse:
        try:
            ok = self.host.cancel(request.request_id, request.tenant)
        except InferenceError as exc:
            await context.abort(exc.code, str(exc), exc.trailers())
        return infer_pb2.CancelResponse(cancelled=ok)

    async def GetStatus(
        self, request: infer_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> infer_pb2.GetStatusResponse:
        return self.host.status()


class InferenceService:
    """The ``airan.infer.v1.Inference`` service of a node, for
    :func:`airan.ric.server.build_server` / :func:`~airan.ric.server.build_aio_server`
    (or ``extra_services`` of :func:`airan.ric.e2.serve_e2`, to share the E2 port)."""

    def __init__(self, host: InferenceHost) -> None:
        self.host = host

    def registration(self) -> ServiceRegistration:
        """Every method needs the ``read`` permission (inference changes no
        configuration of the node)."""
        sync, aio = _SyncServicer(self.host), _AioServicer(self.host)
        return ServiceRegistration(
            service=INFER_SERVICE,
            add_to_server=lambda s: infer_pb2_grpc.add_InferenceServicer_to_server(sync, s),
            add_to_aio_server=lambda s: infer_pb2_grpc.add_InferenceServicer_to_server(aio, s),
        )


# ----------------------------------------------------------------------------- clients


@dataclass(slots=True)
class Answer:
    """A whole answer, as :meth:`InferenceClient.generate_all` collects it."""

    admission: infer_pb2.Admission
    tokens: list[int] = field(default_factory=list)
    finished: Finished | None = None


class InferenceClient:
    """A synchronous client of the inference service of a node or of the grid's router.

    ``target``: ``host:port``; ``security``: TLS / token (``None``: plaintext loopback).
    """

    def __init__(
        self, target: str, security: ClientSecurity | None = None, *, timeout_s: float = 10.0
    ) -> None:
        self.target = target
        self.channel = (security or ClientSecurity()).channel(target)
        self.stub = infer_pb2_grpc.InferenceStub(self.channel)
        self.timeout_s = timeout_s

    def generate(
        self, spec: GenerateSpec, timeout_s: float | None = None
    ) -> Iterator[infer_pb2.GenerateEvent]:
        """The stream of events (admission, tokens..., done); a refusal or a failure
        raises :class:`InferenceError`."""
        call = self.stub.Generate(spec.to_pb(), timeout=timeout_s)
        try:
            yield from call
        except grpc.RpcError as err:
            raise InferenceError.from_rpc_error(err) from None
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    def generate_all(self, spec: GenerateSpec, timeout_s: float | None = None) -> Answer:
        """Run a request to its end and collect its answer (from the resume point)."""
        answer: Answer | None = None
        for ev in self.generate(spec, timeout_s):
            which = ev.WhichOneof("event")
            if which == "admission":
                answer = Answer(ev.admission)
            elif answer is None:
                raise InferenceError(
                    grpc.StatusCode.INTERNAL, "protocol", "event", f"{which} before admission"
                )
            elif which == "tokens":
                if ev.tokens.start_index != len(spec.resume) + len(answer.tokens):
                    raise InferenceError(
                        grpc.StatusCode.INTERNAL,
                        "protocol",
                        "tokens.start_index",
                        f"{ev.tokens.start_index}, expected "
                        f"{len(spec.resume) + len(answer.tokens)}",
                    )
                answer.tokens.extend(ev.tokens.tokens)
            elif which == "done":
                answer.finished = Finished.from_pb(ev.done)
        if answer is None or answer.finished is None:
            raise InferenceError(
                grpc.StatusCode.INTERNAL, "protocol", "stream", "ended without a done event"
            )
        return answer

    def cancel(self, request_id: str, tenant: str) -> bool:
        try:
            r = self.stub.Cancel(
                infer_pb2.CancelRequest(request_id=request_id, tenant=tenant),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as err:
            raise InferenceError.from_rpc_error(err) from None
        return bool(r.cancelled)

    def status(self) -> infer_pb2.GetStatusResponse:
        try:
            return self.stub.GetStatus(infer_pb2.GetStatusRequest(), timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise InferenceError.from_rpc_error(err) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncInferenceClient:
    """The asyncio client (``grpc.aio``); create and use it inside a running loop."""

    def __init__(
        self, target: str, security: ClientSecurity | None = None, *, timeout_s: float = 10.0
    ) -> None:
        self.target = target
        self.channel = (security or ClientSecurity()).aio_channel(target)
        self.stub: Any = infer_pb2_grpc.InferenceStub(self.channel)
        self.timeout_s = timeout_s

    def generate_call(
        self, request: infer_pb2.GenerateRequest, timeout_s: float | None = None
    ) -> Any:
        """The raw ``grpc.aio`` stream call (``await call.read()``; ``call.cancel()``)."""
        return self.stub.Generate(request, timeout=timeout_s)

    async def generate(
        self, spec: GenerateSpec, timeout_s: float | None = None
    ) -> AsyncIterator[infer_pb2.GenerateEvent]:
        call = self.generate_call(spec.to_pb(), timeout_s)
        try:
            async for ev in call:
                yield ev
        except grpc.RpcError as err:
            raise InferenceError.from_rpc_error(err) from None
        finally:
            call.cancel()

    async def cancel(self, request_id: str, tenant: str) -> bool:
        try:
            r = await self.stub.Cancel(
                infer_pb2.CancelRequest(request_id=request_id, tenant=tenant),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as err:
            raise InferenceError.from_rpc_error(err) from None
        return bool(r.cancelled)

    async def status(self, timeout_s: float | None = None) -> infer_pb2.GetStatusResponse:
        try:
            r: infer_pb2.GetStatusResponse = await self.stub.GetStatus(
                infer_pb2.GetStatusRequest(), timeout=timeout_s or self.timeout_s
            )
        except grpc.RpcError as err:
            raise InferenceError.from_rpc_error(err) from None
        return r

    async def close(self) -> None:
        await self.channel.close(None)

"""The xApp SDK: talk to an airan node's E2-style service (``airan.e2.v1.E2Node``) from a
near-RT RIC application, synchronously (:class:`E2Client`) or with asyncio
(:class:`AsyncE2Client`, on ``grpc.aio``).

::

    with E2Client("127.0.0.1:50051") as e2:
        print(e2.setup().functions)                       # E2 setup: RAN functions
        with e2.kpm.subscribe(["airan.AiBusy"], period_ms=100) as sub:
            for report in itertools.islice(sub, 10):       # E2SM-KPM REPORT style 1
                print(report.sequence, report.values)
        e2.rc.slice_prb_quota([SliceQuota(snssai=Snssai(sst=1), max_ratio=60)])
        e2.cosched.set_policy(ai_share_cap=0.3)          # co-scheduling control
        e2.cosched.pause_tenant("llm")

RAN functions are looked up by OID (O-RAN.WG3.E2AP §9.2.31) in the node's setup; RIC
request IDs (§9.2.7) are allocated per client (``requestor_id``: the xApp, ``instance``:
a counter). Every refusal raises :class:`E2Error` carrying the gRPC status code, the
E2AP cause (§9.2.1) and the offending field.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import grpc.aio
from google.protobuf import struct_pb2

from airan.core.rrm import SliceQuota
from airan.e2.v1 import e2_pb2, e2_pb2_grpc
from airan.ric.e2 import (
    CAUSE_KEY,
    COSCHED_OID,
    ERROR_BIN_KEY,
    FIELD_KEY,
    KPM_OID,
    RAN_FUNCTION_NOT_SUPPORTED,
    RC_OID,
    STYLE_NODE,
    STYLE_UES,
    E2Cause,
)
from airan.ric.security import ClientSecurity

__all__ = [
    "COSCHED_OID",
    "KPM_OID",
    "RC_OID",
    "AsyncE2Client",
    "AsyncKpmSubscription",
    "ControlResult",
    "E2Client",
    "E2Error",
    "E2Setup",
    "KpmReport",
    "KpmSubscription",
    "NotAdmitted",
    "RanFunctionInfo",
    "SubscriptionEnd",
]

# ----------------------------------------------------------------------------- values

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # the end-of-stream marker of read()


class E2Error(Exception):
    """A refused E2 call: ``code`` (gRPC status), ``cause`` (E2AP §9.2.1, ``None`` when the
    refusal came from outside the E2 agent, e.g. authentication), ``field`` (the offending
    request field, ``""`` if none) and ``reason``."""

    def __init__(
        self, code: grpc.StatusCode, cause: E2Cause | None, field: str, reason: str
    ) -> None:
        self.code = code
        self.cause = cause
        self.field = field
        self.reason = reason
        cause_txt = f" [{cause}]" if cause is not None else ""
        where = f"{field}: " if field else ""
        super().__init__(f"{code.name}{cause_txt} {where}{reason}")

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> E2Error:
        """Decode a failed call's status and E2 trailers."""
        code_fn = getattr(err, "code", None)
        code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
        details_fn = getattr(err, "details", None)
        details = (details_fn() if callable(details_fn) else None) or str(err)
        md_fn = getattr(err, "trailing_metadata", None)
        md = (md_fn() if callable(md_fn) else None) or ()
        cause: E2Cause | None = None
        fld = ""
        reason = details
        for key, value in md:
            if key == ERROR_BIN_KEY and isinstance(value, bytes):
                pb = e2_pb2.E2Error.FromString(value)
                cause = E2Cause.from_pb(pb.cause)
                fld, reason = pb.field, pb.reason or details
                break
            if key == CAUSE_KEY and isinstance(value, str):
                cause = E2Cause.parse(value)
            elif key == FIELD_KEY and isinstance(value, str):
                fld = value
        return cls(code, cause, fld, reason)


@dataclass(frozen=True, slots=True)
class RanFunctionInfo:
    """One RAN function of the node (E2AP §9.2.23); ``definition`` is the decoded JSON."""

    ran_function_id: int
    oid: str
    revision: int
    short_name: str
    definition: dict[str, Any]

    def measurements(self, style: int = STYLE_NODE) -> list[str]:
        """The measurement names of a KPM report style (from the definition)."""
        for st in self.definition.get("ricReportStyleList", []):
            if st.get("ricReportStyleType") == style:
                return [m["measName"] for m in st.get("measInfoActionList", [])]
        return []


@dataclass(frozen=True, slots=True)
class E2Setup:
    """The node's global E2 node ID and RAN functions (E2AP E2 Setup)."""

    node_id: str
    plmn_identity: str
    gnb_du_id: int
    functions: tuple[RanFunctionInfo, ...]

    def function(self, oid: str) -> RanFunctionInfo:
        """The RAN function with service-model OID ``oid`` (:class:`E2Error` NOT_FOUND,
        ``ricService/ran-function-not-supported`` if the node has none)."""
        for f in self.functions:
            if f.oid == oid:
                return f
        raise E2Error(
            grpc.StatusCode.NOT_FOUND,
            RAN_FUNCTION_NOT_SUPPORTED,
            "oid",
            f"the node has no RAN function with OID {oid!r} "
            f"(has: {', '.join(f'{f.oid} ({f.short_name})' for f in self.functions)})",
        )

    @classmethod
    def from_pb(cls, pb: e2_pb2.GetSetupResponse) -> E2Setup:
        return cls(
            node_id=pb.global_e2_node_id.gnb_id,
            plmn_identity=pb.global_e2_node_id.plmn_identity,
            gnb_du_id=pb.global_e2_node_id.gnb_du_id,
            functions=tuple(
                RanFunctionInfo(
                    f.ran_function_id,
                    f.ran_function_oid,
                    f.ran_function_revision,
                    f.short_name,
                    json.loads(f.ran_function_definition or b"{}"),
                )
                for f in pb.ran_functions
            ),
        )


@dataclass(frozen=True, slots=True)
class KpmReport:
    """One decoded KPM indication (E2SM-KPM §8.2.1.3-4).

    ``time``: end of the collection period (Unix seconds); ``sequence``: the RIC
    indication SN (1, 2, ... per action: a gap is a loss); ``values``: node measurements
    (style 1); ``ues``: per-UE measurements (style 5); ``start_ns`` / ``end_ns``: the
    collection period (Unix ns); ``received_ns``: when this client decoded it (Unix ns).
    """

    time: float
    sequence: int
    values: dict[str, float]
    ues: dict[int, dict[str, float]]
    action_id: int
    start_ns: int
    end_ns: int
    granularity_ms: int
    received_ns: int

    @property
    def latency_s(self) -> float:
        """Delivery latency: collection end → decoded here."""
        return (self.received_ns - self.end_ns) / 1e9

    @classmethod
    def from_pb(cls, ind: e2_pb2.RicIndication, received_ns: int | None = None) -> KpmReport:
        h = ind.ric_indication_header
        m = ind.ric_indication_message
        return cls(
            time=h.collet_end_time_ns / 1e9,
            sequence=ind.ric_indication_sn,
            values=dict(m.values),
            ues={u.ue_id: dict(u.values) for u in m.ues},
            action_id=ind.ric_action_id,
            start_ns=h.collet_start_time_ns,
            end_ns=h.collet_end_time_ns,
            granularity_ms=h.granularity_period_ms,
            received_ns=time.time_ns() if received_ns is None else received_ns,
        )


@dataclass(frozen=True, slots=True)
class NotAdmitted:
    """An action the node did not admit, with the E2AP cause."""

    action_id: int
    cause: E2Cause | None
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class SubscriptionEnd:
    """How a subscription ended when the node ended it (the deletion notice):
    ``ended_by`` ``"ric"`` (a DeleteSubscription) or ``"e2-node"`` (shutdown, overload)."""

    ended_by: Literal["ric", "e2-node", "unspecified"]
    cause: E2Cause | None
    reason: str
    last_sequence: dict[int, int]

    @classmethod
    def from_pb(cls, pb: e2_pb2.RicSubscriptionDeleteNotice) -> SubscriptionEnd:
        by: Literal["ric", "e2-node", "unspecified"] = (
            "ric"
            if pb.ended_by == e2_pb2.SUBSCRIPTION_ENDED_BY_RIC
            else "e2-node"
            if pb.ended_by == e2_pb2.SUBSCRIPTION_ENDED_BY_E2_NODE
            else "unspecified"
        )
        return cls(by, E2Cause.from_pb(pb.cause), pb.reason, dict(pb.last_indication_sn))


@dataclass(frozen=True, slots=True)
class ControlResult:
    """A RIC control acknowledge: when the change took effect on the node
    (``requested_ns`` / ``applied_ns``: the node's ``perf_counter_ns``), what is in
    force now (``applied``, decoded JSON) and the call's round trip here."""

    requested_ns: int
    applied_ns: int
    control_to_effect_ns: int
    applied: Any
    rtt_ns: int

    @classmethod
    def from_pb(cls, pb: e2_pb2.RicControlAcknowledge, rtt_ns: int) -> ControlResult:
        o = pb.ric_control_outcome
        return cls(
            o.requested_ns,
            o.applied_ns,
            o.control_to_effect_ns,
            json.loads(o.applied_json) if o.applied_json else None,
            rtt_ns,
        )


# ----------------------------------------------------------------------------- requests


_REQUESTORS = itertools.count(random.randrange(65535))


class _Ids:
    """RIC request IDs of one client: its requestor ID and an instance counter."""

    def __init__(self, requestor_id: int | None) -> None:
        if requestor_id is None:
            # random per process (two xApps rarely collide), then consecutive: clients of
            # one process never share one (a random pick each: 2 % odds among 50)
            requestor_id = next(_REQUESTORS) % 65535 + 1
        if not 0 <= requestor_id <= 65535:
            raise E2Error(
                grpc.StatusCode.INVALID_ARGUMENT,
                None,
                "requestor_id",
                f"must be 0..65535, got {requestor_id}",
            )
        self.requestor_id = requestor_id
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> e2_pb2.RicRequestId:
        with self._lock:
            n = next(self._counter) % 65536
        return e2_pb2.RicRequestId(ric_requestor_id=self.requestor_id, ric_instance_id=n)


def kpm_request(
    rid: e2_pb2.RicRequestId,
    ran_function_id: int,
    measurements: Sequence[str],
    period_ms: int,
    style: int,
    ue_ids: Sequence[int] | None,
) -> e2_pb2.RicSubscriptionRequest:
    """A one-action KPM REPORT subscription request."""
    if isinstance(measurements, str):
        measurements = [measurements]
    return e2_pb2.RicSubscriptionRequest(
        ric_request_id=rid,
        ran_function_id=ran_function_id,
        ric_event_trigger=e2_pb2.RicEventTrigger(reporting_period_ms=period_ms),
        ric_actions=[
            e2_pb2.RicAction(
                ric_action_id=1,
                ric_action_type=e2_pb2.RIC_ACTION_TYPE_REPORT,
                kpm=e2_pb2.KpmActionDefinition(
                    ric_style_type=style,
                    measurement_names=list(measurements),
                    ue_ids=list(ue_ids or ()),
                ),
            )
        ],
    )


def _quota_pb(q: SliceQuota) -> e2_pb2.SliceQuota:
    pb = e2_pb2.SliceQuota(
        sst=q.snssai.sst,
        min_prb_policy_ratio=q.min_ratio,
        max_prb_policy_ratio=q.max_ratio,
        dedicated_prb_policy_ratio=q.dedicated_ratio,
    )
    if q.snssai.sd is not None:
        pb.sd = q.snssai.sd
    return pb


def control_request(
    rid: e2_pb2.RicRequestId, ran_function_id: int, style: int, action: int, **message: Any
) -> e2_pb2.RicControlRequest:
    return e2_pb2.RicControlRequest(
        ric_request_id=rid,
        ran_function_id=ran_function_id,
        ric_control_header=e2_pb2.RicControlHeader(
            ric_style_type=style, ric_control_action_id=action
        ),
        ric_control_message=e2_pb2.RicControlMessage(**message),
    )


def _policy_message(fields: Mapping[str, Any]) -> e2_pb2.PolicyControl:
    s = struct_pb2.Struct()
    s.update(dict(fields))
    return e2_pb2.PolicyControl(fields=s)


def _policy_fields(
    *,
    name: str | None = None,
    guard_us: float | None = None,
    max_ai_slice_us: float | None = None,
    ai_share_cap: float | None = None,
    share_window_us: float | None = None,
    lookahead_us: float | None = None,
    tdm_period_us: float | None = None,
    tdm_radio_share: float | None = None,
    fifo_depth: int | None = None,
    tenants: Mapping[str, Mapping[str, Any]] | None = None,
    overrun_factor: float | None = None,
    shed_hold_us: float | None = None,
) -> dict[str, Any]:
    """The policy fields given (not ``None``), as the control's JSON object."""
    given: dict[str, Any] = {
        "name": name,
        "guard_us": guard_us,
        "max_ai_slice_us": max_ai_slice_us,
        "ai_share_cap": ai_share_cap,
        "share_window_us": share_window_us,
        "lookahead_us": lookahead_us,
        "tdm_period_us": tdm_period_us,
        "tdm_radio_share": tdm_radio_share,
        "fifo_depth": fifo_depth,
        "overrun_factor": overrun_factor,
        "shed_hold_us": shed_hold_us,
        "tenants": None if tenants is None else {k: dict(v) for k, v in tenants.items()},
    }
    return {k: v for k, v in given.items() if v is not None}


def _admission(
    first: e2_pb2.RicSubscriptionEvent,
) -> tuple[tuple[int, ...], tuple[NotAdmitted, ...]]:
    if not first.HasField("admitted"):
        raise E2Error(
            grpc.StatusCode.INTERNAL,
            E2Cause("protocol", "message-not-compatible-with-receiver-state"),
            "",
            f"the first message of a subscription must be the admission result, got "
            f"{first.WhichOneof('event')}",
        )
    a = first.admitted
    return tuple(a.ric_actions_admitted), tuple(
        NotAdmitted(n.ric_action_id, E2Cause.from_pb(n.cause), n.field, n.reason)
        for n in a.ric_actions_not_admitted
    )


# ----------------------------------------------------------------------------- sync client


class KpmSubscription:
    """A live KPM subscription: iterate it for :class:`KpmReport` s (one per action and
    period). Iteration ends when the node ends the subscription (:attr:`ended` then says
    how) or after :meth:`cancel`. With ``callback``, a thread of the subscription calls it
    for each report instead (:meth:`wait` for the end)."""

    def __init__(
        self,
        client: E2Client,
        request: e2_pb2.RicSubscriptionRequest,
        call: Any,
        callback: Callable[[KpmReport], object] | None,
    ) -> None:
        self._client = client
        self.request = request
        self._call = call
        try:
            first = next(call)
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None
        self.admitted, self.not_admitted = _admission(first)
        self.ended: SubscriptionEnd | None = None
        self.error: BaseException | None = None
        self._cancelled = False
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        if callback is not None:
            self._thread = threading.Thread(
                target=self._pump, args=(callback,), name="airan-kpm-callback", daemon=True
            )
            self._thread.start()

    @property
    def request_id(self) -> tuple[int, int]:
        rid = self.request.ric_request_id
        return (rid.ric_requestor_id, rid.ric_instance_id)

    def __iter__(self) -> Iterator[KpmReport]:
        return self

    def __next__(self) -> KpmReport:
        while True:
            if self._finished.is_set():
                raise StopIteration
            try:
                ev = next(self._call)
            except StopIteration:
                self._finished.set()
                raise
            except grpc.RpcError as err:
                self._finished.set()
                if self._cancelled and err.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                raise E2Error.from_rpc_error(err) from None
            which = ev.WhichOneof("event")
            if which == "indication":
                return KpmReport.from_pb(ev.indication)
            if which == "deleted":
                self.ended = SubscriptionEnd.from_pb(ev.deleted)
                self._finished.set()
                raise StopIteration

    def _pump(self, callback: Callable[[KpmReport], object]) -> None:
        try:
            for report in self:
                callback(report)
        except BaseException as exc:
            self.error = exc
            self.cancel()

    def wait(self, timeout_s: float | None = None) -> bool:
        """With a callback: block until the subscription ended; ``False`` on timeout."""
        return self._finished.wait(timeout_s)

    def cancel(self) -> None:
        """Stop receiving (the node deletes the subscription when the stream closes)."""
        self._cancelled = True
        self._call.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._finished.set()

    def delete(self) -> None:
        """Ask the node to delete it (E2AP RIC subscription delete): the stream then
        ends with a deletion notice (:attr:`ended`)."""
        self._client.delete_subscription(self.request_id, self.request.ran_function_id)

    def __enter__(self) -> KpmSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _Kpm:
    def __init__(self, client: E2Client) -> None:
        self._c = client

    def subscribe(
        self,
        measurements: Sequence[str],
        period_ms: int = 1000,
        style: int | None = None,
        ue_ids: Sequence[int] | None = None,
        callback: Callable[[KpmReport], object] | None = None,
    ) -> KpmSubscription:
        """Subscribe to E2SM-KPM REPORT ``style`` 1 (node measurements) or 5 (per UE;
        the default when ``ue_ids`` is given) every ``period_ms``. Returns once the node
        admitted it (:class:`E2Error` if refused)."""
        st = style if style is not None else (STYLE_UES if ue_ids else STYLE_NODE)
        fn = self._c.function(KPM_OID)
        req = kpm_request(
            self._c.ids.next(), fn.ran_function_id, measurements, period_ms, st, ue_ids
        )
        return self._c.subscribe(req, callback)


class _Rc:
    def __init__(self, client: E2Client) -> None:
        self._c = client

    def slice_prb_quota(self, quotas: Sequence[SliceQuota]) -> ControlResult:
        """E2SM-RC style 2 action 6: replace the slice PRB quotas (all or nothing)."""
        fn = self._c.function(RC_OID)
        msg = e2_pb2.SlicePrbQuotaControl(quotas=[_quota_pb(q) for q in quotas])
        return self._c.control(
            control_request(self._c.ids.next(), fn.ran_function_id, 2, 6, slice_prb_quota=msg)
        )


class _Cosched:
    def __init__(self, client: E2Client) -> None:
        self._c = client

    def set_policy(
        self,
        *,
        guard_us: float | None = None,
        max_ai_slice_us: float | None = None,
        ai_share_cap: float | None = None,
        share_window_us: float | None = None,
        lookahead_us: float | None = None,
        tenants: Mapping[str, Mapping[str, Any]] | None = None,
        name: str | None = None,
        tdm_period_us: float | None = None,
        tdm_radio_share: float | None = None,
        fifo_depth: int | None = None,
        overrun_factor: float | None = None,
        shed_hold_us: float | None = None,
    ) -> ControlResult:
        """Change the co-scheduling policy fields given (the others stay as they are):
        ``guard_us``, ``max_ai_slice_us``, ``ai_share_cap`` (0..1), ``share_window_us``,
        ``lookahead_us``, ``tenants`` (``{"llm": {"weight": 2}}``, merged per tenant), and
        ``name``, ``tdm_period_us``, ``tdm_radio_share``, ``fifo_depth``, and the fault
        response ``overrun_factor``, ``shed_hold_us`` (docs/reliability.md). The node
        validates the merged policy as a whole (:class:`E2Error` naming the field)."""
        fields = _policy_fields(
            name=name,
            guard_us=guard_us,
            max_ai_slice_us=max_ai_slice_us,
            ai_share_cap=ai_share_cap,
            share_window_us=share_window_us,
            lookahead_us=lookahead_us,
            tdm_period_us=tdm_period_us,
            tdm_radio_share=tdm_radio_share,
            fifo_depth=fifo_depth,
            tenants=tenants,
            overrun_factor=overrun_factor,
            shed_hold_us=shed_hold_us,
        )
        fn = self._c.function(COSCHED_OID)
        return self._c.control(
            control_request(
                self._c.ids.next(), fn.ran_function_id, 1, 1, policy=_policy_message(fields)
            )
        )

    def pause_tenant(self, tenant: str) -> ControlResult:
        return self._tenant(tenant, 1)

    def resume_tenant(self, tenant: str) -> ControlResult:
        return self._tenant(tenant, 2)

    def _tenant(self, tenant: str, action: int) -> ControlResult:
        fn = self._c.function(COSCHED_OID)
        return self._c.control(
            control_request(
                self._c.ids.next(),
                fn.ran_function_id,
                2,
                action,
                tenant=e2_pb2.TenantControl(tenant=tenant),
            )
        )


class E2Client:
    """A synchronous client of one node's E2 service.

    ``target``: ``host:port``; ``security``: TLS / token (:class:`ClientSecurity`),
    ``None`` for a plaintext loopback; ``requestor_id``: this xApp's RIC requestor ID
    (random by default); ``timeout_s``: deadline of unary calls.
    """

    def __init__(
        self,
        target: str,
        security: ClientSecurity | None = None,
        *,
        requestor_id: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.target = target
        self.channel = (security or ClientSecurity()).channel(target)
        self.stub = e2_pb2_grpc.E2NodeStub(self.channel)
        self.ids = _Ids(requestor_id)
        self.timeout_s = timeout_s
        self._setup: E2Setup | None = None
        self.kpm = _Kpm(self)
        self.rc = _Rc(self)
        self.cosched = _Cosched(self)

    def setup(self, refresh: bool = False) -> E2Setup:
        """The node's ID and RAN functions (cached; ``refresh`` asks again)."""
        if self._setup is None or refresh:
            try:
                pb = self.stub.GetSetup(e2_pb2.GetSetupRequest(), timeout=self.timeout_s)
            except grpc.RpcError as err:
                raise E2Error.from_rpc_error(err) from None
            self._setup = E2Setup.from_pb(pb)
        return self._setup

    def function(self, oid: str) -> RanFunctionInfo:
        """The node's RAN function with this OID (:class:`E2Error` if none)."""
        return self.setup().function(oid)

    def subscribe(
        self,
        request: e2_pb2.RicSubscriptionRequest,
        callback: Callable[[KpmReport], object] | None = None,
    ) -> KpmSubscription:
        """Send a raw subscription request (any actions); wait for its admission."""
        return KpmSubscription(self, request, self.stub.Subscribe(request), callback)

    def control(self, request: e2_pb2.RicControlRequest) -> ControlResult:
        """Send a raw control request; the acknowledge, or :class:`E2Error`."""
        t0 = time.perf_counter_ns()
        try:
            ack = self.stub.Control(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None
        return ControlResult.from_pb(ack, time.perf_counter_ns() - t0)

    def delete_subscription(self, request_id: tuple[int, int], ran_function_id: int) -> None:
        try:
            self.stub.DeleteSubscription(
                e2_pb2.RicSubscriptionDeleteRequest(
                    ric_request_id=e2_pb2.RicRequestId(
                        ric_requestor_id=request_id[0], ric_instance_id=request_id[1]
                    ),
                    ran_function_id=ran_function_id,
                ),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None

    def list_subscriptions(self) -> list[e2_pb2.SubscriptionInfo]:
        try:
            r = self.stub.ListSubscriptions(
                e2_pb2.ListSubscriptionsRequest(), timeout=self.timeout_s
            )
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None
        return list(r.subscriptions)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> E2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- asyncio


class AsyncKpmSubscription:
    """The asyncio :class:`KpmSubscription`: ``async for report in sub``; with
    ``callback`` (a function or coroutine function) a task calls it instead."""

    def __init__(
        self,
        client: AsyncE2Client,
        request: e2_pb2.RicSubscriptionRequest,
        call: Any,
    ) -> None:
        self._client = client
        self.request = request
        self._call = call
        self.admitted: tuple[int, ...] = ()
        self.not_admitted: tuple[NotAdmitted, ...] = ()
        self.ended: SubscriptionEnd | None = None
        self.error: BaseException | None = None
        self._cancelled = False
        self._done = False
        self._task: asyncio.Task[None] | None = None

    async def _start(
        self, callback: Callable[[KpmReport], object | Awaitable[object]] | None
    ) -> None:
        try:
            first = await self._call.read()
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None
        if first is _EOF:
            raise E2Error(grpc.StatusCode.INTERNAL, None, "", "the stream ended at once")
        self.admitted, self.not_admitted = _admission(first)
        if callback is not None:
            self._task = asyncio.get_running_loop().create_task(self._pump(callback))

    @property
    def request_id(self) -> tuple[int, int]:
        rid = self.request.ric_request_id
        return (rid.ric_requestor_id, rid.ric_instance_id)

    def __aiter__(self) -> AsyncIterator[KpmReport]:
        return self

    async def __anext__(self) -> KpmReport:
        while True:
            if self._done:
                raise StopAsyncIteration
            try:
                ev = await self._call.read()
            except asyncio.CancelledError:
                if self._cancelled:
                    self._done = True
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as err:
                self._done = True
                if self._cancelled:
                    raise StopAsyncIteration from None
                raise E2Error.from_rpc_error(err) from None
            if ev is _EOF:
                self._done = True
                raise StopAsyncIteration
            which = ev.WhichOneof("event")
            if which == "indication":
                return KpmReport.from_pb(ev.indication)
            if which == "deleted":
                self.ended = SubscriptionEnd.from_pb(ev.deleted)
                self._done = True
                raise StopAsyncIteration

    async def _pump(self, callback: Callable[[KpmReport], object | Awaitable[object]]) -> None:
        try:
            async for report in self:
                r = callback(report)
                if inspect.isawaitable(r):
                    await r
        except Exception as exc:
            self.error = exc
            self._cancelled = True
            self._call.cancel()

    async def wait(self) -> None:
        """With a callback: until the subscription ends."""
        if self._task is not None:
            await self._task

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def delete(self) -> None:
        await self._client.delete_subscription(self.request_id, self.request.ran_function_id)

    async def __aenter__(self) -> AsyncKpmSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class _AsyncKpm:
    def __init__(self, client: AsyncE2Client) -> None:
        self._c = client

    async def subscribe(
        self,
        measurements: Sequence[str],
        period_ms: int = 1000,
        style: int | None = None,
        ue_ids: Sequence[int] | None = None,
        callback: Callable[[KpmReport], object | Awaitable[object]] | None = None,
    ) -> AsyncKpmSubscription:
        """As :meth:`E2Client.kpm.subscribe <_Kpm.subscribe>`; await it for the admission."""
        st = style if style is not None else (STYLE_UES if ue_ids else STYLE_NODE)
        fn = await self._c.function(KPM_OID)
        req = kpm_request(
            self._c.ids.next(), fn.ran_function_id, measurements, period_ms, st, ue_ids
        )
        return await self._c.subscribe(req, callback)


class _AsyncRc:
    def __init__(self, client: AsyncE2Client) -> None:
        self._c = client

    async def slice_prb_quota(self, quotas: Sequence[SliceQuota]) -> ControlResult:
        fn = await self._c.function(RC_OID)
        msg = e2_pb2.SlicePrbQuotaControl(quotas=[_quota_pb(q) for q in quotas])
        return await self._c.control(
            control_request(self._c.ids.next(), fn.ran_function_id, 2, 6, slice_prb_quota=msg)
        )


class _AsyncCosched:
    def __init__(self, client: AsyncE2Client) -> None:
        self._c = client

    async def set_policy(
        self,
        *,
        guard_us: float | None = None,
        max_ai_slice_us: float | None = None,
        ai_share_cap: float | None = None,
        share_window_us: float | None = None,
        lookahead_us: float | None = None,
        tenants: Mapping[str, Mapping[str, Any]] | None = None,
        name: str | None = None,
        tdm_period_us: float | None = None,
        tdm_radio_share: float | None = None,
        fifo_depth: int | None = None,
        overrun_factor: float | None = None,
        shed_hold_us: float | None = None,
    ) -> ControlResult:
        """:meth:`E2Client.cosched.set_policy <_Cosched.set_policy>`, asynchronously."""
        fields = _policy_fields(
            name=name,
            guard_us=guard_us,
            max_ai_slice_us=max_ai_slice_us,
            ai_share_cap=ai_share_cap,
            share_window_us=share_window_us,
            lookahead_us=lookahead_us,
            tdm_period_us=tdm_period_us,
            tdm_radio_share=tdm_radio_share,
            fifo_depth=fifo_depth,
            tenants=tenants,
            overrun_factor=overrun_factor,
            shed_hold_us=shed_hold_us,
        )
        fn = await self._c.function(COSCHED_OID)
        return await self._c.control(
            control_request(
                self._c.ids.next(), fn.ran_function_id, 1, 1, policy=_policy_message(fields)
            )
        )

    async def pause_tenant(self, tenant: str) -> ControlResult:
        return await self._tenant(tenant, 1)

    async def resume_tenant(self, tenant: str) -> ControlResult:
        return await self._tenant(tenant, 2)

    async def _tenant(self, tenant: str, action: int) -> ControlResult:
        fn = await self._c.function(COSCHED_OID)
        return await self._c.control(
            control_request(
                self._c.ids.next(),
                fn.ran_function_id,
                2,
                action,
                tenant=e2_pb2.TenantControl(tenant=tenant),
            )
        )


class AsyncE2Client:
    """The asyncio client (``grpc.aio``); create and use it inside a running loop::

    async with AsyncE2Client(target) as e2:
        sub = await e2.kpm.subscribe(["airan.AiBusy"], period_ms=10)
        async for report in sub: ...
    """

    def __init__(
        self,
        target: str,
        security: ClientSecurity | None = None,
        *,
        requestor_id: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.target = target
        self.channel = (security or ClientSecurity()).aio_channel(target)
        self.stub = e2_pb2_grpc.E2NodeStub(self.channel)  # E2NodeAsyncStub (typing)
        self.ids = _Ids(requestor_id)
        self.timeout_s = timeout_s
        self._setup: E2Setup | None = None
        self.kpm = _AsyncKpm(self)
        self.rc = _AsyncRc(self)
        self.cosched = _AsyncCosched(self)

    async def setup(self, refresh: bool = False) -> E2Setup:
        if self._setup is None or refresh:
            try:
                pb = await self.stub.GetSetup(e2_pb2.GetSetupRequest(), timeout=self.timeout_s)
            except grpc.RpcError as err:
                raise E2Error.from_rpc_error(err) from None
            self._setup = E2Setup.from_pb(pb)
        return self._setup

    async def function(self, oid: str) -> RanFunctionInfo:
        return (await self.setup()).function(oid)

    async def subscribe(
        self,
        request: e2_pb2.RicSubscriptionRequest,
        callback: Callable[[KpmReport], object | Awaitable[object]] | None = None,
    ) -> AsyncKpmSubscription:
        sub = AsyncKpmSubscription(self, request, self.stub.Subscribe(request))
        await sub._start(callback)
        return sub

    async def control(self, request: e2_pb2.RicControlRequest) -> ControlResult:
        t0 = time.perf_counter_ns()
        try:
            ack = await self.stub.Control(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None
        return ControlResult.from_pb(ack, time.perf_counter_ns() - t0)

    async def delete_subscription(self, request_id: tuple[int, int], ran_function_id: int) -> None:
        try:
            await self.stub.DeleteSubscription(
                e2_pb2.RicSubscriptionDeleteRequest(
                    ric_request_id=e2_pb2.RicRequestId(
                        ric_requestor_id=request_id[0], ric_instance_id=request_id[1]
                    ),
                    ran_function_id=ran_function_id,
                ),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None

    async def list_subscriptions(self) -> list[e2_pb2.SubscriptionInfo]:
        try:
            r = await self.stub.ListSubscriptions(
                e2_pb2.ListSubscriptionsRequest(), timeout=self.timeout_s
            )
        except grpc.RpcError as err:
            raise E2Error.from_rpc_error(err) from None
        return list(r.subscriptions)

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> AsyncE2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The E2-style agent of one airan node: the ``airan.e2.v1.E2Node`` gRPC service and the
RAN functions it hosts (O-RAN.WG3.E2AP v03).

RAN functions (looked up by OID, addressed by RAN function ID, E2AP §9.2.8 / §9.2.31):

* **KPM** (:data:`KPM_OID`, E2SM-KPM v3): REPORT service style 1 "E2 Node Measurement"
  (§7.4.1: :attr:`Node.NODE_MEASUREMENTS`, plus ``airan.Tenant.<name>.Busy``) and
  style 5 "Measurements for multiple UEs" (§7.4.5: :attr:`Node.UE_MEASUREMENTS` per
  UE). Each subscription has its own periodic timer; at each period end the node's
  cumulative counters are read once (:meth:`Node.snapshot`) and every subscription due
  then reports :meth:`Node.measurements` of its own period.
* **RC** (:data:`RC_OID`, E2SM-RC): control style 2 "Radio Resource Allocation Control",
  action 6 "Slice-level PRB quota" (§7.6.3) → :meth:`Node.set_slice_quotas`.
* **Co-scheduling** (:data:`COSCHED_OID`, our own service model): control style 1
  action 1 "policy update" (fields of :class:`~airan.core.policy.Policy` →
  :meth:`Node.set_policy`) and style 2 actions 1/2 "pause / resume AI tenant"
  (:meth:`Node.set_tenant_paused`). The acknowledge carries the control-to-effect
  latency the arbiter's :class:`~airan.sched.arbiter.ControlTicket` measured.

Bad input ends the call with a gRPC status, an E2AP cause (§9.2.1) and the offending
field (:class:`E2Refusal`); nothing is applied then and every other subscriber goes on.

Slow subscribers: every subscription has a bounded queue (``max_queue`` indications)
between the timer (producer) and its gRPC stream (consumer); the timer never blocks and
memory per subscriber stays bounded whatever the subscriber does. When the queue is
full at a period's end, that period's indications are **not queued** (counted in the
subscription's ``dropped`` and in ``E2Agent.dropped``) and the period is merged into
the subscriber's next indication, which then covers the longer collection period its
header states: the subscriber loses time resolution, never a measurement, and the
sequence numbers have no gap. A subscriber that takes nothing for
``max_stalled_periods`` periods in a row with its queue full (a stalled or vanished
reader) is ended: the stream delivers what is queued, then a
:class:`RicSubscriptionDeleteNotice` with cause ``ricRequest/function-resource-limit``
and the last sequence number sent per action (E2AP §8.2.4 "RIC Subscription Delete
Required"). ``E2Agent.overflows`` counts such endings, :meth:`E2Agent.stats` and
:meth:`E2Agent.subscription_stats` give the counters. Other subscribers, the reporting
timer and the node are unaffected.

Serving (:func:`serve_e2`): by default a ``grpc.aio`` server on one event-loop thread;
the reporting timers run on the same loop, and each indication is built by splicing
bytes — the header and message serialized once per period for all subscriptions that
share them, preceded by the indication's own fields — so the per-indication cost is a
few byte joins plus gRPC's send. ``aio=False`` serves the same with a sync server.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
from google.protobuf import struct_pb2

from airan.core.errors import FieldError
from airan.core.policy import Policy, TenantPolicy
from airan.core.rrm import SliceQuota, Snssai, check_quotas
from airan.e2.v1 import e2_pb2, e2_pb2_grpc
from airan.ric.security import CallInfo, Permission, ServerSecurity, audit_note, current_call
from airan.ric.server import (
    EventLoopThread,
    ServiceRegistration,
    build_aio_server,
    build_server,
)
from airan.sched.arbiter import ControlTimeoutError

if TYPE_CHECKING:
    from airan.node import Measurements, Node, NodeConfig, NodeSnapshot
    from airan.sched.arbiter import ControlTicket

__all__ = [
    "COSCHED_OID",
    "E2_SERVICE",
    "KPM_OID",
    "MAX_ACTIONS",
    "RC_OID",
    "CoschedFunction",
    "E2Agent",
    "E2Cause",
    "E2Refusal",
    "E2Server",
    "KpmFunction",
    "RanFunctionBase",
    "RcFunction",
    "serve_e2",
]

log = logging.getLogger(__name__)

E2_SERVICE = "airan.e2.v1.E2Node"

#: E2SM-KPM (O-RAN.WG3.E2SM-KPM v03) service model OID
KPM_OID = "1.3.6.1.4.1.53148.1.2.2.2"
#: E2SM-RC (O-RAN.WG3.E2SM-RC v01) service model OID
RC_OID = "1.3.6.1.4.1.53148.1.1.2.3"
#: airan's co-scheduling service model: a UUID-based OID (ITU-T X.667, arc 2.25), which
#: needs no registration and cannot collide with a registered one
COSCHED_OID = "2.25.209875305218424405287283938093218151771"

#: E2AP maxofRICactionID
MAX_ACTIONS = 16
#: reporting periods accepted (ms): 1 ms .. 1 h
MIN_PERIOD_MS = 1
MAX_PERIOD_MS = 3_600_000
#: E2SM-KPM maxnoofUEID
MAX_UE_IDS = 65_535

# ----------------------------------------------------------------------------- causes

# E2AP group name -> (oneof field of Cause, enum wrapper, enum value prefix)
_GROUPS: dict[str, tuple[str, Any, str]] = {
    "ricRequest": ("ric_request", e2_pb2.CauseRicRequest, "RIC_REQUEST_"),
    "ricService": ("ric_service", e2_pb2.CauseRicService, "RIC_SERVICE_"),
    "e2Node": ("e2_node", e2_pb2.CauseE2Node, "E2_NODE_"),
    "transport": ("transport", e2_pb2.CauseTransport, "TRANSPORT_"),
    "protocol": ("protocol", e2_pb2.CauseProtocol, "PROTOCOL_"),
    "misc": ("misc", e2_pb2.CauseMisc, "MISC_"),
}
_FIELD_TO_GROUP = {f: g for g, (f, _, _) in _GROUPS.items()}


@dataclass(frozen=True, slots=True)
class E2Cause:
    """An E2AP Cause (O-RAN.WG3.E2AP §9.2.1): a group (``ricRequest``, ``ricService``,
    ``e2Node``, ``transport``, ``protocol``, ``misc``) and a value in E2AP spelling
    (``ran-function-id-invalid``). ``str()`` gives ``"ricRequest/ran-function-id-invalid"``.
    """

    group: str
    value: str

    def __post_init__(self) -> None:
        if self.group not in _GROUPS:
            raise FieldError("cause.group", f"unknown E2AP cause group {self.group!r}")
        _, enum, prefix = _GROUPS[self.group]
        name = prefix + self.value.upper().replace("-", "_")
        if name not in enum.keys():  # noqa: SIM118 - an EnumTypeWrapper, not a dict
            raise FieldError("cause.value", f"unknown {self.group} cause {self.value!r}")

    def __str__(self) -> str:
        return f"{self.group}/{self.value}"

    @classmethod
    def parse(cls, text: str) -> E2Cause:
        """``"ricRequest/ran-function-id-invalid"`` → the cause."""
        group, sep, value = text.partition("/")
        if not sep:
            raise FieldError("cause", f"must be 'group/value', got {text!r}")
        return cls(group, value)

    def to_pb(self) -> e2_pb2.Cause:
        fname, enum, prefix = _GROUPS[self.group]
        pb = e2_pb2.Cause()
        setattr(pb, fname, enum.Value(prefix + self.value.upper().replace("-", "_")))
        return pb

    @classmethod
    def from_pb(cls, pb: e2_pb2.Cause) -> E2Cause | None:
        which = pb.WhichOneof("cause")
        if which is None:
            return None
        group = _FIELD_TO_GROUP[which]
        _, enum, prefix = _GROUPS[group]
        name: str = enum.Name(getattr(pb, which))
        return cls(group, name[len(prefix) :].lower().replace("_", "-"))


def _rr(value: str) -> E2Cause:
    return E2Cause("ricRequest", value)


RAN_FUNCTION_ID_INVALID = _rr("ran-function-id-invalid")
ACTION_NOT_SUPPORTED = _rr("action-not-supported")
EXCESSIVE_ACTIONS = _rr("excessive-actions")
DUPLICATE_ACTION = _rr("duplicate-action")
FUNCTION_RESOURCE_LIMIT = _rr("function-resource-limit")
REQUEST_ID_UNKNOWN = _rr("request-id-unknown")
CONTROL_MESSAGE_INVALID = _rr("control-message-invalid")
CONTROL_TIMER_EXPIRED = _rr("control-timer-expired")
CONTROL_FAILED_TO_EXECUTE = _rr("control-failed-to-execute")
RIC_REQUEST_UNSPECIFIED = _rr("unspecified")
DUPLICATE_RIC_REQUEST_ID = _rr("duplicate-ric-request-id")
EVENT_TRIGGER_NOT_SUPPORTED = _rr("event-trigger-not-supported")
REQUESTED_INFORMATION_UNAVAILABLE = _rr("requested-information-unavailable")
INVALID_INFORMATION_REQUEST = _rr("invalid-information-request")
RAN_FUNCTION_NOT_SUPPORTED = E2Cause("ricService", "ran-function-not-supported")
OM_INTERVENTION = E2Cause("misc", "om-intervention")
MISC_UNSPECIFIED = E2Cause("misc", "unspecified")

#: trailing metadata keys of a refused call
CAUSE_KEY = "e2ap-cause"
FIELD_KEY = "e2ap-field"
ERROR_BIN_KEY = "e2-error-bin"


#: longest ``field`` / ``reason`` (UTF-8 bytes) a refusal carries: both echo what the
#: caller sent (an OID, a policy key, a measurement name), and the status message (which
#: gRPC percent-encodes: up to 3 bytes per byte) plus the trailers must stay below
#: gRPC's 8 KiB metadata soft limit, or the client gets a transport error
#: (RESOURCE_EXHAUSTED "received metadata size exceeds ... limit") instead of the
#: refusal (found by tests/test_fuzz_grpc.py)
MAX_FIELD_BYTES = 256
MAX_REASON_BYTES = 1024


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying how much was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    kept = raw[: limit - 48].decode("utf-8", "ignore")
    return f"{kept}... ({len(text) - len(kept)} more characters)"


class E2Refusal(Exception):
    """A refused E2 request: the gRPC status ``code``, the E2AP ``cause``, the offending
    ``field`` and the ``reason`` (cut to :data:`MAX_FIELD_BYTES` /
    :data:`MAX_REASON_BYTES`)."""

    def __init__(self, code: grpc.StatusCode, cause: E2Cause, field: str, reason: str) -> None:
        self.code = code
        self.cause = cause
        self.field = _clip(field, MAX_FIELD_BYTES)
        self.reason = _clip(reason, MAX_REASON_BYTES)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.field}: {self.reason} (E2AP cause {self.cause})"

    @classmethod
    def from_field_error(
        cls,
        exc: FieldError,
        cause: E2Cause = CONTROL_MESSAGE_INVALID,
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
        rename: Callable[[str], str] = lambda f: f,
    ) -> E2Refusal:
        return cls(code, cause, rename(exc.field), exc.reason)

    def to_pb(self) -> e2_pb2.E2Error:
        return e2_pb2.E2Error(cause=self.cause.to_pb(), field=self.field, reason=self.reason)

    def trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        return (
            (CAUSE_KEY, str(self.cause)),
            (FIELD_KEY, _ascii(self.field)),
            (ERROR_BIN_KEY, self.to_pb().SerializeToString()),
        )


def _ascii(text: str) -> str:
    """``text`` as printable ASCII (a metadata value may hold nothing else): non-ASCII
    and control characters escaped as in a Python string literal."""
    return text.encode("unicode_escape").decode("ascii")


def _abort(context: grpc.ServicerContext, refusal: E2Refusal) -> None:
    context.set_trailing_metadata(refusal.trailers())
    context.abort(refusal.code, refusal.message)


def _listing(items: Sequence[object], limit: int = 64) -> str:
    text = ", ".join(map(str, items[:limit]))
    return text + (" ..." if len(items) > limit else "")


def _invalid(field: str, reason: str, cause: E2Cause) -> E2Refusal:
    return E2Refusal(grpc.StatusCode.INVALID_ARGUMENT, cause, field, reason)


# ----------------------------------------------------------------------------- KPM

#: units of the measurements (3GPP TS 28.552 §5.1.1 for the standard ones)
MEASUREMENT_UNITS: dict[str, str] = {
    "DRB.UEThpDl": "kbit/s",
    "DRB.UEThpUl": "kbit/s",
    "RRU.PrbTotDl": "%",
    "RRU.PrbTotUl": "%",
    "RRU.PrbUsedDl": "PRBs (mean per slot)",
    "RRU.PrbUsedUl": "PRBs (mean per slot)",
    "RRU.PrbAvailDl": "PRBs",
    "RRU.PrbAvailUl": "PRBs",
    "airan.L1CrcOkRatio": "ratio 0..1 of uplink transport blocks the L1 decoded",
    "airan.DeadlineMetRatio": "ratio 0..1",
    "airan.RadioBusy": "ratio 0..1 of the period",
    "airan.AiBusy": "ratio 0..1 of the period",
    "airan.HarvestRatio": "ratio 0..1 of the radio's idle time",
    "airan.RadioSlackLowUs": "us (1st percentile of radio task slack; -1: no task)",
    "airan.AiTokensPerS": "tokens/s",
    "airan.RadioTasks": "count",
    "airan.RadioMisses": "count",
    "airan.Tenant.<name>.Busy": "ratio 0..1 of the period",
}

STYLE_NODE = 1  # E2SM-KPM §7.4.1 E2 Node Measurement
STYLE_UES = 5  # E2SM-KPM §7.4.5 Measurements for multiple UEs


@dataclass(frozen=True, slots=True)
class _KpmAction:
    """An admitted KPM REPORT action."""

    action: e2_pb2.RicAction
    style: int
    names: tuple[str, ...]
    ue_ids: tuple[int, ...] | None  # style 5: None = all UEs

    @property
    def action_id(self) -> int:
        return self.action.ric_action_id

    def message(self, meas: Measurements) -> e2_pb2.KpmIndicationMessage:
        """E2SM-KPM §8.2.1.4 indication message: format 1 (node) or 3 (multiple UEs)."""
        if self.style == STYLE_NODE:
            node = meas.node
            return e2_pb2.KpmIndicationMessage(
                format=1, values={n: node.get(n, 0.0) for n in self.names}
            )
        ues = meas.ues
        ids = sorted(ues) if self.ue_ids is None else self.ue_ids
        out = []
        for ue in ids:
            vals = ues.get(ue)
            if vals is None:
                continue
            out.append(
                e2_pb2.UeMeasurements(
                    ue_id=ue, values={n: vals[n] for n in self.names if n in vals}
                )
            )
        return e2_pb2.KpmIndicationMessage(format=3, ues=out)


class RanFunctionBase:
    """A RAN function the agent hosts (E2AP §9.2.23). Subclasses override
    :meth:`admit_action` (REPORT actions) and/or :meth:`control`."""

    short_name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, node: Node, ran_function_id: int, oid: str, revision: int = 1) -> None:
        if not 0 <= ran_function_id <= 4095:
            raise FieldError("ran_function_id", f"must be 0..4095 (got {ran_function_id})")
        self.node = node
        self.ran_function_id = ran_function_id
        self.oid = oid
        self.revision = revision

    def definition(self) -> dict[str, Any]:
        """The RAN function definition (JSON-able)."""
        return {
            "ranFunctionName": {
                "ranFunctionShortName": self.short_name,
                "ranFunctionE2SMOID": self.oid,
                "ranFunctionDescription": self.description,
                "ranFunctionInstance": 1,
            }
        }

    def to_pb(self) -> e2_pb2.RanFunction:
        return e2_pb2.RanFunction(
            ran_function_id=self.ran_function_id,
            ran_function_oid=self.oid,
            ran_function_revision=self.revision,
            short_name=self.short_name,
            ran_function_definition=json.dumps(self.definition(), indent=None).encode(),
        )

    def check_period(self, period_ms: int) -> None:
        """Raise :class:`E2Refusal` if this function cannot report at ``period_ms``."""

    def admit_action(self, where: str, action: e2_pb2.RicAction, period_ms: int) -> _KpmAction:
        """Admit one REPORT action or raise :class:`E2Refusal` (not admitted)."""
        raise _invalid(
            f"{where}.ric_action_type",
            f"RAN function {self.ran_function_id} ({self.short_name}) has no report styles",
            ACTION_NOT_SUPPORTED,
        )

    def control(self, request: e2_pb2.RicControlRequest) -> e2_pb2.RicControlOutcome:
        """Execute one control request or raise :class:`E2Refusal` (nothing applied)."""
        raise _invalid(
            "ric_control_header.ric_style_type",
            f"RAN function {self.ran_function_id} ({self.short_name}) has no control styles",
            ACTION_NOT_SUPPORTED,
        )


class KpmFunction(RanFunctionBase):
    """E2SM-KPM v3: REPORT style 1 (E2 node measurement, §7.4.1; action definition
    format 1, indication message format 1) and style 5 (measurements for multiple UEs,
    §7.4.5; action definition format 5, indication message format 3)."""

    short_name = "ORAN-E2SM-KPM"
    description = "KPM Monitor"

    def node_names(self) -> list[str]:
        """Node-level names now (the per-tenant ones follow the tenants in force)."""
        tenants = set(self.node.config.policy.tenants) | set(self.node.arbiter.tenants)
        return [*self.node.NODE_MEASUREMENTS, *(f"airan.Tenant.{t}.Busy" for t in sorted(tenants))]

    def definition(self) -> dict[str, Any]:
        def meas(names: Iterable[str]) -> list[dict[str, Any]]:
            return [
                {
                    "measName": n,
                    "measID": i + 1,
                    "unit": MEASUREMENT_UNITS.get(
                        "airan.Tenant.<name>.Busy" if n.startswith("airan.Tenant.") else n, ""
                    ),
                }
                for i, n in enumerate(names)
            ]

        return {
            **super().definition(),
            "ricEventTriggerStyleList": [
                {
                    "ricEventTriggerStyleType": 1,
                    "ricEventTriggerStyleName": "Periodic Report",
                    "ricEventTriggerFormatType": 1,
                    "reportingPeriodMs": {"min": MIN_PERIOD_MS, "max": MAX_PERIOD_MS},
                }
            ],
            "ricReportStyleList": [
                {
                    "ricReportStyleType": STYLE_NODE,
                    "ricReportStyleName": "E2 Node Measurement",
                    "ricActionFormatType": 1,
                    "measInfoActionList": meas(self.node_names()),
                    "ricIndicationHeaderFormatType": 1,
                    "ricIndicationMessageFormatType": 1,
                },
                {
                    "ricReportStyleType": STYLE_UES,
                    "ricReportStyleName": "Measurements for multiple UEs",
                    "ricActionFormatType": 5,
                    "measInfoActionList": meas(self.node.UE_MEASUREMENTS),
                    "ricIndicationHeaderFormatType": 1,
                    "ricIndicationMessageFormatType": 3,
                },
            ],
        }

    def ue_ids(self) -> list[int]:
        """The UE IDs the node reports on now (the keys of its per-UE measurements)."""
        snap = self.node.snapshot()
        return sorted(self.node.measurements(snap, snap).ues)

    def admit_action(self, where: str, action: e2_pb2.RicAction, period_ms: int) -> _KpmAction:
        t = action.ric_action_type
        if t != e2_pb2.RIC_ACTION_TYPE_REPORT:
            # proto3 enums are open: an unknown number arrives as is (Name() would raise;
            # found by tests/test_fuzz_grpc.py)
            named = t in e2_pb2.RicActionType.values()
            raise _invalid(
                f"{where}.ric_action_type",
                f"{e2_pb2.RicActionType.Name(t) if named else f'unknown action type {t}'} "
                "is not supported; KPM supports REPORT",
                ACTION_NOT_SUPPORTED,
            )
        if not action.HasField("kpm"):
            raise _invalid(
                f"{where}.kpm", "a KPM action definition is required", INVALID_INFORMATION_REQUEST
            )
        d = action.kpm
        if d.ric_style_type not in (STYLE_NODE, STYLE_UES):
            raise _invalid(
                f"{where}.kpm.ric_style_type",
                f"report style {d.ric_style_type} is not supported (1: E2 node measurement, "
                "5: measurements for multiple UEs)",
                ACTION_NOT_SUPPORTED,
            )
        if d.granularity_period_ms not in (0, period_ms):
            raise _invalid(
                f"{where}.kpm.granularity_period_ms",
                f"must be 0 or the reporting period ({period_ms} ms), got "
                f"{d.granularity_period_ms}",
                ACTION_NOT_SUPPORTED,
            )
        if not d.measurement_names:
            raise _invalid(
                f"{where}.kpm.measurement_names",
                "name at least one measurement",
                INVALID_INFORMATION_REQUEST,
            )
        known = self.node_names() if d.ric_style_type == STYLE_NODE else self.node.UE_MEASUREMENTS
        known_set = set(known)
        seen: set[str] = set()
        for i, name in enumerate(d.measurement_names):
            if name not in known_set:
                raise _invalid(
                    f"{where}.kpm.measurement_names[{i}]",
                    f"unknown measurement {name!r} for report style {d.ric_style_type}; "
                    f"known: {', '.join(known)}",
                    REQUESTED_INFORMATION_UNAVAILABLE,
                )
            if name in seen:
                raise _invalid(
                    f"{where}.kpm.measurement_names[{i}]",
                    f"measurement {name!r} named twice",
                    INVALID_INFORMATION_REQUEST,
                )
            seen.add(name)
        ue_ids: tuple[int, ...] | None = None
        if d.ric_style_type == STYLE_NODE and d.ue_ids:
            raise _invalid(
                f"{where}.kpm.ue_ids",
                "a UE filter needs report style 5 (measurements for multiple UEs)",
                INVALID_INFORMATION_REQUEST,
            )
        if d.ue_ids:
            if len(d.ue_ids) > MAX_UE_IDS:
                raise _invalid(
                    f"{where}.kpm.ue_ids", f"at most {MAX_UE_IDS} UEs", INVALID_INFORMATION_REQUEST
                )
            known_ues = self.ue_ids()
            known_ue_set = set(known_ues)
            for i, ue in enumerate(d.ue_ids):
                if ue not in known_ue_set:
                    raise _invalid(
                        f"{where}.kpm.ue_ids[{i}]",
                        f"unknown UE {ue}; the node serves UEs {_listing(known_ues)}",
                        REQUESTED_INFORMATION_UNAVAILABLE,
                    )
            ue_ids = tuple(sorted(set(d.ue_ids)))
        return _KpmAction(action, int(d.ric_style_type), tuple(d.measurement_names), ue_ids)


# ----------------------------------------------------------------------------- control


def _outcome(ticket: ControlTicket, applied_json: str) -> e2_pb2.RicControlOutcome:
    return e2_pb2.RicControlOutcome(
        requested_ns=ticket.requested_ns,
        applied_ns=ticket.applied_ns,
        control_to_effect_ns=ticket.applied_ns - ticket.requested_ns,
        applied_json=applied_json,
    )


def _node_error(exc: FieldError, where: str) -> E2Refusal:
    """A FieldError the node raised while applying a control: the arbiter's loop not
    taking it in time (:class:`ControlTimeoutError`, withdrawn) is DEADLINE_EXCEEDED
    ``ricRequest/control-timer-expired``; anything else the message was invalid."""
    if isinstance(exc, ControlTimeoutError):
        return E2Refusal(
            grpc.StatusCode.DEADLINE_EXCEEDED, CONTROL_TIMER_EXPIRED, exc.field, exc.reason
        )
    return E2Refusal(
        grpc.StatusCode.INVALID_ARGUMENT, CONTROL_MESSAGE_INVALID, f"{where}{exc.field}", exc.reason
    )


def _check_header(
    request: e2_pb2.RicControlRequest, actions: Mapping[tuple[int, int], str]
) -> tuple[int, int]:
    h = request.ric_control_header
    key = (int(h.ric_style_type), int(h.ric_control_action_id))
    if key not in actions:
        styles = sorted({s for s, _ in actions})
        if key[0] not in styles:
            raise _invalid(
                "ric_control_header.ric_style_type",
                f"control style {key[0]} is not supported (styles: {styles})",
                ACTION_NOT_SUPPORTED,
            )
        ids = sorted(a for s, a in actions if s == key[0])
        raise _invalid(
            "ric_control_header.ric_control_action_id",
            f"control action {key[1]} of style {key[0]} is not supported (actions: {ids})",
            ACTION_NOT_SUPPORTED,
        )
    return key


def _need_message(request: e2_pb2.RicControlRequest, which: str) -> None:
    have = request.ric_control_message.WhichOneof("message")
    if have != which:
        raise _invalid(
            f"ric_control_message.{which}",
            f"this control action needs a {which} message (got {have or 'none'})",
            CONTROL_MESSAGE_INVALID,
        )


_RATIOS = ("min_prb_policy_ratio", "max_prb_policy_ratio", "dedicated_prb_policy_ratio")


class RcFunction(RanFunctionBase):
    """E2SM-RC control style 2 "Radio Resource Allocation Control", action 6
    "Slice-level PRB quota" (O-RAN.WG3.E2SM-RC §7.6.3): the list of S-NSSAIs with their
    min / max / dedicated PRB policy ratios (3GPP TS 28.541 §4.3.36), replacing the set
    in force as a whole."""

    short_name = "ORAN-E2SM-RC"
    description = "RAN Control"
    ACTIONS: ClassVar[dict[tuple[int, int], str]] = {(2, 6): "Slice-level PRB quota"}

    def definition(self) -> dict[str, Any]:
        return {
            **super().definition(),
            "ranFunctionDefinitionControl": {
                "ricControlStyleList": [
                    {
                        "ricControlStyleType": 2,
                        "ricControlStyleName": "Radio Resource Allocation Control",
                        "ricControlHeaderFormatType": 1,
                        "ricControlMessageFormatType": 1,
                        "ricControlActionList": [
                            {
                                "ricControlActionID": 6,
                                "ricControlActionName": "Slice-level PRB quota",
                                "ranParameters": [
                                    "sst",
                                    "sd",
                                    "min_prb_policy_ratio",
                                    "max_prb_policy_ratio",
                                    "dedicated_prb_policy_ratio",
                                ],
                            }
                        ],
                    }
                ]
            },
        }

    @staticmethod
    def quotas(msg: e2_pb2.SlicePrbQuotaControl) -> tuple[SliceQuota, ...]:
        """Validate the whole message (proto field names in errors) → the quotas."""
        base = "ric_control_message.slice_prb_quota.quotas"
        out: list[SliceQuota] = []
        for i, q in enumerate(msg.quotas):
            where = f"{base}[{i}]"
            if q.sst > 255:
                raise _invalid(
                    f"{where}.sst", f"must be 0..255, got {q.sst}", CONTROL_MESSAGE_INVALID
                )
            if q.HasField("sd") and q.sd > 0xFFFFFE:
                raise _invalid(
                    f"{where}.sd", f"must be 0..0xFFFFFE, got {q.sd}", CONTROL_MESSAGE_INVALID
                )
            for name in _RATIOS:
                v = getattr(q, name)
                if v > 100:
                    raise _invalid(
                        f"{where}.{name}", f"must be 0..100 (%), got {v}", CONTROL_MESSAGE_INVALID
                    )
            if q.min_prb_policy_ratio > q.max_prb_policy_ratio:
                raise _invalid(
                    f"{where}.min_prb_policy_ratio",
                    f"min ({q.min_prb_policy_ratio}) must be <= max ({q.max_prb_policy_ratio})",
                    CONTROL_MESSAGE_INVALID,
                )
            if q.dedicated_prb_policy_ratio > q.min_prb_policy_ratio:
                raise _invalid(
                    f"{where}.dedicated_prb_policy_ratio",
                    f"dedicated ({q.dedicated_prb_policy_ratio}) must be <= min "
                    f"({q.min_prb_policy_ratio})",
                    CONTROL_MESSAGE_INVALID,
                )
            try:
                out.append(
                    SliceQuota(
                        snssai=Snssai(sst=q.sst, sd=q.sd if q.HasField("sd") else None),
                        min_ratio=q.min_prb_policy_ratio,
                        max_ratio=q.max_prb_policy_ratio,
                        dedicated_ratio=q.dedicated_prb_policy_ratio,
                    )
                )
            except ValueError as exc:  # pragma: no cover - the checks above are complete
                raise _invalid(where, str(exc), CONTROL_MESSAGE_INVALID) from None
        try:
            return check_quotas(out, field=base)
        except FieldError as exc:
            raise E2Refusal.from_field_error(exc) from None

    def control(self, request: e2_pb2.RicControlRequest) -> e2_pb2.RicControlOutcome:
        _check_header(request, self.ACTIONS)
        _need_message(request, "slice_prb_quota")
        quotas = self.quotas(request.ric_control_message.slice_prb_quota)
        t0 = time.perf_counter_ns()
        try:
            self.node.set_slice_quotas(quotas)
        except FieldError as exc:
            raise _node_error(exc, "ric_control_message.slice_prb_quota.") from None
        t1 = time.perf_counter_ns()
        applied = json.dumps([q.model_dump() for q in self.node.config.ran.slice_quotas])
        return e2_pb2.RicControlOutcome(
            requested_ns=t0, applied_ns=t1, control_to_effect_ns=t1 - t0, applied_json=applied
        )


def _json_value(v: struct_pb2.Value, where: str) -> Any:
    """A ``google.protobuf.Value`` as plain JSON data; a NaN or infinite number (which a
    ``Value`` can carry and JSON cannot) is refused naming its place (found by
    tests/test_fuzz_grpc.py: ``json_format.MessageToDict`` raised ``ValueError``, which
    ended the call with INTERNAL)."""
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(v.number_value):
            raise _invalid(
                where, f"must be a finite number, got {v.number_value}", CONTROL_MESSAGE_INVALID
            )
        return v.number_value
    if kind == "struct_value":
        return _struct_fields(v.struct_value, where)
    if kind == "list_value":
        return [_json_value(x, f"{where}[{i}]") for i, x in enumerate(v.list_value.values)]
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    return None  # null_value, or no kind set


def _struct_fields(s: struct_pb2.Struct, where: str) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict (see :func:`_json_value`)."""
    return {k: _json_value(v, f"{where}.{k}") for k, v in s.fields.items()}


#: Policy fields a co-scheduling policy control may change
POLICY_FIELDS: tuple[str, ...] = tuple(Policy.model_fields)


class CoschedFunction(RanFunctionBase):
    """airan's co-scheduling service model (OID :data:`COSCHED_OID`): control of the
    arbiter that shares the device between the radio and AI tenants.

    * style 1 "Co-scheduling policy", action 1 "Policy update": a partial
      :class:`~airan.core.policy.Policy` (``guard_us``, ``max_ai_slice_us``,
      ``ai_share_cap``, ``share_window_us``, ``lookahead_us``, ``tenants`` {name:
      {weight, quota_us_per_s, paused}}, ...) merged over the policy in force
      (tenants by name), validated as a whole, handed to the arbiter loop;
    * style 2 "AI tenant control", action 1 "Pause tenant", action 2 "Resume tenant".

    The outcome carries the ticket's control-to-effect latency (request handed to the
    loop → applied before its next decision).
    """

    short_name = "AIRAN-E2SM-COSCHED"
    description = "Radio/AI co-scheduling control"
    ACTIONS: ClassVar[dict[tuple[int, int], str]] = {
        (1, 1): "Policy update",
        (2, 1): "Pause tenant",
        (2, 2): "Resume tenant",
    }

    def __init__(
        self, node: Node, ran_function_id: int, oid: str, revision: int = 1, timeout_s: float = 5.0
    ) -> None:
        super().__init__(node, ran_function_id, oid, revision)
        self.timeout_s = timeout_s

    def definition(self) -> dict[str, Any]:
        return {
            **super().definition(),
            "ranFunctionDefinitionControl": {
                "ricControlStyleList": [
                    {
                        "ricControlStyleType": 1,
                        "ricControlStyleName": "Co-scheduling policy",
                        "ricControlActionList": [
                            {
                                "ricControlActionID": 1,
                                "ricControlActionName": "Policy update",
                                "message": "policy",
                                "policyFields": list(POLICY_FIELDS),
                            }
                        ],
                    },
                    {
                        "ricControlStyleType": 2,
                        "ricControlStyleName": "AI tenant control",
                        "ricControlActionList": [
                            {
                                "ricControlActionID": 1,
                                "ricControlActionName": "Pause tenant",
                                "message": "tenant",
                            },
                            {
                                "ricControlActionID": 2,
                                "ricControlActionName": "Resume tenant",
                                "message": "tenant",
                            },
                        ],
                    },
                ]
            },
        }

    def merged_policy(self, fields: Mapping[str, Any], base: Policy | None = None) -> Policy:
        """``fields`` merged over ``base`` (default: the policy in force), validated
        (FieldError)."""
        where = "ric_control_message.policy.fields"
        if not fields:
            raise FieldError(where, "name at least one policy field to change")
        current = (base if base is not None else self.node.config.policy).model_dump()
        merged = dict(current)
        for key, value in fields.items():
            if key not in POLICY_FIELDS:
                raise FieldError(
                    f"{where}.{key}",
                    f"unknown policy field; known: {', '.join(POLICY_FIELDS)}",
                )
            if key == "tenants":
                if not isinstance(value, Mapping):
                    raise FieldError(f"{where}.tenants", "must be an object {name: {...}}")
                tenants = dict(current["tenants"])
                if not tenants:  # declaring tenants means declaring every one that has jobs
                    for name in self.node.arbiter.tenants:
                        tenants[name] = TenantPolicy().model_dump()
                for name, tp in value.items():
                    if not isinstance(tp, Mapping):
                        raise FieldError(f"{where}.tenants.{name}", "must be an object")
                    tenants[name] = {**tenants.get(name, TenantPolicy().model_dump()), **tp}
                merged["tenants"] = tenants
            elif key == "fifo_depth" and isinstance(value, float) and value.is_integer():
                merged[key] = int(value)  # a Struct carries every number as a double
            else:
                merged[key] = value
        try:
            return Policy.parse(merged)
        except FieldError as exc:
            f = exc.field
            raise FieldError(
                f"{where}{f[len('policy') :]}" if f.startswith("policy") else f, exc.reason
            ) from None

    def control(self, request: e2_pb2.RicControlRequest) -> e2_pb2.RicControlOutcome:
        style, action = _check_header(request, self.ACTIONS)
        if style == 1:
            _need_message(request, "policy")
            fields = _struct_fields(
                request.ric_control_message.policy.fields, "ric_control_message.policy.fields"
            )
            tickets: list[ControlTicket] = []

            def change(cur: NodeConfig) -> NodeConfig:
                # read-modify-write under the node's configuration lock: a concurrent
                # partial control (or O1 Set) cannot slip in between and be undone
                try:
                    policy = self.merged_policy(fields, cur.policy)
                except FieldError as exc:
                    raise E2Refusal.from_field_error(exc) from None
                try:
                    tickets.append(self.node.set_policy(policy, self.timeout_s))
                except FieldError as exc:
                    raise _node_error(exc, "ric_control_message.policy.fields.") from None
                return self.node.config  # in force already: nothing left to apply

            new, _ = self.node.update_config(change, self.timeout_s)
            return _outcome(tickets[0], new.policy.model_dump_json())
        else:
            _need_message(request, "tenant")
            name = request.ric_control_message.tenant.tenant
            try:
                ticket = self.node.set_tenant_paused(name, action == 1, self.timeout_s)
            except FieldError as exc:
                if exc.field == "tenant":
                    raise E2Refusal(
                        grpc.StatusCode.NOT_FOUND,
                        CONTROL_MESSAGE_INVALID,
                        "ric_control_message.tenant.tenant",
                        exc.reason,
                    ) from None
                raise _node_error(exc, "ric_control_message.tenant.") from None
        return _outcome(ticket, self.node.config.policy.model_dump_json())


# ----------------------------------------------------------------------------- subscriptions

_Key = tuple[int, int]
#: a queued stream message: an event, or an indication event already serialized
_Event = e2_pb2.RicSubscriptionEvent | bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: tag of RicIndication.ric_indication_sn (field 4, varint)
_SN_TAG = b"\x20"
#: tag of RicSubscriptionEvent.indication (field 2, length-delimited)
_INDICATION_TAG = b"\x12"


def _serialize_event(ev: _Event) -> bytes:
    """The Subscribe stream's serializer: events, or bytes serialized already."""
    if isinstance(ev, bytes):
        return ev
    out: bytes = ev.SerializeToString()
    return out


def _key(rid: e2_pb2.RicRequestId) -> _Key:
    return (int(rid.ric_requestor_id), int(rid.ric_instance_id))


def _check_request_id(rid: e2_pb2.RicRequestId) -> None:
    """E2AP §9.2.7 RIC Request ID: requestor and instance 0..65535 each."""
    for name in ("ric_requestor_id", "ric_instance_id"):
        v = getattr(rid, name)
        if v > 65535:
            raise _invalid(
                f"ric_request_id.{name}", f"must be 0..65535, got {v}", RIC_REQUEST_UNSPECIFIED
            )


@dataclass(eq=False)
class _Subscription:
    """One admitted subscription: its timer state and its bounded queue."""

    key: _Key
    request: e2_pb2.RicSubscriptionRequest
    function: RanFunctionBase
    actions: tuple[_KpmAction, ...]
    period_ns: int
    peer: str
    max_queue: int
    prev: NodeSnapshot
    prev_unix_ns: int
    #: the authenticated application that created it (``None``: no access control)
    owner: str | None = None
    created_unix_ns: int = field(default_factory=time.time_ns)
    due_ns: int = 0
    sent: int = 0
    sn: dict[int, int] = field(default_factory=dict)
    items: deque[_Event] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    done: bool = False  # nothing more will be queued
    cancelled: bool = False  # the subscriber went away
    #: called (outside the lock) whenever something was queued or the subscription
    #: ended: the asyncio stream's wake-up (the sync stream waits on ``cond``)
    notify: Callable[[], None] | None = None
    #: per action: the serialized constant fields of its indications
    prefix: dict[int, bytes] = field(default_factory=dict)
    #: indications not queued because the queue was full: each such period is merged
    #: into the next indication that is queued (no measurement lost, no SN skipped)
    dropped: int = 0
    #: reporting rounds merged in a row since the subscriber last took an event
    stalled: int = 0

    def _wake(self) -> None:
        if self.notify is not None:
            self.notify()

    def merge(self, n: int) -> int:
        """Count ``n`` indications not queued (their period merges into the next one);
        return the rounds merged in a row since the subscriber last took an event."""
        with self.cond:
            self.dropped += n
            self.stalled += 1
            return self.stalled

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more events fit in the queue (or the subscription has ended)."""
        with self.cond:
            return self.done or len(self.items) + n <= self.max_queue

    def put_many(self, events: Sequence[_Event]) -> bool:
        """Queue ``events``; ``False`` (nothing queued) if that would exceed the bound."""
        with self.cond:
            if self.done:
                return True
            if len(self.items) + len(events) > self.max_queue:
                return False
            self.items.extend(events)
            self.cond.notify()
        self._wake()
        return True

    def end(self, ended_by: int, cause: E2Cause, reason: str) -> bool:
        """Queue the deletion notice (after everything queued); ``False`` if already ended."""
        with self.cond:
            if self.done:
                return False
            self.done = True
            notice = e2_pb2.RicSubscriptionDeleteNotice(
                ric_request_id=self.request.ric_request_id,
                ran_function_id=self.request.ran_function_id,
                ended_by=ended_by,  # type: ignore[arg-type]
                cause=cause.to_pb(),
                reason=reason,
                last_indication_sn=dict(self.sn),
            )
            self.items.append(e2_pb2.RicSubscriptionEvent(deleted=notice))
            self.cond.notify()
        self._wake()
        return True

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.done = True
            self.cond.notify()
        self._wake()

    def get(self, timeout_s: float) -> _Event | None:
        with self.cond:
            if not self.items and not self.cancelled:
                self.cond.wait(timeout_s)
            if self.cancelled or not self.items:
                return None
            self.stalled = 0
            return self.items.popleft()

    def pop(self) -> _Event | None:
        """The next queued event, without waiting (``None``: none, or cancelled)."""
        with self.cond:
            if self.cancelled or not self.items:
                return None
            self.stalled = 0
            return self.items.popleft()

    def info(self) -> e2_pb2.SubscriptionInfo:
        with self.cond:
            queued = len(self.items)
        return e2_pb2.SubscriptionInfo(
            ric_request_id=self.request.ric_request_id,
            ran_function_id=self.request.ran_function_id,
            reporting_period_ms=self.request.ric_event_trigger.reporting_period_ms,
            ric_actions=[a.action for a in self.actions],
            peer=self.peer,
            indications_sent=self.sent,
            queued=queued,
            created_unix_ns=self.created_unix_ns,
            app=self.owner or "",
        )


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Timers:
    """The subscriptions' periodic timers: a heap of due times, served by one thread or,
    with ``loop``, by callbacks on that asyncio event loop (the loop the ``grpc.aio``
    server streams from: an indication then goes from the counters to the stream
    without a thread hand-off).

    Periods are aligned to multiples of the period (on ``perf_counter_ns``), so
    subscriptions with equal periods fall due together and share one counter snapshot
    and one serialized measurement part. The timer never blocks on a subscriber (queues
    are bounded and non-blocking).
    """

    def __init__(self, agent: E2Agent, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.agent = agent
        self.heap: list[tuple[int, int, _Subscription]] = []
        self.cond = threading.Condition()
        self.counter = itertools.count()
        self.closed = False
        self.late = 0  # periods reported more than one period late (covered, not lost)
        self.loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self.thread: threading.Thread | None = None
        if loop is None:
            self.thread = threading.Thread(target=self._run, name="airan-e2-timers", daemon=True)
            self.thread.start()

    def add(self, sub: _Subscription) -> None:
        with self.cond:
            heapq.heappush(self.heap, (sub.due_ns, next(self.counter), sub))
            self.cond.notify()
        if self.loop is not None:
            self._soon(self._arm)

    def _soon(self, fn: Callable[[], None]) -> None:
        assert self.loop is not None
        if _on_loop(self.loop):
            fn()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(5.0)
        if self.loop is not None:
            self._soon(self._disarm)

    # -- on an event loop ------------------------------------------------------------
    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        assert self.loop is not None
        self._disarm()
        with self.cond:
            if self.closed or not self.heap:
                return
            top = self.heap[0][0]
        delay = (top - time.perf_counter_ns()) / 1e9
        self._handle = self.loop.call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        self._handle = None
        due = self._pop_due()
        if due:
            self._serve(due)
        self._arm()

    # -- in a thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed:
                    now = time.perf_counter_ns()
                    if self.heap and self.heap[0][0] <= now:
                        break
                    wait = (self.heap[0][0] - now) / 1e9 if self.heap else 1.0
                    self.cond.wait(wait)
                if self.closed:
                    return
            due = self._pop_due()
            if due:
                self._serve(due)

    # -- either ----------------------------------------------------------------------
    def _pop_due(self) -> list[_Subscription]:
        due: list[_Subscription] = []
        with self.cond:
            if self.closed:
                return due
            now = time.perf_counter_ns()
            while self.heap and self.heap[0][0] <= now:
                due.append(heapq.heappop(self.heap)[2])
        return [s for s in due if not s.done]

    def _serve(self, due: list[_Subscription]) -> None:
        try:
            self._report(due)
        except Exception:  # never let one bad period kill every subscription
            log.exception("E2 reporting failed")
        with self.cond:
            now = time.perf_counter_ns()
            for sub in due:
                if sub.done:
                    continue
                nxt = sub.due_ns + sub.period_ns
                if nxt <= now:
                    self.late += 1
                    nxt = (now // sub.period_ns + 1) * sub.period_ns
                sub.due_ns = nxt
                heapq.heappush(self.heap, (nxt, next(self.counter), sub))

    def _report(self, due: list[_Subscription]) -> None:
        """One indication per action of every due subscription, serialized: the part
        shared by subscriptions of the same period and measurements (header + message)
        once, then per indication only its own fields (request ID, action, SN) spliced
        in front — a protobuf message may be the concatenation of its fields."""
        node = self.agent.node
        cur = node.snapshot()
        cur_unix = time.time_ns()
        cache: dict[int, Measurements] = {}
        shared: dict[tuple[Any, ...], bytes] = {}
        for sub in due:
            if not sub.has_room(len(sub.actions)):  # full: merge this period, build nothing
                self.agent._dropped(sub, len(sub.actions))
                continue
            meas = cache.get(id(sub.prev))
            if meas is None:
                meas = cache[id(sub.prev)] = node.measurements(sub.prev, cur)
            events: list[_Event] = []
            sns = {}
            for act in sub.actions:
                key: tuple[Any, ...] = (id(sub.prev), sub.prev_unix_ns, sub.period_ns)
                key += (act.style, act.names, act.ue_ids)
                part = shared.get(key)
                if part is None:
                    header = e2_pb2.KpmIndicationHeader(
                        collet_start_time_ns=sub.prev_unix_ns,
                        collet_end_time_ns=cur_unix,
                        granularity_period_ms=sub.period_ns // 1_000_000,
                        file_format_version="1.0",
                        sender_name=node.node_id,
                        sender_type="gNB-DU",
                        vendor_name="airan",
                    )
                    part = shared[key] = e2_pb2.RicIndication(
                        ric_indication_header=header, ric_indication_message=act.message(meas)
                    ).SerializeToString()
                prefix = sub.prefix.get(act.action_id)
                if prefix is None:
                    prefix = sub.prefix[act.action_id] = e2_pb2.RicIndication(
                        ric_request_id=sub.request.ric_request_id,
                        ran_function_id=sub.request.ran_function_id,
                        ric_action_id=act.action_id,
                        ric_indication_type=e2_pb2.RIC_INDICATION_TYPE_REPORT,
                    ).SerializeToString()
                sn = sub.sn.get(act.action_id, 0) + 1
                sns[act.action_id] = sn
                body = b"".join((prefix, _SN_TAG, _varint(sn), part))
                events.append(b"".join((_INDICATION_TAG, _varint(len(body)), body)))
            if sub.put_many(events):
                sub.prev, sub.prev_unix_ns = cur, cur_unix
                sub.sn.update(sns)
                sub.sent += len(events)
            else:  # filled up since has_room(): merged like any full period
                self.agent._dropped(sub, len(events))


@dataclass(frozen=True, slots=True)
class _Limits:
    max_subscriptions: int
    max_queue: int
    max_stalled_periods: int


class E2Agent:
    """The E2 node agent: hosts RAN functions (by ID, looked up by OID) on one
    :class:`~airan.node.Node` and serves ``airan.e2.v1.E2Node`` (see :meth:`servicer`,
    :meth:`registration`, :func:`serve_e2`).

    ``max_subscriptions``: admitted subscriptions at most (more ⇒ RESOURCE_EXHAUSTED,
    ``ricRequest/function-resource-limit``); ``max_queue``: indications queued per
    subscription, at most; ``max_stalled_periods`` (default ``max_queue``): reporting
    periods merged in a row, with the queue full and the subscriber taking nothing,
    before the node ends the subscription (see the module doc: slow subscribers).
    ``loop``: the asyncio event loop of the ``grpc.aio`` server that will serve it
    (:meth:`aio_servicer`); the reporting timers then run on that loop instead of a
    thread of their own.
    """

    def __init__(
        self,
        node: Node,
        *,
        plmn_identity: str = "00101",
        gnb_du_id: int = 1,
        max_subscriptions: int = 128,
        max_queue: int = 1024,
        max_stalled_periods: int | None = None,
        control_timeout_s: float = 5.0,
        functions: Sequence[RanFunctionBase] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not 1 <= max_subscriptions <= 100_000:
            raise FieldError("max_subscriptions", f"must be 1..100000, got {max_subscriptions}")
        if not 2 <= max_queue <= 1_000_000:
            raise FieldError("max_queue", f"must be 2..1000000, got {max_queue}")
        stalled = max_queue if max_stalled_periods is None else max_stalled_periods
        if isinstance(stalled, bool) or not isinstance(stalled, int) or not 1 <= stalled <= 10**7:
            raise FieldError(
                "max_stalled_periods", f"must be an int in 1..10000000, got {max_stalled_periods!r}"
            )
        self.node = node
        self.plmn_identity = plmn_identity
        self.gnb_du_id = gnb_du_id
        self.limits = _Limits(max_subscriptions, max_queue, stalled)
        fns = (
            list(functions)
            if functions is not None
            else [
                KpmFunction(node, 2, KPM_OID, revision=3),
                RcFunction(node, 3, RC_OID),
                CoschedFunction(node, 4, COSCHED_OID, timeout_s=control_timeout_s),
            ]
        )
        self.functions: dict[int, RanFunctionBase] = {}
        self.by_oid: dict[str, RanFunctionBase] = {}
        for i, fn in enumerate(fns):
            if fn.ran_function_id in self.functions:
                raise FieldError(f"functions[{i}].ran_function_id", "used twice")
            if fn.oid in self.by_oid:
                raise FieldError(f"functions[{i}].oid", "used twice")
            self.functions[fn.ran_function_id] = fn
            self.by_oid[fn.oid] = fn
        self._lock = threading.Lock()
        self._subs: dict[_Key, _Subscription] = {}
        self._closed = False
        #: subscriptions ended because their subscriber stalled (E2AP §8.2.4)
        self.overflows = 0
        #: indications not queued because a subscriber's queue was full (merged into the
        #: next one: see the module doc), over all subscriptions
        self.dropped = 0
        self.loop = loop
        self._timers = _Timers(self, loop)

    # -- lookup ----------------------------------------------------------------------
    def function(self, ran_function_id: int, field: str = "ran_function_id") -> RanFunctionBase:
        fn = self.functions.get(ran_function_id)
        if fn is None:
            raise E2Refusal(
                grpc.StatusCode.NOT_FOUND,
                RAN_FUNCTION_ID_INVALID,
                field,
                f"no RAN function {ran_function_id}; the node has "
                f"{', '.join(f'{i} ({f.short_name})' for i, f in sorted(self.functions.items()))}",
            )
        return fn

    def function_by_oid(self, oid: str, field: str = "ran_function_oid") -> RanFunctionBase:
        fn = self.by_oid.get(oid)
        if fn is None:
            raise E2Refusal(
                grpc.StatusCode.NOT_FOUND,
                RAN_FUNCTION_NOT_SUPPORTED,
                field,
                f"no RAN function with OID {oid!r}; the node has "
                f"{', '.join(f'{f.oid} ({f.short_name})' for f in self.functions.values())}",
            )
        return fn

    # -- setup ---------------------------------------------------------------------------
    def setup(self, oids: Sequence[str] = ()) -> e2_pb2.GetSetupResponse:
        fns = (
            [self.function_by_oid(o, f"ran_function_oids[{i}]") for i, o in enumerate(oids)]
            if oids
            else [self.functions[k] for k in sorted(self.functions)]
        )
        return e2_pb2.GetSetupResponse(
            global_e2_node_id=e2_pb2.GlobalE2NodeId(
                plmn_identity=self.plmn_identity,
                node_type=e2_pb2.E2_NODE_TYPE_GNB_DU,
                gnb_id=self.node.node_id,
                gnb_du_id=self.gnb_du_id,
            ),
            ran_functions=[f.to_pb() for f in fns],
        )

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(
        self,
        request: e2_pb2.RicSubscriptionRequest,
        peer: str = "",
        caller: CallInfo | None = None,
    ) -> tuple[_Subscription, e2_pb2.RicSubscriptionResponse]:
        """Admit a subscription (E2AP §8.2.1) or raise :class:`E2Refusal`. ``caller``:
        the authenticated application (:func:`~airan.ric.security.current_call`), which
        then owns the subscription."""
        rid = request.ric_request_id
        _check_request_id(rid)
        fn = self.function(request.ran_function_id)
        period = request.ric_event_trigger.reporting_period_ms
        if not MIN_PERIOD_MS <= period <= MAX_PERIOD_MS:
            raise _invalid(
                "ric_event_trigger.reporting_period_ms",
                f"must be {MIN_PERIOD_MS}..{MAX_PERIOD_MS} ms (1 ms .. 1 h), got {period}",
                EVENT_TRIGGER_NOT_SUPPORTED,
            )
        fn.check_period(period)
        acts = request.ric_actions
        if not acts:
            raise _invalid("ric_actions", "name at least one action", INVALID_INFORMATION_REQUEST)
        if len(acts) > MAX_ACTIONS:
            raise _invalid(
                "ric_actions", f"at most {MAX_ACTIONS} actions, got {len(acts)}", EXCESSIVE_ACTIONS
            )
        seen: set[int] = set()
        for i, a in enumerate(acts):
            if a.ric_action_id > 255:
                raise _invalid(
                    f"ric_actions[{i}].ric_action_id",
                    f"must be 0..255, got {a.ric_action_id}",
                    INVALID_INFORMATION_REQUEST,
                )
            if a.ric_action_id in seen:
                raise _invalid(
                    f"ric_actions[{i}].ric_action_id",
                    f"action {a.ric_action_id} appears twice",
                    DUPLICATE_ACTION,
                )
            seen.add(a.ric_action_id)
        admitted: list[_KpmAction] = []
        refused: list[E2Refusal] = []
        not_admitted: list[e2_pb2.RicActionNotAdmitted] = []
        for i, a in enumerate(acts):
            try:
                admitted.append(fn.admit_action(f"ric_actions[{i}]", a, period))
            except E2Refusal as r:
                refused.append(r)
                not_admitted.append(
                    e2_pb2.RicActionNotAdmitted(
                        ric_action_id=a.ric_action_id,
                        cause=r.cause.to_pb(),
                        field=r.field,
                        reason=r.reason,
                    )
                )
        if not admitted:  # E2AP RIC SUBSCRIPTION FAILURE
            first = refused[0]
            if len(refused) > 1:
                first = E2Refusal(
                    first.code,
                    first.cause,
                    first.field,
                    first.reason
                    + f" (and {len(refused) - 1} more actions not admitted: "
                    + "; ".join(r.message for r in refused[1:])
                    + ")",
                )
            raise first
        period_ns = period * 1_000_000
        key = _key(rid)
        with self._lock:
            if self._closed:
                raise E2Refusal(
                    grpc.StatusCode.UNAVAILABLE,
                    _rr("system-not-ready"),
                    "ran_function_id",
                    "the node is shutting down",
                )
            if key in self._subs:
                raise E2Refusal(
                    grpc.StatusCode.ALREADY_EXISTS,
                    DUPLICATE_RIC_REQUEST_ID,
                    "ric_request_id",
                    f"RIC request {key[0]}:{key[1]} already names an active subscription",
                )
            if len(self._subs) >= self.limits.max_subscriptions:
                raise E2Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    FUNCTION_RESOURCE_LIMIT,
                    "ric_request_id",
                    f"the node already has {len(self._subs)} subscriptions "
                    f"(max_subscriptions={self.limits.max_subscriptions})",
                )
            now = time.perf_counter_ns()
            sub = _Subscription(
                key=key,
                request=request,
                function=fn,
                actions=tuple(admitted),
                period_ns=period_ns,
                peer=peer,
                max_queue=self.limits.max_queue,
                prev=self.node.snapshot(),
                prev_unix_ns=time.time_ns(),
                owner=None if caller is None else caller.app.name,
            )
            # the first boundary at least half a period away: the first period is partial
            sub.due_ns = ((now + period_ns // 2) // period_ns + 1) * period_ns
            self._subs[key] = sub
        self._timers.add(sub)
        response = e2_pb2.RicSubscriptionResponse(
            ric_request_id=rid,
            ran_function_id=request.ran_function_id,
            ric_actions_admitted=[a.action_id for a in admitted],
            ric_actions_not_admitted=not_admitted,
        )
        return sub, response

    def delete(
        self,
        request: e2_pb2.RicSubscriptionDeleteRequest,
        peer: str = "",
        caller: CallInfo | None = None,
    ) -> None:
        """RIC subscription delete (E2AP §8.2.2): the stream gets a deletion notice.

        With access control (``caller`` set) only the application that created the
        subscription may delete it (another one: PERMISSION_DENIED)."""
        key = _key(request.ric_request_id)
        with self._lock:
            sub = self._subs.get(key)
            if sub is None or sub.done:
                raise E2Refusal(
                    grpc.StatusCode.NOT_FOUND,
                    REQUEST_ID_UNKNOWN,
                    "ric_request_id",
                    f"no active subscription with RIC request {key[0]}:{key[1]}",
                )
            if request.ran_function_id != sub.request.ran_function_id:
                raise E2Refusal(
                    grpc.StatusCode.NOT_FOUND,
                    RAN_FUNCTION_ID_INVALID,
                    "ran_function_id",
                    f"subscription {key[0]}:{key[1]} is on RAN function "
                    f"{sub.request.ran_function_id}, not {request.ran_function_id}",
                )
            if caller is not None and sub.owner is not None and sub.owner != caller.app.name:
                raise E2Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    RIC_REQUEST_UNSPECIFIED,
                    "ric_request_id",
                    f"subscription {key[0]}:{key[1]} belongs to another application; "
                    f"{caller.app.name!r} may delete only its own",
                )
            del self._subs[key]
        sub.end(
            e2_pb2.SUBSCRIPTION_ENDED_BY_RIC,
            RIC_REQUEST_UNSPECIFIED,
            f"deleted by a RIC subscription delete request{f' from {peer}' if peer else ''}",
        )

    def _dropped(self, sub: _Subscription, n: int) -> None:
        """``sub``'s queue is full: its ``n`` indications of this period are not queued
        (the period merges into its next indication); after ``max_stalled_periods``
        such rounds in a row with the subscriber taking nothing, the node ends it."""
        stalled = sub.merge(n)
        self.dropped += n
        if stalled == 1:
            log.warning(
                "E2 subscription %s:%s: queue full (%d indications), subscriber not "
                "reading; periods merged until it reads (%d dropped so far)",
                *sub.key,
                self.limits.max_queue,
                sub.dropped,
            )
        if stalled >= self.limits.max_stalled_periods:
            self._overflow(sub)

    def _overflow(self, sub: _Subscription) -> None:
        """End ``sub``: its subscriber stalled (E2AP §8.2.4 RIC Subscription Delete
        Required, cause ``ricRequest/function-resource-limit``)."""
        with self._lock:
            if self._subs.get(sub.key) is sub:
                del self._subs[sub.key]
        if sub.end(
            e2_pb2.SUBSCRIPTION_ENDED_BY_E2_NODE,
            FUNCTION_RESOURCE_LIMIT,
            f"the subscriber took nothing for {sub.stalled} reporting periods while its "
            f"queue was full ({self.limits.max_queue} indications; {sub.dropped} not "
            "queued); the node ended the subscription (nothing after the last sequence "
            "numbers was collected)",
        ):
            self.overflows += 1
            log.warning("E2 subscription %s:%s ended: subscriber stalled", *sub.key)

    def subscription_stats(self) -> list[dict[str, Any]]:
        """Per active subscription: ``ric_request_id`` ("requestor:instance"), ``peer``,
        ``indications_sent``, ``queued``, ``dropped`` (not queued: queue full; merged
        into the next) and ``stalled`` (periods merged in a row since the subscriber last
        took one)."""
        with self._lock:
            subs = list(self._subs.values())
        out = []
        for sub in subs:
            with sub.cond:
                queued, dropped, stalled = len(sub.items), sub.dropped, sub.stalled
            out.append(
                {
                    "ric_request_id": f"{sub.key[0]}:{sub.key[1]}",
                    "peer": sub.peer,
                    "indications_sent": sub.sent,
                    "queued": queued,
                    "dropped": dropped,
                    "stalled": stalled,
                }
            )
        return out

    def stats(self) -> dict[str, int]:
        """The agent's counters, for an operator (O1 heartbeat fields, logs):
        ``subscriptions`` active, indications ``queued`` (over all subscriptions),
        ``indications_dropped`` (not queued: queue full), ``subscriptions_ended_stalled``
        (:attr:`overflows`), ``late_periods`` (periods the timer reached late, reported
        as one longer period)."""
        with self._lock:
            subs = list(self._subs.values())
        queued = 0
        for sub in subs:
            with sub.cond:
                queued += len(sub.items)
        return {
            "subscriptions": len(subs),
            "queued": queued,
            "indications_dropped": self.dropped,
            "subscriptions_ended_stalled": self.overflows,
            "late_periods": self._timers.late,
        }

    def _release(self, sub: _Subscription) -> None:
        """The subscription's stream ended (notice sent, or the subscriber went away)."""
        sub.cancel()
        with self._lock:
            if self._subs.get(sub.key) is sub:
                del self._subs[sub.key]

    def subscriptions(self, caller: CallInfo | None = None) -> list[e2_pb2.SubscriptionInfo]:
        """The active subscriptions; with access control (``caller`` set) a ``read``
        application sees only its own, a ``control`` one every subscription."""
        with self._lock:
            subs = list(self._subs.values())
        if caller is not None and caller.app.permission is not Permission.CONTROL:
            subs = [s for s in subs if s.owner == caller.app.name]
        return [s.info() for s in subs]

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._subs)

    def stream(
        self, sub: _Subscription, first: e2_pb2.RicSubscriptionEvent, is_active: Callable[[], bool]
    ) -> Iterator[_Event]:
        """The events of one subscription (for a sync server): ``first``, then what the
        timers queue, ending after a deletion notice (or when ``is_active`` turns false).
        Indications come serialized already (``bytes``; see :func:`_serialize_event`)."""
        try:
            yield first
            while True:
                ev = sub.get(0.25)
                if ev is None:
                    if sub.cancelled or not is_active():
                        return
                    continue
                yield ev
                if not isinstance(ev, bytes) and ev.HasField("deleted"):
                    return
        finally:
            self._release(sub)

    async def astream(
        self, sub: _Subscription, first: e2_pb2.RicSubscriptionEvent
    ) -> AsyncIterator[_Event]:
        """:meth:`stream` for a ``grpc.aio`` server on :attr:`loop`: waits on an
        :class:`asyncio.Event` the producers set (no thread, no polling)."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            if _on_loop(loop):
                wake.set()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(wake.set)

        sub.notify = notify
        try:
            yield first
            while True:
                ev = sub.pop()
                if ev is None:
                    if sub.cancelled:
                        return
                    wake.clear()
                    ev = sub.pop()  # queued between the pop and the clear
                    if ev is None:
                        if sub.cancelled:
                            return
                        await wake.wait()
                        continue
                yield ev
                if not isinstance(ev, bytes) and ev.HasField("deleted"):
                    return
        finally:
            sub.notify = None
            self._release(sub)

    # -- control -------------------------------------------------------------------------
    def control(self, request: e2_pb2.RicControlRequest) -> e2_pb2.RicControlAcknowledge:
        """RIC control (E2AP §8.2.5) or raise :class:`E2Refusal` (nothing applied)."""
        _check_request_id(request.ric_request_id)
        fn = self.function(request.ran_function_id)
        outcome = fn.control(request)
        return e2_pb2.RicControlAcknowledge(
            ric_request_id=request.ric_request_id,
            ran_function_id=request.ran_function_id,
            ric_control_outcome=outcome,
        )

    # -- lifetime ------------------------------------------------------------------------
    def close(self, grace_s: float = 2.0) -> None:
        """End every subscription with a deletion notice (``misc/om-intervention``) and
        wait up to ``grace_s`` for the streams to deliver it; stop the timers."""
        with self._lock:
            self._closed = True
            subs = list(self._subs.values())
        self._timers.close()
        for sub in subs:
            sub.end(
                e2_pb2.SUBSCRIPTION_ENDED_BY_E2_NODE,
                OM_INTERVENTION,
                "the E2 node is shutting down",
            )
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.active:
            time.sleep(0.01)

    # -- gRPC --------------------------------------------------------------------------
    def servicer(self) -> e2_pb2_grpc.E2NodeServicer:
        """The servicer for a sync ``grpc.Server`` (one thread per open subscription)."""
        return _Servicer(self)

    def aio_servicer(self, executor: futures.Executor | None = None) -> _AioServicer:
        """The servicer for a ``grpc.aio`` server; ``Control`` (which waits for the
        arbiter) runs in ``executor`` (``None``: the loop's default executor)."""
        return _AioServicer(self, executor)

    def registration(self, executor: futures.Executor | None = None) -> ServiceRegistration:
        """For :func:`airan.ric.server.build_server` and
        :func:`~airan.ric.server.build_aio_server`: ``Control`` needs the ``control``
        permission; ``GetSetup``, ``Subscribe``, ``DeleteSubscription`` and
        ``ListSubscriptions`` need ``read``. The stream's indications are serialized by
        the timers (once per period for what subscribers share)."""
        servicer = self.servicer()
        aio = self.aio_servicer(executor)
        return ServiceRegistration(
            service=E2_SERVICE,
            add_to_server=lambda s: _add_handlers(servicer, s),
            add_to_aio_server=lambda s: _add_handlers(aio, s),
            permissions={
                "Control": Permission.CONTROL,
                "GetSetup": Permission.READ,
                "Subscribe": Permission.READ,
                "DeleteSubscription": Permission.READ,
                "ListSubscriptions": Permission.READ,
            },
        )


def _note_request(rid: e2_pb2.RicRequestId, ran_function_id: int) -> None:
    """The RIC request ID and RAN function, for the call's audit line."""
    audit_note(
        ric_request_id=f"{rid.ric_requestor_id}:{rid.ric_instance_id}",
        ran_function_id=int(ran_function_id),
    )


def _note_control(request: e2_pb2.RicControlRequest) -> None:
    """What an E2 control asks, for its audit line (written after the call)."""
    _note_request(request.ric_request_id, request.ran_function_id)
    h = request.ric_control_header
    audit_note(
        ric_style_type=int(h.ric_style_type), ric_control_action_id=int(h.ric_control_action_id)
    )


def _guard(context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except E2Refusal as r:
        _abort(context, r)
    except FieldError as exc:
        _abort(context, E2Refusal.from_field_error(exc, RIC_REQUEST_UNSPECIFIED))
    except Exception as exc:
        log.exception("E2 request failed")
        _abort(
            context,
            E2Refusal(
                grpc.StatusCode.INTERNAL, MISC_UNSPECIFIED, "", f"{type(exc).__name__}: {exc}"
            ),
        )
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


class _Servicer(e2_pb2_grpc.E2NodeServicer):
    def __init__(self, agent: E2Agent) -> None:
        self.agent = agent

    def GetSetup(
        self, request: e2_pb2.GetSetupRequest, context: grpc.ServicerContext
    ) -> e2_pb2.GetSetupResponse:
        r: e2_pb2.GetSetupResponse = _guard(
            context, lambda: self.agent.setup(list(request.ran_function_oids))
        )
        return r

    def Subscribe(  # type: ignore[override]
        self, request: e2_pb2.RicSubscriptionRequest, context: grpc.ServicerContext
    ) -> Iterator[_Event]:
        # serialized indications pass through (_serialize_event)
        caller = current_call()
        sub, response = _guard(
            context, lambda: self.agent.subscribe(request, context.peer(), caller)
        )
        context.add_callback(sub.cancel)
        yield from self.agent.stream(
            sub, e2_pb2.RicSubscriptionEvent(admitted=response), context.is_active
        )

    def DeleteSubscription(
        self, request: e2_pb2.RicSubscriptionDeleteRequest, context: grpc.ServicerContext
    ) -> e2_pb2.RicSubscriptionDeleteResponse:
        caller = current_call()
        _note_request(request.ric_request_id, request.ran_function_id)
        _guard(context, lambda: self.agent.delete(request, context.peer(), caller))
        return e2_pb2.RicSubscriptionDeleteResponse(
            ric_request_id=request.ric_request_id, ran_function_id=request.ran_function_id
        )

    def Control(
        self, request: e2_pb2.RicControlRequest, context: grpc.ServicerContext
    ) -> e2_pb2.RicControlAcknowledge:
        _note_control(request)
        r: e2_pb2.RicControlAcknowledge = _guard(context, lambda: self.agent.control(request))
        return r

    def ListSubscriptions(
        self, request: e2_pb2.ListSubscriptionsRequest, context: grpc.ServicerContext
    ) -> e2_pb2.ListSubscriptionsResponse:
        return e2_pb2.ListSubscriptionsResponse(
            subscriptions=self.agent.subscriptions(current_call())
        )


async def _aguard(
    context: grpc.aio.ServicerContext[Any, Any],
    fn: Callable[[], Any],
    offload: bool = False,
    executor: futures.Executor | None = None,
) -> Any:
    """:func:`_guard` for the asyncio servicer; with ``offload`` ``fn`` runs in
    ``executor`` (``None``: the loop's default one), off the event loop."""
    refusal: E2Refusal
    try:
        if not offload:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(executor, fn)
    except E2Refusal as r:
        refusal = r
    except FieldError as exc:
        refusal = E2Refusal.from_field_error(exc, RIC_REQUEST_UNSPECIFIED)
    except Exception as exc:
        log.exception("E2 request failed")
        refusal = E2Refusal(
            grpc.StatusCode.INTERNAL, MISC_UNSPECIFIED, "", f"{type(exc).__name__}: {exc}"
        )
    context.set_trailing_metadata(refusal.trailers())
    await context.abort(refusal.code, refusal.message)
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


class _AioServicer:
    """The E2 service on a ``grpc.aio`` server: coroutines on the agent's loop."""

    def __init__(self, agent: E2Agent, executor: futures.Executor | None) -> None:
        self.agent = agent
        self.executor = executor

    async def GetSetup(
        self, request: e2_pb2.GetSetupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> e2_pb2.GetSetupResponse:
        r: e2_pb2.GetSetupResponse = await _aguard(
            context, lambda: self.agent.setup(list(request.ran_function_oids))
        )
        return r

    async def Subscribe(
        self, request: e2_pb2.RicSubscriptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[_Event]:
        peer, caller = context.peer(), current_call()
        sub, response = await _aguard(context, lambda: self.agent.subscribe(request, peer, caller))
        context.add_done_callback(lambda _: sub.cancel())  # type: ignore[arg-type]
        async for ev in self.agent.astream(sub, e2_pb2.RicSubscriptionEvent(admitted=response)):
            yield ev

    async def DeleteSubscription(
        self,
        request: e2_pb2.RicSubscriptionDeleteRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> e2_pb2.RicSubscriptionDeleteResponse:
        peer, caller = context.peer(), current_call()
        _note_request(request.ric_request_id, request.ran_function_id)
        await _aguard(context, lambda: self.agent.delete(request, peer, caller))
        return e2_pb2.RicSubscriptionDeleteResponse(
            ric_request_id=request.ric_request_id, ran_function_id=request.ran_function_id
        )

    async def Control(
        self, request: e2_pb2.RicControlRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> e2_pb2.RicControlAcknowledge:
        _note_control(request)  # here: the executor's thread does not see the call
        # the arbiter applies it at its next decision: wait for that off the loop
        r: e2_pb2.RicControlAcknowledge = await _aguard(
            context,
            lambda: self.agent.control(request),
            offload=True,
            executor=self.executor,
        )
        return r

    async def ListSubscriptions(
        self, request: e2_pb2.ListSubscriptionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> e2_pb2.ListSubscriptionsResponse:
        return e2_pb2.ListSubscriptionsResponse(
            subscriptions=self.agent.subscriptions(current_call())
        )


#: E2AP §9.2.1 CauseProtocol "transfer-syntax-error": what E2AP answers a message it
#: cannot decode (its ASN.1 PER; here the protobuf encoding)
TRANSFER_SYNTAX_ERROR = E2Cause("protocol", "transfer-syntax-error")


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """A request whose bytes are not a valid encoding of its message type. The request
    deserializers return it instead of raising, so that the call is refused with
    INVALID_ARGUMENT and cause ``protocol/transfer-syntax-error`` (a raising
    deserializer makes gRPC answer INTERNAL, or UNKNOWN and a logged traceback per
    request on a ``grpc.aio`` server: found by tests/test_fuzz_grpc.py)."""

    type_name: str
    error: str

    def refusal(self) -> E2Refusal:
        return E2Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            TRANSFER_SYNTAX_ERROR,
            "request",
            f"not a valid {self.type_name} encoding ({self.error or 'decode error'})",
        )


def _decoder(cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer for message class ``cls`` that never raises."""
    name = cls.DESCRIPTOR.full_name

    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # DecodeError (other protobuf backends: others)
            return _Undecodable(name, str(exc))

    return decode


def _refusing_undecodable(fn: Callable[..., Any], stream: bool, aio: bool) -> Callable[..., Any]:
    """``fn`` (a servicer method), refusing an :class:`_Undecodable` request first."""
    if aio and stream:

        async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                refusal = request.refusal()
                context.set_trailing_metadata(refusal.trailers())
                await context.abort(refusal.code, refusal.message)
            async for ev in fn(request, context):
                yield ev

        return agen
    if aio:

        async def acall(request: Any, context: Any) -> Any:
            if isinstance(request, _Undecodable):
                refusal = request.refusal()
                context.set_trailing_metadata(refusal.trailers())
                await context.abort(refusal.code, refusal.message)
            return await fn(request, context)

        return acall
    if stream:

        def gen(request: Any, context: Any) -> Iterator[Any]:
            if isinstance(request, _Undecodable):
                _abort(context, request.refusal())
            yield from fn(request, context)

        return gen

    def call(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            _abort(context, request.refusal())
        return fn(request, context)

    return call


def _add_handlers(servicer: Any, server: Any) -> None:
    """Register ``servicer`` (:class:`_Servicer` or :class:`_AioServicer`) as
    ``airan.e2.v1.E2Node`` — as the generated ``add_E2NodeServicer_to_server``, except
    that the Subscribe stream passes serialized indications through and a request that
    does not decode is refused (:class:`_Undecodable`)."""
    aio = isinstance(servicer, _AioServicer)

    def u(fn: Callable[..., Any], request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(fn, stream=False, aio=aio),
            request_deserializer=_decoder(request),
            response_serializer=response.SerializeToString,
        )

    handlers = {
        "GetSetup": u(servicer.GetSetup, e2_pb2.GetSetupRequest, e2_pb2.GetSetupResponse),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            _refusing_undecodable(servicer.Subscribe, stream=True, aio=aio),
            request_deserializer=_decoder(e2_pb2.RicSubscriptionRequest),
            response_serializer=_serialize_event,
        ),
        "DeleteSubscription": u(
            servicer.DeleteSubscription,
            e2_pb2.RicSubscriptionDeleteRequest,
            e2_pb2.RicSubscriptionDeleteResponse,
        ),
        "Control": u(servicer.Control, e2_pb2.RicControlRequest, e2_pb2.RicControlAcknowledge),
        "ListSubscriptions": u(
            servicer.ListSubscriptions,
            e2_pb2.ListSubscriptionsRequest,
            e2_pb2.ListSubscriptionsResponse,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(E2_SERVICE, handlers),))
    server.add_registered_method_handlers(E2_SERVICE, handlers)


# ----------------------------------------------------------------------------- hosting


class E2Server:
    """A running E2 agent on a gRPC port (see :func:`serve_e2`): a ``grpc.aio`` server
    on its own event-loop thread (``loop_thread``), or a sync ``grpc.Server``."""

    def __init__(
        self,
        agent: E2Agent,
        server: grpc.Server | grpc.aio.Server,
        host: str,
        port: int,
        loop_thread: EventLoopThread | None = None,
        executor: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self.agent = agent
        self.server = server
        self.host = host
        self.port = port
        self.loop_thread = loop_thread
        self._executor = executor

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self, grace_s: float = 2.0) -> None:
        """Deletion notices to every subscriber, then stop the server."""
        self.agent.close(grace_s)
        if self.loop_thread is None:
            assert isinstance(self.server, grpc.Server)
            self.server.stop(grace_s).wait()
        else:
            server = self.server
            assert isinstance(server, grpc.aio.Server)
            if not self.loop_thread.loop.is_closed():
                try:
                    self.loop_thread.run(server.stop(grace_s), grace_s + 5.0)
                finally:
                    self.loop_thread.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> E2Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_e2(
    node: Node,
    port: int = 0,
    security: ServerSecurity | None = None,
    host: str = "127.0.0.1",
    extra_services: Sequence[ServiceRegistration] = (),
    *,
    aio: bool = True,
    **agent_kwargs: Any,
) -> E2Server:
    """Start an :class:`E2Agent` for ``node`` on ``host:port`` (``0``: any free port),
    with ``security`` (TLS, tokens, permissions) and any ``extra_services`` (O1) on the
    same port.

    ``aio=True`` (default): a ``grpc.aio`` server on one event-loop thread
    (``airan-e2-aio``) serves every call, and the reporting timers run on that loop; only
    ``Control`` (which waits for the arbiter) and services without an asyncio servicer
    use a few pool threads. ``aio=False``: a sync ``grpc.Server`` where each open
    subscription holds one server thread (the pool is sized ``max_subscriptions + 16``).
    """
    if not aio:
        agent = E2Agent(node, **agent_kwargs)
        try:
            server, bound = build_server(
                port,
                security,
                [agent.registration(), *extra_services],
                host=host,
                max_workers=agent.limits.max_subscriptions + 16,
            )
            server.start()
        except BaseException:
            agent.close(0.0)
            raise
        return E2Server(agent, server, host, bound)
    lt = EventLoopThread("airan-e2-aio")
    executor = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="airan-e2-control")
    aagent: E2Agent | None = None
    try:
        aagent = E2Agent(node, loop=lt.loop, **agent_kwargs)
        services = [aagent.registration(executor), *extra_services]

        async def start() -> tuple[grpc.aio.Server, int]:
            srv, bound = await build_aio_server(port, security, services, host=host)
            await srv.start()
            return srv, bound

        aserver, abound = lt.run(start(), 30.0)
    except BaseException:
        if aagent is not None:
            aagent.close(0.0)
        lt.stop()
        executor.shutdown(wait=False)
        raise
    return E2Server(aagent, aserver, host, abound, lt, executor)

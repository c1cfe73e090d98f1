"""The E2 agent (airan.ric.e2) against real gRPC servers on loopback, raw stubs.

O-RAN.WG3.E2AP procedures: setup, subscription (admission result, indications, delete
notice), control (E2SM-RC style 2 action 6, co-scheduling), causes (§9.2.1).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from airan.core.policy import Policy
from airan.e2.v1 import e2_pb2, e2_pb2_grpc
from airan.ric.e2 import COSCHED_OID, KPM_OID, RC_OID, E2Cause, serve_e2
from airan.ric.security import (
    Access,
    AppGrant,
    ClientSecurity,
    Permission,
    ServerSecurity,
    hash_token,
)
from airan.ric.xapp import E2Client, E2Error
from airan.testing import FakeNode

KPM, RC, COSCHED = 2, 3, 4


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeNode]:
    with FakeNode(seed=1) as f:
        yield f


@pytest.fixture
def node_state(fake: FakeNode) -> Iterator[FakeNode]:
    """Restore the node's policy and slice quotas after the test."""
    policy = fake.node.config.policy
    quotas = fake.node.config.ran.slice_quotas
    yield fake
    fake.node.set_policy(policy)
    fake.node.set_slice_quotas(quotas)


@pytest.fixture(scope="module")
def stub(fake: FakeNode) -> Iterator[e2_pb2_grpc.E2NodeStub]:
    ch = grpc.insecure_channel(fake.e2_target)
    yield e2_pb2_grpc.E2NodeStub(ch)
    ch.close()


_ids = iter(range(1, 1_000_000))


def rid() -> e2_pb2.RicRequestId:
    return e2_pb2.RicRequestId(ric_requestor_id=7, ric_instance_id=next(_ids))


def kpm_action(
    names: list[str], action_id: int = 1, style: int = 1, ue_ids: list[int] | None = None
) -> e2_pb2.RicAction:
    return e2_pb2.RicAction(
        ric_action_id=action_id,
        ric_action_type=e2_pb2.RIC_ACTION_TYPE_REPORT,
        kpm=e2_pb2.KpmActionDefinition(
            ric_style_type=style, measurement_names=names, ue_ids=ue_ids or []
        ),
    )


def sub_req(
    names: list[str] | None = None, period_ms: int = 50, **kw: Any
) -> e2_pb2.RicSubscriptionRequest:
    actions = kw.pop("actions", None) or [kpm_action(names or ["airan.AiBusy"])]
    return e2_pb2.RicSubscriptionRequest(
        ric_request_id=kw.pop("ric_request_id", None) or rid(),
        ran_function_id=kw.pop("ran_function_id", KPM),
        ric_event_trigger=e2_pb2.RicEventTrigger(reporting_period_ms=period_ms),
        ric_actions=actions,
    )


def refusal(fn: Callable[[], Any]) -> E2Error:
    """Call ``fn`` (which must fail) and decode the refusal."""
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return E2Error.from_rpc_error(info.value)


def first_of(stub: e2_pb2_grpc.E2NodeStub, req: e2_pb2.RicSubscriptionRequest) -> Any:
    call = stub.Subscribe(req, timeout=20)
    return next(call)


class Reader:
    """Reads a subscription stream in a thread."""

    def __init__(self, stub: e2_pb2_grpc.E2NodeStub, req: e2_pb2.RicSubscriptionRequest) -> None:
        self.req = req
        self.call = stub.Subscribe(req, timeout=60)
        self.first = next(self.call)
        self.events: list[e2_pb2.RicSubscriptionEvent] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.call:
                self.events.append(ev)
        except grpc.RpcError as e:
            self.error = e

    @property
    def indications(self) -> list[e2_pb2.RicIndication]:
        return [e.indication for e in list(self.events) if e.HasField("indication")]

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[e2_pb2.RicIndication]:
        end = time.monotonic() + timeout_s
        while len(self.indications) < n and time.monotonic() < end:
            time.sleep(0.01)
        inds = self.indications
        assert len(inds) >= n, f"only {len(inds)} indications after {timeout_s} s"
        return inds

    def cancel(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def values_after(reader: Reader, t_unix_ns: int, n: int, timeout_s: float = 10.0) -> list[Any]:
    """The messages of ``n`` indications whose collection started after ``t_unix_ns``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = [
            i.ric_indication_message
            for i in reader.indications
            if i.ric_indication_header.collet_start_time_ns >= t_unix_ns
        ]
        if len(got) >= n:
            return got[:n]
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} indications after the change")


# ----------------------------------------------------------------------------- setup


def test_setup_lists_the_ran_functions_and_looks_them_up_by_oid(
    fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    r = stub.GetSetup(e2_pb2.GetSetupRequest())
    assert r.global_e2_node_id.gnb_id == fake.node.node_id
    assert r.global_e2_node_id.node_type == e2_pb2.E2_NODE_TYPE_GNB_DU
    by_oid = {f.ran_function_oid: f for f in r.ran_functions}
    assert set(by_oid) == {KPM_OID, RC_OID, COSCHED_OID}
    assert by_oid[KPM_OID].ran_function_id == KPM
    one = stub.GetSetup(e2_pb2.GetSetupRequest(ran_function_oids=[RC_OID]))
    assert [f.ran_function_id for f in one.ran_functions] == [RC]
    e = refusal(lambda: stub.GetSetup(e2_pb2.GetSetupRequest(ran_function_oids=["1.2.3"])))
    assert e.code == grpc.StatusCode.NOT_FOUND
    assert e.cause == E2Cause("ricService", "ran-function-not-supported")
    assert e.field == "ran_function_oids[0]"


def test_kpm_definition_lists_every_node_and_ue_measurement(
    fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    r = stub.GetSetup(e2_pb2.GetSetupRequest(ran_function_oids=[KPM_OID]))
    d = json.loads(r.ran_functions[0].ran_function_definition)
    styles = {s["ricReportStyleType"]: s for s in d["ricReportStyleList"]}
    node_names = [m["measName"] for m in styles[1]["measInfoActionList"]]
    assert set(fake.node.NODE_MEASUREMENTS) <= set(node_names)
    assert "airan.Tenant.llm.Busy" in node_names
    assert [m["measName"] for m in styles[5]["measInfoActionList"]] == list(
        fake.node.UE_MEASUREMENTS
    )
    assert all(m["unit"] for m in styles[1]["measInfoActionList"])


# ----------------------------------------------------------------------------- subscription


def test_subscribe_reports_every_period_until_deleted(
    fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    names = ["DRB.UEThpDl", "RRU.PrbTotDl", "airan.AiBusy", "airan.RadioSlackLowUs"]
    req = sub_req(names, period_ms=50)
    call = stub.Subscribe(req, timeout=30)
    first = next(call)
    assert first.HasField("admitted")
    assert list(first.admitted.ric_actions_admitted) == [1]
    assert not first.admitted.ric_actions_not_admitted
    inds = []
    for ev in call:
        assert ev.HasField("indication")
        inds.append(ev.indication)
        if len(inds) == 8:
            break
    assert [i.ric_indication_sn for i in inds] == list(range(1, 9))
    for i in inds:
        assert i.ric_action_id == 1 and i.ran_function_id == KPM
        assert i.ric_request_id == req.ric_request_id
        assert i.ric_indication_type == e2_pb2.RIC_INDICATION_TYPE_REPORT
        assert set(i.ric_indication_message.values) == set(names)
        assert i.ric_indication_message.format == 1
        assert 0.0 <= i.ric_indication_message.values["airan.AiBusy"] <= 1.0
    # full-buffer traffic: the cell carries data
    assert max(i.ric_indication_message.values["DRB.UEThpDl"] for i in inds) > 0
    # contiguous collection periods of ~50 ms (the first one is partial)
    spans = []
    for a, b in itertools.pairwise(inds):
        ha, hb = a.ric_indication_header, b.ric_indication_header
        assert hb.collet_start_time_ns == ha.collet_end_time_ns
        spans.append((hb.collet_end_time_ns - hb.collet_start_time_ns) / 1e6)
    assert all(25 < s < 150 for s in spans), spans
    assert 40 < sorted(spans)[len(spans) // 2] < 65, spans
    listed = stub.ListSubscriptions(e2_pb2.ListSubscriptionsRequest()).subscriptions
    mine = [s for s in listed if s.ric_request_id == req.ric_request_id]
    assert len(mine) == 1 and mine[0].reporting_period_ms == 50
    # delete from another call: the stream ends with the deletion notice
    stub.DeleteSubscription(
        e2_pb2.RicSubscriptionDeleteRequest(ric_request_id=req.ric_request_id, ran_function_id=KPM)
    )
    rest = list(call)
    assert rest[-1].HasField("deleted")
    assert all(e.HasField("indication") for e in rest[:-1])
    notice = rest[-1].deleted
    assert notice.ended_by == e2_pb2.SUBSCRIPTION_ENDED_BY_RIC
    last = max(
        [i.ric_indication_sn for i in inds] + [e.indication.ric_indication_sn for e in rest[:-1]]
    )
    assert notice.last_indication_sn[1] == last
    assert call.code() == grpc.StatusCode.OK
    listed = stub.ListSubscriptions(e2_pb2.ListSubscriptionsRequest()).subscriptions
    assert all(s.ric_request_id != req.ric_request_id for s in listed)


def test_ue_style_reports_the_requested_ues(fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub) -> None:
    all_ues = fake.agent.functions[KPM].ue_ids()  # type: ignore[attr-defined]
    assert len(all_ues) >= 3
    want = [all_ues[0], all_ues[2]]
    names = list(fake.node.UE_MEASUREMENTS[:2])
    r = Reader(stub, sub_req(actions=[kpm_action(names, style=5, ue_ids=want)], period_ms=40))
    try:
        ind = r.wait_for(2)[1]
    finally:
        r.cancel()
    msg = ind.ric_indication_message
    assert msg.format == 3
    assert [u.ue_id for u in msg.ues] == want
    for u in msg.ues:
        assert set(u.values) == set(names)


def test_partial_admission_lists_the_refused_action_with_its_cause(
    stub: e2_pb2_grpc.E2NodeStub,
) -> None:
    req = sub_req(actions=[kpm_action(["airan.AiBusy"], 1), kpm_action(["NoSuch.Thing"], 2)])
    r = Reader(stub, req)
    try:
        adm = r.first.admitted
        assert list(adm.ric_actions_admitted) == [1]
        (na,) = adm.ric_actions_not_admitted
        assert na.ric_action_id == 2
        assert E2Cause.from_pb(na.cause) == E2Cause(
            "ricRequest", "requested-information-unavailable"
        )
        assert na.field == "ric_actions[1].kpm.measurement_names[0]"
        assert {i.ric_action_id for i in r.wait_for(2)} == {1}
    finally:
        r.cancel()


BAD_SUBSCRIPTIONS: list[tuple[str, Callable[[], e2_pb2.RicSubscriptionRequest], str, str, str]] = [
    (
        "unknown RAN function",
        lambda: sub_req(ran_function_id=99),
        "NOT_FOUND",
        "ricRequest/ran-function-id-invalid",
        "ran_function_id",
    ),
    (
        "period zero",
        lambda: sub_req(period_ms=0),
        "INVALID_ARGUMENT",
        "ricRequest/event-trigger-not-supported",
        "ric_event_trigger.reporting_period_ms",
    ),
    (
        "period over an hour",
        lambda: sub_req(period_ms=3_600_001),
        "INVALID_ARGUMENT",
        "ricRequest/event-trigger-not-supported",
        "ric_event_trigger.reporting_period_ms",
    ),
    (
        "unknown measurement",
        lambda: sub_req(["airan.AiBusy", "DRB.Nope"]),
        "INVALID_ARGUMENT",
        "ricRequest/requested-information-unavailable",
        "ric_actions[0].kpm.measurement_names[1]",
    ),
    (
        "node measurement in the UE style",
        lambda: sub_req(actions=[kpm_action(["airan.AiBusy"], style=5)]),
        "INVALID_ARGUMENT",
        "ricRequest/requested-information-unavailable",
        "ric_actions[0].kpm.measurement_names[0]",
    ),
    (
        "unknown UE",
        lambda: sub_req(actions=[kpm_action(["DRB.UEThpDl"], style=5, ue_ids=[999_999])]),
        "INVALID_ARGUMENT",
        "ricRequest/requested-information-unavailable",
        "ric_actions[0].kpm.ue_ids[0]",
    ),
    (
        "report style 3",
        lambda: sub_req(actions=[kpm_action(["airan.AiBusy"], style=3)]),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_actions[0].kpm.ric_style_type",
    ),
    (
        "INSERT action",
        lambda: sub_req(
            actions=[
                e2_pb2.RicAction(
                    ric_action_id=1,
                    ric_action_type=e2_pb2.RIC_ACTION_TYPE_INSERT,
                    kpm=e2_pb2.KpmActionDefinition(ric_style_type=1, measurement_names=["x"]),
                )
            ]
        ),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_actions[0].ric_action_type",
    ),
    (
        "17 actions",
        lambda: sub_req(actions=[kpm_action(["airan.AiBusy"], i) for i in range(17)]),
        "INVALID_ARGUMENT",
        "ricRequest/excessive-actions",
        "ric_actions",
    ),
    (
        "duplicate action",
        lambda: sub_req(actions=[kpm_action(["airan.AiBusy"], 4), kpm_action(["airan.AiBusy"], 4)]),
        "INVALID_ARGUMENT",
        "ricRequest/duplicate-action",
        "ric_actions[1].ric_action_id",
    ),
    (
        "no actions",
        lambda: e2_pb2.RicSubscriptionRequest(
            ric_request_id=rid(),
            ran_function_id=KPM,
            ric_event_trigger=e2_pb2.RicEventTrigger(reporting_period_ms=10),
        ),
        "INVALID_ARGUMENT",
        "ricRequest/invalid-information-request",
        "ric_actions",
    ),
    (
        "report on the RC function",
        lambda: sub_req(ran_function_id=RC),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_actions[0].ric_action_type",
    ),
]


def test_bad_subscriptions_are_refused_and_others_keep_their_reports(
    fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    other = Reader(stub, sub_req(["airan.AiBusy"], period_ms=20))
    try:
        before = len(other.wait_for(2))
        subs_before = fake.agent.active
        for name, make, code, cause, field in BAD_SUBSCRIPTIONS:
            e = refusal(lambda make=make: first_of(stub, make()))  # type: ignore[misc]
            assert (e.code.name, str(e.cause), e.field) == (code, cause, field), name
            assert field in str(e) or e.reason, name
        assert fake.agent.active == subs_before
        inds = other.wait_for(before + 3)
        sns = [i.ric_indication_sn for i in inds]
        assert sns == list(range(1, len(sns) + 1))  # nothing lost meanwhile
    finally:
        other.cancel()


def test_duplicate_request_id_and_unknown_deletes_are_refused(
    stub: e2_pb2_grpc.E2NodeStub,
) -> None:
    req = sub_req()
    r = Reader(stub, req)
    try:
        e = refusal(lambda: first_of(stub, sub_req(ric_request_id=req.ric_request_id)))
        assert e.code == grpc.StatusCode.ALREADY_EXISTS
        assert str(e.cause) == "ricRequest/duplicate-ric-request-id"
        assert e.field == "ric_request_id"
        e = refusal(
            lambda: stub.DeleteSubscription(
                e2_pb2.RicSubscriptionDeleteRequest(
                    ric_request_id=req.ric_request_id, ran_function_id=RC
                )
            )
        )
        assert (e.code, str(e.cause)) == (
            grpc.StatusCode.NOT_FOUND,
            "ricRequest/ran-function-id-invalid",
        )
        r.wait_for(1)  # still alive
    finally:
        r.cancel()
    e = refusal(
        lambda: stub.DeleteSubscription(
            e2_pb2.RicSubscriptionDeleteRequest(ric_request_id=rid(), ran_function_id=KPM)
        )
    )
    assert e.code == grpc.StatusCode.NOT_FOUND
    assert str(e.cause) == "ricRequest/request-id-unknown"
    assert e.field == "ric_request_id"


def test_subscription_limit(fake: FakeNode) -> None:
    with serve_e2(fake.node, max_subscriptions=2) as srv:
        ch = grpc.insecure_channel(srv.target)
        st = e2_pb2_grpc.E2NodeStub(ch)
        readers = [Reader(st, sub_req()) for _ in range(2)]
        e = refusal(lambda: first_of(st, sub_req()))
        assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(e.cause) == "ricRequest/function-resource-limit"
        readers[0].cancel()
        end = time.monotonic() + 5
        while srv.agent.active > 1 and time.monotonic() < end:
            time.sleep(0.01)
        r3 = Reader(st, sub_req())  # a freed slot can be used again
        assert r3.first.HasField("admitted")
        r3.cancel()
        readers[1].cancel()
        ch.close()


def test_a_slow_subscriber_is_ended_with_a_notice_and_loses_nothing_unnoticed(
    fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    other = Reader(stub, sub_req(["airan.AiBusy"], period_ms=20))
    with serve_e2(fake.node, max_queue=8) as srv:
        # small HTTP/2 windows, so that the transport buffers little of what is not read
        opts = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        ch = grpc.insecure_channel(srv.target, options=opts)
        st = e2_pb2_grpc.E2NodeStub(ch)
        call = st.Subscribe(sub_req(list(fake.node.NODE_MEASUREMENTS), period_ms=1), timeout=60)
        assert next(call).HasField("admitted")  # then read nothing for a while
        end = time.monotonic() + 20
        while srv.agent.overflows == 0 and time.monotonic() < end:
            time.sleep(0.05)
        assert srv.agent.overflows == 1
        assert srv.agent.active == 0
        events = list(call)  # what was queued, then the notice
        notice = events[-1].deleted
        assert notice.ended_by == e2_pb2.SUBSCRIPTION_ENDED_BY_E2_NODE
        assert str(E2Cause.from_pb(notice.cause)) == "ricRequest/function-resource-limit"
        sns = [e.indication.ric_indication_sn for e in events[:-1]]
        assert sns == list(range(1, len(sns) + 1))
        assert notice.last_indication_sn[1] == len(sns)
        ch.close()
    try:
        n = len(other.indications)
        inds = other.wait_for(n + 3)
        assert [i.ric_indication_sn for i in inds] == list(range(1, len(inds) + 1))
    finally:
        other.cancel()


def test_shutdown_sends_every_subscriber_a_deletion_notice() -> None:
    with FakeNode(seed=3, o1=False) as f:
        ch = grpc.insecure_channel(f.e2_target)
        st = e2_pb2_grpc.E2NodeStub(ch)
        readers = [Reader(st, sub_req(period_ms=20)) for _ in range(3)]
        for r in readers:
            r.wait_for(1)
    for r in readers:
        r.thread.join(5)
        assert r.error is None
        last = r.events[-1]
        assert last.HasField("deleted")
        assert last.deleted.ended_by == e2_pb2.SUBSCRIPTION_ENDED_BY_E2_NODE
        assert str(E2Cause.from_pb(last.deleted.cause)) == "misc/om-intervention"
        assert last.deleted.last_indication_sn[1] == len(r.indications)
    ch.close()


# ----------------------------------------------------------------------------- control


def control(style: int, action: int, fn: int = COSCHED, **message: Any) -> e2_pb2.RicControlRequest:
    return e2_pb2.RicControlRequest(
        ric_request_id=rid(),
        ran_function_id=fn,
        ric_control_header=e2_pb2.RicControlHeader(
            ric_style_type=style, ric_control_action_id=action
        ),
        ric_control_message=e2_pb2.RicControlMessage(**message),
    )


def policy_fields(**fields: Any) -> e2_pb2.PolicyControl:
    s = struct_pb2.Struct()
    s.update(fields)
    return e2_pb2.PolicyControl(fields=s)


def quota(sst: int, lo: int, hi: int, ded: int = 0, sd: int | None = None) -> e2_pb2.SliceQuota:
    q = e2_pb2.SliceQuota(
        sst=sst, min_prb_policy_ratio=lo, max_prb_policy_ratio=hi, dedicated_prb_policy_ratio=ded
    )
    if sd is not None:
        q.sd = sd
    return q


def test_pausing_a_tenant_stops_its_device_time(
    node_state: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    fake = node_state
    r = Reader(stub, sub_req(["airan.Tenant.llm.Busy", "airan.AiBusy"], period_ms=50))
    try:
        busy = [i.ric_indication_message.values["airan.Tenant.llm.Busy"] for i in r.wait_for(3)]
        assert max(busy[1:]) > 0.05  # the tenant uses the radio's slack
        ack = stub.Control(control(2, 1, tenant=e2_pb2.TenantControl(tenant="llm")))
        t = time.time_ns()  # applied by now
        o = ack.ric_control_outcome
        assert 0 < o.control_to_effect_ns == o.applied_ns - o.requested_ns < 1e9
        assert fake.node.arbiter.policy.tenants["llm"].paused
        after = values_after(r, t, 3)
        assert all(m.values["airan.Tenant.llm.Busy"] < 0.01 for m in after)
        stub.Control(control(2, 2, tenant=e2_pb2.TenantControl(tenant="llm")))
        t = time.time_ns()
        assert not fake.node.arbiter.policy.tenants["llm"].paused
        again = values_after(r, t, 3)
        assert max(m.values["airan.Tenant.llm.Busy"] for m in again) > 0.05
    finally:
        r.cancel()


def test_lowering_the_ai_share_cap_lowers_ai_busy(
    node_state: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    fake = node_state
    r = Reader(stub, sub_req(["airan.AiBusy"], period_ms=100))
    try:
        before = [i.ric_indication_message.values["airan.AiBusy"] for i in r.wait_for(3)[1:]]
        assert min(before) > 0.15
        ack = stub.Control(control(1, 1, policy=policy_fields(ai_share_cap=0.1)))
        t = time.time_ns()
        assert '"ai_share_cap":0.1' in ack.ric_control_outcome.applied_json.replace(" ", "")
        assert fake.node.arbiter.policy.ai_share_cap == pytest.approx(0.1)
        after = [m.values["airan.AiBusy"] for m in values_after(r, t, 3)]
        assert max(after) < 0.13
        assert fake.node.config.policy.guard_us == Policy().guard_us  # the rest unchanged
    finally:
        r.cancel()


def test_tenant_weights_merge_by_name(node_state: FakeNode, stub: e2_pb2_grpc.E2NodeStub) -> None:
    fake = node_state
    stub.Control(control(1, 1, policy=policy_fields(tenants={"llm": {"weight": 3}})))
    assert fake.node.arbiter.policy.tenants["llm"].weight == 3.0
    assert not fake.node.arbiter.policy.tenants["llm"].paused


def test_rc_slice_quota_is_applied_to_the_mac(
    node_state: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    fake = node_state
    r = Reader(stub, sub_req(["RRU.PrbTotDl"], period_ms=100))
    try:
        before = [i.ric_indication_message.values["RRU.PrbTotDl"] for i in r.wait_for(3)[1:]]
        assert min(before) > 50  # full buffer: most PRBs used
        ack = stub.Control(
            control(
                2, 6, fn=RC, slice_prb_quota=e2_pb2.SlicePrbQuotaControl(quotas=[quota(1, 0, 30)])
            )
        )
        t = time.time_ns()
        assert ack.ran_function_id == RC
        (q,) = fake.node.du.macs[0].slice_quotas
        assert (q.snssai.sst, q.min_ratio, q.max_ratio) == (1, 0, 30)
        assert fake.node.config.ran.slice_quotas == fake.node.du.macs[0].slice_quotas
        after = [m.values["RRU.PrbTotDl"] for m in values_after(r, t, 2)]
        assert max(after) <= 30.5
    finally:
        r.cancel()


BAD_CONTROLS: list[tuple[str, Callable[[], e2_pb2.RicControlRequest], str, str, str]] = [
    (
        "unknown RAN function",
        lambda: control(1, 1, fn=77, policy=policy_fields(ai_share_cap=0.5)),
        "NOT_FOUND",
        "ricRequest/ran-function-id-invalid",
        "ran_function_id",
    ),
    (
        "control on KPM",
        lambda: control(1, 1, fn=KPM, policy=policy_fields(ai_share_cap=0.5)),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_control_header.ric_style_type",
    ),
    (
        "unknown RC style",
        lambda: control(3, 6, fn=RC, slice_prb_quota=e2_pb2.SlicePrbQuotaControl()),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_control_header.ric_style_type",
    ),
    (
        "unknown RC action",
        lambda: control(2, 7, fn=RC, slice_prb_quota=e2_pb2.SlicePrbQuotaControl()),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_control_header.ric_control_action_id",
    ),
    (
        "RC action without its message",
        lambda: control(2, 6, fn=RC, tenant=e2_pb2.TenantControl(tenant="llm")),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota",
    ),
    (
        "ratio over 100",
        lambda: control(
            2, 6, fn=RC, slice_prb_quota=e2_pb2.SlicePrbQuotaControl(quotas=[quota(1, 0, 101)])
        ),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota.quotas[0].max_prb_policy_ratio",
    ),
    (
        "min over max",
        lambda: control(
            2,
            6,
            fn=RC,
            slice_prb_quota=e2_pb2.SlicePrbQuotaControl(quotas=[quota(1, 0, 50), quota(2, 60, 50)]),
        ),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota.quotas[1].min_prb_policy_ratio",
    ),
    (
        "dedicated over min",
        lambda: control(
            2, 6, fn=RC, slice_prb_quota=e2_pb2.SlicePrbQuotaControl(quotas=[quota(1, 10, 50, 20)])
        ),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota.quotas[0].dedicated_prb_policy_ratio",
    ),
    (
        "minimums over 100 %",
        lambda: control(
            2,
            6,
            fn=RC,
            slice_prb_quota=e2_pb2.SlicePrbQuotaControl(
                quotas=[quota(1, 60, 90), quota(2, 50, 90)]
            ),
        ),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota.quotas",
    ),
    (
        "a slice twice",
        lambda: control(
            2,
            6,
            fn=RC,
            slice_prb_quota=e2_pb2.SlicePrbQuotaControl(quotas=[quota(1, 0, 50), quota(1, 0, 60)]),
        ),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota.quotas[1].snssai",
    ),
    (
        "sst over 255",
        lambda: control(
            2, 6, fn=RC, slice_prb_quota=e2_pb2.SlicePrbQuotaControl(quotas=[quota(256, 0, 50)])
        ),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.slice_prb_quota.quotas[0].sst",
    ),
    (
        "unknown policy field",
        lambda: control(1, 1, policy=policy_fields(ai_share_cap=0.5, turbo=True)),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.policy.fields.turbo",
    ),
    (
        "policy value out of range",
        lambda: control(1, 1, policy=policy_fields(ai_share_cap=1.5)),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.policy.fields.ai_share_cap",
    ),
    (
        "guard not below the largest slice",
        lambda: control(1, 1, policy=policy_fields(guard_us=500.0)),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.policy.fields",
    ),
    (
        "tenant weight out of range",
        lambda: control(1, 1, policy=policy_fields(tenants={"llm": {"weight": -1}})),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.policy.fields.tenants.llm.weight",
    ),
    (
        "empty policy",
        lambda: control(1, 1, policy=policy_fields()),
        "INVALID_ARGUMENT",
        "ricRequest/control-message-invalid",
        "ric_control_message.policy.fields",
    ),
    (
        "unknown tenant",
        lambda: control(2, 1, tenant=e2_pb2.TenantControl(tenant="nobody")),
        "NOT_FOUND",
        "ricRequest/control-message-invalid",
        "ric_control_message.tenant.tenant",
    ),
    (
        "unknown co-scheduling action",
        lambda: control(2, 3, tenant=e2_pb2.TenantControl(tenant="llm")),
        "INVALID_ARGUMENT",
        "ricRequest/action-not-supported",
        "ric_control_header.ric_control_action_id",
    ),
    (
        "RIC requestor ID out of range",
        lambda: bad_rid(control(1, 1, policy=policy_fields(ai_share_cap=0.5)), 70_000, 1),
        "INVALID_ARGUMENT",
        "ricRequest/unspecified",
        "ric_request_id.ric_requestor_id",
    ),
    (
        "RIC instance ID out of range",
        lambda: bad_rid(control(1, 1, policy=policy_fields(ai_share_cap=0.5)), 1, 65_536),
        "INVALID_ARGUMENT",
        "ricRequest/unspecified",
        "ric_request_id.ric_instance_id",
    ),
]


def bad_rid(
    req: e2_pb2.RicControlRequest, requestor: int, instance: int
) -> e2_pb2.RicControlRequest:
    req.ric_request_id.ric_requestor_id = requestor
    req.ric_request_id.ric_instance_id = instance
    return req


@pytest.mark.parametrize(
    ("name", "make", "code", "cause", "field"), BAD_CONTROLS, ids=[c[0] for c in BAD_CONTROLS]
)
def test_bad_controls_are_refused_and_change_nothing(
    fake: FakeNode,
    stub: e2_pb2_grpc.E2NodeStub,
    name: str,
    make: Callable[[], e2_pb2.RicControlRequest],
    code: str,
    cause: str,
    field: str,
) -> None:
    policy = fake.node.arbiter.policy
    config = fake.node.config
    quotas = fake.node.du.macs[0].slice_quotas
    e = refusal(lambda: stub.Control(make()))
    assert (e.code.name, str(e.cause), e.field) == (code, cause, field)
    assert e.reason
    assert fake.node.arbiter.policy == policy
    assert fake.node.config == config
    assert fake.node.du.macs[0].slice_quotas == quotas


# ----------------------------------------------------------------------------- security


def test_a_read_only_app_may_subscribe_but_not_control() -> None:
    read_tok, ctl_tok = "read-token-123", "control-token-456"
    access = Access(
        [
            AppGrant(
                name="kpm-xapp", token_sha256=hash_token(read_tok), permission=Permission.READ
            ),
            AppGrant(
                name="rc-xapp", token_sha256=hash_token(ctl_tok), permission=Permission.CONTROL
            ),
        ]
    )
    with FakeNode(seed=4, o1=False, security=ServerSecurity(access=access)) as f:
        reader = E2Client(f.e2_target, ClientSecurity(token=read_tok, allow_plaintext_token=True))
        controller = E2Client(
            f.e2_target, ClientSecurity(token=ctl_tok, allow_plaintext_token=True)
        )
        anonymous = E2Client(f.e2_target)
        with reader, controller, anonymous:
            assert reader.setup().node_id == f.node.node_id
            with reader.kpm.subscribe(["airan.AiBusy"], period_ms=20) as sub:
                assert next(iter(sub)).sequence == 1
            with pytest.raises(E2Error) as info:
                reader.cosched.set_policy(ai_share_cap=0.5)
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert f.node.arbiter.policy.ai_share_cap == 1.0
            with pytest.raises(E2Error) as info:
                anonymous.setup()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            res = controller.cosched.set_policy(ai_share_cap=0.5)
            assert res.applied["ai_share_cap"] == 0.5
            assert f.node.arbiter.policy.ai_share_cap == 0.5


def test_the_grpcurl_bodies_of_the_docs_work(
    node_state: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    """Every request body docs/e2.md shows for grpcurl is valid proto3 JSON that the node
    accepts (what grpcurl would send)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "e2.md").read_text()
    calls = re.findall(r"-d '(\{.*?\})' 127\.0\.0\.1:PORT airan\.e2\.v1\.E2Node/(\w+)", doc, re.S)
    assert len(calls) >= 8
    types: dict[str, Any] = {
        "GetSetup": e2_pb2.GetSetupRequest,
        "Subscribe": e2_pb2.RicSubscriptionRequest,
        "ListSubscriptions": e2_pb2.ListSubscriptionsRequest,
        "DeleteSubscription": e2_pb2.RicSubscriptionDeleteRequest,
        "Control": e2_pb2.RicControlRequest,
    }
    streams = []
    for body, method in calls:
        req = json_format.Parse(body, types[method]())
        if method == "Subscribe":
            call = stub.Subscribe(req, timeout=30)
            assert next(call).HasField("admitted")
            streams.append(call)
        else:
            getattr(stub, method)(req, timeout=10)
    for call in streams:
        call.cancel()
    assert node_state.node.arbiter.policy.ai_share_cap == pytest.approx(0.3)


# ----------------------------------------------------------------------------- serving


@pytest.mark.parametrize("aio", [True, False], ids=["aio", "sync"])
def test_both_servers_stream_the_same_indications(fake: FakeNode, aio: bool) -> None:
    """The grpc.aio server (default) and the sync one (``aio=False``) serve the same
    stream: admission, indications spliced from one serialization per period (which
    parse to what the fields say, with two actions of one subscription sharing the
    measurement part), the deletion notice."""
    with serve_e2(fake.node, aio=aio) as srv:
        assert (srv.loop_thread is not None) == aio
        ch = grpc.insecure_channel(srv.target)
        st = e2_pb2_grpc.E2NodeStub(ch)
        names = ["airan.AiBusy", "DRB.UEThpDl"]
        req = sub_req(actions=[kpm_action(names, 1), kpm_action(names, 2)], period_ms=20)
        r = Reader(st, req)
        assert list(r.first.admitted.ric_actions_admitted) == [1, 2]
        inds = r.wait_for(6)
        for i in inds:
            again = e2_pb2.RicIndication()
            again.ParseFromString(i.SerializeToString())
            assert again == i and set(i.ric_indication_message.values) == set(names)
            assert i.ric_request_id == req.ric_request_id and i.ran_function_id == KPM
            assert i.ric_indication_header.sender_name == fake.node.node_id
        for action in (1, 2):
            sns = [i.ric_indication_sn for i in inds if i.ric_action_id == action]
            assert sns == list(range(1, len(sns) + 1))
        one = [i for i in inds if i.ric_action_id == 1]
        two = [i for i in inds if i.ric_action_id == 2]
        for a, b in zip(one, two, strict=False):
            assert a.ric_indication_header == b.ric_indication_header
            assert a.ric_indication_message == b.ric_indication_message
        st.DeleteSubscription(
            e2_pb2.RicSubscriptionDeleteRequest(
                ric_request_id=req.ric_request_id, ran_function_id=KPM
            )
        )
        r.thread.join(5)
        assert r.events[-1].HasField("deleted") and r.error is None
        ch.close()


# ----------------------------------------------------------------------------- review fixes


def _access(tmp_path: Path | None = None) -> tuple[Access, dict[str, str]]:
    tokens = {"kpm-a": "token-a-0123456789", "kpm-b": "token-b-0123456789"}
    tokens["ctl"] = "token-ctl-0123456789"
    apps = [
        AppGrant(name=n, token_sha256=hash_token(t), permission=Permission.READ)
        for n, t in tokens.items()
        if n != "ctl"
    ]
    apps.append(
        AppGrant(name="ctl", token_sha256=hash_token(tokens["ctl"]), permission=Permission.CONTROL)
    )
    return Access(apps, None if tmp_path is None else tmp_path / "audit.jsonl"), tokens


def _audit_lines(path: Path, at_least: int = 0) -> list[dict[str, Any]]:
    """The audit log's lines, once it has ``at_least`` of them: a call's line is written
    after the call, which may be just after its caller got the status."""
    end = time.monotonic() + 5.0
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        if len(lines) >= at_least or time.monotonic() > end:
            return lines
        time.sleep(0.005)


@pytest.mark.parametrize("aio", [True, False], ids=["aio", "sync"])
def test_only_the_owner_may_delete_a_subscription_and_lists_show_own(
    tmp_path: Path, aio: bool
) -> None:
    access, tok = _access(tmp_path)
    with FakeNode(seed=4, o1=False, security=ServerSecurity(access=access), aio=aio) as f:

        def client(name: str) -> E2Client:
            sec = ClientSecurity(token=tok[name], allow_plaintext_token=True)
            return E2Client(f.e2_target, sec, requestor_id=11 if name == "kpm-a" else 12)

        with client("kpm-a") as a, client("kpm-b") as b, client("ctl") as ctl:
            sub_a = a.kpm.subscribe(["airan.AiBusy"], period_ms=20)
            sub_b = b.kpm.subscribe(["airan.AiBusy"], period_ms=20)
            try:
                next(iter(sub_a))
                # B sees only its own; the control app sees both, with their owners
                listed = [
                    (i.ric_request_id.ric_requestor_id, i.ric_request_id.ric_instance_id)
                    for i in b.list_subscriptions()
                ]
                assert listed == [sub_b.request_id]
                assert {i.app for i in ctl.list_subscriptions()} == {"kpm-a", "kpm-b"}
                assert {i.app for i in a.list_subscriptions()} == {"kpm-a"}
                # B may not delete A's subscription: PERMISSION_DENIED, audited, A goes on
                n = len(_audit_lines(tmp_path / "audit.jsonl"))
                with pytest.raises(E2Error) as info:
                    b.delete_subscription(sub_a.request_id, KPM)
                assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
                assert info.value.field == "ric_request_id"
                assert f.agent.active == 2
                line = _audit_lines(tmp_path / "audit.jsonl", n + 1)[-1]
                assert line["app"] == "kpm-b" and line["decision"] == "deny"
                assert line["method"] == "/airan.e2.v1.E2Node/DeleteSubscription"
                assert line["code"] == "PERMISSION_DENIED"
                assert line["ric_request_id"] == "{}:{}".format(*sub_a.request_id)
                seq = next(iter(sub_a)).sequence
                assert next(iter(sub_a)).sequence == seq + 1
                # the owner may
                a.delete_subscription(sub_a.request_id, KPM)
                list(sub_a)
                assert sub_a.ended is not None and sub_a.ended.ended_by == "ric"
            finally:
                sub_a.cancel()
                sub_b.cancel()


def test_without_access_anyone_may_delete_and_list_all(
    fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    req = sub_req(period_ms=20)
    r = Reader(stub, req)
    try:
        assert any(
            i.ric_request_id == req.ric_request_id
            for i in stub.ListSubscriptions(e2_pb2.ListSubscriptionsRequest()).subscriptions
        )
        stub.DeleteSubscription(
            e2_pb2.RicSubscriptionDeleteRequest(
                ric_request_id=req.ric_request_id, ran_function_id=KPM
            )
        )
        r.thread.join(5)
        assert r.events[-1].HasField("deleted")
    finally:
        r.cancel()


def test_concurrent_partial_policy_controls_do_not_undo_each_other(
    node_state: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    """Two xApps change different policy fields at the same time: both stick."""
    node = node_state.node
    base = node.config.policy
    for round_ in range(6):
        cap = 0.3 + 0.05 * round_
        guard = 21.0 + round_
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def send(
            req: e2_pb2.RicControlRequest,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait(5)
                stub.Control(req, timeout=10)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(
                target=send, args=(control(1, 1, policy=policy_fields(ai_share_cap=cap)),)
            ),
            threading.Thread(
                target=send, args=(control(1, 1, policy=policy_fields(guard_us=guard)),)
            ),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert not errors
        pol = node.config.policy
        assert pol.ai_share_cap == pytest.approx(cap) and pol.guard_us == guard, round_
        assert node.arbiter.policy == pol
    assert base != node.config.policy


def test_a_control_the_loop_does_not_take_in_time_is_deadline_exceeded() -> None:
    """The node's loop is held (it never drains its mailbox): the change is withdrawn,
    never applied, and the caller learns DEADLINE_EXCEEDED control-timer-expired."""
    from airan.node import Node

    node = Node.simulated(seed=3)
    with serve_e2(node, control_timeout_s=0.2) as srv, grpc.insecure_channel(srv.target) as ch:
        st = e2_pb2_grpc.E2NodeStub(ch)
        node.arbiter._running = True  # as if the loop ran but never took a change
        try:
            e = refusal(lambda: st.Control(control(1, 1, policy=policy_fields(ai_share_cap=0.5))))
        finally:
            node.arbiter._running = False
        assert (e.code, str(e.cause)) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "ricRequest/control-timer-expired",
        )
        assert node.arbiter.policy.ai_share_cap == 1.0
        assert node.config.policy.ai_share_cap == 1.0


def test_the_timeout_is_recognised_by_its_type_not_its_text(
    monkeypatch: pytest.MonkeyPatch, fake: FakeNode, stub: e2_pb2_grpc.E2NodeStub
) -> None:
    from airan.core.errors import FieldError
    from airan.sched.arbiter import ControlTimeoutError

    node = fake.node  # nothing gets applied: no state to restore

    def timeout(*_: object, **__: object) -> None:
        raise ControlTimeoutError("policy", "withdrawn: the loop is stalled")

    monkeypatch.setattr(node, "set_policy", timeout)
    e = refusal(lambda: stub.Control(control(1, 1, policy=policy_fields(ai_share_cap=0.5))))
    assert (e.code, str(e.cause), e.field) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "ricRequest/control-timer-expired",
        "policy",
    )

    def refused(*_: object, **__: object) -> None:
        raise FieldError("guard_us", "the arbiter did not take it within reason")

    monkeypatch.setattr(node, "set_policy", refused)
    e = refusal(lambda: stub.Control(control(1, 1, policy=policy_fields(ai_share_cap=0.5))))
    assert (e.code, str(e.cause)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ricRequest/control-message-invalid",
    )


@pytest.mark.parametrize("aio", [True, False], ids=["aio", "sync"])
def test_control_audit_lines_are_written_after_the_call_with_the_outcome(
    tmp_path: Path, aio: bool
) -> None:
    access, tok = _access(tmp_path)
    audit = tmp_path / "audit.jsonl"
    with FakeNode(seed=4, o1=False, security=ServerSecurity(access=access), aio=aio) as f:
        sec = ClientSecurity(token=tok["ctl"], allow_plaintext_token=True)
        with E2Client(f.e2_target, sec, requestor_id=99) as ctl:
            n = len(_audit_lines(audit))
            res = ctl.cosched.set_policy(ai_share_cap=0.5)
            ok = _audit_lines(audit, n + 1)[-1]
            with pytest.raises(E2Error):
                ctl.cosched.set_policy(guard_us=1e9)
            bad = _audit_lines(audit, n + 2)[-1]
        with (
            E2Client(
                f.e2_target, ClientSecurity(token=tok["kpm-a"], allow_plaintext_token=True)
            ) as reader,
            pytest.raises(E2Error),
        ):
            reader.cosched.set_policy(ai_share_cap=0.5)
        denied = _audit_lines(audit, n + 3)[-1]
    assert ok["app"] == "ctl" and ok["decision"] == "allow" and ok["code"] == "OK"
    assert ok["method"] == "/airan.e2.v1.E2Node/Control"
    assert ok["ric_request_id"].startswith("99:") and res.applied["ai_share_cap"] == 0.5
    assert ok["ran_function_id"] == COSCHED
    assert (ok["ric_style_type"], ok["ric_control_action_id"]) == (1, 1)
    assert "client_cert_subject" not in ok  # no mutual TLS here
    assert bad["decision"] == "allow" and bad["code"] == "INVALID_ARGUMENT"
    assert bad["ric_request_id"].startswith("99:")
    # a refusal keeps its line, written before anything runs
    assert denied["decision"] == "deny" and denied["code"] == "PERMISSION_DENIED"
    assert denied["app"] == "kpm-a" and "ric_request_id" not in denied


def test_plaintext_tokens_need_loopback_or_an_explicit_opt_in() -> None:
    from airan.core.errors import FieldError
    from airan.node import Node

    access, _ = _access()
    node = Node.simulated(seed=3)
    with pytest.raises(FieldError) as info:
        serve_e2(node, security=ServerSecurity(access=access), host="0.0.0.0")
    assert info.value.field == "security.tls"
    for host in ("127.0.0.1", "localhost", "::1"):
        try:
            srv = serve_e2(node, security=ServerSecurity(access=access), host=host)
        except FieldError as exc:  # no IPv6 on this machine: not what is tested
            assert exc.field == "port", exc
            continue
        srv.stop(0.1)
    srv = serve_e2(
        node, security=ServerSecurity(access=access, allow_plaintext_tokens=True), host="0.0.0.0"
    )
    srv.stop(0.1)
    srv = serve_e2(node, security=ServerSecurity(), host="0.0.0.0")  # no tokens: no secret
    srv.stop(0.1)

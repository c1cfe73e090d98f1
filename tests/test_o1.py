"""O1 against real gRPC servers on loopback and a real (simulated-device) node:
Get/Set, atomic rollback, persistence, VES events, alarms, slow subscribers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from airan.core.errors import FieldError
from airan.core.slices import AiJob
from airan.node import Node, NodeConfig
from airan.o1.v1 import o1_pb2
from airan.ric.o1 import (
    O1Client,
    O1Error,
    O1Service,
    apply_edit,
    get_at,
    load_state,
    parse_path,
    ves_json,
)
from airan.ric.security import Access, AppGrant, ClientSecurity, Permission, ServerSecurity
from airan.ric.security import hash_token as sha
from airan.ric.server import build_server

WAIT_S = 10.0


def base_config(**alarms: float) -> NodeConfig:
    return NodeConfig.parse(
        {
            "policy": {"tenants": {"llm": {"weight": 2.0}, "batch": {}}},
            "ran": {
                "slice_quotas": [
                    {"snssai": {"sst": 1}, "min_ratio": 20, "max_ratio": 80},
                    {"snssai": {"sst": 2, "sd": 1}, "max_ratio": 60},
                ]
            },
            "alarms": {"window_s": 0.3, **alarms},
        }
    )


@dataclass
class Stack:
    node: Node
    service: O1Service
    server: grpc.Server
    port: int
    client: O1Client
    extra: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for x in self.extra:
            x.close()
        self.client.close()
        self.server.stop(None)
        self.service.close()
        self.node.stop()


@pytest.fixture
def stack() -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(
        node: Node | None = None,
        state: Path | None = None,
        security: ServerSecurity | None = None,
        **kw: Any,
    ) -> Stack:
        node = node or Node.simulated(base_config(), seed=1)
        service = O1Service(node, state, **kw)
        server, port = build_server(0, security, [service.registration()], max_workers=8)
        server.start()
        client = O1Client(f"127.0.0.1:{port}", timeout_s=WAIT_S)
        made.append(Stack(node, service, server, port, client))
        return made[-1]

    yield make
    for s in made:
        s.close()


def until(cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Collector:
    """Reads an event stream in a thread."""

    def __init__(self, client: O1Client, domains: tuple[str, ...] = ()) -> None:
        self.stream = client.events(domains)
        self.events: list[o1_pb2.VesEvent] = []
        self.error: O1Error | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.stream:
                self.events.append(ev)
        except O1Error as exc:
            self.error = exc

    def faults(self, condition: str) -> list[o1_pb2.FaultFields]:
        return [
            e.fault_fields
            for e in list(self.events)
            if e.HasField("fault_fields") and e.fault_fields.alarm_condition == condition
        ]

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(WAIT_S)


def conditions(client: O1Client) -> set[str]:
    return {a.fault_fields.alarm_condition for a in client.active_alarms()}


# --------------------------------------------------------------------------- the tree


def test_paths_are_json_pointers() -> None:
    tree: dict[str, Any] = {"a": {"b/c": [1, 2], "~x": 3}}
    assert parse_path("/") == [] and parse_path("") == []
    assert get_at(tree, "/a/b~1c/1") == 2 and get_at(tree, "/a/~0x") == 3
    apply_edit(tree, "/a/b~1c/-", 7)
    apply_edit(tree, "/a/b~1c/0", remove=True, value=None)
    assert tree["a"]["b/c"] == [2, 7]
    for bad, why in (
        ("a/b", "must start with '/'"),
        ("/a//b", "empty segment"),
        ("/a/~2", "escaped"),
        ("/a/nope", "no key 'nope'"),
        ("/a/b~1c/9", "out of range"),
        ("/a/b~1c/01", "integer"),
        ("/a/~0x/y", "parent is a number"),
    ):
        with pytest.raises(FieldError) as err:
            get_at(tree, bad)
        assert err.value.field == "path" and why in err.value.reason, (bad, err.value)


def test_get_returns_subtrees(stack: Callable[..., Stack]) -> None:
    s = stack()
    o1 = s.client
    whole = o1.get("/")
    assert whole == json.loads(s.node.config.model_dump_json())
    assert o1.get("/policy") == whole["policy"]
    assert o1.get("/policy/guard_us") == 20.0
    assert o1.get("/ran/slice_quotas/0/max_ratio") == 80
    assert o1.get("/ran/slice_quotas/1/snssai") == {"sst": 2, "sd": 1}
    assert o1.get("/policy/tenants/llm/paused") is False
    assert o1.get("/policy/tenants/llm/weight") == 2.0
    assert o1.revision == 0


def test_set_then_get_round_trip(stack: Callable[..., Stack], tmp_path: Path) -> None:
    s = stack(state=tmp_path / "o1.json")
    o1 = s.client
    r = o1.set("/policy/guard_us", 30)
    assert (r.revision, r.changed, r.restart_required) == (1, ("/policy/guard_us",), ())
    assert o1.get("/policy/guard_us") == 30.0 and s.node.config.policy.guard_us == 30.0
    r = o1.set_many(
        [
            ("/policy/tenants/llm/paused", True),
            ("/ran/slice_quotas/0/max_ratio", 70),
            ("/policy/tenants/new", {"weight": 3}),
        ]
    )
    assert r.revision == 2
    assert set(r.changed) == {
        "/policy/tenants/llm/paused",
        "/ran/slice_quotas/0/max_ratio",
        "/policy/tenants/new",
    }
    assert s.node.config.policy.tenants["llm"].paused is True
    assert s.node.config.ran.slice_quotas[0].max_ratio == 70
    assert o1.get("/policy/tenants/new") == {"weight": 3.0, "quota_us_per_s": None, "paused": False}
    r = o1.remove("/policy/tenants/new")
    assert r.changed == ("/policy/tenants/new",) and "new" not in o1.get("/policy/tenants")
    # a field that is stored now and takes effect at the next start
    r = o1.set("/ran/ues", 4)
    assert r.restart_required == ("/ran/ues",) and o1.get("/ran/ues") == 4
    # setting what is already there changes nothing
    assert o1.set("/ran/ues", 4) == type(r)(r.revision, (), ())
    # optimistic concurrency
    with pytest.raises(O1Error) as err:
        o1.set("/policy/guard_us", 25, if_revision=1)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "if_revision" in str(err.value)
    assert o1.set("/policy/guard_us", 25, if_revision=r.revision).revision == r.revision + 1


def _state(path: Path) -> bytes:
    return path.read_bytes()


def test_a_set_failing_half_way_changes_nothing(
    stack: Callable[..., Stack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "o1.json"
    s = stack(state=state)
    o1 = s.client
    o1.set("/policy/guard_us", 30)
    before, saved, rev = o1.get("/"), _state(state), o1.revision
    policy_before = s.node.arbiter.policy

    # the second edit is invalid: the first is not applied either
    with pytest.raises(O1Error) as err:
        o1.set_many([("/policy/guard_us", 40), ("/policy/max_ai_slice_us", 0)])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "/policy/max_ai_slice_us" in err.value.message
    # each edit valid alone, the combination breaks a cross-field rule
    with pytest.raises(O1Error) as err:
        o1.set_many([("/policy/max_ai_slice_us", 50), ("/policy/guard_us", 60)])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "guard_us" in err.value.message
    # an edit list whose second path does not exist
    with pytest.raises(O1Error) as err:
        o1.set_many([("/policy/guard_us", 40), ("/ran/slice_quotas/7/max_ratio", 1)])
    assert "edits[1].path" in err.value.message and "/ran/slice_quotas/7" in err.value.message
    assert o1.get("/") == before and _state(state) == saved

    # the MAC refuses the quotas after the arbiter took the new policy: rolled back
    def refuse(quotas: object) -> None:
        raise RuntimeError("MAC busy")

    monkeypatch.setattr(s.node.du, "set_slice_quotas", refuse)
    with pytest.raises(O1Error) as err:
        o1.set_many([("/policy/guard_us", 45), ("/ran/slice_quotas/0/max_ratio", 75)])
    assert err.value.code == grpc.StatusCode.INTERNAL and "MAC busy" in err.value.message
    assert o1.get("/") == before and o1.revision == rev and _state(state) == saved
    assert s.node.arbiter.policy == policy_before and s.node.arbiter.policy.guard_us == 30.0
    monkeypatch.undo()
    assert o1.set("/ran/slice_quotas/0/max_ratio", 75).revision == rev + 1


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("/policy/guard_uss", 1, "/policy/guard_uss: unknown key"),
        ("/policy/guard_us", "x", "/policy/guard_us"),
        ("/policy/guard_us", 1e9, "/policy/guard_us"),
        ("/policy/name", "round-robin", "/policy/name"),
        ("/ran/slice_quotas/5/max_ratio", 1, "/ran/slice_quotas/5"),
        ("/ran/slice_quotas/x", 1, "/ran/slice_quotas/x"),
        ("policy/guard_us", 1, "edits[0].path"),
        ("/policy/guard_us/deeper", 1, "/policy/guard_us/deeper"),
        ("/ran/slice_quotas/0/max_ratio", 101, "/ran/slice_quotas/0/max_ratio"),
        ("/", [], "/"),
    ],
)
def test_bad_input_names_the_path_and_the_server_goes_on(
    stack: Callable[..., Stack], path: str, value: object, named: str
) -> None:
    s = stack()
    before = s.client.get("/")
    with pytest.raises(O1Error) as err:
        s.client.set(path, value)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert named in err.value.message, err.value.message
    assert s.client.get("/") == before  # still serving, nothing changed


def test_raw_requests_with_bad_json_or_paths(stack: Callable[..., Stack]) -> None:
    s = stack()
    stub = s.client._stub
    cases = [
        (o1_pb2.SetRequest(edits=[o1_pb2.Edit(path="/policy/name", json_value="fifo")]),
         "edits[0].json_value: not JSON"),
        (o1_pb2.SetRequest(edits=[o1_pb2.Edit(path="/policy/guard_us", json_value="NaN")]),
         "edits[0].json_value"),
        (o1_pb2.SetRequest(), "edits: give at least one edit"),
        (o1_pb2.SetRequest(edits=[o1_pb2.Edit(path="/policy/tenants/ghost", remove=True)]),
         "edits[0].path: /policy/tenants/ghost: no key 'ghost' to remove"),
    ]  # fmt: skip
    for req, named in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Set(req, timeout=WAIT_S)
        assert isinstance(err.value, grpc.Call)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in (err.value.details() or ""), err.value.details()
    # a well-formed path that names nothing: NOT_FOUND; a malformed one: INVALID_ARGUMENT
    for missing in ("/policy/nope", "/ran/slice_quotas/99", "/policy/guard_us/x"):
        with pytest.raises(O1Error) as e:
            s.client.get(missing)
        assert e.value.code == grpc.StatusCode.NOT_FOUND and missing in e.value.message
    for bad in ("policy", "/policy//guard_us", "/ran/slice_quotas/one"):
        with pytest.raises(O1Error) as e:
            s.client.get(bad)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT, bad
    with pytest.raises(O1Error) as e:
        list(s.client.events(["faults"]))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "domains[0]" in e.value.message
    assert s.client.get("/policy/guard_us") == 20.0
    # removing a field of the model resets it to its default
    s.client.set("/policy/guard_us", 33)
    assert s.client.remove("/policy/guard_us").changed == ("/policy/guard_us",)
    assert s.client.get("/policy/guard_us") == 20.0


# --------------------------------------------------------------------------- persistence


def test_the_configuration_survives_a_restart(stack: Callable[..., Stack], tmp_path: Path) -> None:
    state = tmp_path / "sub" / "o1.json"
    first = stack(state=state)
    first.client.set_many([("/policy/guard_us", 35), ("/policy/tenants/batch/paused", True)])
    first.client.set("/ran/slice_quotas/1/max_ratio", 50)
    first.close()
    assert not list(state.parent.glob(".*.tmp"))  # no temp file left behind
    cfg, rev = load_state(state)
    assert rev == 2 and cfg.policy.guard_us == 35.0

    second = stack(node=Node.simulated(base_config(), seed=2), state=state)
    assert second.service.restore_error is None and second.service.revision == 2
    assert second.node.config.policy.guard_us == 35.0
    assert second.node.config.policy.tenants["batch"].paused is True
    assert second.client.get("/ran/slice_quotas/1/max_ratio") == 50
    assert second.node.arbiter.policy.guard_us == 35.0
    assert second.client.active_alarms() == []


def test_a_corrupt_saved_file_keeps_the_defaults_and_raises_an_alarm(
    stack: Callable[..., Stack], tmp_path: Path
) -> None:
    state = tmp_path / "o1.json"
    for content in ("{not json", json.dumps({"config": {"policy": {"guard_us": -1}}})):
        state.write_text(content)
        s = stack(state=state)
        assert s.service.restore_error is not None
        assert s.node.config == base_config()
        alarms = s.client.active_alarms()
        assert [a.fault_fields.alarm_condition for a in alarms] == ["configRestoreFailed"]
        assert alarms[0].fault_fields.event_severity == "MAJOR"
        assert str(state) in alarms[0].fault_fields.alarm_additional_information["file"]
    assert "guard_us" in (s.service.restore_error or "")
    # a successful Set rewrites the file and clears the alarm
    s.client.set("/policy/guard_us", 22)
    assert s.client.active_alarms() == [] and load_state(state)[0].policy.guard_us == 22.0


# --------------------------------------------------------------------------- events, alarms


def test_heartbeats_measurements_and_domain_filters(stack: Callable[..., Stack]) -> None:
    node = Node.simulated(base_config(heartbeat_s=0.2), seed=3)
    s = stack(node=node, measurement_s=0.2)
    node.start(30)
    beats = Collector(s.client, ("heartbeat",))
    meas = Collector(s.client, ("measurement",))
    s.extra += [beats, meas]
    until(lambda: len(beats.events) >= 2 and len(meas.events) >= 2, "heartbeats and measurements")
    assert {e.common_event_header.domain for e in beats.events} == {"heartbeat"}
    assert {e.common_event_header.domain for e in meas.events} == {"measurement"}
    hb = beats.events[0]
    h = hb.common_event_header
    assert h.source_name == "airan-node-1" and h.version == "4.1"
    assert h.ves_event_listener_version.startswith("7.")
    assert hb.heartbeat_fields.heartbeat_interval == 1
    assert hb.heartbeat_fields.additional_fields["heartbeatIntervalS"] == "0.2"
    assert beats.events[1].common_event_header.sequence == h.sequence + 1
    m = meas.events[-1].measurement_fields
    assert 0.1 < m.measurement_interval < 1.0
    groups = {g.name: g.hash_map for g in m.additional_measurements}
    assert set(Node.NODE_MEASUREMENTS) <= set(groups["node"])
    assert float(groups["node"]["airan.RadioTasks"]) > 0
    doc = ves_json(meas.events[-1])["event"]
    assert doc["commonEventHeader"]["domain"] == "measurement"
    assert isinstance(doc["commonEventHeader"]["startEpochMicrosec"], int)
    assert "additionalMeasurements" in doc["measurementFields"]


def test_deadline_miss_alarm_raised_and_cleared(stack: Callable[..., Stack]) -> None:
    # a cell with more L1 work per slot than the device can do: radio deadlines are missed
    overfull = {
        "numerology": 1,
        "bandwidth_mhz": 100,
        "antennas": 8,
        "layers": 4,
        "ues": 64,
        "max_ues_per_slot": 16,
        "slice_quotas": [{"snssai": {"sst": 1}, "max_ratio": 100}],
    }
    cfg = NodeConfig.parse({"ran": overfull, "alarms": {"window_s": 0.3}})
    node = Node.simulated(cfg, seed=4, ai=False)
    s = stack(node=node)
    faults = Collector(s.client, ("fault",))
    s.extra.append(faults)
    node.start(60)
    until(lambda: bool(faults.faults("deadlineMissRatio")), "the miss-ratio alarm")
    raised = faults.faults("deadlineMissRatio")[0]
    assert raised.event_severity in ("MAJOR", "CRITICAL")
    assert float(raised.alarm_additional_information["missRatio"]) > 1e-3
    assert int(raised.alarm_additional_information["misses"]) > 0
    assert "deadlineMissRatio" in conditions(s.client)
    # the operator cuts the slice's PRB quota through O1: less L1 work, no more misses
    s.client.set("/ran/slice_quotas/0/max_ratio", 10)
    until(lambda: "deadlineMissRatio" not in conditions(s.client), "the clear")
    until(lambda: faults.faults("deadlineMissRatio")[-1].event_severity == "NORMAL", "its event")
    events = [e for e in faults.events if e.fault_fields.alarm_condition == "deadlineMissRatio"]
    clear, raise_ = events[-1].common_event_header, events[-2].common_event_header
    assert clear.event_id == raise_.event_id and clear.sequence == raise_.sequence + 1


def test_ai_fault_and_l2_silence_alarms(
    stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node.simulated(base_config(l2_silence_ms=150), seed=5)

    def broken() -> Iterator[Any]:
        raise RuntimeError("model weights missing")
        yield  # pragma: no cover

    node.arbiter.add_job(AiJob(broken(), tenant="batch"))
    s = stack(node=node)
    node.start(60)
    until(lambda: "aiFault" in conditions(s.client), "the AI fault alarm")
    ai = next(a for a in s.client.active_alarms() if a.fault_fields.alarm_condition == "aiFault")
    assert "model weights missing" in ai.fault_fields.specific_problem
    assert ai.fault_fields.event_severity == "MINOR"
    until(lambda: "aiFault" not in conditions(s.client), "the AI fault to clear")  # window 0.3 s
    # the L2 goes quiet
    faults = Collector(s.client, ("fault",))
    s.extra.append(faults)
    quiet_since = time.perf_counter_ns()
    monkeypatch.setattr(node.du, "last_l2_message_ns", lambda: quiet_since)
    until(lambda: "l2Silence" in conditions(s.client), "the L2 silence alarm")
    monkeypatch.undo()
    until(lambda: "l2Silence" not in conditions(s.client), "the L2 silence to clear")

    def severities() -> list[str]:
        return [f.event_severity for f in faults.faults("l2Silence")]

    until(lambda: severities()[-2:] == ["MAJOR", "NORMAL"], "the raise and clear events")


def test_a_slow_subscriber_is_dropped_and_does_not_stall_others(
    stack: Callable[..., Stack],
) -> None:
    s = stack(max_queue=32, measurement_s=0)
    slow = s.client.events(["measurement"])  # never read
    fast = Collector(s.client, ("measurement",))
    s.extra.append(fast)
    until(lambda: s.service.subscribers == 2, "two subscribers")
    big = {f"m{i}": "1.23456789" for i in range(300)}  # ~4 kB an event
    ev = o1_pb2.VesEvent(
        common_event_header=o1_pb2.CommonEventHeader(domain="measurement"),
        measurement_fields=o1_pb2.MeasurementFields(
            additional_measurements=[o1_pb2.NamedHashMap(name="node", hash_map=big)]
        ),
    )
    sent, worst = 0, 0.0
    while s.service.subscribers_dropped == 0:
        assert sent < 20_000, "the slow subscriber was never dropped"
        t0 = time.perf_counter()
        for _ in range(16):
            s.service.publish(ev)
        worst = max(worst, time.perf_counter() - t0)
        sent += 16
        until(lambda: len(fast.events) >= sent, "the fast subscriber")  # noqa: B023
    # publishing never waited for anyone; the fast one got everything
    assert worst < 0.05 and len(fast.events) == sent and fast.error is None
    assert s.service.subscribers_dropped == 1 and s.service.subscribers == 1
    with pytest.raises(O1Error) as err:
        for _ in slow:
            pass
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_o1_set_needs_the_control_permission(stack: Callable[..., Stack], tmp_path: Path) -> None:
    access = Access(
        [
            AppGrant(name="viewer", token_sha256=sha("view-token"), permission=Permission.READ),
            AppGrant(name="ops", token_sha256=sha("ops-token"), permission=Permission.CONTROL),
        ],
        audit_log=tmp_path / "audit.jsonl",
    )
    s = stack(security=ServerSecurity(None, access))
    target = f"127.0.0.1:{s.port}"
    viewer = ClientSecurity(token="view-token", allow_plaintext_token=True)
    ops = ClientSecurity(token="ops-token", allow_plaintext_token=True)
    with O1Client(target, viewer) as c:
        assert c.get("/policy/guard_us") == 20.0 and c.active_alarms() == []
        with pytest.raises(O1Error) as err:
            c.set("/policy/guard_us", 30)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    with O1Client(target, ops) as c:
        assert c.set("/policy/guard_us", 30).revision == 1
    with O1Client(target) as c, pytest.raises(O1Error) as err:
        c.get("/")
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["app"], x["decision"]) for x in lines] == [
        ("viewer", "deny"),
        ("ops", "allow"),
        (None, "deny"),
    ]


# --------------------------------------------------------------------------- E2 changes


def test_changes_made_over_e2_are_persisted_and_restored(tmp_path: Path) -> None:
    from airan.core.rrm import SliceQuota, Snssai
    from airan.ric.xapp import E2Client
    from airan.testing import FakeNode

    state = tmp_path / "o1.json"
    with FakeNode(base_config(), seed=1, o1_state=state) as fake:
        assert fake.o1_target is not None
        with O1Client(fake.o1_target, timeout_s=WAIT_S) as o1, E2Client(fake.e2_target) as e2:
            o1.set("/policy/guard_us", 25.0)  # an O1 Set: revision 1, saved
            rev = o1.revision
            assert rev == 1 and load_state(state)[1] == 1
            e2.rc.slice_prb_quota(
                [SliceQuota(snssai=Snssai(sst=3), min_ratio=10, max_ratio=50, dedicated_ratio=5)]
            )
            e2.cosched.set_policy(ai_share_cap=0.4)
            e2.cosched.pause_tenant("batch")
            # each acknowledged control is on disk already, with its own revision
            cfg, saved_rev = load_state(state)
            assert saved_rev == rev + 3 == fake.o1.revision == fake.o1.external_changes + 1
            assert cfg == fake.node.config
            assert not list(tmp_path.glob(".*.tmp"))
            # O1 sees the new revision: a Set conditional on the old one is refused
            with pytest.raises(O1Error) as err:
                o1.set("/policy/guard_us", 30.0, if_revision=rev)
            assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert o1.get("/policy/ai_share_cap") == 0.4 and o1.revision == rev + 3
            o1.set("/policy/guard_us", 30.0, if_revision=rev + 3)
            assert load_state(state)[1] == rev + 4
    # restart: a new node, a new O1 service on the saved file
    node = Node.simulated(base_config(), seed=2)
    service = O1Service(node, state, monitor=False)
    try:
        pol = node.config.policy
        assert pol.ai_share_cap == 0.4 and pol.guard_us == 30.0
        assert pol.tenants["batch"].paused and not pol.tenants["llm"].paused
        quotas = node.config.ran.slice_quotas
        assert [(q.snssai.sst, q.min_ratio, q.max_ratio, q.dedicated_ratio) for q in quotas] == [
            (3, 10, 50, 5)
        ]
        assert service.revision == rev + 4 and service.restore_error is None
    finally:
        service.close()


def test_a_change_that_cannot_be_saved_stays_applied_and_raises_an_alarm(
    tmp_path: Path,
) -> None:
    state = tmp_path / "dir" / "o1.json"
    node = Node.simulated(base_config(), seed=1)
    service = O1Service(node, state, monitor=False)
    try:
        state.parent.write_text("not a directory")  # every write now fails
        node.set_policy(node.config.policy.model_copy(update={"guard_us": 24.0}))
        assert node.config.policy.guard_us == 24.0  # applied all the same
        assert service.is_active("configPersistFailed") and service.persist_failures == 1
        alarm = service.active_alarms()[0].fault_fields
        assert alarm.alarm_condition == "configPersistFailed"
        assert alarm.alarm_additional_information["changed"] == "/policy/guard_us"
        state.parent.unlink()
        node.set_policy(node.config.policy.model_copy(update={"guard_us": 26.0}))
        assert not service.is_active("configPersistFailed")
        assert load_state(state)[0].policy.guard_us == 26.0
        assert load_state(state)[1] == service.revision == 2
    finally:
        service.close()


def test_event_streams_on_the_aio_server_of_a_fake_node() -> None:
    from airan.testing import FakeNode

    with FakeNode(base_config(), seed=1) as fake:
        assert fake.o1_target is not None
        with O1Client(fake.o1_target, timeout_s=WAIT_S) as o1:
            with pytest.raises(O1Error) as err:
                next(o1.events(["nope"]))
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "domains[0]" in err.value.message
            got = Collector(o1, ("heartbeat",))
            until(lambda: fake.o1.subscribers == 1, "the subscription")
            fake.o1._heartbeat(1.0)
            until(lambda: len(got.events) == 1, "the heartbeat")
            assert got.events[0].heartbeat_fields.heartbeat_interval == 1
            got.stream.cancel()
            until(lambda: fake.o1.subscribers == 0, "the stream to end")


def test_an_o1_set_racing_an_e2_control_loses_neither() -> None:
    """An O1 Set of one policy field and an E2 control of another, at the same time:
    each builds on the tree in force (read-modify-write under the node's lock)."""
    from airan.ric.xapp import E2Client
    from airan.testing import FakeNode

    with FakeNode(base_config(), seed=1) as fake:
        assert fake.o1_target is not None
        with O1Client(fake.o1_target, timeout_s=WAIT_S) as o1, E2Client(fake.e2_target) as e2:
            for round_ in range(6):
                guard, cap = 21.0 + round_, 0.3 + 0.05 * round_
                barrier = threading.Barrier(2)
                errors: list[BaseException] = []

                def run(
                    fn: Callable[[], object],
                    barrier: threading.Barrier = barrier,
                    errors: list[BaseException] = errors,
                ) -> None:
                    try:
                        barrier.wait(5)
                        fn()
                    except BaseException as exc:
                        errors.append(exc)

                threads = [
                    threading.Thread(
                        target=run, args=(lambda g=guard: o1.set("/policy/guard_us", g),)
                    ),
                    threading.Thread(
                        target=run, args=(lambda c=cap: e2.cosched.set_policy(ai_share_cap=c),)
                    ),
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(15)
                assert not errors
                pol = fake.node.config.policy
                assert pol.guard_us == guard and pol.ai_share_cap == pytest.approx(cap), round_
                assert fake.node.arbiter.policy == pol
                assert o1.get("/policy/guard_us") == guard

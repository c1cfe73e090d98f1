"""Inference on a node (airan.ric.inference) over real gRPC on loopback: real model
tokens, resume, idempotency, cancel, refusals, device-time metering, KPM figures, and the
arbiter keeping the radio first."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from airan.ai.engine import CostModel, DecoderEngine
from airan.ai.model import ModelConfig, TransformerDecoder
from airan.grid.site import CPU_MODEL, Site, build_site
from airan.infer.v1 import infer_pb2
from airan.ric.inference import (
    GenerateSpec,
    Generation,
    InferenceClient,
    InferenceError,
    InferenceService,
    spec_from_pb,
)
from airan.ric.xapp import E2Client

PROMPT = (3, 14, 15, 92, 65, 35, 89, 79, 32, 38)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = build_site({"site_id": "node-a", "tenants": ["acme", "globex"]}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(site: Site) -> Iterator[InferenceClient]:
    with InferenceClient(site.target) as c:
        yield c


def greedy_reference(prompt: tuple[int, ...], n: int, seed: int = 7) -> list[int]:
    """Greedy decoding with the model's cache-free reference forward pass."""
    model = TransformerDecoder.from_seed(CPU_MODEL, seed)
    seq = list(prompt)
    out = []
    for _ in range(n):
        logits = np.asarray(model.forward_full(seq))
        tok = int(np.argmax(logits[-1]))
        out.append(tok)
        seq.append(tok)
    return out


_ids = iter(range(1_000_000))


def rid() -> str:
    return f"req-{next(_ids)}"


def test_tokens_are_the_models_greedy_output(client: InferenceClient) -> None:
    a = client.generate_all(GenerateSpec(rid(), "acme", PROMPT, 24))
    assert a.admission.site == "node-a" and a.admission.resume_from == 0
    assert a.tokens == greedy_reference(PROMPT, 24)
    assert a.finished is not None and a.finished.reason == "length" and a.finished.tokens == 24
    assert a.finished.device_us > 0 and a.finished.ttft_ms > 0


def test_a_resumed_request_continues_as_the_uninterrupted_one(client: InferenceClient) -> None:
    whole = client.generate_all(GenerateSpec(rid(), "acme", PROMPT, 40)).tokens
    for k in (1, 17, 39):
        rest = client.generate_all(
            GenerateSpec(rid(), "globex", PROMPT, 40, resume=tuple(whole[:k]))
        )
        assert rest.admission.resume_from == k
        assert rest.tokens == whole[k:]
        assert rest.finished is not None and rest.finished.tokens == 40


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    client: InferenceClient,
) -> None:
    prompts = [
        tuple(int(x) for x in np.random.default_rng(i).integers(0, 512, 12)) for i in range(6)
    ]
    out: dict[int, list[int]] = {}

    def run(i: int) -> None:
        out[i] = client.generate_all(GenerateSpec(rid(), "acme", prompts[i], 16)).tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(6):
        assert out[i] == client.generate_all(GenerateSpec(rid(), "globex", prompts[i], 16)).tokens


def test_request_id_is_an_idempotency_key(client: InferenceClient) -> None:
    r = rid()
    first = client.generate_all(GenerateSpec(r, "acme", PROMPT, 12))
    again = client.generate_all(GenerateSpec(r, "acme", PROMPT, 12))
    assert again.admission.joined and again.tokens == first.tokens
    tail = client.generate_all(GenerateSpec(r, "acme", PROMPT, 12, resume=tuple(first.tokens[:5])))
    assert tail.tokens == first.tokens[5:]
    before = client.status()
    with pytest.raises(InferenceError) as e:
        client.generate_all(GenerateSpec(r, "acme", PROMPT, 13))
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS and e.value.field == "request_id"
    with pytest.raises(InferenceError) as e:
        client.generate_all(GenerateSpec(r, "acme", PROMPT, 12, resume=(1, 2)))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and e.value.field == "resume_tokens"
    after = client.status()
    assert [c.requests for c in after.counters] == [c.requests for c in before.counters]


def test_cancel_ends_the_stream(client: InferenceClient) -> None:
    r = rid()
    it = client.generate(GenerateSpec(r, "acme", PROMPT, 200))
    assert next(it).WhichOneof("event") == "admission"
    assert next(it).WhichOneof("event") == "tokens"
    with pytest.raises(InferenceError) as e:
        client.cancel(r, "globex")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert client.cancel(r, "acme") is True
    events = list(it)
    done = events[-1].done
    assert done.reason == infer_pb2.FINISH_REASON_CANCELLED and done.tokens < 200
    assert client.cancel(r, "acme") is False  # ended already
    with pytest.raises(InferenceError) as e:
        client.cancel("no-such-request", "acme")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_a_client_that_goes_away_cancels_its_request(site: Site, client: InferenceClient) -> None:
    r = rid()
    it = client.generate(GenerateSpec(r, "acme", PROMPT, 200))
    next(it)
    next(it)
    it.close()  # cancels the call
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and site.host.queue_depth():
        time.sleep(0.02)
    assert site.host.queue_depth() == 0
    assert client.cancel(r, "acme") is False


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (dict(request_id="bad id!"), "request_id"),
        (dict(tenant=""), "tenant"),
        (dict(prompt=()), "prompt"),
        (dict(prompt=(1, 600)), "prompt"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=250), "max_new_tokens"),  # 10 + 250 > 256 context
        (dict(resume=(1,) * 20), "resume_tokens"),
        (dict(ttft_ms=-1.0), "slo.ttft_ms"),
        (dict(ttft_ms=100.0, total_ms=50.0), "slo.total_ms"),
        (dict(cost_cap=float("nan")), "cost_cap"),
        (dict(user_area="a b"), "user_area"),
    ],
)
def test_bad_requests_are_refused_with_the_field(
    client: InferenceClient, spec: dict[str, object], field: str
) -> None:
    base: dict[str, object] = dict(
        request_id=rid(), tenant="acme", prompt=PROMPT, max_new_tokens=20
    )
    pb = infer_pb2.GenerateRequest(
        request_id=str(spec.get("request_id", base["request_id"])),
        tenant=str(spec.get("tenant", base["tenant"])),
        prompt=list(spec.get("prompt", PROMPT)),  # type: ignore[call-overload]
        max_new_tokens=int(spec.get("max_new_tokens", 20)),  # type: ignore[call-overload]
        slo=infer_pb2.Slo(
            ttft_ms=float(spec.get("ttft_ms", 0.0)),  # type: ignore[arg-type]
            total_ms=float(spec.get("total_ms", 0.0)),  # type: ignore[arg-type]
        ),
        user_area=str(spec.get("user_area", "")),
        resume_tokens=list(spec.get("resume", ())),  # type: ignore[call-overload]
    )
    if "cost_cap" in spec:
        pb.cost_cap = float(spec["cost_cap"])  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as e:
        list(client.stub.Generate(pb, timeout=10))
    err = InferenceError.from_rpc_error(e.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field == field and err.refusal == "bad-request"


def test_unknown_tenant_is_refused(client: InferenceClient) -> None:
    with pytest.raises(InferenceError) as e:
        client.generate_all(GenerateSpec(rid(), "initech", PROMPT, 4))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.refusal == "unknown-tenant" and "acme, globex" in e.value.reason


def test_metering_and_status(client: InferenceClient) -> None:
    before = {c.tenant: c for c in client.status().counters}
    a = client.generate_all(GenerateSpec(rid(), "globex", PROMPT, 30))
    after = {c.tenant: c for c in client.status().counters}
    assert after["globex"].tokens - before["globex"].tokens == 30
    assert after["globex"].requests - before["globex"].requests == 1
    dev = after["globex"].device_us - before["globex"].device_us
    assert a.finished is not None and dev == pytest.approx(a.finished.device_us, rel=1e-6)
    st = client.status()
    assert st.site == "node-a" and len(st.model_digest) == 64 and st.max_batch == 8
    assert list(st.tenants) == ["acme", "globex"] and st.vocab_size == 512


def test_kpm_reports_inference_figures_and_the_radio_keeps_its_deadlines(
    site: Site, client: InferenceClient
) -> None:
    names = [
        "airan.Infer.QueueDepth",
        "airan.Infer.AiCapacity",
        "airan.Infer.AiSlackMsPerS",
        "airan.Infer.DeviceUsPerToken",
        "airan.Infer.Healthy",
        "airan.AiBusy",
        "airan.DeadlineMetRatio",
        "airan.RadioTasks",
    ]
    misses0 = site.node.arbiter.counters().misses
    reports = []
    with E2Client(site.target) as e2, e2.kpm.subscribe(names, period_ms=50) as sub:
        threads = [
            threading.Thread(
                target=client.generate_all, args=(GenerateSpec(rid(), "acme", PROMPT, 60),)
            )
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for r in sub:
            reports.append(r.values)
            if not any(t.is_alive() for t in threads) and len(reports) >= 4:
                break
        for t in threads:
            t.join()
    busy = [r for r in reports if r["airan.Infer.DeviceUsPerToken"] > 0]
    assert busy, reports
    assert max(r["airan.Infer.QueueDepth"] for r in reports) >= 1
    assert all(r["airan.Infer.Healthy"] == 1.0 for r in reports)
    for r in busy:
        assert r["airan.AiBusy"] > 0
        cap = r["airan.Infer.AiCapacity"]
        assert r["airan.Infer.AiSlackMsPerS"] == pytest.approx(
            1000 * max(0.0, cap - r["airan.AiBusy"]), abs=1e-6
        )
    assert sum(r["airan.RadioTasks"] for r in reports) > 0
    assert site.node.arbiter.counters().misses == misses0


def test_the_sync_server_serves_the_same(site: Site) -> None:
    from airan.ric.server import build_server

    server, port = build_server(0, None, [InferenceService(site.host).registration()])
    server.start()
    try:
        with InferenceClient(f"127.0.0.1:{port}") as c:
            a = c.generate_all(GenerateSpec(rid(), "acme", PROMPT, 8))
            assert a.tokens == greedy_reference(PROMPT, 8)
            with pytest.raises(InferenceError) as e:
                c.generate_all(GenerateSpec(rid(), "nobody", PROMPT, 8))
            assert e.value.refusal == "unknown-tenant"
    finally:
        server.stop(1).wait()


def test_generation_readers_see_each_token_once_in_order() -> None:
    gen = Generation(GenerateSpec("g", "acme", (1,), 10, resume=(7, 8)))
    got: list[tuple[int, list[int]]] = []
    t = threading.Thread(target=lambda: got.extend(gen.read()))
    t.start()
    for i, tok in enumerate([9, 10, 11], start=2):
        assert gen.append(i, tok)
        assert not gen.append(i, tok)  # a duplicate is dropped
    with pytest.raises(Exception, match="gap"):
        gen.append(9, 1)
    from airan.ric.inference import Finished

    gen.finish(Finished("length", 5, 0.0, "x"))
    t.join(5)
    flat = [x for _, chunk in got for x in chunk]
    assert flat == [9, 10, 11] and got[0][0] == 2
    assert list(gen.read(0)) == [(0, [7, 8, 9, 10, 11])]


def test_spec_from_pb_turns_malformed_input_into_a_refusal() -> None:
    with pytest.raises(InferenceError) as e:
        spec_from_pb(
            infer_pb2.GenerateRequest(request_id="x", tenant="t", prompt=[-1], max_new_tokens=1)
        )
    assert e.value.field == "prompt"


def test_engine_cancel_and_token_callback() -> None:
    cfg = ModelConfig(vocab_size=64, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_context=64)
    model = TransformerDecoder.from_seed(cfg, 1)
    seen: list[tuple[int, int, int]] = []
    eng = DecoderEngine(
        model,
        CostModel(model, 1000.0, 1.0),
        now=time.perf_counter_ns,
        max_batch=2,
        on_token=lambda r, i, t: seen.append((r.request_id, i, t)),
    )
    a = eng.submit([1, 2, 3], 8)
    b = eng.submit([4, 5], 8)
    c = eng.submit([6], 8)  # waits: the batch holds two
    assert eng.cancel(c) and c.finished and c in eng.completed and c not in eng.waiting
    steps = 0
    while not (a.finished and b.finished):
        s = eng.next_slice()
        assert s is not None
        off = eng.last_offered
        assert off is not None and off[0] is s and set(off[1]) <= {a, b}
        assert s.work is not None
        s.work()
        steps += 1
        if steps == 4:
            assert eng.cancel(b)
    assert not eng.cancel(b)
    assert len(a.generated) == 8 and len(b.generated) < 8
    assert [t for r, _, t in seen if r == a.request_id] == a.generated
    assert [i for r, i, _ in seen if r == a.request_id] == list(range(8))


def test_finished_ids_are_forgotten_after_keep_finished_s() -> None:
    from collections import deque

    from airan.ric.inference import Finished, expire_ended

    gens = [Generation(GenerateSpec(f"e{i}", "acme", (1,), 2)) for i in range(3)]
    order = deque((g.spec.request_id, g) for g in gens)
    table: dict[str, object] = {g.spec.request_id: (g, None) for g in gens}
    gens[0].finish(Finished("length", 2, 0.0, "x"))
    gens[2].finish(Finished("length", 2, 0.0, "x"))
    gens[0].finished_at -= 10
    gens[2].finished_at -= 10
    expire_ended(order, table, keep_s=5.0)
    assert set(table) == {"e1", "e2"}  # e2 waits behind e1, still running
    gens[1].finish(Finished("length", 2, 0.0, "x"))
    gens[1].finished_at -= 10
    expire_ended(order, table, keep_s=5.0)
    assert not table and not order

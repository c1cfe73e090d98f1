"""The inference engine: continuous batching and chunked prefill, cut into slices."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pytest

from airan.ai.engine import DECODE, PREFILL, CostModel, DecoderEngine
from airan.ai.model import ModelConfig, TransformerDecoder
from airan.core import AiJob, FieldError, Policy, RanTask, Slice, SliceKind
from airan.sched.arbiter import Arbiter
from airan.sched.executors import DurationDist, NumpyExecutor, SimExecutor, Stream

CFG = ModelConfig(vocab_size=61, d_model=32, n_heads=4, n_layers=3, d_ff=64, max_context=48)
MODEL = TransformerDecoder.from_seed(CFG, seed=3)
US = 1000


def greedy_reference(prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(np.argmax(MODEL.forward_full(seq)[-1])))
    return seq[len(prompt) :]


def cost() -> CostModel:
    return CostModel(MODEL, fixed_ns=5_000, ns_per_flop=0.5)


def test_tokens_equal_plain_greedy_decoding_whatever_the_slicing() -> None:
    """Several requests, batched, prefilled in chunks, each step cut at random layer
    ranges: every request gets exactly the tokens of a plain greedy loop."""
    rnd = random.Random(7)
    engine = DecoderEngine(
        MODEL,
        cost(),
        now=lambda: 0,
        fits=lambda s: rnd.random() < 0.5,  # random slice sizes
        max_batch=3,
        chunk_sizes=(4, 8),
    )
    prompts = [[rnd.randrange(61) for _ in range(rnd.randrange(1, 20))] for _ in range(5)]
    reqs = [engine.submit(p, rnd.randrange(1, 12)) for p in prompts]
    kinds = set()
    while (s := engine.next_slice()) is not None:
        kinds.add(s.op)
        assert s.work is not None
        s.work()
    assert kinds == {PREFILL, DECODE}
    for p, r in zip(prompts, reqs, strict=True):
        assert r.generated == greedy_reference(p, r.max_new_tokens), r.request_id
        assert r.first_token_ns == 0 and r.done_ns == 0
    assert len(engine.completed) + len(engine.active) == 5


def test_refused_slices_are_replanned_and_tokens_stay_exact() -> None:
    """The arbiter may refuse any offered slice (its kind became too slow); the engine
    abandons the step, rolls its bookkeeping back and plans again. Whatever is refused,
    every request still gets exactly the tokens of plain greedy decoding."""
    rnd = random.Random(11)
    engine = DecoderEngine(
        MODEL,
        cost(),
        now=lambda: 0,
        fits=lambda s: rnd.random() < 0.6,
        max_batch=3,
        chunk_sizes=(4, 8),
    )
    prompts = [[rnd.randrange(61) for _ in range(rnd.randrange(1, 15))] for _ in range(4)]
    reqs = [engine.submit(p, rnd.randrange(1, 9)) for p in prompts]
    refused = 0
    while (s := engine.next_slice()) is not None:
        if rnd.random() < 0.3:
            engine.refused(s)  # never run
            refused += 1
            continue
        s.work()  # type: ignore[misc]
    assert refused > 10
    for p, r in zip(prompts, reqs, strict=True):
        assert r.generated == greedy_reference(p, r.max_new_tokens)


def test_requests_join_the_running_batch_between_steps() -> None:
    engine = DecoderEngine(MODEL, cost(), now=lambda: 0, max_batch=4)
    first = engine.submit([1, 2, 3], 10)
    batches = []
    late = None
    for i in itertools.count():
        s = engine.next_slice()
        if s is None:
            break
        assert s.work is not None
        s.work()
        if s.op == DECODE and dict(s.shape)["head"]:
            batches.append(dict(s.shape)["rows"])
        if i == 4:
            late = engine.submit([4, 5], 6)
    assert late is not None and late.finished and first.finished
    assert 1 in batches and 2 in batches  # the batch grew when the late request joined
    assert late.generated == greedy_reference([4, 5], 6)


@pytest.mark.parametrize(
    ("prompt", "n", "field"),
    [
        (list(range(40)), 9, "prompt"),  # 40 + 9 > 48: longer than the context
        ([], 3, "prompt"),
        ([61], 3, "prompt"),  # not in the vocabulary
        ([1, 2], 0, "max_new_tokens"),
        ([1, 2], 2.5, "max_new_tokens"),
    ],
)
def test_bad_requests_are_refused_and_the_engine_goes_on(
    prompt: list[int], n: object, field: str
) -> None:
    engine = DecoderEngine(MODEL, cost(), now=lambda: 0)
    with pytest.raises(FieldError) as e:
        engine.submit(prompt, n)  # type: ignore[arg-type]
    assert e.value.field == field
    ok = engine.submit([3, 4, 5], 4)
    while (s := engine.next_slice()) is not None:
        s.work()  # type: ignore[misc]
    assert ok.generated == greedy_reference([3, 4, 5], 4)


def _sim_arbiter(policy: Policy) -> tuple[Arbiter, SimExecutor, DecoderEngine]:
    model_cost = cost()
    ran = Slice.make(SliceKind.RAN, "ran", 100 * US)
    ex = SimExecutor(
        {ran.key: DurationDist(100 * US, 100 * US, 0.0)}, seed=1, model=model_cost.dist
    )
    arb = Arbiter(ex, policy)
    rng = np.random.default_rng(0)
    load = ((rng.integers(0, 61, int(rng.integers(1, 30))).tolist(), 16) for _ in itertools.count())
    engine = DecoderEngine(
        MODEL, model_cost, now=ex.clock.now_ns, fits=arb.fits_ai_slice, max_batch=8, load=load
    )
    arb.add_job(AiJob(engine, tenant="llm"))
    return arb, ex, engine


def test_no_issued_slice_is_predicted_over_the_largest_ai_slice() -> None:
    """Slices are sized through the estimator: during and after warm-up, none is
    predicted (plus guard) over max_ai_slice; more layers go in a slice when they fit."""
    seen = {}
    for max_us in (100, 2_000):
        policy = Policy(max_ai_slice_us=max_us, guard_us=5)
        arb, ex, _ = _sim_arbiter(policy)
        arb.estimator.min_samples = 20
        arb.estimator.half_life = 1000
        budgets: list[int] = []
        layers: list[int] = []
        submit = ex.submit

        def spy(
            s: Slice,
            stream: Stream,
            tag: object,
            submit: Any = submit,
            budgets: list[int] = budgets,
            layers: list[int] = layers,
        ) -> None:
            if s.kind is SliceKind.AI:
                budgets.append(tag[2])  # type: ignore[index]
                layers.append(dict(s.shape)["layers"] if s.op == DECODE else 0)
            submit(s, stream, tag)

        ex.submit = spy  # type: ignore[method-assign]
        arb.run([], 200_000 * US)
        r = arb.report(seed=None, slots=0)
        assert r.ai.slices > 500 and r.ai.tokens > 1000
        assert max(budgets) <= max_us * US
        seen[max_us] = layers
    decode_loose = [n for n in seen[2_000] if n]
    decode_tight = [n for n in seen[100] if n]
    assert set(decode_loose) == {3}  # a whole decode step per slice when it fits
    assert decode_tight.count(1) > len(decode_tight) / 2  # mostly one layer under a tight cap


def test_ai_stops_within_one_slice_when_radio_load_rises() -> None:
    policy = Policy(max_ai_slice_us=150, guard_us=10, lookahead_us=0)
    arb, _, _ = _sim_arbiter(policy)
    ran = Slice.make(SliceKind.RAN, "ran", 100 * US)
    # After 100 ms of AI alone, the radio load steps up to 80 %.
    start = 100_000 * US
    tasks = [RanTask(start + i * 125 * US, start + (i + 8) * 125 * US, (ran,)) for i in range(800)]
    arb.run(tasks, start + 800 * 125 * US)
    r = arb.report(seed=None, slots=0)
    assert r.ran.misses == 0 and r.ai.slices > 0
    # Each radio task waits for at most the one AI slice in flight (<= 150 µs) plus
    # radio work queued ahead of it.
    waits = [t.completed_ns - t.release_ns - 100 * US for t in tasks]
    assert 0 <= waits[0] <= 150 * US  # the step: AI gives way within one slice
    # Throughout: a task waits at most one AI slice and one earlier task's radio work.
    assert max(waits) <= (150 + 100) * US


def test_the_engine_runs_under_the_arbiter_on_the_cpu() -> None:
    ex = NumpyExecutor()
    arb = Arbiter(ex, Policy(max_ai_slice_us=5_000, guard_us=10))
    engine = DecoderEngine(
        MODEL,
        CostModel.calibrate(MODEL, lambda: None, 4),
        now=ex.clock.now_ns,
        fits=arb.fits_ai_slice,
        max_batch=4,
    )
    reqs = [engine.submit([1, 2, 3, 4], 5), engine.submit([9, 8], 7)]
    arb.add_job(AiJob(engine, tenant="llm"))
    arb.run([], 2_000_000_000)
    assert all(r.finished for r in reqs)
    assert reqs[0].generated == greedy_reference([1, 2, 3, 4], 5)
    assert all(r.first_token_ns > r.submitted_ns for r in reqs)
    assert arb.report(seed=None, slots=0).ai.tokens == 12


def test_fifo_queues_slices_ahead_and_tokens_stay_exact() -> None:
    """The fifo baseline queues several AI slices; a finished request's slot is reused
    only in execution order, so tokens are still exact (regression: it crashed)."""
    ex = NumpyExecutor()
    arb = Arbiter(ex, Policy(name="fifo", fifo_depth=4, max_ai_slice_us=5_000))
    engine = DecoderEngine(MODEL, cost(), now=ex.clock.now_ns, fits=arb.fits_ai_slice, max_batch=2)
    prompts = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]]
    reqs = [engine.submit(p, 4) for p in prompts]
    arb.add_job(AiJob(engine, tenant="llm"))
    arb.run([], 1_000_000_000)
    for p, r in zip(prompts, reqs, strict=True):
        assert r.generated == greedy_reference(p, 4)


def test_an_idle_engine_serves_requests_submitted_later() -> None:
    ex = SimExecutor({}, model=cost().dist)
    arb = Arbiter(ex, Policy())
    engine = DecoderEngine(MODEL, cost(), now=ex.clock.now_ns, fits=arb.fits_ai_slice)
    job = AiJob(engine, tenant="llm")
    arb.add_job(job)
    first = engine.submit([1, 2], 3)
    arb.run([], 50_000 * US)
    assert first.finished and not job.done  # idle, not finished
    second = engine.submit([3, 4], 3)
    arb.run([], 50_000 * US)
    assert second.finished
    engine.close()
    with pytest.raises(FieldError, match="engine: is closed"):
        engine.submit([5], 1)


def test_a_bad_load_item_is_rejected_and_the_others_are_served() -> None:
    load = iter([([1, 2], 3), (list(range(60)), 3), ([3], 2)])  # the middle one is too long
    engine = DecoderEngine(MODEL, cost(), now=lambda: 0, load=load)
    while (s := engine.next_slice()) is not None:
        s.work()  # type: ignore[misc]
    assert len(engine.completed) + len(engine.active) == 2
    assert len(engine.rejected) == 1 and "context" in engine.rejected[0]


def test_a_source_whose_refused_raises_is_isolated() -> None:
    class Bad:
        def next_slice(self) -> Slice | None:
            return Slice.make(SliceKind.AI, "big", 10_000 * US)

        def refused(self, s: Slice) -> None:
            raise ValueError("boom")

    ex = SimExecutor({}, model=lambda key: DurationDist(10 * US, 10 * US))
    arb = Arbiter(ex, Policy())
    arb.add_job(AiJob(Bad(), tenant="bad"))
    arb.run([], 10_000 * US)
    r = arb.report(seed=None, slots=0)
    assert len(r.ai.failed_jobs) == 1 and "boom" in r.ai.failed_jobs[0]

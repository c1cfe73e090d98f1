"""The transformer decoder: the cache path against a full recompute, layer slicing,
batching, weight files, bad input and sampling. Tiny models, so the file runs in seconds."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from airan.ai import KVCache, ModelConfig, TransformerDecoder
from airan.backend import probe_cupy
from airan.core.errors import FieldError

TINY = ModelConfig(vocab_size=61, d_model=32, n_heads=4, n_layers=3, d_ff=64, max_context=48)
# More layers, for the cuts of a step into layer ranges.
DEEP = TINY.model_copy(update={"n_layers": 6})

RTOL = ATOL = 1e-4  # float32, cache path against full recompute
SAME = 1e-6  # rtol and atol: the same computation cut differently

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def model() -> TransformerDecoder:
    # std 0.3 instead of GPT-2's 0.02: attention far from uniform, so that a wrong mask or
    # position would show in the logits.
    return TransformerDecoder.from_seed(TINY, seed=7, std=0.3)


@pytest.fixture(scope="module")
def deep() -> TransformerDecoder:
    return TransformerDecoder.from_seed(DEEP, seed=3, std=0.3)


def _tokens(n: int, seed: int = 0, vocab: int = TINY.vocab_size) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).integers(0, vocab, size=n)


def _one_call(
    m: TransformerDecoder, cache: KVCache, slots: list[int], positions: list[int], tokens: Any
) -> Any:
    return m.run_layers(m.embed(tokens), 0, m.cfg.n_layers, cache, slots, positions)


def _sliced(
    m: TransformerDecoder,
    cache: KVCache,
    slots: list[int],
    positions: list[int],
    tokens: Any,
    cuts: list[int],
) -> Any:
    h = m.embed(tokens)
    bounds = [0, *cuts, m.cfg.n_layers]
    for l0, l1 in itertools.pairwise(bounds):
        h = m.run_layers(h, l0, l1, cache, slots, positions)
    return h


def _cuts(n_layers: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, n_layers - 1), unique=True, max_size=n_layers - 1).map(sorted)


# ------------------------------------------------------------------------- the cache path


@pytest.mark.parametrize("std", [0.02, 0.3])
def test_kv_cache_decode_matches_full_recompute(std: float) -> None:
    m = TransformerDecoder.from_seed(TINY, seed=11, std=std)
    toks = _tokens(TINY.max_context, seed=1)
    full = m.forward_full(toks)
    assert full.shape == (TINY.max_context, TINY.vocab_size) and full.dtype == np.float32
    cache = KVCache(TINY, slots=2)
    prompt = 9
    h = m.run_layers(m.embed(toks[:prompt]), 0, TINY.n_layers, cache, [1] * prompt, range(prompt))
    got = [m.logits(h)]
    for pos in range(prompt, len(toks)):
        got.append(m.decode(cache, [1], [toks[pos]]))
    np.testing.assert_allclose(np.concatenate(got), full, rtol=RTOL, atol=ATOL)
    assert cache.lengths.tolist() == [0, TINY.max_context]


def test_prefill_returns_the_last_position_logits(model: TransformerDecoder) -> None:
    toks = _tokens(20, seed=2)
    cache = KVCache(TINY, slots=1)
    last = model.prefill(cache, 0, toks)
    assert last.shape == (TINY.vocab_size,)
    np.testing.assert_allclose(last, model.forward_full(toks)[-1], rtol=RTOL, atol=ATOL)
    # prefill appends: a second call continues the sequence
    more = _tokens(5, seed=3)
    last2 = model.prefill(cache, 0, more)
    full = model.forward_full(np.concatenate([toks, more]))
    np.testing.assert_allclose(last2, full[-1], rtol=RTOL, atol=ATOL)
    cache.reset(0)
    assert cache.lengths[0] == 0
    again = model.prefill(cache, 0, more)
    np.testing.assert_allclose(again, model.forward_full(more)[-1], rtol=RTOL, atol=ATOL)


def test_float16_model_tracks_its_full_recompute() -> None:
    cfg = TINY.model_copy(update={"dtype": "float16"})
    m = TransformerDecoder.from_seed(cfg, seed=5, std=0.3)
    assert m.weights()["embed"].dtype == np.float16
    toks = _tokens(16, seed=4)
    cache = KVCache(cfg, slots=1)
    assert cache.k.dtype == np.float16
    got = [m.prefill(cache, 0, toks[:6])]
    got += [m.decode(cache, [0], [t])[0] for t in toks[6:]]
    full = m.forward_full(toks)[5:]
    assert np.stack(got).dtype == np.float32
    np.testing.assert_allclose(np.stack(got), full, rtol=0, atol=0.05)


@PROPERTY
@given(data=st.data())
def test_decode_step_cut_into_layer_ranges_equals_one_call(
    deep: TransformerDecoder, data: st.DataObject
) -> None:
    n_slots = data.draw(st.integers(1, 4), label="slots")
    held = data.draw(st.lists(st.integers(1, 12), min_size=n_slots, max_size=n_slots))
    cuts = data.draw(_cuts(DEEP.n_layers), label="cuts")
    seed = data.draw(st.integers(0, 2**16))
    a, b = KVCache(DEEP, n_slots), KVCache(DEEP, n_slots)
    for s, n in enumerate(held):
        for c in (a, b):
            deep.prefill(c, s, _tokens(n, seed + s))
    slots = list(range(n_slots))
    positions = list(held)
    toks = _tokens(n_slots, seed=seed + 99)
    h_one = _one_call(deep, a, slots, positions, toks)
    h_cut = _sliced(deep, b, slots, positions, toks, cuts)
    np.testing.assert_allclose(h_cut, h_one, rtol=SAME, atol=SAME)
    np.testing.assert_allclose(deep.logits(h_cut), deep.logits(h_one), rtol=SAME, atol=SAME)
    np.testing.assert_allclose(b.k, a.k, rtol=SAME, atol=SAME)
    np.testing.assert_allclose(b.v, a.v, rtol=SAME, atol=SAME)
    assert b.lengths.tolist() == a.lengths.tolist() == [n + 1 for n in held]


@PROPERTY
@given(data=st.data())
def test_prefill_chunk_cut_into_layer_ranges_equals_one_call(
    deep: TransformerDecoder, data: st.DataObject
) -> None:
    held = data.draw(st.integers(0, 10), label="held")
    chunk = data.draw(st.integers(1, 12), label="chunk")
    cuts = data.draw(_cuts(DEEP.n_layers), label="cuts")
    # A second slot decoding in the same call, or not: the mixed batch takes the gather path.
    mixed = data.draw(st.booleans(), label="mixed")
    seed = data.draw(st.integers(0, 2**16))
    a, b = KVCache(DEEP, 2), KVCache(DEEP, 2)
    for c in (a, b):
        if held:
            deep.prefill(c, 0, _tokens(held, seed))
        deep.prefill(c, 1, _tokens(4, seed + 1))
    slots = [0] * chunk + ([1] if mixed else [])
    positions = list(range(held, held + chunk)) + ([4] if mixed else [])
    toks = _tokens(len(slots), seed + 2)
    h_one = _one_call(deep, a, slots, positions, toks)
    h_cut = _sliced(deep, b, slots, positions, toks, cuts)
    np.testing.assert_allclose(h_cut, h_one, rtol=SAME, atol=SAME)
    np.testing.assert_allclose(deep.logits(h_cut), deep.logits(h_one), rtol=SAME, atol=SAME)
    np.testing.assert_allclose(b.k, a.k, rtol=SAME, atol=SAME)


@PROPERTY
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6).filter(lambda s: sum(s) <= 48),
    seed=st.integers(0, 2**16),
)
def test_prompt_prefilled_in_chunks_equals_one_call(
    model: TransformerDecoder, sizes: list[int], seed: int
) -> None:
    n = sum(sizes)
    toks = _tokens(n, seed)
    one = KVCache(TINY, 1)
    h_one = _one_call(model, one, [0] * n, list(range(n)), toks)
    chunked = KVCache(TINY, 1)
    parts, start = [], 0
    for size in sizes:
        pos = list(range(start, start + size))
        parts.append(_one_call(model, chunked, [0] * size, pos, toks[start : start + size]))
        start += size
    h_chunks = np.concatenate(parts)
    np.testing.assert_allclose(h_chunks, h_one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.logits(h_chunks), model.logits(h_one), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked.k[:, :, :n], one.k[:, :, :n], rtol=1e-5, atol=1e-5)
    assert chunked.lengths.tolist() == one.lengths.tolist() == [n]


def test_batched_decode_equals_each_sequence_alone(model: TransformerDecoder) -> None:
    lengths = [3, 17, 1, 30]
    prompts = [_tokens(n, seed=10 + i) for i, n in enumerate(lengths)]
    steps = 6
    nexts = _tokens(steps * len(lengths), seed=50).reshape(steps, len(lengths))
    batch = KVCache(TINY, slots=len(lengths))
    for s, p in enumerate(prompts):
        model.prefill(batch, s, p)
    batched = [model.decode(batch, range(len(lengths)), nexts[i]) for i in range(steps)]
    # The slots in another order give the same rows, reordered.
    for s, p in enumerate(prompts):
        alone = KVCache(TINY, slots=1)
        model.prefill(alone, 0, p)
        for i in range(steps):
            row = model.decode(alone, [0], [nexts[i, s]])[0]
            np.testing.assert_allclose(batched[i][s], row, rtol=1e-5, atol=1e-5)
    assert batch.lengths.tolist() == [n + steps for n in lengths]


def test_rows_of_a_batch_may_come_in_any_order(model: TransformerDecoder) -> None:
    a, b = KVCache(TINY, 3), KVCache(TINY, 3)
    for c in (a, b):
        for s, n in enumerate([5, 2, 8]):
            model.prefill(c, s, _tokens(n, s))
    toks = [4, 9, 33]
    ha = _one_call(model, a, [0, 1, 2], [5, 2, 8], toks)
    hb = _one_call(model, b, [2, 0, 1], [8, 5, 2], [toks[2], toks[0], toks[1]])
    np.testing.assert_allclose(hb, ha[[2, 0, 1]], rtol=1e-5, atol=1e-5)


def test_a_position_may_be_run_again(model: TransformerDecoder) -> None:
    cache = KVCache(TINY, 1)
    toks = _tokens(6)
    model.prefill(cache, 0, toks)
    h1 = _one_call(model, cache, [0], [5], toks[5:])
    full = model.forward_full(toks)
    np.testing.assert_allclose(model.logits(h1)[0], full[-1], rtol=RTOL, atol=ATOL)
    assert cache.lengths[0] == 6


def test_default_config_runs() -> None:
    cfg = ModelConfig()
    assert cfg.head_dim == 32
    m = TransformerDecoder.from_seed(cfg)
    cache = KVCache(cfg, slots=2)
    assert cache.k.shape == (4, 2, 256, 4, 32) and cache.nbytes == 2 * 4 * 2 * 256 * 128 * 4
    m.prefill(cache, 0, _tokens(20, vocab=cfg.vocab_size))
    out = m.decode(cache, [0], [3])
    full = m.forward_full([*_tokens(20, vocab=512), 3])
    np.testing.assert_allclose(out[0], full[-1], rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------- weights, files


def test_from_seed_is_deterministic() -> None:
    a = TransformerDecoder.from_seed(TINY, seed=4).weights()
    b = TransformerDecoder.from_seed(TINY, seed=4).weights()
    c = TransformerDecoder.from_seed(TINY, seed=5).weights()
    assert list(a) == list(TINY.weight_shapes())
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == np.float32
    assert not np.array_equal(a["embed"], c["embed"])
    np.testing.assert_array_equal(a["layers.0.attn_norm"], np.ones(TINY.d_model))
    # residual-branch output projections are scaled down by sqrt(2 n_layers)
    ratio = a["layers.1.wo"].std() / a["layers.1.wq"].std()
    assert ratio == pytest.approx(1 / math.sqrt(2 * TINY.n_layers), rel=0.15)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_and_load_round_trip(model: TransformerDecoder, tmp_path: Path, suffix: str) -> None:
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path / f"m{suffix}"
    model.save(path)
    loaded = TransformerDecoder.from_file(path)
    assert loaded.cfg == model.cfg
    for name, arr in model.weights().items():
        np.testing.assert_array_equal(loaded.weights()[name], arr)
    toks = _tokens(12)
    np.testing.assert_array_equal(loaded.forward_full(toks), model.forward_full(toks))
    # an explicit cfg may change the context (not the architecture)
    longer = TINY.model_copy(update={"max_context": 64})
    assert TransformerDecoder.from_file(str(path), cfg=longer).cfg.max_context == 64
    with pytest.raises(FieldError) as e:
        TransformerDecoder.from_file(path, cfg=TINY.model_copy(update={"n_heads": 8}))
    assert e.value.field == "cfg.n_heads" and "differs" in e.value.reason


_savez: Any = np.savez  # its stubs mistake ** entries for allow_pickle


def _host_weights(m: TransformerDecoder) -> dict[str, np.ndarray[Any, Any]]:
    return {k: np.array(v) for k, v in m.weights().items()}


def _write_npz(path: Path, weights: dict[str, Any], cfg: ModelConfig | None = TINY) -> Path:
    extra = {}
    if cfg is not None:
        extra["__config__"] = np.frombuffer(cfg.model_dump_json().encode(), dtype=np.uint8)
    _savez(path, **weights, **extra)
    return path


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda w: w.pop("layers.1.wk"), "weights[layers.1.wk]", "missing"),
        (
            lambda w: w.update({"layers.0.w_up": np.zeros((32, 60), np.float32)}),
            "weights[layers.0.w_up]",
            "expected shape (32, 64), got (32, 60)",
        ),
        (
            lambda w: w.update({"lm_head": w["lm_head"].astype(np.float64)}),
            "weights[lm_head]",
            "expected dtype float32",
        ),
        (lambda w: w["layers.2.wv"].__setitem__((0, 3), np.nan), "weights[layers.2.wv]", "NaN"),
        (
            lambda w: w.update({"layers.3.wq": np.zeros((32, 32), np.float32)}),
            "weights[layers.3.wq]",
            "unknown tensor",
        ),
    ],
    ids=["missing", "shape", "dtype", "nan", "unknown"],
)
def test_bad_weights_file_names_the_tensor(
    model: TransformerDecoder, tmp_path: Path, change: Any, field: str, words: str
) -> None:
    w = _host_weights(model)
    change(w)
    path = _write_npz(tmp_path / "bad.npz", w)
    with pytest.raises(FieldError) as e:
        TransformerDecoder.from_file(path)
    assert e.value.field == field
    assert words in e.value.reason
    with pytest.raises(FieldError) as e2:  # the same from a mapping
        TransformerDecoder(TINY, w)
    assert e2.value.field == field


def test_bad_weight_files(model: TransformerDecoder, tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="no such file") as e:
        TransformerDecoder.from_file(tmp_path / "absent.npz")
    assert e.value.field == "path"
    with pytest.raises(FieldError, match=r"expected \.npz or \.safetensors"):
        TransformerDecoder.from_file(tmp_path / "m.bin")
    with pytest.raises(FieldError, match=r"expected \.npz or \.safetensors"):
        model.save(tmp_path / "m.pt")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(FieldError, match=r"not a readable \.npz"):
        TransformerDecoder.from_file(tmp_path / "junk.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{nope}")
    if _has_safetensors():
        with pytest.raises(FieldError, match=r"not a readable \.safetensors"):
            TransformerDecoder.from_file(tmp_path / "junk.safetensors")
    # no embedded config: cfg is needed, and then suffices
    bare = _write_npz(tmp_path / "bare.npz", _host_weights(model), cfg=None)
    with pytest.raises(FieldError, match="no embedded config") as e:
        TransformerDecoder.from_file(bare)
    assert e.value.field == "cfg"
    assert TransformerDecoder.from_file(bare, cfg=TINY).cfg == TINY
    # a broken embedded config
    w = _host_weights(model)
    bad_cfg = json.dumps({**TINY.model_dump(), "n_heads": 5}).encode()
    _savez(tmp_path / "badcfg.npz", **w, __config__=np.frombuffer(bad_cfg, np.uint8))
    with pytest.raises(FieldError, match="divisible") as e:
        TransformerDecoder.from_file(tmp_path / "badcfg.npz")
    assert e.value.field.startswith("badcfg.npz[config]")


def _has_safetensors() -> bool:
    try:
        import safetensors  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def test_safetensors_file_with_a_bad_tensor(model: TransformerDecoder, tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    w = _host_weights(model)
    w["final_norm"] = w["final_norm"].astype(np.float16)
    path = tmp_path / "bad.safetensors"
    st_numpy.save_file(w, str(path), metadata={"airan_config": TINY.model_dump_json()})
    with pytest.raises(FieldError, match="expected dtype float32") as e:
        TransformerDecoder.from_file(path)
    assert e.value.field == "weights[final_norm]"


# ------------------------------------------------------------------------- bad input


def test_config_checks_heads_divide_the_model() -> None:
    with pytest.raises(ValidationError, match=r"d_model \(30\) must be divisible by n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(FieldError) as e:
        ModelConfig.parse({"d_model": 30, "n_heads": 4})
    assert e.value.field == "cfg" and "d_model" in e.value.reason
    with pytest.raises(FieldError, match="even"):
        ModelConfig.parse({"d_model": 12, "n_heads": 4})  # head_dim 3
    with pytest.raises(FieldError) as e:
        ModelConfig.parse({"vocab_size": 1})
    assert e.value.field == "cfg.vocab_size"
    with pytest.raises(FieldError) as e:
        ModelConfig.parse({"heads": 4})
    assert e.value.field == "cfg.heads"


def test_prompt_longer_than_the_context(model: TransformerDecoder) -> None:
    cache = KVCache(TINY, 1)
    too_long = _tokens(TINY.max_context + 1)
    with pytest.raises(FieldError, match="prompt longer than the context") as e:
        model.prefill(cache, 0, too_long)
    assert e.value.field == "tokens" and "48 tokens" in e.value.reason
    with pytest.raises(FieldError, match="prompt longer than the context"):
        model.forward_full(too_long)
    with pytest.raises(FieldError, match="exceeds the context of 48 tokens") as e:
        model.run_layers(model.embed([1]), 0, 3, cache, [0], [48])
    assert e.value.field == "positions"
    # a full cache refuses one more token
    model.prefill(cache, 0, too_long[:-1])
    with pytest.raises(FieldError, match="exceeds the context"):
        model.decode(cache, [0], [1])


@pytest.mark.parametrize(("l0", "l1"), [(0, 0), (2, 1), (-1, 2), (0, 4), (3, 3), (True, 2)])
def test_bad_layer_ranges(model: TransformerDecoder, l0: int, l1: int) -> None:
    cache = KVCache(TINY, 1)
    with pytest.raises(FieldError, match=r"expected 0 <= l0 < l1 <= 3") as e:
        model.run_layers(model.embed([1]), l0, l1, cache, [0], [0])
    assert e.value.field == "l0/l1"


def test_later_layers_need_the_earlier_ones(model: TransformerDecoder) -> None:
    cache = KVCache(TINY, 1)
    with pytest.raises(FieldError, match=r"run layers \[0, 1\) first") as e:
        model.run_layers(model.embed([1]), 1, 3, cache, [0], [0])
    assert e.value.field == "l0/l1"


def test_bad_rows(model: TransformerDecoder) -> None:
    cache = KVCache(TINY, 2)
    model.prefill(cache, 0, _tokens(4))
    h1, h2 = model.embed([1]), model.embed([1, 2])

    def fails(h: Any, slots: Any, positions: Any, field: str, words: str) -> None:
        with pytest.raises(FieldError) as e:
            model.run_layers(h, 0, 3, cache, slots, positions)
        assert e.value.field == field, e.value
        assert words in e.value.reason, e.value

    fails(h1, [2], [0], "slots", "slot 2 is out of range for a cache of 2 slots")
    fails(h1, [-1], [0], "slots", "out of range")
    fails(h1, [0], [-1], "positions", ">= 0")
    fails(h1, [0], [6], "positions", "gap")  # holds 0..3, next is 4
    fails(h2, [1, 1], [0, 2], "positions", "gap")
    fails(h2, [0, 0], [4, 4], "positions", "more than once")
    fails(h1, [0, 1], [4], "positions", "expected 2 positions")
    fails(h1, [0, 1], [4, 0], "h", "expected shape (2, 32)")
    fails(h1, [0.0], [4], "slots", "expected integers")
    fails(h1, [], [], "slots", "at least one row")
    assert cache.lengths.tolist() == [4, 0]  # nothing was written by a refused call
    with pytest.raises(FieldError, match="outside the vocabulary") as e:
        model.embed([3, 61])
    assert e.value.field == "tokens"
    with pytest.raises(FieldError, match="n_layers"):
        model.run_layers(h1, 0, 1, KVCache(DEEP, 1), [0], [0])
    with pytest.raises(FieldError, match="slot 5 is out of range"):
        cache.reset(5)
    with pytest.raises(FieldError, match="positive integer"):
        KVCache(TINY, 0)
    with pytest.raises(ValueError, match="read-only"):
        cache.lengths[0] = 9


def test_bad_rows_in_a_decode_batch(model: TransformerDecoder) -> None:
    # Rows of several slots take a cheaper way through the checks: the same refusals.
    cache = KVCache(TINY, 3)
    model.prefill(cache, 0, _tokens(4))
    model.prefill(cache, 2, _tokens(TINY.max_context))  # full
    h2, h3 = model.embed([1, 2]), model.embed([1, 2, 3])

    def fails(h: Any, slots: Any, positions: Any, field: str, words: str, l0: int = 0) -> None:
        with pytest.raises(FieldError) as e:
            model.run_layers(h, l0, 3, cache, slots, positions)
        assert e.value.field == field, e.value
        assert words in e.value.reason, e.value

    fails(h3, [0, 0, 1], [4, 4, 0], "positions", "position 4 of slot 0 appears more than once")
    fails(h3, [0, 0, 1], [4, 6, 0], "positions", "slot 0 leaves a gap")
    fails(h2, [0, -1], [4, 0], "slots", "slot -1 is out of range")
    fails(h2, [0, 3], [4, 0], "slots", "slot 3 is out of range")
    fails(h2, [0, 1], [4, -1], "positions", ">= 0")
    fails(h2, [0, 2], [4, 48], "positions", "exceeds the context of 48 tokens")
    fails(h2, [2, 2], [47, 48], "positions", "exceeds the context of 48 tokens")
    fails(h2, [0, 1], [5, 0], "positions", "slot 0 leaves a gap")
    fails(h2, [0, 1], [4, 1], "positions", "slot 1 leaves a gap")
    fails(h2, [0, 1], [4, 0], "l0/l1", "layer 0 has not been run at position 4 of slot 0", 1)
    assert cache.lengths.tolist() == [4, 0, 48]  # nothing was written by a refused call
    model.run_layers(h3, 0, 3, cache, [0, 0, 1], [3, 4, 0])  # valid: a rerun, two new
    assert cache.lengths.tolist() == [5, 1, 48]


@settings(PROPERTY, max_examples=400)
@given(data=st.data())
def test_the_cheap_row_checks_accept_only_what_the_full_checks_accept(
    model: TransformerDecoder, data: st.DataObject
) -> None:
    # run_layers recognises a prefill chunk or a decode batch cheaply and skips the full
    # checks for them: any call it lets through that way must pass the full checks too.
    n_slots = data.draw(st.integers(1, 3), label="slots")
    cache = KVCache(TINY, n_slots)
    held = data.draw(st.lists(st.integers(0, 5), min_size=n_slots, max_size=n_slots))
    l0 = data.draw(st.integers(0, TINY.n_layers - 1), label="l0")
    l1 = data.draw(st.integers(l0 + 1, TINY.n_layers), label="l1")
    ahead = data.draw(st.integers(0, 4), label="ahead")  # run through layers < l0 already
    for layer in range(TINY.n_layers):  # mostly as a step leaves it, sometimes not
        more = ahead if layer < l0 else 0
        cache.filled[layer] = [n + more - data.draw(st.sampled_from([0, 0, 0, 1])) for n in held]
    if data.draw(st.sampled_from([False, False, False, True]), label="corrupt"):
        cache.filled[data.draw(st.integers(0, TINY.n_layers - 1)), -1] = -1
    rows = data.draw(st.integers(1, 4), label="rows")
    near = st.sampled_from([0, 0, 0, -1, 1])
    if data.draw(st.booleans(), label="one slot, consecutive"):
        s0 = data.draw(st.integers(-1, n_slots))
        p0 = held[min(max(s0, 0), n_slots - 1)] + data.draw(near)
        slots, positions = [s0] * rows, list(range(p0, p0 + rows))
    else:  # distinct slots as often as not, else any
        any_slot = st.sampled_from([-1, 0, 0, 0, 1, 1, n_slots])  # repeats, out of range
        some = st.lists(any_slot, min_size=rows, max_size=rows)
        slots = data.draw(st.one_of(st.permutations(range(n_slots)).map(lambda p: p[:rows]), some))
        positions = [held[min(max(x, 0), n_slots - 1)] + data.draw(near) for x in slots]
    h = np.zeros((len(slots), TINY.d_model), np.float32)
    try:
        planned = model._plan_rows(h, l0, l1, cache, slots, positions)
    except FieldError:
        return
    if planned[2] != 0:  # taken the cheap way
        model._check_rows(h, l0, l1, cache, slots, positions)  # must not raise


# ------------------------------------------------------------------------- sampling, cost


def test_greedy_sampling_picks_the_argmax() -> None:
    logits = np.array([[0.1, 2.0, -1.0], [5.0, 4.0, 5.0], [-3.0, -2.0, -1.0]], np.float32)
    assert TransformerDecoder.sample(logits).tolist() == [1, 0, 2]
    assert TransformerDecoder.sample(logits[0]).item() == 1
    assert TransformerDecoder.sample(logits, 0.0).dtype == np.int64


def test_seeded_sampling_is_reproducible_and_follows_the_softmax() -> None:
    logits = np.tile(np.array([0.0, math.log(3.0), -np.inf, 0.0], np.float32), (4000, 1))
    a = TransformerDecoder.sample(logits, 1.0, np.random.default_rng(1))
    b = TransformerDecoder.sample(logits, 1.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    freq = np.bincount(a, minlength=4) / a.size
    np.testing.assert_allclose(freq, [0.2, 0.6, 0.0, 0.2], atol=0.03)
    # a low temperature is nearly greedy, a high one nearly uniform
    cold = TransformerDecoder.sample(logits[:200], 0.01, np.random.default_rng(2))
    assert set(cold.tolist()) == {1}
    with pytest.raises(FieldError) as e:
        TransformerDecoder.sample(logits, -1.0)
    assert e.value.field == "temperature"


def test_flops_cost_model(model: TransformerDecoder) -> None:
    d, f = TINY.d_model, TINY.d_ff
    assert model.flops(1, 10, 1) == 8 * d * d + 4 * d * f + 4 * 10 * d
    assert model.flops(4, 10, 3) == 12 * model.flops(1, 10, 1)
    assert model.flops(1, 20, 1) > model.flops(1, 10, 1)
    with pytest.raises(FieldError) as e:
        model.flops(-1, 1, 1)
    assert e.value.field == "rows"


# ------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(probe_cupy() is None, reason="no usable CUDA device through CuPy")
def test_cupy_model_matches_numpy() -> None:  # pragma: no cover - needs a GPU
    import cupy

    host = TransformerDecoder.from_seed(TINY, seed=7, std=0.3)
    dev = TransformerDecoder.from_seed(TINY, seed=7, std=0.3, xp=cupy)
    toks = _tokens(20)
    hc, dc = KVCache(TINY, 2), KVCache(TINY, 2, xp=cupy)
    assert isinstance(dc.k, cupy.ndarray)
    np.testing.assert_allclose(
        cupy.asnumpy(dev.prefill(dc, 1, toks)), host.prefill(hc, 1, toks), rtol=1e-3, atol=1e-3
    )
    h = _sliced(dev, dc, [0, 1], [0, 20], [3, 4], [1])
    np.testing.assert_allclose(
        cupy.asnumpy(dev.logits(h)),
        host.logits(_one_call(host, hc, [0, 1], [0, 20], [3, 4])),
        rtol=1e-3,
        atol=1e-3,
    )
    np.testing.assert_allclose(
        cupy.asnumpy(dev.forward_full(toks)), host.forward_full(toks), rtol=1e-3, atol=1e-3
    )

"""A GPT-style transformer decoder, written once for NumPy and CuPy, run a layer range at a time.

This is the AI tenant the arbiter cuts into slices. A forward step over a batch of
*rows* (one row per token: a decode step of several sequences, or a chunk of a prompt)
is run as one or more calls of :meth:`TransformerDecoder.run_layers`, each over a layer
range ``[l0, l1)``, with the hidden state carried from call to call::

    h = model.embed(tokens)                                 # (rows, d_model)
    h = model.run_layers(h, 0, 2, cache, slots, positions)  # layers 0 and 1
    h = model.run_layers(h, 2, 4, cache, slots, positions)  # layers 2 and 3
    logits = model.logits(h)                                # (rows, vocab), float32

Architecture (pre-norm, as in GPT-NeoX / LLaMA): token embedding; per layer, RMSNorm ->
multi-head causal self-attention with rotary position embedding (RoPE, base 10000, the
"rotate half" pairing) on q and k -> output projection -> residual; RMSNorm -> SiLU MLP
(``silu(x @ w_up) @ w_down``) -> residual; a final RMSNorm and an untied ``lm_head``. No
biases. Norms, RoPE, attention scores, softmax and logits are computed in float32
whatever the weights' dtype.

Keys and values live in a preallocated :class:`KVCache`. Every row's k/v are written to
the cache *before* attention, so rows of one sequence in the same call (a prefill chunk)
see each other causally, and one code path serves prefill and decode alike.

Arrays are created by ``xp`` (``numpy`` or ``cupy``, see :mod:`airan.backend`); only
indices, lengths and sampling live on the host. Importing this module never imports CuPy.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, model_validator

from airan.core.errors import FieldError
from airan.core.policy import CheckedModel

__all__ = ["ROPE_BASE", "KVCache", "ModelConfig", "TransformerDecoder"]

Array = Any  # a numpy.ndarray or a cupy.ndarray: the two share the API used here
IntArray = npt.NDArray[np.int64]

ROPE_BASE = 10000.0
NPZ_CONFIG_KEY = "__config__"
SAFETENSORS_CONFIG_KEY = "airan_config"
SUFFIXES = (".npz", ".safetensors")
# The fields that fix what the weights mean; max_context and dtype may be chosen freely.
_ARCH_FIELDS = ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "norm_eps")
_CACHE_FIELDS = ("n_layers", "n_heads", "d_model", "max_context", "dtype")
_ONE32 = np.float32(1.0)

# How the rows of a run_layers call lie in the cache (see TransformerDecoder._plan_rows).
_GENERAL = 0  # anything the checks accept: fancy-indexed writes, a mask, a gather
_CHUNK = 1  # one slot, consecutive positions (a prefill chunk, or a single row)
_DECODE = 2  # distinct slots, one row each


class ModelConfig(CheckedModel):
    """The decoder's hyper-parameters. ``d_model`` must split evenly into ``n_heads``
    heads of an even ``head_dim`` (RoPE rotates pairs of dimensions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "cfg"

    vocab_size: int = Field(512, ge=2, le=10_000_000)
    d_model: int = Field(128, ge=2, le=65_536)
    n_heads: int = Field(4, ge=1, le=1024)
    n_layers: int = Field(4, ge=1, le=1024)
    d_ff: int = Field(512, ge=1, le=1_048_576)
    max_context: int = Field(256, ge=2, le=1_048_576)
    norm_eps: float = Field(1e-5, gt=0.0, le=1.0)
    dtype: Literal["float32", "float16"] = "float32"

    @model_validator(mode="after")
    def _heads_divide_model(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = d_model / n_heads ({self.d_model} / {self.n_heads} = "
                f"{self.head_dim}) must be even: RoPE rotates pairs of dimensions"
            )
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight's name and shape, in a fixed order."""
        v, d, f = self.vocab_size, self.d_model, self.d_ff
        shapes: dict[str, tuple[int, ...]] = {"embed": (v, d)}
        for i in range(self.n_layers):
            p = f"layers.{i}."
            shapes[p + "attn_norm"] = (d,)
            for w in ("wq", "wk", "wv", "wo"):
                shapes[p + w] = (d, d)
            shapes[p + "mlp_norm"] = (d,)
            shapes[p + "w_up"] = (d, f)
            shapes[p + "w_down"] = (f, d)
        shapes["final_norm"] = (d,)
        shapes["lm_head"] = (d, v)
        return shapes

    def n_params(self) -> int:
        """Number of weights (scalars)."""
        return sum(math.prod(s) for s in self.weight_shapes().values())


def _to_host(a: Any) -> np.ndarray[Any, Any]:
    """A NumPy copy (or view) of ``a``, whether ``a`` lives on the host or on a GPU."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    if callable(get):  # cupy.ndarray
        return np.asarray(get())
    return np.asarray(a)


def _host_ints(values: Any, field: str) -> IntArray:
    """``values`` as a 1-D int64 host array, or :class:`FieldError` on ``field``."""
    arr = _to_host(values)
    if arr.ndim != 1:
        raise FieldError(field, f"expected a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise FieldError(field, f"expected integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _rms_norm(x: Array, scale: Array, eps: float, xp: ModuleType) -> Array:
    """RMSNorm in float32, returned in ``scale``'s dtype."""
    x32 = x.astype(xp.float32, copy=False)
    inv = 1.0 / xp.sqrt(xp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * inv * scale.astype(xp.float32, copy=False)).astype(scale.dtype, copy=False)


def _rms_norm_f32(x32: Array, scale32: Array, eps: np.float32, xp: ModuleType) -> Array:
    """:func:`_rms_norm` of float32 ``x32`` with a float32 ``scale32``, float32 out, in
    fewer array operations, in place where it can: the same arithmetic, so the same bits
    (the mean is a float32 sum divided by the width, as ``numpy.mean`` computes it; the
    float32 ``eps`` is what a Python float becomes next to a float32 array)."""
    sq = x32 * x32
    ms = sq.sum(axis=-1, keepdims=True)
    ms /= np.float32(x32.shape[-1])
    ms += eps
    ms = xp.divide(_ONE32, xp.sqrt(ms))
    out = xp.multiply(x32, ms, sq)  # sq is spent: reuse it
    out *= scale32
    return out


def _no_negative(filled: IntArray, l0: int, l1: int) -> bool:
    """Whether every slot holds >= 0 positions at layers ``[l0, l1)``: then a slot with
    no row in a call passes the gap check (its top, -1, is below what it holds). True of
    any cache this module filled; checked all the same, as ``filled`` is public."""
    sub = filled[l0:l1]
    if sub.size <= 256:  # a numpy reduction costs more than this on few counts
        return min(sub.ravel().tolist()) >= 0
    return bool(sub.min() >= 0)


def _silu(u: Array, xp: ModuleType, half: Any = 0.5) -> Array:
    """``u * sigmoid(u)``, written with tanh so that no exp can overflow: ``u * (0.5 +
    0.5 * tanh(0.5 * u))``, one operation at a time in place (``half`` is 0.5, or 0.5
    as a scalar of ``u``'s dtype, which is what a Python 0.5 becomes next to ``u``)."""
    t = xp.tanh(u * half)
    t *= half
    t += half
    t *= u
    return t


class KVCache:
    """Preallocated keys and values for ``slots`` sequences.

    ``k`` and ``v`` are ``xp`` arrays of shape ``(n_layers, slots, max_context, n_heads,
    head_dim)`` in the model's dtype: ``k[layer, slot, position]`` holds the rotated key
    of the token at ``position`` of the sequence in ``slot``.

    ``filled[layer, slot]`` (host, int64) counts the positions of ``slot`` written at
    ``layer``; ``lengths[slot]`` (host, int64, read-only view) is ``filled[-1, slot]``:
    the positions that have been through every layer, so the position of the next token.
    The counts differ between layers only while a forward step is part-way through its
    layer ranges.
    """

    def __init__(self, cfg: ModelConfig, slots: int, xp: ModuleType = np) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise FieldError("slots", f"must be a positive integer, got {slots!r}")
        self.cfg = cfg
        self.n_slots = slots
        self.xp = xp
        shape = (cfg.n_layers, slots, cfg.max_context, cfg.n_heads, cfg.head_dim)
        self.k: Array = xp.zeros(shape, dtype=cfg.dtype)
        self.v: Array = xp.zeros(shape, dtype=cfg.dtype)
        self.filled: IntArray = np.zeros((cfg.n_layers, slots), dtype=np.int64)
        self._work: dict[str, Array] = {}

    def workspace(self, name: str, shape: tuple[int, ...]) -> Array:
        """A scratch array of ``shape`` in the cache's dtype, reused from call to call
        (grown when too small): the per-row gathers of attention land here instead of in
        fresh allocations, which on the CPU cost a page fault per 4 KiB. Its contents are
        valid until the next call with the same ``name``."""
        n = math.prod(shape)
        buf = self._work.get(name)
        if buf is None or buf.size < n:
            buf = self.xp.empty(n, dtype=self.k.dtype)
            self._work[name] = buf
        return buf[:n].reshape(shape)

    @property
    def lengths(self) -> IntArray:
        """Tokens held per slot (through every layer); a read-only view."""
        view: IntArray = self.filled[-1]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Device memory held by ``k`` and ``v``."""
        return int(self.k.nbytes + self.v.nbytes)

    def reset(self, slot: int) -> None:
        """Forget the sequence in ``slot`` (its memory is reused, not cleared)."""
        if isinstance(slot, bool) or not isinstance(slot, int | np.integer):
            raise FieldError("slot", f"must be an integer, got {slot!r}")
        if not 0 <= slot < self.n_slots:
            raise FieldError(
                "slot", f"slot {slot} is out of range for a cache of {self.n_slots} slots"
            )
        self.filled[:, slot] = 0


class TransformerDecoder:
    """The decoder: weights in ``xp`` arrays, and the sliced forward step.

    ``weights`` maps every name of :meth:`ModelConfig.weight_shapes` to an array of that
    exact shape, of dtype ``cfg.dtype``, with finite values; anything else raises
    :class:`FieldError` on ``weights[name]``. The decoder keeps the arrays it is given
    (``xp.asarray`` does not copy an array already in ``xp``): do not modify them after.
    """

    def __init__(self, cfg: ModelConfig, weights: Mapping[str, Any], xp: ModuleType = np) -> None:
        self.cfg = cfg
        self.xp = xp
        self._w = self._validate(cfg, weights, xp)
        d = cfg.d_model
        # Fused q/k/v projection: one matmul per layer instead of three.
        self._layers: list[dict[str, Array]] = []
        for i in range(cfg.n_layers):
            p = f"layers.{i}."
            w = {k[len(p) :]: a for k, a in self._w.items() if k.startswith(p)}
            w["wqkv"] = xp.concatenate([w["wq"], w["wk"], w["wv"]], axis=1)
            assert w["wqkv"].shape == (d, 3 * d)
            # Norm scales in float32, cast once here rather than on every call.
            w["attn_norm32"] = w["attn_norm"].astype(xp.float32)
            w["mlp_norm32"] = w["mlp_norm"].astype(xp.float32)
            self._layers.append(w)
        self._final_norm32: Array = self._w["final_norm"].astype(xp.float32)
        self._f32 = cfg.dtype == "float32"
        # Scalars as the arrays they meet would take a Python float: cheaper to pass.
        self._eps32 = np.float32(cfg.norm_eps)
        self._scale = np.float32(1.0 / math.sqrt(cfg.head_dim))
        self._half: Any = np.dtype(cfg.dtype).type(0.5) if xp is np else 0.5
        # RoPE tables (max_context, 2, head_dim // 2), float32, on the device: row p is
        # (cos, cos) and (sin, -sin) of position p's angles, so that with a head seen as
        # its two halves (x1, x2), x * cos2 + (x * sin2)[reversed halves] is
        # (x1 cos - x2 sin, x2 cos + x1 sin), the "rotate half" RoPE, in three operations.
        half = cfg.head_dim // 2
        inv_freq = ROPE_BASE ** (-np.arange(half, dtype=np.float64) / half)
        angles = np.outer(np.arange(cfg.max_context, dtype=np.float64), inv_freq)
        cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        self._cos2: Array = xp.asarray(np.stack([cos, cos], axis=1))
        self._sin2: Array = xp.asarray(np.stack([sin, -sin], axis=1))
        self._inv_freq = inv_freq

    # ---------------------------------------------------------------- construction

    @staticmethod
    def _validate(cfg: ModelConfig, weights: Mapping[str, Any], xp: ModuleType) -> dict[str, Any]:
        if not isinstance(weights, Mapping):
            raise FieldError("weights", f"expected a mapping of names to arrays, got {weights!r}")
        shapes = cfg.weight_shapes()
        unknown = [n for n in weights if n not in shapes]
        if unknown:
            raise FieldError(
                f"weights[{unknown[0]}]",
                "unknown tensor name (expected embed, layers.<i>.{attn_norm, wq, wk, wv, wo, "
                f"mlp_norm, w_up, w_down}} for i < {cfg.n_layers}, final_norm, lm_head)",
            )
        missing = [n for n in shapes if n not in weights]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FieldError(f"weights[{missing[0]}]", f"missing tensor{more}")
        out: dict[str, Any] = {}
        for name, shape in shapes.items():
            a = weights[name]
            field = f"weights[{name}]"
            if not hasattr(a, "shape") or not hasattr(a, "dtype"):
                raise FieldError(field, f"expected an array, got {type(a).__name__}")
            if tuple(a.shape) != shape:
                raise FieldError(field, f"expected shape {shape}, got {tuple(a.shape)}")
            if np.dtype(a.dtype) != np.dtype(cfg.dtype):
                raise FieldError(
                    field, f"expected dtype {cfg.dtype} (the config's dtype), got {a.dtype}"
                )
            if xp is np:
                a = _to_host(a)
            arr = xp.asarray(a)
            if not bool(xp.isfinite(arr).all()):
                bad = int((~xp.isfinite(arr)).sum())
                raise FieldError(field, f"{bad} of {arr.size} values are NaN or infinite")
            out[name] = arr
        return out

    @classmethod
    def from_seed(
        cls, cfg: ModelConfig, seed: int = 0, xp: ModuleType = np, *, std: float = 0.02
    ) -> TransformerDecoder:
        """Random weights, the same for the same ``cfg`` and ``seed`` on any backend.

        Matrices are drawn from N(0, std^2) (GPT-2's scheme); the output projections of
        each residual branch (``wo``, ``w_down``) from N(0, (std / sqrt(2 n_layers))^2);
        norm scales are ones. Drawn on the host (NumPy ``Generator``), then moved to ``xp``.
        """
        if not (isinstance(std, int | float) and math.isfinite(std) and std > 0):
            raise FieldError("std", f"must be a positive number, got {std!r}")
        rng = np.random.default_rng(seed)
        out_std = std / math.sqrt(2 * cfg.n_layers)
        weights: dict[str, np.ndarray[Any, Any]] = {}
        for name, shape in cfg.weight_shapes().items():
            if name.endswith("norm"):
                a = np.ones(shape, dtype=np.float32)
            else:
                s = out_std if name.endswith((".wo", ".w_down")) else std
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(s)
            weights[name] = a.astype(cfg.dtype, copy=False)
        return cls(cfg, weights, xp)

    @classmethod
    def from_file(
        cls, path: str | Path, cfg: ModelConfig | None = None, xp: ModuleType = np
    ) -> TransformerDecoder:
        """Load weights from ``.npz`` or ``.safetensors`` (see :meth:`save`).

        The config comes from ``cfg`` or, when ``cfg`` is None, from the file (the
        ``"__config__"`` entry of an ``.npz``, the ``"airan_config"`` metadata of a
        ``.safetensors``). When both are there they must agree on the architecture
        (everything but ``max_context`` and ``dtype``).
        """
        p = Path(path)
        if p.suffix not in SUFFIXES:
            raise FieldError(
                "path", f"unknown suffix {p.suffix!r} of {p}: expected .npz or .safetensors"
            )
        if not p.is_file():
            raise FieldError("path", f"no such file: {p}")
        if p.suffix == ".npz":
            tensors, stored = _read_npz(p)
        else:
            tensors, stored = _read_safetensors(p)
        file_cfg = None
        if stored is not None:
            try:
                data = json.loads(stored)
            except ValueError as exc:
                raise FieldError(f"{p.name}[config]", f"not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise FieldError(f"{p.name}[config]", "expected a JSON object")
            file_cfg = ModelConfig.parse(data, where=f"{p.name}[config]")
        if cfg is None:
            if file_cfg is None:
                raise FieldError(
                    "cfg",
                    f"{p} holds no embedded config (n_heads cannot be read from the shapes): "
                    "pass cfg=ModelConfig(...)",
                )
            cfg = file_cfg
        elif file_cfg is not None:
            for f in _ARCH_FIELDS:
                if getattr(cfg, f) != getattr(file_cfg, f):
                    raise FieldError(
                        f"cfg.{f}",
                        f"{getattr(cfg, f)} differs from the {getattr(file_cfg, f)} stored in {p}",
                    )
        return cls(cfg, tensors, xp)

    def save(self, path: str | Path) -> None:
        """Write the weights and the config to ``.npz`` or ``.safetensors``.

        ``.npz``: one entry per weight, plus the config as UTF-8 JSON in a uint8 array
        under ``"__config__"``. ``.safetensors``: one tensor per weight, the config JSON
        in the metadata under ``"airan_config"``. :meth:`from_file` reads both back.
        """
        p = Path(path)
        if p.suffix not in SUFFIXES:
            raise FieldError(
                "path", f"unknown suffix {p.suffix!r} of {p}: expected .npz or .safetensors"
            )
        config = self.cfg.model_dump_json()
        host = {n: np.ascontiguousarray(_to_host(a)) for n, a in self.weights().items()}
        if p.suffix == ".npz":
            blob = np.frombuffer(config.encode(), dtype=np.uint8)
            with p.open("wb") as fh:
                savez: Any = np.savez  # its stubs mistake the ** entries for allow_pickle
                savez(fh, **host, **{NPZ_CONFIG_KEY: blob})
        else:
            save_file = _safetensors_numpy().save_file
            save_file(host, str(p), metadata={SAFETENSORS_CONFIG_KEY: config})

    def weights(self) -> dict[str, Array]:
        """The weights by name (the arrays themselves, in ``xp``)."""
        return dict(self._w)

    # ---------------------------------------------------------------- the sliced step

    def embed(self, tokens: Sequence[int] | Array) -> Array:
        """Embedding rows of ``tokens``: ``(rows, d_model)`` in the model's dtype."""
        t = self._tokens(tokens)
        return self._w["embed"][t if self.xp is np else self.xp.asarray(t)]

    def run_layers(
        self,
        h: Array,
        l0: int,
        l1: int,
        cache: KVCache,
        slots: Sequence[int] | Array,
        positions: Sequence[int] | Array,
    ) -> Array:
        """Run layers ``[l0, l1)`` on ``h`` (``(rows, d_model)``); return the new hidden state.

        Row ``r`` is the token at ``positions[r]`` of the sequence in ``slots[r]``: a
        decode step has one row per sequence, a prefill chunk several rows of one
        sequence, and any mix is allowed. At each layer every row's key and value are
        written to ``cache[layer, slot, position]``, then each row attends to its slot's
        positions ``0..positions[r]``.

        The positions of a slot must extend what the cache holds without a gap (at each
        layer of the range, the new positions of a slot are exactly the next ones), no
        (slot, position) may appear twice, and for ``l0 > 0`` layer ``l0 - 1`` must have
        been run at those positions already. Positions already held may be run again
        (they are overwritten). Raises :class:`FieldError` otherwise.
        """
        cfg, xp = self.cfg, self.xp
        self._check_range(l0, l1)
        self._check_cache(cache)
        s_host, p_host, mode = self._plan_rows(h, l0, l1, cache, slots, positions)
        # Everything below is the same arithmetic whatever the mode; the modes only pick
        # cheaper indexing (slices instead of fancy indices) and skip an all-True mask.
        f32 = self._f32
        rows = s_host.size
        nh, hd, half = cfg.n_heads, cfg.head_dim, cfg.head_dim // 2
        on_host = xp is np
        s0 = int(s_host[0])
        mask = None
        flat_idx = None
        if mode == _CHUNK:
            p0 = int(p_host[0])
            t_len = p0 + rows
            one_slot = True
            cos, sin = self._cos2[p0:t_len], self._sin2[p0:t_len]
            where: tuple[Any, Any] = (s0, slice(p0, t_len))
            if rows > 1:  # row r (position p0 + r) sees positions 0..p0 + r
                mask = (xp.arange(t_len)[None, :] <= xp.arange(p0, t_len)[:, None])[:, None, :]
        else:
            t_len = int(p_host.max()) + 1
            one_slot = mode == _GENERAL and bool(np.all(s_host == s_host[0]))
            s_idx = s_host if on_host else xp.asarray(s_host)
            p_idx = p_host if on_host else xp.asarray(p_host)
            cos, sin = self._cos2[p_idx], self._sin2[p_idx]
            where = (s_idx, p_idx)
            if int(p_host.min()) != t_len - 1:  # else every row sees every position < t_len
                # mask[r, 0, t]: may row r attend to key position t?
                mask = (xp.arange(t_len)[None, :] <= p_idx[:, None])[:, None, :]
            if not one_slot:  # rows of (slot, position) pairs (r, t) in a (slots * context) view
                pairs = s_host[:, None] * cfg.max_context + np.arange(t_len)[None, :]
                flat_idx = pairs.ravel() if on_host else xp.asarray(pairs.ravel())
        cos = cos.reshape(rows, 1, 1, 2, half)
        sin = sin.reshape(rows, 1, 1, 2, half)
        scale = self._scale
        eps, half_c = self._eps32, self._half
        h = h.astype(cfg.dtype, copy=False)
        for layer in range(l0, l1):
            w = self._layers[layer]
            x = _rms_norm_f32(h if f32 else h.astype(xp.float32), w["attn_norm32"], eps, xp)
            if not f32:
                x = x.astype(cfg.dtype)
            # (rows, q/k/v, H, the two halves of a head, hd / 2)
            qkv = (x @ w["wqkv"]).reshape(rows, 3, nh, 2, half)
            # RoPE on q and k at once (float32 out; a float16 qkv is widened exactly).
            qk = qkv[:, :2]
            rot = qk * cos
            rot += (qk * sin)[..., ::-1, :]
            q = rot[:, 0].reshape(rows, nh, hd)
            q *= scale
            k = rot[:, 1].reshape(rows, nh, hd)
            kc, vc = cache.k[layer], cache.v[layer]
            kc[where] = k if f32 else k.astype(cfg.dtype)
            vc[where] = qkv[:, 2].reshape(rows, nh, hd)
            if one_slot:  # a prefill chunk: every row shares one cache, no gather
                keys, vals = kc[s0, :t_len], vc[s0, :t_len]
                if not f32:
                    keys, vals = keys.astype(xp.float32), vals.astype(xp.float32)
                # (H, rows, hd) @ (H, hd, T) -> (H, rows, T) -> (rows, H, T)
                scores = (q.transpose(1, 0, 2) @ keys.transpose(1, 2, 0)).transpose(1, 0, 2)
                probs = _masked_softmax(scores, mask, xp)
                # (H, rows, T) @ (H, T, hd) -> (H, rows, hd) -> (rows, H, hd)
                att = (probs.transpose(1, 0, 2) @ vals.transpose(1, 0, 2)).transpose(1, 0, 2)
            else:  # gather each row's slot cache: (rows, T, H, hd)
                keys = _gather(kc, flat_idx, cache.workspace("k", (rows, t_len, nh, hd)), xp)
                vals = _gather(vc, flat_idx, cache.workspace("v", (rows, t_len, nh, hd)), xp)
                if not f32:
                    keys, vals = keys.astype(xp.float32), vals.astype(xp.float32)
                # (rows, H, 1, hd) @ (rows, H, hd, T) -> (rows, H, T)
                scores = (q[:, :, None, :] @ keys.transpose(0, 2, 3, 1))[:, :, 0, :]
                probs = _masked_softmax(scores, mask, xp)
                # (rows, H, 1, T) @ (rows, H, T, hd) -> (rows, H, hd)
                att = (probs[:, :, None, :] @ vals.transpose(0, 2, 1, 3))[:, :, 0, :]
            att = att.reshape(rows, cfg.d_model)
            if not f32:
                att = att.astype(cfg.dtype)
            h = h + att @ w["wo"]
            x = _rms_norm_f32(h if f32 else h.astype(xp.float32), w["mlp_norm32"], eps, xp)
            if not f32:
                x = x.astype(cfg.dtype)
            h += _silu(x @ w["w_up"], xp, half_c) @ w["w_down"]
        # Record the positions now held by each layer of the range.
        filled = cache.filled
        if mode == _CHUNK:
            held = filled[l0:l1, s0]  # a view
            np.maximum(held, t_len, out=held)
        elif mode == _DECODE:
            filled[l0:l1, s_host] = np.maximum(filled[l0:l1, s_host], p_host + 1)
        else:
            top = np.full(cache.n_slots, -1, dtype=np.int64)
            np.maximum.at(top, s_host, p_host)
            filled[l0:l1] = np.maximum(filled[l0:l1], top[None, :] + 1)
        return h

    def logits(self, h: Array) -> Array:
        """Final norm and ``lm_head``: ``(rows, vocab)`` float32 logits."""
        xp = self.xp
        if getattr(h, "ndim", None) not in (1, 2) or h.shape[-1] != self.cfg.d_model:
            raise FieldError(
                "h", f"expected shape (rows, {self.cfg.d_model}), got {getattr(h, 'shape', h)}"
            )
        if self._f32:
            h32 = h.astype(xp.float32, copy=False)
            return _rms_norm_f32(h32, self._final_norm32, self._eps32, xp) @ self._w["lm_head"]
        h32 = h.astype(self.cfg.dtype, copy=False).astype(xp.float32)
        x = _rms_norm_f32(h32, self._final_norm32, self._eps32, xp).astype(self.cfg.dtype)
        return (x @ self._w["lm_head"]).astype(xp.float32)

    # ---------------------------------------------------------------- conveniences

    def prefill(self, cache: KVCache, slot: int, tokens: Sequence[int] | Array) -> Array:
        """Append ``tokens`` to the sequence in ``slot`` through every layer in one call;
        return the logits of the last token, ``(vocab,)`` float32.

        The tokens take positions ``cache.lengths[slot]`` onward: call ``cache.reset(slot)``
        first to start a new sequence.
        """
        self._check_cache(cache)
        if isinstance(slot, bool) or not isinstance(slot, int | np.integer):
            raise FieldError("slot", f"must be an integer, got {slot!r}")
        if not 0 <= slot < cache.n_slots:
            raise FieldError(
                "slot", f"slot {slot} is out of range for a cache of {cache.n_slots} slots"
            )
        t = self._tokens(tokens)
        start = int(cache.lengths[slot])
        if start + t.size > self.cfg.max_context:
            raise FieldError(
                "tokens",
                f"prompt longer than the context: {start} held + {t.size} new tokens exceed "
                f"the context of {self.cfg.max_context} tokens",
            )
        positions = np.arange(start, start + t.size, dtype=np.int64)
        slots = np.full(t.size, slot, dtype=np.int64)
        h = self.run_layers(self.embed(t), 0, self.cfg.n_layers, cache, slots, positions)
        return self.logits(h[-1:])[0]

    def decode(
        self, cache: KVCache, slots: Sequence[int] | Array, tokens: Sequence[int] | Array
    ) -> Array:
        """One decode step through every layer: token ``tokens[i]`` is appended to the
        sequence in ``slots[i]`` (at position ``cache.lengths[slots[i]]``). Returns the
        ``(rows, vocab)`` float32 logits."""
        self._check_cache(cache)
        s = _host_ints(slots, "slots")
        t = self._tokens(tokens)
        if s.size != t.size:
            raise FieldError("tokens", f"expected {s.size} tokens (one per slot), got {t.size}")
        if s.size and (s.min() < 0 or s.max() >= cache.n_slots):
            raise FieldError("slots", f"slots must lie in [0, {cache.n_slots}), got {s.tolist()}")
        positions = cache.lengths[s]
        h = self.run_layers(self.embed(t), 0, self.cfg.n_layers, cache, s, positions)
        return self.logits(h)

    def forward_full(self, tokens: Sequence[int] | Array) -> Array:
        """Reference forward pass of one sequence without any cache: plain causal
        attention over the whole sequence (RoPE written with complex rotations), logits
        ``(T, vocab)`` float32. Independent of :meth:`run_layers`; used to check it."""
        cfg, xp = self.cfg, self.xp
        t = self._tokens(tokens)
        n = t.size
        if n > cfg.max_context:
            raise FieldError(
                "tokens",
                f"prompt longer than the context: {n} tokens exceed the context of "
                f"{cfg.max_context} tokens",
            )
        nh, hd, half = cfg.n_heads, cfg.head_dim, cfg.head_dim // 2
        angles = np.outer(np.arange(n, dtype=np.float64), self._inv_freq)
        rot = xp.asarray(np.exp(1j * angles).astype(np.complex64))[None]  # (1, T, half)
        causal = xp.asarray(np.tril(np.ones((n, n), dtype=bool)))

        def rope(a: Array) -> Array:  # (H, T, hd) -> (H, T, hd) float32
            a32 = a.astype(xp.float32)
            z = (a32[..., :half] + 1j * a32[..., half:]) * rot
            return xp.concatenate([z.real, z.imag], axis=-1).astype(xp.float32)

        h = self._w["embed"][xp.asarray(t)]
        for i in range(cfg.n_layers):
            w = {
                name: self._w[f"layers.{i}.{name}"]
                for name in ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_up", "w_down")
            }
            x = _rms_norm(h, w["attn_norm"], cfg.norm_eps, xp)
            q, k, v = ((x @ w[m]).reshape(n, nh, hd).transpose(1, 0, 2) for m in ("wq", "wk", "wv"))
            q = rope(q)
            k = rope(k).astype(cfg.dtype).astype(xp.float32)  # rounded as a cache stores it
            scores = (q @ k.transpose(0, 2, 1)) / np.float32(math.sqrt(hd))  # (H, T, T)
            scores = xp.where(causal[None], scores, -xp.inf)
            scores = scores - scores.max(axis=-1, keepdims=True)
            e = xp.exp(scores)
            probs = e / e.sum(axis=-1, keepdims=True)
            att = probs @ v.astype(xp.float32)  # (H, T, hd)
            att = att.transpose(1, 0, 2).reshape(n, cfg.d_model).astype(cfg.dtype)
            h = h + att @ w["wo"]
            x = _rms_norm(h, w["mlp_norm"], cfg.norm_eps, xp)
            u = (x @ w["w_up"]).astype(xp.float32)
            e = xp.exp(-xp.abs(u))  # sigmoid(u) = 1 / (1 + e) for u >= 0, e / (1 + e) below
            sig = xp.where(u >= 0, 1.0, e) / (1.0 + e)
            h = h + (u * sig).astype(cfg.dtype) @ w["w_down"]
        return self.logits(h)

    @staticmethod
    def sample(
        logits: Array, temperature: float = 0.0, rng: np.random.Generator | None = None
    ) -> IntArray:
        """Next tokens from logits ``(rows, vocab)`` (or ``(vocab,)``), on the host.

        ``temperature == 0``: greedy (argmax; the lowest index on ties). Otherwise one draw
        per row from ``softmax(logits / temperature)`` with ``rng`` (a fresh, unseeded
        generator when None). Returns int64 of shape ``logits.shape[:-1]``.
        """
        if not (isinstance(temperature, int | float) and math.isfinite(temperature)):
            raise FieldError("temperature", f"must be a finite number, got {temperature!r}")
        if temperature < 0:
            raise FieldError("temperature", f"must be >= 0, got {temperature}")
        lg = _to_host(logits).astype(np.float64)
        if lg.ndim not in (1, 2) or lg.shape[-1] < 1:
            raise FieldError("logits", f"expected shape (rows, vocab) or (vocab,), got {lg.shape}")
        if np.isnan(lg).any():
            raise FieldError("logits", "holds NaN values")
        if temperature == 0:
            greedy: IntArray = np.argmax(lg, axis=-1).astype(np.int64)
            return greedy
        if rng is None:
            rng = np.random.default_rng()
        z = lg.reshape(-1, lg.shape[-1]) / temperature
        z = z - z.max(axis=-1, keepdims=True)
        cdf = np.cumsum(np.exp(z), axis=-1)
        u = (1.0 - rng.random(z.shape[0]))[:, None] * cdf[:, -1:]  # in (0, total]
        idx = np.minimum((cdf < u).sum(axis=-1), z.shape[1] - 1)
        drawn: IntArray = idx.astype(np.int64).reshape(lg.shape[:-1])
        return drawn

    def flops(self, rows: int, context: int, layers: int) -> float:
        """Approximate floating-point operations of one :meth:`run_layers` call.

        ``rows`` tokens through ``layers`` layers, each row attending to ``context``
        positions (its position + 1; for a prefill chunk, the mean over its rows). Counts
        multiply-adds as 2 FLOPs: per row and layer, q/k/v/o projections ``8 d^2``, the
        MLP ``4 d d_ff``, attention scores and weighted sum ``4 context d``. Norms, RoPE
        and softmax (O(d + H context) per row) are left out. :meth:`logits` adds
        ``2 d vocab`` per row.
        """
        for name, val in (("rows", rows), ("context", context), ("layers", layers)):
            if isinstance(val, bool) or not isinstance(val, int | float) or val < 0:
                raise FieldError(name, f"must be a non-negative number, got {val!r}")
        d, f = self.cfg.d_model, self.cfg.d_ff
        return float(layers) * float(rows) * (8.0 * d * d + 4.0 * d * f + 4.0 * context * d)

    # ---------------------------------------------------------------- checks

    def _tokens(self, tokens: Sequence[int] | Array) -> IntArray:
        t = _host_ints(tokens, "tokens")
        if t.size == 0:
            raise FieldError("tokens", "expected at least one token")
        # As unsigned, a negative token is huge: one max checks both ends.
        if t.view(np.uint64).max() >= self.cfg.vocab_size:
            bad = int(t[(t < 0) | (t >= self.cfg.vocab_size)][0])
            raise FieldError(
                "tokens", f"token {bad} is outside the vocabulary [0, {self.cfg.vocab_size})"
            )
        return t

    def _check_range(self, l0: int, l1: int) -> None:
        n = self.cfg.n_layers
        if type(l0) is int and type(l1) is int and 0 <= l0 < l1 <= n:
            return
        ints = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (l0, l1))
        if not ints or not 0 <= l0 < l1 <= n:
            raise FieldError("l0/l1", f"expected 0 <= l0 < l1 <= {n}, got l0={l0!r}, l1={l1!r}")

    def _check_cache(self, cache: KVCache) -> None:
        if not isinstance(cache, KVCache):
            raise FieldError("cache", f"expected a KVCache, got {type(cache).__name__}")
        if cache.xp is not self.xp:
            raise FieldError(
                "cache", f"lives in {cache.xp.__name__}, the model in {self.xp.__name__}"
            )
        mine, theirs = self.cfg, cache.cfg
        if theirs is mine:
            return
        for f in _CACHE_FIELDS:
            if getattr(mine, f) != getattr(theirs, f):
                raise FieldError(
                    f"cache.cfg.{f}",
                    f"{getattr(theirs, f)} does not match the model's {getattr(mine, f)}",
                )

    def _plan_rows(
        self,
        h: Array,
        l0: int,
        l1: int,
        cache: KVCache,
        slots: Sequence[int] | Array,
        positions: Sequence[int] | Array,
    ) -> tuple[IntArray, IntArray, int]:
        """The checks of :meth:`_check_rows`, with a cheap way through for the common
        layouts; returns the host slots and positions and the layout (``_CHUNK``,
        ``_DECODE`` or ``_GENERAL``).

        The cheap tests only ever *accept*: each layout they recognise is one that every
        check of :meth:`_check_rows` passes (argued below). Anything else, valid or not,
        goes through :meth:`_check_rows`, which raises what it always raised.
        """
        s = _host_ints(slots, "slots")
        p = _host_ints(positions, "positions")
        rows = s.size
        if not rows or p.size != rows or getattr(h, "shape", None) != (rows, self.cfg.d_model):
            return (*self._check_rows(h, l0, l1, cache, s, p), _GENERAL)
        n_s, ctx = cache.n_slots, self.cfg.max_context
        filled = cache.filled
        sl: list[int] = s.tolist()
        pl: list[int] = p.tolist()
        s0, p0 = sl[0], pl[0]
        if rows == 1 or sl.count(s0) == rows:
            # One slot, positions p0..top: in range, distinct; layer l0 - 1 holds them
            # all; at each layer p0 <= filled, so the new ones (>= filled) run filled..top.
            top = p0 + rows - 1
            if (
                0 <= s0 < n_s
                and p0 >= 0
                and top < ctx
                and (rows == 1 or pl == list(range(p0, top + 1)))
                and (l0 == 0 or top < filled[l0 - 1, s0])
                and p0 <= min(filled[l0:l1, s0].tolist())
                and _no_negative(filled, l0, l1)
            ):
                return s, p, _CHUNK
        elif (
            len(set(sl)) == rows
            and min(sl) >= 0
            and max(sl) < n_s
            and min(pl) >= 0
            and max(pl) < ctx
        ):
            # Distinct slots, one row each: pairs distinct; at each layer a row's position
            # is held already (< filled) or the next one (== filled).
            prev = filled[l0 - 1, s].tolist() if l0 else None
            held = filled[l0, s] if l1 - l0 == 1 else filled[l0:l1, s].min(axis=0)
            if (
                (prev is None or all(a < b for a, b in zip(pl, prev, strict=True)))
                and all(a <= b for a, b in zip(pl, held.tolist(), strict=True))
                and _no_negative(filled, l0, l1)
            ):
                return s, p, _DECODE
        return (*self._check_rows(h, l0, l1, cache, s, p), _GENERAL)

    def _check_rows(
        self,
        h: Array,
        l0: int,
        l1: int,
        cache: KVCache,
        slots: Sequence[int] | Array,
        positions: Sequence[int] | Array,
    ) -> tuple[IntArray, IntArray]:
        s = _host_ints(slots, "slots")
        p = _host_ints(positions, "positions")
        rows = s.size
        if rows == 0:
            raise FieldError("slots", "expected at least one row")
        if p.size != rows:
            raise FieldError("positions", f"expected {rows} positions (one per row), got {p.size}")
        shape = tuple(getattr(h, "shape", ()))
        if shape != (rows, self.cfg.d_model):
            raise FieldError("h", f"expected shape ({rows}, {self.cfg.d_model}), got {shape}")
        if s.min() < 0 or s.max() >= cache.n_slots:
            bad = int(s[(s < 0) | (s >= cache.n_slots)][0])
            raise FieldError(
                "slots", f"slot {bad} is out of range for a cache of {cache.n_slots} slots"
            )
        if p.min() < 0:
            raise FieldError("positions", f"must be >= 0, got {int(p.min())}")
        ctx = self.cfg.max_context
        if p.max() >= ctx:
            raise FieldError(
                "positions",
                f"position {int(p.max())} exceeds the context of {ctx} tokens "
                "(prompt longer than the context?)",
            )
        key = s * ctx + p
        uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
        if uniq.size != rows:
            r = int(first[np.argmax(counts > 1)])
            raise FieldError(
                "positions", f"position {int(p[r])} of slot {int(s[r])} appears more than once"
            )
        if l0 > 0:
            prev = cache.filled[l0 - 1, s]
            late = p >= prev
            if late.any():
                r = int(np.argmax(late))
                raise FieldError(
                    "l0/l1",
                    f"layer {l0 - 1} has not been run at position {int(p[r])} of slot "
                    f"{int(s[r])} (it holds {int(prev[r])} positions): run layers [0, {l0}) "
                    "first",
                )
        # At each layer of the range, the new positions of a slot (those >= what the
        # layer holds) must be exactly the next ones: count(new) == top + 1 - filled.
        n_l = l1 - l0
        n_s = cache.n_slots
        filled = cache.filled[l0:l1]  # (n_l, n_s)
        top = np.full(n_s, -1, dtype=np.int64)
        np.maximum.at(top, s, p)
        new = p[None, :] >= filled[:, s]  # (n_l, rows)
        idx = (np.arange(n_l)[:, None] * n_s + s[None, :]).ravel()
        count = np.bincount(idx, weights=new.ravel(), minlength=n_l * n_s).reshape(n_l, n_s)
        ok = (top[None, :] < filled) | (count == top[None, :] + 1 - filled)
        if not ok.all():
            li, si = (int(v[0]) for v in np.nonzero(~ok))
            held = int(filled[li, si])
            raise FieldError(
                "positions",
                f"slot {si} leaves a gap at layer {l0 + li}: the cache holds positions "
                f"0..{held - 1}, so the new positions must run {held}, {held + 1}, ... "
                f"without a hole, got {sorted(int(v) for v in p[s == si])}",
            )
        return s, p


def _gather(cache: Array, flat_idx: Array, out: Array, xp: ModuleType) -> Array:
    """Rows ``flat_idx`` of one layer's cache ``(slots, context, H, hd)`` seen as
    ``(slots * context, H, hd)``, written into ``out`` ``(rows, T, H, hd)``.

    Taking from the contiguous whole (not from a ``[:, :T]`` view, which ``numpy.take``
    would first copy) with ``mode="clip"`` (indices are checked already; ``"raise"``
    buffers the output) writes straight into ``out``: no allocation per call.
    """
    src = cache.reshape(-1, *cache.shape[2:])
    flat_out = out.reshape(-1, *out.shape[2:])
    if xp is np:
        np.take(src, flat_idx, axis=0, out=flat_out, mode="clip")
    else:
        xp.take(src, flat_idx, axis=0, out=flat_out)
    return out


def _masked_softmax(scores: Array, mask: Array | None, xp: ModuleType) -> Array:
    """Softmax over the last axis of float32 ``scores``, where ``mask`` is True (None:
    everywhere). Overwrites ``scores`` when ``mask`` is None."""
    s = scores if mask is None else xp.where(mask, scores, -xp.inf)
    s -= s.max(axis=-1, keepdims=True)
    xp.exp(s, s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


# -------------------------------------------------------------------- file formats


def _read_npz(p: Path) -> tuple[dict[str, np.ndarray[Any, Any]], str | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            tensors = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FieldError("path", f"{p} is not a readable .npz file: {exc}") from None
    blob = tensors.pop(NPZ_CONFIG_KEY, None)
    stored = None
    if blob is not None:
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise FieldError(f"{p.name}[{NPZ_CONFIG_KEY}]", "expected a 1-D uint8 array of JSON")
        try:
            stored = blob.tobytes().decode()
        except UnicodeDecodeError as exc:
            raise FieldError(f"{p.name}[{NPZ_CONFIG_KEY}]", f"not UTF-8: {exc}") from None
    return tensors, stored


def _safetensors_numpy() -> ModuleType:
    try:
        import safetensors.numpy as stnp
    except ModuleNotFoundError:
        raise FieldError(
            "path",
            ".safetensors files need the safetensors package: pip install safetensors",
        ) from None
    return stnp


def _read_safetensors(p: Path) -> tuple[dict[str, np.ndarray[Any, Any]], str | None]:
    _safetensors_numpy()
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # SafetensorError and friends: a bad header, truncated data
        raise FieldError(
            "path", f"{p} is not a readable .safetensors file: {type(exc).__name__}: {exc}"
        ) from None
    return tensors, meta.get(SAFETENSORS_CONFIG_KEY)

"""Continuous-batching inference over the transformer decoder, cut into slices.

A :class:`DecoderEngine` is an AI slice source (``next_slice``) for an
:class:`~airan.core.slices.AiJob`. It serves requests the way an LLM server does:

* **continuous batching**: new requests take a free cache slot between steps and join
  the running batch; finished ones leave it;
* **chunked prefill**: a prompt is run through the model in chunks, one chunk per step,
  interleaved with the decode steps of the requests already generating;
* **slices sized by the estimator**: each step (a prefill chunk, or one decode step for
  the whole batch) is cut into ranges of layers. For each slice the engine asks the
  arbiter's ``fits`` (prediction plus guard within the largest AI slice) and takes as
  many layers, and for prefill as many prompt tokens, as fit. Prefill chunks and decode
  steps are separate slice kinds (``ai.prefill``, ``ai.decode``); their shape features
  are the rows (batch or chunk tokens), the context (both rounded up to a power of
  two), the layers, and whether the slice ends with the output head.

Bookkeeping (positions, cache lengths, tokens counted) advances when a slice is made;
the tokens' values are computed by the slice's work, so in virtual time, where work
does not run, the engine still schedules exactly as it would on a device.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airan.ai.model import KVCache, TransformerDecoder
from airan.core.errors import FieldError
from airan.core.slices import Slice, SliceKey, SliceKind
from airan.sched.executors import DurationDist

PREFILL = "ai.prefill"
DECODE = "ai.decode"
#: completed requests an engine keeps (its counters count them all)
COMPLETED_KEPT = 4096


def pow2(n: int) -> int:
    """``n`` rounded up to a power of two (at least 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(eq=False)
class Request:
    """One generation request and its progress."""

    request_id: int
    prompt: tuple[int, ...]
    max_new_tokens: int
    submitted_ns: int
    tenant: str = "default"
    slot: int = -1
    prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    first_token_ns: int = -1
    done_ns: int = -1
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        """All its tokens are made, or it was cancelled (:meth:`DecoderEngine.cancel`)."""
        return self.cancelled or len(self.generated) >= self.max_new_tokens


class CostModel:
    """Duration of a slice from its work: ``fixed_ns + ns_per_flop * flops``.

    Used for the declared bound of a slice kind the estimator has not learned yet
    (``bound_factor`` times the mean, plus ``bound_extra_ns``; the model is measured on
    the device, and the estimator raises a kind that runs over it after two slow runs)
    and, in virtual time, as the profile of the simulated device.
    """

    def __init__(
        self,
        model: TransformerDecoder,
        fixed_ns: float,
        ns_per_flop: float,
        bound_factor: float = 2.0,
        bound_extra_ns: float = 20_000.0,
    ) -> None:
        if not fixed_ns >= 0 or not ns_per_flop > 0:
            raise FieldError("CostModel", "fixed_ns must be >= 0 and ns_per_flop > 0")
        self.model = model
        self.fixed_ns = fixed_ns
        self.ns_per_flop = ns_per_flop
        self.bound_factor = bound_factor
        self.bound_extra_ns = bound_extra_ns

    def flops(self, rows: int, ctx: int, layers: int, head: bool) -> float:
        cfg = self.model.cfg
        f = self.model.flops(rows, ctx, layers)
        return f + (2.0 * rows * cfg.d_model * cfg.vocab_size if head else 0.0)

    def mean_ns(self, rows: int, ctx: int, layers: int, head: bool) -> float:
        # The output head is one norm and one matrix product: a fifth of a layer's calls.
        calls = layers + (0.2 if head else 0.0)
        return self.fixed_ns * calls + self.ns_per_flop * self.flops(rows, ctx, layers, head)

    def bound_ns(self, rows: int, ctx: int, layers: int, head: bool) -> int:
        mean = self.mean_ns(rows, ctx, layers, head)
        return int(mean * self.bound_factor + self.bound_extra_ns)

    def dist(self, key: SliceKey) -> DurationDist:
        """The simulated duration of a slice with this key."""
        f = dict(key[1])
        mean = self.mean_ns(f["rows"], f["ctx"], f["layers"], bool(f["head"]))
        return DurationDist(mean_ns=mean, max_ns=int(mean * 1.5) + 1)

    @classmethod
    def calibrate(
        cls, model: TransformerDecoder, sync: Callable[[], None], max_batch: int = 8
    ) -> CostModel:
        """Fit the model on the device: time one layer at a small and a large size."""
        cfg = model.cfg
        cache = KVCache(cfg, max(2, max_batch), model.xp)
        ctx = max(2, cfg.max_context // 2)
        cache.filled[:, :] = ctx  # time a step at context ctx (the keys' values don't matter)

        def one_layer(rows: int) -> float:
            slots = np.arange(rows) % max(2, max_batch)
            positions = np.full(rows, ctx - 1)
            h = model.embed(np.ones(rows, dtype=np.int64))
            samples = []
            for _ in range(9):
                sync()
                t0 = time.perf_counter_ns()
                model.run_layers(h, 0, 1, cache, slots, positions)
                sync()
                samples.append(time.perf_counter_ns() - t0)
            return float(sorted(samples)[4])

        small, large = one_layer(1), one_layer(max(2, max_batch))
        f_small = model.flops(1, ctx, 1)
        f_large = model.flops(max(2, max_batch), ctx, 1)
        slope = max((large - small) / max(f_large - f_small, 1.0), 1e-6)
        return cls(model, max(0.0, small - slope * f_small), slope)


class DecoderEngine:
    """Serves generation requests with a :class:`TransformerDecoder`, slice by slice."""

    def __init__(
        self,
        model: TransformerDecoder,
        cost: CostModel,
        *,
        now: Callable[[], int],
        fits: Callable[[Slice], bool] | None = None,
        max_batch: int = 8,
        chunk_sizes: Sequence[int] = (16, 32, 64, 128),
        temperature: float = 0.0,
        seed: int = 0,
        tenant: str = "default",
        load: Iterator[tuple[Sequence[int], int]] | None = None,
        on_token: Callable[[Request, int, int], None] | None = None,
    ) -> None:
        """``on_token(request, index, token)``, if given, is called as soon as a token's
        value is known (by the work of the slice that computes it, in execution order):
        a server streams tokens from it. It runs where the slices' work runs (the
        executor) and must be short."""
        if isinstance(max_batch, bool) or not isinstance(max_batch, int):
            raise FieldError("max_batch", f"must be an integer, got {max_batch!r}")
        if not 1 <= max_batch <= 4096:
            raise FieldError("max_batch", f"must be in [1, 4096], got {max_batch!r}")
        if not chunk_sizes or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in chunk_sizes
        ):
            raise FieldError("chunk_sizes", f"must be positive integers, got {chunk_sizes!r}")
        if not temperature >= 0:
            raise FieldError("temperature", f"must be >= 0, got {temperature!r}")
        self.model = model
        self.cost = cost
        self.cfg = model.cfg
        self.cache = KVCache(model.cfg, max_batch, model.xp)
        self.now = now
        self.fits = fits
        self.max_batch = max_batch
        self.chunk_sizes = sorted(set(chunk_sizes), reverse=True)
        self.temperature = temperature
        self.rng = np.random.default_rng(seed)
        self.tenant = tenant
        self.load = load
        self.on_token = on_token
        self.waiting: deque[Request] = deque()
        self.active: list[Request] = []
        #: the last COMPLETED_KEPT requests that finished (or were cancelled), oldest first
        self.completed: deque[Request] = deque(maxlen=COMPLETED_KEPT)
        #: how many finished (or were cancelled) in all
        self.completed_total = 0
        #: the last load items refused at submit, with the reason
        self.rejected: deque[str] = deque(maxlen=COMPLETED_KEPT)
        self._closed = False
        self._free = list(range(max_batch - 1, -1, -1))
        self._ids = itertools.count(1)
        self._step: _Step | None = None
        self._offered: tuple[Slice, _Step, bool] | None = None
        self._last_kind = DECODE
        self._templates: dict[SliceKey, Slice] = {}

    # -- requests ----------------------------------------------------------------------
    def submit(self, prompt: Sequence[int], max_new_tokens: int) -> Request:
        """Queue a request; it joins the running batch at the next step boundary."""
        if self._closed:
            raise FieldError("engine", "is closed: it accepts no more requests")
        try:
            toks = tuple(int(t) for t in prompt)
        except (TypeError, ValueError):
            raise FieldError("prompt", "must be a sequence of integer token ids") from None
        if not toks:
            raise FieldError("prompt", "must hold at least one token")
        if any(not 0 <= t < self.cfg.vocab_size for t in toks):
            raise FieldError("prompt", f"tokens must be in [0, {self.cfg.vocab_size})")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise FieldError("max_new_tokens", f"must be an integer, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise FieldError("max_new_tokens", f"must be >= 1, got {max_new_tokens}")
        if len(toks) + max_new_tokens > self.cfg.max_context:
            raise FieldError(
                "prompt",
                f"{len(toks)} prompt tokens + {max_new_tokens} new tokens exceed the model's "
                f"context of {self.cfg.max_context} tokens",
            )
        r = Request(next(self._ids), toks, max_new_tokens, self.now(), self.tenant)
        self.waiting.append(r)
        return r

    def cancel(self, r: Request) -> bool:
        """Stop serving ``r``: a waiting request leaves the queue; a running one leaves the
        batch at the next step boundary (tokens of slices already made still get their
        values) and frees its cache slot. Call it where ``next_slice`` is called (the
        arbiter's thread). ``False`` if it had finished (or was cancelled) already."""
        if r.finished:
            return False
        r.cancelled = True
        r.done_ns = self.now()
        if r in self.waiting:
            self.waiting.remove(r)
            self.completed.append(r)
            self.completed_total += 1
        return True

    @property
    def last_offered(self) -> tuple[Slice, tuple[Request, ...]] | None:
        """The slice made last and the requests it serves (one per row, or the one whose
        prompt it prefills), until it is refused: what a server needs to share each
        slice's device time among the requests."""
        if self._offered is None:
            return None
        return self._offered[0], tuple(self._offered[1].requests)

    @property
    def done(self) -> bool:
        """Closed, and nothing left to serve. Until then ``next_slice`` returning
        ``None`` only means "nothing now": requests submitted later are served."""
        return (
            self._closed
            and self._step is None
            and not self.waiting
            and not self.active
            and self.load is None
        )

    def close(self) -> None:
        """Accept no more requests; the job ends once those accepted are served."""
        self._closed = True

    # -- the slice source --------------------------------------------------------------
    def next_slice(self) -> Slice | None:
        step = self._step
        if step is None:
            step = self._step = self._start_step()
            if step is None:
                return None
        return self._make_slice(step)

    def _admit(self) -> None:
        for r in [r for r in self.active if r.finished]:
            self.active.remove(r)
            self._free.append(r.slot)
            self.completed.append(r)
            self.completed_total += 1
        while self._free:
            if not self.waiting and self.load is not None:
                try:
                    prompt, n = next(self.load)
                except StopIteration:
                    self.load = None
                    break
                try:
                    self.submit(prompt, n)
                except FieldError as e:  # one bad request never stops the others
                    self.rejected.append(str(e))
                    continue
            if not self.waiting:
                break
            r = self.waiting.popleft()
            r.slot = self._free.pop()  # reset by the work of its first prefill slice
            self.active.append(r)

    def _start_step(self) -> _Step | None:
        self._admit()
        decoding = [r for r in self.active if r.prefilled == len(r.prompt) and not r.finished]
        prefilling = [r for r in self.active if r.prefilled < len(r.prompt) and not r.cancelled]
        # Alternate: a long prompt never stalls the requests already generating.
        if prefilling and (not decoding or self._last_kind == DECODE):
            step = self._prefill_step(prefilling[0])
        elif decoding:
            rows = self._decode_rows(decoding)
            positions = np.array([len(r.prompt) + len(r.generated) - 1 for r in rows])
            step = _Step(DECODE, rows, positions, np.array([r.slot for r in rows]))
        else:
            return None
        self._last_kind = step.kind
        return step

    def _decode_rows(self, decoding: list[Request]) -> list[Request]:
        """The whole batch if its heaviest one-layer slice (the one ending with the output
        head) fits, else the largest power-of-two sub-batch that does; the requests left
        out go first next time. A step, once started, must be able to finish."""
        n = len(decoding)

        def ctx(k: int) -> int:  # the context of the first k rows, as the slice keys it
            return pow2(max(len(r.prompt) + len(r.generated) for r in decoding[:k]))

        while n > 1 and not self._fits(DECODE, n, ctx(n), 1, True):
            n = pow2(n) // 2 if pow2(n) != n else n // 2
        rows = decoding[:n]
        if n < len(decoding):  # rotate: the others lead the next decode step
            for r in rows:
                self.active.remove(r)
                self.active.append(r)
        return rows

    def _prefill_step(self, r: Request) -> _Step:
        left = len(r.prompt) - r.prefilled
        smallest = min(self.chunk_sizes)
        halves = [smallest >> k for k in range(1, smallest.bit_length())]
        whole = [left] if left <= self.chunk_sizes[0] else []
        sizes = sorted({*whole, *(c for c in [*self.chunk_sizes, *halves] if c <= left)})[::-1]
        chunk = sizes[-1]
        for c in sizes:  # the largest chunk whose one-layer slice fits
            if self._fits(PREFILL, c, pow2(r.prefilled + c), 1, True):
                chunk = c
                break
        positions = np.arange(r.prefilled, r.prefilled + chunk)
        return _Step(PREFILL, [r], positions, np.full(chunk, r.slot))

    def _template(self, kind: str, rows: int, ctx: int, layers: int, head: bool) -> Slice:
        shape = (("ctx", ctx), ("head", int(head)), ("layers", layers), ("rows", rows))
        key = (kind, shape)
        s = self._templates.get(key)
        if s is None:
            bound = self.cost.bound_ns(rows, ctx, layers, head)
            s = self._templates[key] = Slice(SliceKind.AI, kind, bound, shape)
        return s

    def _fits(self, kind: str, rows: int, ctx: int, layers: int, head: bool) -> bool:
        if self.fits is None:
            return True
        return self.fits(self._template(kind, pow2(rows), ctx, layers, head))

    def _make_slice(self, step: _Step) -> Slice:
        n_layers = self.cfg.n_layers
        rows = len(step.positions)
        ctx = pow2(int(step.positions.max()) + 1)
        left = n_layers - step.layer
        n = left
        while n > 1 and not self._fits(step.kind, rows, ctx, n, step.layer + n == n_layers):
            n -= 1
        l0, l1 = step.layer, step.layer + n
        last = l1 == n_layers
        tokens = 0
        if last:
            tokens = self._finish_step(step)
            self._step = None
        else:
            step.layer = l1
        tpl = self._template(step.kind, pow2(rows), ctx, n, last)
        s = Slice(SliceKind.AI, tpl.op, tpl.bound_ns, tpl.shape, self._work(step, l0, l1), tokens)
        self._offered = (s, step, last)
        return s

    def refused(self, s: Slice) -> None:
        """The arbiter will not issue ``s``: its kind is now predicted over the largest
        AI slice. Abandon the step and plan a smaller one. Layers the step already ran
        wrote keys and values at positions that the next step writes again (the same
        values), so the cache stays consistent."""
        offered = self._offered
        if offered is None or offered[0] is not s:
            return
        _, step, last = offered
        self._offered = None
        if last:  # undo the bookkeeping done when the last slice was made
            if step.kind == PREFILL:
                r = step.requests[0]
                r.prefilled -= len(step.positions)
                del r.generated[step.gen_index[r.request_id] :]
            else:
                for r in step.requests:
                    del r.generated[step.gen_index[r.request_id] :]
        self._step = None

    def _finish_step(self, step: _Step) -> int:
        """Bookkeeping when the step's last slice is made: tokens counted, requests advanced."""
        if step.kind == PREFILL:
            r = step.requests[0]
            r.prefilled += len(step.positions)
            if r.prefilled < len(r.prompt):
                return 0
            r.generated.append(0)  # the first token; its value is set by the work
            return 1
        for r in step.requests:
            r.generated.append(0)
        return len(step.requests)

    def _work(self, step: _Step, l0: int, l1: int) -> Callable[[], object]:
        model = self.model

        def work() -> object:
            if l0 == 0:
                if step.kind == PREFILL:
                    r = step.requests[0]
                    if int(step.positions[0]) == 0:
                        # In execution order: the slot's previous request may still have
                        # slices queued ahead of this one (the fifo baseline queues several).
                        self.cache.reset(r.slot)
                    toks = r.prompt[int(step.positions[0]) : int(step.positions[-1]) + 1]
                else:  # the last token each request has, fed at its next position
                    toks = tuple(
                        r.generated[step.gen_index[r.request_id] - 1] for r in step.requests
                    )
                step.h = model.embed(np.asarray(toks, dtype=np.int64))
            step.h = model.run_layers(step.h, l0, l1, self.cache, step.slots, step.positions)
            if l1 == model.cfg.n_layers:
                self._sample(step)
            return step.h

        return work

    def _sample(self, step: _Step) -> None:
        if step.kind == PREFILL:
            r = step.requests[0]
            if int(step.positions[-1]) + 1 < len(r.prompt):
                return  # not the prompt's last chunk: no token yet
            logits = self.model.logits(step.h[-1:])
        else:
            logits = self.model.logits(step.h)
        toks = self.model.sample(logits, self.temperature, self.rng)
        t = self.now()
        on_token = self.on_token
        for r, tok in zip(step.requests, toks, strict=True):
            i = step.gen_index[r.request_id]
            r.generated[i] = int(tok)
            if r.first_token_ns < 0:
                r.first_token_ns = t
            if r.finished and not r.cancelled:
                r.done_ns = t
            if on_token is not None:
                on_token(r, i, int(tok))

    # -- figures -----------------------------------------------------------------------
    def ttft_ns(self) -> list[int]:
        """Time to first token of the requests that got one (on this engine's clock): the
        active ones and the last ``COMPLETED_KEPT`` completed."""
        return [
            r.first_token_ns - r.submitted_ns
            for r in itertools.chain(self.completed, self.active)
            if r.first_token_ns >= 0
        ]


class _Step:
    """One prefill chunk or one decode step, run a range of layers at a time."""

    def __init__(
        self, kind: str, requests: list[Request], positions: np.ndarray, slots: np.ndarray
    ) -> None:
        self.kind = kind
        self.requests = requests
        self.positions = positions
        self.slots = slots
        self.layer = 0
        self.h: Any = None
        # Where each request's token of this step goes in its generated list.
        self.gen_index = {r.request_id: len(r.generated) for r in requests}

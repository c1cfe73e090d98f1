"""Bring your own model: run another framework's work as AI slices under the arbiter.

The arbiter only needs each piece of AI work as a bounded, non-preemptible slice: a
callable that issues the work, the shape features the estimator learns its duration
by, and a declared worst case for before it has learned. :func:`user_job` wraps such
steps into an :class:`~airan.core.slices.AiJob`.

On a GPU the executor calls each step with the AI stream as CuPy's current stream. A
framework with streams of its own enqueues on the same stream through its pointer,
``CupyExecutor.ai_stream_ptr``; for PyTorch, :func:`torch_ai_stream` gives
``torch.cuda.ExternalStream(ptr)`` to use as ``with torch.cuda.stream(s): ...`` inside
the step. A step must not synchronise the device, or it blocks the radio's stream too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from airan.core.errors import FieldError
from airan.core.slices import AiJob, Slice, SliceKind, Slo


@dataclass(frozen=True, slots=True)
class UserStep:
    """One piece of your model's work: ``fn`` issues it on the current stream.

    ``shape``: the features its duration depends on (batch, tokens, layers...).
    ``bound_ns``: its declared worst case, used until the estimator has learned it;
    keep it honest: the arbiter issues the step only if it fits the largest AI slice.
    ``tokens``: tokens it completes (for metering).
    """

    fn: Callable[[], object]
    shape: Mapping[str, int]
    bound_ns: int
    tokens: int = 0
    op: str = "ai.user"


def _slices(steps: Iterable[UserStep]) -> Iterator[Slice]:
    for i, st in enumerate(steps):
        if not isinstance(st, UserStep):
            raise FieldError(f"steps[{i}]", f"must be a UserStep, got {st!r}")
        if not callable(st.fn):
            raise FieldError(f"steps[{i}].fn", "must be callable")
        yield Slice.make(SliceKind.AI, st.op, st.bound_ns, st.shape, st.fn, st.tokens)


def user_job(
    steps: Iterable[UserStep],
    tenant: str = "default",
    priority: int = 0,
    slo: Slo | None = None,
) -> AiJob:
    """An AI job made of your own steps, in order. A bad step ends the job with its
    ``error`` set (reported in ``ai.failed_jobs``); the radio and other jobs go on."""
    return AiJob(_slices(steps), tenant=tenant, priority=priority, slo=slo)


def torch_ai_stream(executor: Any) -> Any:
    """PyTorch's view of the executor's AI stream (needs a CuPy executor and torch)."""
    ptr = getattr(executor, "ai_stream_ptr", None)
    if ptr is None:
        raise FieldError("executor", "has no AI stream: use CupyExecutor (a GPU) for PyTorch")
    try:
        import torch
    except ModuleNotFoundError:
        raise FieldError("torch", "PyTorch is not installed") from None
    return torch.cuda.ExternalStream(ptr)

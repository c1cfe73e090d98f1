"""Errors raised for bad input: each names the offending field and the reason."""

from __future__ import annotations


class AiranError(Exception):
    """Base class of the errors airan raises on purpose."""


class FieldError(AiranError, ValueError):
    """A value given to airan is not acceptable.

    ``field`` is the dotted name of the offending input (``"RanTask.deadline_ns"``,
    ``"policy.guard_us"``, ``"--seconds"``) and ``reason`` says what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

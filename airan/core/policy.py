"""The arbiter's knobs, validated by pydantic; changed live through E2 control or O1."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airan.core.errors import FieldError

PolicyName = Literal["airan", "exclusive", "fifo", "tdm"]


class CheckedModel(BaseModel):
    """A pydantic model whose :meth:`parse` raises :class:`FieldError` naming the field."""

    _where: ClassVar[str] = "config"

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str | None = None) -> Self:
        """Validate ``data`` strictly, as the JSON it is or could be; on error raise
        :class:`FieldError` naming every bad field, prefixed with ``where`` (the
        config's name in messages).

        Strict: a string is not a number or a boolean (``"30"`` for a float, ``"yes"``
        for a flag are refused, not coerced); an integer is a valid float; a JSON array
        is a valid tuple. What arrives over E2, O1 or a config file is JSON, so every
        entry point checks the same way."""
        if not isinstance(data, Mapping):
            raise FieldError(where or cls._where, f"must be an object, got {type(data).__name__}")
        try:
            text = json.dumps(dict(data), default=_jsonable, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise FieldError(where or cls._where, f"is not JSON data: {exc}") from None
        try:
            return cls.model_validate_json(text, strict=True)
        except ValidationError as exc:
            raise validation_to_field_error(exc, where or cls._where) from None


def _jsonable(obj: object) -> Any:
    """JSON for the models and sets that configs may already hold."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON data")


TENANT_NAME = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"


class TenantPolicy(BaseModel):
    """How one AI tenant shares the device time the radio leaves.

    ``weight``: share among tenants that all want more (weighted fair queueing on
    device time). ``quota_us_per_s``: the most device time the tenant may use, in µs
    per second (a token bucket holding ``share_window_us`` worth); ``None``: no
    quota. ``paused``: issue none of its slices (what a RIC's control can set).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(1.0, gt=0.0, le=1e6)
    quota_us_per_s: float | None = Field(None, gt=0.0, le=1e6)
    paused: bool = False


POLICY_NAMES: tuple[PolicyName, ...] = ("airan", "exclusive", "fifo", "tdm")


class Policy(CheckedModel):
    """How the device is shared.

    ``name`` picks the strategy: ``airan`` (the arbiter), or one of the baselines
    ``exclusive`` (radio alone), ``fifo`` (no arbitration) and ``tdm`` (a static time
    split). The remaining fields are the knobs; each strategy reads the ones it needs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "policy"

    name: PolicyName = "airan"
    guard_us: float = Field(
        20.0, ge=0.0, le=10_000.0, description="Margin added to every predicted AI slice."
    )
    max_ai_slice_us: float = Field(
        200.0,
        ge=1.0,
        le=100_000.0,
        description="Largest AI slice (prediction plus guard) the arbiter issues: the "
        "blocking term of the radio's schedulability test.",
    )
    ai_share_cap: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Largest share of device time AI may use (1: no cap, 0: no AI). A token "
        "bucket filled at this rate, holding at most ai_share_cap x share_window_us: over "
        "any interval T, AI gets at most ai_share_cap x (T + share_window_us) plus one slice.",
    )
    share_window_us: float = Field(
        10_000.0, ge=100.0, le=10_000_000.0, description="Burst allowance of the AI share cap."
    )
    lookahead_us: float = Field(
        500.0,
        ge=0.0,
        le=1_000_000.0,
        description="Horizon of announced radio work (slot indications arrive ahead) whose "
        "slack an AI slice must leave intact. Predictions are high quantiles, so their "
        "sum over a long horizon is pessimistic: one slot is the default.",
    )
    tdm_period_us: float = Field(500.0, ge=10.0, le=1_000_000.0, description="TDM frame length.")
    tdm_radio_share: float = Field(
        0.7, gt=0.0, lt=1.0, description="Share of each TDM frame reserved for the radio."
    )
    fifo_depth: int = Field(
        4, ge=1, le=1024, description="AI slices a naive FIFO keeps queued on the device."
    )
    overrun_factor: float = Field(
        4.0,
        ge=1.5,
        le=1000.0,
        description="A radio slice longer than this many times its prediction, or an AI "
        "slice longer than this many times its budget, is a fault (radio_overrun, ai_hang): "
        "AI is shed and an alarm raised.",
    )
    shed_hold_us: float = Field(
        20_000.0,
        ge=0.0,
        le=60_000_000.0,
        description="After a fault (radio overrun, AI hang, executor error) no AI slice "
        "starts for this long (airan policy): AI is shed first.",
    )
    tenants: dict[str, TenantPolicy] = Field(
        default_factory=dict,
        description="The AI tenants and their weights, quotas and pause flags. Empty: any "
        "tenant name is accepted, each with weight 1 and no quota.",
    )

    @model_validator(mode="after")
    def _guard_below_slice(self) -> Policy:
        for name, tp in self.tenants.items():
            if not re.fullmatch(TENANT_NAME, name):
                raise ValueError(
                    f"tenant name {name!r} must be 1 to 64 letters, digits or ._:- "
                    "(starting with a letter or digit)"
                )
            if tp.quota_us_per_s is not None and (
                tp.quota_us_per_s / 1e6 * self.share_window_us < self.max_ai_slice_us
            ):
                raise ValueError(
                    f"tenant {name!r}: quota_us_per_s x share_window_us "
                    f"({tp.quota_us_per_s / 1e6 * self.share_window_us:g} us) must hold at least "
                    f"one max_ai_slice_us ({self.max_ai_slice_us:g} us), or its largest slices "
                    "could never run: raise the quota or lengthen share_window_us"
                )
        if self.guard_us >= self.max_ai_slice_us:
            raise ValueError(
                f"guard_us ({self.guard_us}) must be smaller than max_ai_slice_us "
                f"({self.max_ai_slice_us}), or no AI slice could ever be admitted"
            )
        if 0.0 < self.ai_share_cap < 1.0 and (
            self.ai_share_cap * self.share_window_us < self.max_ai_slice_us
        ):
            raise ValueError(
                f"ai_share_cap x share_window_us ({self.ai_share_cap * self.share_window_us:g} "
                f"us) must hold at least one max_ai_slice_us ({self.max_ai_slice_us:g} us), "
                "or the largest AI slices could never be admitted: lengthen share_window_us"
            )
        return self

    def ns(self, field_name: str) -> int:
        """A ``*_us`` knob in integer nanoseconds."""
        return round(float(getattr(self, field_name)) * 1000.0)


def validation_to_field_error(exc: ValidationError, where: str) -> FieldError:
    """Turn pydantic's error into one :class:`FieldError` that names every bad field."""
    items = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        name = f"{where}.{loc}" if loc else where
        got = f" (got {err['input']!r})" if loc else ""
        items.append((name, f"{err['msg']}{got}"))
    if len(items) == 1:
        return FieldError(*items[0])
    return FieldError(where, "; ".join(f"{n}: {r}" for n, r in items))

"""Pure scheduling logic: no I/O, no CuPy, no gRPC, no ZMQ."""

from airan.core.clock import Clock, VirtualClock, WallClock
from airan.core.errors import AiranError, FieldError
from airan.core.estimator import Estimator
from airan.core.policy import Policy, PolicyName
from airan.core.report import LatencyStats, RunReport
from airan.core.slices import AiJob, RanTask, Slice, SliceKind, Slo

__all__ = [
    "AiJob",
    "AiranError",
    "Clock",
    "Estimator",
    "FieldError",
    "LatencyStats",
    "Policy",
    "PolicyName",
    "RanTask",
    "RunReport",
    "Slice",
    "SliceKind",
    "Slo",
    "VirtualClock",
    "WallClock",
]

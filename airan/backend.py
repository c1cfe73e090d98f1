"""Array-module selection (CuPy or NumPy) and the CUDA device probe.

``import cupy`` can succeed on a machine without a GPU, so the probe goes further: it
imports CuPy, asks :func:`cupy.is_available`, and runs a tiny kernel. The result is
computed once per process and cached. Nothing here imports CuPy at module import time.

>>> b = select_backend("numpy")
>>> b.name, b.xp.__name__
('numpy', 'numpy')
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from airan.core.errors import FieldError

if TYPE_CHECKING:
    from airan.sched.executors import Executor

BackendName = Literal["numpy", "cupy"]
Preference = Literal["auto", "numpy", "cupy"]

_PREFERENCES = ("auto", "numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    """An array module and the device it runs on.

    ``xp`` is the module itself (``numpy`` or ``cupy``), for code written against the
    common array API (``xp.fft.fft``, ``xp.matmul``...); ``device`` names the device for
    reports (``"NVIDIA H100 80GB HBM3"``, ``"CPU (x86_64, 16 cores)"``).
    """

    name: BackendName
    xp: ModuleType
    device: str


def array_module(a: object) -> ModuleType:
    """The array module that owns ``a``: ``cupy`` for a CuPy array, else ``numpy``.

    Kernels written once for both backends call this on their input instead of
    importing CuPy (which is imported here only when ``a`` already is a CuPy array).
    """
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy  # type: ignore[no-any-return]
    import numpy

    return numpy


def cpu_device() -> str:
    """The CPU, as named in reports."""
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


@functools.cache
def _probe() -> tuple[str | None, str]:
    """``(gpu_name, "")`` when CuPy can run a kernel on device 0, else ``(None, reason)``."""
    try:
        import cupy
    except ModuleNotFoundError as e:
        if e.name == "cupy":
            return None, "cupy is not installed"
        return None, f"cupy could not be imported: {e}"
    except Exception as e:  # ImportError for missing CUDA libraries, and worse
        return None, f"cupy could not be imported: {type(e).__name__}: {e}"
    cp: Any = cupy
    try:
        if not cp.is_available():
            return None, "cupy.is_available() is False (no CUDA device or driver is visible)"
    except Exception as e:
        return None, f"cupy.is_available() failed: {type(e).__name__}: {e}"
    try:
        with cp.cuda.Device(0):
            x = cp.arange(8, dtype=cp.float32)
            total = float((x * 2.0).sum())  # an elementwise and a reduction kernel
            if total != 56.0:
                return None, f"a test kernel gave a wrong result ({total} instead of 56.0)"
            name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    except Exception as e:  # CUDARuntimeError, NVRTC/compile errors, OSError for libs...
        return None, f"a test kernel failed on device 0: {type(e).__name__}: {e}"
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return str(name).strip() or "CUDA device 0", ""


def probe_cupy() -> str | None:
    """The name of CUDA device 0 if CuPy can run a kernel on it, else ``None``.

    Never raises: a missing CuPy, a missing driver or any CUDA error gives ``None``, and
    :func:`cupy_unavailable_reason` then says why. Computed once per process.
    """
    return _probe()[0]


def cupy_unavailable_reason() -> str | None:
    """Why :func:`probe_cupy` found no usable device; ``None`` when it found one."""
    name, reason = _probe()
    return None if name is not None else reason


def select_backend(prefer: Preference = "auto") -> Backend:
    """Pick the array module: ``"auto"`` takes CuPy when a GPU is usable, else NumPy.

    ``prefer="cupy"`` without a usable GPU raises :class:`FieldError` on ``--backend``
    with the probe's reason; ``"numpy"`` always gives NumPy.
    """
    if prefer not in _PREFERENCES:
        raise FieldError("--backend", f"must be one of auto, numpy, cupy; got {prefer!r}")
    if prefer != "numpy":
        gpu = probe_cupy()
        if gpu is not None:
            import cupy

            return Backend("cupy", cupy, gpu)
        if prefer == "cupy":
            reason = cupy_unavailable_reason() or "the CuPy probe found no device"
            raise FieldError(
                "--backend",
                f"cupy was asked for but no usable CUDA device was found: {reason}",
            )
    import numpy

    return Backend("numpy", numpy, cpu_device())


def make_executor(backend: Backend) -> Executor:
    """The executor for ``backend``: :class:`NumpyExecutor` or ``CupyExecutor``."""
    if backend.name == "cupy":
        from airan.sched.cupy_executor import CupyExecutor

        return CupyExecutor()
    if backend.name == "numpy":
        from airan.sched.executors import NumpyExecutor

        return NumpyExecutor(backend.device)
    raise FieldError("backend.name", f"must be 'numpy' or 'cupy', got {backend.name!r}")


def device_sync(backend: Backend) -> Callable[[], None]:
    """A function that waits for the device: ``cudaDeviceSynchronize`` on CuPy, nothing
    on NumPy (a NumPy call has finished when it returns)."""
    if backend.name == "cupy":
        import cupy

        def sync() -> None:
            cupy.cuda.runtime.deviceSynchronize()

        return sync

    def no_sync() -> None:
        return None

    return no_sync

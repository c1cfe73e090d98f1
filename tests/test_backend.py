"""Backend selection and the CUDA probe: runs everywhere, with or without a GPU."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

import airan.backend as backend_mod
from airan.backend import (
    Backend,
    cupy_unavailable_reason,
    make_executor,
    probe_cupy,
    select_backend,
)
from airan.core.errors import FieldError
from airan.sched.executors import NumpyExecutor

GPU = probe_cupy()


def test_numpy_is_always_numpy() -> None:
    b = select_backend("numpy")
    assert b.name == "numpy"
    assert b.xp is np
    assert b.device.startswith("CPU (")
    assert "cores" in b.device


def test_auto_falls_back_to_numpy_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "probe_cupy", lambda: None)
    b = select_backend("auto")
    assert b.name == "numpy"
    assert b.xp is np


def test_auto_takes_cupy_when_the_probe_reports_a_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the selection logic: a stand-in module is what ``import cupy`` finds.
    fake = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend_mod, "probe_cupy", lambda: "Fake GPU 9000")
    b = select_backend("auto")
    assert b == Backend("cupy", fake, "Fake GPU 9000")
    assert select_backend("numpy").name == "numpy"  # an explicit numpy still wins


@pytest.mark.skipif(GPU is not None, reason="a usable CUDA device is present")
def test_cupy_without_a_device_names_the_flag_and_the_reason() -> None:
    reason = cupy_unavailable_reason()
    assert reason  # the probe kept why it failed
    with pytest.raises(FieldError) as ei:
        select_backend("cupy")
    err = ei.value
    assert err.field == "--backend"
    assert "cupy was asked for but no usable CUDA device was found" in str(err)
    assert reason in str(err)


def test_cupy_refused_with_a_stubbed_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "probe_cupy", lambda: None)
    monkeypatch.setattr(backend_mod, "cupy_unavailable_reason", lambda: "cupy is not installed")
    with pytest.raises(FieldError, match=r"--backend: .*no usable CUDA device.*not installed"):
        select_backend("cupy")


def test_bad_preference_is_a_field_error() -> None:
    with pytest.raises(FieldError, match="--backend"):
        select_backend("tpu")  # type: ignore[arg-type]


def test_probe_never_raises_and_is_cached() -> None:
    first = probe_cupy()
    assert first is None or (isinstance(first, str) and first)
    assert probe_cupy() == first
    assert (cupy_unavailable_reason() is None) == (first is not None)


def test_make_executor_numpy() -> None:
    b = select_backend("numpy")
    ex = make_executor(b)
    assert isinstance(ex, NumpyExecutor)
    assert ex.backend == "numpy"
    assert ex.device == b.device


def test_cupy_executor_module_imports_without_cupy() -> None:
    mod = importlib.import_module("airan.sched.cupy_executor")
    assert mod.CupyExecutor.backend == "cupy"
    assert callable(mod.capture)


@pytest.mark.skipif(GPU is not None, reason="a usable CUDA device is present")
def test_cupy_executor_without_a_device_is_a_clear_field_error() -> None:
    from airan.sched.cupy_executor import CupyExecutor

    with pytest.raises(FieldError) as ei:
        CupyExecutor()
    assert ei.value.field == "backend"
    msg = str(ei.value).lower()
    assert "cupy" in msg
    assert "not installed" in msg or "no usable cuda device" in msg or "imported" in msg


def test_cupy_executor_without_cupy_says_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from airan.sched.cupy_executor import CupyExecutor

    monkeypatch.setitem(sys.modules, "cupy", None)  # ``import cupy`` raises ImportError
    with pytest.raises(FieldError, match=r"backend: .*CuPy"):
        CupyExecutor()

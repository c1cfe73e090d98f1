"""The committed gRPC/protobuf stubs are what the pinned toolchain makes of proto/."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib.metadata import requires
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    gen = _gen()
    written = gen.generate(tmp_path)
    assert written, "no stubs generated"
    stale = [
        str(rel)
        for rel in written
        if not (ROOT / rel).exists() or (ROOT / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, f"stale stubs (run `python scripts/gen_protos.py`): {stale}"
    committed = {p.relative_to(ROOT) for p in (ROOT / "airan").glob("*/v1/*_pb2*.py*")}
    orphans = committed - set(written)
    assert not orphans, f"stubs without a .proto (run `python scripts/gen_protos.py`): {orphans}"


def test_pins_agree_with_the_runtime_floors() -> None:
    gen = _gen()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_extra = project["optional-dependencies"]["test"]
    assert f"grpcio-tools=={gen.GRPCIO_TOOLS}" in test_extra
    assert f"mypy-protobuf=={gen.MYPY_PROTOBUF}" in test_extra
    # grpcio-tools's own requirements are the floors the generated code needs
    tools_reqs = " ".join(requires("grpcio-tools") or [])
    pb_floor = re.search(r"protobuf[^;]*?>=([\d.]+)", tools_reqs)
    grpc_floor = re.search(r"grpcio>=([\d.]+)", tools_reqs)
    assert pb_floor and grpc_floor
    deps = " ".join(project["dependencies"])
    assert f"protobuf>={pb_floor.group(1)}" in deps
    assert f"grpcio>={grpc_floor.group(1)}" in deps

"""cffi (API mode) build script for ``airan._edfq``, the C EDF deadline queue.

Used by setuptools through ``setup(cffi_modules=["native/edfq_build.py:ffibuilder"])``.
setuptools runs that from the project root, and the Extension it creates must
name its sources with *relative* paths, so paths are derived from this file's
location and expressed relative to the current working directory (normally
the project root, giving ``native/edfq.c``).

Run directly (``python native/edfq_build.py``) to build the extension in
place for development: it compiles in a temporary directory and installs the
module as ``airan/_edfq.abi3.so`` (the name a pip build gives it), leaving no
other build products.
Extra compiler/linker flags (e.g. sanitizers) can be passed through the usual
``CFLAGS`` / ``LDFLAGS`` environment variables.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI  # type: ignore[import-untyped,unused-ignore]

NATIVE_DIR = Path(__file__).resolve().parent
ROOT_DIR = NATIVE_DIR.parent

CDEF = """
enum {
    EDFQ_OK = 0,
    EDFQ_FULL = 1,
    EDFQ_EMPTY = 2,
    EDFQ_DUPLICATE_ID = 3,
    EDFQ_NOT_FOUND = 4,
    EDFQ_BAD_COST = 5
};
#define EDFQ_SLACK_INF ...

typedef struct edfq edfq_t;

edfq_t *edfq_new(uint32_t capacity);
void edfq_free(edfq_t *q);
int edfq_push(edfq_t *q, int64_t deadline_ns, uint64_t id, int64_t cost_ns);
int edfq_pop(edfq_t *q, int64_t *deadline_ns, uint64_t *id, int64_t *cost_ns);
int edfq_peek(const edfq_t *q, int64_t *deadline_ns, uint64_t *id,
              int64_t *cost_ns);
int edfq_remove(edfq_t *q, uint64_t id, int64_t *deadline_ns,
                int64_t *cost_ns);
int edfq_update_cost(edfq_t *q, uint64_t id, int64_t cost_ns);
int edfq_contains(const edfq_t *q, uint64_t id);
int edfq_get(const edfq_t *q, uint32_t index, int64_t *deadline_ns,
             uint64_t *id, int64_t *cost_ns);
uint32_t edfq_len(const edfq_t *q);
uint32_t edfq_capacity(const edfq_t *q);
void edfq_clear(edfq_t *q);
int64_t edfq_slack(const edfq_t *q, int64_t now_ns);
const char *edfq_strerror(int code);
"""


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (POSIX separators), absolute if impossible."""
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # e.g. different drives on Windows
        return path.as_posix()


def make_ffibuilder(native_dir: str) -> FFI:
    """An FFI builder for ``airan._edfq`` whose C sources live in ``native_dir``."""
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "airan._edfq",
        '#include "edfq.h"',
        sources=[f"{native_dir}/edfq.c"],
        depends=[f"{native_dir}/edfq.h"],
        include_dirs=[native_dir],
        extra_compile_args=["-O2", "-std=c11"],
    )
    return builder


# Referenced by setup.py; sources relative to the working directory, which
# setuptools sets to the project root ("native/edfq.c").
ffibuilder = make_ffibuilder(_relative(NATIVE_DIR, Path.cwd()))


def _build_in_place() -> Path:
    """Compile in a temporary directory and install the module into ``airan/``.

    The module is named ``_edfq.abi3.so`` where the interpreter accepts that
    suffix (cffi's generated code uses the limited API, as in a pip build), so
    it replaces the file ``pip install -e .`` writes instead of shadowing it;
    any other ``_edfq`` extension file in ``airan/`` is removed for the same
    reason (``.cpython-3XX-*.so`` would take precedence over ``.abi3.so``).
    """
    import importlib.machinery
    import shutil
    import sys
    import tempfile

    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    package_dir = ROOT_DIR / "airan"
    with tempfile.TemporaryDirectory(prefix="edfq-build-") as tmp:
        # ffi.compile() changes into tmpdir, so use absolute source paths here.
        builder = make_ffibuilder(NATIVE_DIR.as_posix())
        built = Path(builder.compile(tmpdir=tmp, verbose=True))
        abi3 = ".abi3.so" in suffixes and not hasattr(sys, "gettotalrefcount")
        dest = package_dir / ("_edfq.abi3.so" if abi3 else built.name)
        for suffix in suffixes:
            stale = package_dir / f"_edfq{suffix}"
            if stale != dest and stale.exists():
                stale.unlink()
        shutil.copy2(built, dest)
    return dest


if __name__ == "__main__":
    print(f"installed {_build_in_place()}")

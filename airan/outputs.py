"""Output files of runs (reports, traces, figures, profiles): checked before a run starts,
written atomically when it ends.

A reader (a dashboard, a CI step, a tail of the report) sees the old file or the new
one, never a part: the text goes to a temp file beside the target (same file system),
is fsynced, renamed over the target with ``os.replace`` (POSIX ``rename(2)`` is atomic)
and the rename itself is made durable by an fsync of the folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from airan.core.errors import FieldError


def check_output_path(path: Path | None, flag: str, *, make_folders: bool = False) -> None:
    """Refuse an output path that cannot be written, before a run rather than after it:
    a folder, a missing parent folder (unless ``make_folders``: then the nearest existing
    one must be writable, and :func:`atomic_writer` creates the rest), an unwritable
    folder or file. ``flag`` names the option or config field in the error."""
    if path is None:
        return
    if path.is_dir():
        raise FieldError(flag, f"{path} is a directory; give a file path")
    folder = path.parent if str(path.parent) else Path(".")
    if make_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.is_dir():
        raise FieldError(flag, f"the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FieldError(flag, f"cannot write {path}: {folder} is not a writable folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise FieldError(flag, f"{path} is not writable")


@contextlib.contextmanager
def atomic_writer(path: Path | str) -> Iterator[TextIO]:
    """A text file to write ``path``'s new content into; it replaces ``path`` when the
    block ends without an exception (and is removed if one is raised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where folders have fds
        dfd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    with atomic_writer(path) as f:
        f.write(text)

"""Atomic file writing: a reader never sees a partial file, a failure leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(directory: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``files`` (name → bytes) into ``directory``, all or nothing.

    Every file is first written and flushed under a temporary name in the same
    directory, then renamed into place, so either all files appear complete or,
    when writing fails, none of the new files is left behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            final = directory / name
            if final.parent != directory:  # a name must not climb out of the directory
                raise ValueError(f"file name {name!r} is not a plain name")
            fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            staged.append((Path(tmp_name), final))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
        return [final for _, final in staged]
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)

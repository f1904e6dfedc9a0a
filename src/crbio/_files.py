"""Input files read within a size limit; output files written atomically.

A reader never sees a partial output file, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from crbio.errors import InputError

__all__ = ["read_input", "write_atomically"]


def read_input(path: str | Path, *, max_bytes: int) -> bytes:
    """The bytes of an input file, refusing one above ``max_bytes`` before reading it.

    Raises:
        InputError: the file is too large (``input.too-large``) or cannot be read
            (``input.unreadable``).
    """
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > max_bytes:
            raise InputError(f"file too large ({size} bytes, at most {max_bytes})", code="input.too-large")
        return file.read_bytes()
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror})", code="input.unreadable") from e


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

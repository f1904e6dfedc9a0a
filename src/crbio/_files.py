"""Input files read within a size limit; output files written atomically, inside their folder.

A reader never sees a partial output file, and a failed write leaves nothing behind. An
output's name is one plain file name: it cannot climb out of the output folder, and the
folders created below an output root are never symlinks planted to lead elsewhere.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from crbio.errors import ConfigurationError, InputError

__all__ = ["MAX_NAME_BYTES", "check_file_name", "read_input", "write_atomically"]

MAX_NAME_BYTES = 255
"""The longest file name most file systems take (ext4, XFS, NTFS in UTF-16 units, APFS)."""

_CODE = "config.output"
# Device names Windows reserves whatever the extension: an output folder may be a share a
# Windows system reads, where "CON.n3.xml" cannot exist.
_WINDOWS_DEVICE = re.compile(
    r"(?i)\A(?:CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[0-9¹²³]|LPT[0-9¹²³]) *(?:\..*)?\Z"
)
# The temporary name keeps the end of the final name (its suffix, which the batch's clean-up of
# a killed run looks for) within the length limit: "." + name + "." + 8 random + ".tmp".
_TEMPORARY_NAME_BYTES = MAX_NAME_BYTES - 14


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


def check_file_name(name: str) -> str | None:
    """Why ``name`` cannot be an output file's name, or None when it can.

    A name must be one plain name: not empty, not ``.`` or ``..``, no slash or backslash, NUL or
    other control character, at most :data:`MAX_NAME_BYTES` bytes in the file system's
    encoding, and not a device name Windows reserves (``CON``, ``NUL``, ``COM1``…, with any
    extension). Look-alike characters (a fullwidth solidus, a one-dot leader) are ordinary
    characters to every file system, so they are left alone.
    """
    if name in ("", ".", ".."):
        return "is empty or a dot"
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a path separator or a control character"
    try:
        size = len(os.fsencode(name))
    except UnicodeError:
        return "cannot be encoded as a file name"
    if size > MAX_NAME_BYTES:
        return f"is too long ({size} bytes, at most {MAX_NAME_BYTES})"
    if _WINDOWS_DEVICE.match(name.rstrip(" .")):
        return "is a device name Windows reserves"
    return None


def _output_directory(directory: Path, root: Path | None) -> None:
    """Create ``directory``; below ``root``, one level at a time, refusing a symlink or a file."""
    if root is None:
        directory.mkdir(parents=True, exist_ok=True)
        return
    try:
        parts = directory.relative_to(root).parts
    except ValueError:
        raise ConfigurationError(f"{directory}: not inside the output folder {root}", code=_CODE) from None
    root.mkdir(parents=True, exist_ok=True)
    current = root
    for part in parts:
        if part in ("", ".", ".."):
            raise ConfigurationError(f"{directory}: not inside the output folder {root}", code=_CODE)
        current = current / part
        try:
            current.mkdir()
            continue
        except FileExistsError:
            # Already there, or another worker of the batch made it an instant ago: it must be
            # a real folder, not a symlink.
            mode = os.lstat(current).st_mode
        if not stat.S_ISDIR(mode):
            # A symlink here could lead anywhere: outputs are only written inside the output folder.
            what = "a symlink" if stat.S_ISLNK(mode) else "not a folder"
            raise ConfigurationError(f"{current}: {what} inside the output folder: refused", code=_CODE)


def _temporary_prefix(name: str) -> str:
    encoded = os.fsencode(name)
    if len(encoded) > _TEMPORARY_NAME_BYTES:
        name = os.fsdecode(encoded[-_TEMPORARY_NAME_BYTES:]).lstrip("\ufffd")
    return f".{name}."


def write_atomically(directory: Path, files: Mapping[str, bytes], *, root: Path | None = None) -> list[Path]:
    """Write ``files`` (name → bytes) into ``directory``, all or nothing.

    Every file is first written and flushed under a temporary name in the same
    directory, then renamed into place, so either all files appear complete or,
    when writing fails, none of the new files is left behind (temporary files included).
    A symlink already at a final name is replaced, never followed.

    Args:
        directory: Where the files go; created if missing.
        files: File name → content; each name must pass :func:`check_file_name`.
        root: The output folder ``directory`` must be inside of. The folders between them
            are created one by one and none may be a symlink, so an input's relative path
            mirrored under an output folder cannot be led out of it.

    Raises:
        ConfigurationError: A name is not a plain file name, ``directory`` leaves ``root``
            through a symlink, or the files cannot be written (full disk, read-only or
            missing permission); the message names the path (code ``config.output``).
    """
    for name in files:
        reason = check_file_name(name)
        if reason is not None:
            raise ConfigurationError(f"{directory}: output file name {name!r} {reason}", code=_CODE)
    staged: list[tuple[Path, Path]] = []
    current = directory
    try:
        _output_directory(directory, root)
        for name, data in files.items():
            current = directory / name
            fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(name), suffix=".tmp")
            staged.append((Path(tmp_name), current))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, final in staged:
            current = final
            os.replace(tmp, final)
        return [final for _, final in staged]
    except OSError as e:
        # A full disk, a read-only file system, a missing permission: the path and the reason.
        where = current if not isinstance(e.filename, str) or e.filename.endswith(".tmp") else e.filename
        raise ConfigurationError(
            f"{where}: cannot write ({e.strerror or type(e).__name__})", code=_CODE
        ) from e
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)

"""The SQLite outbox file: born complete, and checked before SQLite is let near it.

SQLite is very good at staying consistent and deliberately quiet about damage it can step over:
it reads a zero-byte file as an empty database, and a write-ahead log whose frame fails its
checksum as ending there — committed transactions after that frame are dropped without a word.
An outbox that silently lost its last transactions, or was silently re-created empty, would
forget deliveries already made (and send them again) or queued (and never send them). So before
opening, :func:`check_outbox_file` refuses, with the path in the message:

* a zero-byte file: a crbio outbox is never empty (see :func:`create_outbox_file`), so an empty
  file is a truncated outbox or someone else's file; starting afresh over it is the user's call;
* a file that is not SQLite, or an SQLite database of another application (its
  ``application_id``), or one shorter than its own header says (truncated), or not a whole number
  of pages;
* a write-ahead log with a damaged frame followed by at least two committed transactions. With
  ``synchronous=FULL`` every commit is flushed before the next one starts, so a power cut can
  only tear the last transaction: damage followed by two commits is damage, not a crash. (Damage
  inside the last two transactions cannot be told from a torn last commit and is left to SQLite,
  which rolls back to the commit before it.)

SQLite's ``PRAGMA quick_check`` then runs on every open (see :class:`~crbio.dispatch.outbox.Outbox`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

from crbio.errors import OutboxError

__all__ = ["APPLICATION_ID", "check_outbox_file", "create_outbox_file"]

APPLICATION_ID = 0x4352424F  # "CRBO", in the header of every outbox crbio creates (schema 3 on)
_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # little- / big-endian checksums


def create_outbox_file(path: Path, build: Callable[[sqlite3.Connection], None]) -> None:
    """Create a complete outbox at ``path`` if there is none, atomically.

    The schema is built in a temporary file beside it, which is then hard-linked to ``path``
    (``os.link`` fails if ``path`` exists): another process starting at the same moment either
    finds no file or a complete outbox, never a file being created — which is what lets
    :func:`check_outbox_file` refuse every empty file. If another process won, its outbox is
    kept. Where hard links are not supported, the file is renamed into place instead.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.new")
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            build(db)
        finally:
            db.close()  # the last connection closing checkpoints the log into the file and removes it
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: that one is the outbox
        except (OSError, NotImplementedError):
            if not path.exists():  # no hard links on this file system: a rename, nearly as good
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def check_outbox_file(path: Path) -> None:
    """Refuse an outbox file that is empty, not SQLite, someone else's, truncated, or with a damaged log.

    Raises:
        OutboxError: naming the path and what is wrong; nothing is written to the file.
    """
    try:
        with path.open("rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise OutboxError(f"{path}: is a directory, not an outbox database") from None
    except OSError as exc:
        raise OutboxError(f"{path}: cannot read the outbox ({exc.strerror})") from None
    wal = Path(f"{path}-wal")
    if size == 0:
        raise OutboxError(
            f"{path}: the outbox file is empty (0 bytes); an outbox crbio created never is, so it was"
            " truncated or is not an outbox: restore it from a backup, or delete it to start a new,"
            " empty outbox (which forgets every delivery made)"
        )
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise OutboxError(f"{path}: not an SQLite database, so not a crbio outbox")
    application = struct.unpack_from(">I", header, 68)[0]
    if application not in (0, APPLICATION_ID):
        raise OutboxError(
            f"{path}: an SQLite database of another application (application_id {application:#x}),"
            " not a crbio outbox"
        )
    page_size = struct.unpack_from(">H", header, 16)[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise OutboxError(f"{path}: the outbox database's header is damaged (page size {page_size})")
    wal_size = wal.stat().st_size if wal.exists() else 0
    # The header's page count is valid when the change counter matches "version valid for".
    pages, counter, valid_for = (struct.unpack_from(">I", header, at)[0] for at in (28, 24, 92))
    if wal_size == 0 and (size % page_size or (pages and counter == valid_for and size < pages * page_size)):
        # Without a log nobody has the file open, so nothing is being checkpointed into it.
        raise OutboxError(
            f"{path}: the outbox database is truncated ({size} bytes, its header says"
            f" {pages * page_size}): restore it from a backup"
        )
    if wal_size > 32:
        _check_wal(path, wal, page_size)


def _check_wal(path: Path, wal: Path, page_size: int) -> None:
    damage = _wal_damage(wal.read_bytes(), page_size)
    if damage is None:
        return
    # A log another process is writing right now may be read half-updated: damage counts only
    # if a second read finds the same bytes.
    again = _wal_damage(wal.read_bytes(), page_size)
    if again != damage:
        return
    frame, commits = damage
    raise OutboxError(
        f"{path}: the outbox's write-ahead log ({wal.name}) is damaged at frame {frame}: {commits}"
        " committed transactions after it would be silently lost; restore the outbox and its log from"
        " a backup (moving the log away accepts losing them)"
    )


def _wal_damage(data: bytes, page_size: int) -> tuple[int, int] | None:
    """Where a log's valid part ends early, and how many commits follow: (frame number, commits) or None.

    The format is SQLite's (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header
    with two salts and a checksum, then frames of a 24-byte header and a page; a frame belongs to
    the log if its salts are the header's and its cumulative checksum is right. SQLite reads frames
    until the first that does not.
    """
    magic, _version, wal_page, _ckpt, salt1, salt2 = struct.unpack_from(">6I", data, 0)
    frame_size = 24 + page_size
    frames = (len(data) - 32) // frame_size
    if magic not in _WAL_MAGIC or wal_page != page_size or _checksum(data[:24], magic) != data[24:32]:
        # SQLite ignores a log whose header is damaged, frames and all.
        commits = sum(1 for n in range(frames) if struct.unpack_from(">I", data, 32 + n * frame_size + 4)[0])
        return (1, commits) if commits >= 2 else None
    s0, s1 = struct.unpack(">II", data[24:32])
    end = frames
    for n in range(frames):
        at = 32 + n * frame_size
        if struct.unpack_from(">II", data, at + 8) != (salt1, salt2):
            end = n
            break
        s0, s1 = _sum(data[at : at + 8], magic, s0, s1)
        s0, s1 = _sum(data[at + 24 : at + frame_size], magic, s0, s1)
        if struct.unpack_from(">II", data, at + 16) != (s0, s1):
            end = n
            break
    commits = 0
    for n in range(end + 1, frames):
        at = 32 + n * frame_size
        page_no, commit, f1, f2 = struct.unpack_from(">4I", data, at)
        if (f1, f2) == (salt1, salt2) and commit:
            commits += 1
    return (end + 1, commits) if commits >= 2 else None


def _checksum(data: bytes, magic: int) -> bytes:
    return struct.pack(">II", *_sum(data, magic, 0, 0))


def _sum(data: bytes, magic: int, s0: int, s1: int) -> tuple[int, int]:
    # SQLite's WAL checksum: a Fibonacci-weighted sum over pairs of 32-bit words, in the byte
    # order the magic number names.
    words = struct.unpack(f"{'>' if magic & 1 else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    it = iter(words)
    for a in it:
        s0 = (s0 + a + s1) & mask
        s1 = (s1 + next(it) + s0) & mask
    return s0, s1

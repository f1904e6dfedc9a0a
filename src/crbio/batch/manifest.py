"""The batch manifest: what each input's outputs were built from, so a re-run skips it.

It is a SQLite database in WAL mode, ``OUTDIR/.crbio-batch-manifest.sqlite``, written by the
batch's parent process only. An entry is recorded after its outputs are on disk (written
atomically and flushed by the worker), so the manifest never names outputs that are not
there; entries are committed in small groups, so a batch killed outright (SIGKILL, power
loss) loses at most the last group, whose inputs the next run simply builds again.

An entry is keyed by the input's path relative to its directory and holds the SHA-256 of
the input's content, the options key (crbio version and the options that change what is
written), the SHA-256 of each output, the document id and creation time the build gave
(so a document can be queued later exactly as it was built), and the outbox it was queued
into, if any. Only completed conversions are recorded: an input that fails has no entry.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from crbio.errors import ConfigurationError, CrbioError

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestEntry"]

MANIFEST_NAME = ".crbio-batch-manifest.sqlite"
_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    relative TEXT PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    options TEXT NOT NULL,
    outputs TEXT NOT NULL,
    document_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    stylesheet TEXT NOT NULL,
    queued_outbox TEXT,
    done_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """What one input's outputs were built from.

    Attributes:
        relative: The input's path relative to its directory (POSIX separators).
        input_sha256: SHA-256 of the input file's content.
        options: The options key the outputs were built with (see ``BatchOptions.key``).
        outputs: Each output's path under OUTDIR (POSIX) → its SHA-256.
        document_id: The N3 document's OID.
        created_at: The document's creation time (ISO 8601), as written in it.
        stylesheet: The stylesheet href the documents point to.
        queued_outbox: The outbox the document was queued into, when it was.
    """

    relative: str
    input_sha256: str
    options: str
    outputs: dict[str, str]
    document_id: str
    created_at: str
    stylesheet: str
    queued_outbox: str | None = None


class Manifest:
    """The manifest of one output directory.

    Args:
        directory: The batch's output directory.
        commit_every: Commit after this many changes…
        commit_seconds: …or when this much time has passed since the last commit.

    Raises:
        CrbioError: the file exists but is not a crbio batch manifest, or cannot be opened
            (code ``batch.manifest``).
    """

    def __init__(self, directory: Path, *, commit_every: int = 200, commit_seconds: float = 1.0) -> None:
        self.path = directory / MANIFEST_NAME
        self._commit_every = commit_every
        self._commit_seconds = commit_seconds
        self._pending = 0
        self._last_commit = time.monotonic()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed entry survives a power loss too, like the outputs it describes
            # (they are fsynced) and like the outbox a --send run queues into.
            self._db.execute("PRAGMA synchronous=FULL")
            self._create()
            # This run's claims on output names (see claim()); on disk, not in memory.
            self._db.execute("PRAGMA temp_store=FILE")
            self._db.execute("CREATE TEMP TABLE claims (stem TEXT PRIMARY KEY, path TEXT NOT NULL)")
            self._db.execute("BEGIN")
        except sqlite3.OperationalError as e:  # a full disk, a read-only folder: not the file's fault
            raise ConfigurationError(f"{self.path}: cannot write ({e})", code="config.output") from None
        except sqlite3.DatabaseError as e:
            raise CrbioError(
                f"{self.path}: not a usable batch manifest ({e}); delete it to build everything again",
                code="batch.manifest",
            ) from None

    def _create(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise sqlite3.DatabaseError("not a crbio batch manifest")
        if not tables:
            self._db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA}"
                f" INSERT OR IGNORE INTO meta VALUES ('schema', '{_SCHEMA_VERSION}'); COMMIT;"
            )
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != _SCHEMA_VERSION:
            raise sqlite3.DatabaseError("unknown manifest schema version")

    def get(self, relative: str) -> ManifestEntry | None:
        """The entry of an input, or None when it has none."""
        row = self._db.execute(
            "SELECT relative, input_sha256, options, outputs, document_id, created_at, stylesheet,"
            " queued_outbox FROM entries WHERE relative = ?",
            (relative,),
        ).fetchone()
        if row is None:
            return None
        return ManifestEntry(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])

    def claim(self, stem: str, path: str) -> str:
        """Claim the output names ``stem`` for the input ``path`` in this run.

        Returns the path of the input holding the claim: ``path`` itself, or the earlier
        input whose outputs have the same names. Kept in a temporary table, so a batch of any
        size holds none of it in memory.
        """
        self._db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?)", (stem, path))
        row = self._db.execute("SELECT path FROM claims WHERE stem = ?", (stem,)).fetchone()
        return str(row[0])

    def record(self, entry: ManifestEntry) -> None:
        """Record (or replace) an input's entry; committed with the next group."""
        self._db.execute(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.relative,
                entry.input_sha256,
                entry.options,
                json.dumps(entry.outputs, sort_keys=True),
                entry.document_id,
                entry.created_at,
                entry.stylesheet,
                entry.queued_outbox,
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )
        self._changed()

    def forget(self, relative: str) -> None:
        """Remove an input's entry (its outputs are gone or stale)."""
        self._db.execute("DELETE FROM entries WHERE relative = ?", (relative,))
        self._changed()

    def mark_queued(self, relative: str, outbox: str) -> None:
        """Note that an input's document was queued into ``outbox``."""
        self._db.execute("UPDATE entries SET queued_outbox = ? WHERE relative = ?", (outbox, relative))
        self._changed()

    def _changed(self) -> None:
        self._pending += 1
        if (
            self._pending >= self._commit_every
            or time.monotonic() - self._last_commit >= self._commit_seconds
        ):
            self.commit()

    def commit(self) -> None:
        """Make every change so far durable now."""
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._pending = 0
        self._last_commit = time.monotonic()

    def count(self) -> int:
        """How many inputs have an entry."""
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        """Commit what is pending and close the database."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        self._db.close()

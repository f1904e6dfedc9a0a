"""Open the outbox a configuration names: SQLite (one machine) or PostgreSQL (workers on several).

``[outbox] backend = "sqlite"`` (the default) keeps the outbox in the ``path`` file;
``backend = "postgresql"`` connects to the database of ``dsn`` / ``dsn_env`` / ``dsn_file``.
Both give an :class:`~crbio.dispatch.outbox.Outbox` (the PostgreSQL one is a subclass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from crbio.dispatch.config import DispatchConfig
from crbio.dispatch.outbox import Outbox

__all__ = ["open_outbox", "outbox_identity"]

_SCHEMES = ("postgresql://", "postgres://")


def open_outbox(
    config_or_location: DispatchConfig | str | Path,
    *,
    lease_seconds: float | None = None,
    clock: Callable[[], float] | None = None,
) -> Outbox:
    """Open the outbox of a configuration, or of a location (a SQLite path or a ``postgresql://`` DSN).

    ``lease_seconds`` defaults to the configuration's (120 s for a bare location). ``clock``
    replaces the time source, for tests; without it the PostgreSQL outbox uses the database
    server's clock.

    Raises:
        ConfigurationError: the PostgreSQL backend is selected and psycopg is not installed.
        OutboxError: the outbox cannot be opened (see each backend).
    """
    if isinstance(config_or_location, DispatchConfig):
        config = config_or_location
        lease = config.lease_seconds if lease_seconds is None else lease_seconds
        if config.outbox_backend == "postgresql":
            assert config.outbox_dsn is not None  # the configuration requires it
            return _postgres(config.outbox_dsn, lease, clock)
        return _sqlite(config.outbox_path, lease, clock)
    lease = 120.0 if lease_seconds is None else lease_seconds
    if isinstance(config_or_location, str) and config_or_location.startswith(_SCHEMES):
        return _postgres(config_or_location, lease, clock)
    return _sqlite(Path(config_or_location), lease, clock)


def outbox_identity(config: DispatchConfig) -> str:
    """A stable name of the outbox a configuration uses (a resolved path, or host/port/db), never a secret."""
    if config.outbox_backend == "postgresql":
        from crbio.dispatch.outbox_pg import dsn_location

        return dsn_location(config.outbox_dsn or "")
    return str(config.outbox_path.resolve())


def _sqlite(path: Path, lease: float, clock: Callable[[], float] | None) -> Outbox:
    return Outbox(path, lease_seconds=lease, clock=clock or time.time)


def _postgres(dsn: str, lease: float, clock: Callable[[], float] | None) -> Outbox:
    # Imported here: the module needs nothing of psycopg to load, but keeps SQLite users free of it.
    from crbio.dispatch.outbox_pg import PostgresOutbox

    return PostgresOutbox(dsn, lease_seconds=lease, clock=clock)

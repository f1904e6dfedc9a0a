"""A throw-away PostgreSQL server on 127.0.0.1, for the outbox tests and the dispatch benchmark.

``start_postgres()`` runs the Debian/upstream server (``initdb``, ``pg_ctl``, ``postgres`` on
PATH or in the usual places) in a temporary directory on a free port, and stops it and removes
the directory on exit. ``initdb`` refuses to run as root, so as root the server runs as the
``nobody`` user through ``runuser``. When it cannot run here (no server, no psycopg, root
without runuser, a start that fails) it raises :class:`PostgresUnavailable` with the reason,
which the test plugin (``tests/dispatch/pg_server.py``) turns into a skip.

Durability is left at PostgreSQL's default (``fsync`` on) unless ``fsync=False``: the tests
turn it off for speed, the benchmark keeps it so that its figure is one a lab would see.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "start_postgres"]

_SEARCH = (
    "/usr/local/bin",
    "/usr/local/pgsql/bin",
    *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True),
)


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be started here; the message says why."""


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in _SEARCH:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A running throw-away cluster; :meth:`database` creates an empty database."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self._names = itertools.count()

    def dsn(self, database: str = "postgres") -> str:
        """The connection string of one database (trust authentication, user ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """Create a fresh, empty database and return its DSN."""
        import psycopg

        name = f"t{next(self._names)}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@contextmanager
def start_postgres(*, fsync: bool = True) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server for the duration of the ``with`` block.

    Raises:
        PostgresUnavailable: psycopg or the server programs are missing, or the server did
            not start (the reason includes the end of its log).
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable('needs psycopg 3 (pip install "crbio[postgresql]")') from None
    tools = {name: _tool(name) for name in ("initdb", "pg_ctl", "postgres")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise PostgresUnavailable(f"needs a PostgreSQL server: {', '.join(missing)} not found")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="crbio-pg-"))
    if os.geteuid() == 0:
        # initdb and postgres refuse root: run them as an unprivileged user owning the directory.
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(directory, ignore_errors=True)
            raise PostgresUnavailable("running as root and runuser is missing: PostgreSQL cannot be started")
        shutil.chown(directory, "nobody")
        as_user = [runuser, "-u", "nobody", "--"]
    data = directory / "data"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    try:
        subprocess.run(
            [*as_user, str(tools["initdb"]), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
            check=True,
            capture_output=True,
            env=env,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory}"
        if not fsync:
            options = "-c fsync=off " + options
        subprocess.run(
            [*as_user, str(tools["pg_ctl"]), "-D", str(data), "-l", str(directory / "log"), "-w"]
            + ["-o", options, "start"],
            check=True,
            capture_output=True,
            env=env,
        )
    except subprocess.CalledProcessError as exc:
        log = directory / "log"
        reason = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        if log.exists():
            reason.append(log.read_text(errors="replace")[-300:])
        shutil.rmtree(directory, ignore_errors=True)
        raise PostgresUnavailable(f"PostgreSQL could not be started here: {' '.join(reason)}") from None
    try:
        yield PostgresServer(directory, port)
    finally:
        subprocess.run(
            [*as_user, str(tools["pg_ctl"]), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            env=env,
        )
        shutil.rmtree(directory, ignore_errors=True)

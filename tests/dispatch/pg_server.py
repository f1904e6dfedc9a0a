"""Fixtures for the outbox tests: a real PostgreSQL server, and the outbox table of each backend.

Test modules load them with ``pytest_plugins = ["pg_server"]``: a ``tests/dispatch/conftest.py``
would shadow ``tests/conftest.py``, which the dispatch tests import by the module name ``conftest``.

The server is the Debian/upstream one (``initdb``, ``pg_ctl``, ``postgres`` on PATH or in the usual
places), started once per test session in a temporary directory on 127.0.0.1 and a free port,
and stopped at the end. ``initdb`` refuses to run as root, so as root the server runs as the
``nobody`` user through ``runuser``. Without a server or without ``psycopg``, the tests that need
them are skipped with the reason.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_SEARCH = (
    "/usr/local/bin",
    "/usr/local/pgsql/bin",
    *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True),
)


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
    """A throw-away PostgreSQL cluster; :meth:`database` creates an empty database per test."""

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start PostgreSQL for the session (skip with the reason when it cannot run here)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip('needs psycopg 3 (pip install "crbio[postgresql]")')
    tools = {name: _tool(name) for name in ("initdb", "pg_ctl", "postgres")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"needs a PostgreSQL server: {', '.join(missing)} not found")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="crbio-pg-"))
    if os.geteuid() == 0:
        # initdb and postgres refuse root: run them as an unprivileged user owning the directory.
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(directory, ignore_errors=True)
            pytest.skip("running as root and runuser is missing: PostgreSQL cannot be started")
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
        options = f"-c fsync=off -c listen_addresses=127.0.0.1 -p {port} -k {directory}"
        subprocess.run(
            [*as_user, str(tools["pg_ctl"]), "-D", str(data), "-l", str(directory / "log"), "-w"]
            + ["-o", options, "start"],
            check=True,
            capture_output=True,
            env=env,
        )
    except subprocess.CalledProcessError as exc:
        log = directory / "log"
        shutil.rmtree(directory, ignore_errors=True)
        reason = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        if log.exists():
            reason.append(log.read_text(errors="replace")[-300:])
        pytest.skip(f"PostgreSQL could not be started here: {' '.join(reason)}")
    try:
        yield PostgresServer(directory, port)
    finally:
        subprocess.run(
            [*as_user, str(tools["pg_ctl"]), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            env=env,
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_table(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """The ``[outbox]`` table of a test configuration, once per backend (a fresh outbox each time)."""
    if request.param == "sqlite":
        table: dict[str, Any] = {"path": str(tmp_path / "outbox.sqlite")}
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        table = {"backend": "postgresql", "dsn": server.database()}

    def make(**extra: Any) -> dict[str, Any]:
        return {**table, **extra}

    return make

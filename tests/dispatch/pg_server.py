"""Fixtures for the outbox tests: a real PostgreSQL server, and the outbox table of each backend.

Test modules load them with ``pytest_plugins = ["pg_server"]``: a ``tests/dispatch/conftest.py``
would shadow ``tests/conftest.py``, which the dispatch tests import by the module name ``conftest``.

The server is the Debian/upstream one (``initdb``, ``pg_ctl``, ``postgres`` on PATH or in the usual
places), started once per test session in a temporary directory on 127.0.0.1 and a free port,
and stopped at the end. ``initdb`` refuses to run as root, so as root the server runs as the
``nobody`` user through ``runuser``. Without a server or without ``psycopg``, the tests that need
them are skipped with the reason. Starting and stopping it is ``bench/postgres.py``'s
``start_postgres``, which the dispatch benchmark uses too.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _load_postgres_module() -> Any:
    # The start/stop logic is shared with the dispatch benchmark (bench/postgres.py, which
    # needs no pytest); loaded by path, the bench folder is not a package the tests import.
    path = Path(__file__).resolve().parents[2] / "bench" / "postgres.py"
    spec = importlib.util.spec_from_file_location("crbio_bench_postgres", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_postgres = _load_postgres_module()
PostgresServer = _postgres.PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """Start PostgreSQL for the session (skip with the reason when it cannot run here)."""
    try:
        # fsync off: the tests need a database, not its durability.
        with _postgres.start_postgres(fsync=False) as server:
            yield server
    except _postgres.PostgresUnavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_table(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """The ``[outbox]`` table of a test configuration, once per backend (a fresh outbox each time)."""
    if request.param == "sqlite":
        table: dict[str, Any] = {"path": str(tmp_path / "outbox.sqlite")}
    else:
        server = request.getfixturevalue("postgres_server")
        table = {"backend": "postgresql", "dsn": server.database()}

    def make(**extra: Any) -> dict[str, Any]:
        return {**table, **extra}

    return make

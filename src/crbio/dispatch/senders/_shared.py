"""What senders read from their settings, read once per process (TLS contexts, signing keys).

Every worker thread builds its own senders from the same configuration section. Reading the
certificates and keys is what costs there (loading the system CA store, checking an RSA
private key: tens of milliseconds each, paid again by every thread), while the result is the
same for the same settings and files. :func:`shared` keeps it per process for the senders
built from identical settings: a change of any setting, of the ``*_env`` variable a password
comes from, or of a file the settings name (its modification time or size) reads everything
again, and so does the passing of a few minutes, so that a certificate expiring meanwhile is
refused by the next sender built as it would be without this. Errors are never kept.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from crbio.dispatch.senders.base import SenderContext

__all__ = ["shared"]

T = TypeVar("T")

#: Seconds a reading is reused.
TTL: Final = 300.0
_FILE_SUFFIXES: Final = ("_file", "_cert", "_key", "_pkcs12")

_lock = threading.Lock()
_readings: dict[tuple[str, str], tuple[float, Any]] = {}
# One gate per reading under way: threads that start together wait for the first one's result
# instead of all reading the same files at once.
_gates: dict[tuple[str, str], threading.Lock] = {}


def _fingerprint(section: Mapping[str, Any], context: SenderContext) -> str:
    """A digest of all a reading depends on: the settings, the files they name, the password variables.

    A digest, so that no secret given inline (local tests) or by variable sits in the key of a
    dictionary.
    """
    parts: list[str] = [repr(context)]
    for key in sorted(section):
        value = section[key]
        parts.append(f"{key}={value!r}")
        if key.endswith("_env") and isinstance(value, str):
            secret = os.environ.get(value)
            parts.append(secret if secret is not None else "\0unset")
        elif key.endswith(_FILE_SUFFIXES) and isinstance(value, str):
            try:
                stat = context.path(value).stat()
                parts.append(f"{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}")
            except OSError:
                parts.append("missing")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def shared(kind: str, section: Mapping[str, Any], context: SenderContext, read: Callable[[], T]) -> T:
    """``read()``, or what it returned for the same ``kind``, settings and files in this process.

    Threads asking for the same reading at once wait for one of them to read it.

    Args:
        kind: Which reading (e.g. ``"dmp"``): different readings of one section are kept apart.
        section: The sender's settings.
        context: The sender context (paths are relative to its ``base_dir``).
        read: Reads the credentials or builds the context; its exceptions propagate and
            nothing is kept.
    """
    key = (kind, _fingerprint(section, context))
    with _lock:
        gate = _gates.setdefault(key, threading.Lock())
    with gate:
        with _lock:
            known = _readings.get(key)
            if known is not None and time.monotonic() - known[0] < TTL:
                value: T = known[1]
                return value
        value = read()
        with _lock:
            now = time.monotonic()
            for stale in [k for k, (at, _) in _readings.items() if now - at >= TTL]:
                del _readings[stale]
                _gates.pop(stale, None)
            _readings[key] = (now, value)
            _gates[key] = gate
    return value

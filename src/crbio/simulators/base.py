"""What every simulator shares: a background server on 127.0.0.1, and injectable faults.

Simulators are real protocol servers (an XDS.b registry/repository, an SMTP server, an MLLP
listener, an operator API) that the tests, ``crbio simulate`` and conformity runs send to.
Each keeps what it received and lets a test inject faults on demand: a fixed number of next
requests, or a random share of all requests, get latency, a busy answer, a server error, a
dropped connection or a permanent rejection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crbio.simulators.pki import TestPki

__all__ = ["Fault", "FaultPlan", "LocalServer", "server_tls_context"]

logger = logging.getLogger("crbio.simulators")


class Fault(StrEnum):
    """A fault a simulator can inject into its next answers."""

    LATENCY = "latency"  # answer normally, after a delay
    BUSY = "busy"  # a retryable refusal (XDSRegistryBusy, SMTP 451, HTTP 503, HL7 AE)
    SERVER_ERROR = "server-error"  # a retryable 5xx / SOAP fault / SMTP 421
    DROP = "drop"  # close the connection without answering
    REJECT = "reject"  # a permanent refusal (XDSUnknownPatientId, SMTP 550, HTTP 400, HL7 AR)


@dataclass
class FaultPlan:
    """Which faults to inject, thread-safe: queued ones first, then a random rate.

    ``rate`` is the share of requests (0..1) that get one of ``random_faults``; ``latency``
    is the delay of a LATENCY fault in seconds. ``seed`` makes random runs repeatable.
    """

    rate: float = 0.0
    random_faults: tuple[Fault, ...] = (Fault.BUSY, Fault.SERVER_ERROR, Fault.DROP)
    latency: float = 0.2
    seed: int | None = None
    _queued: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(init=False)
    injected: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def queue(self, fault: Fault, times: int = 1) -> None:
        """Inject ``fault`` into the next ``times`` requests."""
        with self._lock:
            self._queued.extend([fault] * times)

    def set_rate(self, rate: float, faults: tuple[Fault, ...] | None = None) -> None:
        """Inject a random fault into a share ``rate`` of the following requests."""
        with self._lock:
            self.rate = rate
            if faults is not None:
                self.random_faults = faults

    def clear(self) -> None:
        """Stop injecting faults."""
        with self._lock:
            self._queued.clear()
            self.rate = 0.0

    def draw(self) -> Fault | None:
        """The fault for the request being answered, if any (LATENCY sleeps here and returns None)."""
        fault = self.draw_nowait()
        if fault is Fault.LATENCY:
            time.sleep(self.latency)
            return None
        return fault

    def draw_nowait(self) -> Fault | None:
        """As :meth:`draw`, but LATENCY is returned instead of slept (for an event loop to await)."""
        with self._lock:
            if self._queued:
                fault: Fault | None = self._queued.pop(0)
            elif self.rate and self._random.random() < self.rate:
                fault = self._random.choice(self.random_faults)
            else:
                fault = None
            if fault is not None:
                self.injected.append(fault)
        return fault


def server_tls_context(pki: TestPki, *, client_certificate: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the test PKI's server certificate.

    ``client_certificate`` is ``none``, ``optional`` or ``required``; presented client
    certificates are verified against the test CA.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_certificate != "none":
        context.load_verify_locations(cafile=str(pki.ca_cert))
        context.verify_mode = ssl.CERT_REQUIRED if client_certificate == "required" else ssl.CERT_OPTIONAL
    return context


class LocalServer(socketserver.ThreadingTCPServer):
    """A threaded TCP server on 127.0.0.1 (free port), served from a background thread.

    Each connection runs ``serve(connection, client_address)`` in its own thread, after the
    TLS handshake when ``tls`` is given (so a slow or broken client never blocks the accept
    loop); a failed handshake goes to ``on_handshake_error``. :meth:`stop` cuts the open
    connections, so threads blocked reading wake up, and waits for every thread.
    """

    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True  # server_close() joins the connection threads

    def __init__(
        self,
        simulator: Any,
        serve: Callable[[socket.socket, Any], None],
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        on_handshake_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.simulator = simulator  # what request handlers reach as ``self.server.simulator``
        self.name = name
        self._serve = serve
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._on_handshake_error = on_handshake_error
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        super().__init__(("127.0.0.1", 0), socketserver.BaseRequestHandler)

    @classmethod
    def http(
        cls,
        simulator: Any,
        handler: type[BaseHTTPRequestHandler],
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        on_handshake_error: Callable[[BaseException], None] | None = None,
    ) -> LocalServer:
        """A server that answers HTTP on each connection with ``handler`` (see :class:`HttpHandler`)."""

        def serve(connection: socket.socket, client_address: Any) -> None:
            handler(connection, client_address, server)

        server = cls(
            simulator,
            serve,
            name=name,
            tls=tls,
            handshake_timeout=handshake_timeout,
            on_handshake_error=on_handshake_error,
        )
        return server

    @property
    def port(self) -> int:
        """The port the system chose."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, cut the open connections and wait for every thread."""
        self.shutdown()
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
        self.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _track(self, connection: socket.socket, replacing: socket.socket | None = None) -> bool:
        with self._lock:
            if self._stopping:
                return False
            if replacing is not None:
                self._connections.discard(replacing)
            self._connections.add(connection)
            return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection (in its own thread): TLS handshake, then ``serve``."""
        connection: socket.socket = request
        if not self._track(connection):
            return
        try:
            if self._tls is not None:
                connection.settimeout(self._handshake_timeout)
                try:
                    secured = self._tls.wrap_socket(connection, server_side=True)
                except (ssl.SSLError, OSError) as error:
                    if self._on_handshake_error is not None:
                        self._on_handshake_error(error)
                    else:
                        logger.info("%s: TLS handshake failed (%s)", self.name, error)
                    return
                if not self._track(secured, replacing=connection):
                    secured.close()
                    return
                connection = secured
            self._serve(connection, client_address)
        except (OSError, ValueError) as error:  # timeouts, resets: the client went away
            logger.debug("%s: connection ended (%s)", self.name, type(error).__name__)
        finally:
            with self._lock:
                self._connections.discard(connection)
            if connection is not request:
                with contextlib.suppress(OSError):
                    connection.close()

    def shutdown_request(self, request: Any) -> None:
        """Close the accepted socket."""
        # After a TLS handshake the wrapped socket owns the descriptor; shutting the raw one
        # down would raise, so only close it.
        with contextlib.suppress(OSError):
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a serving error with its traceback (test servers: never patient data in there)."""
        logger.exception("%s: error while serving a connection", self.name)


class HttpHandler(BaseHTTPRequestHandler):
    """An HTTP request handler for :meth:`LocalServer.http`: quiet, sends whole bodies, can hang up."""

    server: LocalServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s: %s %s", self.server.name, self.address_string(), format % args)

    def send_body(self, status: int, content_type: str, body: bytes) -> None:
        """Answer ``status`` with ``body`` and its length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        """Close the connection without a word, like a crashed server."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)

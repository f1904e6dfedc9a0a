"""What every simulator shares: a background server on 127.0.0.1, and injectable faults.

Simulators are real protocol servers (an XDS.b registry/repository, an SMTP server, an MLLP
listener, an operator API) that the tests, ``crbio simulate`` and conformity runs send to.
Each keeps what it received and lets a test inject faults on demand: a fixed number of next
requests, or a random share of all requests, get latency, a busy answer, a server error, a
dropped connection or a permanent rejection.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Fault", "FaultPlan"]


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
        with self._lock:
            if self._queued:
                fault: Fault | None = self._queued.pop(0)
            elif self.rate and self._random.random() < self.rate:
                fault = self._random.choice(self.random_faults)
            else:
                fault = None
            if fault is not None:
                self.injected.append(fault)
        if fault is Fault.LATENCY:
            time.sleep(self.latency)
            return None
        return fault

"""Kill the worker process (SIGKILL) at random points while it delivers; nothing is lost or doubled.

The workers run as real ``crbio worker`` processes against the simulators; the test kills
them many times at random moments (the simulators add latency so kills land mid-send),
restarts them, and at the end checks that every delivery is acknowledged once in the
journal and received once (duplicates recognised) by each destination.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import sample_files
from crbio.dispatch import Channel, Outbox, dispatch
from crbio.documents.build import build
from crbio.input import load_report
from crbio.simulators.base import Fault
from crbio.simulators.run import Simulation


def _worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crbio.cli", "worker", "--config", str(config), "--drain", "--threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkilled_workers_deliver_everything_exactly_once(tmp_path: Path) -> None:
    with Simulation(tmp_path / "sim", retry_delay=0.05) as sim:
        # Short leases so a killed worker's deliveries come back quickly, in doubt.
        sim.config_path.write_text(
            sim.config_path.read_text("utf-8").replace("lease_seconds = 30", "lease_seconds = 1"), "utf-8"
        )
        for plan in sim.fault_plans:
            plan.latency = 0.05
            plan.set_rate(0.5, (Fault.LATENCY,))
        config = sim.config
        for path in sample_files():
            dispatch(build(load_report(path)), config)
        with Outbox(config.outbox_path) as outbox:
            expected = {t.key: t for t in outbox.transmissions()}

        rng = random.Random(20261123)
        kills = 0
        for _ in range(20):
            worker = _worker(sim.config_path)
            time.sleep(rng.uniform(0.4, 1.5))
            if worker.poll() is None:
                worker.kill()
                kills += 1
            worker.wait()
            with Outbox(config.outbox_path) as outbox:
                if outbox.counts() == {"acknowledged": len(expected)}:
                    break
        last = _worker(sim.config_path)
        assert last.wait(timeout=180) == 0

        with Outbox(config.outbox_path) as outbox:
            dead = [(t.channel, t.last_error) for t in outbox.transmissions(state="dead")]
            assert outbox.counts() == {"acknowledged": len(expected)}, dead
            for key in expected:
                events = [e["event"] for e in outbox.events(key)]
                assert sum(e in {"acknowledged", "recovered"} for e in events) == 1, events
            lines = outbox.transmissions()
        assert kills >= 5

        # Each destination holds each delivery once; resends after a kill are recognised.
        dmp = [t for t in lines if t.channel == Channel.DMP.value]
        stored = Counter(e.unique_id for e in sim.xds.entries)
        assert sorted(stored) == sorted(t.document_id for t in dmp) and set(stored.values()) == {1}
        mails = [t for t in lines if t.channel == Channel.MSSANTE.value]
        fresh = Counter(m.message_id for m in sim.smtp.messages if not m.duplicate)
        assert len(fresh) == len(mails) and set(fresh.values()) == {1}
        hl7 = [t for t in lines if t.channel == Channel.HL7V2.value]
        fresh_hl7 = Counter(m.control_id for m in sim.mllp.messages if not m.duplicate)
        assert len(fresh_hl7) == len(hl7) and set(fresh_hl7.values()) == {1}

"""Group commit of acknowledgements (AckGroup): worker threads of one process share durable commits.

The outbox, plan and workers are crbio's real code on a real SQLite file and PostgreSQL server;
the destination is the scripted one of ``test_outbox``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from test_outbox import ScriptedDestination, make_config

from crbio.dispatch import Acknowledgement, Channel, Worker
from crbio.dispatch.api import dispatch
from crbio.dispatch.outbox_backends import open_outbox
from crbio.dispatch.worker import AckGroup
from crbio.documents.build import build
from crbio.documents.context import BuildContext
from crbio.model import Report

pytest_plugins = ["pg_server"]

SAMPLES = ("01-biochimie.json", "02-hemogramme.json", "03-ecbu.json", "04-serologie.json")


def test_threads_sharing_a_group_acknowledge_every_delivery_once(
    outbox_table: Callable[..., dict[str, Any]],
    sample_report: Callable[[str], Report],
    context: BuildContext,
) -> None:
    config = make_config(outbox_table)
    keys: list[str] = []
    for name in SAMPLES:
        keys += dispatch(build(sample_report(name), context=context, validate=False), config).queued
    destination = ScriptedDestination()
    group = AckGroup()
    acknowledged: list[int] = []

    def work() -> None:  # each thread its own worker: SQLite connections stay in their thread
        with Worker(config, senders=dict.fromkeys(Channel, destination), group=group, batch=2) as w:
            w.run(drain=True)
            acknowledged.append(w.stats.acknowledged)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(acknowledged) == len(keys) == len(destination.jobs)
    with open_outbox(config) as outbox:
        assert outbox.counts() == {"acknowledged": len(keys)}
        for key in keys:
            events = [e["event"] for e in outbox.events(key)]
            assert events == ["queued", "sending", "acknowledged"]


def test_an_acknowledgement_after_the_lease_was_lost_is_refused_in_a_group(
    outbox_table: Callable[..., dict[str, Any]],
    sample_report: Callable[[str], Report],
    context: BuildContext,
) -> None:
    config = make_config(outbox_table)
    dispatch(build(sample_report(SAMPLES[0]), context=context, validate=False), config)
    group = AckGroup()
    with open_outbox(config, lease_seconds=0.05) as first, open_outbox(config) as second:
        lost = first.claim("worker-a", limit=10)
        taken: list[Any] = []
        while not taken:  # the leases expire: another worker takes every delivery over
            taken = second.claim("worker-b", limit=10)
        assert [c.row_id for c in taken] == [c.row_id for c in lost] and all(c.in_doubt for c in taken)
        ack = Acknowledgement("ok", {"message_id": "m"})
        assert group.acknowledge(first, lost[0], ack, False) is False
        assert group.acknowledge(second, taken[0], ack, True) is True
        assert second.acknowledge_all([(c, ack, False) for c in (*lost[1:], *taken[1:])]) == (
            [False] * (len(lost) - 1) + [True] * (len(taken) - 1)
        )
        assert [e["event"] for e in second.events(taken[0].delivery.key)][-1] == "recovered"

"""End to end: build every sample, plan, queue, deliver to all the simulators, check what they got."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import hl7
import pytest
from lxml import etree

from conftest import SAMPLES, sample_files
from crbio.dispatch import Channel, DispatchConfig, Outbox, delete, deliver, dispatch, run_workers
from crbio.dispatch.header import read_header
from crbio.documents.build import Documents, build
from crbio.input import load_report
from crbio.simulators.run import Simulation

XDM_LAYOUT = {"README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML"}


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulation]:
    with Simulation(tmp_path_factory.mktemp("simulation"), retry_delay=0.05) as sim:
        yield sim


def own_outbox(config: DispatchConfig, tmp_path: Path) -> DispatchConfig:
    return replace(config, outbox_path=tmp_path / "outbox.sqlite")


def attachments(message: EmailMessage) -> dict[str, bytes]:
    return {
        part.get_filename() or "": part.get_payload(decode=True)  # type: ignore[misc]
        for part in message.iter_attachments()
    }


def xdm_metadata(message: EmailMessage) -> bytes:
    with zipfile.ZipFile(io.BytesIO(attachments(message)["IHE_XDM.ZIP"])) as xdm:
        return xdm.read("IHE_XDM/SUBSET01/METADATA.XML")


def xdm_action(message: EmailMessage) -> str | None:
    values = etree.fromstring(xdm_metadata(message)).xpath(
        "//rim:Slot[@name='action']/rim:ValueList/rim:Value/text()",
        namespaces={"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"},
    )
    return str(values[0]) if values else None


def test_every_sample_reaches_every_destination(
    simulation: Simulation, tmp_path: Path, ans_kit_n3: Any
) -> None:
    config = own_outbox(simulation.config, tmp_path)
    built: dict[str, Documents] = {}
    keys: list[str] = []
    for path in sample_files():
        if path.name.startswith("08b"):
            continue  # the amendment has its own test
        documents = build(load_report(path))
        built[documents.document_id] = documents
        keys += dispatch(documents, config).keys
    states, _ = deliver(config, keys, timeout=120)
    assert set(states.values()) == {"acknowledged"}, states

    with Outbox(config.outbox_path) as outbox:
        lines = outbox.transmissions()
    by_channel: dict[str, list[Any]] = {}
    for line in lines:
        by_channel.setdefault(line.channel, []).append(line)

    # DMP: the stored CDA is the one built, passes the ANS kit, and its XDS metadata matches the header.
    for line in by_channel["dmp"]:
        documents = built[line.document_id]
        entry = simulation.xds.entry(line.document_id)
        assert entry is not None and entry.content == documents.n3
        header = read_header(entry.content)
        assert entry.metadata["typeCode"] == header.code.code
        assert entry.patient_id.startswith(f"{header.ins[0]}^^^&{header.ins[1]}&ISO^NH")  # type: ignore[index]
        assert entry.metadata["confidentialityCode"][0] == header.confidentiality
        assert line.ack_detail and line.ack_detail["entry_uuid"] == entry.entry_uuid
        outcome = ans_kit_n3.check(entry.content, label=line.document_id)
        assert outcome.ok, outcome.summary()

    # MSSanté: the normative XDM layout, the mail headers, the PDF under its normative name.
    received = {m.message_id: m for m in simulation.smtp.messages}
    for line in by_channel["mssante"]:
        documents = built[line.document_id]
        message = received[line.ack_detail["message_id"]].message  # type: ignore[index]
        assert message["Subject"].startswith("XDM/1.0/DDM+")
        assert message["X-MSS-CODECDA"] == "11502-2"
        assert message["X-MSS-INS"] == ("O" if documents.report.patient.qualified_ins else "N")
        assert message["X-MSS-NIL"] == "NIL-SIMULATION"
        assert message["To"] == line.recipient
        assert (message["X-MSS-MES"] == "FIN") is (line.recipient_kind == "patient")
        files = attachments(message)
        pdf_name = next(name for name in files if name.endswith(".pdf"))
        assert files[pdf_name] == documents.pdf
        with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as xdm:
            assert set(xdm.namelist()) >= XDM_LAYOUT
            assert xdm.read("IHE_XDM/SUBSET01/DOC0001.XML") == documents.n3

    # HL7 v2: the message parses, carries the CDA and the masking flags of the plan.
    received_hl7 = {m.control_id: m for m in simulation.mllp.messages}
    for line in by_channel["hl7v2"]:
        documents = built[line.document_id]
        message = received_hl7[line.ack_detail["control_id"]]  # type: ignore[index]
        parsed = hl7.parse(message.raw)
        assert str(parsed.segment("MSH")[9]) == "ORU^R01^ORU_R01"
        assert message.cda == documents.n3
        masking = documents.report.document.masking
        assert message.flags["INVISIBLE_PATIENT"] == ("Y" if masking.invisible_patient else "N")
        assert message.flags["MASQUE_PS"] == ("Y" if masking.masque_ps else "N")
        assert message.flags["CONNEXION_SECRETE"] == (
            "Y" if documents.report.document.secret_connection else "N"
        )


def test_replacement_then_deletion_reach_every_channel(simulation: Simulation, tmp_path: Path) -> None:
    config = own_outbox(simulation.config, tmp_path)
    v1 = build(load_report(SAMPLES / "08a-diabete-v1.json"))
    v2 = build(load_report(SAMPLES / "08b-diabete-v2.json"))
    for documents in (v1, v2):
        result = dispatch(documents, config)
        states, _ = deliver(config, result.keys, timeout=60)
        assert set(states.values()) == {"acknowledged"}
    old, new = simulation.xds.entry(v1.document_id), simulation.xds.entry(v2.document_id)
    assert old is not None and new is not None
    assert old.status.endswith("Deprecated") and new.status.endswith("Approved")
    assert new.replaced_entry_uuid == old.entry_uuid

    deletion = delete(v2.document_id, config)
    assert {d.channel for d in deletion.plan.deliveries} == {Channel.DMP, Channel.MSSANTE, Channel.HL7V2}
    states, _ = deliver(config, deletion.keys, timeout=60)
    assert set(states.values()) == {"acknowledged"}
    assert simulation.xds.entry(v2.document_id).status.endswith("Deleted")  # type: ignore[union-attr]

    # The replacement mail says C, the deletion mail D, each to the prescriber and the patient.
    actions = Counter(
        xdm_action(m.message)
        for m in simulation.smtp.messages
        if v2.document_id.encode() in xdm_metadata(m.message)
    )
    assert actions == {"C": 2, "D": 2}
    events = [m.event for m in simulation.mllp.messages if m.cda in (v1.n3, v2.n3)]
    assert {"F", "C", "D"} <= set(events)


def test_thirty_percent_faults_everything_delivered_eventually(tmp_path: Path) -> None:
    with Simulation(tmp_path / "sim", fault_rate=0.3, seed=3, retry_delay=0.02) as sim:
        config = sim.config
        for path in sample_files()[:8]:
            dispatch(build(load_report(path)), config)
        run_workers(config, threads=3, drain=True)
        with Outbox(config.outbox_path) as outbox:
            counts = outbox.counts()
            retried = [t for t in outbox.transmissions() if t.attempts > 1]
        assert counts == {"acknowledged": sum(counts.values())}
        assert retried and sum(len(p.injected) for p in sim.fault_plans) >= 5


def test_permanent_rejection_ends_in_the_dead_letter_with_the_reason(tmp_path: Path) -> None:
    with Simulation(tmp_path / "sim", known_patients=set(), retry_delay=0.02) as sim:
        config = sim.config
        dispatch(build(load_report(SAMPLES / "01-biochimie.json")), config)
        stats = run_workers(config, drain=True)
        with Outbox(config.outbox_path) as outbox:
            (dead,) = outbox.transmissions(state="dead")
        assert stats.dead == 1 and dead.channel == "dmp" and dead.attempts == 1
        assert "XDSUnknownPatientId" in (dead.last_error or "")


def test_operator_api_delivers_the_same_message(tmp_path: Path) -> None:
    with Simulation(tmp_path / "sim", mssante="operator-api", retry_delay=0.02) as sim:
        config = sim.config
        documents = build(load_report(SAMPLES / "01-biochimie.json"))
        states, _ = deliver(config, dispatch(documents, config).keys, timeout=60)
        assert set(states.values()) == {"acknowledged"}
        assert len(sim.operator.messages) == 2  # the prescriber and the patient

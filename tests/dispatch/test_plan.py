"""The routing rules, case by case: each suppressed destination comes with its reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from crbio.dispatch import Action, Channel, DispatchConfig, Plan, RecipientKind, plan_deletion, plan_dispatch
from crbio.model import Confidentiality, Report
from crbio.model.actors import Professional
from crbio.model.common import PersonName
from crbio.model.patient import IdentityStatus, Oppositions
from crbio.model.report import Masking


def config(**overrides: Any) -> DispatchConfig:
    data: dict[str, Any] = {
        "laboratory": {"finess": "920000015", "name": "Laboratoire des Charmes", "oid": "1.2.250.1.999.1"},
        "software": {"nil": "NIL-TEST-0001"},
        "destinations": {"dmp": {}, "mssante": {}, "hl7v2": {"name": "pfi-chu"}},
    }
    for key, value in overrides.items():
        data[key] = value
    return DispatchConfig.from_mapping(data)


def with_document(report: Report, **changes: Any) -> Report:
    return replace(report, document=replace(report.document, **changes))


def with_patient(report: Report, **changes: Any) -> Report:
    return replace(report, patient=replace(report.patient, **changes))


def routes(plan: Plan) -> set[tuple[str, str]]:
    return {(d.channel.value, d.recipient.kind.value) for d in plan.deliveries}


def reasons(plan: Plan) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for s in plan.suppressed:
        kind = s.recipient.kind.value if s.recipient else "-"
        out.setdefault((s.channel.value, kind), set()).add(s.reason)
    return out


@pytest.fixture
def nominal(sample_report: Callable[[str], Report]) -> Report:
    return sample_report("01-biochimie.json")


def test_nominal_report_goes_everywhere_with_its_metadata(nominal: Report) -> None:
    plan = plan_dispatch(nominal, config())
    assert plan.action is Action.SUBMIT and not plan.suppressed
    assert routes(plan) == {
        ("dmp", "dmp"),
        ("mssante", "professional"),
        ("mssante", "patient"),
        ("hl7v2", "system"),
    }
    by_kind = {d.recipient.kind: d for d in plan.deliveries}
    patient = by_kind[RecipientKind.PATIENT]
    assert patient.recipient.address == f"{nominal.patient.ins.matricule}@patient.mssante.fr"  # type: ignore[union-attr]
    assert patient.metadata["headers"] == {
        "X-MSS-CODECDA": "11502-2",
        "X-MSS-INS": "O",
        "X-MSS-NIL": "NIL-TEST-0001",
        "X-MSS-MES": "FIN",
    }
    ps = by_kind[RecipientKind.PROFESSIONAL]
    assert (
        ps.recipient.address == nominal.prescriber.mssante
        and ps.recipient.identifier == nominal.prescriber.rpps
    )
    assert "X-MSS-MES" not in ps.metadata["headers"]
    assert by_kind[RecipientKind.DMP].metadata["confidentiality"] == ["N"]
    flags = by_kind[RecipientKind.SYSTEM].metadata["flags"]
    assert list(flags) == [
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REP_LEGAUX",
        "CONNEXION_SECRETE",
        "MODIF_CONF_CODE",
        "DESTDMP",
        "DESTMSSANTEPS",
        "DESTMSSANTEPAT",
        "ACK_RECEPTION",
        "ACK_LECTURE_MSS",
    ]
    assert [k for k, v in flags.items() if v == "Y"] == [
        "DESTDMP",
        "DESTMSSANTEPS",
        "DESTMSSANTEPAT",
        "ACK_RECEPTION",
    ]


def test_plan_is_a_pure_function(nominal: Report) -> None:
    assert plan_dispatch(nominal, config()) == plan_dispatch(nominal, config())


def test_opposition_to_dmp_feeding(nominal: Report) -> None:
    plan = plan_dispatch(with_patient(nominal, oppositions=Oppositions(dmp=True)), config())
    assert ("dmp", "dmp") not in routes(plan)
    assert reasons(plan) == {("dmp", "dmp"): {"opposition.dmp"}}
    hl7 = next(d for d in plan.deliveries if d.channel is Channel.HL7V2)
    assert hl7.metadata["flags"]["DESTDMP"] == "N"


def test_opposition_to_mssante_stops_every_mail_but_not_the_dmp(nominal: Report) -> None:
    plan = plan_dispatch(with_patient(nominal, oppositions=Oppositions(mssante=True)), config())
    assert routes(plan) == {("dmp", "dmp"), ("hl7v2", "system")}
    assert reasons(plan) == {
        ("mssante", "professional"): {"opposition.mssante"},
        ("mssante", "patient"): {"opposition.mssante"},
    }


def test_masque_ps_keeps_the_dmp_with_the_code_and_stops_mail_to_professionals(nominal: Report) -> None:
    report = with_document(nominal, masking=Masking(masque_ps=True))
    plan = plan_dispatch(report, config())
    assert reasons(plan) == {("mssante", "professional"): {"masking.masque-ps"}}
    dmp = next(d for d in plan.deliveries if d.channel is Channel.DMP)
    assert dmp.metadata["confidentiality"] == ["N", "MASQUE_PS"]
    relaxed = plan_dispatch(report, config(rules={"masque_ps_blocks_mssante": False}))
    assert ("mssante", "professional") in routes(relaxed)


def test_invisible_patient_never_goes_to_the_patient(sample_report: Callable[[str], Report]) -> None:
    plan = plan_dispatch(sample_report("11-invisible-patient-vih.json"), config())
    assert ("mssante", "patient") not in routes(plan)
    assert reasons(plan) == {("mssante", "patient"): {"masking.invisible-patient"}}
    dmp = next(d for d in plan.deliveries if d.channel is Channel.DMP)
    assert dmp.metadata["confidentiality"] == ["N", "INVISIBLE_PATIENT"]
    hl7 = next(d for d in plan.deliveries if d.channel is Channel.HL7V2)
    assert (
        hl7.metadata["flags"]["INVISIBLE_PATIENT"] == "Y" and hl7.metadata["flags"]["DESTMSSANTEPAT"] == "N"
    )
    assert all(r["kind"] != "patient" for r in hl7.metadata["mssante_recipients"])


def test_minor_with_secret_connection_hidden_from_legal_representatives(
    sample_report: Callable[[str], Report],
) -> None:
    report = sample_report("07-mineure-beta-hcg.json")
    plan = plan_dispatch(report, config())
    assert ("mssante", "patient") not in routes(plan)
    assert reasons(plan) == {
        ("mssante", "patient"): {"masking.invisible-representants-legaux", "minor.secret-connection"}
    }
    dmp = next(d for d in plan.deliveries if d.channel is Channel.DMP)
    assert dmp.metadata["secret_connection"] is True
    assert dmp.metadata["confidentiality"] == ["N", "INVISIBLE_REPRESENTANTS_LEGAUX"]
    hl7 = next(d for d in plan.deliveries if d.channel is Channel.HL7V2)
    assert hl7.metadata["flags"]["CONNEXION_SECRETE"] == "Y"
    assert hl7.metadata["flags"]["INVISIBLE_REP_LEGAUX"] == "Y"
    # Without the secret connection, the masking code alone still keeps it from the minor's
    # Mon espace santé, which the legal representatives manage.
    only_masked = plan_dispatch(with_document(report, secret_connection=False), config())
    assert reasons(only_masked) == {("mssante", "patient"): {"masking.invisible-representants-legaux"}}


def test_adult_document_hidden_from_legal_representatives_still_reaches_the_patient(nominal: Report) -> None:
    plan = plan_dispatch(
        with_document(nominal, masking=Masking(invisible_representants_legaux=True)), config()
    )
    assert ("mssante", "patient") in routes(plan)


def test_non_qualified_identity_no_dmp_no_patient_mail(sample_report: Callable[[str], Report]) -> None:
    plan = plan_dispatch(sample_report("13-identite-provisoire.json"), config())
    assert routes(plan) == {("mssante", "professional"), ("hl7v2", "system")}
    assert reasons(plan) == {
        ("dmp", "dmp"): {"ins.not-qualified"},
        ("mssante", "patient"): {"ins.not-qualified"},
    }
    ps = next(d for d in plan.deliveries if d.channel is Channel.MSSANTE)
    assert ps.metadata["headers"]["X-MSS-INS"] == "N"


@pytest.mark.parametrize(
    "status", [IdentityStatus.PROVISIONAL, IdentityStatus.RETRIEVED, IdentityStatus.VALIDATED]
)
def test_an_ins_without_qualification_is_not_used(nominal: Report, status: IdentityStatus) -> None:
    plan = plan_dispatch(with_patient(nominal, identity_status=status), config())
    assert {("dmp", "dmp"), ("mssante", "patient")}.isdisjoint(routes(plan))


@pytest.mark.parametrize("level", [Confidentiality.RESTRICTED, Confidentiality.VERY_RESTRICTED])
def test_restricted_confidentiality_is_not_shared_in_the_dmp(nominal: Report, level: Confidentiality) -> None:
    plan = plan_dispatch(with_document(nominal, confidentiality=level), config())
    assert reasons(plan) == {("dmp", "dmp"): {"confidentiality.restricted"}}
    ps = next(d for d in plan.deliveries if d.recipient.kind is RecipientKind.PROFESSIONAL)
    assert ps.metadata["confidentiality"] == [level.value]


def test_results_before_validation_go_to_professionals_only(sample_report: Callable[[str], Report]) -> None:
    plan = plan_dispatch(sample_report("12-urgences-avant-validation.json"), config())
    assert ("dmp", "dmp") not in routes(plan) and ("mssante", "patient") not in routes(plan)
    assert reasons(plan)[("dmp", "dmp")] == {"report.not-validated"}
    assert "report.not-validated" in reasons(plan)[("mssante", "patient")]


def test_switched_off_destinations_are_reported(nominal: Report) -> None:
    plan = plan_dispatch(
        nominal,
        config(destinations={"dmp": {"enabled": False}, "mssante": {}}, rules={"mssante_patient": False}),
    )
    assert routes(plan) == {("mssante", "professional")}
    assert reasons(plan) == {
        ("dmp", "dmp"): {"destination.off"},
        ("mssante", "patient"): {"rules.patient-off"},
    }


def test_professionals_without_address_are_reported_and_duplicates_merged(nominal: Report) -> None:
    no_mail = Professional(rpps="10101010101", name=PersonName("MARTIN", ("Anne",)))
    same_as_prescriber = replace(no_mail, rpps="10000000009", mssante=nominal.prescriber.mssante.upper())  # type: ignore[union-attr]
    plan = plan_dispatch(replace(nominal, copy_recipients=(no_mail, same_as_prescriber)), config())
    professionals = [d for d in plan.deliveries if d.recipient.kind is RecipientKind.PROFESSIONAL]
    assert len(professionals) == 1
    assert reasons(plan) == {("mssante", "professional"): {"recipient.no-address"}}
    (refused,) = plan.suppressed
    assert refused.recipient is not None and refused.recipient.identifier == "10101010101"


def test_amendment_is_a_replacement_and_flags_a_masking_change(
    sample_report: Callable[[str], Report],
) -> None:
    report = sample_report("08b-diabete-v2.json")
    plan = plan_dispatch(report, config())
    assert plan.action is Action.REPLACE
    assert all(d.action is Action.REPLACE and d.replaces == report.document.replaces for d in plan.deliveries)
    hl7 = next(d for d in plan.deliveries if d.channel is Channel.HL7V2)
    assert hl7.metadata["flags"]["MODIF_CONF_CODE"] == "N"
    released = plan_dispatch(report, config(), previous_confidentiality=["N", "INVISIBLE_PATIENT"])
    hl7 = next(d for d in released.deliveries if d.channel is Channel.HL7V2)
    assert hl7.metadata["flags"]["MODIF_CONF_CODE"] == "Y"


def test_every_delivery_has_its_own_idempotency_key(nominal: Report) -> None:
    plan = plan_dispatch(nominal, config())
    keys = [d.key for d in plan.deliveries]
    assert len(set(keys)) == len(keys)
    again = plan_dispatch(with_document(nominal, version=2, id=nominal.document.id + ".2"), config())  # type: ignore[operator]
    assert set(keys).isdisjoint(d.key for d in again.deliveries)


def test_deletion_reaches_every_recipient_that_acknowledged(nominal: Report) -> None:
    plan = plan_dispatch(nominal, config())
    deletion = plan_deletion(plan.document_id, plan.version, plan.deliveries)
    assert deletion.action is Action.DELETE
    assert {(d.channel, d.recipient) for d in deletion.deliveries} == {
        (d.channel, d.recipient) for d in plan.deliveries
    }
    assert all(d.action is Action.DELETE and d.document_id == plan.document_id for d in deletion.deliveries)

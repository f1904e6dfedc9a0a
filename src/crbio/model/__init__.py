"""The report model: typed, immutable values describing a validated CR-Bio."""

from crbio.model.actors import ExecutingLaboratory, Laboratory, Professional
from crbio.model.common import Address, Code, InstanceIdentifier, PersonName, Quantity, Telecom
from crbio.model.patient import IdentityStatus, Ins, LegalRepresentative, Oppositions, Patient, Sex
from crbio.model.report import Attachment, Confidentiality, DocumentInfo, Encounter, Masking, Report
from crbio.model.results import (
    Battery,
    Chapter,
    CodedValue,
    IntervalValue,
    Isolate,
    Observation,
    ObservationStatus,
    PreviousResult,
    RatioValue,
    ReferenceRange,
    Specimen,
    TextValue,
    Value,
)

__all__ = [
    "Address",
    "Attachment",
    "Battery",
    "Chapter",
    "Code",
    "CodedValue",
    "Confidentiality",
    "DocumentInfo",
    "Encounter",
    "ExecutingLaboratory",
    "IdentityStatus",
    "Ins",
    "InstanceIdentifier",
    "IntervalValue",
    "Isolate",
    "Laboratory",
    "LegalRepresentative",
    "Masking",
    "Observation",
    "ObservationStatus",
    "Oppositions",
    "Patient",
    "Professional",
    "PersonName",
    "PreviousResult",
    "Quantity",
    "RatioValue",
    "ReferenceRange",
    "Report",
    "Sex",
    "Specimen",
    "Telecom",
    "TextValue",
    "Value",
]

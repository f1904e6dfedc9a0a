"""Read a report in crbio's JSON format (``schemas/crbio-report-1.schema.json``).

Reading is two passes. The JSON Schema pass checks shapes and types; the rule pass
checks what a schema cannot: INS key and qualification rules, RPPS/FINESS/LOINC
keys, UCUM units, value sets, references between specimens, batteries and
laboratories. Every problem of both passes is reported at once, each named by its
JSON path; messages never quote patient data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastjsonschema
import jsonschema

from crbio._files import read_input
from crbio._resources import data_path
from crbio.codes import LOINC_OID, SNOMED_OID, check_loinc, check_ucum, lookup
from crbio.errors import InputError, InvalidReport, Problem
from crbio.identifiers import check_finess, check_ins_matricule, check_oid, check_rpps
from crbio.model import (
    Address,
    Battery,
    Chapter,
    Code,
    CodedValue,
    Confidentiality,
    DocumentInfo,
    Encounter,
    ExecutingLaboratory,
    IdentityStatus,
    Ins,
    InstanceIdentifier,
    IntervalValue,
    Isolate,
    Laboratory,
    LegalRepresentative,
    Masking,
    Observation,
    ObservationStatus,
    Oppositions,
    Patient,
    PersonName,
    PreviousResult,
    Professional,
    Quantity,
    RatioValue,
    ReferenceRange,
    Report,
    Sex,
    Specimen,
    Telecom,
    TextValue,
    Value,
)

__all__ = ["FORMAT", "MAX_BYTES", "load_report", "report_from_mapping"]

FORMAT = "crbio.report/1"
SCHEMA_FILE = "crbio-report-1.schema.json"
#: Largest input file accepted: far above any real report, low enough to refuse a wrong file.
MAX_BYTES = 64 * 1024 * 1024

#: Significant digits and decimal magnitude a number of the report may have.
_MAX_DIGITS = 30
_INSI_TRAIT = re.compile(r"[A-Z](?:[A-Z' -]*[A-Z'])?")
_BIRTHPLACE = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{3}")

T = TypeVar("T")


def load_report(source: str | Path | bytes) -> Report:
    """Read a report from a JSON file path or from JSON bytes.

    Raises:
        InputError: the file cannot be read or is not JSON.
        InvalidReport: the JSON breaks the format or a rule; ``problems`` lists them all.
    """
    raw = source if isinstance(source, bytes) else read_input(source, max_bytes=MAX_BYTES)
    if len(raw) > MAX_BYTES:
        raise InputError(f"input too large ({len(raw)} bytes)", code="input.too-large")
    try:
        # A leading UTF-8 BOM is common in files written by Windows tools; accept it.
        data = json.loads(raw.decode("utf-8-sig"), parse_float=Decimal)
    except UnicodeDecodeError as e:
        raise InputError(f"input is not UTF-8 (byte {e.start})", code="input.encoding") from e
    except json.JSONDecodeError as e:
        raise InputError(
            f"input is not JSON: {e.msg} at line {e.lineno}, column {e.colno}", code="input.not-json"
        ) from e
    except RecursionError:  # the json module recurses once per nested array or object
        raise InputError("input is not usable JSON: nested too deeply", code="input.not-json") from None
    if not isinstance(data, dict):
        raise InvalidReport([Problem("$", "type", "must be a JSON object")])
    return report_from_mapping(data)


def report_from_mapping(data: Mapping[str, Any]) -> Report:
    """Check a decoded JSON report and build the model from it.

    Raises:
        InvalidReport: the data breaks the format or a rule; ``problems`` lists them all.
    """
    if not isinstance(data, Mapping):
        # Callers hand over whatever their JSON decoder produced: a list or a string is refused too.
        raise InvalidReport([Problem("$", "type", "must be a JSON object")])
    problems = _schema_problems(data) + _character_problems(data)
    if problems:
        raise InvalidReport(_in_document_order(problems, data), document_id=_opaque_id(data))
    reader = _Reader()
    report = reader.report(data)
    if reader.problems:
        raise InvalidReport(_in_document_order(reader.problems, data), document_id=_opaque_id(data))
    assert report is not None
    return report


def _opaque_id(data: Mapping[str, Any]) -> str | None:
    document = data.get("document")
    value = document.get("id") if isinstance(document, Mapping) else None
    return value if isinstance(value, str) and check_oid(value) is None else None


# --- pass 1: JSON Schema and characters ----------------------------------------------

# What XML 1.0 cannot carry (C0 controls other than tab, LF and CR; lone surrogates, which JSON
# escapes can produce; U+FFFE and U+FFFF): a text holding one could never be written in a CDA.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _character_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Every string of the report holding a character no XML document can carry, by JSON path."""
    if not _any_character_problem(data):
        return []  # the usual case: paths are only worth building when one will be reported
    problems: list[Problem] = []
    pending: list[tuple[Any, str]] = [(data, "$")]
    # An explicit stack rather than recursion: the depth of the input is the caller's.
    while pending:
        node, path = pending.pop()
        if isinstance(node, str):
            found = _NOT_XML.search(node)
            if found:
                problems.append(
                    Problem(
                        path,
                        "characters",
                        f"holds a character a CDA document cannot carry (U+{ord(found.group()):04X}: "
                        "a control character, a lone surrogate or a non-character)",
                    )
                )
        elif isinstance(node, Mapping):
            pending += [(value, _join(path, str(key))) for key, value in node.items()]
        elif isinstance(node, list):
            pending += [(value, f"{path}[{i}]") for i, value in enumerate(node)]
    return problems


def _any_character_problem(data: Mapping[str, Any]) -> bool:
    """Whether :func:`_character_problems` would find anything: the same walk without the paths."""
    pending: list[Any] = [data]
    while pending:
        node = pending.pop()
        if type(node) is str or isinstance(node, str):
            if _NOT_XML.search(node):
                return True
        elif type(node) is dict or isinstance(node, Mapping):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(data_path("schemas", SCHEMA_FILE).read_text("utf-8"))
    return schema


@cache
def _gate() -> Callable[[Any], Any]:
    # The schema compiled to Python: about twenty times faster than interpreting it, but it
    # stops at the first error, so it only decides whether the full check is needed.
    return fastjsonschema.compile(_gate_schema(_schema()))  # type: ignore[no-any-return]


def _gate_schema(schema: Any) -> Any:
    """The schema as the gate compiles it: the same instances valid, fewer exceptions raised.

    fastjsonschema decides ``oneOf``, ``anyOf``, ``if`` and ``not`` by raising and catching an
    exception for every branch that fails, and on a valid report that made a few constructs
    the larger part of the gate's time. Three rewrites, each valid on exactly the instances
    the original is valid on, let a valid report pass without exceptions. They apply only
    where the pattern matches exactly; anything else is compiled as written. jsonschema
    still reads the original schema and writes every message.

    - A ``oneOf`` whose branches declare pairwise disjoint types becomes an ``anyOf``: no
      two branches can hold at once, so "exactly one" is "at least one", and ``anyOf``
      stops at the first branch that holds instead of trying them all.
    - In an object schema that requires property ``P``, an ``allOf`` of ``if P is c_i then
      T_i`` with distinct constants becomes ``if P is c_1 then T_1 else (if P is c_2 …)``:
      ``P`` being present, at most one ``if`` holds, and either form applies just its ``T``.
    - In an object schema, ``not: {required: [a], anyOf: [{required: [b]}, …]}`` ("not a
      together with any b") becomes ``dependencies: {a: {properties: {b: false, …}}}`` ("when
      a is present, no b is").
    """
    definitions = schema.get("definitions", {}) if isinstance(schema, dict) else {}

    def declared_type(node: Any) -> str | None:
        if isinstance(node, dict) and set(node) == {"$ref"} and isinstance(node["$ref"], str):
            name = node["$ref"].removeprefix("#/definitions/")
            node = definitions.get(name) if name != node["$ref"] else None
        found = node.get("type") if isinstance(node, dict) else None
        # integer is a number: the two never count as disjoint.
        return "number" if found == "integer" else found if isinstance(found, str) else None

    def const_branch(branch: Any) -> tuple[str, Any] | None:
        # {"if": {"properties": {P: {"const": c}}}, "then": {...}} -> (P, c)
        if (
            not isinstance(branch, dict)
            or set(branch) != {"if", "then"}
            or not isinstance(branch["if"], dict)
        ):
            return None
        properties = branch["if"].get("properties")
        if set(branch["if"]) != {"properties"} or not isinstance(properties, dict) or len(properties) != 1:
            return None
        ((name, test),) = properties.items()
        if not isinstance(test, dict) or set(test) != {"const"} or not isinstance(test["const"], str):
            return None
        return name, test["const"]

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: rewrite(value) for key, value in node.items()}
        branches = node.get("oneOf")
        if isinstance(branches, list) and "anyOf" not in node:
            types = [declared_type(branch) for branch in branches]
            if None not in types and len(set(types)) == len(types):
                node["anyOf"] = node.pop("oneOf")
        is_object = node.get("type") == "object"
        chain = node.get("allOf")
        if is_object and isinstance(chain, list) and chain and not {"if", "then", "else"} & set(node):
            tests = [const_branch(branch) for branch in chain]
            names = {test[0] for test in tests if test is not None}
            constants = [test[1] for test in tests if test is not None]
            required = node.get("required", [])
            if (
                None not in tests
                and len(names) == 1
                and names <= set(required)
                and len(set(constants)) == len(constants)
            ):
                nested: dict[str, Any] | None = None
                for branch in reversed(node.pop("allOf")):
                    nested = {**branch, "else": nested} if nested is not None else dict(branch)
                node.update(nested or {})
        negated = node.get("not")
        if (
            is_object
            and isinstance(negated, dict)
            and set(negated) == {"required", "anyOf"}
            and ("dependencies" not in node)
        ):
            present, alternatives = negated["required"], negated["anyOf"]
            if (
                isinstance(present, list)
                and len(present) == 1
                and isinstance(alternatives, list)
                and alternatives
                and all(
                    isinstance(a, dict) and set(a) == {"required"} and len(a["required"]) == 1
                    for a in alternatives
                )
            ):
                del node["not"]
                node["dependencies"] = {
                    present[0]: {"properties": {a["required"][0]: False for a in alternatives}}
                }
        return node

    return rewrite(schema)


@cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def _schema_problems(data: Mapping[str, Any]) -> list[Problem]:
    if data.get("format") != FORMAT:
        found = data.get("format")
        hint = "missing" if found is None else "not supported"
        return [Problem("$.format", "format", f'{hint}: this crbio reads format "{FORMAT}"')]
    try:
        _gate()(data)
        return []
    except fastjsonschema.JsonSchemaException:
        pass
    # jsonschema is the authority: it lists every problem. (Where the two engines differ,
    # on date-time formats, the rule pass reads and checks the date-times itself.)
    problems: dict[tuple[str, str], Problem] = {}
    for found in _validator().iter_errors(data):
        for leaf in _leaves(found):
            problem = _problem_from(leaf)
            problems.setdefault((problem.field, problem.message), problem)
    return list(problems.values())


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # if/then and allOf errors wrap the precise ones; custom messages sit on the wrapper.
    if error.validator in ("allOf", "then") and error.context:
        return [leaf for sub in error.context for leaf in _leaves(sub)]
    return [error]


def _problem_from(error: jsonschema.ValidationError) -> Problem:
    path = error.json_path
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    rule = str(error.validator)
    expected: Any = error.validator_value
    instance: Any = error.instance
    if rule == "required":
        present = instance if isinstance(instance, Mapping) else {}
        missing = [k for k in expected if k not in present]
        return Problem(_join(path, missing[0] if missing else "?"), "required", "is required")
    if rule == "additionalProperties":
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        return Problem(
            _join(path, extra[0]) if extra else path,
            "unknown-field",
            "is not a field of this format (misspelt?)",
        )
    if rule == "pattern" and "format" in schema:
        # Dates carry both a pattern and a format; the format is only checked when an optional
        # checker (rfc3339-validator) is installed, so name the rule after the declared format
        # to report the same rule whichever check fired.
        rule = "format"
    custom = schema.get("x-message")
    if custom:
        return Problem(path, rule, str(custom))
    if rule == "type":
        kinds = " or ".join(expected) if isinstance(expected, list) else expected
        return Problem(path, "type", f"must be of type {kinds}")
    if rule == "enum":
        return Problem(path, "enum", "must be one of: " + ", ".join(map(str, expected)))
    if rule == "const":
        return Problem(path, "const", f"must be {expected!r}")
    if rule in ("minItems", "minLength"):
        return Problem(path, rule, "must not be empty")
    if rule in ("maxItems", "maxLength"):
        return Problem(path, rule, f"is too long (at most {error.validator_value})")
    if rule == "minimum":
        return Problem(path, rule, f"must be at least {error.validator_value}")
    if rule == "dependencies":  # draft-07 spelling of dependentRequired, the rule id users see
        return Problem(path, "dependentRequired", "code and system go together")
    return Problem(path, rule, "does not have the expected form")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{path}[{key!r}]"


_LAST_STEP = re.compile(r"(?:\.[^.\[\]]+|\[[^\]]*\])$")


def _in_document_order(problems: Sequence[Problem], data: Mapping[str, Any]) -> list[Problem]:
    """The problems sorted by where their field is in the input; a missing field sorts with its parent.

    Both passes find problems in their own order (schema keywords, reading order); people read
    the input from top to bottom.
    """
    positions: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        positions.setdefault(path, len(positions))
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, _join(path, str(key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(data, "$")

    def position(field: str) -> int:
        while field not in positions:
            parent = _LAST_STEP.sub("", field)
            if parent == field:
                return 0
            field = parent
        return positions[field]

    return sorted(problems, key=lambda p: position(p.field))


# --- pass 2: rules and model ----------------------------------------------------------


class _Reader:
    """Builds the model from schema-valid data, collecting every rule problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        # Fields whose date-time could not be parsed: a stand-in value is used for them, and the
        # chronology checks that involve them are skipped so as not to report a false problem.
        self.unparsed: set[str] = set()
        self.specimen_keys: set[str] = set()
        self.lab_keys: set[str] = set()

    def problem(self, field: str, rule: str, message: str) -> None:
        self.problems.append(Problem(field, rule, message))

    def parsed(self, *fields: str) -> bool:
        """Whether the date-times of these fields were all read (chronology can be checked)."""
        return self.unparsed.isdisjoint(fields)

    # scalars

    def read_datetime(self, value: str, field: str) -> datetime:
        try:
            parsed = datetime.fromisoformat(value.replace(" ", "T"))
        except ValueError:
            self.problem(field, "datetime", "is not a valid date-time")
            self.unparsed.add(field)
            return datetime(1970, 1, 1).astimezone()
        if parsed.tzinfo is None:
            self.problem(field, "datetime", "needs a UTC offset (…+01:00)")
            return parsed.astimezone()
        return parsed

    def read_date(self, value: str, field: str) -> date | None:
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.problem(field, "date", "is not a valid date")
            return None

    def decimal(self, value: Any, field: str) -> Decimal:
        try:
            number = value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            self.problem(field, "decimal", "is not a decimal number")
            return Decimal(0)
        if not number.is_finite():
            self.problem(field, "decimal", "is not a finite number")
            return Decimal(0)
        if len(number.as_tuple().digits) > _MAX_DIGITS or abs(number.adjusted()) > _MAX_DIGITS:
            # No measurement has that many digits; written out, such a number overflows the PDF's
            # columns and Python's integer-to-text conversion limit (4300 digits).
            self.problem(
                field,
                "decimal",
                f"has too many digits (at most {_MAX_DIGITS}, and a magnitude below 1E{_MAX_DIGITS})",
            )
            return Decimal(0)
        return number

    def oid(self, value: str, field: str) -> str:
        reason = check_oid(value)
        if reason:
            self.problem(field, "oid", reason)
        return value

    def unit(self, value: str | None, field: str) -> str:
        unit = value if value not in (None, "") else "1"
        assert unit is not None
        reason = check_ucum(unit)
        if reason:
            self.problem(field, "ucum", f"{unit!r} {reason}")
        return unit

    def coded(self, value_set: str, code: str, field: str, what: str) -> Code:
        found = lookup(value_set, code)
        if found is None:
            self.problem(field, f"value-set.{value_set}", f"{code!r} is not a known {what} code")
            return Code(code=code, system="0")
        return found

    def loinc(self, code: str, display: str | None, field: str) -> Code:
        reason = check_loinc(code)
        if reason:
            self.problem(field, "loinc", f"{code!r} {reason}")
        return Code(code=code, system=LOINC_OID, display=display, system_name="LOINC")

    def identifier(self, data: Mapping[str, Any], field: str) -> InstanceIdentifier:
        return InstanceIdentifier(self.oid(data["root"], f"{field}.root"), data.get("extension"))

    def code(self, data: Mapping[str, Any], field: str) -> Code:
        return Code(
            code=data["code"],
            system=self.oid(data["system"], f"{field}.system"),
            display=data.get("display"),
            system_name=data.get("system_name"),
        )

    def address(self, data: Mapping[str, Any] | None) -> Address | None:
        if data is None:
            return None
        return Address(
            lines=tuple(data.get("lines", ())),
            house_number=data.get("house_number"),
            street_name=data.get("street_name"),
            unit_id=data.get("unit_id"),
            additional_locator=data.get("additional_locator"),
            post_box=data.get("post_box"),
            postal_code=data.get("postal_code"),
            city=data.get("city"),
            country=data.get("country"),
            use=data.get("use"),
        )

    def telecoms(self, items: Sequence[Any] | None) -> tuple[Telecom, ...]:
        result = []
        for item in items or ():
            if isinstance(item, str):
                result.append(Telecom(item))
            else:
                result.append(Telecom(item["value"], item.get("use")))
        return tuple(result)

    def name(self, data: Mapping[str, Any]) -> PersonName:
        return PersonName(
            family=data["family"],
            given=tuple(data.get("given", ())),
            prefix=data.get("prefix"),
            suffix=data.get("suffix"),
        )

    def each(self, items: Sequence[Any] | None, field: str, read: Callable[[Any, str], T]) -> tuple[T, ...]:
        return tuple(read(item, f"{field}[{i}]") for i, item in enumerate(items or ()))

    # actors

    def professional(self, data: Mapping[str, Any], field: str) -> Professional:
        rpps = data["rpps"]
        reason = check_rpps(rpps)
        if reason:
            self.problem(f"{field}.rpps", "rpps", reason)
        if len(data["name"].get("given", ())) > 1:
            # The CI-SIS header templates (author, legal authenticator, participants) hold one.
            self.problem(f"{field}.name.given", "professional.given", "a professional has one given name")
        specialty = None
        if "specialty" in data:
            specialty = self.coded(
                "specialty", data["specialty"], f"{field}.specialty", "profession/specialty (TRE_R38)"
            )
        return Professional(
            rpps=rpps,
            name=self.name(data["name"]),
            specialty=specialty,
            address=self.address(data.get("address")),
            telecoms=self.telecoms(data.get("telecom")),
            mssante=data.get("mssante"),
            organization=data.get("organization"),
        )

    def finess(self, value: str, field: str) -> str:
        reason = check_finess(value)
        if reason:
            self.problem(field, "finess", reason)
        return value

    def laboratory(self, data: Mapping[str, Any], field: str) -> Laboratory:
        address = self.address(data["address"])
        assert address is not None
        return Laboratory(
            finess=self.finess(data["finess"], f"{field}.finess"),
            name=data["name"],
            address=address,
            telecoms=self.telecoms(data["telecom"]),
            oid=self.oid(data["oid"], f"{field}.oid"),
            practice_setting=self.coded(
                "practice_setting",
                data["practice_setting"],
                f"{field}.practice_setting",
                "cadre d'exercice (TRE_A01)",
            ),
            facility_type=self.coded(
                "facility_type",
                data.get("facility_type", "SA25"),
                f"{field}.facility_type",
                "modalité d'exercice (TRE_R02)",
            ),
            accreditation=data.get("accreditation"),
            stylesheet=data.get("stylesheet"),
        )

    def executing_laboratory(self, data: Mapping[str, Any], field: str) -> ExecutingLaboratory:
        key = data["id"]
        if key in self.lab_keys:
            self.problem(f"{field}.id", "duplicate", "is used by another executing laboratory")
        self.lab_keys.add(key)
        biologist = data.get("biologist")
        setting = data.get("practice_setting")
        return ExecutingLaboratory(
            key=key,
            finess=self.finess(data["finess"], f"{field}.finess"),
            name=data["name"],
            performed_at=self.read_datetime(data["performed_at"], f"{field}.performed_at"),
            biologist=self.professional(biologist, f"{field}.biologist") if biologist else None,
            address=self.address(data.get("address")),
            telecoms=self.telecoms(data.get("telecom")),
            practice_setting=(
                self.coded(
                    "practice_setting", setting, f"{field}.practice_setting", "cadre d'exercice (TRE_A01)"
                )
                if setting
                else None
            ),
        )

    # patient

    def patient(self, data: Mapping[str, Any], field: str, at: datetime) -> Patient:
        status = IdentityStatus(data["identity_status"])
        ins = None
        if "ins" in data:
            matricule = data["ins"]["matricule"]
            reason = check_ins_matricule(matricule)
            if reason:
                self.problem(f"{field}.ins.matricule", "ins.matricule", reason)
            ins = Ins(matricule=matricule, oid=data["ins"]["oid"])
            if status is not IdentityStatus.QUALIFIED:
                self.problem(
                    f"{field}.ins",
                    "ins.not-qualified",
                    f"an INS may only be written for a qualified identity (status is {status.value}); "
                    "leave it out, the local IPP identifies the patient",
                )
        elif status is IdentityStatus.QUALIFIED:
            self.problem(f"{field}.ins", "ins.required", "is required for a qualified identity (QUAL)")
        birth_date = (
            self.read_date(data["birth_date"], f"{field}.birth_date") if "birth_date" in data else None
        )
        if birth_date is not None and self.parsed("$.validated_at") and birth_date > at.date():
            self.problem(f"{field}.birth_date", "birth-date.future", "is after the validation date")
        birthplace = data.get("birthplace_code")
        if birthplace is not None and not _BIRTHPLACE.fullmatch(birthplace):
            self.problem(
                f"{field}.birthplace_code",
                "birthplace",
                "must be an INSEE (COG) code of 5 characters (99xxx for a birth abroad)",
            )
        sex = Sex(data["sex"])
        if status is IdentityStatus.QUALIFIED:
            self.ins_traits(data, field, sex, birth_date, birthplace)
        return Patient(
            ipp=self.identifier(data["ipp"], f"{field}.ipp"),
            identity_status=status,
            birth_family_name=data["birth_family_name"],
            first_birth_given_name=data["first_birth_given_name"],
            birth_given_names=data["birth_given_names"],
            sex=sex,
            birth_date=birth_date,
            ins=ins,
            birthplace_code=birthplace,
            birthplace_name=data.get("birthplace_name"),
            used_family_name=data.get("used_family_name"),
            used_given_name=data.get("used_given_name"),
            address=self.address(data.get("address")),
            telecoms=self.telecoms(data.get("telecom")),
            legal_representatives=self.each(
                data.get("legal_representatives"),
                f"{field}.legal_representatives",
                lambda r, _: LegalRepresentative(
                    self.name(r["name"]), self.address(r.get("address")), self.telecoms(r.get("telecom"))
                ),
            ),
            oppositions=Oppositions(**data.get("oppositions", {})),
        )

    def ins_traits(
        self, data: Mapping[str, Any], field: str, sex: Sex, birth_date: date | None, birthplace: str | None
    ) -> None:
        """When the INS is written, every INS trait is mandatory and must be as INSi returns it."""
        if birth_date is None:
            self.problem(f"{field}.birth_date", "ins.trait", "is required when the INS is written")
        if birthplace is None:
            self.problem(f"{field}.birthplace_code", "ins.trait", "is required when the INS is written")
        if sex is Sex.UNKNOWN:
            self.problem(f"{field}.sex", "ins.trait", "must be M or F when the INS is written")
        for trait in ("birth_family_name", "first_birth_given_name", "birth_given_names"):
            if not _INSI_TRAIT.fullmatch(data[trait]):
                self.problem(
                    f"{field}.{trait}",
                    "ins.trait",
                    "must be written as INSi returns it: capitals A-Z, space, hyphen, apostrophe",
                )
        given = data["birth_given_names"].split(" ")
        if data["first_birth_given_name"] != given[0]:
            self.problem(
                f"{field}.first_birth_given_name", "ins.trait", "must be the first of the birth given names"
            )

    # specimens and results

    def specimen(self, data: Mapping[str, Any], field: str) -> Specimen:
        key = data["id"]
        if key in self.specimen_keys:
            self.problem(f"{field}.id", "duplicate", "is used by another specimen")
        self.specimen_keys.add(key)
        collected = self.read_datetime(data["collected_at"], f"{field}.collected_at")
        received = (
            self.read_datetime(data["received_at"], f"{field}.received_at") if "received_at" in data else None
        )
        if (
            received is not None
            and self.parsed(f"{field}.received_at", f"{field}.collected_at")
            and received < collected
        ):
            self.problem(f"{field}.received_at", "chronology", "is before collected_at")
        return Specimen(
            key=key,
            type=self.coded("specimen_type", data["type"], f"{field}.type", "specimen type (HL7 table 0487)"),
            collected_at=collected,
            received_at=received,
            label=data.get("label"),
            procedure=self.code(data["procedure"], f"{field}.procedure") if "procedure" in data else None,
        )

    def refs(self, data: Mapping[str, Any], field: str) -> tuple[tuple[str, ...], str | None]:
        specimens = tuple(data.get("specimens", ()))
        for i, key in enumerate(specimens):
            if key not in self.specimen_keys:
                self.problem(f"{field}.specimens[{i}]", "reference", "names no specimen of the report")
        lab = data.get("performed_by")
        if lab is not None and lab not in self.lab_keys:
            self.problem(f"{field}.performed_by", "reference", "names no executing laboratory of the report")
        return specimens, lab

    def quantity(self, value: Any, unit: str | None, field: str, unit_field: str) -> Quantity:
        return Quantity(self.decimal(value, field), self.unit(unit, unit_field))

    def value(self, data: Mapping[str, Any], field: str) -> Value:
        kind = data["type"]
        if kind == "quantity":
            quantity = self.quantity(data["value"], data.get("unit"), f"{field}.value", f"{field}.unit")
            comparator = data.get("comparator")
            if comparator is None:
                return quantity
            if comparator in ("<", "<="):
                return IntervalValue(high=quantity, high_inclusive=comparator == "<=")
            return IntervalValue(low=quantity, low_inclusive=comparator == ">=")
        if kind == "coded":
            code = None
            if "code" in data:
                code = Code(data["code"], self.oid(data["system"], f"{field}.system"), data.get("display"))
            return CodedValue(text=data["text"], code=code)
        if kind == "text":
            return TextValue(data["text"])
        if kind == "ratio":
            denominator = self.decimal(data["denominator"], f"{field}.denominator")
            if denominator == 0:
                self.problem(f"{field}.denominator", "ratio", "must not be zero")
            return RatioValue(self.decimal(data["numerator"], f"{field}.numerator"), denominator)
        low = data.get("low")
        high = data.get("high")
        interval = IntervalValue(
            low=self.quantity(low["value"], low.get("unit"), f"{field}.low.value", f"{field}.low.unit")
            if low
            else None,
            high=self.quantity(high["value"], high.get("unit"), f"{field}.high.value", f"{field}.high.unit")
            if high
            else None,
            low_inclusive=data.get("low_inclusive", True),
            high_inclusive=data.get("high_inclusive", True),
        )
        if interval.low and interval.high and interval.low.value > interval.high.value:
            self.problem(field, "interval", "low bound is above high bound")
        return interval

    def reference_range(self, data: Mapping[str, Any], value: Value | None, field: str) -> ReferenceRange:
        if "unit" in data:
            unit = self.unit(data["unit"], f"{field}.unit")
        elif isinstance(value, Quantity):
            unit = value.unit  # already checked with the value
        elif isinstance(value, IntervalValue) and (value.high or value.low):
            unit = (value.high or value.low or Quantity(Decimal(0))).unit
        else:
            unit = "1"
        low = Quantity(self.decimal(data["low"], f"{field}.low"), unit) if "low" in data else None
        high = Quantity(self.decimal(data["high"], f"{field}.high"), unit) if "high" in data else None
        if low and high and low.value > high.value:
            self.problem(field, "reference-range", "low bound is above high bound")
        return ReferenceRange(low=low, high=high, text=data.get("text"))

    def observation(self, data: Mapping[str, Any], field: str, default_time: datetime) -> Observation:
        code = (
            self.loinc(data["loinc"], data.get("loinc_display", data["label"]), f"{field}.loinc")
            if "loinc" in data
            else None
        )
        status = ObservationStatus(data.get("status", "completed"))
        value = self.value(data["value"], f"{field}.value") if "value" in data else None
        if value is None and status is ObservationStatus.COMPLETED:
            self.problem(
                f"{field}.value",
                "required",
                'is required for a completed result (use status "aborted" for a result not obtained)',
            )
        interpretation = None
        if "interpretation" in data:
            interpretation = self.coded(
                "interpretation",
                data["interpretation"],
                f"{field}.interpretation",
                "result interpretation (HL7 ObservationInterpretation)",
            )
        method = None
        if "method" in data:
            m = data["method"]
            if "code" in m and "system" not in m:
                self.problem(f"{field}.method.system", "required", "is required with a method code")
            method = Code(
                m.get("code", ""),
                self.oid(m["system"], f"{field}.method.system") if "system" in m else "",
                m["display"],
            )
        return Observation(
            label=data["label"],
            time=self.read_datetime(data["time"], f"{field}.time") if "time" in data else default_time,
            code=code,
            local_code=self.code(data["local_code"], f"{field}.local_code") if "local_code" in data else None,
            value=value,
            reference_range=(
                self.reference_range(data["reference_range"], value, f"{field}.reference_range")
                if "reference_range" in data
                else None
            ),
            interpretation=interpretation,
            method=method,
            status=status,
            comment=data.get("comment"),
            previous=self.each(
                data.get("previous"),
                f"{field}.previous",
                lambda p, f: PreviousResult(
                    self.value(p["value"], f"{f}.value"), self.read_datetime(p["time"], f"{f}.time")
                ),
            ),
        )

    def battery(self, data: Mapping[str, Any], field: str, default_time: datetime) -> Battery:
        specimens, lab = self.refs(data, field)
        return Battery(
            label=data["label"],
            observations=self.each(
                data["observations"],
                f"{field}.observations",
                lambda o, f: self.observation(o, f, default_time),
            ),
            code=(
                self.loinc(data["loinc"], data.get("loinc_display", data["label"]), f"{field}.loinc")
                if "loinc" in data
                else None
            ),
            specimens=specimens,
            performed_by=lab,
            comment=data.get("comment"),
        )

    def isolate(self, data: Mapping[str, Any], field: str, default_time: datetime) -> Isolate:
        specimens, lab = self.refs(data, field)
        organism = self.code(data["organism"], f"{field}.organism")
        if organism.system != SNOMED_OID:
            self.problem(
                f"{field}.organism.system", "snomed", f"an organism is coded in SNOMED CT ({SNOMED_OID})"
            )
        time = self.read_datetime(data["time"], f"{field}.time") if "time" in data else default_time
        if not data.get("observations") and not data.get("antibiogram"):
            self.problem(field, "isolate.empty", "an isolate needs observations or an antibiogram")
        return Isolate(
            organism=organism,
            label=data["label"],
            time=time,
            observations=self.each(
                data.get("observations"), f"{field}.observations", lambda o, f: self.observation(o, f, time)
            ),
            antibiogram=self.each(
                data.get("antibiogram"), f"{field}.antibiogram", lambda o, f: self.observation(o, f, time)
            ),
            specimens=specimens,
            performed_by=lab,
            comment=data.get("comment"),
        )

    def chapter(self, data: Mapping[str, Any], field: str, default_time: datetime) -> Chapter:
        if not data.get("batteries") and not data.get("isolates"):
            self.problem(field, "chapter.empty", "a chapter needs at least one battery or isolate")
        return Chapter(
            code=self.loinc(data["code"], data.get("display", data["title"]), f"{field}.code"),
            title=data["title"],
            batteries=self.each(
                data.get("batteries"), f"{field}.batteries", lambda b, f: self.battery(b, f, default_time)
            ),
            isolates=self.each(
                data.get("isolates"), f"{field}.isolates", lambda i, f: self.isolate(i, f, default_time)
            ),
            comment=data.get("comment"),
        )

    # document

    def document(self, data: Mapping[str, Any], field: str) -> DocumentInfo:
        version = data.get("version", 1)
        replaces = data.get("replaces")
        doc_id = self.oid(data["id"], f"{field}.id") if "id" in data else None
        set_id = self.oid(data["set_id"], f"{field}.set_id") if "set_id" in data else None
        if replaces is not None:
            self.oid(replaces, f"{field}.replaces")
        if version > 1 and replaces is None:
            self.problem(
                f"{field}.replaces",
                "amendment",
                "is required when version > 1: the id of the version this one replaces",
            )
        if version > 1 and set_id is None:
            self.problem(
                f"{field}.set_id",
                "amendment",
                "is required when version > 1: the set id shared with the replaced version",
            )
        if replaces is not None and version == 1:
            self.problem(
                f"{field}.version", "amendment", "must be above 1 for a version that replaces another"
            )
        if replaces is not None and replaces == doc_id:
            self.problem(f"{field}.replaces", "amendment", "must differ from the id of this version")
        masking = data.get("masking", {})
        return DocumentInfo(
            id=doc_id,
            set_id=set_id,
            version=version,
            replaces=replaces,
            created_at=self.read_datetime(data["created_at"], f"{field}.created_at")
            if "created_at" in data
            else None,
            confidentiality=Confidentiality(data.get("confidentiality", "N")),
            masking=Masking(**masking),
            secret_connection=data.get("secret_connection", False),
            before_validation=data.get("before_validation", False),
        )

    def report(self, data: Mapping[str, Any]) -> Report | None:
        document = self.document(data.get("document", {}), "$.document")
        validated_at = self.read_datetime(data["validated_at"], "$.validated_at")
        if (
            document.created_at is not None
            and self.parsed("$.document.created_at", "$.validated_at")
            and document.created_at < validated_at
        ):
            self.problem("$.document.created_at", "chronology", "is before validated_at")
        specimens = self.each(data["specimens"], "$.specimens", self.specimen)
        executing = self.each(
            data.get("executing_laboratories"), "$.executing_laboratories", self.executing_laboratory
        )
        chapters = self.each(data["chapters"], "$.chapters", lambda c, f: self.chapter(c, f, validated_at))
        encounter_data = data.get("encounter", {})
        start = (
            self.read_datetime(encounter_data["start"], "$.encounter.start")
            if "start" in encounter_data
            else min(s.collected_at for s in specimens)
        )
        encounter = Encounter(
            kind=self.coded("encounter", encounter_data.get("kind", "AMB"), "$.encounter.kind", "encounter"),
            start=start,
            id=self.identifier(encounter_data["id"], "$.encounter.id") if "id" in encounter_data else None,
        )
        report = Report(
            document=document,
            laboratory=self.laboratory(data["laboratory"], "$.laboratory"),
            biologist=self.professional(data["biologist"], "$.biologist"),
            validated_at=validated_at,
            patient=self.patient(data["patient"], "$.patient", validated_at),
            prescriber=self.professional(data["prescriber"], "$.prescriber"),
            encounter=encounter,
            specimens=specimens,
            chapters=chapters,
            copy_recipients=self.each(data.get("copy_recipients"), "$.copy_recipients", self.professional),
            executing_laboratories=executing,
            order_id=self.identifier(data["order_id"], "$.order_id") if "order_id" in data else None,
            prescribed_at=(
                self.read_datetime(data["prescribed_at"], "$.prescribed_at")
                if "prescribed_at" in data
                else None
            ),
            conclusion=data.get("conclusion"),
            comments=tuple(data.get("comments", ())),
        )
        if (
            report.document.secret_connection
            and self.parsed("$.validated_at")
            and not report.patient.is_minor_at(validated_at)
        ):
            self.problem(
                "$.document.secret_connection",
                "secret-connection",
                "a secret connection is only for a minor patient",
            )
        return report

"""Conformity scenarios: the reports, the steps, the faults, and what must happen.

A scenario is a TOML or JSON file (the format is described in ``docs/conformity.md``). It names
one or more report inputs (a bundled sample ``sample:01-biochimie`` or a path relative to the
scenario file) with optional modifications (``set`` a JSON path to a value, ``drop`` a path),
then the steps run against the simulators, in order: ``send`` a report, ``replace`` with a
report that amends an earlier one, ``release`` a masked report (a new version without its
masking), ``delete`` a document. Each step may inject faults into a simulator and says what
must happen: the deliveries of the routing plan, the destinations left out with their reason
codes, the outcome and number of attempts of each delivery, the DMP entries' statuses, and
facts of the messages (XDM action, X-MSS headers, OBX-11, HL7 flags, DMP confidentiality).

Loading checks everything it can before anything runs: unknown keys, wrong types, unknown
report keys, and each report input itself (it must load as a valid crbio report). Every
problem is a :class:`ScenarioError` naming the file and the field.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from crbio.dispatch.hl7v2 import FLAG_ORDER
from crbio.errors import InputError, InvalidReport
from crbio.input import report_from_mapping
from crbio.model import Report
from crbio.simulators.base import Fault

__all__ = [
    "CATALOGUE_DIR",
    "DESTINATIONS",
    "Expectation",
    "FaultSpec",
    "ReportSpec",
    "Scenario",
    "ScenarioError",
    "SimulationSpec",
    "Step",
    "catalogue",
    "load_scenario",
    "report_json",
    "resolve_scenarios",
]

CATALOGUE_DIR = Path(__file__).resolve().parent / "catalogue"
SUFFIXES = (".toml", ".json")

DESTINATIONS = ("dmp", "mssante:professional", "mssante:patient", "hl7v2")
"""The destinations expectations name: a channel, and for MSSanté the kind of recipient."""

SERVERS = ("dmp", "mssante", "hl7v2")
STEP_ACTIONS = ("send", "replace", "release", "delete")
DELIVERY_ACTIONS = ("submit", "replace", "delete")
DMP_STATUSES = ("Approved", "Deprecated", "Deleted", "absent")
MASKING_FLAGS = ("masque_ps", "invisible_patient", "invisible_representants_legaux")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_HEADER = re.compile(r"X-MSS-[A-Z0-9-]+")
_SAMPLE = "sample:"


class ScenarioError(InputError):
    """A scenario file is unusable; the message names the file and the field."""

    code = "conformity.scenario"


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """One report of a scenario, ready to build.

    Attributes:
        key: Its name in the scenario (``v1``, ``v2``…).
        source: Where it comes from, for people: ``sample:01-biochimie`` or the input file name.
        data: The report JSON after the modifications (what is built).
        report: ``data`` read as a report.
        modifications: The modifications applied, one line each, for the evidence.
        min_pages: The least number of pages its PDF must have, when the scenario says so.
    """

    key: str
    source: str
    data: Mapping[str, Any]
    report: Report
    modifications: tuple[str, ...] = ()
    min_pages: int | None = None

    @property
    def document_id(self) -> str | None:
        """The document OID the input gives (None: the builder will assign one)."""
        return self.report.document.id


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Faults injected into one simulator before a step: the next ``times`` requests get ``fault``."""

    server: str
    fault: Fault
    times: int = 1


@dataclass(frozen=True, slots=True)
class Expectation:
    """What must happen in a step; None or empty means "not checked" except where noted.

    ``deliveries`` (destination → action) and ``suppressed`` (destination → reason codes) are
    compared exactly with the routing plan: a destination listed in neither must not appear.
    ``outcomes`` defaults to ``acknowledged`` for every delivery.
    """

    deliveries: Mapping[str, str]
    suppressed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    outcomes: Mapping[str, str] = field(default_factory=dict)
    attempts: Mapping[str, int] = field(default_factory=dict)
    dmp_status: Mapping[str, str] = field(default_factory=dict)
    dmp_confidentiality: tuple[str, ...] | None = None
    vihf_confidentiality: tuple[str, ...] | None = None
    xdm_action: str | None = None
    mss_headers: Mapping[str, str] = field(default_factory=dict)
    mssante_professionals: tuple[str, ...] | None = None
    obx11: str | None = None
    hl7_flags: Mapping[str, str] = field(default_factory=dict)

    def outcome(self, destination: str) -> str:
        """The expected final state of a destination's deliveries (``acknowledged`` by default)."""
        return self.outcomes.get(destination, "acknowledged")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a scenario.

    Attributes:
        index: Its position, from 1.
        action: ``send``, ``replace``, ``release`` or ``delete``.
        report: The key of the report it sends, or whose document it deletes; for a release,
            the key of the new version it creates (``as``).
        faults: Faults injected before the step.
        expect: What must happen.
        timeout: Seconds the deliveries may take to settle.
    """

    index: int
    action: str
    report: str
    faults: tuple[FaultSpec, ...]
    expect: Expectation
    timeout: float = 30.0

    @property
    def label(self) -> str:
        """``2-replace``: the step's directory name in the evidence bundle."""
        return f"{self.index}-{self.action}"


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """How the simulators are set up: the MSSanté sender used and the patients the DMP knows."""

    mssante: str = "smtp"
    dmp_known_patients: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A loaded scenario.

    Attributes:
        name: Its name (the file's stem unless the file gives one): the evidence directory.
        title: One line for people.
        description: A paragraph for people.
        path: The file it was read from.
        text: The file's text, kept in the evidence.
        reports: The reports by key, including the new versions ``release`` steps create.
        steps: The steps, in order.
        simulation: How the simulators are set up.
        builtin: Whether it belongs to crbio's catalogue.
    """

    name: str
    title: str
    description: str
    path: Path
    text: str
    reports: Mapping[str, ReportSpec]
    steps: tuple[Step, ...]
    simulation: SimulationSpec = SimulationSpec()
    builtin: bool = False


# --- JSON helpers ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` with its Decimals turned into the float of the same (shortest) spelling."""
    if isinstance(value, Decimal):
        # Python writes a float in the shortest spelling that reads back the same: "4.89" stays 4.89.
        return float(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def report_json(data: Mapping[str, Any]) -> bytes:
    """A report's JSON as written in the evidence bundle (UTF-8, indented)."""
    return (json.dumps(_jsonable(data), ensure_ascii=False, indent=1) + "\n").encode("utf-8")


# --- the catalogue -----------------------------------------------------------------------------


def catalogue() -> list[Path]:
    """The built-in scenario files, in name order."""
    return sorted(p for p in CATALOGUE_DIR.iterdir() if p.suffix in SUFFIXES and p.is_file())


def resolve_scenarios(names_or_files: Sequence[str] | None) -> list[Scenario]:
    """Load the scenarios named: built-in names and/or scenario files; all of the catalogue when empty.

    A built-in scenario is named without its file's order prefix (``nominal`` for
    ``01-nominal.toml``); anything else is read as a scenario file.

    Raises:
        ScenarioError: an unknown name, an unreadable or invalid file, two scenarios of one name.
    """
    files = catalogue()
    builtin = {default_name(p): p for p in files} | {p.stem: p for p in files}
    scenarios: list[Scenario] = []
    if not names_or_files:
        scenarios = [load_scenario(p, builtin=True) for p in files]
    for item in names_or_files or ():
        if item in builtin:
            scenarios.append(load_scenario(builtin[item], builtin=True))
            continue
        path = Path(item)
        if path.suffix not in SUFFIXES and not path.exists():
            known = ", ".join(default_name(p) for p in files)
            raise ScenarioError(f"{item}: no such built-in scenario (one of {known}) nor scenario file")
        scenarios.append(load_scenario(path))
    seen: dict[str, Path] = {}
    for scenario in scenarios:
        if scenario.name in seen:
            other = seen[scenario.name].name
            raise ScenarioError(f"{scenario.path.name}: name: {scenario.name!r} is also the name of {other}")
        seen[scenario.name] = scenario.path
    return scenarios


def default_name(path: Path) -> str:
    """A scenario's name when its file gives none: the file's stem without its ``NN-`` order prefix."""
    return re.sub(r"\A[0-9]+-", "", path.stem)


# --- loading -----------------------------------------------------------------------------------


def load_scenario(path: str | Path, *, builtin: bool = False) -> Scenario:
    """Read and check a scenario file (TOML or JSON) and the report inputs it names.

    Raises:
        ScenarioError: the file cannot be read, is not TOML/JSON, or a field is wrong; the
            message names the file and the field (``steps[2].expect.deliveries.dmp``).
    """
    file = Path(path)
    label = file.name
    if file.suffix not in SUFFIXES:
        raise ScenarioError(f"{label}: a scenario file is .toml or .json")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"{label}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{label}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{label}: not valid TOML ({error})") from None
    except json.JSONDecodeError as error:
        raise ScenarioError(f"{label}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:  # tomllib and json recurse once per nesting level
        raise ScenarioError(f"{label}: nested too deeply") from None
    return _Reader(file, text, builtin).scenario(data)


class _Reader:
    """Reads one scenario file's data, naming the field of every problem."""

    def __init__(self, file: Path, text: str, builtin: bool) -> None:
        self.file = file
        self.text = text
        self.builtin = builtin

    def fail(self, where: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.file.name}: {where}: {problem}")

    # -- typed access

    def table(
        self, data: Mapping[str, Any], key: str, where: str, *, required: bool = False
    ) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(_join(where, key), "required")
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(_join(where, key), "must be a table")
        return dict(value)

    def only(self, data: Mapping[str, Any], where: str, allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(_join(where, key), f"unknown key (expected one of {', '.join(allowed)})")

    def string(self, data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(_join(where, key), "required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(_join(where, key), "must be a non-empty string")
        return value

    def choice(self, data: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> str | None:
        value = self.string(data, key, where, required=False)
        if value is not None and value not in choices:
            raise self.fail(_join(where, key), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, "must be a list of non-empty strings")
        return tuple(value)

    def integer(self, value: Any, where: str, *, least: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise self.fail(where, f"must be a whole number of at least {least}")
        return value

    # -- the scenario

    def scenario(self, data: Any) -> Scenario:
        if not isinstance(data, Mapping):
            raise self.fail("(top)", "must be a table")
        self.only(data, "", ("name", "title", "description", "simulation", "reports", "steps"))
        name = self.string(data, "name", "", required=False) or default_name(self.file)
        if not _NAME.fullmatch(name):
            raise self.fail("name", "must be lower-case letters, digits, '-' or '_' (a directory name)")
        title = self.string(data, "title", "") or ""
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", "must be a string")
        simulation = self.simulation(self.table(data, "simulation", ""))
        reports_data = self.table(data, "reports", "", required=True)
        if not reports_data:
            raise self.fail("reports", "names no report")
        reports: dict[str, ReportSpec] = {}
        for key, spec in reports_data.items():
            reports[key] = self.report(key, spec, f"reports.{key}")
        steps_data = data.get("steps")
        if not isinstance(steps_data, list) or not steps_data:
            raise self.fail("steps", "required: a list of steps (one [[steps]] table each)")
        steps: list[Step] = []
        sent: set[str] = set()
        for number, step_data in enumerate(steps_data, start=1):
            steps.append(self.step(number, step_data, reports, sent))
        return Scenario(
            name=name,
            title=title,
            description=description.strip(),
            path=self.file,
            text=self.text,
            reports=reports,
            steps=tuple(steps),
            simulation=simulation,
            builtin=self.builtin,
        )

    def simulation(self, data: Mapping[str, Any]) -> SimulationSpec:
        self.only(data, "simulation", ("mssante", "dmp_known_patients"))
        mssante = self.choice(data, "mssante", "simulation", ("smtp", "operator-api")) or "smtp"
        known = data.get("dmp_known_patients")
        patients = None if known is None else self.known_patients(known)
        return SimulationSpec(mssante=mssante, dmp_known_patients=patients)

    def known_patients(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail("simulation.dmp_known_patients", "must be a list of INS matricules (strings)")
        return tuple(value)

    # -- reports

    def report(self, key: str, spec: Any, where: str) -> ReportSpec:
        if not _KEY.fullmatch(key):
            raise self.fail(where, "a report key is letters, digits, '-' or '_'")
        if not isinstance(spec, Mapping):
            raise self.fail(where, "must be a table with at least 'input'")
        self.only(spec, where, ("input", "set", "drop", "min_pages"))
        source = self.string(spec, "input", where)
        assert source is not None
        data = self.input(source, f"{where}.input")
        modifications: list[str] = []
        changes = _flatten(self.table(spec, "set", where))
        for path, value in changes.items():
            _set_path(data, path, value, lambda problem, p=path: self.fail(f"{where}.set.{p}", problem))
            modifications.append(f"set {path} = {json.dumps(_jsonable(value), ensure_ascii=False)}")
        drops = self.strings(spec["drop"], f"{where}.drop") if "drop" in spec else ()
        for path in drops:
            _drop_path(data, path, lambda problem, p=path: self.fail(f"{where}.drop ({p})", problem))
            modifications.append(f"drop {path}")
        min_pages = (
            self.integer(spec["min_pages"], f"{where}.min_pages", least=1) if "min_pages" in spec else None
        )
        return ReportSpec(key, source, data, self.read_report(data, where), tuple(modifications), min_pages)

    def input(self, source: str, where: str) -> dict[str, Any]:
        if source.startswith(_SAMPLE):
            from crbio._resources import data_path

            name = source[len(_SAMPLE) :]
            path = data_path("samples") / f"{name}.json"
            if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not path.is_file():
                raise self.fail(where, f"no bundled sample {name!r}")
        else:
            path = Path(source) if Path(source).is_absolute() else self.file.parent / source
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise self.fail(where, f"{source}: cannot be read ({error.strerror})") from None
        try:
            data = json.loads(raw.decode("utf-8-sig"), parse_float=Decimal)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise self.fail(where, f"{source}: not a JSON report") from None
        if not isinstance(data, dict):
            raise self.fail(where, f"{source}: not a JSON report")
        return data

    def read_report(self, data: Mapping[str, Any], where: str) -> Report:
        # Read back from the JSON written to the evidence, so what is built is what is shown.
        text = report_json(data)
        try:
            return report_from_mapping(json.loads(text, parse_float=Decimal))
        except InvalidReport as error:
            first = error.problems[0] if error.problems else None
            more = f" (and {len(error.problems) - 1} more)" if len(error.problems) > 1 else ""
            raise self.fail(where, f"the report is invalid: {first}{more}") from None
        except InputError as error:
            raise self.fail(where, f"the report is unusable: {error}") from None

    # -- steps

    def step(self, number: int, data: Any, reports: dict[str, ReportSpec], sent: set[str]) -> Step:
        where = f"steps[{number}]"
        if not isinstance(data, Mapping):
            raise self.fail(where, "must be a table")
        action = self.choice(data, "action", where, STEP_ACTIONS)
        if action is None:
            raise self.fail(f"{where}.action", f"required: one of {', '.join(STEP_ACTIONS)}")
        allowed = ["action", "report", "faults", "expect", "timeout"]
        if action == "release":
            allowed += ["as", "unmask", "id", "created_at"]
        self.only(data, where, allowed)
        key = self.string(data, "report", where)
        assert key is not None
        if key not in reports:
            raise self.fail(f"{where}.report", f"no report {key!r} in [reports]")
        spec = reports[key]
        if action == "send" and spec.report.document.is_amendment:
            raise self.fail(
                f"{where}.report", f"report {key!r} replaces an earlier version: use action 'replace'"
            )
        if action == "replace":
            replaced = spec.report.document.replaces
            if replaced is None:
                raise self.fail(f"{where}.report", f"report {key!r} does not replace an earlier version")
        if action in ("release", "delete") and key not in sent:
            raise self.fail(f"{where}.report", f"report {key!r} is not sent by an earlier step")
        if action == "release":
            key = self.release(data, spec, reports, where)
        sent.add(key)
        faults = self.faults(data.get("faults", []), f"{where}.faults")
        timeout = data.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
            raise self.fail(f"{where}.timeout", "must be a number of seconds between 0 and 600")
        expect = self.expectation(
            self.table(data, "expect", where, required=True), f"{where}.expect", reports
        )
        return Step(number, action, key, faults, expect, float(timeout))

    def release(
        self, data: Mapping[str, Any], spec: ReportSpec, reports: dict[str, ReportSpec], where: str
    ) -> str:
        """Create the released version of a masked report: version + 1, replacing it, unmasked."""
        new_key = self.string(data, "as", where, required=False) or f"{spec.key}-released"
        if new_key in reports or not _KEY.fullmatch(new_key):
            raise self.fail(f"{where}.as", f"{new_key!r} is not a new report key")
        unmask = self.strings(data["unmask"], f"{where}.unmask") if "unmask" in data else MASKING_FLAGS
        for flag in unmask:
            if flag not in MASKING_FLAGS:
                raise self.fail(f"{where}.unmask", f"{flag!r} is not one of {', '.join(MASKING_FLAGS)}")
        old = spec.report.document
        if old.id is None:
            raise self.fail(
                f"{where}.report", f"report {spec.key!r} must give its document id to be released"
            )
        document = copy.deepcopy(dict(spec.data["document"]))
        masking = {k: v for k, v in dict(document.get("masking", {})).items() if k not in unmask}
        document.update(
            version=old.version + 1, replaces=old.id, set_id=old.set_id or old.id, masking=masking
        )
        document.pop("id", None)
        document.pop("created_at", None)
        for name in ("id", "created_at"):
            value = self.string(data, name, where, required=False)
            if value is not None:
                document[name] = value
        derived = copy.deepcopy(dict(spec.data))
        derived["document"] = document
        lines = (
            *spec.modifications,
            f"released from {spec.key}: version {old.version + 1}, unmasked {', '.join(unmask)}",
        )
        reports[new_key] = ReportSpec(
            new_key, spec.source, derived, self.read_report(derived, where), lines, spec.min_pages
        )
        return new_key

    def faults(self, value: Any, where: str) -> tuple[FaultSpec, ...]:
        if not isinstance(value, list):
            raise self.fail(where, "must be a list of {server, fault, times} tables")
        out = []
        for n, item in enumerate(value):
            here = f"{where}[{n}]"
            if not isinstance(item, Mapping):
                raise self.fail(here, "must be a table {server, fault, times}")
            self.only(item, here, ("server", "fault", "times"))
            server = self.choice(item, "server", here, SERVERS)
            kind = self.choice(item, "fault", here, tuple(f.value for f in Fault))
            if server is None or kind is None:
                raise self.fail(here, "'server' and 'fault' are required")
            times = self.integer(item.get("times", 1), f"{here}.times", least=1)
            out.append(FaultSpec(server, Fault(kind), times))
        return tuple(out)

    def expectation(
        self, data: Mapping[str, Any], where: str, reports: Mapping[str, ReportSpec]
    ) -> Expectation:
        self.only(
            data,
            where,
            (
                "deliveries",
                "suppressed",
                "outcomes",
                "attempts",
                "dmp_status",
                "dmp_confidentiality",
                "vihf_confidentiality",
                "xdm_action",
                "mss_headers",
                "mssante_professionals",
                "obx11",
                "hl7_flags",
            ),
        )
        if "deliveries" not in data:
            raise self.fail(
                f"{where}.deliveries", "required: destination = action for every delivery planned"
            )
        deliveries = {
            dest: self.value_in(value, f"{where}.deliveries.{dest}", DELIVERY_ACTIONS)
            for dest, value in self.destinations(data, "deliveries", where).items()
        }
        suppressed = {
            dest: self.strings(value, f"{where}.suppressed.{dest}")
            for dest, value in self.destinations(data, "suppressed", where).items()
        }
        outcomes = {}
        for dest, value in self.destinations(data, "outcomes", where).items():
            if not isinstance(value, str) or not (
                value == "acknowledged" or value == "dead" or value.startswith("dead:")
            ):
                raise self.fail(
                    f"{where}.outcomes.{dest}", "must be 'acknowledged', 'dead' or 'dead:<reason>'"
                )
            outcomes[dest] = value
        attempts = {
            dest: self.integer(value, f"{where}.attempts.{dest}", least=1)
            for dest, value in self.destinations(data, "attempts", where).items()
        }
        dmp_status = {}
        for key, value in self.table(data, "dmp_status", where).items():
            if key not in reports:
                raise self.fail(f"{where}.dmp_status.{key}", "no such report")
            dmp_status[key] = self.value_in(value, f"{where}.dmp_status.{key}", DMP_STATUSES)
        headers = {}
        for name, value in self.table(data, "mss_headers", where).items():
            if not _HEADER.fullmatch(name) or not isinstance(value, str):
                raise self.fail(
                    f"{where}.mss_headers.{name}", "an X-MSS-* header name and a string ('' = absent)"
                )
            headers[name] = value
        flags = {}
        for code, value in self.table(data, "hl7_flags", where).items():
            if code not in FLAG_ORDER:
                raise self.fail(f"{where}.hl7_flags.{code}", f"not one of {', '.join(FLAG_ORDER)}")
            flags[code] = self.value_in(value, f"{where}.hl7_flags.{code}", ("Y", "N"))
        return Expectation(
            deliveries=deliveries,
            suppressed=suppressed,
            outcomes=outcomes,
            attempts=attempts,
            dmp_status=dmp_status,
            dmp_confidentiality=self.optional_strings(data, "dmp_confidentiality", where),
            vihf_confidentiality=self.optional_strings(data, "vihf_confidentiality", where),
            xdm_action=self.choice(data, "xdm_action", where, ("C", "D", "none")),
            mss_headers=headers,
            mssante_professionals=self.optional_strings(data, "mssante_professionals", where),
            obx11=self.choice(data, "obx11", where, ("F", "C", "D")),
            hl7_flags=flags,
        )

    def destinations(self, data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
        table = self.table(data, key, where)
        for dest in table:
            if dest not in DESTINATIONS:
                raise self.fail(f"{where}.{key}.{dest}", f"not a destination ({', '.join(DESTINATIONS)})")
        return table

    def value_in(self, value: Any, where: str, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(where, f"must be one of {', '.join(choices)}")
        return value

    def optional_strings(self, data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}.{key}", "must be a list of strings")
        return tuple(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"patient": {"sex": "F"}}`` as ``{"patient.sex": "F"}``: a table given to ``set`` is merged.

    TOML reads an unquoted dotted key (``patient.sex = "F"``) as nested tables; flattening
    them keeps ``set`` from replacing a whole object by the one field written.
    """
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _steps(path: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in path.split(".")]


def _set_path(data: dict[str, Any], path: str, value: Any, fail: Any) -> None:
    """Set a dotted JSON path (``patient.oppositions.dmp``, ``copy_recipients.0.mssante``)."""
    parts = _steps(path)
    node: Any = data
    for part in parts[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise fail("no such list item")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise fail(f"{part!r} is not inside a JSON object")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise fail("no such list item")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise fail("the parent is not a JSON object")


def _drop_path(data: dict[str, Any], path: str, fail: Any) -> None:
    """Remove a dotted JSON path; it must exist."""
    parts = _steps(path)
    node: Any = data
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            raise fail("no such field") from None
    last = parts[-1]
    try:
        del node[last]
    except (KeyError, IndexError, TypeError):
        raise fail("no such field") from None

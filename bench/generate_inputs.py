"""Generate many varied, valid crbio report inputs from the bundled samples.

    python bench/generate_inputs.py N OUTDIR [--seed S] [--results 10|40|300] [--per-dir 1000]

Each report takes its frame (laboratory, biologist, prescriber, copies, masking, encounter,
comments…) from one sample and its results from a pool of every sample's batteries and
isolates, until it holds the number of results asked for. Every report gets fresh document
and set ids, a fresh patient (names, sex, birth date and place, a valid INS matricule whose
key matches, or a provisional identity without INS), an IPP, an order id, values scattered
around the originals (interpretations follow the reference range) and all its times moved
by the same random number of days into the past. The same seed gives the same files.

Files go to ``OUTDIR/<nnn>/report-<i>.json``, ``--per-dir`` to a folder (0: all in OUTDIR).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
sys.path.insert(0, str(ROOT / "src"))

from crbio.identifiers import ins_key  # noqa: E402

#: Arc under which the generated documents get their ids (the samples' laboratory root, arc 9).
ID_ROOT = "1.2.250.1.999.1.9"
#: Every sample is first moved so that its validation time is this instant.
ANCHOR = datetime.fromisoformat("2024-01-04T16:05:00+01:00")

# Samples left out of the frames: 06 reads results from executing laboratories (its batteries
# name them), which a frame of another sample does not have.
_NOT_A_FRAME = {"06-sous-traitance.json"}
_NOT_IN_POOL = {"06-sous-traitance.json"}

_DATETIME = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)\Z")

FAMILY_NAMES = [
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU",
    "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL",
    "FOURNIER", "GIRARD", "BONNET", "DUPONT", "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT",
    "D'ALMEIDA", "LE GALL", "GARCIA-LOPEZ", "N'DIAYE", "DE LA TOUR", "NGUYEN",
]  # fmt: skip
GIVEN_F = [
    "MARIE", "JEANNE", "CAMILLE", "LEA", "MANON", "CHLOE", "INES", "SARAH", "ANNE-SOPHIE",
    "CLAIRE", "EMMA", "LOUISE", "AICHA", "NATHALIE", "SYLVIE", "HELENE", "ZOE",
]  # fmt: skip
GIVEN_M = [
    "JEAN", "PIERRE", "LOUIS", "LUCAS", "HUGO", "THOMAS", "NICOLAS", "KARIM", "JEAN-PAUL",
    "PAUL", "ARTHUR", "YANN", "MOHAMED", "FRANCOIS", "OLIVIER", "THEO", "ANTOINE",
]  # fmt: skip
#: (INSEE code, name): the code gives the département and commune of the INS matricule;
#: 99xxx is a birth abroad (99 then the country code).
BIRTHPLACES = [
    ("75056", "Paris"), ("69123", "Lyon"), ("13055", "Marseille"), ("31555", "Toulouse"),
    ("33063", "Bordeaux"), ("59350", "Lille"), ("2A004", "Ajaccio"), ("2B033", "Bastia"),
    ("97411", "Saint-Denis"), ("51215", "Dompremy"), ("99134", "Espagne"), ("99350", "Maroc"),
]  # fmt: skip
CITIES = [("75011", "Paris"), ("92100", "Boulogne-Billancourt"), ("69003", "Lyon"), ("33000", "Bordeaux")]
STREETS = ["rue de la Paix", "avenue Jean Jaurès", "boulevard Voltaire", "rue des Écoles", "place d'Armes"]


class Templates:
    """The samples as frames (everything but the results) and a pool of result units."""

    def __init__(self, samples: Path = SAMPLES) -> None:
        self.frames: list[dict[str, Any]] = []
        #: (chapter code, chapter title, kind "battery"|"isolates", content, number of results,
        #: specimen keys named)
        self.pool: list[tuple[str, str, str, Any, int, frozenset[str]]] = []
        #: Specimen key → specimen, for every specimen the pool refers to.
        self.specimens: dict[str, dict[str, Any]] = {}
        self.chapter_order: list[str] = []
        for number, path in enumerate(sorted(samples.glob("*.json"))):
            data = json.loads(path.read_text("utf-8"))
            as_times(data, ANCHOR - datetime.fromisoformat(data["validated_at"]))
            if path.name not in _NOT_IN_POOL:
                self._add_to_pool(data, f"G{number:02d}")
            if path.name not in _NOT_A_FRAME:
                frame = {k: v for k, v in data.items() if k not in ("chapters", "specimens")}
                self.frames.append(frame)

    def _add_to_pool(self, data: dict[str, Any], prefix: str) -> None:
        # Specimen keys are made unique across samples, so results of several samples can mix.
        keys = {s["id"]: f"{prefix}-{s['id']}" for s in data["specimens"]}
        for specimen in data["specimens"]:
            self.specimens[keys[specimen["id"]]] = {**specimen, "id": keys[specimen["id"]]}
        for chapter in data["chapters"]:
            code, title = chapter["code"], chapter["title"]
            if code not in self.chapter_order:
                self.chapter_order.append(code)
            for battery in chapter.get("batteries", []):
                rekey(battery, keys)
                used = specimens_named(battery)
                self.pool.append((code, title, "battery", battery, len(battery["observations"]), used))
            if chapter.get("isolates"):
                isolates = chapter["isolates"]
                rekey(isolates, keys)
                count = sum(len(i.get("observations", [])) + len(i.get("antibiogram", [])) for i in isolates)
                used = specimens_named(isolates)
                self.pool.append((code, title, "isolates", isolates, max(1, count), used))


def rekey(node: Any, keys: dict[str, str]) -> None:
    """Rename the specimen references in a battery or isolates, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "specimens":
                node[key] = [keys[k] for k in value]
            else:
                rekey(value, keys)
    elif isinstance(node, list):
        for item in node:
            rekey(item, keys)


def as_times(node: Any, delta: timedelta) -> None:
    """Turn every date-time string of a report into a datetime moved by ``delta``, in place.

    The generated reports share these (immutable) values; each report's own shift is applied
    when it is written (see :func:`dump`). Birth dates are plain dates: left as they are.
    """
    items: Iterator[tuple[Any, Any]]
    if isinstance(node, dict):
        items = iter(list(node.items()))
    elif isinstance(node, list):
        items = iter(list(enumerate(node)))
    else:
        return
    for key, value in items:
        if isinstance(value, str) and _DATETIME.match(value):
            node[key] = datetime.fromisoformat(value) + delta
        elif isinstance(value, dict | list):
            as_times(value, delta)


def dump(data: dict[str, Any], delta: timedelta) -> str:
    """A report as compact JSON, every date-time moved by ``delta`` (the chronology holds)."""

    def moved(value: Any) -> str:
        if isinstance(value, datetime):
            return (value + delta).isoformat()
        raise TypeError(f"not JSON: {type(value).__name__}")

    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=moved)


def specimens_named(node: Any) -> frozenset[str]:
    """The specimen keys a battery or a list of isolates names."""
    used: set[str] = set()
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "specimens":
                    used.update(value)
                elif isinstance(value, dict | list):
                    todo.append(value)
        elif isinstance(item, list):
            todo.extend(item)
    return frozenset(used)


def _copy_observation(observation: dict[str, Any]) -> dict[str, Any]:
    # Only the value and the interpretation change: the rest is shared between reports.
    value = observation.get("value")
    return {**observation, "value": dict(value)} if isinstance(value, dict) else dict(observation)


def scatter(observations: list[dict[str, Any]], rng: random.Random) -> None:
    """Move quantity values by up to ±25 % (same decimals); interpretations follow the range."""
    for obs in observations:
        value = obs.get("value")
        if not value or value.get("type") != "quantity" or value.get("comparator"):
            continue
        original = Decimal(str(value["value"]))
        if original == 0:
            continue
        exponent = original.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        moved = original * Decimal(str(round(rng.uniform(0.8, 1.25), 3)))
        moved = moved.quantize(Decimal(1).scaleb(-places))
        if moved <= 0:
            continue
        value["value"] = str(moved)
        low = obs.get("reference_range", {}).get("low")
        high = obs.get("reference_range", {}).get("high")
        if obs.get("interpretation") in ("N", "L", "H") and (low is not None or high is not None):
            if low is not None and moved < Decimal(str(low)):
                obs["interpretation"] = "L"
            elif high is not None and moved > Decimal(str(high)):
                obs["interpretation"] = "H"
            else:
                obs["interpretation"] = "N"


def patient(frame_patient: dict[str, Any], rng: random.Random, validated: date, index: int) -> dict[str, Any]:
    """A new patient in the frame's patient's shape: identity traits, INS (when qualified), IPP."""
    sex = rng.choice("FM")
    given_pool = GIVEN_F if sex == "F" else GIVEN_M
    family = rng.choice(FAMILY_NAMES)
    given = rng.sample(given_pool, k=rng.choice((1, 1, 2, 3)))
    # A minor stays a minor (the frame may carry legal representatives), others are adults.
    minor = "legal_representatives" in frame_patient
    age_days = rng.randrange(2 * 365, 16 * 365) if minor else rng.randrange(18 * 365, 95 * 365)
    birth = validated - timedelta(days=age_days)
    place_code, place_name = rng.choice(BIRTHPLACES)
    result = dict(frame_patient)
    result.update(
        birth_family_name=family,
        first_birth_given_name=given[0],
        birth_given_names=" ".join(given),
        used_family_name=family,
        used_given_name=given[0].title(),
        sex=sex,
        birth_date=birth.isoformat(),
        birthplace_code=place_code,
        birthplace_name=place_name,
        ipp={"root": frame_patient["ipp"]["root"], "extension": f"{rng.randrange(10**12, 10**13)}"},
    )
    if "address" in frame_patient:
        postal, city = rng.choice(CITIES)
        result["address"] = {
            "house_number": str(rng.randrange(1, 200)),
            "street_name": rng.choice(STREETS),
            "postal_code": postal,
            "city": city,
            "use": "H",
        }
    # One in ten patients has a provisional identity: no INS, as in sample 13.
    if index % 10 == 9:
        result["identity_status"] = "PROV"
        result.pop("ins", None)
    else:
        result["identity_status"] = "QUAL"
        body = f"{1 if sex == 'M' else 2}{birth:%y%m}{place_code}{rng.randrange(1, 1000):03d}"
        result["ins"] = {"matricule": f"{body}{ins_key(body):02d}", "oid": "1.2.250.1.213.1.4.10"}
    return result


def compose(templates: Templates, rng: random.Random, results: int) -> tuple[list[Any], list[Any]]:
    """Chapters holding ``results`` results drawn from the pool, and the specimens they name."""
    chosen: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    remaining = results
    order = list(range(len(templates.pool)))
    while remaining > 0:
        rng.shuffle(order)
        for i in order:
            if remaining <= 0:
                break
            code, title, kind, content, count, specimens = templates.pool[i]
            if kind == "isolates" and (count > remaining or "isolates" in chosen.get(code, {})):
                continue
            chapter = chosen.setdefault(code, {"code": code, "title": title, "batteries": []})
            if kind == "isolates":
                chapter["isolates"] = content
            else:
                observations = [_copy_observation(o) for o in content["observations"][:remaining]]
                count = len(observations)
                scatter(observations, rng)
                chapter["batteries"].append({**content, "observations": observations})
            used |= specimens
            remaining -= count
    chapters = [chosen[c] for c in templates.chapter_order if c in chosen]
    return chapters, [templates.specimens[k] for k in sorted(used)]


def report(templates: Templates, rng: random.Random, index: int, seed: int, results: int) -> dict[str, Any]:
    """One generated report."""
    frame = templates.frames[index % len(templates.frames)]
    chapters, specimens = compose(templates, rng, results)
    data: dict[str, Any] = {**frame, "specimens": specimens, "chapters": chapters}
    set_id = f"{ID_ROOT}.{seed}.{index + 1}"
    document = dict(frame["document"])
    if document.get("version", 1) > 1:
        document["replaces"] = f"{set_id}.{document['version'] - 1}"
    document.update(set_id=set_id, id=f"{set_id}.{document.get('version', 1)}")
    data["document"] = document
    data["patient"] = patient(frame["patient"], rng, ANCHOR.date(), index)
    if "order_id" in data:
        data["order_id"] = {**data["order_id"], "extension": f"G{seed}-{index + 1:07d}"}
    return data


def generate(
    count: int, outdir: Path, *, seed: int = 0, results: int = 10, per_dir: int = 1000
) -> list[Path]:
    """Write ``count`` generated reports into ``outdir`` and return their paths."""
    templates = Templates()
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        folder = outdir / f"{index // per_dir:03d}" if per_dir > 0 else outdir
        if per_dir <= 0 or index % per_dir == 0 or index == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"report-{index + 1:06d}.json"
        data = report(templates, rng, index, seed, results)
        # Up to a year back: every time of the report moves together, so the chronology holds.
        delta = -timedelta(days=rng.randrange(0, 365), minutes=rng.randrange(0, 24 * 60))
        path.write_text(dump(data, delta), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, metavar="N")
    parser.add_argument("outdir", type=Path, metavar="OUTDIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=int, default=10, help="results per report (10, 40, 300…)")
    parser.add_argument("--per-dir", type=int, default=1000, help="reports per sub-folder (0: none)")
    args = parser.parse_args()
    start = time.perf_counter()
    generate(args.count, args.outdir, seed=args.seed, results=args.results, per_dir=args.per_dir)
    elapsed = time.perf_counter() - start
    print(f"{args.count} reports ({args.results} results each) in {args.outdir} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()

"""Regenerate crbio's terminology tables from the ANS value sets (jeuxDeValeurs).

    python scripts/refresh_terminologies.py [../shared/ans-kit]

Reads the SVS files of the ANS conformity kit (TestContenuCDA) and writes
src/crbio/codes/data/terminologies.json with the concepts crbio checks and
displays. Run it when the kit is updated and commit the result.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lxml import etree

SVS = "{urn:ihe:iti:svs:2008}"
# name in crbio -> ANS value-set file
VALUE_SETS = {
    "interpretation": "JDV_HL7_ObservationInterpretation_CISIS.xml",
    "specimen_type": "JDV_HL7_SpecimenType_CISIS.xml",
    "specialty": "JDV_J01_XdsAuthorSpecialty_CISIS.xml",
    "facility_type": "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS.xml",
    "practice_setting": "JDV_J04_XdsPracticeSettingCode_CISIS.xml",
    # The structuration-minimale profile checks componentOf against J142, which is the
    # stricter of the two lists (JDV_EncompassingEncounterCode also has SS).
    "encounter": "JDV_J142_TypeRencontre_CISIS.xml",
}


def main() -> None:
    """Read the kit's value sets and write the terminology tables."""
    kit = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/ans-kit")
    out: dict[str, object] = {}
    for name, filename in VALUE_SETS.items():
        path = kit / "jeuxDeValeurs" / filename
        root = etree.parse(str(path)).getroot()
        vs = root if root.tag == SVS + "ValueSet" else root.find(f".//{SVS}ValueSet")
        concepts = {}
        for c in root.iter(SVS + "Concept"):
            concepts[c.get("code")] = {"system": c.get("codeSystem"), "display": c.get("displayName")}
        oid = vs.get("id") if vs is not None else None
        version = vs.get("version") if vs is not None else None
        out[name] = {"source": filename, "oid": oid, "version": version, "concepts": concepts}
    target = Path(__file__).resolve().parents[1] / "src/crbio/codes/data/terminologies.json"
    text = json.dumps(out, ensure_ascii=False, indent=1, sort_keys=True)
    target.write_text(re.sub(r"\n\s+(?=[}\]])", "", text) + "\n", encoding="utf-8")
    print(f"wrote {target} ({sum(len(v['concepts']) for v in out.values())} concepts)")


if __name__ == "__main__":
    main()

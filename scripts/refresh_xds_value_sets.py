"""Regenerate the value sets the XDS.b simulator checks DocumentEntry metadata against.

    python scripts/refresh_xds_value_sets.py [../shared/ans-kit]

Writes src/crbio/simulators/data/xds-value-sets.json from two sources:

* the SVS files of the ANS conformity kit (``jeuxDeValeurs/``): JDV_J07 (typeCode),
  JDV_J02 (healthcareFacilityTypeCode), JDV_J04 (practiceSettingCode), JDV_J01
  (authorSpecialty) and JDV_J08 (confidentialityCode, CI-SIS);
* the DMP value sets the kit does not carry, written out below from the ANS terminology
  server as published in ansforge/IG-terminologie-de-sante (package ans.fr.terminologies
  1.12.0): JDV_J57-ClassCode-DMP (OID 1.2.250.1.213.1.1.5.6, version 20230922120000),
  JDV_J58-ConfidentialityCode-DMP (OID 1.2.250.1.213.1.1.5.9) and JDV_J60-FormatCode-DMP
  (OID 1.2.250.1.213.1.1.5.8, version 20240927120000).

In XDS metadata a code carries its code system as an OID in the ``codingScheme`` slot, so
each concept is stored as ``[code, codingScheme, display]``; the FHIR code systems of the
DMP value sets are translated to the OIDs the ANS gives for them (TRE_A03
1.2.250.1.213.1.1.4.1, TRE_A06 1.2.250.1.213.1.1.4.2.282, TRE_A11 1.3.6.1.4.1.19376.1.2.3,
TRE_A09 1.2.840.10008.2.6.1, TRE_A10 the literal ``URN``). Run it when the kit or the DMP
value sets change, and commit the result.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from lxml import etree

SVS = "{urn:ihe:iti:svs:2008}"
TARGET = Path(__file__).resolve().parents[1] / "src/crbio/simulators/data/xds-value-sets.json"

# XDS metadata name -> ANS kit value-set file.
KIT_VALUE_SETS = {
    "typeCode": "JDV_J07_XdsTypeCode_CISIS.xml",
    "healthcareFacilityTypeCode": "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS.xml",
    "practiceSettingCode": "JDV_J04_XdsPracticeSettingCode_CISIS.xml",
    "authorSpecialty": "JDV_J01_XdsAuthorSpecialty_CISIS.xml",
    "confidentialityCodeCisis": "JDV_J08_XdsConfidentialityCode_CISIS.xml",
}

TRE_A03 = "1.2.250.1.213.1.1.4.1"  # TRE_A03-ClasseDocument
TRE_A06 = "1.2.250.1.213.1.1.4.2.282"  # TRE_A06-FormatCodeComplementaire
TRE_A11 = "1.3.6.1.4.1.19376.1.2.3"  # TRE_A11-IheFormatCode
TRE_A09 = "1.2.840.10008.2.6.1"  # TRE_A09-DICOMuidRegistry
TRE_A10 = "URN"  # TRE_A10-NomenclatureURN
TRE_A07 = "1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument
HL7_CONFIDENTIALITY = "2.16.840.1.113883.5.25"

SOURCE_DMP = "ansforge/IG-terminologie-de-sante (ans.fr.terminologies 1.12.0)"

# JDV_J57-ClassCode-DMP.
CLASS_CODES = [
    ("10", TRE_A03, "Compte rendu"),
    ("11", TRE_A03, "Synthèse"),
    ("31", TRE_A03, "Imagerie médicale"),
    ("42", TRE_A03, "Prescription"),
    ("43", TRE_A03, "Dispensation"),
    ("44", TRE_A03, "Plan de soins, protocole de soins"),
    ("45", TRE_A03, "Traitement administré"),
    ("52", TRE_A03, "Certificat, déclaration"),
    ("60", TRE_A03, "Données de remboursement"),
    ("90", TRE_A03, "Autres documents déposés par le patient"),
    ("95", TRE_A03, "Document de gestion"),
    ("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", TRE_A10, "Digital Signature"),
]

# JDV_J58-ConfidentialityCode-DMP: the HL7 N/R/V codes and the three DMP visibility codes.
CONFIDENTIALITY_CODES = [
    ("N", HL7_CONFIDENTIALITY, "Normal"),
    ("R", HL7_CONFIDENTIALITY, "Restreint"),
    ("V", HL7_CONFIDENTIALITY, "Très restreint"),
    ("INVISIBLE_PATIENT", TRE_A07, "Non visible par le patient"),
    ("INVISIBLE_REPRESENTANTS_LEGAUX", TRE_A07, "Non visible par les représentants légaux du patient"),
    ("MASQUE_PS", TRE_A07, "Masqué aux professionnels de santé"),
]

# JDV_J60-FormatCode-DMP, complete as published.
FORMAT_CODES = [
    *(
        (code, TRE_A06, display)
        for code, display in (
            ("urn:ans:ci-sis:bio-ep-bio:2022", "Prescription d'actes de biologie médicale"),
            ("urn:ans:ci-sis:img-da:2022", "Demande d'actes d'imagerie"),
            ("urn:asip:ci-sis:aunv:2013", "Fiche d'admission en unité neuro-vasculaire"),
            ("urn:asip:ci-sis:avk:2009", "Fiche patient à risque en cardiologie - Traitement AVK"),
            ("urn:asip:ci-sis:crgm:2018", "Compte rendu de génétique moléculaire"),
            ("urn:asip:ci-sis:crrtn:2013", "Compte-rendu de rétinographie"),
            ("urn:asip:ci-sis:cse-cs24:2017", "Certificat de santé du 24ème mois de l'enfant"),
            ("urn:asip:ci-sis:cse-cs8:2017", "Certificat de santé du 8ème jour de l'enfant"),
            ("urn:asip:ci-sis:cse-cs9:2017", "Certificat de santé du 9ème mois de l'enfant"),
            (
                "urn:asip:ci-sis:d2lm-fidd:2017",
                "Seconde lecture de mammographie - Fiche d'interprétation du bilan de diagnostic différé",
            ),
            (
                "urn:asip:ci-sis:d2lm-fin:2017",
                "Seconde lecture de mammographie - Fiche d'interprétation nationale",
            ),
            (
                "urn:asip:ci-sis:dci:2009",
                "Fiche patient à risque en cardiologie - Défibrillateur cardiaque interne",
            ),
            ("urn:asip:ci-sis:dlu:2015", "Document de liaison d'urgence"),
            ("urn:ans:ci-sis:cse-mde:2023", "Mesures de signes vitaux"),
            ("urn:asip:ci-sis:eunv:2013", "Fiche d'épisode de soin en unité neuro-vasculaire"),
            ("urn:asip:ci-sis:fludr:2017", "Fiche de liaison d'urgence - Retour des urgences vers l'EHPAD"),
            (
                "urn:asip:ci-sis:fludt:2017",
                "Fiche de liaison d'urgence - Transfert de l'EHPAD vers les urgences",
            ),
            ("urn:asip:ci-sis:frcp:2011", "Fiche de réunion de concertation pluridisciplinaire"),
            ("urn:asip:ci-sis:hr:2019", "Données de remboursement"),
            ("urn:asip:ci-sis:idap:2011", "Information et directives anticipées du patient"),
            ("urn:asip:ci-sis:ldl-ees:2017", "Lettre de Liaison à l'entrée d'un établissement de santé"),
            ("urn:asip:ci-sis:ldl-ses:2017", "Lettre de Liaison à la sortie de l'établissement de santé"),
            (
                "urn:asip:ci-sis:pavc:2016",
                "Compte-rendu de consultation d'évaluation pluri-professionnelle post AVC",
            ),
            ("urn:asip:ci-sis:pps-cancer:2017", "Programme Personnalisé de Soins - Cancer"),
            ("urn:asip:ci-sis:pps-paerpa:2017", "Plan Personnalisé de Santé - PAERPA"),
            (
                "urn:asip:ci-sis:ppv:2009",
                "Fiche patient à risque en cardiologie - Porteur d'une prothèse valvulaire",
            ),
            (
                "urn:asip:ci-sis:psc:2009",
                "Fiche patient à risque en cardiologie - Porteur d'un stimulateur cardiaque",
            ),
            ("urn:asip:ci-sis:sdm-mr:2017", "Set de Données Minimum - Maladies Rares"),
            ("urn:asip:ci-sis:sunv:2013", "Fiche de sortie d'unité neuro-vasculaire"),
            (
                "urn:asip:ci-sis:tap:2009",
                "Fiche patient à risque en cardiologie - Traitement antiagrégant plaquettaire, stent",
            ),
            ("urn:asip:ci-sis:vac:2019", "Historique des vaccinations"),
            ("urn:asip:ci-sis:vsm:2012", "Synthèse médicale"),
            ("urn:asipSante:modelesHorsProfils:2011", "Document non référencé IHE ou CI-SIS"),
            ("urn:asip:ci-sis:cr-cpa:2020", "Compte rendu de consultation pré-anesthésique"),
            ("urn:asip:ci-sis:cr-anest:2020", "Compte rendu d'anesthésie"),
            ("urn:asip:ci-sis:tlm-da:2020", "Demande d'acte de télémédecine"),
            ("urn:asip:ci-sis:vac-note:2021", "Note de vaccination"),
            ("urn:asip:ci-sis:obp-sap:2023", "Synthèse antepartum"),
            ("urn:asip:ci-sis:obp-snm:2023", "Synthèse Salle de Naissance Mère"),
            ("urn:asip:ci-sis:obp-sne:2023", "Synthèse Salle de Naissance Enfant"),
            ("urn:asip:ci-sis:obp-scm:2023", "Synthèse Suites de Couches Mère"),
            ("urn:asip:ci-sis:obp-sem:2023", "Synthèse Enfant en Maternité"),
            ("urn:asip:ci-sis:ppp:2023", "Plan personnalisé de prévention"),
            ("urn:asip:ci-sis:dlu:2024", "Document de liaison d'urgence"),
            ("urn:asip:ci-sis:ft-su:2024", "Fiche de transfert vers le service des urgences"),
            ("urn:asip:ci-sis:fr-su:2024", "Fiche de retour du service des urgences"),
            ("urn:ans:ci-sis:trod:2024", "Test rapide d'orientation diagnostique"),
        )
    ),
    *(
        (code, TRE_A11, display)
        for code, display in (
            ("urn:ihe:iti:dsg:detached:2014", "Signature détachée"),
            ("urn:ihe:iti:xds-sd:pdf:2008", "Document à corps non structuré en Pdf/A-1"),
            ("urn:ihe:iti:xds-sd:text:2008", "Document à corps non structuré en texte brut"),
            ("urn:ihe:pharm:dis:2010", "Dispensation médicamenteuse"),
            ("urn:ihe:iti-fr:xds-sd:jpeg:2010", "Document à corps non structuré en format jpeg"),
            ("urn:ihe:iti-fr:xds-sd:rtf:2010", "Document à corps non structuré en format rtf"),
            ("urn:ihe:iti-fr:xds-sd:tiff:2010", "Document à corps non structuré en format tiff"),
            ("urn:ihe:lab:xd-lab:2008", "Compte rendu structuré d'examens de biologie médicale"),
            ("urn:ihe:palm:apsr:2016", "CR d'anatomie et de cytologie pathologiques"),
            ("urn:ihe:pcc:ips:2020", "Synthèse médicale"),
            ("urn:ihe:pharm:pre:2010", "Prescription de médicaments"),
            ("urn:ihe:eyecare:geneyeevalcn:2014", "CR de consultation en ophtalmologie"),
            ("urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013", "Compte-rendu d'imagerie médicale"),
        )
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.59",
        TRE_A09,
        "Document Références d'objets d'un examen d'imagerie selon profil IHE RAD XDS-I",
    ),
    ("http://www.w3.org/2000/09/xmldsig#", TRE_A10, "Default signature style"),
]


def _kit_value_set(path: Path) -> dict[str, Any]:
    root = etree.parse(str(path)).getroot()
    value_set = root if root.tag == SVS + "ValueSet" else root.find(f".//{SVS}ValueSet")
    if value_set is None:
        raise SystemExit(f"{path}: no SVS ValueSet element")
    concepts = [
        [c.get("code"), c.get("codeSystem"), c.get("displayName") or ""] for c in root.iter(SVS + "Concept")
    ]
    return {
        "name": path.stem,
        "oid": value_set.get("id"),
        "version": value_set.get("dateMaj") or value_set.get("version"),
        "source": f"ANS conformity kit, jeuxDeValeurs/{path.name}",
        "concepts": concepts,
    }


def _dmp_value_set(
    name: str, oid: str, version: str | None, concepts: list[tuple[str, str, str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "oid": oid,
        "version": version,
        "source": SOURCE_DMP,
        "concepts": [list(c) for c in concepts],
    }


def main() -> None:
    """Read the kit's value sets, add the DMP ones and write the simulator's data file."""
    kit = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/ans-kit")
    sets: dict[str, dict[str, Any]] = {}
    for name, filename in KIT_VALUE_SETS.items():
        sets[name] = _kit_value_set(kit / "jeuxDeValeurs" / filename)
    sets["classCode"] = _dmp_value_set(
        "JDV_J57-ClassCode-DMP", "1.2.250.1.213.1.1.5.6", "20230922120000", CLASS_CODES
    )
    sets["confidentialityCode"] = _dmp_value_set(
        "JDV_J58-ConfidentialityCode-DMP", "1.2.250.1.213.1.1.5.9", None, CONFIDENTIALITY_CODES
    )
    sets["formatCode"] = _dmp_value_set(
        "JDV_J60-FormatCode-DMP", "1.2.250.1.213.1.1.5.8", "20240927120000", FORMAT_CODES
    )
    document = {
        "generated_by": "scripts/refresh_xds_value_sets.py",
        "note": "Concepts are [code, codingScheme, displayName]; codingScheme is what XDS metadata carries.",
        "value_sets": sets,
    }
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, ensure_ascii=False, indent=1)
    # One concept per line keeps the file short and its diffs readable.
    string = r'"(?:[^"\\]|\\.)*"'
    text = re.sub(rf"\[\s+({string}),\s+({string}),\s+({string})\s+\]", r"[\1, \2, \3]", text)
    TARGET.write_text(text + "\n", encoding="utf-8")
    count = sum(len(v["concepts"]) for v in sets.values())
    print(f"wrote {TARGET} ({count} concepts)")


if __name__ == "__main__":
    main()

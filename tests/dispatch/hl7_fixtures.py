"""HL7 v2 metadata shared by the message and MLLP tests: the volet's flags and MSSanté recipients."""

FLAGS = {
    "MASQUE_PS": "N",
    "INVISIBLE_PATIENT": "N",
    "INVISIBLE_REP_LEGAUX": "N",
    "CONNEXION_SECRETE": "N",
    "MODIF_CONF_CODE": "N",
    "DESTDMP": "Y",
    "DESTMSSANTEPS": "Y",
    "DESTMSSANTEPAT": "Y",
    "ACK_RECEPTION": "Y",
    "ACK_LECTURE_MSS": "N",
}
RECIPIENTS = [
    {
        "kind": "professional",
        "address": "jean.martin@test.mssante.fr",
        "identifier": "10100023455",
        "label": "DR Jean MARTIN",
    },
    {"kind": "patient", "address": "279035121518989@patient.mssante.fr", "identifier": None, "label": None},
]

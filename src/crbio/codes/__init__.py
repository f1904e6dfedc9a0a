"""Code systems crbio checks: LOINC, UCUM and the ANS value sets it uses."""

from crbio.codes.loinc import LOINC_OID, check_loinc
from crbio.codes.terminology import lookup, value_set
from crbio.codes.ucum import check_ucum

__all__ = ["LOINC_OID", "SNOMED_OID", "check_loinc", "check_ucum", "lookup", "value_set"]

#: SNOMED CT, the code system of organisms and coded results.
SNOMED_OID = "2.16.840.1.113883.6.96"

"""The PDF/A-1b rendering of a CR-Bio, with the INS Datamatrix.

    pdf = render_pdf(report)        # the bytes of a PDF/A-1b file
    findings = check_pdfa(pdf)      # [] when it conforms

The PDF shows every element of the CDA header and all the text of the results. The INS
Datamatrix (and the « Matricule INS » line) appear only for a qualified identity, at the
top right of the patient block on page 1.
"""

from crbio.documents.pdf.datamatrix import ins_datamatrix_payload
from crbio.documents.pdf.pdfa import check_pdfa
from crbio.documents.pdf.render import render_pdf

__all__ = ["check_pdfa", "ins_datamatrix_payload", "render_pdf"]

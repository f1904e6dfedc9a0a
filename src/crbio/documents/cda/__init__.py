"""The CDA R2 documents of a CR-Bio: the structured N3 (volet BIO-CR-BIO 2024.01) and the N1 PDF wrapper."""

from crbio.documents.cda.builder import DEFAULT_STYLESHEET_HREF, build_n1, build_n3, n1_document_info

__all__ = ["DEFAULT_STYLESHEET_HREF", "build_n1", "build_n3", "n1_document_info"]

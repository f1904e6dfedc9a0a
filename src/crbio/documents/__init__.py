"""Documents produced from a report: the CDA R2 N3 CR-BIO, its PDF/A-1 rendering, the CDA R2 N1."""

"""Convert thousands of reports in one go: ``crbio batch`` and :func:`run_batch`.

Inputs are discovered lazily (:mod:`crbio.batch.discover`), converted by a process pool
(:mod:`crbio.batch.worker`), recorded in a manifest so a re-run skips what is up to date
(:mod:`crbio.batch.manifest`) and in a streamed report (:mod:`crbio.batch.report`);
:mod:`crbio.batch.run` ties them together.
"""

from crbio.batch.discover import READERS, Input, discover
from crbio.batch.manifest import MANIFEST_NAME
from crbio.batch.report import REPORT_NAME
from crbio.batch.run import OUTCOMES, BatchListener, BatchOptions, BatchResult, default_jobs, run_batch

__all__ = [
    "MANIFEST_NAME",
    "OUTCOMES",
    "READERS",
    "REPORT_NAME",
    "BatchListener",
    "BatchOptions",
    "BatchResult",
    "Input",
    "default_jobs",
    "discover",
    "run_batch",
]

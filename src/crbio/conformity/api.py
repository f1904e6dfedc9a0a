"""Run conformity scenarios and write their evidence bundle: the entry point of ``crbio conformity``."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crbio.conformity.bundle import write_bundle, write_scenario
from crbio.conformity.checks import PASS, ScenarioResult, evaluate
from crbio.conformity.pictures import INSTALL_HINT, require_pdfium
from crbio.conformity.runner import BuildCache, run_scenario
from crbio.conformity.scenario import Scenario
from crbio.errors import ConfigurationError

__all__ = ["ConformityRun", "require_extras", "run_conformity"]

log = logging.getLogger("crbio.conformity")


@dataclass
class ConformityRun:
    """The outcome of a conformity run: each scenario's result and where the bundle is."""

    output: Path
    index: Path
    summary: Path
    results: list[ScenarioResult] = field(default_factory=list)
    ans_kit: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether every scenario passed."""
        return all(result.verdict == PASS for result in self.results)


def require_extras() -> None:
    """Raise a :class:`ConfigurationError` naming the extra to install when a component is missing."""
    require_pdfium()
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"the conformity runs need the SMTP simulator (aiosmtpd), which is not installed: {INSTALL_HINT}",
            code="config.extra",
        ) from None


def run_conformity(
    scenarios: Sequence[Scenario],
    output: str | Path,
    *,
    ans_kit: str | Path | None = None,
    progress: Callable[[ScenarioResult], None] | None = None,
) -> ConformityRun:
    """Run each scenario in its own simulation, judge it, and write the evidence bundle into ``output``.

    The ANS kit, when given, is compiled once and applied to every document. ``progress`` is
    called with each scenario's result as soon as it is known.

    Raises:
        ConfigurationError: a missing extra (pypdfium2, aiosmtpd, saxonche for the kit), an
            unusable ANS kit, or an output directory that cannot be written.
    """
    require_extras()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    kit = None
    if ans_kit is not None:
        from crbio.validation.anskit import AnsKit

        kit = AnsKit(Path(ans_kit))
    target = Path(output)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(
            f"{target}: cannot create the evidence directory ({error.strerror})"
        ) from None
    views = []
    results = []
    cache = BuildCache()
    with tempfile.TemporaryDirectory(prefix="crbio-conformity-") as scratch:
        for scenario in scenarios:
            previous = target / scenario.name
            if (previous / "checks.json").is_file():
                shutil.rmtree(previous)  # an earlier run's evidence: stale files would mislead
            evidence = run_scenario(scenario, Path(scratch) / scenario.name, kit=kit, cache=cache)
            result = ScenarioResult(evidence, evaluate(evidence))
            views.append(write_scenario(result, target))
            results.append(result)
            log.info("scenario %s: %s", scenario.name, result.verdict)
            if progress is not None:
                progress(result)
    seconds = time.monotonic() - started
    version = kit.version if kit is not None else None
    index = write_bundle(target, views, ans_kit=version, started=started_at, seconds=seconds)
    return ConformityRun(target, index, target / "summary.json", results, version, seconds)

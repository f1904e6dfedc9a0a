"""Proof-of-conformity runs: built-in scenarios sent end to end to the simulators, with evidence.

>>> from crbio.conformity import resolve_scenarios, run_conformity
>>> run = run_conformity(resolve_scenarios(None), "evidence", ans_kit="../shared/ans-kit")
>>> run.passed, run.index

See ``docs/conformity.md`` for the scenario format and the evidence bundle.
"""

from crbio.conformity.api import ConformityRun, require_extras, run_conformity
from crbio.conformity.checks import CHECK_TITLES, CHECKS, Check, ScenarioResult, evaluate
from crbio.conformity.scenario import Scenario, ScenarioError, catalogue, load_scenario, resolve_scenarios

__all__ = [
    "CHECKS",
    "CHECK_TITLES",
    "Check",
    "ConformityRun",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "catalogue",
    "evaluate",
    "load_scenario",
    "require_extras",
    "resolve_scenarios",
    "run_conformity",
]

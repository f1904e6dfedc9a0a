"""Hypothesis profiles of the fuzz tests: ``ci`` (bounded, deterministic) and ``long`` (on demand).

``ci`` is the default: a fixed number of examples per property, derived from a fixed seed
(``derandomize``), so ``main`` stays green or red deterministically and the whole folder costs
about a minute of CPU. ``long`` runs thousands of random examples per property: select it with
``CRBIO_FUZZ=long`` (or ``pytest tests/fuzz --hypothesis-profile=long``);
``CRBIO_FUZZ_EXAMPLES=N`` sets the number of examples of every bulk property of a long run.
``--hypothesis-show-statistics`` prints the counts of each property.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    "long",
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
    max_examples=20_000,
)
# --hypothesis-profile on the command line wins: the plugin loads it after this file when this
# folder is named on the command line; otherwise the environment chooses.
if settings.get_current_profile_name() == "default":
    settings.load_profile("long" if os.environ.get("CRBIO_FUZZ") == "long" else "ci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hypothesis warns when it prints a failing example of more than 32 kB: not an error here."""
    for item in items:
        if "tests/fuzz/" in item.nodeid or item.nodeid.startswith("fuzz/"):
            item.add_marker(
                pytest.mark.filterwarnings(
                    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
                )
            )

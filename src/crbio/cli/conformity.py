"""The ``crbio conformity`` command: run the conformity scenarios and write the evidence bundle."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_conformity_command"]

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2


def add_conformity_command(commands: Any) -> None:
    """Register the ``conformity`` sub-command on the main parser's sub-parsers."""
    parser = commands.add_parser(
        "conformity",
        help="prove conformity: run scenarios end to end against the simulators, with evidence",
        description="Run conformity scenarios end to end: build, validate (XSD, crbio's rules, PDF/A, "
        "the ANS kit with --ans-kit), plan, dispatch to the built-in DMP, MSSanté and HL7 v2 "
        "simulators, and check what they received against each scenario's expectations. Writes "
        "EVIDENCE_DIR/index.html (readable offline), summary.json and every artefact. Exit status: 0 "
        "when every scenario passes, 1 when one fails, 2 for a bad scenario file, 3 for a "
        "configuration problem (a missing extra: pip install 'crbio[conformity]').",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="EVIDENCE_DIR", help="where the bundle is written"
    )
    parser.add_argument(
        "--ans-kit",
        type=Path,
        metavar="DIR",
        help="also check every document with the ANS kit (TestContenuCDA)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        metavar="NAME_OR_FILE",
        help="built-in scenario names and/or scenario files (.toml, .json); default: the whole catalogue",
    )
    parser.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    parser.set_defaults(run=_conformity)


def _conformity(args: argparse.Namespace) -> int:
    from crbio.conformity import resolve_scenarios, run_conformity
    from crbio.conformity.checks import FAIL, ScenarioResult

    if args.list:
        for scenario in resolve_scenarios(None):
            print(f"{scenario.name:<28} {scenario.title}")
        return EXIT_OK
    if args.output is None:
        print("crbio conformity: -o/--output EVIDENCE_DIR is required (or --list)", file=sys.stderr)
        return EXIT_INPUT
    # A bad scenario file raises ScenarioError (an input error): the main command answers 2.
    scenarios = resolve_scenarios(args.scenarios)

    def progress(result: ScenarioResult) -> None:
        failed = [check.title for check in result.checks.values() if check.status == FAIL]
        why = f"  ({', '.join(failed)})" if failed else ""
        print(
            f"{result.verdict.upper():<4}  {result.scenario.name:<28} {result.evidence.seconds:5.1f} s{why}",
            flush=True,
        )

    # The faults the scenarios inject make the workers log retries and dead letters: expected
    # here, and in the evidence's journal, so they are shown only with --verbose or --debug.
    quiet = not (getattr(args, "verbose", False) or getattr(args, "debug", False))
    loggers = [logging.getLogger(name) for name in ("crbio.dispatch", "crbio.simulators")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            if quiet:
                logger.setLevel(logging.CRITICAL)
        run = run_conformity(scenarios, args.output, ans_kit=args.ans_kit, progress=progress)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    passed = sum(1 for result in run.results if result.verdict != FAIL)
    kit = "" if run.ans_kit else " (ANS kit not run: give --ans-kit DIR)"
    print(f"{passed}/{len(run.results)} scenarios pass{kit}; evidence: {run.index}")
    return EXIT_OK if run.passed else EXIT_FAILED

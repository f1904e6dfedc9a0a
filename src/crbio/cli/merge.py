"""The ``crbio merge`` command: insert a subcontractor's results into the laboratory's report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_merge_command"]

EXIT_OK, EXIT_INVALID, EXIT_INPUT = 0, 1, 2


def add_merge_command(commands: Any) -> None:
    """Register the ``merge`` sub-command on the main parser's sub-parsers."""
    parser = commands.add_parser(
        "merge",
        help="insert a subcontractor's results (its CR-BIO CDA) into the laboratory's report",
        description="Read the laboratory's report (OWN: .json, .xml or .hl7) and a subcontractor's "
        "CR-BIO CDA (INCOMING: N3 or N1), insert the subcontractor's results unchanged with the "
        "subcontractor as executing laboratory (or, when its results cannot be read, attach its "
        "PDF), and build the merged CDA R2 N3, PDF/A-1b and CDA R2 N1 into OUTDIR as "
        "<OWN name>.n3.xml, .n1.xml and .pdf. Both documents must be about the same patient. "
        "Exit status: 0 merged, 1 a merged document does not conform, 2 an input is unusable.",
    )
    parser.add_argument("own", type=Path, metavar="OWN.json", help="the laboratory's own report")
    parser.add_argument("incoming", type=Path, metavar="INCOMING.xml", help="the subcontractor's CR-BIO CDA")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument(
        "--stylesheet",
        metavar="HREF",
        help="href of the XSL stylesheet the documents point to (default: the laboratory's, else crbio's)",
    )
    parser.add_argument(
        "--ans-kit",
        type=Path,
        metavar="DIR",
        help="also check the merged documents with the official ANS kit (TestContenuCDA) in DIR",
    )
    parser.set_defaults(run=_merge)


def _merge(args: argparse.Namespace) -> int:
    from crbio.documents.build import build
    from crbio.errors import InputError, ValidationFailed
    from crbio.input import load_report
    from crbio.input.cda import read_cda_file
    from crbio.merge import merge_subcontracted
    from crbio.validation.validate import validate_document

    own_path: Path = args.own
    incoming_path: Path = args.incoming
    try:
        own = load_report(own_path)
    except InputError as e:
        _error(f"{own_path.name}: {e}")
        return EXIT_INPUT
    try:
        incoming = read_cda_file(incoming_path)
        outcome = merge_subcontracted(own, incoming, label=incoming_path.name)
    except InputError as e:
        # The reader's messages already start with the file's name.
        message = str(e)
        _error(
            message if message.startswith(f"{incoming_path.name}: ") else f"{incoming_path.name}: {message}"
        )
        return EXIT_INPUT
    kit = None
    if args.ans_kit is not None:
        from crbio.validation.anskit import AnsKit

        kit = AnsKit(args.ans_kit)
    # With the kit, the full validation below replaces build's own XSD + rules check.
    documents = build(outcome.report, stylesheet_href=args.stylesheet, validate=kit is None)
    if kit is not None:
        for kind, data in (("n3", documents.n3), ("n1", documents.n1)):
            report = validate_document(data, label=f"{own_path.stem} {kind}", ans_kit=kit)
            if not report.ok:
                _error(f"{own_path.name}: {ValidationFailed(report)}")
                return EXIT_INVALID
    written = documents.write(args.output, stem=own_path.stem)
    names = ", ".join(p.name for p in written if p.suffix != ".xsl")
    lab = outcome.laboratory
    print(f"{own_path.name} + {incoming_path.name}: {names} (document {documents.document_id})")
    if outcome.structured:
        print(f"  {outcome.results} results inserted, performed by {lab.name} (FINESS {lab.finess})")
        for omission in outcome.omissions:
            print(f"  not carried over: {omission}")
    else:
        print(f"  PDF of {lab.name} (FINESS {lab.finess}) attached: {outcome.reason}")
    return EXIT_OK


def _error(message: str) -> None:
    print(f"crbio: {message}", file=sys.stderr)

"""The ``crbio`` command line: build, validate and render CR-Bio documents, and dispatch them.

Exit status: 0 when everything went well, 1 when a document does not conform,
2 when an input is unusable (bad report, unreadable file, bad option), 3 on a
configuration problem, 70 on an internal error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crbio import __version__
from crbio._files import write_atomically
from crbio.errors import ConfigurationError, CrbioError, InputError, ValidationFailed

if TYPE_CHECKING:
    from crbio.validation.anskit import AnsKit
    from crbio.validation.report import ValidationReport

__all__ = ["main"]

EXIT_OK, EXIT_INVALID, EXIT_INPUT, EXIT_CONFIG, EXIT_INTERNAL = 0, 1, 2, 3, 70

log = logging.getLogger("crbio")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crbio`` command line and return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.run(args)
        return status
    except ConfigurationError as e:
        _error(f"configuration: {e}")
        return EXIT_CONFIG
    except CrbioError as e:
        _error(str(e))
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            raise
        # Library messages may quote document content: only the exception type is shown.
        _error(f"internal error ({type(e).__name__}); run again with --debug and report it")
        return EXIT_INTERNAL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crbio",
        description="Ségur CR-Bio documents: CDA R2 N3 (BIO-CR-BIO 2024.01), PDF/A-1b with the INS "
        "Datamatrix, CDA R2 N1.",
    )
    parser.add_argument("--version", action="version", version=f"crbio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="build the documents of validated reports",
        description="Build the CDA R2 N3, the PDF/A-1b and the CDA R2 N1 of each "
        "report into OUTDIR, as <name>.n3.xml, <name>.n1.xml and <name>.pdf. A report is "
        "crbio JSON (.json), a CR-BIO CDA R2 N3 of the 2021.01, 2023.01 or 2024.01 volet (.xml, "
        "re-emitted in 2024.01) or an HL7 v2.5 ORU^R01 (.hl7).",
    )
    build.add_argument("inputs", nargs="*", type=Path, metavar="REPORT")
    build.add_argument("--samples", action="store_true", help="build the sample reports bundled with crbio")
    build.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    build.add_argument(
        "--stylesheet",
        metavar="HREF",
        help="href of the XSL stylesheet the documents point to (default: the laboratory's, "
        "else crbio's own, written beside the documents)",
    )
    build.add_argument(
        "--ans-kit",
        type=Path,
        metavar="DIR",
        help="also check the documents with the official ANS kit (TestContenuCDA) in DIR",
    )
    build.add_argument(
        "--replace-original",
        action="store_true",
        help="for a CR-BIO CDA input: emit the next version of that document (same set id, version + 1, "
        "relatedDocument RPLC), so a DMP replaces it, instead of a new document",
    )
    build.set_defaults(run=_build)

    validate = commands.add_parser(
        "validate",
        help="validate CR-Bio CDA documents",
        description="Check CDA documents against the official CDA XSD and crbio's "
        "rules, the embedded PDF against PDF/A-1b, and with --ans-kit the "
        "official ANS schematrons.",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE.xml")
    validate.add_argument(
        "--ans-kit", type=Path, metavar="DIR", help="the ANS kit (TestContenuCDA) directory"
    )
    validate.add_argument("--no-pdfa", action="store_true", help="do not check the embedded PDF")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.set_defaults(run=_validate)

    render = commands.add_parser("render", help="render a CDA document as HTML through its stylesheet")
    render.add_argument("file", type=Path, metavar="FILE.xml")
    render.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.html")
    render.add_argument(
        "--stylesheet", type=Path, metavar="XSL", help="stylesheet to apply (default: crbio's)"
    )
    render.set_defaults(run=_render)

    from crbio.cli.batch import add_batch_command
    from crbio.cli.conformity import add_conformity_command
    from crbio.cli.dispatch import add_dispatch_commands
    from crbio.cli.merge import add_merge_command

    add_dispatch_commands(commands)
    add_merge_command(commands)
    add_conformity_command(commands)
    add_batch_command(commands)
    return parser


def _error(message: str) -> None:
    print(f"crbio: {message}", file=sys.stderr)


def _ans_kit(directory: Path | None) -> AnsKit | None:
    if directory is None:
        return None
    from crbio.validation.anskit import AnsKit

    return AnsKit(directory)


def _build(args: argparse.Namespace) -> int:
    from crbio.documents.build import build
    from crbio.input import load_report
    from crbio.validation.validate import validate_document

    inputs = list(args.inputs)
    if args.samples:
        from crbio._resources import data_path

        inputs += sorted(data_path("samples").glob("*.json"))
    if not inputs:
        _error("give report files, or --samples to build the bundled samples")
        return EXIT_INPUT
    kit = _ans_kit(args.ans_kit)
    status = EXIT_OK
    for path in inputs:
        try:
            # With the kit, the full validation below replaces build's own XSD + rules check.
            report = load_report(path, ids="replace" if args.replace_original else "new")
            documents = build(report, stylesheet_href=args.stylesheet, validate=kit is None)
            if kit is not None:
                for kind, data in (("n3", documents.n3), ("n1", documents.n1)):
                    outcome = validate_document(data, label=f"{path.name} {kind}", ans_kit=kit)
                    if not outcome.ok:
                        raise ValidationFailed(outcome)
            written = documents.write(args.output, stem=path.stem)
        except (InputError, ValidationFailed) as e:
            # One unusable report (2) outweighs one that does not conform (1).
            _error(f"{path.name}: {e}")
            status = max(status, EXIT_INPUT if isinstance(e, InputError) else EXIT_INVALID)
            continue
        names = ", ".join(p.name for p in written if p.suffix != ".xsl")
        print(f"{path.name}: {names} (document {documents.document_id})")
    return status


def _validate(args: argparse.Namespace) -> int:
    from crbio.validation.validate import validate_document

    kit = _ans_kit(args.ans_kit)
    status = EXIT_OK
    results = []
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as e:
            _error(f"{path.name}: cannot be read ({e.strerror})")
            status = max(status, EXIT_INPUT)
            continue
        try:
            outcome = validate_document(data, label=path.name, ans_kit=kit, pdfa=not args.no_pdfa)
        except InputError as e:
            _error(f"{path.name}: {e}")
            status = max(status, EXIT_INPUT)
            continue
        results.append(outcome)
        if not outcome.ok and status == EXIT_OK:
            status = EXIT_INVALID
        if args.format == "text":
            print(outcome.summary())
    if args.format == "json":
        print(json.dumps([_report_json(r) for r in results], ensure_ascii=False, indent=1))
    return status


def _report_json(report: ValidationReport) -> dict[str, object]:
    return {**dataclasses.asdict(report), "ok": report.ok}


def _render(args: argparse.Namespace) -> int:
    from crbio.presentation import render_html

    html = render_html(args.file, stylesheet=args.stylesheet)
    write_atomically(args.output.parent, {args.output.name: html})
    print(f"{args.file.name}: {args.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: complete CR-Bio builds per second per core, per stage, and with the ANS kit.

    python bench/build.py [--rounds N] [--ans-kit DIR] [--json FILE]

One process, one core. A complete build is what ``crbio.build`` does by default:
PDF/A-1b + CDA N3 + CDA N1 + official XSD + crbio's rules on both CDA documents.
Each stage is also timed on its own so the table shows where the time goes.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import crbio  # noqa: E402
from crbio._xml import parse_xml  # noqa: E402
from crbio.documents.cda import build_n1, build_n3  # noqa: E402
from crbio.documents.context import BuildContext, FixedClock, SequenceIds, resolve_document  # noqa: E402
from crbio.documents.pdf import render_pdf  # noqa: E402
from crbio.validation.rules import check_rules  # noqa: E402
from crbio.validation.xsd import validate_xsd  # noqa: E402


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds of ``rounds`` calls (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ans-kit", type=Path, default=ROOT.parent / "shared" / "ans-kit")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    context = BuildContext(
        FixedClock(datetime.fromisoformat("2026-01-04T18:00:00+01:00")), SequenceIds("1.2.3")
    )
    samples = sorted((ROOT / "samples").glob("*.json"))
    rows = []
    for path in samples:
        raw = path.read_bytes()
        report = resolve_document(crbio.load_report(raw), context)
        pdf = render_pdf(report)
        n3 = build_n3(report, pdf)
        n1 = build_n1(report, pdf)
        results = sum(1 for _ in report.observations())
        stages = {
            "load": timed(lambda raw=raw: crbio.load_report(raw), args.rounds),
            "pdf": timed(lambda report=report: render_pdf(report), args.rounds),
            "n3": timed(lambda report=report, pdf=pdf: build_n3(report, pdf), args.rounds),
            "n1": timed(lambda report=report, pdf=pdf: build_n1(report, pdf), args.rounds),
            "xsd+rules": timed(
                lambda n3=n3, n1=n1: [
                    (validate_xsd(t, label="b"), check_rules(t, label="b"))
                    for t in (parse_xml(n3, label="b"), parse_xml(n1, label="b"))
                ],
                args.rounds,
            ),
            "complete": timed(
                lambda raw=raw: crbio.build(crbio.load_report(raw), context=context), args.rounds
            ),
        }
        rows.append({"sample": path.name, "results": results, "pages_bytes": len(pdf), **stages})

    kit_rate = None
    if (args.ans_kit / "schematrons").is_dir():
        from crbio.validation.anskit import AnsKit

        start = time.perf_counter()
        kit = AnsKit(args.ans_kit)
        kit_start = time.perf_counter() - start
        n3s = [crbio.build(crbio.load_report(p), context=context).n3 for p in samples]
        per_doc = [timed(lambda d=d: kit.check(d, label="b"), max(1, args.rounds // 2)) for d in n3s]
        kit_rate = {
            "start_s": kit_start,
            "median_ms": statistics.median(per_doc) * 1000,
            "docs_per_s": 1 / statistics.mean(per_doc),
        }

    complete = [r["complete"] for r in rows]
    summary = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {platform.python_implementation()} "
        f"{platform.python_version()}".strip(),
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "reports_per_s_per_core": len(complete) / sum(complete),
        "median_complete_ms": statistics.median(complete) * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ans_kit": kit_rate,
        "samples": rows,
    }

    print(
        f"{'sample':42} {'results':>7} "
        + " ".join(f"{k:>9}" for k in ("load", "pdf", "n3", "n1", "xsd+rules", "complete"))
    )
    for r in rows:
        print(
            f"{r['sample']:42} {r['results']:>7} "
            + " ".join(f"{r[k] * 1000:>7.1f}ms" for k in ("load", "pdf", "n3", "n1", "xsd+rules", "complete"))
        )
    print(
        f"\ncomplete build (PDF/A + N3 + N1 + XSD + crbio rules): "
        f"{summary['reports_per_s_per_core']:.1f} reports/s/core "
        f"(median {summary['median_complete_ms']:.1f} ms), peak RSS {summary['peak_rss_mb']:.0f} MB"
    )
    if kit_rate:
        print(
            f"ANS kit: {kit_rate['docs_per_s']:.1f} documents/s/core (median {kit_rate['median_ms']:.0f} ms, "
            f"kit start {kit_rate['start_s']:.1f} s)"
        )
    else:
        print("ANS kit: not found, skipped", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

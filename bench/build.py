"""Benchmark: complete CR-Bio builds per second per core, per stage, and with the ANS kit.

    python bench/build.py [--rounds N] [--ans-kit DIR] [--json FILE]

One process, one core. A complete build is what ``crbio.build`` does by default:
PDF/A-1b + CDA N3 + CDA N1 + official XSD + crbio's rules on both CDA documents.
Each stage is also timed on its own so the table shows where the time goes (the stages are
those of ``bench/stages.py``). Times are process CPU time, medians of ``--rounds`` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT))

import crbio  # noqa: E402
from bench.stages import STAGES, complete_build, cpu_median, default_context, stage_timings  # noqa: E402
from crbio.documents.context import resolve_document  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ans-kit", type=Path, default=ROOT.parent / "shared" / "ans-kit")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    context = default_context()
    samples = sorted((ROOT / "samples").glob("*.json"))
    rows = []
    for path in samples:
        raw = path.read_bytes()
        report = resolve_document(crbio.load_report(raw), context)
        results = sum(1 for _ in report.observations())
        stages = stage_timings(raw, rounds=args.rounds, context=context)
        pdf_bytes = len(complete_build(raw, context=context).pdf)
        rows.append({"sample": path.name, "results": results, "pdf_bytes": pdf_bytes, **stages})

    kit_rate = None
    if (args.ans_kit / "schematrons").is_dir():
        from crbio.validation.anskit import AnsKit

        start = time.perf_counter()
        kit = AnsKit(args.ans_kit)
        kit_start = time.perf_counter() - start  # wall time: the kit starts a JVM
        n3s = [complete_build(p.read_bytes(), context=context).n3 for p in samples]
        per_doc = [cpu_median(lambda d=d: kit.check(d, label="b"), max(1, args.rounds // 2)) for d in n3s]
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

    print(f"{'sample':42} {'results':>7} " + " ".join(f"{k:>9}" for k in STAGES))
    for r in rows:
        print(f"{r['sample']:42} {r['results']:>7} " + " ".join(f"{r[k] * 1000:>7.1f}ms" for k in STAGES))
    print(
        f"\ncomplete build (PDF/A + N3 + N1 + XSD + crbio rules): "
        f"{summary['reports_per_s_per_core']:.1f} reports/s/core "
        f"(median {summary['median_complete_ms']:.1f} ms of process CPU time), "
        f"peak RSS {summary['peak_rss_mb']:.0f} MB"
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

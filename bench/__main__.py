"""crbio's benchmarks in one run, printed as one table and compared with the targets.

    python -m bench [--rounds 7] [--deliveries 1000] [--batch 6000] [--markdown FILE] [--json FILE]

From the repository root. Four parts, each in the process best suited to measure it:

1. **Stages** (this process, one core): a generated small (10 results), typical (40) and long
   (300) report is built stage by stage (``bench/stages.py``); each figure is the median process
   CPU time of ``--rounds`` runs. ``complete`` is ``crbio.build`` as ``crbio build`` runs it.
2. **Throughput**: 40 different typical reports built one after the other (reports/s/core, CPU
   time), and the official ANS kit run on their N3s (documents/s/core).
3. **Dispatch** (``bench/dispatch.py`` in a child process): deliveries/s through the outbox to the
   local simulators, per outbox backend (PostgreSQL only when a server can be started here).
4. **Batch** (``bench/batch.py`` in a child process): ``crbio batch`` on ``--batch`` generated
   reports, with the peak resident memory of its whole process tree and whether it stays flat.

The defaults finish in under five minutes on the 2-core development machine; ``bench/RESULTS.md``
keeps a run with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from generate_inputs import Templates, dump, report  # noqa: E402

from bench.stages import STAGES, complete_build, default_context, stage_timings  # noqa: E402

SIZES = {"small": 10, "typical": 40, "long": 300}
#: The issue's targets on a 2-core development machine.
TARGETS = {
    "complete reports/s/core (typical)": 100.0,
    "ANS kit documents/s/core": 10.0,
    "outbox deliveries/s (SQLite)": 500.0,
}


def machine() -> str:
    """CPU model, cores, memory, OS and Python: what the figures were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{memory_kb / 2**20:.1f} GB RAM"
    except (OSError, StopIteration):
        memory = "memory unknown"
    return (
        f"{model}, {len(os.sched_getaffinity(0))} cores, {memory}, {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def generated(results: int, count: int = 1, *, seed: int = 7) -> list[bytes]:
    """``count`` generated report inputs of ``results`` results each, as crbio JSON bytes."""
    templates, rng = Templates(), random.Random(seed)
    return [
        dump(report(templates, rng, index, seed, results), -timedelta(days=index)).encode("utf-8")
        for index in range(count)
    ]


def cpu_rate(fn: Any, items: list[Any]) -> float:
    """Items per CPU second when ``fn`` runs on each item in turn (after one warm-up)."""
    fn(items[0])
    start = time.process_time()
    for item in items:
        fn(item)
    return len(items) / (time.process_time() - start)


def stages_part(rounds: int, ans_kit: Path | None) -> dict[str, Any]:
    """Per-stage medians for the three sizes, plus the ANS kit on each size's N3."""
    kit = None
    if ans_kit is not None:
        from crbio.validation.anskit import AnsKit

        start = time.perf_counter()
        kit = AnsKit(ans_kit)
        kit_start = time.perf_counter() - start
    table: dict[str, dict[str, float]] = {}
    for size, results in SIZES.items():
        raw = generated(results)[0]
        timings = stage_timings(raw, rounds=rounds)
        if kit is not None:
            n3 = complete_build(raw).n3
            kit.check(n3, label=size)
            samples = []
            for _ in range(max(1, rounds // 2)):
                start = time.process_time()
                kit.check(n3, label=size)
                samples.append(time.process_time() - start)
            timings["ans kit (N3)"] = statistics.median(samples)
        table[size] = timings
        print(f"  stages: {size} done", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"stages": table}
    if kit is not None:
        out["ans_kit_start_s"] = kit_start
        out["ans_kit"] = kit
    return out


def throughput_part(kit: Any) -> dict[str, float]:
    """Sustained complete builds of typical reports, and the ANS kit over their N3s."""
    inputs = generated(SIZES["typical"], 40, seed=11)
    context = default_context()
    out = {
        "complete reports/s/core (typical)": cpu_rate(
            lambda raw: complete_build(raw, context=context), inputs
        )
    }
    if kit is not None:
        n3s = [complete_build(raw, context=context).n3 for raw in inputs[:20]]
        out["ANS kit documents/s/core"] = cpu_rate(lambda n3: kit.check(n3, label="bench"), n3s)
    return out


def child(script: str, *args: str) -> dict[str, Any] | None:
    """Run a benchmark script of this folder with ``--json`` and return its figures."""
    with tempfile.TemporaryDirectory(prefix="crbio-bench-") as tmp:
        result = Path(tmp) / "figures.json"
        command = [sys.executable, str(ROOT / "bench" / script), *args, "--json", str(result)]
        completed = subprocess.run(command, stdout=sys.stderr, check=False)
        if completed.returncode != 0 or not result.exists():
            print(f"  {script} {' '.join(args)}: failed (exit {completed.returncode})", file=sys.stderr)
            return None
        figures: dict[str, Any] = json.loads(result.read_text("utf-8"))
        return figures


def markdown(figures: dict[str, Any]) -> str:
    """The whole run as Markdown: machine, stage table, throughput against targets, dispatch, batch."""
    lines = [
        f"Machine: {figures['machine']}  ",
        f"Run: {figures['when']}, load average before {figures['load']}",
        "",
    ]
    stages = figures["stages"]
    columns = [*STAGES, *(["ans kit (N3)"] if "ans kit (N3)" in stages["small"] else [])]
    lines += [
        "Median process CPU ms per report, by stage:",
        "",
        "| report | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for size, timings in stages.items():
        cells = " | ".join(f"{timings[c] * 1000:.1f}" for c in columns)
        lines.append(f"| {size} ({SIZES[size]} results) | {cells} |")
    lines += ["", "| figure | measured | target | met |", "|---|---:|---:|---|"]
    for name, value in figures["headline"].items():
        target = TARGETS.get(name)
        met = "—" if target is None or value is None else ("yes" if value >= target else "**no**")
        shown = "not measured" if value is None else f"{value:.1f}"
        lines.append(f"| {name} | {shown} | {'' if target is None else f'≥ {target:g}'} | {met} |")
    batch = figures.get("batch")
    if batch:
        memory = batch["memory"]
        lines += [
            "",
            f"Batch: {batch['inputs']} generated reports of {batch['results_per_input']} results, "
            f"{batch['jobs']} jobs, validation `{batch['validate']}`: {batch['inputs_per_s']} inputs/s; "
            f"peak RSS of the process tree {memory.get('peak_tree_mb')} MB "
            f"({memory.get('tree_mb_second_tenth')} MB in the second tenth of the run, "
            f"{memory.get('tree_mb_last_tenth')} MB in the last).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every part and print the Markdown table; exit 1 if a part failed to run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed runs per stage (median)")
    parser.add_argument("--ans-kit", type=Path, default=ROOT.parent / "shared" / "ans-kit")
    parser.add_argument("--deliveries", type=int, default=1000, help="deliveries per backend")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument(
        "--batch", type=int, default=6000, metavar="N", help="reports in the batch run (0: skip)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    kit_dir = args.ans_kit if (args.ans_kit / "schematrons").is_dir() else None
    if kit_dir is None:
        print(f"ANS kit not found at {args.ans_kit}: its figures are left out", file=sys.stderr)
    figures: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    part = stages_part(args.rounds, kit_dir)
    kit = part.pop("ans_kit", None)
    figures.update(part)
    headline: dict[str, float | None] = dict(throughput_part(kit))
    failed = False
    dispatch: dict[str, Any] = {}
    for backend in args.backends:
        result = child(
            "dispatch.py", "--backend", backend, "--deliveries", str(args.deliveries), "--threads", "4"
        )
        dispatch[backend] = result
        name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(backend, backend)
        headline[f"outbox deliveries/s ({name})"] = (
            None if result is None else max(run["deliveries_per_s"] for run in result["runs"])
        )
        failed |= result is None
    figures["dispatch"] = dispatch
    if args.batch:
        figures["batch"] = child("batch.py", str(args.batch))
        failed |= figures["batch"] is None
    figures["headline"] = headline
    figures["elapsed_s"] = round(time.perf_counter() - started, 1)

    table = markdown(figures) + f"\nThe whole run took {figures['elapsed_s']:.0f} s.\n"
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

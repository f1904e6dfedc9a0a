"""Benchmark ``crbio batch``: generate N inputs, convert them, convert them again (all skipped).

    python bench/batch.py [N] [--results 10] [--jobs J] [--validate own] [--workdir DIR] [--json FILE]

The batch runs as a child process (``python -m crbio.cli batch``); the resident memory of its
whole process tree (the batch, the forkserver, the workers) is sampled from ``/proc`` every
0.2 s, so the figures are the sum a machine actually carries, and how it evolves from the
first tenth of the run to the last shows whether memory stays flat. ``getrusage`` of the
children (largest single process) is given too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from generate_inputs import generate  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces: the fields after its closing parenthesis are fixed.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE
    except OSError:
        return 0


class TreeSampler:
    """Sample the resident memory of a process and its descendants until stopped."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        self.pid = pid
        self.period = period
        self.samples: list[tuple[float, int, int, int]] = []  # time, tree total, root, largest other
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            tree = _children()
            pids, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += tree.get(pid, [])
            sizes = {pid: _rss(pid) for pid in pids}
            others = [size for pid, size in sizes.items() if pid != self.pid]
            if not sizes[self.pid]:  # the batch has exited
                break
            self.samples.append(
                (time.monotonic() - start, sum(sizes.values()), sizes[self.pid], max(others, default=0))
            )
            self._stop.wait(self.period)

    def summary(self) -> dict[str, Any]:
        """Peaks, and the tree's and the parent's memory over the first and last tenths of the run."""
        if not self.samples:
            return {}
        tenth = max(1, len(self.samples) // 10)
        # The pool's first seconds (workers importing, warming up) are not steady state.
        early, late = self.samples[tenth : 2 * tenth] or self.samples[:tenth], self.samples[-tenth:]

        def mb(value: float) -> float:
            return round(value / 2**20, 1)

        return {
            "peak_tree_mb": mb(max(s[1] for s in self.samples)),
            "peak_parent_mb": mb(max(s[2] for s in self.samples)),
            "peak_worker_mb": mb(max(s[3] for s in self.samples)),
            "tree_mb_second_tenth": mb(sum(s[1] for s in early) / len(early)),
            "tree_mb_last_tenth": mb(sum(s[1] for s in late) / len(late)),
            "parent_mb_second_tenth": mb(sum(s[2] for s in early) / len(early)),
            "parent_mb_last_tenth": mb(sum(s[2] for s in late) / len(late)),
            "samples": len(self.samples),
        }


def run_batch(inputs: Path, outdir: Path, jobs: int, validate: str) -> tuple[float, dict[str, Any], int]:
    """Run one batch; its wall time, the memory summary and its exit status."""
    command = [
        sys.executable,
        "-m",
        "crbio.cli",
        "batch",
        str(inputs),
        "-o",
        str(outdir),
        "--jobs",
        str(jobs),
        "--validate",
        validate,
        "--progress",
        "log",
        "--log-every",
        "10",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    with TreeSampler(process.pid) as sampler:
        status = process.wait()
    return time.perf_counter() - start, sampler.summary(), status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int, nargs="?", default=10_000, metavar="N")
    parser.add_argument("--results", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--validate", choices=("off", "own", "full"), default="own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, help="keep inputs and outputs here (default: a temporary dir)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crbio-bench-batch-"))
    inputs, outdir = workdir / "in", workdir / "out"
    shutil.rmtree(inputs, ignore_errors=True)
    shutil.rmtree(outdir, ignore_errors=True)
    load_before = os.getloadavg()
    try:
        start = time.perf_counter()
        generate(args.count, inputs, seed=args.seed, results=args.results)
        generated = time.perf_counter() - start
        print(f"generated {args.count} inputs ({args.results} results each) in {generated:.1f} s", flush=True)

        first, memory, status = run_batch(inputs, outdir, args.jobs, args.validate)
        report = json.loads((outdir / "batch-report.json").read_text("utf-8"))
        counts = report["counts"]
        entries = len(report["inputs"])
        ok = status == 0 and counts["built"] == args.count and entries == args.count

        second, memory_rerun, status_rerun = run_batch(inputs, outdir, args.jobs, args.validate)
        rerun = json.loads((outdir / "batch-report.json").read_text("utf-8"))
        ok_rerun = status_rerun == 0 and rerun["counts"]["skipped"] == args.count

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = {
            "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cores "
            f"{platform.python_implementation()} {platform.python_version()}",
            "load_average_before": load_before,
            "inputs": args.count,
            "results_per_input": args.results,
            "jobs": args.jobs,
            "validate": args.validate,
            "generate_s": round(generated, 2),
            "batch_s": round(first, 2),
            "inputs_per_s": round(args.count / first, 1),
            "counts": counts,
            "report_entries": entries,
            "report_ok": ok,
            "memory": memory,
            "rerun_s": round(second, 2),
            "rerun_inputs_per_s": round(args.count / second, 1),
            "rerun_counts": rerun["counts"],
            "rerun_ok": ok_rerun,
            "rerun_memory": memory_rerun,
            "getrusage_children_maxrss_mb": round(children.ru_maxrss / 1024, 1),
            "output_bytes": sum(p.stat().st_size for p in outdir.rglob("*") if p.is_file()),
        }
        print(json.dumps(summary, indent=1))
        print(
            f"\n{args.count} inputs, {args.jobs} workers: {summary['inputs_per_s']} inputs/s "
            f"({first:.1f} s), peak RSS of the process tree {memory.get('peak_tree_mb')} MB "
            f"(parent {memory.get('peak_parent_mb')} MB, largest worker {memory.get('peak_worker_mb')} MB; "
            f"tree {memory.get('tree_mb_second_tenth')} MB early vs {memory.get('tree_mb_last_tenth')} MB "
            f"at the end); re-run skipping everything: {second:.1f} s "
            f"({summary['rerun_inputs_per_s']} inputs/s); report {'correct' if ok and ok_rerun else 'WRONG'}"
        )
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        if not (ok and ok_rerun):
            sys.exit(1)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Deliveries per second through the outbox to the local simulators.

Usage: ``python bench/dispatch.py [--deliveries 3000] [--threads 1 4] [--processes 2] [--inline]``

Queues ``--deliveries`` deliveries (the sample reports under fresh document ids, so the DMP
simulator accepts each one), then drains them with ``--processes`` worker processes of
``--threads`` threads each against the simulators (XDS.b over HTTPS+MTOM with signed VIHF,
SMTP with STARTTLS and client certificates, MLLP over TLS), and prints the time to queue and
to drain, deliveries/s, and the peak memory.

The simulators run in a process of their own (``crbio simulate``), as real servers would,
but on the same cores: what they spend checking signatures and parsing messages is part of
the figure. ``--inline`` runs them inside the benchmark process instead, as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crbio.dispatch import DispatchConfig, Outbox, dispatch, run_workers
from crbio.documents.build import Documents, build
from crbio.documents.context import BuildContext
from crbio.input import load_report
from crbio.simulators.run import Simulation

ROOT = Path(__file__).resolve().parents[1]


def _samples() -> list[Documents]:
    return [
        build(load_report(p), context=BuildContext(), validate=False)
        for p in sorted(ROOT.glob("samples/*.json"))
    ]


def _renamed(documents: Documents, suffix: int) -> Documents:
    """The same documents under a new document id (the DMP refuses a uniqueId twice)."""
    old = documents.document_id
    new = f"{old}.{suffix}"
    report = documents.report
    report = dataclasses.replace(report, document=dataclasses.replace(report.document, id=new, replaces=None))
    n3 = documents.n3.replace(f'<id root="{old}"/>'.encode(), f'<id root="{new}"/>'.encode(), 1)
    return dataclasses.replace(documents, report=report, n3=n3)


def queue(config: DispatchConfig, wanted: int) -> tuple[int, float]:
    """Queue at least ``wanted`` deliveries; return how many and the seconds it took."""
    samples = [d for d in _samples() if not d.report.document.is_amendment]
    queued, suffix = 0, 0
    start = time.perf_counter()
    with Outbox(config.outbox_path) as outbox:
        while queued < wanted:
            documents = _renamed(samples[suffix % len(samples)], suffix)
            queued += len(dispatch(documents, config, outbox=outbox).queued)
            suffix += 1
    return queued, time.perf_counter() - start


def _drain(config_path: str, threads: int) -> None:
    run_workers(DispatchConfig.load(config_path), threads=threads, drain=True)


def drain(config: DispatchConfig, config_path: Path, *, threads: int, processes: int) -> tuple[float, float]:
    """Drain the outbox with ``processes`` × ``threads`` workers; return the seconds and CPU seconds spent."""
    start = time.perf_counter()
    if processes == 1:
        cpu = time.process_time()
        run_workers(config, threads=threads, drain=True)
        return time.perf_counter() - start, time.process_time() - cpu
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_drain, args=(str(config_path), threads)) for _ in range(processes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - start, cpu


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def simulators(
    directory: Path, *, mssante: str, inline: bool
) -> Iterator[tuple[DispatchConfig, Path, Callable[[], float] | None]]:
    """The simulators, in this process or in a ``crbio simulate`` process.

    Yields the configuration, its path, and (in their own process) a function giving the CPU
    seconds the simulators have used so far.
    """
    if inline:
        with Simulation(directory, mssante=mssante) as sim:
            yield sim.config, sim.config_path, None
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "crbio", "simulate", "--dir", str(directory), "--mssante", mssante],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the simulators describe themselves once they listen
            if b"Ctrl-C" in line:
                break
        else:
            raise RuntimeError("crbio simulate stopped before its servers were listening")
        config_path = directory / "crbio.toml"
        yield DispatchConfig.load(config_path), config_path, lambda: _process_cpu(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=3_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--mssante", choices=("smtp", "operator-api"), default="smtp")
    parser.add_argument("--inline", action="store_true", help="run the simulators in this process")
    args = parser.parse_args(argv)
    print(
        f"{'workers':>10} {'deliveries':>10} {'queue s':>8} {'drain s':>8} {'deliv./s':>9}"
        f" {'CPU ms/delivery: workers':>25} {'simulators':>10}"
    )
    for threads in args.threads:
        with (
            tempfile.TemporaryDirectory(prefix="crbio-bench-") as tmp,
            simulators(Path(tmp), mssante=args.mssante, inline=args.inline) as (config, config_path, sim_cpu),
        ):
            count, queue_s = queue(config, args.deliveries)
            sim_before = sim_cpu() if sim_cpu else 0.0
            drain_s, worker_cpu = drain(config, config_path, threads=threads, processes=args.processes)
            sim_ms = f"{(sim_cpu() - sim_before) / count * 1000:10.1f}" if sim_cpu else f"{'(inline)':>10}"
            with Outbox(config.outbox_path) as outbox:
                states = outbox.counts()
            if states != {"acknowledged": count}:
                print(f"unexpected outcome: {states}", file=sys.stderr)
                return 1
            label = f"{args.processes}×{threads}"
            print(
                f"{label:>10} {count:>10} {queue_s:>8.1f} {drain_s:>8.1f} {count / drain_s:>9.0f}"
                f" {worker_cpu / count * 1000:>25.1f} {sim_ms}"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    where = "included" if args.inline else "in their own process"
    print(f"peak RSS: this process {peak:.0f} MB, largest child {children:.0f} MB (simulators {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Deliveries per second through the outbox to the local simulators.

Usage::

    python bench/dispatch.py [--backend sqlite postgresql] [--deliveries 1000] [--threads 1 4]
                             [--processes 2] [--inline] [--json FILE]

For each outbox backend and each ``--threads`` value, queues ``--deliveries`` deliveries (the
sample reports under fresh document ids, so the DMP simulator accepts each one), then drains
them with ``--processes`` worker processes of that many threads each against the simulators
(XDS.b over HTTPS+MTOM with signed VIHF, SMTP with STARTTLS and client certificates, MLLP over
TLS), and prints the time to queue and to drain, deliveries/s, the process CPU time per
delivery of the workers and of the simulators, and the peak memory. ``--json`` writes the same
figures as JSON (``python -m bench`` reads them).

PostgreSQL runs on a throw-away server started for the run (``bench/postgres.py``), with its
default durability (fsync on, synchronous commit), as SQLite keeps ``synchronous=FULL``.

The simulators run in a process of their own (``crbio simulate``), as real servers would,
but on the same cores: what they spend checking signatures and parsing messages is part of
the figure. ``--inline`` runs them inside the benchmark process instead, as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crbio.dispatch import DispatchConfig, dispatch, open_outbox, run_workers

if TYPE_CHECKING:
    from crbio.documents.build import Documents

# Building documents and running the simulators need much more of crbio than delivering does:
# those modules are imported where used, so that the worker processes (spawned: they import
# this script again) start with what a `crbio worker` loads, and their CPU time is the work.

ROOT = Path(__file__).resolve().parents[1]


def _samples() -> list[Documents]:
    from crbio.documents.build import build
    from crbio.documents.context import BuildContext
    from crbio.input import load_report

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
    with open_outbox(config) as outbox:
        while queued < wanted:
            documents = _renamed(samples[suffix % len(samples)], suffix)
            queued += len(dispatch(documents, config, outbox=outbox).queued)
            suffix += 1
    return queued, time.perf_counter() - start


def _drain(config_path: str, threads: int, spent: Any) -> None:
    # The CPU time of the draining alone: the process's start (importing crbio.dispatch loads
    # the document builder too, about a second) is a fixed cost, reported apart.
    cpu = time.process_time()
    run_workers(DispatchConfig.load(config_path), threads=threads, drain=True)
    spent.put(time.process_time() - cpu)


def drain(
    config: DispatchConfig, config_path: Path, *, threads: int, processes: int
) -> tuple[float, float, float]:
    """Drain the outbox with ``processes`` × ``threads`` workers.

    Returns the seconds it took, the workers' CPU seconds spent draining, and their CPU
    seconds in all (process starts included).
    """
    start = time.perf_counter()
    if processes == 1:
        cpu = time.process_time()
        run_workers(config, threads=threads, drain=True)
        used = time.process_time() - cpu
        return time.perf_counter() - start, used, used
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    context = multiprocessing.get_context("spawn")
    spent = context.SimpleQueue()
    arguments = (str(config_path), threads, spent)
    workers = [context.Process(target=_drain, args=arguments) for _ in range(processes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    draining = sum(spent.get() for _ in workers if not spent.empty())
    spent.close()
    return elapsed, draining, total


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_outbox(config_path: Path, dsn: str | None) -> Path:
    """The simulators' configuration, with the outbox on PostgreSQL when ``dsn`` is given."""
    if dsn is None:
        return config_path
    text = config_path.read_text("utf-8")
    head, found, rest = text.partition("\n[outbox]\n")
    if not found:
        raise RuntimeError(f"{config_path}: no [outbox] section to point at PostgreSQL")
    _, _, after_path = rest.partition("\n")  # the section's first line is the SQLite path
    changed = config_path.with_name("crbio-postgresql.toml")
    changed.write_text(f'{head}\n[outbox]\nbackend = "postgresql"\ndsn = "{dsn}"\n{after_path}', "utf-8")
    return changed


@contextmanager
def simulators(
    directory: Path, *, mssante: str, inline: bool, dsn: str | None = None
) -> Iterator[tuple[DispatchConfig, Path, Callable[[], float] | None]]:
    """The simulators, in this process or in a ``crbio simulate`` process.

    Yields the configuration (its outbox on PostgreSQL at ``dsn`` if given), its path, and (in
    their own process) a function giving the CPU seconds the simulators have used so far.
    """
    if inline:
        from crbio.simulators.run import Simulation

        with Simulation(directory, mssante=mssante) as sim:
            path = _with_outbox(sim.config_path, dsn)
            yield DispatchConfig.load(path), path, None
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
        config_path = _with_outbox(directory / "crbio.toml", dsn)
        yield DispatchConfig.load(config_path), config_path, lambda: _process_cpu(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _database(backend: str) -> AbstractContextManager[Any]:
    """A PostgreSQL server for the run (``postgres.start_postgres``), or nothing for SQLite."""
    if backend != "postgresql":
        return nullcontext()
    from postgres import start_postgres  # bench/postgres.py, beside this script

    return start_postgres()


def run(backend: str, server: Any, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measured run: fresh simulators and outbox, queue, drain; the figures as a dict."""
    with (
        tempfile.TemporaryDirectory(prefix="crbio-bench-") as tmp,
        simulators(
            Path(tmp),
            mssante=args.mssante,
            inline=args.inline,
            dsn=None if server is None else server.database(),
        ) as (config, config_path, sim_cpu),
    ):
        count, queue_s = queue(config, args.deliveries)
        sim_before = sim_cpu() if sim_cpu else 0.0
        drain_s, worker_cpu, worker_total = drain(
            config, config_path, threads=threads, processes=args.processes
        )
        sim_ms = (sim_cpu() - sim_before) / count * 1000 if sim_cpu else None
        with open_outbox(config) as outbox:
            states = outbox.counts()
    if states != {"acknowledged": count}:
        raise RuntimeError(f"unexpected outcome: {states}")
    return {
        "backend": backend,
        "processes": args.processes,
        "threads": threads,
        "deliveries": count,
        "queue_s": round(queue_s, 2),
        "queued_per_s": round(count / queue_s, 1),
        "drain_s": round(drain_s, 2),
        "deliveries_per_s": round(count / drain_s, 1),
        "worker_cpu_ms_per_delivery": round(worker_cpu / count * 1000, 2),
        "worker_processes_cpu_s": round(worker_total, 2),  # starts included
        "simulator_cpu_ms_per_delivery": None if sim_ms is None else round(sim_ms, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print its table, and write the JSON figures if asked."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite"])
    parser.add_argument("--deliveries", type=int, default=1_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--mssante", choices=("smtp", "operator-api"), default="smtp")
    parser.add_argument("--inline", action="store_true", help="run the simulators in this process")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    print(
        f"{'backend':>10} {'workers':>8} {'deliveries':>10} {'queue s':>8} {'drain s':>8} {'deliv./s':>9}"
        f" {'CPU ms/delivery: workers':>25} {'simulators':>10}"
    )
    runs: list[dict[str, Any]] = []
    for backend in args.backend:
        with _database(backend) as server:
            for threads in args.threads:
                try:
                    figures = run(backend, server, threads, args)
                except RuntimeError as error:
                    print(f"{backend} {args.processes}×{threads}: {error}", file=sys.stderr)
                    return 1
                runs.append(figures)
                sim = figures["simulator_cpu_ms_per_delivery"]
                print(
                    f"{backend:>10} {f'{args.processes}×{threads}':>8} {figures['deliveries']:>10}"
                    f" {figures['queue_s']:>8.1f} {figures['drain_s']:>8.1f}"
                    f" {figures['deliveries_per_s']:>9.0f}"
                    f" {figures['worker_cpu_ms_per_delivery']:>25.1f}"
                    f" {'(inline)' if sim is None else f'{sim:.1f}':>10}"
                )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    where = "included" if args.inline else "in their own process"
    print(f"peak RSS: this process {peak:.0f} MB, largest child {children:.0f} MB (simulators {where})")
    if args.json:
        document = {
            "benchmark": "dispatch",
            "cpu": "process CPU time (user + system): workers' time.process_time() around their"
            " draining (worker_processes_cpu_s: getrusage of the whole processes, starts included),"
            " simulators' from /proc/<pid>/stat over the drain",
            "mssante": args.mssante,
            "simulators": "inline" if args.inline else "own process",
            "runs": runs,
            "peak_rss_mb": {"bench": round(peak), "largest_child": round(children)},
        }
        args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Deliveries per second through the outbox to the local simulators.

Usage: ``python bench/dispatch.py [--deliveries 10000] [--threads 1 4 8] [--processes 2]``

Queues ``--deliveries`` deliveries (the sample reports under fresh document ids, so the DMP
simulator accepts each one), then drains them with workers against the simulators (XDS.b
over HTTPS+MTOM with signed VIHF, SMTP with STARTTLS and client certificates, MLLP over TLS)
and prints the time to queue and to drain, deliveries/s, and the peak memory. The
simulators run in this process and share its cores with the workers, so the figures are a
lower bound of what the senders alone can do.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import resource
import sys
import tempfile
import time
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


def drain(config: DispatchConfig, config_path: Path, *, threads: int, processes: int) -> float:
    """Drain the outbox with ``processes`` × ``threads`` workers; return the seconds it took."""
    start = time.perf_counter()
    if processes == 1:
        run_workers(config, threads=threads, drain=True)
    else:
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_drain, args=(str(config_path), threads)) for _ in range(processes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[4])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--mssante", choices=("smtp", "operator-api"), default="smtp")
    args = parser.parse_args(argv)
    print(f"{'workers':>10} {'deliveries':>10} {'queue s':>8} {'drain s':>8} {'deliv./s':>9}")
    for threads in args.threads:
        with (
            tempfile.TemporaryDirectory(prefix="crbio-bench-") as tmp,
            Simulation(tmp, mssante=args.mssante) as sim,
        ):
            config = sim.config
            count, queue_s = queue(config, args.deliveries)
            drain_s = drain(config, sim.config_path, threads=threads, processes=args.processes)
            with Outbox(config.outbox_path) as outbox:
                states = outbox.counts()
            if states != {"acknowledged": count}:
                print(f"unexpected outcome: {states}", file=sys.stderr)
                return 1
            label = f"{args.processes}×{threads}"
            print(f"{label:>10} {count:>10} {queue_s:>8.1f} {drain_s:>8.1f} {count / drain_s:>9.0f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (simulators included): {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

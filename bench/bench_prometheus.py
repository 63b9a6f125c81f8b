"""Benchmark: the Prometheus part of a diagnosis on 1,000 workloads x 5,000 edges (real Prometheus).

A TSDB is backfilled (``promtool tsdb create-blocks-from openmetrics``) with istio_requests_total for
5,000 edges between 1,000 workloads in 50 namespaces, each reported by both sidecars, 2 % of the edges
failing from 10 minutes before the alert; istiod's series as in the tests.  The real ``prometheus``
serves it on loopback; each measurement runs ``read_telemetry`` (every query of a diagnosis: failing
edges, traffic, error ratios, TCP, istiod trends) in a fresh subprocess, so wall time includes
Prometheus's evaluation and the peak RSS is meshbot's alone.  Target: < 2 s and < 100 MB.

    .venv/bin/python bench/bench_prometheus.py              # generates, backfills, measures
    .venv/bin/python bench/bench_prometheus.py --keep DIR   # reuse (or keep) the TSDB in DIR
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKLOADS, EDGES, NAMESPACES = 1000, 5000, 50
FAILING_SHARE = 0.02
SCRAPE = 30
RUNS = 3

MEASURE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from commands.clients.prometheus import PrometheusClient
from commands.telemetry.telemetry import read_telemetry, window_around
from tests.support.prometheus import ALERT_AT
start, end = window_around(ALERT_AT)
began = time.perf_counter()
client = PrometheusClient({url!r}, timeout=10.0)
telemetry = read_telemetry(client, namespaces={namespaces!r}, start=start, end=end)
wall = time.perf_counter() - began
print(json.dumps({{"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "edges": len(telemetry.edges), "onset": str(telemetry.onset),
                  "codes": sorted({{f.code for f in telemetry.findings}})}}))
"""


def write_openmetrics(path: Path) -> int:
    """The mesh's history as OpenMetrics, streamed to ``path``; returns the number of series."""
    from tests.support.prometheus import ALERT_AT, HISTORY_END, mesh_metrics

    rng = random.Random(25)
    workloads = [(f"ns-{i % NAMESPACES:02d}", f"w-{i:04d}") for i in range(WORKLOADS)]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < EDGES:
        source, destination = rng.randrange(WORKLOADS), rng.randrange(WORKLOADS)
        if source != destination:
            pairs.add((source, destination))
    failing = set(rng.sample(sorted(pairs), int(EDGES * FAILING_SHARE)))
    start = int((ALERT_AT.timestamp() - 40 * 60))
    end = int(HISTORY_END.timestamp())
    onset = ALERT_AT.timestamp() - 10 * 60
    series = 0
    with path.open("w", encoding="utf-8") as out:
        for source, destination in sorted(pairs):
            (sns, src), (dns, dst) = workloads[source], workloads[destination]
            for reporter in ("source", "destination"):
                base = (f'reporter="{reporter}",source_workload="{src}",source_workload_namespace="{sns}",'
                        f'destination_workload="{dst}",destination_workload_namespace="{dns}",'
                        f'destination_service_name="{dst}",response_flags="-"')
                codes = [("200", lambda t: 2.0)]
                if (source, destination) in failing:
                    codes.append(("503", lambda t: 2.0 if t >= onset else 0.0))
                for code, rate in codes:
                    value = 0.0
                    for stamp in range(start, end + 1, SCRAPE):
                        value += rate(stamp) * SCRAPE
                        out.write(f'istio_requests_total{{{base},response_code="{code}"}} {value:.0f} {stamp}\n')
                    series += 1
        # istiod's own series (memory, pushes, rejects, convergence, CSR errors) as the tests write them.
        istiod = mesh_metrics()
        for name, lines in istiod.families.items():
            if not name.startswith("istio_"):
                out.write("\n".join(lines) + "\n")
        out.write("# EOF\n")
    return series


def main() -> int:
    from tests.support.prometheus import backfill, start_prometheus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="keep the TSDB here (reused when it already has blocks)")
    args = parser.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-prometheus-"))
    data = base / "data"
    if not any(data.glob("*/meta.json")):
        began = time.perf_counter()
        source = base / "mesh.om"
        count = write_openmetrics(source)
        backfill(None, data)
        done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
                              capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        source.unlink()
        print(f"backfilled {count} series in {time.perf_counter() - began:.0f} s", flush=True)
    prometheus = start_prometheus(data)
    try:
        for label, namespaces in (("all namespaces", []), ("one namespace", ["ns-07"])):
            for run in range(RUNS):
                answer = subprocess.run([sys.executable, "-c", MEASURE.format(root=str(ROOT), url=prometheus.url,
                                                                              namespaces=namespaces)],
                                        capture_output=True, text=True, check=True)
                result = json.loads(answer.stdout)
                print(f"{label:15} run {run + 1}: {result['wall']:.2f} s, peak RSS {result['rss_mb']:.0f} MB, "
                      f"{result['edges']} failing edges, onset {result['onset']}, {' '.join(result['codes'])}",
                      flush=True)
    finally:
        prometheus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

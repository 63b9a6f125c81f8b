"""Benchmark (issue 26): `meshbot serve` diagnosing a large mesh through the suite's emulated API server.

Three processes: the emulated API server (tests/support/kube.py: paged lists, watches with
bookmarks) holding 10,000 pods shaped like real injected pods (~18 KB each with managedFields,
tests/support/injected.py), 2,000 Services and 200 namespaces; the bot, wired as `meshbot serve`
wires it (bot.server.wiring.build) with a kubeconfig pointing at that server; and this one, which
prints the figures.  The bot runs 20 namespace diagnoses at once (an alert storm) twice — cold
(nothing read yet) and warm (mesh-wide configuration watched, other namespaces) — then one
whole-mesh diagnosis, and reports its peak RSS after each phase, LIST and WATCH requests per
diagnosis, and p50/p95 diagnosis time (from the request, so waiting in the queue counts).

    .venv/bin/python bench/bench_cluster_scale.py                 # 10000 pods, 2000 services, 200 namespaces
    .venv/bin/python bench/bench_cluster_scale.py --pods 2000 --namespaces 40
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKS = ["status", "certs", "analyze"]
ISTIO = "istio-system"


def mesh(pods: int, services: int, namespaces: int) -> Iterator[dict]:
    """istiod, an ingress gateway, and ``namespaces`` team namespaces sharing the pods and Services evenly.

    The teams' namespaces, Services and pods are bench/mesh_generator.py's, with pods shaped like real injected pods.
    """
    from bench.mesh_generator import app_pods, service, team_namespace, team_namespaces
    from tests.support.injected import injected_pod

    root = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ISTIO}}
    yield {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": ISTIO},
           "data": {"mesh": "rootNamespace: istio-system\n"}}
    for i in range(2):
        yield injected_pod(f"istiod-{i}", ISTIO, {"app": "istiod"}, container="discovery")
    yield injected_pod("istio-ingressgateway-0", ISTIO, {"istio": "ingressgateway"})
    yield from team_namespaces(namespaces, root)
    for s in range(services):
        yield service(s, namespaces)
        if s % 2 == 0:
            ns = team_namespace(s, namespaces)
            yield {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": f"vs-{s}", "namespace": ns},
                   "spec": {"hosts": [f"svc-{s}"], "http": [{"route": [{"destination": {"host": f"svc-{s}"}}]}]}}
            yield {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": f"dr-{s}", "namespace": ns},
                   "spec": {"host": f"svc-{s}", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}
    for g in range(namespaces):
        yield {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": f"gw-{g}", "namespace": team_namespace(g, namespaces)},
               "spec": {"selector": {"istio": "ingressgateway"},
                        "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                     "hosts": [f"app-{g}.example.com"]}]}}
    yield from app_pods(pods - 3, services, namespaces, injected_pod, versions=1)


# -- process 1: the API server ---------------------------------------------------------------------


def serve_api(args: argparse.Namespace, urls: multiprocessing.Queue, control: Connection) -> None:
    """The emulated API server; answers "counts" on ``control`` with its LIST and WATCH requests so far."""
    import asyncio
    import contextlib

    import kmock

    from tests.support.kube import ApiServerEmulator, EventLoopThread, FakeKube

    loop = EventLoopThread()
    stack = contextlib.AsyncExitStack()

    async def start() -> tuple[ApiServerEmulator, str]:
        emulator = await stack.enter_async_context(ApiServerEmulator())
        server = await stack.enter_async_context(kmock.Server(emulator))
        return emulator, str(server.url)

    emulator, url = loop.run(start())
    kube = FakeKube(loop, emulator, url, asyncio.Event())
    started = time.monotonic()
    kube.seed(mesh(args.pods, args.services, args.namespaces))
    print(f"api server: {args.pods} pods seeded in {time.monotonic() - started:.0f}s", file=sys.stderr)
    urls.put(kube.url)
    while True:
        if control.recv() == "stop":
            return
        requests = kube.requests("GET")
        control.send({"LIST": sum(1 for r in requests if r.action == kmock.action.LIST),
                      "WATCH": sum(1 for r in requests if r.action == kmock.action.WATCH)})


# -- process 2: the bot --------------------------------------------------------------------------


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)]


def run_bot(url: str, args: argparse.Namespace, control: Connection, results: multiprocessing.Queue) -> None:
    try:
        results.put(measure_bot(url, args, control))
    except BaseException as exc:  # the parent waits on the queue: tell it, rather than leave it waiting
        import traceback

        results.put({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


def measure_bot(url: str, args: argparse.Namespace, control: Connection) -> dict:
    from bot.server.wiring import build
    from bot.settings import Settings
    from tests.support.kube import write_kubeconfig

    workdir = Path(tempfile.mkdtemp())
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", url)
    settings = Settings(slack_bot_token="xoxb-bench", slack_signing_secret="bench-secret", host="127.0.0.1", port=0,
                        db_path=str(workdir / "meshbot.db"), kubeconfig=kubeconfig, kube_context="kmock",
                        kube_timeout=60, log_level="WARNING", reminders=False)
    meshbot = build(settings)
    diagnostician = meshbot.services.diagnostician
    rows: dict = {"baseline_rss_mb": round(peak_rss_mb(), 1)}

    def counts() -> dict:
        control.send("counts")
        return control.recv()

    def storm(namespaces: list[str]) -> dict:
        before = counts()

        def one(namespace: str) -> tuple[float, float]:
            started = time.monotonic()
            result = diagnostician.run(CHECKS, namespace)
            assert result.error is None, result.error
            return time.monotonic() - started, result.queued_seconds

        with ThreadPoolExecutor(len(namespaces)) as pool:
            timings = list(pool.map(one, namespaces))
        after = counts()
        total = [t for t, _ in timings]
        return {"diagnoses": len(namespaces),
                "lists_per_diagnosis": round((after["LIST"] - before["LIST"]) / len(namespaces), 1),
                "watches_per_diagnosis": round((after["WATCH"] - before["WATCH"]) / len(namespaces), 1),
                "p50_s": round(percentile(total, 0.5), 2), "p95_s": round(percentile(total, 0.95), 2),
                "max_queued_s": round(max(q for _, q in timings), 2), "peak_rss_mb": round(peak_rss_mb(), 1)}

    names = [f"team-{n:03d}" for n in range(args.namespaces)]
    rows["cold"] = storm(names[:args.concurrent])
    rows["warm"] = storm(names[args.concurrent:2 * args.concurrent])
    before = counts()
    started = time.monotonic()
    result = diagnostician.run(CHECKS, None)
    rows["whole_mesh"] = {"seconds": round(time.monotonic() - started, 2), "findings": len(result.findings),
                          "error": result.error, "lists": counts()["LIST"] - before["LIST"],
                          "peak_rss_mb": round(peak_rss_mb(), 1)}
    meshbot.services.cluster.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=2_000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    urls: multiprocessing.Queue = multiprocessing.Queue()
    results: multiprocessing.Queue = multiprocessing.Queue()
    api_end, bot_end = multiprocessing.Pipe()
    api = multiprocessing.Process(target=serve_api, args=(args, urls, api_end))
    api.start()
    url = urls.get(timeout=1800)
    bot = multiprocessing.Process(target=run_bot, args=(url, args, bot_end, results))
    bot.start()
    try:
        rows = results.get(timeout=3600)
    finally:
        bot.join(60)
        bot_end.send("stop")
        api.join(30)
    print(json.dumps({"pods": args.pods, "services": args.services, "namespaces": args.namespaces,
                      "concurrent": args.concurrent, **rows}, indent=2))


if __name__ == "__main__":
    main()

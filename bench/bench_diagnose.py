"""Benchmark: `analyze` + `status` + `certs` on generated meshes of 1k/5k/10k pods.

Each size runs in a fresh subprocess so peak RSS belongs to that size alone.
Three figures per size: objects already in memory (what a live-cluster run
pays after its list calls: the checks' own cost), and a JSON / a YAML file on
disk (what `meshbot diagnose -f FILE` pays, parsing included).  Target at 10k pods: < 3 s wall and < 400 MB peak RSS.

    .venv/bin/python bench/bench_diagnose.py            # 1000 5000 10000
    .venv/bin/python bench/bench_diagnose.py 20000
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHECKS = ["analyze", "status", "certs"]


def measure(pods: int, mode: str, workdir: str) -> dict:
    from bench.mesh_generator import generate
    from commands.catalog import default_checks
    from commands.cluster.snapshot import Resource, Snapshot
    from commands.findings import count_by_level

    if mode in ("yaml", "json"):
        from commands.cluster.sources.files import FileSource

        start = time.perf_counter()
        source = FileSource([Path(workdir) / f"mesh-{pods}.{mode}"])
    else:
        objects = list(generate(pods))

        class MemorySource:
            def snapshot(self, kinds):
                return Snapshot([Resource.from_object(o) for o in objects if o["kind"] in kinds])

        start = time.perf_counter()
        source = MemorySource()
    findings = default_checks().diagnose(CHECKS, source)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = {str(k): v for k, v in count_by_level(findings).items()}
    return {"pods": pods, "mode": mode, "seconds": round(elapsed, 3), "peak_rss_mb": round(peak_mb, 1),
            "findings": counts}


def write_yaml(pods: int, workdir: str) -> None:
    import yaml

    from bench.mesh_generator import generate

    objects = list(generate(pods))
    with (Path(workdir) / f"mesh-{pods}.yaml").open("w") as out:
        yaml.dump_all(objects, out, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
    with (Path(workdir) / f"mesh-{pods}.json").open("w") as out:
        json.dump({"apiVersion": "v1", "kind": "List", "items": objects}, out)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]), sys.argv[3], sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--write-yaml":
        write_yaml(int(sys.argv[2]), sys.argv[3])
        return
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000, 10000]
    print(f"{'pods':>6} {'source':>7} {'wall s':>7} {'peak RSS MB':>12}  findings")
    with tempfile.TemporaryDirectory() as workdir:
        for pods in sizes:
            subprocess.run([sys.executable, __file__, "--write-yaml", str(pods), workdir], check=True)
            for mode in ("memory", "json", "yaml"):
                out = subprocess.run([sys.executable, __file__, "--one", str(pods), mode, workdir],
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{row['pods']:>6} {row['mode']:>7} {row['seconds']:>7.2f} {row['peak_rss_mb']:>12.1f}  "
                      f"{row['findings']}")


if __name__ == "__main__":
    main()

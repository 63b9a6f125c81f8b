"""Benchmark (issue 26): `meshbot analyze -f` on 100,000 pods, wall time and peak RSS of the real command.

bench/mesh_generator.py's mesh (per 10,000 pods: 2,000 Services, 1,000 VirtualServices, 1,000
DestinationRules, 200 Gateways) is written as ten JSON List files, since one file is limited to 64 MiB,
then `meshbot analyze -f DIR -o json` runs under /usr/bin/time -v.  Goal: under 10 s and 1 GB.

    .venv/bin/python bench/bench_analyze_files.py            # 100000 pods
    .venv/bin/python bench/bench_analyze_files.py 20000 --keep /tmp/mesh
    .venv/bin/python bench/bench_analyze_files.py 100000 --keep /tmp/mesh100k --runs 5   # one line per run

On a machine shared with other work, compare CPU (user + sys), not wall time, and take the least of several runs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FILES = 10


def write_mesh(pods: int, directory: Path) -> int:
    """The generated mesh as ``FILES`` JSON List files; returns their total size in bytes."""
    from bench.mesh_generator import generate

    objects = list(generate(pods))
    per_file = -(-len(objects) // FILES)
    for i in range(FILES):
        with (directory / f"mesh-{i:02d}.json").open("w") as out:
            json.dump({"apiVersion": "v1", "kind": "List", "items": objects[i * per_file:(i + 1) * per_file]}, out)
    return sum(f.stat().st_size for f in directory.glob("*.json"))


def time_analyze(directory: Path) -> dict:
    """Wall, CPU and peak RSS of one `meshbot analyze -f`, as /usr/bin/time -v reports them."""
    meshbot = ROOT / ".venv" / "bin" / "meshbot"
    run = subprocess.run(["/usr/bin/time", "-v", str(meshbot), "analyze", "-f", str(directory), "-o", "json"],
                         capture_output=True, text=True)
    if run.returncode not in (0, 79):  # 79: findings at error level, which the generated mesh has on purpose
        raise SystemExit(f"meshbot analyze failed ({run.returncode}):\n{run.stderr}")

    def field(name: str) -> str:
        return re.search(rf"{re.escape(name)}: (.+)", run.stderr).group(1).strip()  # type: ignore[union-attr]

    minutes, _, seconds = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").rpartition(":")
    return {"wall_s": round(float(minutes or 0) * 60 + float(seconds), 2),
            "cpu_s": round(float(field("User time (seconds)")) + float(field("System time (seconds)")), 2),
            "peak_rss_mb": round(int(field("Maximum resident set size (kbytes)")) / 1024),
            "findings": len(json.loads(run.stdout))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pods", type=int, nargs="?", default=100_000)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the files here instead of a temporary directory")
    parser.add_argument("--runs", type=int, default=1, help="run the command this many times, one line each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        size = sum(f.stat().st_size for f in directory.glob("*.json")) or write_mesh(args.pods, directory)
        for _ in range(args.runs):
            print(json.dumps({"pods": args.pods, "files_mb": round(size / 2**20), **time_analyze(directory)}), flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: explain on a 100,000-file context, report on a 200 MB rawjson log.

Targets (issues 4, 12): explain under 2 s (min/median/max over --repeat runs); report under 5 s with flat memory (peak memory must
not grow with the log: it is read as a stream). Prints a table and writes JSON
(bench/results/diagnostics_bench.json). Needs git; no Docker.

Usage: python bench/diagnostics_bench.py [--files 100000] [--repeat 3] [--log-mb 200]
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ci import progress  # noqa: E402
from ci.explain.run import explain_repository  # noqa: E402

DOCKERFILE = """FROM debian:bookworm AS build
WORKDIR /src
COPY src/ ./
RUN make

FROM debian:bookworm
COPY --from=build /src/out /app
COPY config/ /etc/app/
"""


def make_repo(root: pathlib.Path, files: int) -> None:
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / ".dockerignore").write_text("docs/\n**/*.tmp\n")
    for i in range(files):
        folder = ("src", "config", "docs")[i % 3]
        path = root / folder / f"d{i % 97}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 8)
    for args in (["init", "-q"], ["config", "gc.auto", "0"], ["add", "-A"],
                 ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)
    (root / "src" / "d3" / "f3.txt").write_text("changed\n")  # the head: one source change


def bench_explain(files: int, repeat: int) -> dict[str, float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="dimbybot-explain-bench-") as tmp:
        repo = pathlib.Path(tmp)
        make_repo(repo, files)
        for _ in range(repeat):
            started = time.perf_counter()
            (result,) = explain_repository(repo, base="HEAD", dockerfile="Dockerfile", context=".")
            times.append(time.perf_counter() - started)
            assert result.first_miss == "build 3/4", result.to_dict()
    return {"files": files, "min": round(min(times), 3), "median": round(statistics.median(times), 3),
            "max": round(max(times), 3), "seconds": round(statistics.median(times), 3)}


def write_log(path: pathlib.Path, megabytes: int) -> int:
    """A rawjson log shaped like buildx's: pretty-printed SolveStatus objects with vertices,
    statuses and base64 log chunks. A big log is a few hundred steps with a lot of output, so
    the steps repeat (300 distinct vertices) and the output grows."""
    chunk = base64.b64encode(b"Collecting package ... done\n" * 40).decode()
    written = 0
    step = 0
    with path.open("w") as out:
        while written < megabytes * 1024 * 1024:
            vertex = step % 300
            digest = f"sha256:{vertex:064x}"
            label = f"[stage-{vertex % 6} {vertex // 6 + 1}/50] RUN make target-{vertex}"
            objects = [
                {"vertexes": [{"digest": digest, "name": label, "started": "2026-11-24T02:09:30.1Z"}]},
                *({"logs": [{"vertex": digest, "stream": 1, "data": chunk, "timestamp": "2026-11-24T02:09:30.2Z"}]}
                  for _ in range(20)),
                {"statuses": [{"id": "x", "vertex": digest, "name": "x", "current": 1, "timestamp": "2026-11-24T02:09:30.3Z"}]},
                {"vertexes": [{"digest": digest, "name": label, "started": "2026-11-24T02:09:30.1Z",
                               "completed": "2026-11-24T02:09:31.1Z", "cached": vertex % 3 == 0}]},
            ]
            for obj in objects:
                text = json.dumps(obj, indent=2) + "\n"
                out.write(text)
                written += len(text)
            step += 1
    return written


def bench_report(megabytes: int) -> dict[str, float]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="dimbybot-report-bench-") as tmp:
        for size in (megabytes // 4, megabytes):
            log = pathlib.Path(tmp) / f"log-{size}.json"
            actual = write_log(log, size)
            tracemalloc.start()
            started = time.perf_counter()
            with log.open() as stream:
                parsed = progress.parse_stream(stream)
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results[size] = {"mb": round(actual / 2**20, 1), "seconds": round(seconds, 3), "peak_mb": round(peak / 2**20, 1),
                             "steps": len(parsed.steps)}
            log.unlink()
    small, large = results[megabytes // 4], results[megabytes]
    return {**large, "peak_mb_at_quarter_size": small["peak_mb"],
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--log-mb", type=int, default=200)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "diagnostics_bench.json")
    args = parser.parse_args()
    if args.files < 10:
        parser.error("--files: at least 10")
    if args.log_mb < 4:
        parser.error("--log-mb: at least 4")
    explain = bench_explain(args.files, max(1, args.repeat))
    report = bench_report(args.log_mb)
    print(f"explain: {explain['files']} files, min {explain['min']:.2f} / median {explain['median']:.2f} / "
          f"max {explain['max']:.2f} s (target < 2 s)")
    print(f"report:  {report['mb']} MB rawjson, {report['seconds']:.2f} s (target < 5 s); "
          f"parser peak {report['peak_mb']} MB vs {report['peak_mb_at_quarter_size']} MB at a quarter of the size (flat)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"explain": explain, "report": report}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

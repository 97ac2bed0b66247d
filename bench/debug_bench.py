"""Benchmark: how long `dimbybot-ci debug` takes to put you at a step of the bot image.

Scenarios, each `--repeat` times (min/median/max), end to end (plan, explain, the cut build
from the cache, `docker run --exec true`, clean-up), on a copy of the repository with the
local base images (tests/images/build-base-images.sh):
  full build           the real build of the bot image, once, so the cache holds every step
  before deps 4/4      the state before the dependency install (lock copied, no venv)
  after deps 4/4       the state after it (venv installed)
  first-miss (code)    after a change to bot code: explain finds runtime 5/5, built up to it
Target (issue 14): reaching a step is as fast as a fully cached build (well under 5 s here).
Prints a table and writes JSON (bench/results/debug_bench.json).

Usage: python bench/debug_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ci import config, local, pipeline  # noqa: E402

PREFIX = os.environ.get("BASE_IMAGE_PREFIX", "dimbybot2-test")
BUILD_ARGS = (("PYTHON_IMAGE", f"{PREFIX}/python:3.11"),)


def make_repo(root: pathlib.Path) -> None:
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "bot", root / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def debug(repo: pathlib.Path, *args: str) -> float:
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}
    argv = [sys.executable, "-m", "ci.cli", "debug", "--repo", str(repo), "--image", "bot", "--exec", "true",
            *(f"--build-arg={k}={v}" for k, v in BUILD_ARGS), *args]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"debug {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
    return seconds


def stats(times: list[float]) -> dict[str, float]:
    return {"min": min(times), "median": statistics.median(times), "max": max(times), "runs": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dimbybot-debug-bench-") as tmp:
        repo = pathlib.Path(tmp)
        make_repo(repo)
        (image_plan,) = pipeline.plan(config.load(repo), pipeline.PipelineOptions(registry=None, tag_plan=None, images=("bot",),
                                                                                  build_args=BUILD_ARGS), root=repo)
        full = local.run_build(image_plan.request, repo, repo / ".work")
        if not full.ok:
            raise SystemExit(f"the full build failed: {full.stderr_tail}")
        results["full build (fills the cache)"] = stats([full.seconds])
        results["before deps 4/4"] = stats([debug(repo, "--step", "deps 4/4") for _ in range(options.repeat)])
        results["after deps 4/4"] = stats([debug(repo, "--step", "deps 4/4", "--at", "after") for _ in range(options.repeat)])
        code = repo / "bot" / "dimbybot" / "__init__.py"
        code.write_text(code.read_text() + "# changed\n")
        results["first-miss after a code change"] = stats([debug(repo, "--step", "first-miss") for _ in range(options.repeat)])
    print(f"{'scenario':<34} {'min':>7} {'median':>7} {'max':>7}")
    for name, value in results.items():
        print(f"{name:<34} {value['min']:>6.2f}s {value['median']:>6.2f}s {value['max']:>6.2f}s")
    out = ROOT / "bench" / "results" / "debug_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

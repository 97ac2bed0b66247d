"""Benchmark: the developer's loop with `make dev` (compose.dev.yaml and Compose's watch).

Measures, on a copy of the project under its own Compose project (removed afterwards):
  start      `make dev` until the bot is healthy (images built from the warm builder cache)
  edit       a save of bot/dimbybot/__init__.py until the running bot has printed the new code's line
  lock       a change of bot/requirements.lock until the bot runs on the rebuilt image (pip from PyPI)
Prints min/median/max and writes bench/results/dev_loop_bench.json. Needs Docker with Compose
and the local base images (tests/images/build-base-images.sh).

Usage: python bench/dev_loop_bench.py [--edits 5] [--locks 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"
BASES = {"PYTHON_IMAGE": "dimbybot2-test/python:3.11", "FETCH_IMAGE": "dimbybot2-test/python:3.11",
         "LAVALINK_IMAGE": "dimbybot2-test/lavalink:4"}
FAKE_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.GdevXX.devloop-token-not-real-aaaaaaaaaaaa"  # noqa: S105 (shape only)


def wait(check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--locks", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for name in ("Dockerfile", ".dockerignore", "compose.dev.yaml", "Makefile"):
            shutil.copy2(ROOT / name, root / name)
        shutil.copytree(ROOT / "bot", root / "bot", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "Lavalink", root / "Lavalink")
        project = f"dimbybot2-devbench-{secrets.token_hex(4)}"
        env = {**os.environ, **BASES, "PATH": "/usr/bin:" + os.environ.get("PATH", ""), "COMPOSE_PROJECT_NAME": project,
               "DISCORD_TOKEN": FAKE_TOKEN}

        def inspect(template: str) -> str:
            return subprocess.run([DOCKER, "inspect", "-f", template, f"{project}-bot-1"], capture_output=True, text=True).stdout.strip()

        def logs() -> str:
            return subprocess.run([DOCKER, "logs", f"{project}-bot-1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout

        log = (root / "make-dev.log").open("w")
        began = time.monotonic()
        process = subprocess.Popen(["make", "dev"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        results: dict[str, list[float]] = {"start": [], "edit": [], "lock": []}
        try:
            wait(lambda: inspect("{{.State.Health.Status}}") == "healthy", 600)
            results["start"].append(time.monotonic() - began)
            source = root / "bot" / "dimbybot" / "__init__.py"
            for n in range(args.edits):
                marker = f"BENCH-EDIT-{n}-{secrets.token_hex(3)}"
                with source.open("a") as stream:
                    stream.write(f'print("{marker}", flush=True)\n')
                results["edit"].append(wait(lambda m=marker: m in logs(), 120))  # type: ignore[misc]
            for _ in range(args.locks):
                image = inspect("{{.Image}}")
                with (root / "bot" / "requirements.lock").open("a") as stream:
                    stream.write(f"# bench {secrets.token_hex(8)}\n")
                results["lock"].append(wait(lambda i=image: inspect("{{.Image}}") not in ("", i)  # type: ignore[misc]
                                            and inspect("{{.State.Status}}") == "running", 600))
                time.sleep(3)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)
            subprocess.run([DOCKER, "compose", "-f", "compose.dev.yaml", "down", "--rmi", "local", "-t", "1"], cwd=root, env=env,
                           capture_output=True)
    summary = {name: {"n": len(v), "min": round(min(v), 2), "median": round(statistics.median(v), 2), "max": round(max(v), 2)}
               for name, v in results.items() if v}
    for name, s in summary.items():
        print(f"{name:<6} n={s['n']}  min {s['min']:6.2f} s  median {s['median']:6.2f} s  max {s['max']:6.2f} s")
    out = ROOT / "bench" / "results" / "dev_loop_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": summary, "raw": results}, indent=2))


if __name__ == "__main__":
    main()

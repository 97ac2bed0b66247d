"""The developer's daily loop: the Makefile verbs, and `make dev` (compose.dev.yaml) with live code.

The dev stack runs for real with Docker Compose's watch: the Lavalink image is built on the
local stand-in base (test double: the real Lavalink image cannot be pulled here), and the bot
cannot reach Discord (unreachable here: it retries its login as in an outage) but runs, which
is all the loop needs.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import LOCAL_BASES, REPO

# A token of the right shape (the bot checks it before contacting Discord); not a real one.
FAKE_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.GdevXX.devloop-token-not-real-aaaaaaaaaaaa"
VERBS = ("dev", "test", "build", "explain", "lock", "trends")


def make(*args: str, cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")})


def test_make_lists_the_daily_verbs() -> None:
    listed = [line.split()[0] for line in make("help").stdout.splitlines()]
    assert set(VERBS) <= set(listed)


def test_each_verb_is_a_thin_call_of_an_existing_tool() -> None:
    planned = make("-n", *VERBS, "ARGS=--x", "PYTHON=py", "STAMP=S").stdout.splitlines()
    assert planned == [
        "docker compose -f compose.dev.yaml up --build --watch --x",
        "py -m pytest --x",
        "mkdir -p .work/reports/S",
        "py -m ci.cli build-and-push --report-file .work/reports/S/report.json --x",
        "py -m ci.cli explain --x",
        "uv pip compile bot/requirements.in --generate-hashes --universal --python-version 3.11 -o bot/requirements.lock --x",
        "py -m ci.cli trends .work/reports --chart .work/trends.svg --x",
    ]


def test_make_explain_and_make_trends_run_for_real(tmp_path: pathlib.Path) -> None:
    explained = make("-s", "explain", "ARGS=--image lavalink --base HEAD --head HEAD --format json")
    assert explained.returncode == 0, explained.stderr
    (image,) = json.loads(explained.stdout)["images"]
    assert image["name"] == "lavalink" and all(s["status"] == "hit" for s in image["steps"])
    chart = tmp_path / "trends.svg"
    trended = make("-s", "trends", "REPORTS=tests/data/trends", f"CHART={chart}", "ARGS=--format json")
    assert trended.returncode == 0, trended.stderr
    assert json.loads(trended.stdout)["runs"] == 12 and chart.read_bytes().startswith(b"<?xml")


def _poll(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


class DevStack:
    def __init__(self, root: pathlib.Path, project: str, log: pathlib.Path) -> None:
        self.root, self.project, self.log = root, project, log

    def docker(self, *args: str) -> str:
        return subprocess.run(["/usr/bin/docker", *args], capture_output=True, text=True, cwd=self.root).stdout.strip()

    def inspect(self, service: str, template: str) -> str:
        return self.docker("inspect", "-f", template, f"{self.project}-{service}-1")

    def output(self) -> str:
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", self.log.read_text(errors="replace"))

    def logs(self, service: str) -> str:
        return subprocess.run(["/usr/bin/docker", "logs", f"{self.project}-{service}-1"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True).stdout


@pytest.fixture
def dev_stack(docker: str, tmp_path: pathlib.Path) -> Iterator[DevStack]:
    """`make dev` in a copy of the project, under a unique Compose project; everything it made is removed after."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("Dockerfile", ".dockerignore", "compose.dev.yaml", "Makefile"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "bot", root / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", root / "Lavalink")
    project = f"dimbybot2-devtest-{secrets.token_hex(4)}"
    env = {**os.environ, **dict(LOCAL_BASES), "PATH": "/usr/bin:" + os.environ.get("PATH", ""), "COMPOSE_PROJECT_NAME": project,
           "DISCORD_TOKEN": FAKE_TOKEN, "LAVALINK_PASSWORD": "devloop-pass", "COMPOSE_MENU": "false"}
    log = tmp_path / "make-dev.log"
    with log.open("w") as stream:
        process = subprocess.Popen(["make", "dev"], cwd=root, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield DevStack(root, project, log)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["/usr/bin/docker", "compose", "-f", "compose.dev.yaml", "down", "--rmi", "local", "--volumes", "-t", "1"],
                       cwd=root, env=env, capture_output=True, timeout=120)


@pytest.mark.docker
def test_a_code_edit_reaches_the_running_bot_and_a_lock_change_rebuilds_once(dev_stack: DevStack) -> None:
    stack = dev_stack
    _poll("the dev stack to be up (bot healthy)", lambda: stack.inspect("bot", "{{.State.Health.Status}}") == "healthy", 300)
    assert "Watch enabled" in stack.output()
    image = stack.inspect("bot", "{{.Image}}")
    started = stack.inspect("bot", "{{.State.StartedAt}}")

    # 1. A code edit: the running bot picks it up (the module prints at import), no image rebuild.
    with (stack.root / "bot" / "dimbybot" / "__init__.py").open("a") as source:
        source.write('print("DEVLOOP-MARKER-1", flush=True)\n')
    _poll("the bot to run the edited code", lambda: "DEVLOOP-MARKER-1" in stack.logs("bot"), 60)
    assert stack.inspect("bot", "{{.Image}}") == image
    assert stack.inspect("bot", "{{.State.StartedAt}}") != started  # the same container, restarted
    assert "Rebuilding" not in stack.output()

    # 2. A lock file change: exactly one rebuild, of the bot only, and its dependency stage really ran.
    with (stack.root / "bot" / "requirements.lock").open("a") as lock:
        # A comment changes the lock's content: the dependency stage must miss. Unique per run, or
        # the builder's cache would already hold this exact lock from an earlier run.
        lock.write(f"# dev loop test {secrets.token_hex(8)}\n")
    _poll("the bot to run on a rebuilt image",
          lambda: stack.inspect("bot", "{{.Image}}") not in ("", image) and stack.inspect("bot", "{{.State.Status}}") == "running", 420)
    _poll("the rebuilt bot to log in (retrying: no Discord here)", lambda: "logging in" in stack.logs("bot"), 60)
    output = stack.output()
    assert output.count('Rebuilding service(s) ["bot"]') == 1 and "Rebuilding service(s) [\"lavalink\"]" not in output
    rebuild = output.split('Rebuilding service(s) ["bot"]', 1)[1]
    vertices = set(re.findall(r"#(\d+) \[bot deps \d+/\d+\] RUN ", rebuild))
    assert len(vertices) == 1, rebuild[:3000]
    (vertex,) = vertices
    assert f"#{vertex} DONE" in rebuild and f"#{vertex} CACHED" not in rebuild
    assert "DEVLOOP-MARKER-1" in stack.logs("bot")  # the new image carries the edited code too

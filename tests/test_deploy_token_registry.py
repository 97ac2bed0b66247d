"""Issue 20: the deploy host's login and pull against a registry with token auth (ghcr.io's way).

The registry is distribution 2.8 with `auth: token` and tokens from tests/token_registry.py's
stand-in for GitHub's token service. Two commits (V1, V2) are built and pushed by the local
driver with the pushing user; the deploy host (tests/ssh_fixture.py: a real sshd on 127.0.0.1,
the host's Docker) logs in with the token service's credentials and pulls by the SHA tag: its
dockerd fetches its own Bearer tokens. A pull-only user is enough to deploy; a wrong password
is refused at the pull, before anything on the host changes.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ci import cache, config, local, pipeline, tags
from tests.conftest import LOCAL_BASES, REPO
from tests.ssh_fixture import RunningSshd, start_sshd
from tests.test_deploy import TIMEOUT, History, assert_consistent, deployed_tag, git, make_stack, project_of, remove_stack, report
from tests.test_registry_token import ANONYMOUS, CI_PASSWORD, CI_USER, OWNER, READER, READER_PASSWORD, USERS
from tests.token_registry import TokenRegistry, start_token_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    hosts = []
    try:
        for token_registry in start_token_registry(tmp_path_factory.mktemp("deploy-token-registry"), USERS, ANONYMOUS):
            hosts.append(token_registry.host)
            yield token_registry
    finally:
        # The host's dockerd pulled the images under this registry's name: take the names away again.
        listed = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
        ours = [ref for ref in listed.stdout.split() if any(ref.startswith(host + "/") for host in hosts)]
        if ours:
            subprocess.run(["docker", "image", "rm", *ours], capture_output=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    yield from start_sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture(scope="module")
def namespace(registry: TokenRegistry) -> str:
    return f"{registry.host}/{OWNER}"


@pytest.fixture(scope="module")
def history(registry: TokenRegistry, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> History:
    """Commits V1 and V2, built and pushed by the local driver with the pushing user."""
    repo = tmp_path_factory.mktemp("deploy-token-history") / "repo"
    repo.mkdir()
    for item in ("Dockerfile", ".dockerignore", "pyproject.toml", "compose.yaml"):
        shutil.copy2(REPO / item, repo / item)
    shutil.copytree(REPO / "bot", repo / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", repo / "Lavalink")
    git(repo, "init", "-q", "-b", "main")
    result = History(repo)
    init = repo / "bot" / "dimbybot" / "__init__.py"
    for name in ("V1", "V2"):
        init.write_text(init.read_text() + f"# token {name}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", name)
        result.sha[name] = sha = git(repo, "rev-parse", "HEAD")
        options = pipeline.PipelineOptions(registry=namespace, tag_plan=tags.plan(sha, latest=False), build_args=LOCAL_BASES,
                                           cache=cache.CacheOptions(backend=cache.Backend.ENGINE))
        built = local.build_and_push(pipeline.plan(config.load(repo), options, root=repo), options, repo,
                                     repo.parent / f"work-{name}", CI_USER, CI_PASSWORD)
        if not built.ok:
            raise RuntimeError(f"the build of {name} failed: {[i.error for i in built.images]}")
        result.digests[name] = {i.name: str(i.digest) for i in built.images}
    return result


@pytest.fixture
def stack(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    remote = make_stack(sshd, "token")
    yield remote
    remove_stack(remote)


def deploy(sshd: RunningSshd, namespace: str, remote: pathlib.Path, history: History, name: str, user: str,
           password: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ci.cli", "deploy", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--tag", history.sha[name], "--registry", namespace, "--remote-dir", str(remote), "--username", user,
            "--compose-file", str(REPO / "compose.yaml"), "--timeout", TIMEOUT, "--project", project_of(remote),
            "--repo", str(history.repo), *history.digest_args(name)]
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"], "DEPLOY_SSH_KEY": sshd.client_key,
           "DEPLOY_KNOWN_HOSTS": sshd.known_hosts, "REGISTRY_PASSWORD": password}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def dockerd_tokens(registry: TokenRegistry, since: int) -> list[tuple[str | None, int, list[str]]]:
    """(user, status, actions granted) of what the host's Docker asked the token service for."""
    return [(i.user, i.status, [a for g in i.granted for a in g["actions"]]) for i in registry.tokens.issued[since:]
            if "Python-urllib" not in i.user_agent]


def test_the_host_logs_in_with_the_token_services_credentials_and_pulls_by_the_sha_tag(
        registry: TokenRegistry, sshd: RunningSshd, namespace: str, history: History, stack: pathlib.Path) -> None:
    before = len(registry.tokens.issued)
    result = deploy(sshd, namespace, stack, history, "V1", CI_USER, CI_PASSWORD)
    assert result.returncode == 0, result.stdout + result.stderr
    r = report(result)
    assert (r["new tag"], r["result"], r["service bot"], r["service lavalink"]) == (history.sha["V1"], "deployed", "healthy", "healthy")
    assert_consistent(stack, history, "V1")
    asked = dockerd_tokens(registry, before)
    assert asked and all(user == CI_USER and status == 200 and "pull" in actions for user, status, actions in asked), asked
    assert CI_PASSWORD not in result.stdout + result.stderr
    leftovers = subprocess.run(["grep", "-rl", CI_PASSWORD, str(sshd.home)], capture_output=True, text=True).stdout
    assert leftovers == ""


def test_a_pull_only_user_deploys_and_a_wrong_password_changes_nothing(
        registry: TokenRegistry, sshd: RunningSshd, namespace: str, history: History, stack: pathlib.Path) -> None:
    before = len(registry.tokens.issued)
    first = deploy(sshd, namespace, stack, history, "V1", READER, READER_PASSWORD)
    assert first.returncode == 0, first.stdout + first.stderr
    asked = dockerd_tokens(registry, before)
    assert asked and all(user == READER and status == 200 and actions == ["pull"] for user, status, actions in asked), asked
    assert_consistent(stack, history, "V1")

    history_before = (stack / ".deploy.history").read_text()
    before = len(registry.tokens.issued)
    refused = deploy(sshd, namespace, stack, history, "V2", READER, "wrong-password")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    r = report(refused)
    assert r["result"] == "refused", refused.stdout + refused.stderr
    assert r["reason"].startswith(f"registry {registry.host} refused the login for {READER}: "), r["reason"]
    assert "wrong-password" not in refused.stdout + refused.stderr
    assert any(user == READER and status == 401 for user, status, _ in dockerd_tokens(registry, before))
    # nothing changed: V1 runs, the host still records V1, the history has only the refused job
    assert_consistent(stack, history, "V1")
    assert deployed_tag(stack) == history.sha["V1"]
    added = (stack / ".deploy.history").read_text()[len(history_before):].split("\n")
    assert [line.split()[1:4] for line in added if line] == [["start", history.sha["V2"], "pid"],
                                                           ["end", history.sha["V2"], "refused"]]  # the job, refused

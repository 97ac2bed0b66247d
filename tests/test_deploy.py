"""Deploy for real: sshd on 127.0.0.1, a key-only user in the docker group, Docker Compose,
and a registry holding three versions of the images made with the pipeline's local driver:
v1, v2 (a bot code change) and `bad` (a bot whose self-check always fails, so its container
never becomes healthy).

Test doubles: the Lavalink image is built on the stand-in base (the real Lavalink image
cannot be pulled here); Discord cannot be reached here, so the bot keeps retrying its login
as it would in a Discord outage, and its health comes from its self-check against Lavalink.
The scenarios run in order on one stack.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from ci import cache, config, local, pipeline, tags
from tests.conftest import LOCAL_BASES, REPO
from tests.registry_fixture import RunningRegistry, start_registry
from tests.ssh_fixture import RunningSshd, start_sshd

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

V1, V2, BAD = "a" * 40, "b" * 40, "c" * 40
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("deploy-registry"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    yield from start_sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture(scope="module")
def namespace(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Push v1, v2 and bad with the local driver."""
    name = f"{registry.host}/deploy{uuid.uuid4().hex[:6]}"
    work = tmp_path_factory.mktemp("deploy-images")
    versions = {V1: None, V2: "# v2\n", BAD: "BAD"}
    for sha, change in versions.items():
        repo = work / sha[:1]
        repo.mkdir()
        for item in ("Dockerfile", ".dockerignore", "pyproject.toml"):
            shutil.copy2(REPO / item, repo / item)
        shutil.copytree(REPO / "bot", repo / "bot", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "Lavalink", repo / "Lavalink")
        if change == "BAD":
            (repo / "bot" / "dimbybot" / "selfcheck.py").write_text(
                "def run(env=None, timeout=5.0):\n    return 1, 'self-check failed: broken on purpose'\n")
        elif change:
            init = repo / "bot" / "dimbybot" / "__init__.py"
            init.write_text(init.read_text() + change)
        options = pipeline.PipelineOptions(registry=name, tag_plan=tags.plan(sha, latest=False), build_args=LOCAL_BASES,
                                           cache=cache.CacheOptions(backend=cache.Backend.ENGINE))
        result = local.build_and_push(pipeline.plan(config.load(repo), options, root=repo), options, repo, work / "w",
                                      registry.username, registry.password)
        assert result.ok, [i.error for i in result.images]
    return name


@pytest.fixture(scope="module")
def stack(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    """The remote directory: the operator's .env with the app secrets, owned by the deploy user."""
    remote = sshd.home / f"dimbybot2-{uuid.uuid4().hex[:6]}"
    remote.mkdir()
    (remote / ".env").write_text(f"DISCORD_TOKEN={TOKEN}\nLAVALINK_PASSWORD=stack-secret\n")
    shutil.copy2(REPO / "compose.yaml", remote / "compose.yaml")
    shutil.chown(remote, sshd.user, sshd.user)
    for path in remote.iterdir():
        shutil.chown(path, sshd.user, sshd.user)
    yield remote
    subprocess.run(["docker", "compose", "-p", project_of(remote), "down", "--remove-orphans"], cwd=remote,
                   capture_output=True, env={**os.environ, "DIMBYBOT_REGISTRY": "x/y", "DIMBYBOT_TAG": "t"})


def project_of(remote: pathlib.Path) -> str:
    return remote.name.replace(".", "-")


def deploy(sshd: RunningSshd, registry: RunningRegistry, namespace: str, remote: pathlib.Path, tag: str,
           password: str | None = None, known_hosts: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"], "DEPLOY_SSH_KEY": sshd.client_key,
           "DEPLOY_KNOWN_HOSTS": known_hosts or sshd.known_hosts,
           "REGISTRY_PASSWORD": password if password is not None else registry.password}
    argv = [sys.executable, "-m", "ci.cli", "deploy", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--tag", tag, "--registry", namespace, "--remote-dir", str(remote), "--username", registry.username,
            "--compose-file", str(REPO / "compose.yaml"), "--timeout", "40", "--project", project_of(remote)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def running_tags(remote: pathlib.Path) -> dict[str, str]:
    out = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={project_of(remote)}",
                          "--format", '{{.Label "com.docker.compose.service"}} {{.Image}}'],
                         capture_output=True, text=True, check=True).stdout
    return {service: image.rsplit(":", 1)[1] for service, image in (line.split() for line in out.splitlines())}


def report(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


def test_first_deploy(sshd: RunningSshd, registry: RunningRegistry, namespace: str, stack: pathlib.Path) -> None:
    result = deploy(sshd, registry, namespace, stack, V1)
    assert result.returncode == 0, result.stdout + result.stderr
    r = report(result)
    assert (r["old tag"], r["new tag"], r["result"], r["rolled back"]) == ("none", V1, "deployed", "no")
    assert (r["service bot"], r["service lavalink"]) == ("healthy", "healthy")
    assert running_tags(stack) == {"bot": V1, "lavalink": V1}
    assert (stack / ".deployed-tag").read_text().strip() == V1


def test_upgrade_to_a_new_tag(sshd: RunningSshd, registry: RunningRegistry, namespace: str, stack: pathlib.Path) -> None:
    result = deploy(sshd, registry, namespace, stack, V2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (report(result)["old tag"], report(result)["result"]) == (V1, "deployed")
    assert running_tags(stack) == {"bot": V2, "lavalink": V2}


def test_an_unhealthy_tag_rolls_back(sshd: RunningSshd, registry: RunningRegistry, namespace: str, stack: pathlib.Path) -> None:
    result = deploy(sshd, registry, namespace, stack, BAD)
    assert result.returncode == 1, result.stdout + result.stderr
    r = report(result)
    assert "result" in r, result.stdout + result.stderr
    assert r["result"] == "rolled back" and r["rolled back"] == f"yes, to {V2}"
    assert "did not all become healthy" in r["reason"]
    assert running_tags(stack) == {"bot": V2, "lavalink": V2}
    assert (stack / ".deployed-tag").read_text().strip() == V2


def test_two_deploys_at_once_are_serialized(sshd: RunningSshd, registry: RunningRegistry, namespace: str, stack: pathlib.Path) -> None:
    history = stack / ".deploy.history"
    before = len(history.read_text().splitlines())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda tag: deploy(sshd, registry, namespace, stack, tag), [V1, V2]))
    assert [r.returncode for r in results] == [0, 0], [r.stdout + r.stderr for r in results]
    events = [line.split() for line in history.read_text().splitlines()[before:]]
    kinds = [event[1] for event in events]
    assert kinds == ["start", "end", "start", "end"], events  # never start, start
    assert "another deploy is running" in "".join(r.stderr for r in results)
    finished_last = events[-1][2]
    assert running_tags(stack) == {"bot": finished_last, "lavalink": finished_last}


def test_a_wrong_host_key_is_refused_before_any_change(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                       stack: pathlib.Path) -> None:
    before, history = running_tags(stack), (stack / ".deploy.history").read_text()
    target = V1 if before["bot"] != V1 else V2
    result = deploy(sshd, registry, namespace, stack, target, known_hosts=sshd.other_known_hosts)
    assert result.returncode == 2
    assert "ssh failed before anything ran remotely" in result.stdout and "verification failed" in result.stdout
    assert running_tags(stack) == before and (stack / ".deploy.history").read_text() == history


def test_a_registry_auth_failure_changes_nothing(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                 stack: pathlib.Path) -> None:
    before = running_tags(stack)
    deployed = (stack / ".deployed-tag").read_text()
    target = V1 if before["bot"] != V1 else V2
    result = deploy(sshd, registry, namespace, stack, target, password="wrong-password")
    assert result.returncode == 2, result.stdout + result.stderr
    r = report(result)
    assert r["result"] == "refused" and "refused the login" in r["reason"]
    assert running_tags(stack) == before and (stack / ".deployed-tag").read_text() == deployed


def test_bad_input_is_refused_before_connecting(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                stack: pathlib.Path) -> None:
    result = deploy(sshd, registry, namespace, stack, "not a tag")
    assert (result.returncode, result.stderr.strip()) == (2, "error: --tag: 'not a tag' is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})")


def test_the_registry_password_is_never_in_the_output(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                      stack: pathlib.Path) -> None:
    result = deploy(sshd, registry, namespace, stack, V1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert registry.password not in result.stdout + result.stderr
    assert not list(stack.glob("compose.yaml.next"))
    leftovers = subprocess.run(["find", "/tmp", "-maxdepth", "1", "-name", "dimbybot-ssh-*"], capture_output=True, text=True).stdout
    assert leftovers == ""  # the key and known_hosts files are gone

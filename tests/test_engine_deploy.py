"""`deploy`, executed end to end by a real Dagger engine (marked `engine`): the module's
function, driven through the SDK as a client with the arguments `dagger call deploy` builds
(secrets by `set_secret`), runs the deploy client in an engine container; it reaches the test
sshd (tests/ssh_fixture.py) on the engine network's gateway, and the host's Docker pulls the
images tests/test_deploy.py's `history` built (V1, V2, BAD: BAD fails its self-check) from a
registry on 127.0.0.1.

The module's source is the history's checkout (the order check runs git on it in the engine),
its compose.yaml's project name made this stack's own, so that the test's helpers (and no
other stack on this machine) see what compose runs.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from ci import main
from tests import dagger_engine, pinned_buildkit, test_deploy
from tests.conftest import REPO
from tests.registry_fixture import RunningRegistry, start_registry
from tests.ssh_fixture import RunningSshd, start_sshd
from tests.test_deploy import TIMEOUT, History, assert_consistent, make_stack, project_of, remove_stack, running

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.usefixtures("docker")]

namespace = test_deploy.namespace
history = test_deploy.history


@pytest.fixture(scope="module")
def engine() -> Iterator[dagger_engine.Engine]:
    pinned_buildkit.fill_mirror(pinned_buildkit.binaries())
    bin_dir, image = dagger_engine.build()
    with dagger_engine.running(bin_dir, image, pinned_buildkit.MIRROR_STORAGE) as started:
        yield started


@pytest.fixture(scope="module")
def sshd(engine: dagger_engine.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    """On the gateway: where the engine's containers reach this host."""
    yield from start_sshd(tmp_path_factory.mktemp("sshd"), address=engine.gateway)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Only the host's Docker pulls from it (no --latest-password: the client never calls it).
    Afterwards the images the host pulled under its name are removed from the host's Docker."""
    started: list[RunningRegistry] = []
    try:
        for running_registry in start_registry(tmp_path_factory.mktemp("engine-deploy-registry")):
            started.append(running_registry)
            yield running_registry
    finally:
        listed = subprocess.run(["docker", "image", "ls", "--no-trunc", "--format", "{{.ID}} {{.Repository}}"],
                                capture_output=True, text=True).stdout.splitlines()
        ours = {line.split()[0] for line in listed for r in started if line.split()[1].startswith(r.host + "/")}
        if ours:
            subprocess.run(["docker", "image", "rm", "-f", *ours], capture_output=True)


@pytest.fixture
def stack(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    remote = make_stack(sshd, "engine")
    yield remote
    remove_stack(remote)


class Deploy:
    """One `dagger call deploy` of a commit of the history to `stack`; the same object, called
    again, makes the same call (the same arguments and secret objects)."""

    def __init__(self, sshd: RunningSshd, registry: RunningRegistry, namespace: str, history: History,
                 stack: pathlib.Path) -> None:
        import dagger

        self.sshd, self.registry, self.namespace, self.history, self.stack = sshd, registry, namespace, history, stack
        compose = (history.repo / "compose.yaml").read_text()
        if "\nname: dimbybot2\n" not in compose:
            raise RuntimeError("compose.yaml names no project `dimbybot2` to make this stack's own")
        compose = compose.replace("\nname: dimbybot2\n", f"\nname: {project_of(stack)}\n")
        source = dagger.dag.host().directory(str(history.repo), exclude=main.SOURCE_IGNORE).with_new_file("compose.yaml", compose)
        self.module = main.Dimbybot2(source=source)
        self.secrets = {"ssh_key": dagger.dag.set_secret("deploy-ssh-key", sshd.client_key),
                        "known_hosts": dagger.dag.set_secret("deploy-known-hosts", sshd.known_hosts),
                        "password": dagger.dag.set_secret("deploy-registry-password", registry.password)}

    async def __call__(self, name: str) -> main.DeployOutcome:
        digests = ",".join(f"{image}={digest}" for image, digest in self.history.digests[name].items())
        return await self.module.deploy(host=self.sshd.host, port=self.sshd.port, user=self.sshd.user, tag=self.history.sha[name],
                                        registry=self.namespace, remote_dir=str(self.stack), username=self.registry.username,
                                        timeout=int(TIMEOUT), digests=digests, **self.secrets)  # type: ignore[arg-type]


def report_of(outcome: main.DeployOutcome) -> dict[str, object]:
    import json

    return dict(json.loads(outcome.report_json))


async def test_a_deploy_runs_the_new_version_on_the_host_and_says_so(engine: dagger_engine.Engine, sshd: RunningSshd,
                                                                     registry: RunningRegistry, namespace: str,
                                                                     history: History, stack: pathlib.Path) -> None:
    async with dagger_engine.connected(engine, REPO):
        outcome = await Deploy(sshd, registry, namespace, history, stack)("V1")
    assert outcome.exit_code == 0, outcome.text
    r = report_of(outcome)
    assert (r["result"], r["old_tag"], r["rolled_back"], r["tag"]) == ("deployed", "none", "no", history.sha["V1"]), r
    assert r["digests"] == history.digests["V1"]
    assert r["services"] == {"bot": "healthy", "lavalink": "healthy"}
    assert "result: deployed" in outcome.text.splitlines()
    assert outcome.summary_markdown.startswith("## Deploy to production: ✅ deployed")
    assert f"| commit | `{history.sha['V1']}` |" in outcome.summary_markdown
    assert registry.password not in outcome.text + outcome.summary_markdown + outcome.report_json
    assert_consistent(stack, history, "V1")  # compose on the host runs V1's digests, and the host recorded it


async def test_a_version_that_fails_its_health_check_is_rolled_back_to_the_previous_one(
        engine: dagger_engine.Engine, sshd: RunningSshd, registry: RunningRegistry, namespace: str, history: History,
        stack: pathlib.Path) -> None:
    async with dagger_engine.connected(engine, REPO):
        deploy = Deploy(sshd, registry, namespace, history, stack)
        first = await deploy("V1")
        bad = await deploy("BAD")
    assert first.exit_code == 0, first.text
    assert bad.exit_code == 1, bad.text
    r = report_of(bad)
    assert (r["result"], r["rolled_back"], r["old_tag"]) == ("rolled back", f"yes, to {history.sha['V1']}", history.sha["V1"]), r
    assert "unhealthy" in str(r["reason"]) or "self-check" in str(r["reason"]), r["reason"]
    assert bad.summary_markdown.startswith("## Deploy to production: ⚠️ failed")
    assert f"| rolled back | yes, to {history.sha['V1']} |" in bad.summary_markdown
    assert_consistent(stack, history, "V1")  # the old images run again


async def test_the_same_deploy_twice_on_one_engine_runs_twice(engine: dagger_engine.Engine, sshd: RunningSshd,
                                                              registry: RunningRegistry, namespace: str, history: History,
                                                              stack: pathlib.Path) -> None:
    """The per-call id defeats the engine's exec cache: with the stack taken down after the first
    call, the same call again brings it back, as a new job on the host."""
    async with dagger_engine.connected(engine, REPO):
        deploy = Deploy(sshd, registry, namespace, history, stack)
        first = await deploy("V2")
        assert first.exit_code == 0, first.text
        assert_consistent(stack, history, "V2")
        subprocess.run(["docker", "compose", "-p", project_of(stack), "down"], cwd=stack, check=True, capture_output=True,
                       env={**os.environ, "DIMBYBOT_REGISTRY": "x/y", "DIMBYBOT_TAG": "t"})
        assert running(stack) == {}
        second = await deploy("V2")
    assert second.exit_code == 0, second.text
    assert report_of(second)["job"] != report_of(first)["job"]
    assert report_of(second)["old_tag"] == history.sha["V2"]
    assert_consistent(stack, history, "V2")

"""Deploy for real: sshd on 127.0.0.1, a key-only user in the docker group, Docker Compose, and
a registry holding the images of four commits of a real git history, built and pushed with the
pipeline's local driver:

    V1 -> V2 -> BAD -> V3 -> V4 (never built)

BAD's bot fails its self-check, so its container never becomes healthy. Deploys run by digest
(the build's digests, as the workflow passes them from build-and-push's report).

Test doubles: the Lavalink image is built on the stand-in base (the real Lavalink image cannot
be pulled here); Discord cannot be reached here, so the bot keeps retrying its login as it
would in a Discord outage (its health comes from its self-check against Lavalink), and the
Discord webhook is a local HTTP server. The scenarios on the main stack run in order and each
states what it expects to find; two scenarios that need a fresh host use their own directory.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ci import cache, config, deploy, local, pipeline, tags
from tests.conftest import LOCAL_BASES, REPO
from tests.registry_fixture import RunningRegistry, start_registry
from tests.ssh_fixture import RunningSshd, start_sshd

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123"
TIMEOUT = "20"  # seconds for `up --wait`: the healthy stack is up in about 5


class History:
    """The commits, in order, and the digests each build produced."""

    def __init__(self, repo: pathlib.Path) -> None:
        self.repo = repo
        self.sha: dict[str, str] = {}
        self.digests: dict[str, dict[str, str]] = {}

    def digest_args(self, name: str) -> list[str]:
        return [arg for image, digest in self.digests[name].items() for arg in ("--digest", f"{image}={digest}")]


def git(repo: pathlib.Path, *argv: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("deploy-registry"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    yield from start_sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture(scope="module")
def namespace(registry: RunningRegistry) -> str:
    return f"{registry.host}/deploy{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def history(registry: RunningRegistry, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> History:
    """Commit V1, V2, BAD, V3, V4 in a fresh repository; build and push all but V4."""
    repo = tmp_path_factory.mktemp("deploy-history") / "repo"
    repo.mkdir()
    for item in ("Dockerfile", ".dockerignore", "pyproject.toml", "compose.yaml"):
        shutil.copy2(REPO / item, repo / item)
    shutil.copytree(REPO / "bot", repo / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", repo / "Lavalink")
    git(repo, "init", "-q", "-b", "main")
    result = History(repo)
    init, selfcheck = repo / "bot" / "dimbybot" / "__init__.py", repo / "bot" / "dimbybot" / "selfcheck.py"
    good_selfcheck = selfcheck.read_text()
    for name in ("V1", "V2", "BAD", "V3", "V4"):
        init.write_text(init.read_text() + f"# {name}\n")
        selfcheck.write_text("def run(env=None, timeout=5.0):\n    return 1, 'self-check failed: broken on purpose'\n"
                             if name == "BAD" else good_selfcheck)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", name)
        result.sha[name] = sha = git(repo, "rev-parse", "HEAD")
        if name == "V4":
            continue
        options = pipeline.PipelineOptions(registry=namespace, tag_plan=tags.plan(sha, latest=False), build_args=LOCAL_BASES,
                                           cache=cache.CacheOptions(backend=cache.Backend.ENGINE))
        built = local.build_and_push(pipeline.plan(config.load(repo), options, root=repo), options, repo,
                                     repo.parent / f"work-{name}", registry.username, registry.password)
        assert built.ok, [i.error for i in built.images]
        result.digests[name] = {i.name: str(i.digest) for i in built.images}
    return result


def make_stack(sshd: RunningSshd, label: str) -> pathlib.Path:
    remote = sshd.home / f"dimbybot2-{label}-{uuid.uuid4().hex[:6]}"
    remote.mkdir()
    (remote / ".env").write_text(f"DISCORD_TOKEN={TOKEN}\nLAVALINK_PASSWORD=stack-secret\n")
    shutil.copy2(REPO / "compose.yaml", remote / "compose.yaml")
    for path in (remote, *remote.iterdir()):
        shutil.chown(path, sshd.user, sshd.user)
    return remote


def remove_stack(remote: pathlib.Path) -> None:
    """Wait for the host's jobs to end (a failed test can leave one running), then remove the stack."""
    def running_job() -> bool:
        for job in (remote / ".deploy" / "jobs").glob("*"):
            pid = (job / "pid").read_text().strip() if (job / "pid").exists() else ""
            if pid and not (job / "status").exists() and pathlib.Path(f"/proc/{pid}").exists():
                return True
        return False

    end = time.monotonic() + 300
    while time.monotonic() < end and running_job():
        time.sleep(1)
    subprocess.run(["docker", "compose", "-p", project_of(remote), "down", "--remove-orphans"], cwd=remote,
                   capture_output=True, env={**os.environ, "DIMBYBOT_REGISTRY": "x/y", "DIMBYBOT_TAG": "t"})
    shutil.rmtree(remote, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    """The main remote directory: the operator's .env with the app secrets, owned by the deploy user."""
    remote = make_stack(sshd, "main")
    yield remote
    remove_stack(remote)


@pytest.fixture
def fresh_stack(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    remote = make_stack(sshd, "fresh")
    yield remote
    remove_stack(remote)


def project_of(remote: pathlib.Path) -> str:
    return remote.name.replace(".", "-")


def client_env(sshd: RunningSshd, registry: RunningRegistry, **extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"], "DEPLOY_SSH_KEY": sshd.client_key,
            "DEPLOY_KNOWN_HOSTS": sshd.known_hosts, "REGISTRY_PASSWORD": registry.password, **extra}


def deploy_argv(sshd: RunningSshd, registry: RunningRegistry, namespace: str, remote: pathlib.Path, history: History,
                name: str, *extra: str, pinned: bool = True) -> list[str]:
    sha = history.sha[name]
    return [sys.executable, "-m", "ci.cli", "deploy", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--tag", sha, "--registry", namespace, "--remote-dir", str(remote), "--username", registry.username,
            "--compose-file", str(REPO / "compose.yaml"), "--timeout", TIMEOUT, "--project", project_of(remote),
            "--repo", str(history.repo), *(history.digest_args(name) if pinned and name in history.digests else []), *extra]


def run_deploy(sshd: RunningSshd, registry: RunningRegistry, namespace: str, remote: pathlib.Path, history: History,
               name: str, *extra: str, env: dict[str, str] | None = None, pinned: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(deploy_argv(sshd, registry, namespace, remote, history, name, *extra, pinned=pinned),
                          capture_output=True, text=True, env=env or client_env(sshd, registry), timeout=600)


def containers(remote: pathlib.Path) -> dict[str, tuple[str, str]]:
    """service -> (the image reference its container was created from, the image's repo digests)."""
    names = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project_of(remote)}"],
                           capture_output=True, text=True, check=True).stdout.split()
    found = {}
    for name in names:
        service, ref, image = subprocess.run(
            ["docker", "inspect", "--format", '{{index .Config.Labels "com.docker.compose.service"}} {{.Config.Image}} {{.Image}}', name],
            capture_output=True, text=True, check=True).stdout.split()
        digests = subprocess.run(["docker", "image", "inspect", "--format", '{{join .RepoDigests " "}}', image],
                                 capture_output=True, text=True, check=True).stdout.strip()
        found[service] = (ref, digests)
    return found


def running(remote: pathlib.Path) -> dict[str, str]:
    """service -> the image reference its container runs."""
    return {service: ref for service, (ref, _) in containers(remote).items()}


def running_tags(remote: pathlib.Path) -> dict[str, str]:
    return {service: image.split("@")[0].rsplit(":", 1)[1] for service, image in running(remote).items()}


def at(history: History, name: str) -> dict[str, str]:
    return {"bot": history.sha[name], "lavalink": history.sha[name]}


def report(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


def deployed_tag(remote: pathlib.Path) -> str:
    return (remote / ".deployed-tag").read_text().strip()


def history_events(remote: pathlib.Path) -> list[list[str]]:
    return [line.split() for line in (remote / ".deploy.history").read_text().splitlines()]


def assert_consistent(remote: pathlib.Path, history: History, name: str) -> None:
    """What runs, what the host recorded, and its history all say `name`, and no job is half done."""
    assert running_tags(remote) == at(history, name)
    assert deployed_tag(remote) == history.sha[name]
    events = history_events(remote)
    starts = [e for e in events if e[1] == "start"]
    ends = [e for e in events if e[1] == "end"]
    assert len(starts) == len(ends), events
    for service, (ref, digests) in containers(remote).items():  # the services are named after the images
        assert any(d.endswith("@" + history.digests[name][service]) for d in digests.split()), (ref, digests)


# --- scenarios on a fresh host ---------------------------------------------------------------

def test_a_failed_first_deploy_stops_the_stack_and_records_nothing(sshd: RunningSshd, registry: RunningRegistry,
                                                                  namespace: str, history: History,
                                                                  fresh_stack: pathlib.Path) -> None:
    result = run_deploy(sshd, registry, namespace, fresh_stack, history, "BAD")
    assert result.returncode == 1, result.stdout + result.stderr
    r = report(result)
    assert (r["result"], r["old tag"]) == ("failed", "none")
    assert r["rolled back"].startswith("no (first deploy")
    assert "self-check failed: broken on purpose" in r["reason"] or "unhealthy" in r["reason"], r["reason"]
    assert running(fresh_stack) == {}
    assert not (fresh_stack / ".deployed-tag").exists()
    assert [e[1] for e in history_events(fresh_stack)] == ["start", "end"]


def test_a_rollback_that_fails_is_reported_as_such(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                   history: History, fresh_stack: pathlib.Path) -> None:
    """The host's compose.yaml was edited by hand after V1 went live, so V1 cannot come back either."""
    assert run_deploy(sshd, registry, namespace, fresh_stack, history, "V1").returncode == 0
    compose = fresh_stack / "compose.yaml"
    compose.write_text(compose.read_text().replace('test: ["CMD", "python", "-m", "dimbybot", "--self-check"]',
                                                   'test: ["CMD", "false"]'))
    result = run_deploy(sshd, registry, namespace, fresh_stack, history, "BAD")
    assert result.returncode == 3, result.stdout + result.stderr
    r = report(result)
    assert r["result"] == "rollback failed"
    assert r["rolled back"].startswith(f"no, the rollback to {history.sha['V1']} failed too")
    assert deployed_tag(fresh_stack) == history.sha["V1"]  # the record still names what was meant to run
    assert history_events(fresh_stack)[-1][1:4] == ["end", history.sha["BAD"], "rollback-failed"]


# --- scenarios on the main stack, in order ------------------------------------------------------

def test_first_deploy_runs_the_built_digests(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                             history: History, stack: pathlib.Path) -> None:
    result = run_deploy(sshd, registry, namespace, stack, history, "V1")
    assert result.returncode == 0, result.stdout + result.stderr
    r = report(result)
    assert (r["old tag"], r["new tag"], r["result"], r["rolled back"]) == ("none", history.sha["V1"], "deployed", "no")
    assert (r["service bot"], r["service lavalink"]) == ("healthy", "healthy")
    assert_consistent(stack, history, "V1")


class Webhook:
    """A local stand-in for Discord's webhook endpoint (Discord cannot be reached here)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/1234/webhook-token-s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def user_docker_setup(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    """The deploy user's own Docker CLI setup, as on many hosts: a Compose plugin in
    ~/.docker/cli-plugins (a wrapper that notes each use and runs the system's) and a current
    context of its own. Removed afterwards."""
    user_config = sshd.home / ".docker"
    existed = user_config.exists()
    plugins = user_config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    calls = sshd.home / "compose-plugin-calls"
    system_compose = next(p for p in (pathlib.Path("/usr/libexec/docker/cli-plugins/docker-compose"),
                                      pathlib.Path("/usr/lib/docker/cli-plugins/docker-compose"),
                                      pathlib.Path("/usr/local/lib/docker/cli-plugins/docker-compose")) if p.exists())
    wrapper = plugins / "docker-compose"
    wrapper.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\nexec {system_compose} \"$@\"\n")
    wrapper.chmod(0o755)
    subprocess.run(["chown", "-R", f"{sshd.user}:{sshd.user}", str(user_config)], check=True)
    as_user = ["runuser", "-u", sshd.user, "--", "env", f"HOME={sshd.home}", "docker", "context"]
    subprocess.run([*as_user, "create", "dimby-ctx", "--docker", "host=unix:///var/run/docker.sock"], check=True, capture_output=True)
    subprocess.run([*as_user, "use", "dimby-ctx"], check=True, capture_output=True)
    config_before = (user_config / "config.json").read_text()
    yield calls
    assert (user_config / "config.json").read_text() == config_before  # the user's own config was not touched
    if existed:
        shutil.rmtree(plugins)
        subprocess.run([*as_user, "use", "default"], capture_output=True)
        subprocess.run([*as_user, "rm", "dimby-ctx"], capture_output=True)
    else:
        shutil.rmtree(user_config)
    calls.unlink(missing_ok=True)


def test_upgrade_keeps_the_users_docker_setup_and_tells_discord(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                                history: History, stack: pathlib.Path, tmp_path: pathlib.Path,
                                                                user_docker_setup: pathlib.Path) -> None:
    webhook = Webhook()
    summary = tmp_path / "summary.md"
    env = client_env(sshd, registry, DISCORD_WEBHOOK_URL=webhook.url)
    result = run_deploy(sshd, registry, namespace, stack, history, "V2", "--summary-file", str(summary), env=env)
    webhook.server.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    assert report(result)["old tag"] == history.sha["V1"]
    assert_consistent(stack, history, "V2")
    # Compose came from the user's plugin directory, with the user's context.
    assert "pull" in user_docker_setup.read_text() and "up" in user_docker_setup.read_text()
    job = report(result)["job"]
    assert "context dimby-ctx" in (stack / ".deploy" / "jobs" / job / "log").read_text()
    # The registry auth existed only in the job's private config, and is gone.
    assert not (stack / ".deploy" / "jobs" / job / "docker").exists()
    leftovers = subprocess.run(["grep", "-rl", registry.password, str(sshd.home)], capture_output=True, text=True).stdout
    assert leftovers == ""
    # Discord heard about it; the webhook URL (it carries a token) was never printed.
    (message,) = webhook.bodies
    embed = message["embeds"][0]
    assert embed["title"] == "production: deployed"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["commit"] == f"`{history.sha['V2'][:12]}`" and fields["rolled back"] == "no"
    assert fields["health"] == "bot healthy, lavalink healthy"
    assert fields["bot"].startswith(f"`{history.digests['V2']['bot'][:19]}")
    assert "webhook-token-s3cret" not in result.stdout + result.stderr
    text = summary.read_text()
    assert "## Deploy to production" in text and history.digests["V2"]["lavalink"] in text


def test_an_unhealthy_commit_rolls_back_and_restores_the_compose_file(sshd: RunningSshd, registry: RunningRegistry,
                                                                      namespace: str, history: History,
                                                                      stack: pathlib.Path, tmp_path: pathlib.Path) -> None:
    before = (stack / "compose.yaml").read_text()
    changed = tmp_path / "compose.yaml"
    changed.write_text((REPO / "compose.yaml").read_text().replace("    restart: unless-stopped\n    depends_on:",
                                                                   "    restart: unless-stopped\n    labels:\n"
                                                                   "      dimbybot2.test: changed\n    depends_on:"))
    argv = deploy_argv(sshd, registry, namespace, stack, history, "BAD")
    argv[argv.index("--compose-file") + 1] = str(changed)
    result = subprocess.run(argv, capture_output=True, text=True, env=client_env(sshd, registry), timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    r = report(result)
    assert r["result"] == "rolled back" and r["rolled back"] == f"yes, to {history.sha['V2']}"
    assert "unhealthy" in r["reason"] or "self-check" in r["reason"], r["reason"]  # Compose's own words, not a guess
    assert_consistent(stack, history, "V2")
    assert (stack / "compose.yaml").read_text() == before
    labels = subprocess.run(["docker", "inspect", "--format", '{{index .Config.Labels "dimbybot2.test"}}',
                             f"{project_of(stack)}-bot-1"], capture_output=True, text=True, check=True).stdout.strip()
    assert labels == ""  # the running bot was recreated from the restored file


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def hold_lock(remote: pathlib.Path, sshd: RunningSshd, seconds: int) -> subprocess.Popen[bytes]:
    """Another deploy, as far as the host can tell: a process holding the deploy lock."""
    lock = remote / ".deploy.lock"
    lock.touch()
    shutil.chown(lock, sshd.user, sshd.user)
    holder = subprocess.Popen(["flock", str(lock), "sleep", str(seconds)], start_new_session=True)
    wait_for(lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0, 10, "the lock to be held")
    return holder


def release(holder: subprocess.Popen[bytes]) -> None:
    os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep, which holds the lock too
    holder.wait()


def job_names(remote: pathlib.Path) -> set[str]:
    jobs = remote / ".deploy" / "jobs"
    return {p.name for p in jobs.iterdir()} if jobs.exists() else set()


def log_of(job: pathlib.Path) -> str:
    return (job / "log").read_text() if (job / "log").exists() else ""


def newest_job(remote: pathlib.Path) -> pathlib.Path | None:
    jobs = sorted((remote / ".deploy" / "jobs").iterdir(), key=lambda p: p.stat().st_mtime) if (remote / ".deploy" / "jobs").exists() else []
    return jobs[-1] if jobs else None


def test_a_killed_client_during_up_wait_leaves_the_host_rolled_back(sshd: RunningSshd, registry: RunningRegistry,
                                                                    namespace: str, history: History,
                                                                    stack: pathlib.Path) -> None:
    """The client and its ssh die while `up --wait` waits on BAD: the host still rolls back,
    records it, and a new client reads the final result."""
    jobs_before = job_names(stack)
    key_dirs_before = set(pathlib.Path("/tmp").glob("dimbybot-ssh-*"))
    client = subprocess.Popen(deploy_argv(sshd, registry, namespace, stack, history, "BAD"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=client_env(sshd, registry), start_new_session=True)

    def rolling_out() -> bool:
        job = newest_job(stack)
        return job is not None and job.name not in jobs_before and "rolling out" in log_of(job)

    wait_for(rolling_out, 120, "the roll-out to start")
    time.sleep(2)  # inside `up --wait`
    subprocess.run(["pkill", "-KILL", "-P", str(client.pid)], check=False)  # its ssh (a session of its own) ...
    subprocess.run(["pkill", "-KILL", "-s", str(client.pid)], check=False)  # ... and the CLI's session
    client.kill()
    client.communicate()
    for leftover in set(pathlib.Path("/tmp").glob("dimbybot-ssh-*")) - key_dirs_before:
        shutil.rmtree(leftover)  # SIGKILL gives the client no chance to remove its key files
    job = newest_job(stack)
    assert job is not None
    wait_for(lambda: (job / "status").exists(), 180, "the host's job to finish")
    assert "result: rolled back" in (job / "status").read_text()
    assert_consistent(stack, history, "V2")
    status = subprocess.run([sys.executable, "-m", "ci.cli", "deploy-status", "--host", sshd.host, "--port", str(sshd.port),
                             "--user", sshd.user, "--remote-dir", str(stack)], capture_output=True, text=True,
                            env=client_env(sshd, registry), timeout=120)
    assert status.returncode == 1, status.stdout + status.stderr
    seen = report(status)
    assert (seen["job"], seen["result"], seen["deployed tag"]) == (job.name, "rolled back", history.sha["V2"])


def test_an_older_commit_is_refused_unless_forced(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                  history: History, stack: pathlib.Path) -> None:
    events = len(history_events(stack))
    result = run_deploy(sshd, registry, namespace, stack, history, "V1")
    assert result.returncode == 2, result.stdout + result.stderr
    r = report(result)
    assert r["result"] == "refused" and "out of order" in r["reason"] and "older than the deployed commit" in r["reason"]
    assert_consistent(stack, history, "V2")
    assert len(history_events(stack)) == events  # refused before the host was asked to do anything
    forced = run_deploy(sshd, registry, namespace, stack, history, "V1", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert_consistent(stack, history, "V1")


def test_two_deploys_at_once_are_serialized_and_the_newer_commit_wins(sshd: RunningSshd, registry: RunningRegistry,
                                                                      namespace: str, history: History,
                                                                      stack: pathlib.Path) -> None:
    before = len(history_events(stack))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda name: run_deploy(sshd, registry, namespace, stack, history, name), ["V3", "V2"]))
    events = history_events(stack)[before:]
    kinds = [event[1] for event in events]
    assert kinds in (["start", "end", "start", "end"], ["start", "end", "start", "end", "start", "end"]), events
    v3, v2 = results
    assert v3.returncode == 0, v3.stdout + v3.stderr
    # V2 either went first and was replaced, or came second and was refused as older.
    assert v2.returncode == 0 or (v2.returncode == 2 and "older than the deployed commit" in report(v2)["reason"]), v2.stdout
    assert_consistent(stack, history, "V3")


def test_a_connection_dropped_after_the_job_started_is_followed_to_its_end(sshd: RunningSshd, registry: RunningRegistry,
                                                                           namespace: str, history: History,
                                                                           stack: pathlib.Path) -> None:
    """ssh dies (exit 255) while the job waits for the lock: not "refused", the client reconnects."""
    holder = hold_lock(stack, sshd, 120)
    try:
        jobs_before = job_names(stack)
        client = subprocess.Popen(deploy_argv(sshd, registry, namespace, stack, history, "V3", "--lock-wait", "120"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env(sshd, registry))

        def waiting() -> bool:
            job = newest_job(stack)
            return job is not None and job.name not in jobs_before and "waiting" in log_of(job)

        wait_for(waiting, 60, "the job to wait for the lock")
        ssh = subprocess.run(["pgrep", "-P", str(client.pid), "-x", "ssh"], capture_output=True, text=True).stdout.split()
        assert ssh, "no ssh child"
        os.kill(int(ssh[0]), signal.SIGKILL)
        time.sleep(1)
    finally:
        release(holder)
    stdout, stderr = client.communicate(timeout=300)
    assert client.returncode == 0, stdout + stderr
    assert "reconnecting" in stderr
    assert dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)["result"] == "deployed"
    assert_consistent(stack, history, "V3")


def test_a_digest_that_is_not_what_the_tag_points_at_is_refused(sshd: RunningSshd, registry: RunningRegistry,
                                                                namespace: str, history: History,
                                                                stack: pathlib.Path) -> None:
    argv = deploy_argv(sshd, registry, namespace, stack, history, "V3", pinned=False)
    argv += ["--digest", f"bot={history.digests['V2']['bot']}", "--digest", f"lavalink={history.digests['V3']['lavalink']}"]
    result = subprocess.run(argv, capture_output=True, text=True, env=client_env(sshd, registry), timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    reason = report(result)["reason"]
    assert reason.startswith("digest mismatch for bot") and history.digests["V2"]["bot"] in reason
    assert_consistent(stack, history, "V3")


def test_a_failed_pull_changes_nothing_and_says_why(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                    history: History, stack: pathlib.Path) -> None:
    result = run_deploy(sshd, registry, namespace, stack, history, "V4")  # committed, never built
    assert result.returncode == 2, result.stdout + result.stderr
    reason = report(result)["reason"]
    assert reason.startswith(f"pull of {history.sha['V4']} failed (nothing changed)") and "not found" in reason.lower(), reason
    assert_consistent(stack, history, "V3")


def test_a_registry_auth_failure_changes_nothing(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                 history: History, stack: pathlib.Path) -> None:
    result = run_deploy(sshd, registry, namespace, stack, history, "V3",
                        env=client_env(sshd, registry, REGISTRY_PASSWORD="wrong-password"))
    assert result.returncode == 2, result.stdout + result.stderr
    r = report(result)
    assert r["result"] == "refused" and "refused the login" in r["reason"]
    assert_consistent(stack, history, "V3")


def test_a_lock_held_too_long_is_refused(sshd: RunningSshd, registry: RunningRegistry, namespace: str, history: History,
                                         stack: pathlib.Path) -> None:
    holder = hold_lock(stack, sshd, 60)
    try:
        result = run_deploy(sshd, registry, namespace, stack, history, "V3", "--lock-wait", "2")
    finally:
        release(holder)
    assert result.returncode == 2, result.stdout + result.stderr
    assert report(result)["reason"] == "another deploy held the lock for more than 2s"
    assert_consistent(stack, history, "V3")


def test_a_read_only_deploy_directory_is_named_as_such(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                       history: History, stack: pathlib.Path) -> None:
    stack.chmod(0o555)
    try:
        result = run_deploy(sshd, registry, namespace, stack, history, "V3")
    finally:
        stack.chmod(0o755)
    assert result.returncode == 2, result.stdout + result.stderr
    assert report(result)["reason"] == f"deploy directory {stack} is not writable by {sshd.user}"
    assert_consistent(stack, history, "V3")


def test_an_engine_older_than_required_is_refused_before_any_change(sshd: RunningSshd, registry: RunningRegistry,
                                                                    namespace: str, history: History,
                                                                    stack: pathlib.Path) -> None:
    """The real engine against a raised minimum: the preflight reads and compares the real versions."""
    request = deploy.DeployRequest(host=sshd.host, user=sshd.user, port=sshd.port, tag=history.sha["V3"], registry=namespace,
                                   remote_dir=str(stack))
    with deploy.secret_files(sshd.client_key, sshd.known_hosts) as (key, hosts):
        client = deploy.Client(request, key, hosts)
        for minimum, expected in (("DEPLOY_MIN_ENGINE=99.0", "Docker Engine"), ("DEPLOY_MIN_COMPOSE=9.1", "Docker Compose")):
            call = client.call("start", timeout=60, job=f"preflight-{uuid.uuid4().hex[:6]}",
                               script=f"export {minimum}\n" + deploy.SCRIPT.read_text())
            r = dict(line.split(": ", 1) for line in call.report or [] if ": " in line)
            assert call.code == 2 and r["result"] == "refused", call
            assert r["reason"].startswith(expected) and "is older than" in r["reason"], r
    assert_consistent(stack, history, "V3")


def test_the_pipeline_entry_accepts_a_key_without_trailing_newline_or_with_crlf(sshd: RunningSshd, registry: RunningRegistry,
                                                                               namespace: str, history: History,
                                                                               stack: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """`python -m ci.deploy` is what the Dagger function runs, with the key as a mounted secret file."""
    key_file, hosts_file, out = tmp_path / "key", tmp_path / "known_hosts", tmp_path / "out"
    key_file.write_text(sshd.client_key.strip().replace("\n", "\r\n"))  # CRLF, and no final newline
    key_file.chmod(0o600)
    hosts_file.write_text(sshd.known_hosts)
    env = {**client_env(sshd, registry), "DEPLOY_SSH_KEY_FILE": str(key_file), "DEPLOY_KNOWN_HOSTS_FILE": str(hosts_file),
           "DEPLOY_COMPOSE_PATH": str(REPO / "compose.yaml")}
    argv = [sys.executable, "-m", "ci.deploy", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--tag", history.sha["V3"], "--registry", namespace, "--remote-dir", str(stack), "--username", registry.username,
            "--timeout", TIMEOUT, "--project", project_of(stack), "--repo", str(history.repo), "--out", str(out),
            *history.digest_args("V3")]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report(result)["result"] == "deployed"
    assert (out / "exit-code").read_text() == "0\n"
    assert json.loads((out / "report.json").read_text())["digests"] == history.digests["V3"]
    assert registry.password not in result.stdout + result.stderr + (out / "summary.md").read_text()
    assert_consistent(stack, history, "V3")


def test_a_wrong_host_key_is_refused_before_any_change(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                       history: History, stack: pathlib.Path) -> None:
    events = history_events(stack)
    result = run_deploy(sshd, registry, namespace, stack, history, "V3",
                        env=client_env(sshd, registry, DEPLOY_KNOWN_HOSTS=sshd.other_known_hosts))
    assert result.returncode == 2
    assert "ssh failed before anything ran remotely" in result.stdout and "verification failed" in result.stdout
    assert history_events(stack) == events
    assert_consistent(stack, history, "V3")


def test_bad_input_is_refused_before_connecting(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                history: History, stack: pathlib.Path) -> None:
    argv = deploy_argv(sshd, registry, namespace, stack, history, "V3", pinned=False)
    argv[argv.index("--tag") + 1] = "not a tag"
    result = subprocess.run(argv, capture_output=True, text=True, env=client_env(sshd, registry), timeout=60)
    assert (result.returncode, result.stderr.strip()) == (2, "error: --tag: 'not a tag' is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})")
    bad_digest = subprocess.run([*argv[:argv.index("--tag") + 1], history.sha["V3"], *argv[argv.index("--tag") + 2:],
                                 "--digest", "bot=sha256:abc"], capture_output=True, text=True, env=client_env(sshd, registry))
    assert (bad_digest.returncode, bad_digest.stderr.strip()) == (2, "error: --digest: 'sha256:abc' is not sha256:<64 hex>")


def test_secrets_are_never_in_the_output_or_left_behind(sshd: RunningSshd, registry: RunningRegistry, namespace: str,
                                                         history: History, stack: pathlib.Path) -> None:
    def key_dirs() -> set[str]:
        return set(subprocess.run(["find", "/tmp", "-maxdepth", "1", "-name", "dimbybot-ssh-*"], capture_output=True, text=True).stdout.split())

    before = key_dirs()  # another process's deploy may be running: only this one's count
    result = run_deploy(sshd, registry, namespace, stack, history, "V3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert registry.password not in result.stdout + result.stderr
    assert not list(stack.glob("compose.yaml.next"))
    assert key_dirs() - before == set()  # the key and known_hosts files are gone
    on_host = subprocess.run(["grep", "-rl", registry.password, str(stack)], capture_output=True, text=True).stdout
    assert on_host == ""


def test_the_smoke_track_reaches_lavalink_in_the_environment_never_in_argv(sshd: RunningSshd, registry: RunningRegistry,
                                                                          namespace: str, history: History,
                                                                          stack: pathlib.Path) -> None:
    """SMOKE_TRACK is a secret in the workflow: the CLI reads it from its environment, the host
    hands it to `compose exec` in the environment. Every process's argv on this machine (runner
    and host at once) is sampled every 20 ms during the deploy: the track is never in one. The
    Lavalink stand-in loads no track (HTTP 404): the smoke test fails, which shows the track
    arrived. The rollback runs the same smoke test, so it fails too: exit 3, while what ran
    before (healthy) still runs."""
    if not (stack / ".deployed-tag").exists():  # run alone (-k): something healthy must run first
        assert run_deploy(sshd, registry, namespace, stack, history, "V3").returncode == 0
    name = next(n for n, sha in history.sha.items() if sha == deployed_tag(stack))  # redeploy what runs
    track = f"smoke-track-{uuid.uuid4().hex[:10]}"
    seen: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                except OSError:
                    continue
                if track in text:
                    seen.append(text)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run_deploy(sshd, registry, namespace, stack, history, name, env=client_env(sshd, registry, SMOKE_TRACK=track))
    finally:
        done.set()
        sampler.join()
    assert result.returncode == 3, result.stdout + result.stderr
    r = report(result)
    assert r["result"] == "rollback failed" and r["reason"].count("Lavalink could not load the smoke track: HTTP 404") == 2, r
    assert seen == []
    assert track not in result.stdout + result.stderr
    assert_consistent(stack, history, name)

"""Issue 22, the deploy side: what a hostile host, the operator's ssh config, a killed job, or bad
input must not be able to do. Real sshd on 127.0.0.1 and real Docker Compose on the "host" (this
machine, as tests/test_deploy.py); no image is built or pulled: each deploy here ends before the
pull (lock, preflight) or at it (the registry, 127.0.0.1:9, refuses connections), which is all
these rules need.

Test doubles, each said so where it is used:
- HOSTILE HOST: an sshd whose `ForceCommand` prints what a hostile host (or hostile containers
  on it) could send, then, in mode `inject`, runs the real script (so the verdict is the real
  host's), or, in mode `liar`, answers by itself: it reads the nonce the client sent on stdin
  and frames its lies with it, as a fully hostile host could.
- RECORDING HOST: the same sshd in mode `record` runs the real script after noting the session's
  environment (agent socket, DISPLAY, secrets).
- an `ssh` first in PATH that notes its environment, then runs /usr/bin/ssh: what ssh was given.
- the operator's ssh config: the client runs in a private mount namespace (`unshare -m`) where
  root's home (in /etc/passwd) is a temporary directory holding a hostile ~/.ssh/config, and
  /etc/ssh/ssh_config is a hostile one; nothing outside that process tree sees either.
"""

from __future__ import annotations

import base64
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

from ci import deploy
from tests.conftest import REPO
from tests.ssh_fixture import USER, RunningSshd, ensure_user, start_sshd
from tests.test_deploy import Webhook, hold_lock, job_names, log_of, make_stack, newest_job, project_of, release, remove_stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

REGISTRY = "127.0.0.1:9/hardening"  # nothing listens there: a pull fails at once, "nothing changed"
SECRETS = {"DEPLOY_SSH_KEY": "", "REGISTRY_PASSWORD": "registry-pw-c4n4ry", "OTHER_TOKEN": "other-token-c4n4ry",
           "DISCORD_WEBHOOK_URL": "http://127.0.0.1:9/api/webhooks/1/webhook-tok-c4n4ry"}

DOUBLE = r"""#!/bin/bash
# A TEST DOUBLE FOR A HOSTILE (or recording) HOST, run by sshd as ForceCommand.
dir=$(dirname "$0")
mode=$(cat "$dir/mode" 2>/dev/null)
env >"$dir/session-env.$$"
case "$mode" in
  inject)  # hostile bytes first (as container output reaching the job log would), then the real host
    cat "$dir/hostile.bin"
    exec bash -c "$SSH_ORIGINAL_COMMAND"
    ;;
  liar)  # a host that lies on its own, framed with the nonce it read from the client's stdin
    payload=$(cat)
    nonce=$(sed -n 's/^DEPLOY_NONCE=//p' <<<"$payload")
    action=$(sed -n 's/^export DEPLOY_ACTION=//p' <<<"$payload")
    job=$(sed -n 's/^export DEPLOY_JOB=//p' <<<"$payload")
    [[ -f "$dir/liar-$action.sh" ]] && NONCE=$nonce JOB=$job bash "$dir/liar-$action.sh"
    exit "$(cat "$dir/liar-$action.exit" 2>/dev/null || echo 0)"
    ;;
  *)  # record: the real host
    exec bash -c "$SSH_ORIGINAL_COMMAND"
    ;;
esac
"""


@pytest.fixture(scope="module")
def double_dir() -> Iterator[pathlib.Path]:
    """The double's directory, in the deploy user's home (sshd runs the command as that user)."""
    home = ensure_user()
    path = home / f"double-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "command").write_text(DOUBLE)
    (path / "command").chmod(0o755)
    shutil.chown(path, USER, USER)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory, double_dir: pathlib.Path) -> Iterator[RunningSshd]:
    yield from start_sshd(tmp_path_factory.mktemp("double-sshd"), force_command=str(double_dir / "command"))


SetMode = Callable[..., None]  # set_mode(name, hostile=b"", **liar scripts)


@pytest.fixture
def mode(double_dir: pathlib.Path) -> Iterator[SetMode]:
    def set_mode(name: str, hostile: bytes = b"", **liar: str) -> None:
        for stale in double_dir.glob("liar-*"):
            stale.unlink()
        for path, content in (("mode", name.encode()), ("hostile.bin", hostile),
                              *((f"liar-{k.replace('_', '.')}", v.encode()) for k, v in liar.items())):
            (double_dir / path).write_bytes(content)
            shutil.chown(double_dir / path, USER, USER)

    yield set_mode
    set_mode("record")
    for recorded in double_dir.glob("session-env.*"):
        recorded.unlink()


@pytest.fixture
def stack(double: RunningSshd) -> Iterator[pathlib.Path]:
    remote = make_stack(double, "hardening")
    yield remote
    remove_stack(remote)


@pytest.fixture
def tag_repo(tmp_path: pathlib.Path) -> tuple[pathlib.Path, str]:
    """A one-commit history: the tag to deploy (a first deploy needs nothing older)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    for argv in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "one"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env, capture_output=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return repo, sha


@pytest.fixture
def ssh_spy(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory for PATH: its `ssh` notes its environment in spy-env.PID, then runs /usr/bin/ssh."""
    bin_dir = tmp_path / "spy-bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\nenv >{bin_dir}/spy-env.$$\nexec /usr/bin/ssh \"$@\"\n")
    (bin_dir / "ssh").chmod(0o755)
    return bin_dir


def spy_envs(bin_dir: pathlib.Path) -> list[dict[str, str]]:
    return [dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line) for p in bin_dir.glob("spy-env.*")]


def cli_env(sshd: RunningSshd, path_first: pathlib.Path | None = None, **extra: str) -> dict[str, str]:
    path = f"{path_first}:/usr/bin:{os.environ['PATH']}" if path_first else f"/usr/bin:{os.environ['PATH']}"
    env = {key: value for key, value in os.environ.items() if key != "GITHUB_STEP_SUMMARY"}
    return {**env, "PATH": path, **SECRETS, "DEPLOY_SSH_KEY": sshd.client_key, "DEPLOY_KNOWN_HOSTS": sshd.known_hosts, **extra}


def deploy_argv(sshd: RunningSshd, remote: pathlib.Path, tag: str, repo: pathlib.Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ci.cli", "deploy", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--tag", tag, "--registry", REGISTRY, "--remote-dir", str(remote), "--username", "ci-user",
            "--compose-file", str(REPO / "compose.yaml"), "--timeout", "20", "--project", project_of(remote),
            "--repo", str(repo), *extra]


def report_of(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


# --- item 2: ssh obeys no config but ours and inherits no secret --------------------------------

RELAY = """import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while (b := os.read(0, 65536)):
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while (b := s.recv(65536)):
    os.write(1, b)
"""


@pytest.fixture
def hostile_ssh_config(tmp_path: pathlib.Path, double: RunningSshd) -> Iterator[tuple[list[str], pathlib.Path]]:
    """argv prefix running a command with a hostile ~/.ssh/config and /etc/ssh/ssh_config (see the
    module docstring), an ssh agent holding the deploy key, and the directory the config's
    ProxyCommand and LocalCommand dump their environment into."""
    home, dumps = tmp_path / "home", tmp_path / "dumps"
    (home / ".ssh").mkdir(parents=True)
    dumps.mkdir()
    home.chmod(0o700)
    (tmp_path / "relay.py").write_text(RELAY)
    (tmp_path / "right_known_hosts").write_text(double.known_hosts)
    (home / ".ssh" / "config").write_text(f"""Host *
  ForwardAgent yes
  ForwardX11 yes
  SendEnv *
  PermitLocalCommand yes
  LocalCommand /bin/sh -c 'env > {dumps}/localcommand.env'
  ProxyCommand /bin/sh -c 'env > {dumps}/proxy.env; exec /usr/bin/python3 {tmp_path}/relay.py %h %p'
""")
    (home / ".ssh" / "config").chmod(0o600)
    system = tmp_path / "ssh_config"
    system.write_text(f"Host *\n  KnownHostsCommand /bin/cat {tmp_path}/right_known_hosts\n  StrictHostKeyChecking no\n")
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(
        f"root:x:0:0:root:{home}:/bin/bash\n" if line.startswith("root:") else line + "\n"
        for line in pathlib.Path("/etc/passwd").read_text().splitlines()))
    key = tmp_path / "agent-key"
    key.write_text(double.client_key)
    key.chmod(0o600)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 10, "the ssh agent")
        subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True, capture_output=True)
        prefix = ["unshare", "-m", "--", "sh", "-c",
                  'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/ssh/ssh_config && shift 2 && exec "$@"',
                  "sh", str(passwd), str(system)]
        # The command runs with the agent's socket and a DISPLAY in its environment.
        yield [*prefix, "env", f"SSH_AUTH_SOCK={sock}", "DISPLAY=:99"], dumps
    finally:
        agent.terminate()
        agent.wait()


def test_the_users_and_the_systems_ssh_config_are_ignored_and_no_secret_reaches_ssh(
        double: RunningSshd, double_dir: pathlib.Path, mode: SetMode, stack: pathlib.Path,
        tag_repo: tuple[pathlib.Path, str], hostile_ssh_config: tuple[list[str], pathlib.Path], ssh_spy: pathlib.Path) -> None:
    """~/.ssh/config asks for agent and X11 forwarding, sends every variable, and runs a ProxyCommand
    and a LocalCommand that dump their environment; an agent holding the key runs. The deploy
    reaches the (recording) host, and: no dump exists, ssh got PATH/HOME/LANG/LC_ALL only, the
    host's session has no agent socket, no DISPLAY, no secret."""
    prefix, dumps = hostile_ssh_config
    repo, sha = tag_repo
    mode("record")
    argv = [*prefix, *deploy_argv(double, stack, sha, repo)]
    result = subprocess.run(argv, capture_output=True, text=True, env=cli_env(double, ssh_spy), timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert report_of(result.stdout)["reason"].startswith(f"pull of {sha} failed"), result.stdout  # it reached the host
    assert sorted(p.name for p in dumps.iterdir()) == [], "the user's ProxyCommand/LocalCommand ran"
    seen = spy_envs(ssh_spy)
    assert seen, "ssh never ran"
    for env in seen:
        assert set(env) - {"PWD", "OLDPWD", "SHLVL", "_"} <= {"PATH", "HOME", "LANG", "LC_ALL"}, sorted(env)
    sessions = [p.read_text() for p in double_dir.glob("session-env.*")]
    assert sessions
    for session in sessions:
        names = {line.split("=", 1)[0] for line in session.splitlines()}
        assert "SSH_AUTH_SOCK" not in names and "DISPLAY" not in names, sorted(names)
        for name, value in SECRETS.items():
            assert (value or "-----BEGIN") not in session, name
        assert double.client_key.splitlines()[1] not in session


def test_a_wrong_known_hosts_is_refused_even_when_a_known_hosts_command_vouches_for_the_host(
        double: RunningSshd, double_dir: pathlib.Path, mode: SetMode, stack: pathlib.Path,
        tag_repo: tuple[pathlib.Path, str], hostile_ssh_config: tuple[list[str], pathlib.Path]) -> None:
    """/etc/ssh/ssh_config has a KnownHostsCommand printing the host's real key; the deploy is
    given a known_hosts line for another key: refused before anything ran remotely."""
    prefix, _ = hostile_ssh_config
    repo, sha = tag_repo
    mode("record")
    argv = [*prefix, *deploy_argv(double, stack, sha, repo)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                            env=cli_env(double, DEPLOY_KNOWN_HOSTS=double.other_known_hosts))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Host key verification failed" in report_of(result.stdout)["reason"], result.stdout
    assert list(double_dir.glob("session-env.*")) == []  # no session ever started
    assert not (stack / ".deploy").exists()


# --- item 3: host output cannot rewrite the verdict ---------------------------------------------

def test_report_lines_outside_the_framed_final_block_never_count(double: RunningSshd, mode: SetMode, stack: pathlib.Path,
                                                                 tag_repo: tuple[pathlib.Path, str]) -> None:
    """HOSTILE HOST double (mode inject): before the real script's output, a log line with CRs
    (`ok\\rstale: yes\\rresult: deployed`, as a container's self-check could print) and bare
    report lines. The real host refuses (the pull fails): the client says so, and the host ran
    one job, not three."""
    repo, sha = tag_repo
    mode("inject", b"log: ok\rstale: yes\rresult: deployed\rreason: all fine\n"
                   b"stale: yes\nresult: deployed\nexit: 0\nreport-begin: \nresult: deployed\nreport-end: \n")
    result = subprocess.run(deploy_argv(double, stack, sha, repo), capture_output=True, text=True, env=cli_env(double), timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    r = report_of(result.stdout)
    assert r["result"] == "refused" and r["reason"].startswith(f"pull of {sha} failed (nothing changed)"), result.stdout
    assert len(job_names(stack)) == 1, job_names(stack)


def test_invalid_utf8_from_the_host_is_shown_replaced_and_the_verdict_still_read(double: RunningSshd, mode: SetMode,
                                                                                stack: pathlib.Path,
                                                                                tag_repo: tuple[pathlib.Path, str]) -> None:
    """HOSTILE HOST double (mode inject): a log line that is not UTF-8 comes first."""
    repo, sha = tag_repo
    mode("inject", b"log: bad \xff\xfe\xc3( bytes\n")
    result = subprocess.run(deploy_argv(double, stack, sha, repo), capture_output=True, text=True, env=cli_env(double), timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert report_of(result.stdout)["reason"].startswith(f"pull of {sha} failed"), result.stdout
    assert "host| bad \ufffd\ufffd\ufffd( bytes" in result.stderr


# --- item 5: a hostile host reaches neither the log, the terminal nor the summary ---------------

HOSTILE_LOG = ("::warning file=ci/main.py,line=1::pwned", "::add-mask::hunter2", "  ::error::indented", "##[error]old syntax",
               "\x1b]0;pwned title\x07\x1b[2J\x1b[31mred\x1b[0m", "bidi \u202eevil\u202c", "c1 \x9b31m", "bell \x07 and \r"
               "::warning::after a CR")
HOSTILE_VALUES = {
    "old tag": "<img src=x onerror=alert(1)>",
    "service bot](https://evil.example) ![p](https://evil.example/p.png)": "healthy <b>bold</b>",
    "service lavalink": "`code` **bold** | pipe ~~strike~~ @everyone <@123>",
    "rolled back": "no ::error::x",
    "result": "deployed",
    "reason": "[click](https://evil.example) <script>alert(1)</script> \x1b[31m# heading > quote",
}


def liar_scripts(log_lines: list[str] | None = None, big: bool = False) -> dict[str, str]:
    """What the lying host prints per action (bash, $NONCE and $JOB from the client's stdin)."""
    def printf(text: str) -> str:
        return "printf '%s\\n' " + "'" + text.replace("'", "'\\''") + "'\n"

    status = "echo\necho \"report-begin: $NONCE\"\n" + printf("deployed tag: none") + printf("deployed commit: none") + \
             printf("last job: none") + "echo \"report-end: $NONCE\"\n"
    start = "echo \"accepted: $JOB\"\n" + "".join(printf("log: " + line) for line in (log_lines or list(HOSTILE_LOG)))
    if big:
        start += "yes 'log: spam' | head -n 20000\nprintf 'log: '; head -c 3000000 /dev/zero | tr '\\0' A; echo\n"
    start += "echo\necho \"report-begin: $NONCE\"\n" + "".join(printf(f"{k}: {v}") for k, v in HOSTILE_VALUES.items()) + \
             "echo \"report-end: $NONCE\"\n"
    return {"status_sh": status, "start_sh": start, "start_exit": "0"}


def test_host_lines_and_values_are_inert_in_the_log_the_terminal_the_summary_and_discord(
        double: RunningSshd, mode: SetMode, stack: pathlib.Path, tag_repo: tuple[pathlib.Path, str], tmp_path: pathlib.Path) -> None:
    """HOSTILE HOST double (mode liar): it "deploys" and sends workflow commands, escape
    sequences and bidi controls in its log, and markdown/HTML in every report value."""
    repo, sha = tag_repo
    mode("liar", **liar_scripts())
    webhook = Webhook()
    summary = tmp_path / "summary.md"
    try:
        result = subprocess.run(deploy_argv(double, stack, sha, repo, "--summary-file", str(summary)), capture_output=True,
                                text=True, timeout=300, env=cli_env(double, DISCORD_WEBHOOK_URL=webhook.url))
    finally:
        webhook.server.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    for stream in (result.stdout, result.stderr):
        for bad in ("\x1b", "\x07", "\r", "\x9b", "\u202e", "##["):
            assert bad not in stream, (bad, stream)
        for line in stream.splitlines():
            assert not line.lstrip().startswith("::"), line
    host_lines = [line for line in result.stderr.splitlines() if "pwned" in line or "hunter2" in line or "indented" in line]
    assert len(host_lines) == 3 and all(line.startswith("host| ") for line in host_lines), host_lines
    text = summary.read_text()
    for bad in ("<", ">", "![", "](", "`code`", "**", "~~", "\x1b"):
        assert bad not in text, (bad, text)
    for line in text.splitlines():
        if line.startswith("| "):
            assert line.count("|") == 3, line  # no value ends its cell early
    assert "&#60;img src&#61;x" in text or "&#60;img src=x" in text
    (message,) = webhook.bodies
    fields = {field["name"]: field["value"] for field in message["embeds"][0]["fields"]}
    assert "pipe" in fields["health"] and "evil" in fields["reason"]
    for name in ("previous", "health", "rolled back", "reason"):  # the host-supplied ones (commit, digests: ours)
        value = fields[name]
        assert "\x1b" not in value
        for i, char in enumerate(value):
            if char in "*_~`|>#[]()<@!":
                assert i > 0 and value[i - 1] == "\\", (char, value)
    assert message["allowed_mentions"] == {"parse": []}


def test_what_a_host_sends_is_capped_in_memory(double: RunningSshd, mode: SetMode, stack: pathlib.Path,
                                               tag_repo: tuple[pathlib.Path, str]) -> None:
    """HOSTILE HOST double (mode liar): 20,000 log lines and one 3 MB line without end."""
    _, sha = tag_repo
    mode("liar", **liar_scripts(big=True))
    request = deploy.DeployRequest(host=double.host, user=double.user, port=double.port, tag=sha, registry=REGISTRY,
                                   remote_dir=str(stack), force=True)
    with deploy.secret_files(double.client_key, double.known_hosts) as (key, hosts):
        result = deploy.run(request, key, hosts, None)
    assert result.outcome == "deployed"  # the lie itself is believed: a hostile host can lie, not exhaust the client
    # The caps, as numbers (ci/deploy.py: MAX_LOG_LINES, MAX_LINE): the newest 5,000 lines, 4,000 bytes each.
    assert 4000 <= len(result.log) <= 5000, len(result.log)
    assert max(len(line) for line in result.log) <= 4000 + len("host| ") + 1


# --- item 7: the registry password does not outlive a killed job --------------------------------

@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    yield from start_sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture
def real_stack(sshd: RunningSshd) -> Iterator[pathlib.Path]:
    remote = make_stack(sshd, "hardening-real")
    yield remote
    remove_stack(remote)


def test_a_job_killed_while_waiting_for_the_lock_leaves_no_registry_auth(sshd: RunningSshd, real_stack: pathlib.Path,
                                                                         tag_repo: tuple[pathlib.Path, str]) -> None:
    """SIGKILL (no trap runs) while the job waits for the lock: no docker config with the
    registry auth exists then or after. And a config left by a job that no longer runs (killed
    during its pull, or by an older version of the script) is removed by the next start."""
    repo, sha = tag_repo
    auth = base64.b64encode(f"ci-user:{SECRETS['REGISTRY_PASSWORD']}".encode()).decode()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = real_stack / ".deploy" / "jobs" / "20000101T000000Z-deadbeef"
    (stale / "docker").mkdir(parents=True)
    (stale / "docker" / "config.json").write_text('{"auths": {"x": {"auth": "c3RhbGU6c3RhbGU="}}}')
    (stale / "pid").write_text(f"{dead.pid}\n")
    subprocess.run(["chown", "-R", f"{sshd.user}:{sshd.user}", str(real_stack / ".deploy")], check=True)
    holder = hold_lock(real_stack, sshd, 120)
    try:
        before = job_names(real_stack)
        client = subprocess.Popen(deploy_argv(sshd, real_stack, sha, repo, "--lock-wait", "100"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=cli_env(sshd))

        def waiting() -> bool:
            job = newest_job(real_stack)
            return job is not None and job.name not in before and "waiting" in log_of(job)

        wait_for(waiting, 60, "the job to wait for the lock")
        job = newest_job(real_stack)
        assert job is not None
        assert not (job / "docker" / "config.json").exists(), "the registry auth is on disk while the job waits"
        assert not (stale / "docker").exists(), "the stale config of a dead job was not swept at start"
        os.killpg(int((job / "pid").read_text()), signal.SIGKILL)
        client.communicate(timeout=120)
        leftovers = subprocess.run(["grep", "-rl", auth, str(real_stack)], capture_output=True, text=True).stdout
        assert leftovers == "" and not list(real_stack.glob(".deploy/jobs/*/docker/config.json"))
    finally:
        release(holder)


# --- item 8 and item 9: output paths and inputs are checked before ssh ---------------------------

def test_an_unwritable_summary_file_is_refused_before_anything_runs(sshd: RunningSshd, real_stack: pathlib.Path,
                                                                    tag_repo: tuple[pathlib.Path, str], tmp_path: pathlib.Path,
                                                                    ssh_spy: pathlib.Path) -> None:
    repo, sha = tag_repo
    missing = tmp_path / "no-such-dir" / "summary.md"
    result = subprocess.run(deploy_argv(sshd, real_stack, sha, repo, "--summary-file", str(missing)), capture_output=True,
                            text=True, env=cli_env(sshd, ssh_spy), timeout=120)
    assert (result.returncode, result.stderr) == (2, f"error: --summary-file: directory {missing.parent} does not exist\n")
    as_env = subprocess.run(deploy_argv(sshd, real_stack, sha, repo), capture_output=True, text=True, timeout=120,
                            env=cli_env(sshd, ssh_spy, GITHUB_STEP_SUMMARY=str(tmp_path)))
    assert (as_env.returncode, as_env.stderr) == (2, f"error: $GITHUB_STEP_SUMMARY: {tmp_path} is not a regular file\n")
    assert spy_envs(ssh_spy) == [] and not (real_stack / ".deploy").exists()


def test_an_out_path_that_is_a_file_is_refused_before_anything_runs(sshd: RunningSshd, real_stack: pathlib.Path,
                                                                   tag_repo: tuple[pathlib.Path, str], tmp_path: pathlib.Path,
                                                                   ssh_spy: pathlib.Path) -> None:
    """`python -m ci.deploy` (the Dagger function's entry point) with --out naming an existing file."""
    repo, sha = tag_repo
    key_file, hosts_file, out = tmp_path / "key", tmp_path / "known_hosts", tmp_path / "out"
    key_file.write_text(sshd.client_key)
    hosts_file.write_text(sshd.known_hosts)
    out.write_text("a file, not a directory\n")
    env = {**cli_env(sshd, ssh_spy), "DEPLOY_SSH_KEY_FILE": str(key_file), "DEPLOY_KNOWN_HOSTS_FILE": str(hosts_file)}
    argv = [sys.executable, "-m", "ci.deploy", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user, "--tag", sha,
            "--registry", REGISTRY, "--remote-dir", str(real_stack), "--repo", str(repo), "--out", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert (result.returncode, result.stderr) == (2, f"error: --out: {out} exists and is not a directory\n")
    assert spy_envs(ssh_spy) == [] and not (real_stack / ".deploy").exists()


LONG = "a" * 120_000


@pytest.mark.parametrize(("argument", "value", "expected"), [
    ("--username", b"ci-\xff-user", "error: --username: is not valid UTF-8"),
    ("--username", "user:name", "error: --username: must be printable ASCII without spaces or ':'"),
    ("--registry", LONG, "error: --registry: is too long (120000 characters, at most 255)"),
    ("--compose-file", LONG, "error: --compose-file: is too long (120000 characters, at most 4096)"),
    ("--repo", LONG, "error: --repo: is too long (120000 characters, at most 4096)"),
    ("--remote-dir", "/srv/x\r\nresult: deployed", "error: --remote-dir: contains control characters (CR, LF, NUL, ...)"),
    ("--host", "--help", "error: --host: '--help' is not a host name or address"),
    ("--host", "-x", "error: --host: '-x' is not a host name or address"),
    ("REGISTRY_PASSWORD", b"pw-\xff\xfe", "error: $REGISTRY_PASSWORD: is not valid UTF-8"),
    ("REGISTRY_PASSWORD", "p" * 9000, "error: $REGISTRY_PASSWORD: is too long (9000 characters, at most 8192)"),
    ("REGISTRY_PASSWORD", "pw\nsecond-line", "error: $REGISTRY_PASSWORD: contains control characters (CR, LF, NUL, ...) "
                                              "(the value is not shown)"),
])
def test_bad_input_is_one_line_exit_2_before_ssh(sshd: RunningSshd, real_stack: pathlib.Path, tag_repo: tuple[pathlib.Path, str],
                                                 ssh_spy: pathlib.Path, argument: str, value: str | bytes, expected: str) -> None:
    repo, sha = tag_repo
    argv = [os.fsencode(arg) for arg in deploy_argv(sshd, real_stack, sha, repo)]
    env = {os.fsencode(k): os.fsencode(v) for k, v in cli_env(sshd, ssh_spy).items()}
    raw = value if isinstance(value, bytes) else value.encode()
    if argument.startswith("--"):
        argv[argv.index(argument.encode()) + 1] = raw
    else:
        env[argument.encode()] = raw
    result = subprocess.run(argv, capture_output=True, env=env, timeout=120)
    stderr = result.stderr.decode("utf-8", "replace")
    assert (result.returncode, stderr) == (2, expected + "\n")
    assert spy_envs(ssh_spy) == [] and not (real_stack / ".deploy").exists()
    if argument == "REGISTRY_PASSWORD" and isinstance(value, str):
        assert value not in stderr

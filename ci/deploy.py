"""Deploy over SSH with Docker Compose: validate, check the order, start the host's job, follow it.

deploy/remote-deploy.sh travels with its settings on ssh's standard input (`ssh host bash -s`),
so the registry password is never in argv on either side. Host keys are always checked
against the known_hosts given (StrictHostKeyChecking=yes).

The host runs the deploy as a detached job with its own log and status: once it has said
"accepted", whatever happens to this client or its connection, the host finishes (deployed
or rolled back). This client follows the job's log, reconnects when the connection drops,
and reports the job's final state. Keep-alives notice a silent network loss in seconds.

Exit codes (and `DeployResult.exit_code`): 0 deployed; 1 failed (rolled back, or a first
deploy stopped); 2 refused, nothing changed; 3 the rollback failed too (a person is needed);
4 the outcome is unknown (contact lost; the host finishes on its own: `deploy-status`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import re
import secrets
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from . import deploy_order, tags
from .errors import InputError

_HERE = pathlib.Path(__file__).resolve().parent
# The repository's deploy/remote-deploy.sh; an installed wheel carries a copy next to this file.
SCRIPT = next((p for p in (_HERE.parent / "deploy" / "remote-deploy.sh", _HERE / "remote-deploy.sh") if p.is_file()),
              _HERE.parent / "deploy" / "remote-deploy.sh")
# Host name labels never start or end with '-': a value such as `--help` or `-x` is no host.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\])$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_PIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENVIRONMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TRACK = re.compile(r"^[\x21-\x7e]{1,300}$")
# A registry user name: printable ASCII without spaces or ':' (it becomes `user:password` auth).
_REGISTRY_USER = re.compile(r"^[\x21-\x39\x3b-\x7e]{1,256}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The longest value each request field takes (a 120k-character value is refused, not a traceback).
_LIMITS = {"host": ("--host", 253), "user": ("--user", 32), "tag": ("--tag", 128), "registry": ("--registry", 255),
           "remote_dir": ("--remote-dir", 1024), "username": ("--username", 256), "project": ("--project", 64),
           "commit": ("--commit", 40), "environment": ("--environment", 64), "smoke_track": ("--smoke-track", 300)}

DEPLOYED, FAILED, REFUSED, ROLLBACK_FAILED, UNKNOWN = 0, 1, 2, 3, 4
# ssh's exit 255 with one of these means the session never started: nothing ran remotely.
_BEFORE_SESSION = re.compile(r"Host key verification failed|Permission denied|Could not resolve hostname|"
                             r"Connection refused|No route to host|Network is unreachable|banner exchange|"
                             r"kex_exchange_identification|Load key|invalid format|error in libcrypto|"
                             r"UNPROTECTED PRIVATE KEY|Too many authentication failures|Connection timed out$")
# Seconds between keep-alives, and how many may go unanswered: a dead link is noticed in 15 s.
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 3


@dataclasses.dataclass(frozen=True)
class Pin:
    """Run REPOSITORY:TAG@DIGEST for image NAME (the digest the build produced)."""

    name: str
    repository: str
    digest: str

    def __post_init__(self) -> None:
        if not _PIN_NAME.match(self.name) or not _REPOSITORY.match(self.repository):
            raise InputError("--digest", f"{self.name!r}/{self.repository!r} is not an image name and repository")
        if not _DIGEST.match(self.digest):
            raise InputError("--digest", f"{self.digest!r} is not sha256:<64 hex>")


def parse_pins(values: Iterable[str], repositories: dict[str, str]) -> tuple[Pin, ...]:
    """`NAME=sha256:...` values; NAME is an image name (repositories maps names to registry repositories)."""
    pins = []
    for value in values:
        name, sep, digest = value.partition("=")
        if not sep or name not in repositories:
            raise InputError("--digest", f"{value!r} is not NAME=sha256:... with NAME one of {', '.join(sorted(repositories))}")
        pins.append(Pin(name, repositories[name], digest))
    if len({p.name for p in pins}) != len(pins):
        raise InputError("--digest", "an image is pinned twice")
    return tuple(pins)


@dataclasses.dataclass(frozen=True)
class DeployRequest:
    host: str
    user: str
    tag: str
    registry: str
    remote_dir: str
    port: int = 22
    username: str = ""
    timeout: int = 180
    lock_wait: int = 600
    project: str = ""
    commit: str = ""  # the commit the tag was built from (default: the tag, when it is a SHA)
    pins: tuple[Pin, ...] = ()
    force: bool = False
    pull_timeout: int = 900
    environment: str = "production"
    smoke_track: str = ""

    def __post_init__(self) -> None:
        for field, (argument, limit) in _LIMITS.items():
            check_text(argument, getattr(self, field), limit)
        if not _HOST.match(self.host):
            raise InputError("--host", f"{self.host!r} is not a host name or address")
        if not _USER.match(self.user):
            raise InputError("--user", f"{self.user!r} is not a valid user name")
        if not 1 <= self.port <= 65535:
            raise InputError("--port", f"must be 1-65535, got {self.port}")
        tags.validate_tag(self.tag, "--tag")
        tags.validate_registry(self.registry)
        if not self.remote_dir.startswith("/") or ".." in self.remote_dir.split("/"):
            raise InputError("--remote-dir", f"must be an absolute path without '..', got {self.remote_dir!r}")
        if not 10 <= self.timeout <= 3600:
            raise InputError("--timeout", f"seconds between 10 and 3600, got {self.timeout}")
        if not 0 <= self.lock_wait <= 7200:
            raise InputError("--lock-wait", f"seconds between 0 and 7200, got {self.lock_wait}")
        if not 10 <= self.pull_timeout <= 7200:
            raise InputError("--pull-timeout", f"seconds between 10 and 7200, got {self.pull_timeout}")
        if self.project and not _PROJECT.match(self.project):
            raise InputError("--project", f"{self.project!r} is not a compose project name")
        if self.commit:
            tags.validate_sha(self.commit, "--commit")
        if not _ENVIRONMENT.match(self.environment):
            raise InputError("--environment", f"{self.environment!r} is not an environment name")
        if self.smoke_track and not TRACK.match(self.smoke_track):
            raise InputError("--smoke-track", "must be one printable word without spaces")
        if self.username and not _REGISTRY_USER.match(self.username):
            raise InputError("--username", "must be printable ASCII without spaces or ':'")

    @property
    def deployed_commit(self) -> str:
        """The commit this deploy records on the host (the tag itself when no commit is given)."""
        return self.commit or self.tag

    @property
    def budget(self) -> float:
        """Seconds the host may need: lock wait, pull, roll-out and rollback, plus slack."""
        return self.lock_wait + self.pull_timeout + 2 * self.timeout + 300


def check_text(argument: str, value: str, limit: int, secret: bool = False) -> str:
    """One line of valid UTF-8, at most `limit` characters, or InputError naming `argument`.

    The value itself is never quoted (it may be a secret, or 120,000 characters long).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(argument, "is not valid UTF-8") from None
    if len(value) > limit:
        raise InputError(argument, f"is too long ({len(value)} characters, at most {limit})")
    if _CONTROL_CHARS.search(value):
        raise InputError(argument, "contains control characters (CR, LF, NUL, ...)" + (" (the value is not shown)" if secret else ""))
    return value


def check_secret_text(argument: str, value: str, limit: int = 64 * 1024) -> str:
    """A multi-line secret (an SSH key, known_hosts lines): valid UTF-8, at most `limit` characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(argument, "is not valid UTF-8 (the value is not shown)") from None
    if len(value) > limit:
        raise InputError(argument, f"is too long ({len(value)} characters, at most {limit})")
    return value


def normalise_key(text: str) -> str:
    """An SSH private key as OpenSSH reads it: LF line ends and a final newline.

    A secret pasted without its trailing newline (or with CRLF) makes OpenSSH fail with
    "error in libcrypto"; both skins pass keys through here.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    return "\n".join(line.strip() for line in lines) + "\n"


@dataclasses.dataclass(frozen=True)
class HostState:
    """What the host runs (its `.deploy/state`), as `status` reports it."""

    tag: str
    commit: str
    pins: str
    last_job: str
    last_result: str

    @classmethod
    def parse(cls, lines: Iterable[str]) -> HostState:
        fields: dict[str, str] = {}
        for line in lines:
            key, sep, value = line.partition(": ")
            if sep:
                fields.setdefault(key, clean(value, 1000))
        return cls(fields.get("deployed tag", "none"), fields.get("deployed commit", "none"),
                   fields.get("deployed pins", ""), fields.get("last job", "none"), fields.get("last job result", ""))


@dataclasses.dataclass(frozen=True)
class DeployResult:
    exit_code: int
    report: dict[str, str]
    services: dict[str, str]
    log: list[str]
    job: str = ""
    ssh_error: str = ""
    order: str = ""

    @property
    def outcome(self) -> str:
        return self.report.get("result", "unknown")

    @property
    def ok(self) -> bool:
        return self.exit_code == DEPLOYED

    @property
    def rolled_back(self) -> bool:
        return self.outcome == "rolled back"

    def summary(self) -> str:
        lines = [f"job: {self.job}"] if self.job else []
        lines += [f"{k}: {v}" for k, v in self.report.items() if k != "exit"]
        lines += [f"service {k}: {v}" for k, v in self.services.items()]
        if self.order:
            lines.append(f"order: {self.order}")
        return "\n".join(lines)


_REPORT_KEYS = ("old tag", "new tag", "rolled back", "result", "reason", "stale", "exit")

# What the host sends is untrusted text: a container's output reaches the job log, the job log
# reaches this client, and this client prints it to a terminal or a CI log.
HOST_PREFIX = "host| "
MAX_LINE = 4000  # bytes of one host line kept (the rest of a longer line is dropped)
MAX_LOG_LINES = 5000  # job log lines kept in memory (the newest)
MAX_OTHER_LINES = 500  # other stdout lines kept (the newest)
MAX_REPORT_LINES = 200  # lines of the final status block
MAX_STDERR = 64 * 1024  # bytes of ssh's stderr kept (the newest)
# Terminal escape sequences (CSI, OSC, DCS/PM/APC strings, two-byte ESC codes, 8-bit CSI).
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[ -~]?)"
                     r"|\x9b[0-?]*[ -/]*[@-~]?")
# Other control characters, and the invisible ones that reorder or hide text (bidi overrides).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def clean(text: str, limit: int = MAX_LINE) -> str:
    """Host text made inert for a terminal and a CI log: no escape sequences, no control characters
    (each becomes a space), no `##[` (GitHub's old workflow-command syntax works anywhere in a line),
    at most `limit` characters."""
    text = _UNSAFE.sub(" ", _ESCAPE.sub("", text).replace("\t", " ")).replace("##[", "# #[")
    return text if len(text) <= limit else text[:limit] + "…"


def host_line(text: str) -> str:
    """A line the host sent, as printed: cleaned and prefixed, so it never starts a workflow command
    (`::warning::`, `::add-mask::` only act at the start of a line) and is never taken for ours."""
    return HOST_PREFIX + clean(text)


def parse_report(lines: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Report keys from the lines of one final status block; the first value of a key wins, values cleaned."""
    report: dict[str, str] = {}
    services: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key.startswith("service "):
            services.setdefault(clean(key.removeprefix("service "), 100), clean(value, 1000))
        elif key in _REPORT_KEYS:
            report.setdefault(key, clean(value, 2000))
    return report, services


def ssh_argv(request: DeployRequest, key_file: pathlib.Path, known_hosts: pathlib.Path) -> list[str]:
    """ssh with no configuration but this: `-F /dev/null` skips ~/.ssh/config and /etc/ssh/ssh_config
    (and everything they include), and each option that could forward, proxy, run a local command,
    use an agent or trust another source of host keys is set here as well."""
    return ["ssh", "-F", "/dev/null", "-T", "-a", "-x", "-i", str(key_file), "-p", str(request.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "GSSAPIAuthentication=no",
            "-o", "HostbasedAuthentication=no",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "KnownHostsCommand=none", "-o", "UpdateHostKeys=no", "-o", "VerifyHostKeyDNS=no", "-o", "CheckHostIP=no",
            "-o", "ForwardAgent=no", "-o", "ForwardX11=no", "-o", "ForwardX11Trusted=no", "-o", "ClearAllForwardings=yes",
            "-o", "Tunnel=no", "-o", "PermitLocalCommand=no", "-o", "ProxyCommand=none", "-o", "ProxyJump=none",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "CanonicalizeHostname=no",
            "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
            "-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL}", "-o", f"ServerAliveCountMax={KEEPALIVE_COUNT}",
            f"{request.user}@{request.host}", "bash -s"]


def ssh_environment() -> dict[str, str]:
    """All ssh gets from this process's environment: no agent socket, no secret, no DISPLAY."""
    return {"PATH": os.environ.get("PATH") or os.defpath, "HOME": os.environ.get("HOME") or "/", "LANG": "C", "LC_ALL": "C"}


def payload(request: DeployRequest, action: str, job: str = "", password: str | None = None,
            compose_text: str | None = None, expect_commit: str | None = None, log_from: int = 0,
            script: str | None = None, nonce: str = "") -> str:
    """What `bash -s` reads: the settings as shell assignments, then the script."""
    settings = {
        "DEPLOY_ACTION": action, "DEPLOY_DIR": request.remote_dir, "DEPLOY_JOB": job, "DEPLOY_TAG": request.tag,
        "DEPLOY_COMMIT": request.deployed_commit, "DEPLOY_REGISTRY": request.registry,
        "DEPLOY_PINS": "\n".join(f"{p.name} {p.repository} {p.digest}" for p in request.pins),
        "DEPLOY_EXPECT_COMMIT": "" if expect_commit is None else expect_commit,
        "DEPLOY_FORCE": "1" if request.force else "0",
        "DEPLOY_REGISTRY_USERNAME": request.username, "DEPLOY_REGISTRY_PASSWORD": password or "",
        "DEPLOY_TIMEOUT": str(request.timeout), "DEPLOY_PULL_TIMEOUT": str(request.pull_timeout),
        "DEPLOY_LOCK_WAIT": str(request.lock_wait), "DEPLOY_PROJECT": request.project,
        "DEPLOY_COMPOSE_FILE": compose_text or "", "DEPLOY_LOG_FROM": str(log_from),
        "DEPLOY_SMOKE_TRACK": request.smoke_track, "DEPLOY_NONCE": nonce,
    }
    # Plain shell variables, not exported: no process the script starts inherits them. The
    # script hands the password to the job on a pipe, the smoke track to one `compose exec`
    # in its environment, and frames its final report with the nonce.
    private = ("DEPLOY_REGISTRY_PASSWORD", "DEPLOY_SMOKE_TRACK", "DEPLOY_NONCE")
    lines = [f"{'' if key in private else 'export '}{key}={shlex.quote(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n" + (script if script is not None else SCRIPT.read_text())


@dataclasses.dataclass
class _Call:
    code: int
    stdout: list[str]  # lines outside the report block and the log (the newest MAX_OTHER_LINES), cleaned
    stderr: str
    accepted: bool
    log_lines: int
    report: list[str] | None = None  # the last complete status block framed with this call's nonce


def _lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines (split at LF only: a CR is a character like any other) decoded with replacement; a
    line longer than MAX_LINE bytes is cut there and the rest of it dropped, never kept whole."""
    while True:
        chunk = stream.readline(MAX_LINE + 1)
        if not chunk:
            return
        if chunk.endswith(b"\n"):
            yield chunk[:-1].decode("utf-8", "replace")
            continue
        yield chunk[:MAX_LINE].decode("utf-8", "replace")
        while chunk and not chunk.endswith(b"\n"):
            chunk = stream.readline(MAX_LINE + 1)


def _ssh(argv: list[str], text: str, on_log: Callable[[str], None], timeout: float, nonce: str = "") -> _Call:
    """One ssh call: stream `log: ` lines to on_log (cleaned, prefixed) as they come, keep the
    report block framed by `report-begin: NONCE` / `report-end: NONCE`, collect a bounded rest."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=ssh_environment(), start_new_session=True)
    stdout: collections.deque[str] = collections.deque(maxlen=MAX_OTHER_LINES)
    stderr: collections.deque[bytes] = collections.deque()
    state: dict[str, object] = {"accepted": False, "log": 0, "report": None}
    begin, end = f"report-begin: {nonce}", f"report-end: {nonce}"

    def read_out() -> None:
        assert proc.stdout is not None
        block: list[str] | None = None
        for line in _lines(proc.stdout):
            if nonce and line == begin:
                block = []
            elif nonce and line == end and block is not None:
                state["report"], block = block, None
            elif block is not None:
                if len(block) < MAX_REPORT_LINES:
                    block.append(line)
            elif line.startswith("log: "):
                state["log"] = int(str(state["log"])) + 1
                on_log(host_line(line.removeprefix("log: ")))
            else:
                if line.startswith("accepted: "):
                    state["accepted"] = True
                if line.strip():
                    stdout.append(clean(line))

    def read_err() -> None:
        assert proc.stderr is not None
        size = 0
        while chunk := os.read(proc.stderr.fileno(), 8192):
            stderr.append(chunk)
            size += len(chunk)
            while size > MAX_STDERR and len(stderr) > 1:
                size -= len(stderr.popleft())

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    notes: list[str] = []
    try:
        code = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        notes.append(f"no final report within {timeout:.0f}s")
        code = 255
    for reader in readers:
        reader.join(timeout=5)
    if code < 0:  # ssh itself was killed: for this client, the connection is gone
        notes.append(f"ssh ended by signal {-code}")
        code = 255
    err_text = "\n".join([clean(line) for line in b"".join(stderr).decode("utf-8", "replace").splitlines()] + notes)
    report = state["report"]
    return _Call(code, list(stdout), err_text, bool(state["accepted"]), int(str(state["log"])),
                 report if isinstance(report, list) else None)


class Client:
    """A deploy client for one host: the ssh settings, secrets on files, and a log sink."""

    def __init__(self, request: DeployRequest, key_file: pathlib.Path, known_hosts: pathlib.Path,
                 on_log: Callable[[str], None] = lambda line: None) -> None:
        if not known_hosts.is_file() or not known_hosts.read_text().strip():
            raise InputError("--known-hosts", "is empty: host key checking is always on")
        self.request = request
        self.argv = ssh_argv(request, key_file, known_hosts)
        self.on_log = on_log

    def call(self, action: str, timeout: float, **settings: object) -> _Call:
        """One ssh call; its final report is framed with a nonce new to this call (no container
        output, no earlier log line can carry it)."""
        nonce = secrets.token_hex(16)
        text = payload(self.request, action, nonce=nonce, **settings)  # type: ignore[arg-type]
        return _ssh(self.argv, text, self.on_log, timeout, nonce=nonce)

    def status(self) -> tuple[HostState | None, str]:
        call = self.call("status", timeout=60)
        if call.code != 0:
            reason = parse_report(call.report or [])[0].get("reason", "")
            return None, reason or last_line(call.stderr) or last_line("\n".join(call.stdout))
        if call.report is None:
            return None, "the host sent no framed status report"
        return HostState.parse(call.report), ""

    def follow(self, job: str, log_from: int, deadline: float, reconnect_for: float) -> tuple[_Call | None, int, str]:
        """Follow job to its end, reconnecting while the link is down. Returns (final call, log lines, last ssh error)."""
        error = ""
        lost_since = time.monotonic()
        delay = 1.0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, log_from, error or "the client's deadline passed"
            call = self.call("follow", timeout=remaining, job=job, log_from=log_from)
            log_from += call.log_lines
            if call.code != 255:
                return call, log_from, ""
            error = last_line(call.stderr)
            if call.log_lines:
                lost_since = time.monotonic()
            if time.monotonic() - lost_since > reconnect_for:
                return None, log_from, error
            self.on_log(f"(connection lost: {error}; reconnecting)")
            time.sleep(delay)
            delay = min(delay * 2, 15)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def run(request: DeployRequest, key_file: pathlib.Path, known_hosts: pathlib.Path, password: str | None,
        compose_text: str | None = None, repo: pathlib.Path | None = None,
        on_log: Callable[[str], None] = lambda line: None, timeout: float | None = None,
        reconnect_for: float = 300) -> DeployResult:
    """Deploy: read the host's state, check the order, start the job, follow it to its end."""
    client = Client(request, key_file, known_hosts, on_log)
    deadline = time.monotonic() + (timeout or request.budget)
    order_text = ""
    for _attempt in range(3):
        expect: str | None = None
        if not request.force:
            state, error = client.status()
            if state is None:
                return DeployResult(REFUSED, {"result": "refused", "reason": f"ssh failed before anything ran remotely: {error}"},
                                    {}, [], ssh_error=error)
            order = deploy_order.check(repo, state.commit, request.deployed_commit)
            order_text = order.reason()
            if not order.allowed:
                return DeployResult(REFUSED, {"result": "refused", "reason": f"out of order: {order.reason()}; "
                                              "deploy it anyway with --force"}, {}, [], order=order_text)
            expect = state.commit
        else:
            order_text = "not checked (--force)"
        job = new_job_id()
        log: list[str] = []  # the newest MAX_LOG_LINES lines only: a host can send without end

        def sink(line: str, log: list[str] = log) -> None:
            log.append(line)
            if len(log) > 2 * MAX_LOG_LINES:
                del log[:-MAX_LOG_LINES]
            on_log(line)

        client.on_log = sink
        first = client.call("start", timeout=deadline - time.monotonic(), job=job, password=password,
                            compose_text=compose_text, expect_commit=expect)
        final: _Call | None = first
        error = ""
        if first.code == 255:
            error = last_line(first.stderr)
            if not first.accepted and _BEFORE_SESSION.search(error):
                return DeployResult(REFUSED, {"result": "refused", "reason": f"ssh failed before anything ran remotely: {error}"},
                                    {}, log, ssh_error=error)
            client.on_log(f"(connection lost: {error or 'no message'}; reconnecting to follow job {job})")
            final, _, error = client.follow(job, first.log_lines, deadline, reconnect_for)
        if final is None:
            reason = (f"lost contact with the host ({error}); the host finishes job {job} on its own, deployed or "
                      f"rolled back: see `dimbybot-ci deploy-status`")
            return DeployResult(UNKNOWN, {"result": "unknown", "reason": reason}, {}, log, job=job, ssh_error=error, order=order_text)
        report, services = parse_report(final.report or [])
        if report.get("stale") == "yes":
            on_log("the host's deployed commit changed while this deploy waited; checking the order again")
            continue
        code = final.code if final.code in (DEPLOYED, FAILED, REFUSED, ROLLBACK_FAILED, UNKNOWN) else UNKNOWN
        if "result" not in report:
            report = {"result": "unknown", "reason": last_line(final.stderr) or f"remote exit {final.code} without a report"}
            code = UNKNOWN
        return DeployResult(code, report, services, log[-MAX_LOG_LINES:], job=job, order=order_text)
    return DeployResult(REFUSED, {"result": "refused", "reason": "the host's deployed commit kept changing; try again"}, {}, [],
                        order=order_text)


def status(request: DeployRequest, key_file: pathlib.Path, known_hosts: pathlib.Path) -> tuple[HostState | None, str]:
    return Client(request, key_file, known_hosts).status()


@contextmanager
def secret_files(key: str, known_hosts: str) -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """The private key (normalised) and known_hosts as 0600 files in a private directory, removed after."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="dimbybot-ssh-"))
    try:
        directory.chmod(0o700)
        key_file, hosts_file = directory / "id", directory / "known_hosts"
        for path, text in ((key_file, normalise_key(key)), (hosts_file, known_hosts if known_hosts.endswith("\n") else known_hosts + "\n")):
            path.touch(mode=0o600)
            path.write_text(text)
        yield key_file, hosts_file
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


if __name__ == "__main__":
    import sys

    from .deploy_cli import main

    sys.exit(main(sys.argv[1:]))

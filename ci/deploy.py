"""Deploy over SSH with Docker Compose: validate, then run deploy/remote-deploy.sh remotely.

The remote script and its settings travel on ssh's standard input (`ssh host bash -s`), so
the registry password is never in argv on either side. Host keys are always checked
against the known_hosts given (StrictHostKeyChecking=yes): an unknown or changed host key
ends the deploy before anything runs remotely.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from . import tags
from .errors import InputError

_HERE = pathlib.Path(__file__).resolve().parent
# The repository's deploy/remote-deploy.sh; an installed wheel carries a copy next to this file.
SCRIPT = next((p for p in (_HERE.parent / "deploy" / "remote-deploy.sh", _HERE / "remote-deploy.sh") if p.is_file()),
              _HERE.parent / "deploy" / "remote-deploy.sh")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\])$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


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

    def __post_init__(self) -> None:
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
        if self.project and not _PROJECT.match(self.project):
            raise InputError("--project", f"{self.project!r} is not a compose project name")


@dataclasses.dataclass(frozen=True)
class DeployResult:
    exit_code: int
    report: dict[str, str]
    services: dict[str, str]
    output: str
    stderr: str

    @property
    def outcome(self) -> str:
        if self.exit_code == 255:
            return "ssh failed"
        return self.report.get("result", "unknown")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.outcome == "deployed"

    def summary(self) -> str:
        if self.exit_code == 255:
            return f"deploy: ssh failed before anything ran remotely: {self.stderr.strip().splitlines()[-1:] or ['no output']}"
        lines = [f"{k}: {v}" for k, v in self.report.items()]
        lines += [f"service {k}: {v}" for k, v in self.services.items()]
        return "\n".join(lines)


def payload(request: DeployRequest, password: str | None, compose_text: str | None, script: str | None = None) -> str:
    """What `bash -s` reads: the settings as shell assignments, then the script."""
    settings = {
        "DEPLOY_DIR": request.remote_dir, "DEPLOY_TAG": request.tag, "DEPLOY_REGISTRY": request.registry,
        "DEPLOY_REGISTRY_USERNAME": request.username, "DEPLOY_REGISTRY_PASSWORD": password or "",
        "DEPLOY_TIMEOUT": str(request.timeout), "DEPLOY_LOCK_WAIT": str(request.lock_wait),
        "DEPLOY_PROJECT": request.project, "DEPLOY_COMPOSE_FILE": compose_text or "",
    }
    # The password is a plain shell variable, not exported: no process the script starts
    # (docker login reads it from a pipe) inherits it in its environment.
    lines = [f"{'' if key == 'DEPLOY_REGISTRY_PASSWORD' else 'export '}{key}={shlex.quote(value)}"
             for key, value in settings.items()]
    return "\n".join(lines) + "\n" + (script if script is not None else SCRIPT.read_text())


def ssh_argv(request: DeployRequest, key_file: pathlib.Path, known_hosts: pathlib.Path) -> list[str]:
    return ["ssh", "-T", "-i", str(key_file), "-p", str(request.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
            f"{request.user}@{request.host}", "bash -s"]


def parse_report(output: str) -> tuple[dict[str, str], dict[str, str]]:
    report: dict[str, str] = {}
    services: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key.startswith("service "):
            services[key.removeprefix("service ")] = value
        elif key in ("old tag", "new tag", "rolled back", "result", "reason"):
            report[key] = value
    return report, services


@contextmanager
def secret_files(key: str, known_hosts: str) -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """The private key and known_hosts as 0600 files in a private directory, removed after."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="dimbybot-ssh-"))
    try:
        directory.chmod(0o700)
        key_file, hosts_file = directory / "id", directory / "known_hosts"
        for path, text in ((key_file, key), (hosts_file, known_hosts)):
            path.touch(mode=0o600)
            path.write_text(text if text.endswith("\n") else text + "\n")
        yield key_file, hosts_file
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def run(request: DeployRequest, key_file: pathlib.Path, known_hosts: pathlib.Path, password: str | None,
        compose_text: str | None = None, timeout: float | None = None) -> DeployResult:
    if not known_hosts.is_file() or not known_hosts.read_text().strip():
        raise InputError("--known-hosts", "is empty: host key checking is always on")
    proc = subprocess.run(ssh_argv(request, key_file, known_hosts), input=payload(request, password, compose_text),
                          capture_output=True, text=True, timeout=timeout or request.timeout + request.lock_wait + 300,
                          env={**os.environ, "LC_ALL": "C"})
    report, services = parse_report(proc.stdout)
    return DeployResult(proc.returncode, report, services, proc.stdout, proc.stderr)


def main(argv: list[str]) -> int:
    """`python -m ci.deploy HOST USER PORT TAG REGISTRY REMOTE_DIR [USERNAME]`, inside the pipeline.

    Secrets come from files and the environment, never argv: the key at $DEPLOY_SSH_KEY_FILE,
    known_hosts at $DEPLOY_KNOWN_HOSTS_FILE, the registry password in $REGISTRY_PASSWORD, the
    compose file at $DEPLOY_COMPOSE_PATH (optional). Prints the report; exit 0 deployed,
    1 failed or rolled back, 2 refused (bad input, unknown host key, registry login).
    """
    import sys

    if not 6 <= len(argv) <= 7:
        print("usage: python -m ci.deploy HOST USER PORT TAG REGISTRY REMOTE_DIR [USERNAME]", file=sys.stderr)
        return 2
    try:
        host, user, port, tag, registry, remote_dir, *rest = argv
        if not port.isdigit():
            raise InputError("--port", f"must be a number, got {port!r}")
        request = DeployRequest(host=host, user=user, port=int(port), tag=tag, registry=registry, remote_dir=remote_dir,
                                username=rest[0] if rest else "", timeout=int(os.environ.get("DEPLOY_TIMEOUT", "180")))
        compose_path = os.environ.get("DEPLOY_COMPOSE_PATH")
        result = run(request, pathlib.Path(os.environ["DEPLOY_SSH_KEY_FILE"]), pathlib.Path(os.environ["DEPLOY_KNOWN_HOSTS_FILE"]),
                     os.environ.get("REGISTRY_PASSWORD"), pathlib.Path(compose_path).read_text() if compose_path else None)
    except (InputError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    if result.exit_code == 255:
        return 2
    return 0 if result.ok else (2 if result.outcome == "refused" else 1)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))

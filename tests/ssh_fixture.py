"""A real sshd on 127.0.0.1 (Debian's openssh-server) with a key-only user in the docker group.
Given an address, it listens there instead (a Dagger engine's containers reach the host on its
network's gateway: tests/test_engine_deploy.py); known_hosts names that address.

Needs root (CI runs as root): creates the user once, writes an authorized_keys file of this
sshd's own (so several can run at once), and runs a private sshd (own config, host key, port and
pid file) that is stopped afterwards, its authorized_keys removed.

`force_command`: an sshd `ForceCommand` (the original command is in $SSH_ORIGINAL_COMMAND): the
hostile-host and recording doubles of tests/test_deploy_hardening.py.
"""

from __future__ import annotations

import dataclasses
import pathlib
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

USER = "dimbydeploy"


@dataclasses.dataclass(frozen=True)
class RunningSshd:
    host: str
    port: int
    user: str
    home: pathlib.Path
    client_key: str  # private key text
    known_hosts: str  # "[ADDRESS]:PORT ssh-ed25519 ..."
    other_known_hosts: str  # a valid line for a different key: the wrong host key


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _keypair(directory: pathlib.Path, name: str) -> tuple[str, str]:
    path = directory / name
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path))
    return path.read_text(), (directory / f"{name}.pub").read_text().strip()


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def ensure_user() -> pathlib.Path:
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        _run("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker", USER)
        entry = pwd.getpwnam(USER)
    # With UsePAM no, sshd refuses a user whose password field says "locked" ('!').
    _run("usermod", "-p", "*", USER)
    _run("usermod", "-aG", "docker", USER)
    return pathlib.Path(entry.pw_dir)


def start_sshd(directory: pathlib.Path, force_command: str | None = None, address: str = "127.0.0.1") -> Iterator[RunningSshd]:
    directory.mkdir(parents=True, exist_ok=True)
    home = ensure_user()
    client_key, client_pub = _keypair(directory, "client")
    _, host_pub = _keypair(directory, "host")
    _, other_pub = _keypair(directory, "other-host")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / f"authorized_keys-{uuid.uuid4().hex[:10]}"
    authorized.write_text(client_pub + "\n")
    authorized.chmod(0o600)
    shutil.chown(ssh_dir, USER, USER)
    shutil.chown(authorized, USER, USER)
    port = _free_port(address)
    config = directory / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress {address}
HostKey {directory / 'host'}
PidFile {directory / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
PermitRootLogin no
AllowUsers {USER}
AuthorizedKeysFile .ssh/{authorized.name}
""" + (f"ForceCommand {force_command}\n" if force_command else ""))
    pathlib.Path("/run/sshd").mkdir(exist_ok=True)
    _run("/usr/sbin/sshd", "-f", str(config), "-E", str(directory / "sshd.log"))
    try:
        for _ in range(50):
            with socket.socket() as sock:
                if sock.connect_ex((address, port)) == 0:
                    break
            time.sleep(0.1)
        key_type, key_body = host_pub.split()[:2]
        other_type, other_body = other_pub.split()[:2]
        yield RunningSshd(address, port, USER, home, client_key,
                          f"[{address}]:{port} {key_type} {key_body}\n", f"[{address}]:{port} {other_type} {other_body}\n")
    finally:
        pid_file = directory / "sshd.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
        authorized.unlink(missing_ok=True)

"""A real OCI registry on 127.0.0.1 (Debian's docker-registry, distribution 2.8) with
htpasswd authentication, for push, tag and cache tests. Given an address and a certificate,
it listens there over TLS instead: an outside registry as a Dagger engine's containers see one
(tests/dagger_engine.py)."""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

USER = "ci-user"
PASSWORD = "ci-pass-7f3a"


@dataclasses.dataclass
class RunningRegistry:
    host: str
    username: str
    password: str
    storage: pathlib.Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class ServerCertificate:
    """A server certificate and its key, for one address."""

    cert: pathlib.Path
    key: pathlib.Path


def _openssl(directory: pathlib.Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)


@dataclasses.dataclass(frozen=True)
class ThrowawayCA:
    """A throwaway CA (Debian's openssl): made first, so a Dagger engine can be started trusting
    it before the address of the registry it will sign for is known."""

    directory: pathlib.Path

    @property
    def cert(self) -> pathlib.Path:
        return self.directory / "ca.crt"

    @classmethod
    def make(cls, directory: pathlib.Path) -> ThrowawayCA:
        _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dimbybot2 test CA",
                 "-keyout", "ca.key", "-out", "ca.crt")
        (directory / "ca.crt").chmod(0o644)
        return cls(directory)

    def issue(self, address: str) -> ServerCertificate:
        """A server certificate for the IP `address`."""
        (self.directory / f"{address}.ext").write_text(f"subjectAltName=IP:{address}\nbasicConstraints=CA:FALSE\n")
        _openssl(self.directory, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={address}",
                 "-keyout", f"{address}.key", "-out", f"{address}.csr")
        _openssl(self.directory, "x509", "-req", "-in", f"{address}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{address}.ext", "-out", f"{address}.crt")
        return ServerCertificate(self.directory / f"{address}.crt", self.directory / f"{address}.key")


def start_registry(directory: pathlib.Path, address: str = "127.0.0.1",
                   certificate: ServerCertificate | None = None, ca: pathlib.Path | None = None) -> Iterator[RunningRegistry]:
    """The registry on `address` (over TLS with `certificate`, whose CA `ca` the readiness probe trusts)."""
    port = free_port()
    storage = directory / "storage"
    storage.mkdir(parents=True)
    htpasswd = directory / "htpasswd"
    # bcrypt cost 4: the registry checks the password on every request, and the default cost
    # would make this test double, not the code under test, dominate timings.
    line = subprocess.run(["htpasswd", "-Bbn", "-C", "4", USER, PASSWORD], capture_output=True, text=True, check=True).stdout
    htpasswd.write_text(line)
    config = directory / "config.yml"
    tls = f"  tls: {{certificate: {certificate.cert}, key: {certificate.key}}}\n" if certificate else ""
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}:{port}
{tls}auth:
  htpasswd:
    realm: dimbybot2-test
    path: {htpasswd}
""")
    log = (directory / "registry.log").open("w")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(ca)) if certificate else None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{'https' if certificate else 'http'}://{address}:{port}/v2/", timeout=1, context=context)
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"registry did not start: {(directory / 'registry.log').read_text()}")
        yield RunningRegistry(f"{address}:{port}", USER, PASSWORD, storage)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()

"""Azurite, Microsoft's Azure Blob Storage emulator (npm `azurite`, tests/tools), on 127.0.0.1.

GitHub's cache service keeps blobs in Azure Blob Storage and hands clients signed (SAS) URLs;
BuildKit then talks the Azure protocol itself (Put Block / Put Block List / Get Blob through
Microsoft's Go SDK). Azurite is the real protocol, so that half is not a stand-in.

SAS signing follows Azure's documented string-to-sign for service SAS (blob, sr=b) and account
SAS (signed version 2020-12-06 and later); the account and key are Azurite's documented
development account, public by design.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import hmac
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import Message

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (documented by Microsoft, not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SAS_VERSION = "2021-08-06"
TOOLS = pathlib.Path(__file__).resolve().parent.parent / "tools"
AZURITE_BLOB = TOOLS / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sign(string_to_sign: str) -> str:
    digest = hmac.new(base64.b64decode(ACCOUNT_KEY), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _utc(seconds_from_now: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Azurite:
    port: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"  # where it listens, and the address its signed URLs name

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT}"

    def blob_url(self, container: str, blob: str, permissions: str, lifetime: float = 3600) -> str:
        """A service SAS URL for one blob, like the ones GitHub hands out ("cw" upload, "r" download)."""
        start, expiry = _utc(-300), _utc(lifetime)
        resource = f"/blob/{ACCOUNT}/{container}/{blob}"
        fields = [permissions, start, expiry, resource, "", "", "http,https", SAS_VERSION, "b", "", "", "", "", "", "", ""]
        query = {"sv": SAS_VERSION, "spr": "http,https", "st": start, "se": expiry, "sr": "b", "sp": permissions,
                 "sig": _sign("\n".join(fields))}
        return f"{self.endpoint}/{container}/{urllib.parse.quote(blob)}?{urllib.parse.urlencode(query)}"

    def _account_sas(self) -> str:
        start, expiry = _utc(-300), _utc(3600)
        fields = [ACCOUNT, "rwdlac", "b", "sco", start, expiry, "", "http,https", SAS_VERSION, ""]
        query = {"sv": SAS_VERSION, "ss": "b", "srt": "sco", "sp": "rwdlac", "spr": "http,https", "st": start,
                 "se": expiry, "sig": _sign("\n".join(fields) + "\n")}
        return urllib.parse.urlencode(query)

    def _request(self, method: str, path: str, extra: str = "") -> tuple[int, Message]:
        url = f"{self.endpoint}/{path}?{extra + '&' if extra else ''}{self._account_sas()}"
        request = urllib.request.Request(url, method=method, headers={"x-ms-version": SAS_VERSION})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.headers

    def create_container(self, name: str) -> None:
        status, _ = self._request("PUT", name, "restype=container")
        if status not in (201, 409):
            raise RuntimeError(f"Azurite: creating container {name} answered {status}")

    def delete_blob(self, container: str, blob: str) -> bool:
        status, _ = self._request("DELETE", f"{container}/{urllib.parse.quote(blob)}")
        return status == 202

    def blob_size(self, container: str, blob: str) -> int | None:
        status, headers = self._request("HEAD", f"{container}/{urllib.parse.quote(blob)}")
        return int(headers.get("Content-Length", "0")) if status == 200 else None


def start_azurite(directory: pathlib.Path, host: str = "127.0.0.1") -> Iterator[Azurite]:
    """Run azurite-blob on a free port of `host` with its data in `directory` (generator: stops it on close)."""
    if not AZURITE_BLOB.exists():
        raise RuntimeError(f"{AZURITE_BLOB} missing: run `npm ci --prefix tests/tools`")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (directory / "azurite.log").open("wb")
    # --disableTelemetry: otherwise Azurite tries to reach Microsoft's telemetry service.
    process = subprocess.Popen(
        ["node", str(AZURITE_BLOB), "--blobHost", host, "--blobPort", str(port), "--location", str(directory),
         "--disableTelemetry", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    azurite = Azurite(port, process, host)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Azurite did not start: {(directory / 'azurite.log').read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield azurite
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()

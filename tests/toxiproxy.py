"""Shopify's toxiproxy, built from its Go module (tests/tools/toxiproxy/build.sh), driven over its API.

toxiproxy is a TCP proxy: a client connects to `listen`, toxiproxy connects to `upstream`, and
"toxics" act on the bytes on the way (per direction: `downstream` is what the server sends back,
`upstream` what the client sends). The ones used here, as toxiproxy v2.12 implements them:
  latency     every chunk is held `latency` ms (plus up to `jitter`)
  bandwidth   at most `rate` KB/s
  reset_peer  on the first data in that direction, wait `timeout` ms, then close both sockets with
              SO_LINGER 0: the peer gets a TCP RST (ECONNRESET)
  timeout     the data is dropped; with `timeout` 0 the connection stays open and silent
A toxic added while a connection is open acts on it too; removed, it stops at once.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from tests.registry_fixture import free_port

HERE = pathlib.Path(__file__).resolve().parent


def binary() -> pathlib.Path:
    """toxiproxy-server at tests/tools/toxiproxy/go.mod's pin (built once per machine, then re-linked)."""
    done = subprocess.run(["bash", str(HERE / "tools" / "toxiproxy" / "build.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"tests/tools/toxiproxy/build.sh failed: {done.stderr.strip()[-2000:]}")
    return pathlib.Path(done.stdout.strip())


@dataclasses.dataclass
class Proxy:
    api: str
    name: str
    host: str  # 127.0.0.1:PORT, where clients connect

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def add(self, kind: str, stream: str = "downstream", **attributes: int) -> str:
        """Add a toxic; its name (for remove)."""
        name = f"{kind}-{stream}-{uuid.uuid4().hex[:6]}"
        self._call("POST", f"/proxies/{self.name}/toxics",
                   {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes})
        return name

    def remove(self, toxic: str) -> None:
        self._call("DELETE", f"/proxies/{self.name}/toxics/{toxic}")

    def clear(self) -> None:
        for toxic in self._call("GET", f"/proxies/{self.name}/toxics") or []:
            self.remove(toxic["name"])


@dataclasses.dataclass
class Toxiproxy:
    api: str

    def proxy(self, upstream: str) -> Proxy:
        port = free_port()
        name = f"p{uuid.uuid4().hex[:8]}"
        proxy = Proxy(self.api, name, f"127.0.0.1:{port}")
        proxy._call("POST", "/proxies", {"name": name, "listen": proxy.host, "upstream": upstream, "enabled": True})
        return proxy

    def delete(self, proxy: Proxy) -> None:
        proxy._call("DELETE", f"/proxies/{proxy.name}")


def running(directory: pathlib.Path) -> Iterator[Toxiproxy]:
    """toxiproxy-server on 127.0.0.1 (its API on a free port), stopped and gone afterwards."""
    server = binary()
    port = free_port()
    log_path = directory / "toxiproxy.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(server), "-host", "127.0.0.1", "-port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            api = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(api + "/version", timeout=1).read()
                    break
                except (urllib.error.URLError, OSError):
                    if proc.poll() is not None:
                        raise RuntimeError(f"toxiproxy did not start: {log_path.read_text()}") from None
                    time.sleep(0.1)
            yield Toxiproxy(api)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

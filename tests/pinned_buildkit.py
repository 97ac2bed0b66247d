"""BuildKit at the pipeline's pin (ci/pins.py), for real: buildkitd and buildctl built from
their Go module (tests/engine/build.sh), and the local mirror registry that stands in for
docker.io and ghcr.io (tests/images/build-mirror.sh fills it; see there which images are test
doubles for upstream ones).

A `running()` buildkitd is what the Dagger path's BuildKit service is, minus the engine around
it: its own state directory (a new one is a fresh runner), the mirrors set in its
buildkitd.toml (a BuildKit does not inherit anyone's mirrors), host networking for RUN steps.
Both scripts are idempotent and quick once their caches are warm, so a test that needs them
runs them itself: `pytest -k` works on a machine where only .ci/run's provisioning ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from ci import pins
from tests.registry_fixture import free_port

HERE = pathlib.Path(__file__).resolve().parent
VERSION = pins.BUILDKIT_IMAGE.rsplit(":", 1)[1]
MIRROR_STORAGE = pathlib.Path(os.environ.get("DIMBYBOT2_MIRROR_DIR", "/var/lib/dimbybot2-mirror"))


def binaries() -> pathlib.Path:
    """The directory holding buildkitd and buildctl at the pin (built on first use)."""
    done = subprocess.run(["bash", str(HERE / "engine" / "build.sh")], capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"tests/engine/build.sh failed: {done.stderr.strip()[-2000:]}")
    return pathlib.Path(done.stdout.strip().splitlines()[-1])


def fill_mirror(bin_dir: pathlib.Path) -> None:
    done = subprocess.run(["bash", str(HERE / "images" / "build-mirror.sh"), str(bin_dir)],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"tests/images/build-mirror.sh failed: {done.stderr.strip()[-2000:]}")


@contextlib.contextmanager
def serving_mirror() -> Iterator[str]:
    """The mirror's storage served read-only on 127.0.0.1 (no auth, plain HTTP); its host:port."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dimbybot2-mirror-") as tmp:
        config = pathlib.Path(tmp) / "config.yml"
        config.write_text(f"version: 0.1\nlog: {{level: warn}}\n"
                          f"storage: {{filesystem: {{rootdirectory: {MIRROR_STORAGE}}}, maintenance: {{readonly: {{enabled: true}}}}}}\n"
                          f"http: {{addr: 127.0.0.1:{port}}}\n")
        with (pathlib.Path(tmp) / "log").open("w") as log:
            proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_http(f"http://127.0.0.1:{port}/v2/", proc)
                yield f"127.0.0.1:{port}"
            finally:
                proc.terminate()
                proc.wait(timeout=10)


@dataclasses.dataclass(frozen=True)
class Buildkitd:
    address: str  # BUILDKIT_HOST
    root: pathlib.Path  # its state: what a cache volume holds on the Dagger path
    bin_dir: pathlib.Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for buildctl: only what the Dagger path's container has."""
        return {"PATH": f"{self.bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin", "BUILDKIT_HOST": self.address, **extra}


def config_toml(mirror: str, plain_http: tuple[str, ...] = ()) -> str:
    lines = [f'[registry."docker.io"]\n  mirrors = ["{mirror}"]',
             f'[registry."ghcr.io"]\n  mirrors = ["{mirror}/ghcr"]']
    lines += [f'[registry."{host}"]\n  http = true' for host in (mirror, *plain_http)]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def running(bin_dir: pathlib.Path, mirror: str, plain_http: tuple[str, ...] = ()) -> Iterator[Buildkitd]:
    """A fresh buildkitd: new state, nothing cached. Stopped and its state removed afterwards
    (mounts included), so a test leaves nothing behind."""
    state = pathlib.Path(tempfile.mkdtemp(prefix="dimbybot2-buildkitd-"))
    (state / "buildkitd.toml").write_text(config_toml(mirror, plain_http))
    sock = state / "buildkitd.sock"
    log = (state / "buildkitd.log").open("w")
    proc = subprocess.Popen(
        [str(bin_dir / "buildkitd"), "--config", str(state / "buildkitd.toml"), "--root", str(state / "root"),
         "--addr", f"unix://{sock}", "--oci-worker-net=host", "--containerd-worker=false"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Buildkitd(address=f"unix://{sock}", root=state / "root", bin_dir=bin_dir)
    try:
        for _ in range(200):
            probe = subprocess.run([str(bin_dir / "buildctl"), "debug", "workers"], env=daemon.env(), capture_output=True)
            if probe.returncode == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"buildkitd exited: {(state / 'buildkitd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"buildkitd did not answer: {(state / 'buildkitd.log').read_text()[-2000:]}")
        yield daemon
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        _unmount_below(state)
        shutil.rmtree(state, ignore_errors=True)


def _unmount_below(path: pathlib.Path) -> None:
    mounts = [line.split()[4] for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(f"{path}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answering (401 where auth is on)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the registry exited") from None
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")

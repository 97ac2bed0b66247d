"""Issue 22 item 10, the Dagger side of the deploy: the smoke track is a secret that travels in the
container's environment (never in the exec's argv), and the deploy client writes its copy of the
SSH key onto a tmpfs. The whole `deploy` call runs against tests/engine_double.py (no engine can
run here); what the client does with $TMPDIR runs for real."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest
from dagger import dag

from ci import main
from tests.conftest import REPO
from tests.engine_double import EngineDouble, Exec, Script, install

SHA = "0123456789abcdef0123456789abcdef01234567"
TRACK = "ytsearch:smoke-track-s3cret"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[Script], EngineDouble]:
    return install(monkeypatch)


async def test_the_smoke_track_is_a_secret_variable_and_the_key_directory_a_tmpfs(engine: Callable[[Script], EngineDouble]) -> None:
    deployed = Exec(stdout="deployed", files={"/out/exit-code": "0\n", "/out/summary.md": "", "/out/report.json": "{}"})
    double = engine(Script(steps={"deploy": deployed}))
    await main.Dimbybot2(source=dag.directory()).deploy(  # type: ignore[call-arg]
        host="h.example", user="u", ssh_key=dag.set_secret("k", "KEY"), known_hosts=dag.set_secret("n", "h k"), tag=SHA,
        registry="ghcr.io/me", remote_dir="/srv/bot", smoke_track=dag.set_secret("track", TRACK))
    (query,) = double.execs("deploy")
    chain = [(field.name, dict(field.args)) for field in query.chain]
    assert TRACK not in repr(chain)  # neither argv nor a plain variable: only the secret's id
    assert "--smoke-track" not in query.argv
    assert [args["name"] for name, args in chain if name == "withSecretVariable"] == ["SMOKE_TRACK"]
    exec_at = max(i for i, (name, _) in enumerate(chain) if name == "withExec")
    temps = [(i, args["path"]) for i, (name, args) in enumerate(chain) if name == "withMountedTemp"]
    tmpdir = [args["value"] for name, args in chain if name == "withEnvVariable" and args["name"] == "TMPDIR"]
    assert tmpdir == [main.DEPLOY_KEY_DIR] and [path for _, path in temps] == [main.DEPLOY_KEY_DIR]
    assert temps[0][0] < exec_at  # mounted for the exec that writes the key


def test_the_client_writes_the_key_under_tmpdir(tmp_path: pathlib.Path) -> None:
    """What the tmpfs mount relies on: the key file lands under $TMPDIR, and is gone after."""
    probe = ("from ci import deploy\n"
             "with deploy.secret_files('KEY', 'host key') as (key, hosts):\n"
             "    print(key.parent.parent)\n"
             "    print(key.read_text().strip())\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    parent, key = result.stdout.splitlines()
    assert (pathlib.Path(parent), key) == (tmp_path, "KEY")
    assert list(tmp_path.iterdir()) == []

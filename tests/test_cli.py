"""The CLI's promise on bad input: one line naming the argument, exit 2, nothing done."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ci import deploy


@pytest.mark.parametrize(("args", "line"), [
    (["build-and-push", "--cache", "foo"], "error: Invalid value for '--cache': Value error, 'foo' is not one of "
                                           "'auto', 'gha', 'registry', 'engine', 'none'."),
    (["deploy", "--host", "x"], "error: Missing option '--user'."),
    (["build-and-push", "--xylophone"], "error: No such option: --xylophone"),
    (["verify-determinism", "--image", "web"], "error: --image: unknown image 'web' (known: bot, lavalink)"),
    (["report", "/nonexistent"], "error: LOG: /nonexistent is not a file"),
    (["build-and-push", "--cache-ref", "x,registry.insecure=true,ref=evil.invalid/steal"],
     "error: --cache-ref: 'x,registry.insecure=true,ref=evil.invalid/steal' is not a registry host[:port][/namespace]"),
])
def test_usage_errors_are_one_line_with_exit_2(args: list[str], line: str) -> None:
    result = subprocess.run([sys.executable, "-m", "ci.cli", *args], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, line + "\n")
    assert result.stdout == ""


def test_help_and_version_still_exit_0() -> None:
    for args in (["--help"], ["--version"], ["explain", "--help"]):
        assert subprocess.run([sys.executable, "-m", "ci.cli", *args], capture_output=True).returncode == 0


def test_deploy_payload_never_exports_the_password() -> None:
    request = deploy.DeployRequest(host="h", user="u", tag="t", registry="r.example/x", remote_dir="/srv/bot")
    lines = deploy.payload(request, "deploy", password="s3cr3t pw", script="true\n").splitlines()
    assert "DEPLOY_REGISTRY_PASSWORD='s3cr3t pw'" in lines
    assert not any(line.startswith("export DEPLOY_REGISTRY_PASSWORD") for line in lines)
    assert "export DEPLOY_TAG=t" in lines


def test_in_pipeline_deploy_entry_rejects_bad_arguments() -> None:
    missing = subprocess.run([sys.executable, "-m", "ci.deploy", "--host", "h"], capture_output=True, text=True)
    assert (missing.returncode, missing.stderr) == (
        2, "error: the following arguments are required: --user, --tag, --registry, --remote-dir\n")
    port = subprocess.run([sys.executable, "-m", "ci.deploy", "--host", "h", "--user", "u", "--port", "22x", "--tag", "t",
                           "--registry", "r.example/x", "--remote-dir", "/srv"], capture_output=True, text=True)
    assert (port.returncode, port.stderr) == (2, "error: --port: must be a number, got '22x'\n")

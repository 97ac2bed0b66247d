"""One deploy, start to end, for both skins: run it, write the report files, tell Discord.

`python -m ci.deploy ...` (inside the pipeline's container: stdlib only) lands in `main`
here; `dimbybot-ci deploy` calls `execute` too. Secrets come from files and the environment,
never argv: the key at $DEPLOY_SSH_KEY_FILE, known_hosts at $DEPLOY_KNOWN_HOSTS_FILE, the
registry password in $REGISTRY_PASSWORD, the Discord webhook URL in $DISCORD_WEBHOOK_URL,
the compose file at $DEPLOY_COMPOSE_PATH (optional), and with --move-latest the registry
password allowed to push in $LATEST_REGISTRY_PASSWORD.

`latest` follows the same rule as the host: it is moved only after a deploy the host accepted
(so never to a commit older than the one deployed), to exactly the digests that now run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
from collections.abc import Callable
from typing import NoReturn

from . import config, deploy, deploy_report
from .errors import InputError, PipelineError
from .registry import Registry


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: deploy.DeployResult
    warnings: tuple[str, ...]


def repositories(repo: pathlib.Path | None) -> dict[str, str]:
    """Image name -> registry repository, from the project's configuration."""
    try:
        project = config.load(repo) if repo is not None and (repo / "pyproject.toml").is_file() else config.ProjectConfig()
    except InputError:
        project = config.ProjectConfig()
    return {image.name: image.repository for image in project.images}


def execute(request: deploy.DeployRequest, key_text: str, known_hosts_text: str, password: str | None,
            compose_text: str | None, repo: pathlib.Path | None, webhook_url: str | None = None,
            summary_path: pathlib.Path | None = None, out_dir: pathlib.Path | None = None,
            on_log: Callable[[str], None] = lambda line: None, latest_password: str | None = None) -> Outcome:
    if webhook_url:
        deploy_report.check_webhook_url(webhook_url)
    with deploy.secret_files(key_text, known_hosts_text) as (key_file, hosts_file):
        result = deploy.run(request, key_file, hosts_file, password, compose_text, repo=repo, on_log=on_log)
    warnings = []
    if latest_password is not None and result.ok:
        problem = move_latest(request, latest_password) if request.pins else "no digests given (a deploy by tag)"
        if problem:
            warnings.append(f"warning: latest not moved: {problem}")
        else:
            on_log(f"latest now points at the deployed digests of {request.deployed_commit}")
    markdown = deploy_report.markdown(request, result)
    if summary_path is not None:
        with summary_path.open("a") as handle:
            handle.write(markdown)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.md").write_text(markdown)
        (out_dir / "report.json").write_text(deploy_report.to_json(request, result))
        (out_dir / "exit-code").write_text(f"{result.exit_code}\n")
    if webhook_url:
        problem = deploy_report.post_webhook(webhook_url, deploy_report.discord_message(request, result))
        if problem:
            warnings.append(f"warning: Discord notification failed: {problem}")
    return Outcome(result, tuple(warnings))


def move_latest(request: deploy.DeployRequest, password: str) -> str | None:
    """Point each pinned image's `latest` at its deployed digest; None, or what went wrong."""
    host, _, namespace = request.registry.partition("/")
    client = Registry(host, request.username or None, password)
    try:
        for pin in request.pins:
            client.move_tag("/".join(filter(None, (namespace, pin.repository))), pin.digest, "latest")
    except PipelineError as err:
        return str(err)
    return None


class _OneLineParser(argparse.ArgumentParser):
    """Bad input is one line naming the argument (argparse would print its usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _number(argument: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(argument, f"must be a number, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m ci.deploy", description="Deploy over SSH (the pipeline's entry point).")
    for name in ("--host", "--user", "--tag", "--registry", "--remote-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", default="22")
    parser.add_argument("--username", default="")
    parser.add_argument("--commit", default="")
    parser.add_argument("--digest", action="append", default=[])
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--environment", default="production")
    parser.add_argument("--timeout", default="180")
    parser.add_argument("--lock-wait", default="600")
    parser.add_argument("--project", default="")
    parser.add_argument("--smoke-track", default="")
    parser.add_argument("--repo", type=pathlib.Path, default=None, help="git checkout for the order check")
    parser.add_argument("--move-latest", action="store_true", help="after a deploy, move latest (push password in $LATEST_REGISTRY_PASSWORD)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write summary.md, report.json, exit-code here")
    return parser


def main(argv: list[str]) -> int:
    """Prints the report; the exit code is deploy's (0 deployed, 1 failed, 2 refused, 3 rollback failed, 4 unknown)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    try:
        request = deploy.DeployRequest(
            host=args.host, user=args.user, port=_number("--port", args.port), tag=args.tag, registry=args.registry, remote_dir=args.remote_dir,
            username=args.username, commit=args.commit, pins=deploy.parse_pins(args.digest, repositories(args.repo)),
            force=args.force, environment=args.environment, timeout=_number("--timeout", args.timeout),
            lock_wait=_number("--lock-wait", args.lock_wait),
            project=args.project, smoke_track=args.smoke_track)
        key = pathlib.Path(os.environ["DEPLOY_SSH_KEY_FILE"]).read_text()
        known_hosts = pathlib.Path(os.environ["DEPLOY_KNOWN_HOSTS_FILE"]).read_text()
        if not known_hosts.strip():
            raise InputError("--known-hosts", "is empty: host key checking is always on")
        compose_path = os.environ.get("DEPLOY_COMPOSE_PATH")
        outcome = execute(request, key, known_hosts, os.environ.get("REGISTRY_PASSWORD") or None,
                          pathlib.Path(compose_path).read_text() if compose_path else None, args.repo,
                          webhook_url=os.environ.get("DISCORD_WEBHOOK_URL") or None, out_dir=args.out,
                          on_log=lambda line: print(line, file=sys.stderr, flush=True),
                          latest_password=os.environ["LATEST_REGISTRY_PASSWORD"] if args.move_latest else None)
    except (InputError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in outcome.warnings:
        print(warning, file=sys.stderr)
    print(outcome.result.summary())
    return outcome.result.exit_code

"""One deploy, start to end, for both skins: run it, write the report files, tell Discord.

`python -m ci.deploy ...` (inside the pipeline's container: stdlib only) lands in `main`
here; `dimbybot-ci deploy` calls `execute` too. Secrets come from files and the environment,
never argv: the key at $DEPLOY_SSH_KEY_FILE, known_hosts at $DEPLOY_KNOWN_HOSTS_FILE, the
registry password in $REGISTRY_PASSWORD, the Discord webhook URL in $DISCORD_WEBHOOK_URL,
the compose file at $DEPLOY_COMPOSE_PATH (optional), the smoke track in $SMOKE_TRACK (optional:
the workflow keeps it a secret), and with --move-latest the registry password allowed to push in
$LATEST_REGISTRY_PASSWORD.

Every output path is checked before anything runs: a report that cannot be written must not
turn into a traceback or a wrong verdict after a real roll-out.

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


MAX_PATH = 4096
MAX_PASSWORD = 8192


def check_path(argument: str, path: pathlib.Path) -> pathlib.Path:
    """A path argument: valid UTF-8 and not absurdly long (the OS would fail with a traceback)."""
    deploy.check_text(argument, str(path), MAX_PATH)
    return path


def check_output_file(argument: str, path: pathlib.Path) -> pathlib.Path:
    """A file the report is appended to: a writable file, or a new one in a writable directory."""
    check_path(argument, path)
    try:
        if path.exists():
            if not path.is_file():
                raise InputError(argument, f"{path} is not a regular file")
            if not os.access(path, os.W_OK):
                raise InputError(argument, f"{path} is not writable")
            return path
        parent = path.parent
        if not parent.is_dir():
            raise InputError(argument, f"directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(argument, f"directory {parent} is not writable")
    except OSError as err:
        raise InputError(argument, f"cannot be used: {err.strerror or err}") from None
    return path


def check_output_dir(argument: str, path: pathlib.Path) -> pathlib.Path:
    """A directory the report files go to: an existing writable directory, or one that can be made
    in the nearest existing directory above it (which must be writable)."""
    check_path(argument, path)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(argument, f"{path} exists and is not a directory")
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(argument, f"{existing} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(argument, f"{existing} is not writable")
        for name in ("summary.md", "report.json", "exit-code"):
            target = path / name
            if target.exists() and (not target.is_file() or not os.access(target, os.W_OK)):
                raise InputError(argument, f"{target} is not a writable file")
    except OSError as err:
        raise InputError(argument, f"cannot be used: {err.strerror or err}") from None
    return path


def check_secrets(key_text: str, known_hosts_text: str, password: str | None, latest_password: str | None,
                  webhook_url: str | None, names: dict[str, str] | None = None) -> None:
    """Each secret is valid UTF-8 and of a sane size, refused before anything runs (never shown).
    `names`: what to call each secret in the error (the CLI names its environment variables)."""
    names = {"key": "$DEPLOY_SSH_KEY", "known_hosts": "$DEPLOY_KNOWN_HOSTS", "password": "$REGISTRY_PASSWORD",
             "latest": "$LATEST_REGISTRY_PASSWORD", "webhook": "$DISCORD_WEBHOOK_URL", **(names or {})}
    deploy.check_secret_text(names["key"], key_text)
    deploy.check_secret_text(names["known_hosts"], known_hosts_text)
    for name, value in (("password", password), ("latest", latest_password), ("webhook", webhook_url)):
        if value is not None:
            deploy.check_text(names[name], value, MAX_PASSWORD, secret=True)


def execute(request: deploy.DeployRequest, key_text: str, known_hosts_text: str, password: str | None,
            compose_text: str | None, repo: pathlib.Path | None, webhook_url: str | None = None,
            summary_path: pathlib.Path | None = None, out_dir: pathlib.Path | None = None,
            on_log: Callable[[str], None] = lambda line: None, latest_password: str | None = None) -> Outcome:
    """Raises InputError (nothing has run) for bad secrets or output paths; then deploys."""
    check_secrets(key_text, known_hosts_text, password, latest_password, webhook_url)
    if summary_path is not None:
        check_output_file("--summary-file", summary_path)
    if out_dir is not None:
        check_output_dir("--out", out_dir)
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
    # Checked before the deploy; should a write still fail (a full disk), the deploy's own
    # verdict stands and the failure is a warning.
    if summary_path is not None:
        try:
            with summary_path.open("a") as handle:
                handle.write(markdown)
        except OSError as err:
            warnings.append(f"warning: the summary was not written to {summary_path}: {err.strerror or err}")
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "summary.md").write_text(markdown)
            (out_dir / "report.json").write_text(deploy_report.to_json(request, result))
            (out_dir / "exit-code").write_text(f"{result.exit_code}\n")
        except OSError as err:
            warnings.append(f"warning: the report files were not written to {out_dir}: {err.strerror or err}")
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


def _smoke_track(argument: str, value: str) -> str:
    """The smoke track comes from the environment (a secret in the workflow: never in argv)."""
    deploy.check_text(argument, value, 300, secret=True)
    if value and not deploy.TRACK.match(value):
        raise InputError(argument, "must be one printable word without spaces (the value is not shown)")
    return value


def _read_secret_file(variable: str) -> str:
    path = os.environ.get(variable.lstrip("$"))
    if not path:
        raise InputError(variable, "is not set")
    try:
        return pathlib.Path(check_path(variable, pathlib.Path(path))).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(variable, "the file is not valid UTF-8 (its content is not shown)") from None
    except OSError as err:
        raise InputError(variable, f"cannot be read: {err.strerror or err}") from None


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:500]


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
    parser.add_argument("--repo", default=None, help="git checkout for the order check")
    parser.add_argument("--move-latest", action="store_true", help="after a deploy, move latest (push password in $LATEST_REGISTRY_PASSWORD)")
    parser.add_argument("--out", default=None, help="write summary.md, report.json, exit-code here")
    return parser


def main(argv: list[str]) -> int:
    """Prints the report; the exit code is deploy's (0 deployed, 1 failed, 2 refused, 3 rollback failed, 4 unknown)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    try:
        repo = check_path("--repo", pathlib.Path(args.repo)) if args.repo is not None else None
        out = check_output_dir("--out", pathlib.Path(args.out)) if args.out is not None else None
        for name in ("--digest",):
            for value in args.digest:
                deploy.check_text(name, value, 200)
        request = deploy.DeployRequest(
            host=args.host, user=args.user, port=_number("--port", args.port), tag=args.tag, registry=args.registry, remote_dir=args.remote_dir,
            username=args.username, commit=args.commit, pins=deploy.parse_pins(args.digest, repositories(repo)),
            force=args.force, environment=args.environment, timeout=_number("--timeout", args.timeout),
            lock_wait=_number("--lock-wait", args.lock_wait),
            project=args.project, smoke_track=_smoke_track("$SMOKE_TRACK", os.environ.get("SMOKE_TRACK", "")))
        key = _read_secret_file("$DEPLOY_SSH_KEY_FILE")
        known_hosts = _read_secret_file("$DEPLOY_KNOWN_HOSTS_FILE")
        if not known_hosts.strip():
            raise InputError("--known-hosts", "is empty: host key checking is always on")
        compose_path = os.environ.get("DEPLOY_COMPOSE_PATH")
        outcome = execute(request, key, known_hosts, os.environ.get("REGISTRY_PASSWORD") or None,
                          pathlib.Path(compose_path).read_text() if compose_path else None, repo,
                          webhook_url=os.environ.get("DISCORD_WEBHOOK_URL") or None, out_dir=out,
                          on_log=lambda line: print(line, file=sys.stderr, flush=True),
                          latest_password=os.environ["LATEST_REGISTRY_PASSWORD"] if args.move_latest else None)
    except (InputError, KeyError, OSError, UnicodeError) as err:
        print(f"error: {str(err) if isinstance(err, InputError) else _one_line(err)}", file=sys.stderr)
        return 2
    for warning in outcome.warnings:
        print(warning, file=sys.stderr)
    print(outcome.result.summary())
    return outcome.result.exit_code

"""The `dimbybot-ci` command: thin verbs over the core, for people and machines.

Exit status: 0 success, 1 a build/push/check failed, 2 bad input (nothing was done).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import pathlib
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, cache, cache_cli, cli_trends, config, gitinfo, local, pipeline, progress, report, runinfo, tags
from .errors import InputError, PipelineError

app = typer.Typer(
    name="dimbybot-ci",
    help="Build, cache, tag, push, verify and deploy the dimbybot2 images. The same pipeline as "
         "`dagger call ...`, run on this machine with docker buildx (the local driver).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("trends")(cli_trends.trends_command)  # its own module: the verb has many options
app.add_typer(cache_cli.app, name="cache")  # `cache usage|prune`: the gha cache per scope
# Data (Dockerfile text, paths) is never markup or emoji: `dimbybot:x:10001` must print as is.
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def say(line: str) -> None:
    """One unwrapped line on stderr (rich would fold long lines when there is no terminal)."""
    sys.stderr.write(line.replace("\n", " ") + "\n")


def fail_input(error: InputError) -> NoReturn:
    say(f"error: {error}")
    raise typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dimbybot-ci {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """dimbybot2 CI: the same pipeline as `dagger call`, run on this machine."""


def _results_table(result: pipeline.PipelineResult) -> Table:
    table = Table(title=f"build-and-push ({result.cache_backend} cache, {result.duration:.1f} s)")
    for column in ("image", "cached", "hit ratio", "time", "cache import", "cache export", "digest", "refs"):
        table.add_column(column)
    for image in result.images:
        def status(s: pipeline.CacheStatus) -> str:
            return "off" if s.ok is None else "skipped" if s.skipped else ("ok" if s.ok else "[red]failed[/red]")
        table.add_row(escape(image.name), f"{image.cached_steps}/{image.total_steps}", f"{image.hit_ratio:.0%}",
                      f"{image.duration:.1f} s", status(image.cache_import), status(image.cache_export),
                      (image.digest or "-")[:19], escape("\n".join(image.refs) or "-"))
    return table


@app.command("build-and-push")
def build_and_push(
    registry: Annotated[str, typer.Option(help="Registry/namespace to push to, e.g. ghcr.io/owner. Without it, build only.")] = "",
    username: Annotated[str, typer.Option(help="Registry user name.")] = "",
    password_env: Annotated[str, typer.Option(help="Name of the environment variable holding the registry password.")] = "REGISTRY_PASSWORD",  # noqa: S107
    sha: Annotated[str, typer.Option(help="Full commit SHA to tag (default: git HEAD of --repo).")] = "",
    latest: Annotated[bool, typer.Option("--latest/--no-latest", help="Move `latest` after the SHA tag was pushed.")] = True,
    tag: Annotated[list[str] | None, typer.Option(help="Extra tag (repeatable).")] = None,
    cache_backend: Annotated[cache.Backend, typer.Option("--cache", help="auto picks gha when ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL are set, "
                                                         "else registry when --cache-ref is given, else engine.")] = cache.Backend.AUTO,
    cache_mode: Annotated[str, typer.Option(help="max (intermediate stages too) or min.")] = "max",
    cache_ref: Annotated[str, typer.Option(help="Repository for the registry cache, e.g. ghcr.io/owner/dimbybot2-cache.")] = "",
    cache_bust: Annotated[str, typer.Option(help="Suffix for the cache scopes; change it to start a fresh cache.")] = "",
    cache_timeout: Annotated[str, typer.Option(help="gha: give up exporting the cache after this long (e.g. 10m, 90s); "
                                               "the build and push still succeed.")] = "10m",
    images: Annotated[list[str] | None, typer.Option("--image", help="Image to build (repeatable; default: all).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option(help="Extra build arg NAME=value (repeatable).")] = None,
    source_date_epoch: Annotated[int, typer.Option(help="SOURCE_DATE_EPOCH (fixed by default, so caches survive commits).")] = 0,
    repo: Annotated[pathlib.Path, typer.Option(help="Repository root.")] = pathlib.Path("."),
    work_dir: Annotated[pathlib.Path | None, typer.Option(help="Where BuildKit progress logs are kept (default: REPO/.work).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table, json or markdown.")] = OutputFormat.table,
    summary_file: Annotated[pathlib.Path | None, typer.Option(help="Append the markdown summary here (e.g. $GITHUB_STEP_SUMMARY).")] = None,
    report_file: Annotated[pathlib.Path | None, typer.Option(help="Write the JSON report here.")] = None,
    skip: Annotated[bool, typer.Option("--skip/--no-skip", help="Skip building an image whose input key the registry already "
                                       "records (its tags then point at that image); --no-skip always builds.")] = True,
) -> None:
    """Build the images concurrently with their cache, push the SHA tag, then move the other tags (latest last)."""
    try:
        config.check_inputs({"--registry": registry, "--username": username, "--password-env": password_env, "--sha": sha,
                             "--tag": tag, "--cache-mode": cache_mode, "--cache-ref": cache_ref, "--cache-bust": cache_bust,
                             "--cache-timeout": cache_timeout, "--image": images, "--build-arg": build_arg, "--repo": repo,
                             "--work-dir": work_dir, "--summary-file": summary_file, "--report-file": report_file})
        config.check_output_files({"--summary-file": summary_file, "--report-file": report_file})
    except InputError as error:
        fail_input(error)
    root = repo.resolve()
    password = os.environ.get(password_env) if username else None
    try:
        if username and not password:
            raise InputError("--password-env", f"environment variable {password_env} is empty or not set")
        if password is not None:
            config.check_text(password, "--password-env", option_like=True)  # goes into a docker config; never shown
        project = config.load(root)
        tag_plan = None
        registry_name = tags.validate_registry(registry) if registry else None
        if registry_name:
            commit = sha or gitinfo.read_head_sha(root) or ""
            if not commit:
                raise InputError("--sha", f"not given and {root} is not a git checkout")
            tag_plan = tags.plan(commit, latest, tag or ())
        options = pipeline.PipelineOptions(
            registry=registry_name, tag_plan=tag_plan, images=tuple(images or ()),
            cache=cache.CacheOptions(backend=cache_backend, mode=cache_mode, bust=cache_bust, cache_ref=cache_ref or None,
                                     gha_tokens=all(os.environ.get(n) for n in cache.GHA_ENV), export_timeout=cache_timeout),
            build_args=pipeline.parse_build_args(build_arg or []), source_date_epoch=source_date_epoch,
            skip_unchanged=skip,
        )
        plans = pipeline.plan(project, options, root=root)
    except InputError as error:
        fail_input(error)
    work = (work_dir or root / ".work").resolve()
    names = ", ".join(p.image.name for p in plans)
    try:
        with err.status(f"building {names} with docker buildx ..."):
            result = local.build_and_push(plans, options, root, work, username or None, password,
                                          on_done=lambda r: err.print(f"{r.name}: {'done' if r.ok else 'FAILED'} in {r.duration:.1f} s"))
    except PipelineError as error:
        say(f"error: {error}")
        raise typer.Exit(1) from None
    if summary_file:
        with summary_file.open("a") as stream:
            stream.write(report.to_markdown(result))
    run_info = runinfo.current(root, os.environ, datetime.datetime.now(datetime.UTC), (tag_plan.sha if tag_plan else sha) or None)
    if report_file:
        report_file.write_text(report.to_json(result, run_info))
    if output_format is OutputFormat.json:
        typer.echo(report.to_json(result, run_info))
    elif output_format is OutputFormat.markdown:
        typer.echo(report.to_markdown(result))
    else:
        out.print(_results_table(result))
        for image in result.images:
            if image.avoidance is not None:
                say(f"{image.name}: {image.avoidance.detail}")
            for package_cache in image.package_caches:
                say(f"{image.name}: package cache {package_cache.mount}: {package_cache.detail}")
            for warning in image.warnings:
                say(f"warning ({image.name}): {warning}")
            if image.error:
                say(f"error ({image.name}): {image.error}")
    raise typer.Exit(0 if result.ok else 1)


def _load_statuses(path: pathlib.Path, image: str | None) -> dict[str, tuple[str, str]]:
    """A progress log, an `explain --format json` prediction, or a build report (report.json)."""
    with path.open() as stream:
        head = stream.read(4096)
    if head.lstrip().startswith("{") and ('"images"' in head or '"schema"' in head):
        import json

        return report.statuses_of_json(json.loads(path.read_text()), image)
    with path.open() as stream:
        return report.statuses_of_log(progress.parse_stream(stream))


@app.command("report")
def report_log(
    log: Annotated[pathlib.Path, typer.Argument(help="A BuildKit progress log (rawjson or plain); with --against, also a "
                                                "build report.json or an explain prediction.")],
    against: Annotated[pathlib.Path | None, typer.Option(help="Another log, or an `explain --format json` prediction: "
                                                         "show the steps whose hit/miss differs.")] = None,
    image: Annotated[str | None, typer.Option(help="With a prediction listing several images: which one.")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table, json or markdown.")] = OutputFormat.table,
) -> None:
    """Read a BuildKit progress log: every Dockerfile step, hit or miss, and its time; or compare two runs."""
    try:
        config.check_inputs({"LOG": log, "--against": against, "--image": image})
        for argument, path in (("LOG", log), ("--against", against)):
            if path is not None and not path.is_file():
                raise InputError(argument, f"{path} is not a file")
    except InputError as error:
        fail_input(error)
    if against is not None:
        try:
            before, after = _load_statuses(against, image), _load_statuses(log, image)
        except (ValueError, KeyError) as error:
            say(f"error: --against: {error}")
            raise typer.Exit(2) from None
        changes = report.compare_statuses(before, after)
        if output_format is OutputFormat.json:
            import json

            typer.echo(json.dumps({"changes": [dataclasses.asdict(c) for c in changes]}, indent=2))
        else:
            table = Table(title=f"{against} -> {log}: {len(changes)} step(s) changed")
            for column in ("step", "instruction", "before", "after"):
                table.add_column(column)
            for change in changes:
                table.add_row(escape(change.label), escape(change.instruction[:70]), change.before, change.after)
            out.print(table)
        return
    try:
        with log.open() as stream:
            parsed = progress.parse_stream(stream)
    except ValueError as error:
        say(f"error: LOG: {error}")
        raise typer.Exit(2) from None
    result = pipeline.PipelineResult(images=[pipeline.ImageResult(
        name=log.name, cached_steps=parsed.cached_count, total_steps=len(parsed.cacheable), log=parsed,
        duration=sum(s.duration or 0 for s in parsed.steps), error=parsed.error)], cache_backend="-")
    if output_format is OutputFormat.json:
        typer.echo(report.to_json(result))
    elif output_format is OutputFormat.markdown:
        typer.echo(report.to_markdown(result))
    else:
        table = Table(title=f"{log.name}: {parsed.cached_count}/{len(parsed.cacheable)} cached ({parsed.hit_ratio:.0%})")
        for column in ("step", "instruction", "cache", "time"):
            table.add_column(column)
        for step in parsed.cacheable:
            table.add_row(escape(step.label or ""), escape(step.instruction[:70]), "hit" if step.cached else "[yellow]miss[/yellow]",
                          "-" if step.duration is None else f"{step.duration:.2f} s")
        out.print(table)
        if parsed.error:
            say(f"build failed at {parsed.error}")


@app.command("explain")
def explain(
    image: Annotated[list[str] | None, typer.Option(help="Configured image to explain (repeatable; default: all).")] = None,
    base: Annotated[str | None, typer.Option(help="Base revision (default: merge-base with the default branch).")] = None,
    head: Annotated[str | None, typer.Option(help="Head revision (default: the working tree, untracked files included).")] = None,
    dockerfile: Annotated[str | None, typer.Option(help="Any Dockerfile (with --context) instead of the configured images.")] = None,
    context: Annotated[str | None, typer.Option(help="Build context directory for --dockerfile.")] = None,
    target: Annotated[str | None, typer.Option(help="Target stage (default: the last, or the image's configured target).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option(help="Build arg NAME=value, as the build would get it (repeatable).")] = None,
    repo: Annotated[pathlib.Path, typer.Option(help="Repository root.")] = pathlib.Path("."),
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = OutputFormat.table,
) -> None:
    """Predict, without building, which steps will hit or miss BuildKit's cache from BASE to HEAD, and why.

    Step labels are BuildKit's own (`deps 3/4`), so predictions join with real builds:
    `dimbybot-ci report LOG --against prediction.json`.
    """
    from .explain.run import explain_repository

    try:
        config.check_inputs({"--image": image, "--base": base, "--head": head, "--dockerfile": dockerfile, "--context": context,
                             "--target": target, "--build-arg": build_arg, "--repo": repo})
        results = explain_repository(repo, base, head, image or (), dockerfile, context, target,
                                     dict(pipeline.parse_build_args(build_arg or [])))
    except InputError as error:
        fail_input(error)
    if output_format is OutputFormat.json:
        import json

        typer.echo(json.dumps({"images": [r.to_dict() for r in results]}, indent=2))
        return
    for result in results:
        misses = sum(1 for s in result.steps if s.status == "miss")
        table = Table(title=f"{result.name}: {misses} of {len(result.steps)} steps will miss"
                            + (f", first at {result.first_miss}" if result.first_miss else ""))
        for column in ("step", "instruction", "cache", "why"):
            table.add_column(column)
        for step in result.steps:
            table.add_row(escape(step.label), escape(step.instruction[:60]), "hit" if step.status == "hit" else "[yellow]miss[/yellow]",
                          escape(step.reason or ""))
        out.print(table)


@app.command("verify")
def verify_images(
    image_a: Annotated[str, typer.Argument(metavar="A", help="OCI layout (directory or tarball) or registry reference.")],
    image_b: Annotated[str, typer.Argument(metavar="B", help="The image to compare with A.")],
    username: Annotated[str, typer.Option(help="Registry user name (for registry references).")] = "",
    password_env: Annotated[str, typer.Option(help="Environment variable holding the registry password.")] = "REGISTRY_PASSWORD",  # noqa: S107
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = OutputFormat.table,
) -> None:
    """Compare two images: digests, manifest, config, then every file of every layer. Exit 0 identical, 1 different, 2 error."""
    from . import verify

    try:
        config.check_inputs({"A": image_a, "B": image_b, "--username": username, "--password-env": password_env})
        password = os.environ.get(password_env) if username else None
        if password is not None:
            config.check_text(password, "--password-env", option_like=True)  # never shown
        result = verify.compare_specs(image_a, image_b, username or None, password)
    except InputError as error:
        fail_input(error)
    except (PipelineError, OSError, ValueError) as error:
        say(f"error: {error}")
        raise typer.Exit(2) from None
    if output_format is OutputFormat.json:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif result.identical:
        typer.echo(f"identical: {result.digest_a}")
    else:
        table = Table(title=f"different: {result.digest_a[:19]} vs {result.digest_b[:19]} ({len(result.differences)} differences)")
        for column in ("layer", "path", "kind", "detail"):
            table.add_column(column)
        for d in result.differences[:200]:
            table.add_row("-" if d.layer is None else str(d.layer), escape(d.path or "-"), d.kind, escape(d.detail))
        out.print(table)
    raise typer.Exit(0 if result.identical else 1)


@app.command("deploy")
def deploy(
    host: Annotated[str, typer.Option(help="Host to deploy to.")],
    user: Annotated[str, typer.Option(help="SSH user (in the host's docker group).")],
    tag: Annotated[str, typer.Option(help="Image tag to roll out (the commit SHA).")],
    registry: Annotated[str, typer.Option(help="Registry/namespace the images were pushed to.")],
    remote_dir: Annotated[str, typer.Option(help="Directory on the host with compose.yaml and the .env holding app secrets.")],
    port: Annotated[int, typer.Option(help="SSH port.")] = 22,
    username: Annotated[str, typer.Option(help="Registry user name for the host's pull.")] = "",
    password_env: Annotated[str, typer.Option(help="Environment variable holding the registry password.")] = "REGISTRY_PASSWORD",  # noqa: S107
    ssh_key_env: Annotated[str, typer.Option(help="Environment variable holding the SSH private key.")] = "DEPLOY_SSH_KEY",
    known_hosts_env: Annotated[str, typer.Option(help="Environment variable holding the host's known_hosts line(s).")] = "DEPLOY_KNOWN_HOSTS",
    compose_file: Annotated[pathlib.Path | None, typer.Option(help="compose.yaml to install on the host with the new tag.")] = None,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for every service to be healthy.")] = 180,
    lock_wait: Annotated[int, typer.Option(help="Seconds to wait for another deploy on the host to finish.")] = 600,
    project: Annotated[str, typer.Option(help="Compose project name (default: the compose file's name).")] = "",
    commit: Annotated[str, typer.Option(help="Commit the tag was built from (default: the tag, when it is a SHA).")] = "",
    digest: Annotated[list[str] | None, typer.Option(help="Run IMAGE by digest: IMAGE=sha256:... (repeatable; from build-and-push's report).")] = None,
    force: Annotated[bool, typer.Option(help="Deploy even when the commit is older than, or unrelated to, the one deployed.")] = False,
    repo: Annotated[pathlib.Path, typer.Option(help="Git checkout whose history orders commits.")] = pathlib.Path("."),
    environment: Annotated[str, typer.Option(help="Environment name for the report (staging, production).")] = "production",
    smoke_track_env: Annotated[str, typer.Option(help="Environment variable holding a track identifier Lavalink must be able to load "
                                                      "(smoke test; skipped when empty or not set). Never in argv.")] = "SMOKE_TRACK",
    webhook_env: Annotated[str, typer.Option(help="Environment variable holding a Discord webhook URL; posts the result when set.")] = "DISCORD_WEBHOOK_URL",
    summary_file: Annotated[pathlib.Path | None, typer.Option(help="Append the markdown report here (default: $GITHUB_STEP_SUMMARY when set).")] = None,
) -> None:
    """Roll the host to TAG with Docker Compose over SSH; on any failure, roll back to the previous version.

    The host runs the deploy as a job that finishes even if this command or its connection dies;
    this command follows it and reconnects. Host keys are always checked. Exit 0 deployed,
    1 failed (rolled back), 2 refused before any change, 3 the rollback failed too, 4 outcome unknown.
    """
    from . import deploy as deploy_core
    from . import deploy_cli

    try:
        # Every input is checked before anything runs (ssh included): one line, exit 2.
        for argument, name in (("--password-env", password_env), ("--ssh-key-env", ssh_key_env),
                               ("--known-hosts-env", known_hosts_env), ("--webhook-env", webhook_env),
                               ("--smoke-track-env", smoke_track_env)):
            deploy_core.check_text(argument, name, 100)
        key, known_hosts = os.environ.get(ssh_key_env, ""), os.environ.get(known_hosts_env, "")
        password = os.environ.get(password_env) if username else None
        webhook_url = os.environ.get(webhook_env) or None
        deploy_cli.check_secrets(key, known_hosts, password, None, webhook_url,
                                 names={"key": f"${ssh_key_env}", "known_hosts": f"${known_hosts_env}",
                                        "password": f"${password_env}", "webhook": f"${webhook_env}"})
        if not key.strip():
            raise InputError("--ssh-key-env", f"environment variable {ssh_key_env} is empty or not set")
        if not known_hosts.strip():
            raise InputError("--known-hosts-env", f"environment variable {known_hosts_env} is empty: host key checking is always on")
        root = deploy_cli.check_path("--repo", repo).resolve()
        compose_text = None
        if compose_file is not None:
            deploy_cli.check_path("--compose-file", compose_file)
            try:
                compose_text = compose_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise InputError("--compose-file", f"{compose_file} cannot be read: {getattr(err, 'strerror', None) or err}") from None
        for value in digest or []:
            deploy_core.check_text("--digest", value, 200)
        smoke_track = os.environ.get(smoke_track_env, "")
        deploy_core.check_text(f"${smoke_track_env}", smoke_track, 300, secret=True)
        if smoke_track and not deploy_core.TRACK.match(smoke_track):
            raise InputError(f"${smoke_track_env}", "must be one printable word without spaces (the value is not shown)")
        request = deploy_core.DeployRequest(
            host=host, user=user, port=port, tag=tag, registry=registry, remote_dir=remote_dir, username=username,
            timeout=timeout, lock_wait=lock_wait, project=project, commit=commit, force=force, environment=environment,
            smoke_track=smoke_track, pins=deploy_core.parse_pins(digest or [], deploy_cli.repositories(root)))
        summary_env = os.environ.get("GITHUB_STEP_SUMMARY")
        summary = summary_file or (pathlib.Path(summary_env) if summary_env else None)
        if summary is not None:  # before any effect: a report that cannot be written is bad input
            deploy_cli.check_output_file("--summary-file" if summary_file else "$GITHUB_STEP_SUMMARY", summary)
        outcome = deploy_cli.execute(request, key, known_hosts, password, compose_text, root,
                                     webhook_url=webhook_url, summary_path=summary, on_log=say)
    except InputError as error:
        fail_input(error)
    for warning in outcome.warnings:
        say(warning)
    typer.echo(outcome.result.summary())
    raise typer.Exit(outcome.result.exit_code)


@app.command("deploy-status")
def deploy_status(
    host: Annotated[str, typer.Option(help="Host to ask.")],
    user: Annotated[str, typer.Option(help="SSH user.")],
    remote_dir: Annotated[str, typer.Option(help="The deploy directory on the host.")],
    port: Annotated[int, typer.Option(help="SSH port.")] = 22,
    ssh_key_env: Annotated[str, typer.Option(help="Environment variable holding the SSH private key.")] = "DEPLOY_SSH_KEY",
    known_hosts_env: Annotated[str, typer.Option(help="Environment variable holding the host's known_hosts line(s).")] = "DEPLOY_KNOWN_HOSTS",
    job: Annotated[str, typer.Option(help="Follow this job to its end and print its report (default: the last job).")] = "",
) -> None:
    """What the host runs, and the last (or a given) deploy job's final report, following it if it still runs.

    Exit: that job's code (0 deployed, 1 failed, 2 refused, 3 rollback failed, 4 unknown); 2 if the host cannot be asked.
    """
    import re
    import time

    from . import deploy as deploy_core

    try:
        for argument, name in (("--ssh-key-env", ssh_key_env), ("--known-hosts-env", known_hosts_env)):
            deploy_core.check_text(argument, name, 100)
        key, known_hosts = os.environ.get(ssh_key_env, ""), os.environ.get(known_hosts_env, "")
        deploy_core.check_secret_text(f"${ssh_key_env}", key)
        deploy_core.check_secret_text(f"${known_hosts_env}", known_hosts)
        if not key.strip():
            raise InputError("--ssh-key-env", f"environment variable {ssh_key_env} is empty or not set")
        if not known_hosts.strip():
            raise InputError("--known-hosts-env", f"environment variable {known_hosts_env} is empty: host key checking is always on")
        deploy_core.check_text("--job", job, 64)
        if job and not re.match(r"^[A-Za-z0-9._-]{1,64}$", job):
            raise InputError("--job", f"{job!r} is not a job id")
        request = deploy_core.DeployRequest(host=host, user=user, port=port, tag="status", registry="localhost", remote_dir=remote_dir)
    except InputError as error:
        fail_input(error)
    with deploy_core.secret_files(key, known_hosts) as (key_file, hosts_file):
        client = deploy_core.Client(request, key_file, hosts_file, on_log=say)
        state, problem = client.status()
        if state is None:
            say(f"error: cannot ask {host}: {problem}")
            raise typer.Exit(2)
        typer.echo(f"deployed tag: {state.tag}\ndeployed commit: {state.commit}\ndeployed pins: {state.pins}")
        target = job or (state.last_job if state.last_job != "none" else "")
        if not target:
            raise typer.Exit(0)
        final, _, lost = client.follow(target, 0, time.monotonic() + 3600, reconnect_for=120)
    if final is None:
        say(f"error: lost contact with {host}: {lost}")
        raise typer.Exit(4)
    typer.echo(f"job: {target}")
    report, services = deploy_core.parse_report(final.report or [])
    code = final.code if final.code in range(5) else 4
    if "result" not in report:
        report = {"result": "unknown", "reason": deploy_core.last_line(final.stderr) or "the host sent no framed report"}
        code = 4
    typer.echo(deploy_core.DeployResult(code, report, services, []).summary())
    raise typer.Exit(code)


@app.command("verify-determinism")
def verify_determinism(
    images: Annotated[list[str] | None, typer.Option("--image", help="Image to check (repeatable; default: all).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option(help="Extra build arg NAME=value (repeatable).")] = None,
    source_date_epoch: Annotated[int, typer.Option(help="SOURCE_DATE_EPOCH for both builds.")] = 0,
    repo: Annotated[pathlib.Path, typer.Option(help="Repository root.")] = pathlib.Path("."),
    work_dir: Annotated[pathlib.Path | None, typer.Option(help="Where the two OCI exports are written (default: REPO/.work/determinism).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = OutputFormat.table,
) -> None:
    """Build each image from the cache and with --no-cache, then compare: the cache must not change the image.

    Exit 0 when every image is identical, 1 when one differs (the differing files are listed), 2 on bad input.
    It builds twice per image, so it belongs in a nightly or on-demand job.
    """
    try:
        config.check_inputs({"--image": images, "--build-arg": build_arg, "--repo": repo, "--work-dir": work_dir})
    except InputError as error:
        fail_input(error)
    root = repo.resolve()
    try:
        options = pipeline.PipelineOptions(registry=None, tag_plan=None, images=tuple(images or ()),
                                           cache=cache.CacheOptions(backend=cache.Backend.ENGINE),
                                           source_date_epoch=source_date_epoch, build_args=pipeline.parse_build_args(build_arg or []))
        plans = pipeline.plan(config.load(root), options, root=root)
    except InputError as error:
        fail_input(error)
    work = (work_dir or root / ".work" / "determinism").resolve()
    results = []
    try:
        for image_plan in plans:
            with err.status(f"building {image_plan.image.name} with and without cache ..."):
                results.append(local.verify_determinism(image_plan, root, work))
    except PipelineError as error:
        say(f"error: {error}")
        raise typer.Exit(1) from None
    if output_format is OutputFormat.json:
        import json

        typer.echo(json.dumps({"images": [r.to_dict() for r in results]}, indent=2))
    else:
        for r in results:
            verdict = "identical" if r.comparison.identical else "DIFFERENT"
            typer.echo(f"{r.image}: {verdict} (cached build {r.cached_steps}/{r.total_steps} hits) "
                       f"cached {r.comparison.digest_a} / uncached {r.comparison.digest_b}")
            for d in r.comparison.differences[:50]:
                typer.echo(f"  layer {'-' if d.layer is None else d.layer} {d.kind:<8} {d.path or '-'}: {d.detail}")
    raise typer.Exit(0 if all(r.comparison.identical for r in results) else 1)


@app.command("debug")
def debug_step(
    image: Annotated[str, typer.Option(help="Configured image (see pyproject.toml; default images: bot, lavalink).")],
    step: Annotated[str, typer.Option(help="A step label as explain and BuildKit print it (`deps 4/4`), or first-miss: "
                                      "the first step explain predicts will miss from --base to the working tree.")],
    at: Annotated[str, typer.Option(help="before: the state the step starts from; after: the state it leaves.")] = "before",
    base: Annotated[str | None, typer.Option(help="Base revision for first-miss and for what changed (default: merge-base "
                                             "with the default branch).")] = None,
    exec_command: Annotated[str | None, typer.Option("--exec", help="Run this shell command there instead of an interactive "
                                                     "shell; its exit code is debug's.")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the debug image (its tag is printed) instead of removing it afterwards.")] = False,
    cache_backend: Annotated[cache.Backend, typer.Option("--cache", help="The cache the real build imports (as build-and-push); "
                                                         "nothing is exported.")] = cache.Backend.AUTO,
    cache_ref: Annotated[str, typer.Option(help="Repository of the registry cache, as for build-and-push.")] = "",
    cache_bust: Annotated[str, typer.Option(help="Cache scope suffix, as for build-and-push.")] = "",
    build_arg: Annotated[list[str] | None, typer.Option(help="Extra build arg NAME=value, as the real build gets it (repeatable).")] = None,
    source_date_epoch: Annotated[int, typer.Option(help="SOURCE_DATE_EPOCH, as the real build gets it.")] = 0,
    repo: Annotated[pathlib.Path, typer.Option(help="Repository root.")] = pathlib.Path("."),
    work_dir: Annotated[pathlib.Path | None, typer.Option(help="Where the cut Dockerfile and progress log go (default: REPO/.work/debug).")] = None,
) -> None:
    """Open a shell (or run --exec) in the build's state just before or after one Dockerfile step.

    The Dockerfile is cut at the step and built with the real build's build args and cache
    imports, so every earlier step comes from the cache. Also prints what the step's cache
    key saw change from --base to the working tree.
    """
    import secrets
    import subprocess

    from . import debug
    from .model import Output

    try:
        config.check_inputs({"--image": image, "--step": step, "--at": at, "--base": base, "--exec": exec_command,
                             "--cache-ref": cache_ref, "--cache-bust": cache_bust, "--build-arg": build_arg, "--repo": repo,
                             "--work-dir": work_dir})
    except InputError as error:
        fail_input(error)
    root = repo.resolve()
    try:
        extra_args = pipeline.parse_build_args(build_arg or [])
        options = pipeline.PipelineOptions(registry=None, tag_plan=None, images=(image,), source_date_epoch=source_date_epoch,
                                           cache=cache.CacheOptions(backend=cache_backend, bust=cache_bust, cache_ref=cache_ref or None,
                                                                    gha_tokens=all(os.environ.get(n) for n in cache.GHA_ENV)),
                                           build_args=extra_args)
        (image_plan,) = pipeline.plan(config.load(root), options, root=root)
        prepared = debug.prepare(root, image, step, at, base, dict(extra_args))
    except InputError as error:
        fail_input(error)
    for line in prepared.summary():
        say(line)
    work = (work_dir or root / ".work" / "debug").resolve() / f"{image}-{secrets.token_hex(3)}"
    work.mkdir(parents=True, exist_ok=True)
    dockerfile = pathlib.Path(debug.cut_path(image_plan.request.dockerfile, str(work)))
    dockerfile.write_text(prepared.cut.dockerfile)
    if prepared.dockerignore is not None:
        dockerfile.with_name(dockerfile.name + ".dockerignore").write_text(prepared.dockerignore)
    tag = f"dimbybot2-debug/{image}:{prepared.cut.at}-{'-'.join(prepared.cut.label.replace('/', ' ').split())}-{work.name[-6:]}"
    request = debug.cut_request(image_plan.request, str(dockerfile), Output("load", names=(tag,)))
    with local.docker_config() as env:
        built = local.run_build(request, root, work, env)
        if not built.ok:
            say(f"error: the build failed before reaching {prepared.cut.label}: {built.log.error or built.stderr_tail.strip()[-300:]}")
            raise typer.Exit(1)
        say(f"  reached in {built.seconds:.1f} s ({built.log.cached_count}/{len(built.log.cacheable)} steps from the cache)"
            + (f"; kept as {tag}" if keep else ""))
        if exec_command is None:
            say("  shell: `exit` to leave")
        try:
            code = subprocess.run(debug.shell_argv(local.DOCKER, tag, exec_command, prepared.cut.run_env, sys.stdin.isatty()),
                                  env=env, check=False).returncode
        finally:
            if not keep:
                subprocess.run([local.DOCKER, "image", "rm", "--force", tag], env=env, capture_output=True, check=False)
    raise typer.Exit(code)


def run() -> None:
    """The console script: like `app()`, but click's usage errors (unknown option, bad choice,
    missing option) are one line naming the argument, exit 2, instead of a framed panel."""
    try:  # typer >= 0.26 vendors click; older typer uses click itself
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover
        from click.exceptions import UsageError  # type: ignore[import-not-found,no-redef]

    try:
        code = app(standalone_mode=False)
    except UsageError as error:
        # click repeats the value it refused: as one printable line, and not 120k characters of it.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in error.format_message())
        say(f"error: {message[:400]}{'...' if len(message) > 400 else ''}")
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    run()

"""The `dimbybot-ci trends` verb (registered in cli.py): build reports of many runs -> table, JSON,
markdown with Mermaid charts, a chart file, and alerts with the first command to run."""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import charts, config, trends, trends_alerts, trends_github, trends_report
from .errors import InputError, PipelineError

# Wide enough for the table when piped (rich assumes 80 columns without a terminal).
out = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 150)


def _say(line: str) -> None:
    sys.stderr.write(line.replace("\n", " ") + "\n")


def _fail_input(error: InputError) -> typer.Exit:
    _say(f"error: {error}")
    return typer.Exit(2)


def _table(collection: trends.Collection, image: str) -> Table:
    series = collection.series(image)
    table = Table(title=f"{image}: {len(series)} run(s)")
    for column in ("run", "time", "branch", "duration", "hit ratio", "missed steps", "cache import", "cache export"):
        table.add_column(column)
    for run, s in series:
        def status(value: str) -> str:
            return "[red]failed[/red]" if value == "failed" else value
        ratio = f"{s.hit_ratio:.0%}" if s.hit_ratio >= run.hit_goal else f"[yellow]{s.hit_ratio:.0%}[/yellow]"
        missed = ", ".join(s.missed_steps[:2]) + (f" +{len(s.missed_steps) - 2}" if len(s.missed_steps) > 2 else "")
        table.add_row(escape(run.info.short), escape((run.info.time or "-")[:16].replace("T", " ")), escape(run.info.branch or "-"),
                      "[red]build failed[/red]" if s.error else f"{s.duration:.1f} s", ratio,
                      escape(missed or "-"), status(s.cache_import), status(s.cache_export))
    return table


def trends_command(
    paths: Annotated[list[pathlib.Path] | None, typer.Argument(help="report.json files, or directories of downloaded reports (searched recursively).")] = None,
    github: Annotated[str, typer.Option(help="OWNER/REPO: read the build-report artifacts of its last runs through GitHub's REST API.")] = "",
    workflow: Annotated[str, typer.Option(help="With --github: the workflow file whose runs to read.")] = "deploy.yml",
    branch: Annotated[str | None, typer.Option(help="Only runs of this branch (e.g. the default branch).")] = None,
    last: Annotated[int, typer.Option(help="How many of the most recent runs.")] = 20,
    artifact: Annotated[str, typer.Option(help="With --github: the artifact holding report.json.")] = "build-report",
    token_env: Annotated[str, typer.Option(help="With --github: environment variable holding a token with actions:read.")] = "GITHUB_TOKEN",  # noqa: S107
    api_url: Annotated[str, typer.Option(help="With --github: the REST API root (GitHub Enterprise, or a stand-in).")] = trends_github.API_URL,
    download_dir: Annotated[pathlib.Path | None, typer.Option(help="With --github: keep each run's report.json here (DIR/RUN_ID/report.json).")] = None,
    current: Annotated[pathlib.Path | None, typer.Option(help="This run's report.json: compared, as the newest run, with the others.")] = None,
    images: Annotated[list[str] | None, typer.Option("--image", help="Only this image (repeatable).")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, json or markdown.")] = "table",
    chart: Annotated[pathlib.Path | None, typer.Option(help="Draw duration and hit ratio per image over runs into this .svg or .png.")] = None,
    summary_file: Annotated[pathlib.Path | None, typer.Option(help="Append the markdown (Mermaid charts, alerts) here, e.g. $GITHUB_STEP_SUMMARY.")] = None,
    margin: Annotated[float, typer.Option(help="'slow' alert: duration above the recent median by more than this fraction.")] = 0.25,
    quota_gb: Annotated[float, typer.Option(help="The Actions cache quota of the repository, in GB.")] = 10.0,
    fail_on_alert: Annotated[bool, typer.Option(help="Exit 1 when there is any alert.")] = False,
) -> None:
    """Trends over many runs' build reports: duration, hit ratio, missed steps, cache import/export per image; alerts.

    Exit 0 (also with alerts, unless --fail-on-alert), 1 when GitHub cannot be read, 2 on bad input.
    A missing, partial or corrupt report is one line on stderr and the rest is still trended.
    """
    try:
        config.check_inputs({"PATHS": paths, "--github": github, "--workflow": workflow, "--branch": branch, "--artifact": artifact,
                             "--token-env": token_env, "--api-url": api_url, "--download-dir": download_dir, "--current": current,
                             "--image": images, "--format": output_format, "--chart": chart, "--summary-file": summary_file})
        config.check_output_files({"--summary-file": summary_file, "--chart": chart})
    except InputError as error:
        raise _fail_input(error) from None
    token = os.environ.get(token_env, "") if github else ""
    try:
        if output_format not in ("table", "json", "markdown"):
            raise InputError("--format", f"expected table, json or markdown, got {output_format!r}")
        if not paths and not github:
            raise InputError("PATHS", "give report files or directories, or --github OWNER/REPO")
        if margin < 0:
            raise InputError("--margin", f"must be 0 or more, got {margin}")
        if quota_gb <= 0:
            raise InputError("--quota-gb", f"must be more than 0, got {quota_gb}")
        if chart is not None:
            charts.chart_format(chart)
        source = None
        if github:
            source = trends_github.Source(repository=github, workflow=workflow, branch=branch, last=last, artifact=artifact,
                                          api_url=api_url, quota_bytes=int(quota_gb * 1000**3)).validated()
            if not token.strip():
                raise InputError("--token-env", f"environment variable {token_env} is empty or not set")
            config.check_text(token, "--token-env", option_like=True)  # goes into a header; never shown
        elif not 1 <= last <= 1000:
            raise InputError("--last", f"must be between 1 and 1000, got {last}")
        this_run = None
        if current is not None:
            try:
                this_run, _ = trends.read_report(current.read_bytes(), str(current))
            except (OSError, trends.ReportError) as error:
                raise InputError("--current", f"{current}: {getattr(error, 'strerror', None) or error}") from None
    except InputError as error:
        raise _fail_input(error) from None

    collection = trends.load_paths(paths or [])
    usages: list[trends.CacheUsage] = []
    if source is not None:
        try:
            fetched, usages = trends_github.fetch(source, token, download_dir)
        except PipelineError as error:
            _say(f"error: --github: {error}")
            raise typer.Exit(1) from None
        collection.extend(fetched)
    if this_run is not None:  # the same report may also be among PATHS: it counts once, as this run
        collection.runs = [r for r in collection.runs if not trends.same_run(r, this_run)]
    collection = trends.filter_runs(collection, branch=branch, images=images or (), last=last)
    if this_run is not None:
        kept = trends.filter_runs(trends.Collection(runs=[this_run]), images=images or ()).runs
        collection.runs.extend(kept)
        this_run = kept[0] if kept else None
    alerts = trends_alerts.evaluate(collection, trends_alerts.Thresholds(margin=margin), usages)

    for problem in collection.problems:
        _say(problem.line())
    if chart is not None:
        try:
            charts.render(collection, chart)
        except InputError as error:
            raise _fail_input(error) from None
        _say(f"chart: {chart} ({len(collection.runs)} runs)")
    scope = f"last {len(collection.runs)} runs" + (f" of {branch}" if branch else "")
    markdown = trends_report.to_markdown(collection, alerts, this_run, scope) if summary_file or output_format == "markdown" else ""
    if summary_file is not None:
        with summary_file.open("a") as stream:
            stream.write(markdown)
    if output_format == "json":
        typer.echo(trends_report.to_json(collection, alerts, usages))
    elif output_format == "markdown":
        typer.echo(markdown)
    else:
        if not collection.runs:
            _say("no usable build reports")
        for image in collection.images():
            out.print(_table(collection, image))
        for usage in usages:
            typer.echo(f"cache usage: {usage.scope}: {usage.bytes / 1e9:.2f} GB of {usage.quota_bytes / 1e9:.1f} GB ({usage.fraction:.0%})")
        for alert in alerts:
            typer.echo(f"ALERT {alert.kind} {alert.image} ({alert.run}): {alert.message}\n  first: {alert.command}")
        if collection.runs and not alerts:
            typer.echo("no alerts")
    raise typer.Exit(1 if fail_on_alert and alerts else 0)

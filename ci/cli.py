"""The `dimbybot-ci` command: thin verbs over the core, for people and machines."""

from __future__ import annotations

import typer

from . import __version__

app = typer.Typer(
    name="dimbybot-ci",
    help="Build, cache, tag, push, verify and deploy the dimbybot2 images (local driver: docker buildx).",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dimbybot-ci {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """dimbybot2 CI: the same pipeline as `dagger call`, run on this machine."""

"""Telling people how a deploy went: the step-summary section, JSON, and a Discord webhook message."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .deploy import DeployRequest, DeployResult, clean
from .errors import InputError

SCHEMA = "dimbybot2.deploy-report/1"
_VERDICT = {0: "deployed", 1: "failed", 2: "refused (nothing changed)", 3: "ROLLBACK FAILED: the host needs a person",
            4: "outcome unknown"}
_COLOUR = {0: 0x2EA043, 1: 0xD29922, 2: 0x8B949E, 3: 0xDA3633, 4: 0xDA3633}


def to_dict(request: DeployRequest, result: DeployResult) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "environment": request.environment, "host": request.host, "tag": request.tag,
        "commit": request.deployed_commit, "digests": {p.name: p.digest for p in request.pins},
        "exit_code": result.exit_code, "result": result.outcome, "reason": result.report.get("reason", ""),
        "rolled_back": result.report.get("rolled back", ""), "old_tag": result.report.get("old tag", ""),
        "services": result.services, "order": result.order, "job": result.job,
    }


def to_json(request: DeployRequest, result: DeployResult) -> str:
    return json.dumps(to_dict(request, result), indent=2)


def markdown(request: DeployRequest, result: DeployResult) -> str:
    """The deploy section of $GITHUB_STEP_SUMMARY."""
    icon = {0: "✅", 1: "⚠️", 2: "⏹️"}.get(result.exit_code, "🚨")
    lines = [f"## Deploy to {request.environment}: {icon} {_VERDICT.get(result.exit_code, result.outcome)}", "",
             "| | |", "| --- | --- |",
             f"| host | `{request.host}` {_cell(request.remote_dir)} |",
             f"| commit | `{request.deployed_commit}` |",
             f"| previous | {_cell(result.report.get('old tag', '?'))} |"]
    for pin in request.pins:
        lines.append(f"| {pin.name} | `{request.registry}/{pin.repository}@{pin.digest}` |")
    if not request.pins:
        lines.append("| images | by tag (no digests given) |")
    for service, health in sorted(result.services.items()):
        lines.append(f"| service {_cell(service)} | {_cell(health)} |")
    for key in ("rolled back", "reason"):
        if result.report.get(key):
            lines.append(f"| {key} | {_cell(result.report[key])} |")
    if result.order:
        lines.append(f"| order | {_cell(result.order)} |")
    if result.job:
        lines.append(f"| host job | {_cell(result.job)} (log: {_cell(f'{request.remote_dir}/.deploy/jobs/{result.job}/log')}) |")
    return "\n".join(lines) + "\n"


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,;=+")


def _cell(text: str, limit: int = 1000) -> str:
    """A table cell that shows `text` and nothing else: every character but letters, digits and a
    few inert ones becomes a numeric character reference. Markdown and HTML treat those as literal
    text, so no `|` ends the cell, no `<img>`, `![](...)`, link, emphasis or code span forms."""
    return "".join(c if c in _PLAIN else f"&#{ord(c)};" for c in clean(text, limit))


_DISCORD_SPECIAL = frozenset("\\*_~`|>#-[]()<@!:.+=")


def _discord(text: str, limit: int = 1000) -> str:
    """A value for a Discord embed shown as it is: each character Discord's markdown could act on
    (emphasis, code, spoiler, quote, heading, list, masked link, mention, emoji) is backslash-escaped."""
    escaped = "".join("\\" + c if c in _DISCORD_SPECIAL else c for c in clean(text, limit))
    return escaped if len(escaped) <= 1024 else escaped[:1023] + "…"


def discord_message(request: DeployRequest, result: DeployResult) -> dict[str, Any]:
    """A webhook body: one embed with the commit, digests, health and whether it rolled back."""
    fields = [{"name": "commit", "value": f"`{request.deployed_commit[:12]}`", "inline": True},
              {"name": "previous", "value": _discord(result.report.get("old tag", "?")[:12]), "inline": True}]
    for pin in request.pins:
        fields.append({"name": pin.name, "value": f"`{pin.digest[:19]}…`", "inline": True})
    if result.services:
        fields.append({"name": "health", "value": _discord(", ".join(f"{k} {v}" for k, v in sorted(result.services.items())))})
    fields.append({"name": "rolled back", "value": _discord(result.report.get("rolled back") or "no")})
    if result.report.get("reason"):
        fields.append({"name": "reason", "value": _discord(result.report["reason"], 900)})
    return {
        "username": "dimbybot2 deploy",
        "allowed_mentions": {"parse": []},
        "embeds": [{"title": f"{request.environment}: {_VERDICT.get(result.exit_code, result.outcome)}",
                    "color": _COLOUR.get(result.exit_code, 0xDA3633), "fields": fields}],
    }


def check_webhook_url(url: str, argument: str = "--webhook-env") -> str:
    """https only; plain http only to a loopback address (a local stand-in)."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
        raise InputError(argument, "the webhook URL must be https:// (the URL itself is not shown: it is a secret)")
    return url


def post_webhook(url: str, message: dict[str, Any], timeout: float = 10) -> str | None:
    """Post the message; None on success, else why (without the URL: it carries the webhook's token)."""
    request = urllib.request.Request(check_webhook_url(url), data=json.dumps(message).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "dimbybot2-deploy"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            response.read(1024)
        return None
    except urllib.error.HTTPError as err:
        return f"the webhook answered HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return f"the webhook could not be reached: {type(getattr(err, 'reason', err)).__name__}"

"""Tags: the commit SHA, `latest` and extras, validated once, and the order they move in.

The SHA tag is pushed by the build itself. The other tags follow only after it succeeded,
each pointed at the SHA tag's digest (so `latest` can never name an image that the SHA tag
does not), and `latest` goes last.
"""

from __future__ import annotations

import dataclasses
import re

from .errors import InputError

_SHA = re.compile(r"[0-9a-f]{40}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# host[:port] with no scheme: DNS labels (no leading or trailing '-', so never option-like), or
# an IPv6 literal in brackets.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::\d{{1,5}})?")
# host[:port][/path]: what goes before "/repository:tag".
_REGISTRY = re.compile(rf"{_HOST.pattern}(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_MAX_HOST = 255
_MAX_REGISTRY = 1024
# Registries Docker speaks plain HTTP to without being told (its default insecure range).
_LOOPBACK = re.compile(r"^(localhost|127(?:\.\d+){3}|\[::1\])(:\d+)?$")


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else f"{value[:40]!r}... ({len(value)} characters)"


def validate_sha(sha: str, argument: str = "--sha") -> str:
    sha = sha.strip()
    if not _SHA.fullmatch(sha):
        raise InputError(argument, f"must be a full 40-character lower-case hex commit SHA, got {_shown(sha)}")
    return sha


def validate_tag(tag: str, argument: str = "--tags") -> str:
    if not _TAG.fullmatch(tag):
        raise InputError(argument, f"{_shown(tag)} is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    return tag


def validate_host(host: str, argument: str = "--host") -> str:
    """A registry's host[:port]: never option-like (`--help`, `-x`), never longer than DNS allows."""
    if len(host) > _MAX_HOST or not _HOST.fullmatch(host):
        raise InputError(argument, f"{_shown(host)} is not a registry host[:port]")
    return host


def validate_registry(registry: str, argument: str = "--registry") -> str:
    registry = registry.strip().rstrip("/")
    if "://" in registry:
        raise InputError(argument, f"give the registry without a scheme (e.g. ghcr.io/owner), got {_shown(registry)}")
    host = registry.split("/", 1)[0]
    if len(registry) > _MAX_REGISTRY or len(host) > _MAX_HOST or not _REGISTRY.fullmatch(registry):
        raise InputError(argument, f"{_shown(registry)} is not a registry host[:port][/namespace]")
    return registry


def registry_host(registry: str) -> str:
    """The host[:port] of `host[:port][/namespace]`: what credentials and the API are for."""
    return registry.split("/", 1)[0]


def plain_http(host: str, insecure: bool = False) -> bool:
    """Whether a registry is spoken to over plain HTTP rather than HTTPS.

    One decision for every client of one registry: BuildKit's push (`registry.insecure=true`)
    and the tag moves and checks (ci.registry) must agree, or the push lands over HTTP and the
    tag move calls `https://` on the same host. `insecure` marks a registry known to speak
    HTTP only (the one the pipeline starts for itself); loopback hosts are Docker's default.
    """
    return insecure or bool(_LOOPBACK.match(host))


@dataclasses.dataclass(frozen=True)
class TagPlan:
    """The tags of one push, in the order they move."""

    sha: str
    extra: tuple[str, ...] = ()
    latest: bool = True

    @property
    def primary(self) -> str:
        return self.sha

    @property
    def followers(self) -> tuple[str, ...]:
        """Tags moved after the SHA tag was pushed; `latest` last."""
        rest = tuple(t for t in self.extra if t not in (self.sha, "latest"))
        return rest + (("latest",) if self.latest else ())

    @property
    def all(self) -> tuple[str, ...]:
        return (self.primary, *self.followers)


def plan(sha: str, latest: bool = True, extra: list[str] | tuple[str, ...] = ()) -> TagPlan:
    sha = validate_sha(sha)
    checked = tuple(dict.fromkeys(validate_tag(t) for t in extra))
    return TagPlan(sha=sha, extra=checked, latest=latest)


def image_ref(registry: str, repository: str, tag: str) -> str:
    return f"{registry}/{repository}:{tag}"

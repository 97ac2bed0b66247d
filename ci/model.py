"""The build model: one BuildRequest per image, rendered later for buildctl or buildx.

Plain data. Cache and tag policy decide what goes in (cache.py, tags.py); renderers only
translate (render.py).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

OutputKind = Literal["push", "oci", "load", "cacheonly"]


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """One --import-cache / --export-cache entry.

    `attrs` never holds a secret: credentials reach the client through the environment
    variables named in `env` (buildctl and buildx fill gha's url_v2/token from them).
    """

    type: str
    attrs: tuple[tuple[str, str], ...] = ()
    env: tuple[str, ...] = ()

    def csv(self) -> str:
        return ",".join([f"type={self.type}", *(f"{k}={v}" for k, v in self.attrs)])

    def attr(self, name: str) -> str | None:
        return dict(self.attrs).get(name)


@dataclasses.dataclass(frozen=True)
class Output:
    """Where the image goes: pushed to names, an OCI layout tarball, the local store, or nowhere."""

    kind: OutputKind
    names: tuple[str, ...] = ()
    dest: str | None = None
    rewrite_timestamp: bool = False
    insecure: bool = False  # a plain-HTTP registry (the embedded one)

    def csv(self) -> str:
        parts: list[str]
        if self.kind == "push":
            parts = ["type=image", f"name={','.join(self.names)}", "push=true"]
        elif self.kind == "oci":
            parts = ["type=oci", f"dest={self.dest}"]
            if self.names:
                parts.append(f"name={','.join(self.names)}")
        elif self.kind == "load":
            parts = ["type=docker", f"name={','.join(self.names)}"]
        else:
            parts = ["type=cacheonly"]
        if self.rewrite_timestamp and self.kind in ("push", "oci"):
            parts.append("rewrite-timestamp=true")
        if self.insecure and self.kind == "push":
            parts.append("registry.insecure=true")
        # A name containing a comma must be quoted in BuildKit's CSV syntax.
        return ",".join(f'"{p}"' if p.count(",") and p.startswith("name=") else p for p in parts)


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """Everything BuildKit needs to build one image, independent of the client."""

    image: str
    context: str
    dockerfile: str
    output: Output
    target: str | None = None
    build_args: tuple[tuple[str, str], ...] = ()
    source_date_epoch: int | None = None
    cache_from: tuple[CacheSpec, ...] = ()
    cache_to: tuple[CacheSpec, ...] = ()
    no_cache: bool = False

    @property
    def all_build_args(self) -> tuple[tuple[str, str], ...]:
        args = dict(self.build_args)
        if self.source_date_epoch is not None:
            args["SOURCE_DATE_EPOCH"] = str(self.source_date_epoch)
        return tuple(sorted(args.items()))

    @property
    def client_env(self) -> tuple[str, ...]:
        """Environment variables (names only) the client needs, e.g. for the gha cache."""
        names: dict[str, None] = {}
        for spec in (*self.cache_from, *self.cache_to):
            names.update(dict.fromkeys(spec.env))
        return tuple(names)

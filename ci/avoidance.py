"""Build avoidance: an image's input key, computed before building (issue 19).

The key covers everything the image BuildKit would produce depends on, as far as explain's
model sees it: the Dockerfile as parsed (instructions of the global ARGs and of the stages the
target builds; comments are not instructions), the target, the build args with
SOURCE_DATE_EPOCH, every step's modelled cache key with the files it selects after
`.dockerignore` (content, mode, link target), the context's directories (an empty directory or a
directory's mode is in a copied tree, not in explain's file model), the digest each base image
resolves to *now* (a moved tag must rebuild), the BuildKit that builds and the exporter's
timestamp rewrite. Equal keys mean BuildKit would hit every step and assemble the same image.

Where the model cannot see an input there is no key, and the image is built as without
avoidance: an external frontend (`# syntax=`), a remote context, `ADD` of a URL or a git
repository, a secret or ssh mount (its value can change the output), `COPY --parents` (not
modelled), a base image that cannot be resolved, or a Dockerfile explain cannot read.

Pure: files come from a Snapshot, base digests from the `resolve` callable (the drivers pass
one over ci.registry), the builder's identity from the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

from .errors import PipelineError
from .explain import predict
from .explain.dockerfile import Dockerfile, DockerfileError, Instruction, Stage, mount_options
from .explain.ignore import IgnoreRules
from .explain.predict import BuildInput
from .explain.snapshot import DirSnapshot, Snapshot, normalise
from .explain.syntax import parse_syntax
from .model import BuildRequest

SCHEMA = "dimbybot2.inputs/1"  # part of every key: a change to what keys contain changes them all
TAG_PREFIX = "inputs-"

Resolver = Callable[[str], str]  # image reference -> manifest digest; PipelineError when it cannot


@dataclasses.dataclass(frozen=True)
class BaseImage:
    ref: str  # as the Dockerfile names it, after ARG expansion
    digest: str


@dataclasses.dataclass(frozen=True)
class InputKey:
    """An image's input key, or why there is none (`reason`)."""

    key: str | None
    reason: str = ""
    bases: tuple[BaseImage, ...] = ()

    @property
    def tag(self) -> str | None:
        return TAG_PREFIX + self.key if self.key else None


def _no_key(reason: str) -> InputKey:
    return InputKey(None, reason)


def _instruction(ins: Instruction) -> dict[str, Any]:
    """What the parser made of an instruction (continuations joined, comment lines gone)."""
    return {"keyword": ins.keyword, "args": ins.args, "flags": list(ins.flags), "rest": ins.rest,
            "words": list(ins.words), "json": ins.json,
            "heredocs": [(h.name, h.content, h.expand, h.chomp, h.fd) for h in ins.heredocs]}


def undecidable(dockerfile: Dockerfile, stages: list[Stage]) -> str | None:
    """Why the model cannot see every input of these stages, if it cannot."""
    for stage in stages:
        for ins in stage.instructions:
            where = f"line {ins.line}: `{ins.text[:60]}`"
            if ins.keyword == "ADD":
                sources = ins.words[:-1]
                if any("://" in s or s.startswith("git@") for s in sources) or ins.flag("checksum") or ins.flag("keep-git-dir"):
                    return f"{where} adds a remote source, which only BuildKit fetches"
            if ins.keyword == "COPY" and ins.flag("parents") == "true":
                return f"{where}: COPY --parents is not modelled"
            if ins.keyword == "RUN":
                for spec in ins.flag_values("mount"):
                    kind = mount_options(spec).get("type", "bind")
                    if kind in ("secret", "ssh"):
                        return f"{where} mounts a {kind}, whose value can change the output"
    return None


def _images(steps: list[predict.ModelStep]) -> list[str]:
    """Every image the target reads: FROM bases, `COPY --from=<image>`, `RUN --mount=from=<image>`."""
    refs: list[str] = []
    for step in steps:
        if step.keyword == "FROM":
            refs.append(str(step.parts["base"]))
        content = step.parts.get("content")
        if isinstance(content, dict) and "image" in content:
            refs.append(str(content["image"]))
        for mount in step.parts.get("mounts", []):
            inner = mount.get("content") if isinstance(mount, dict) else None
            if isinstance(inner, dict) and "image" in inner:
                refs.append(str(inner["image"]))
    return list(dict.fromkeys(refs))


def _directories(snapshot: Snapshot, context: str, rules: IgnoreRules) -> list[tuple[str, str]]:
    """The context's directories BuildKit would send, with their modes (git has no directories)."""
    if not isinstance(snapshot, DirSnapshot):
        return []
    base = snapshot.root / normalise(context)
    found: list[tuple[str, str]] = []
    for current, dirs, _ in os.walk(base):
        rel_dir = os.path.relpath(current, base).replace(os.sep, "/")
        kept = []
        for name in sorted(d for d in dirs if d != ".git"):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rules.excludes_tree(rel):
                continue  # nothing below it reaches BuildKit
            kept.append(name)
            st = os.lstat(os.path.join(current, name))
            if stat.S_ISDIR(st.st_mode) and not rules.ignored(rel):
                found.append((rel, oct(stat.S_IMODE(st.st_mode))))
        dirs[:] = kept
    return found


def _ignore_rules(snapshot: Snapshot, request: BuildRequest) -> IgnoreRules:
    own = snapshot.read(normalise(request.dockerfile) + ".dockerignore")
    if own is not None:
        return IgnoreRules.parse(own)
    context = normalise(request.context)
    return IgnoreRules.parse(snapshot.read(f"{context}/.dockerignore" if context else ".dockerignore"))


def _digest_of(ref: str) -> str | None:
    """A reference pinned by digest cannot move: its digest needs no lookup."""
    _, at, digest = ref.partition("@")
    return digest if at and digest.startswith("sha256:") else None


def input_key(snapshot: Snapshot, request: BuildRequest, builder: str, resolve: Resolver) -> InputKey:
    """The input key of one image's build, or why there is none. Never raises for a
    Dockerfile, context or registry problem: those only mean "build as usual"."""
    if "://" in request.context or request.context.startswith("git@"):
        return _no_key("the build context is remote")
    text = snapshot.read(request.dockerfile)
    if text is None:
        return _no_key(f"{request.dockerfile} not found")
    build = BuildInput(snapshot, request.dockerfile, request.context, dict(request.all_build_args), request.target)
    try:
        directives = dict(parse_syntax(text).directives)
        if "syntax" in directives:
            return _no_key(f"`# syntax={directives['syntax'][:80]}` names a frontend explain cannot see")
        dockerfile, stages, bases = predict.needed_stages(build)
        if (why := undecidable(dockerfile, stages)) is not None:
            return _no_key(why)
        rules = _ignore_rules(snapshot, request)
        if isinstance(snapshot, DirSnapshot) and snapshot.prune is None:
            # The same files, without walking trees the ignore file keeps out entirely.
            snapshot = DirSnapshot(snapshot.root, (request.context, rules.excludes_tree))
            build = dataclasses.replace(build, snapshot=snapshot)
        steps = predict.model(build)
        directories = _directories(snapshot, request.context, rules)
    except (DockerfileError, ValueError, FileNotFoundError, OSError) as err:
        return _no_key(f"explain cannot read the build: {str(err)[:200]}")
    images = []
    for ref in _images(steps):
        try:
            images.append(BaseImage(ref, _digest_of(ref) or resolve(ref)))
        except PipelineError as err:
            return _no_key(f"base image {ref} could not be resolved ({str(err)[:200]})")
    material = {
        "schema": SCHEMA, "builder": builder, "target": request.target, "build_args": request.all_build_args,
        "rewrite_timestamp": request.output.rewrite_timestamp, "escape": dockerfile.escape,
        "global_args": [_instruction(i) for i in dockerfile.global_args],
        "stages": [{"index": s.index, "name": s.name, "base": bases[s.index],
                    "instructions": [_instruction(i) for i in s.instructions]} for s in stages],
        "steps": [{"label": s.label, "key": s.key, "files": sorted(s.files.items())} for s in steps],
        "directories": directories,
        "bases": [(b.ref, b.digest) for b in images],
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    return InputKey(key, "", tuple(images))


def split_ref(ref: str) -> tuple[str, str, str]:
    """`python:3.11` -> ("docker.io", "library/python", "3.11"), as Docker names references:
    the first part is a registry host when it has a dot or a port or is `localhost`."""
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", name
    path, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if host == "docker.io" and "/" not in path:
        path = "library/" + path
    return host, path, digest if at else (tag if colon else "latest")


# Docker Hub's name in references is not the host its API answers on.
API_HOSTS: Mapping[str, str] = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}

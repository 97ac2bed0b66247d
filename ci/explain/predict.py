"""Model BuildKit's cache key of every step, for a base and a head revision, and compare.

A head step hits when its modelled key equals the key of some step of the base build (the
cache is content-addressed: position does not matter, inputs do). What goes into a key, as
the Dockerfile frontend builds it:
  FROM       the base reference (after ARG expansion); a previous stage's result
  WORKDIR    parent + path
  RUN        parent + command text + environment (ENV, and every ARG declared in the stage
             with a value: build args count from their declaration on) + user + workdir +
             shell + mounts (a bind mount's source content counts; cache-mount contents and
             secret values do not)
  COPY/ADD   parent (not with --link) + options + destination + content of the selected
             files after .dockerignore (type, permission bits, size, content, link target;
             NOT mtime); with --from=<stage>, what that stage produced
Stages the target does not need are not built, so they are not listed.
SOURCE_DATE_EPOCH is only a build arg here: measured on BuildKit 0.13, changing it leaves
WORKDIR and COPY keys alone unless the Dockerfile declares it with ARG.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Mapping
from typing import Any, Literal

from .dockerfile import Dockerfile, Stage, arg_decls, copy_sources, env_decls, expand, parse
from .ignore import IgnoreRules
from .snapshot import FileInfo, Snapshot, comparable_mode

Status = Literal["hit", "miss"]


@dataclasses.dataclass(frozen=True)
class BuildInput:
    """What one build saw: the files, which Dockerfile and context, the build args."""

    snapshot: Snapshot
    dockerfile: str  # relative to the snapshot root
    context: str
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    target: str | None = None


@dataclasses.dataclass
class ModelStep:
    label: str
    stage: str
    position: int
    instruction: str
    keyword: str
    key: str
    parts: dict[str, Any]
    parent: str | None  # label of the step before it in the stage
    files: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    file_stage: str | None = None  # COPY --from / RUN --mount from: the stage it reads


@dataclasses.dataclass(frozen=True)
class StepPrediction:
    label: str
    instruction: str
    status: Status
    reason: str | None
    changed_files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "instruction": self.instruction, "status": self.status,
                "reason": self.reason, "changed_files": list(self.changed_files)}


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
    name: str
    steps: tuple[StepPrediction, ...]

    @property
    def first_miss(self) -> str | None:
        return next((s.label for s in self.steps if s.status == "miss" and not s.instruction.startswith("FROM ")), None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [s.to_dict() for s in self.steps], "first_miss": self.first_miss}


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _ignore_rules(build: BuildInput) -> IgnoreRules:
    own = build.snapshot.read(build.dockerfile + ".dockerignore")
    if own is not None:
        return IgnoreRules.parse(own)
    return IgnoreRules.parse(build.snapshot.read(posixpath.join(build.context, ".dockerignore")))


class _Context:
    """The build context as BuildKit receives it: files below the context, minus ignored ones."""

    def __init__(self, build: BuildInput) -> None:
        self.build = build
        self.rules = _ignore_rules(build)
        prefix = "" if build.context in ("", ".") else build.context.strip("/") + "/"
        self.prefix = prefix
        listing = build.snapshot.listing(build.context)
        self.files: dict[str, FileInfo] = {}
        self.ignored: set[str] = set()
        for path, info in listing.items():
            rel = path[len(prefix):]
            if self.rules.ignored(rel):
                self.ignored.add(rel)
            else:
                self.files[rel] = info

    def select(self, source: str) -> dict[str, tuple[Any, ...]]:
        source = posixpath.normpath(source.lstrip("/")) if source.strip("/") else "."
        chosen: dict[str, tuple[Any, ...]] = {}
        glob = any(c in source for c in "*?[")
        for rel, info in self.files.items():
            if source == "." or rel == source or rel.startswith(source + "/") or (glob and _glob_selects(source, rel)):
                mode = comparable_mode(info.mode, self.build.snapshot.exact_modes)
                digest = info.link if info.kind == "link" else self.build.snapshot.digest(self.prefix + rel)
                chosen[rel] = (info.kind, oct(mode), digest)
        return chosen


def _glob_selects(pattern: str, rel: str) -> bool:
    parts = rel.split("/")
    depth = pattern.count("/") + 1
    return len(parts) >= depth and fnmatch.fnmatchcase("/".join(parts[:depth]), pattern)


def _needed_stages(dockerfile: Dockerfile, target: str | None) -> list[Stage]:
    final = dockerfile.stage(target) if target else dockerfile.stages[-1]
    if final is None:
        raise ValueError(f"--target: no stage named {target!r}")
    needed: set[int] = set()

    def visit(stage: Stage) -> None:
        if stage.index in needed:
            return
        needed.add(stage.index)
        refs = [stage.base]
        for ins in stage.instructions:
            refs += ins.flag_values("from")
            for mount in ins.flag_values("mount"):
                refs += [v for k, _, v in (p.partition("=") for p in mount.split(",")) if k == "from"]
        for ref in refs:
            other = dockerfile.stage(ref)
            if other is not None and other.index < stage.index:
                visit(other)

    visit(final)
    return [s for s in dockerfile.stages if s.index in needed]


def model(build: BuildInput, context: _Context | None = None) -> list[ModelStep]:
    text = build.snapshot.read(build.dockerfile)
    if text is None:
        raise FileNotFoundError(f"--dockerfile: {build.dockerfile} not found")
    dockerfile = parse(text)
    context = context or _Context(build)
    global_defaults: dict[str, str | None] = {}
    for ins in dockerfile.global_args:
        for key, default in arg_decls(ins):
            global_defaults[key] = build.build_args.get(key, expand(default, {k: v for k, v in global_defaults.items() if v is not None})
                                                        if default is not None else None)
    globals_set = {k: v for k, v in global_defaults.items() if v is not None}
    stage_results: dict[int, str] = {}
    steps: list[ModelStep] = []
    for stage in _needed_stages(dockerfile, build.target):
        prefix = dockerfile.label_prefix(stage)
        total = len(stage.steps)
        stage_name = stage.name or f"stage-{stage.index}"
        env: dict[str, str] = {}
        args: dict[str, str] = {}
        user, workdir, shell = "", "/", ["/bin/sh", "-c"]
        chain = ""
        position = 0
        parent_label: str | None = None
        for ins in stage.instructions:
            variables = {**args, **env}
            if ins.keyword == "ARG":
                for key, default in arg_decls(ins):
                    if key in build.build_args:
                        args[key] = build.build_args[key]
                    elif default is not None:
                        args[key] = expand(default, variables)
                    elif key in globals_set:
                        args[key] = globals_set[key]
                continue
            if ins.keyword == "ENV":
                for key, value in env_decls(ins):
                    env[key] = expand(value, variables)
                continue
            if ins.keyword == "USER":
                user = expand(ins.args, variables)
                continue
            if ins.keyword == "SHELL":
                shell = json.loads(ins.args)
                continue
            if ins.keyword not in ("FROM", "RUN", "COPY", "ADD", "WORKDIR"):
                continue
            position += 1
            label = f"{prefix}{position}/{total}"
            step = ModelStep(label=label, stage=stage_name, position=position, instruction=ins.text, keyword=ins.keyword,
                             key="", parts={}, parent=parent_label)
            if ins.keyword == "FROM":
                base = expand(stage.base, globals_set)
                source_stage = dockerfile.stage(base)
                if source_stage is not None and source_stage.index < stage.index:
                    step.parts = {"stage": stage_results[source_stage.index]}
                    step.file_stage = source_stage.name or f"stage-{source_stage.index}"
                else:
                    step.parts = {"base": base, "platform": ins.flag("platform")}
                step.key = _hash(step.parts)
                chain = step.key
            elif ins.keyword == "WORKDIR":
                workdir = posixpath.normpath(posixpath.join(workdir, expand(ins.args, variables)))
                step.parts = {"workdir": workdir}
                step.key = _hash([chain, "WORKDIR", step.parts])
                chain = step.key
            elif ins.keyword == "RUN":
                mounts = []
                for mount in ins.flag_values("mount"):
                    spec = dict(p.partition("=")[::2] for p in mount.split(","))
                    entry: dict[str, Any] = {k: v for k, v in spec.items()}
                    if spec.get("type", "bind") == "bind":
                        source_ref = spec.get("from")
                        if source_ref and dockerfile.stage(source_ref) is not None:
                            entry["content"] = stage_results.get(dockerfile.stage(source_ref).index)  # type: ignore[union-attr]
                            step.file_stage = source_ref
                        elif not source_ref:
                            mounted = context.select(spec.get("source", spec.get("src", ".")))
                            entry["content"] = _hash(mounted)
                            step.files.update(mounted)
                    mounts.append(entry)
                step.parts = {"cmd": ins.args if not ins.flag_values("mount") else ins.rest, "flags": sorted(
                    (k, v) for k, v in ins.flags if k != "mount"), "mounts": mounts, "env": sorted(env.items()),
                    "args": sorted(args.items()), "user": user, "workdir": workdir, "shell": shell}
                step.key = _hash([chain, "RUN", step.parts])
                chain = step.key
            else:  # COPY / ADD
                sources, dest = copy_sources(ins)
                sources = [expand(s, variables) for s in sources]
                dest = posixpath.normpath(posixpath.join(workdir, expand(dest, variables))) + ("/" if dest.endswith("/") else "")
                from_ref = ins.flag("from")
                content: Any
                if from_ref is not None:
                    other = dockerfile.stage(expand(from_ref, globals_set))
                    if other is not None:
                        content = {"stage": stage_results.get(other.index), "paths": sources}
                        step.file_stage = other.name or f"stage-{other.index}"
                    else:
                        content = {"image": expand(from_ref, globals_set), "paths": sources}
                else:
                    files: dict[str, tuple[Any, ...]] = {}
                    remote = []
                    for src in sources:
                        if "://" in src:
                            remote.append(src)
                        else:
                            files.update(context.select(src))
                    step.files = files
                    content = {"files": files, "remote": remote, "sources": sources}
                link = ins.flag("link") in ("true", "")
                step.parts = {"op": ins.keyword, "dest": dest, "chown": ins.flag("chown"), "chmod": ins.flag("chmod"),
                              "link": link, "content": content}
                own = _hash([ins.keyword, step.parts])
                step.key = own if link else _hash([chain, own])
                chain = _hash([chain, own]) if link else step.key
            steps.append(step)
            parent_label = label
        stage_results[stage.index] = chain
    return steps


def _describe_files(base: Mapping[str, tuple[Any, ...]], head: Mapping[str, tuple[Any, ...]],
                    ignored_in_base: set[str], context_prefix: str) -> tuple[str, list[str]]:
    changed: list[str] = []
    words: list[str] = []
    for path in sorted(set(base) | set(head)):
        before, after = base.get(path), head.get(path)
        if before == after:
            continue
        changed.append(context_prefix + path)
        if before is None:
            why = "no longer ignored by .dockerignore" if path in ignored_in_base else "added"
        elif after is None:
            why = "removed or now ignored by .dockerignore"
        elif before[0] != after[0]:
            why = f"type {before[0]} -> {after[0]}"
        elif before[1] != after[1]:
            why = f"mode {before[1][2:]} -> {after[1][2:]}"
        elif before[2] != after[2] and before[0] == "link":
            why = "link target changed"
        else:
            why = "content changed"
        words.append(f"{context_prefix + path} ({why})")
    shown = ", ".join(words[:5]) + (f" and {len(words) - 5} more" if len(words) > 5 else "")
    return shown, changed


def _reason(head: ModelStep, base: ModelStep | None, base_steps: Mapping[str, ModelStep], misses: Mapping[str, bool],
            ignored_in_base: set[str], context_prefix: str) -> tuple[str, list[str]]:
    if base is None:
        return "new step: nothing like it in the base build", []
    hp, bp = head.parts, base.parts
    if head.instruction != base.instruction and head.keyword != "FROM":
        return f"instruction changed: `{base.instruction}` -> `{head.instruction}`", []
    if head.keyword == "FROM":
        if hp.get("base") != bp.get("base"):
            return f"base image changed: {bp.get('base')} -> {hp.get('base')}", []
        if hp.get("stage") != bp.get("stage"):
            return f"builds on stage {head.file_stage}, which was rebuilt", []
    for name, what in (("args", "build arg"), ("env", "ENV")):
        if hp.get(name) != bp.get(name):
            old, new = dict(bp.get(name) or []), dict(hp.get(name) or [])
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
            return f"{what} changed ({detail}); RUN steps see declared build args as environment", []
    for name in ("user", "workdir", "shell", "dest", "chown", "chmod", "flags"):
        if hp.get(name) != bp.get(name):
            return f"{name} changed: {bp.get(name)!r} -> {hp.get(name)!r}", []
    if head.files != base.files:
        words, changed = _describe_files(base.files, head.files, ignored_in_base, context_prefix)
        return f"files changed: {words}", changed
    if head.file_stage and head.parts != base.parts:
        culprit = next((label for label, s in base_steps.items() if s.stage == head.file_stage and misses.get(label)), None)
        hint = f" (its step {culprit} missed)" if culprit else ""
        return (f"copies from stage {head.file_stage}, which was rebuilt{hint}; BuildKit keys this copy by content, "
                "so it still hits if the rebuilt files are byte-identical"), []
    if head.parts != base.parts:
        return "step inputs changed", []
    return f"follows the miss at {head.parent}", []


def compare(name: str, base: BuildInput, head: BuildInput) -> ImagePrediction:
    """Predict every step of the head build, given that the base build filled the cache."""
    head_steps = model(head)
    base_context = _Context(base)
    try:
        base_steps = model(base, base_context)
    except (FileNotFoundError, ValueError):
        base_steps = []
    base_keys = {s.key for s in base_steps}
    by_label = {s.label: s for s in base_steps}
    by_position = {(s.stage, s.position): s for s in base_steps}
    ignored_in_base = base_context.ignored if base_steps else set()
    prefix = "" if head.context in ("", ".") else head.context.strip("/") + "/"
    predictions = []
    misses: dict[str, bool] = {}
    for step in head_steps:
        hit = step.key in base_keys
        misses[step.label] = not hit
        if hit:
            predictions.append(StepPrediction(step.label, step.instruction, "hit", None))
            continue
        counterpart = by_position.get((step.stage, step.position)) or next(
            (b for b in base_steps if b.stage == step.stage and b.instruction == step.instruction), None)
        reason, changed = _reason(step, counterpart, by_label, misses, ignored_in_base, prefix)
        predictions.append(StepPrediction(step.label, step.instruction, "miss", reason, tuple(changed)))
    return ImagePrediction(name, tuple(predictions))

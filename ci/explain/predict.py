"""Model BuildKit's cache key of every step, for a base and a head revision, and compare.

A head step hits when its modelled key equals the key of some step of the base build (the
cache is content-addressed: position does not matter, inputs do). What goes into a key, as
the Dockerfile frontend builds it:
  FROM       the base reference (after ARG expansion); a previous stage's result
  WORKDIR    parent + path
  RUN        parent + command text + environment (ENV, and every ARG declared in the stage
             or in the stage it is built FROM, with a value: build args count from their
             declaration on) + user + workdir +
             shell + mounts (a bind mount's source content counts; cache-mount contents and
             secret values do not)
  COPY/ADD   parent (not with --link) + options + destination + content of the selected
             files after .dockerignore (type, permission bits, size, content, link target;
             NOT mtime); with --from=<stage>, what that stage produced
Stages the target does not need are not built, so they are not listed.
SOURCE_DATE_EPOCH (a build arg, or a global ARG default) is folded into WORKDIR's key, as the
Dockerfile frontend >= 1.16 does (checked on Docker 28.5.2's BuildKit); COPY keys ignore it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .dockerfile import SCRATCH, Dockerfile, DockerfileError, Instruction, Stage, arg_decls, copy_sources, env_decls, expand, mount_options, parse
from .ignore import IgnoreRules
from .shell import Lex, ShellError
from .snapshot import FileInfo, Snapshot, comparable_mode, normalise
from .syntax import parse_heredoc

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
    from_stage: str | None = None  # the stage this stage is built FROM (first step only)
    # The LLB inputs of this vertex in BuildKit's marshal order (the chain it builds on, then
    # the stages it copies or mounts from): decides which label a shared vertex shows.
    inputs: list[ModelStep] = dataclasses.field(default_factory=list, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class StepPrediction:
    label: str
    instruction: str
    status: Status
    reason: str | None
    changed_files: tuple[str, ...] = ()
    # BuildKit decides this step by the bytes a rebuilt stage produced (`COPY --from`, `RUN
    # --mount=from=` are keyed by the content they read), which explain cannot know before the
    # build: "miss" then means "misses unless the rebuilt files are byte-identical". Steps that
    # only follow such a step are content-decided too.
    content_decided: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"label": self.label, "instruction": self.instruction, "status": self.status,
               "reason": self.reason, "changed_files": list(self.changed_files)}
        return {**out, "content_decided": True} if self.content_decided else out


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
    own = build.snapshot.read(normalise(build.dockerfile) + ".dockerignore")
    if own is not None:
        return IgnoreRules.parse(own)
    return IgnoreRules.parse(build.snapshot.read(posixpath.join(normalise(build.context), ".dockerignore")))


class _Context:
    """The build context as BuildKit receives it: files below the context, minus ignored ones."""

    def __init__(self, build: BuildInput) -> None:
        self.build = build
        self.rules = _ignore_rules(build)
        context = normalise(build.context)
        prefix = context + "/" if context else ""
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

    def select(self, source: str, excludes: Sequence[str] = (), parents: bool = False) -> dict[str, tuple[Any, ...]]:
        """The files a COPY/ADD source (a path, directory or glob) takes, minus `--exclude`
        patterns (matched relative to the copied directory, as BuildKit's copy does)."""
        source = posixpath.normpath(source.lstrip("/")) if source.strip("/") else "."
        excluded = IgnoreRules.from_patterns(excludes) if excludes else None
        chosen: dict[str, tuple[Any, ...]] = {}
        glob = any(c in source for c in "*?[")
        depth = source.count("/") + 1
        for rel, info in self.files.items():
            if source == ".":
                inner = rel
            elif rel == source:
                inner = posixpath.basename(rel)
            elif rel.startswith(source + "/"):
                inner = rel[len(source) + 1:]
            elif glob and _glob_selects(source, rel):
                inner = "/".join(rel.split("/")[depth:]) or posixpath.basename(rel)
            else:
                continue
            if excluded is not None and excluded.ignored(inner):
                continue
            mode = comparable_mode(info.mode, self.build.snapshot.exact_modes)
            digest = info.link if info.kind == "link" else self.build.snapshot.digest(self.prefix + rel)
            chosen[rel] = (info.kind, oct(mode), digest)
        return chosen


def _glob_selects(pattern: str, rel: str) -> bool:
    parts = rel.split("/")
    depth = pattern.count("/") + 1
    return len(parts) >= depth and fnmatch.fnmatchcase("/".join(parts[:depth]), pattern)


def _line_error(ins: Instruction, err: Exception) -> DockerfileError:
    text = str(err)
    return DockerfileError(text if text.startswith("line ") else f"line {ins.line}: {text}")


def _expand(ins: Instruction, text: str, variables: Mapping[str, str], escape: str) -> str:
    try:
        return expand(text, variables, escape)
    except DockerfileError as err:
        raise _line_error(ins, err) from None


@dataclasses.dataclass
class _State:
    """What a stage's next step sees (a stage built FROM another stage starts from its state)."""

    chain: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    # ARGs with a value: BuildKit adds each to the stage's LLB state as environment
    # (dispatchArg: d.state.AddEnv), so a child stage (FROM <stage>) inherits them with the state.
    args: dict[str, str] = dataclasses.field(default_factory=dict)
    last: ModelStep | None = None  # the chain's last vertex (None: scratch)
    user: str = ""
    workdir: str = "/"
    shell: list[str] = dataclasses.field(default_factory=lambda: ["/bin/sh", "-c"])


class _Resolved:
    """The Dockerfile with global ARGs applied: each stage's expanded base and the stages the target needs."""

    def __init__(self, dockerfile: Dockerfile, build: BuildInput) -> None:
        self.dockerfile = dockerfile
        host = _host_platform()
        self.globals: dict[str, str] = {"BUILDPLATFORM": host, "TARGETPLATFORM": host, "BUILDOS": "linux",
                                        "TARGETOS": "linux", "BUILDARCH": host.split("/")[1], "TARGETARCH": host.split("/")[1]}
        automatic = set(self.globals)
        for ins in dockerfile.global_args:
            for key, default in arg_decls(ins):
                if key in build.build_args:
                    self.globals[key] = build.build_args[key]
                elif default is not None:
                    self.globals[key] = _expand(ins, default, self.globals, dockerfile.escape)
        self.declared_globals = {k: v for k, v in self.globals.items() if k not in automatic or k in build.build_args}
        self.bases: dict[int, str] = {}
        for stage in dockerfile.stages:
            base = _expand(stage.instructions[0], stage.base, self.globals, dockerfile.escape)
            if not base:
                raise DockerfileError(f"line {stage.instructions[0].line}: base name ({stage.base}) should not be blank")
            self.bases[stage.index] = base

    def base_stage(self, stage: Stage) -> Stage | None:
        return self.dockerfile.base_stage(stage, self.bases[stage.index])

    def needed(self, target: str | None) -> list[Stage]:
        final = self.dockerfile.stage(target) if target else self.dockerfile.stages[-1]
        if final is None:
            raise ValueError(f"--target: no such target stage {target!r}")
        needed: set[int] = set()

        def visit(stage: Stage) -> None:
            if stage.index in needed:
                return
            needed.add(stage.index)
            refs = []
            for ins in stage.instructions:
                refs += ins.flag_values("from") if ins.keyword == "COPY" else []
                refs += [mount_options(m).get("from", "") for m in ins.flag_values("mount")]
            others = [self.dockerfile.stage(ref) for ref in refs if ref]
            for other in [self.base_stage(stage), *others]:
                if other is not None:
                    if other.index > stage.index:
                        raise DockerfileError(f"cannot copy from stage {other.label_name!r}, it needs to be defined "
                                              f"before current stage {stage.label_name!r}")
                    visit(other)

        visit(final)
        return [s for s in self.dockerfile.stages if s.index in needed]


def needed_stages(build: BuildInput) -> tuple[Dockerfile, list[Stage], dict[int, str]]:
    """The parsed Dockerfile, the stages the target builds (in file order) and each stage's
    base after global ARG expansion: what build avoidance (ci.avoidance) keys besides the steps."""
    text = build.snapshot.read(build.dockerfile)
    if text is None:
        raise FileNotFoundError(f"--dockerfile: {build.dockerfile} not found")
    resolved = _Resolved(parse(text), build)
    return resolved.dockerfile, resolved.needed(build.target), resolved.bases


def _host_platform() -> str:
    import platform

    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def model(build: BuildInput, context: _Context | None = None) -> list[ModelStep]:
    """Every step the target builds, with BuildKit's label and a modelled cache key.
    Raises DockerfileError (one line) for a Dockerfile BuildKit would refuse."""
    text = build.snapshot.read(build.dockerfile)
    if text is None:
        raise FileNotFoundError(f"--dockerfile: {build.dockerfile} not found")
    dockerfile = parse(text)
    resolved = _Resolved(dockerfile, build)
    context = context or _Context(build)
    epoch = build.build_args.get("SOURCE_DATE_EPOCH", resolved.declared_globals.get("SOURCE_DATE_EPOCH"))
    finals: dict[int, _State] = {}
    steps: list[ModelStep] = []
    needed = resolved.needed(build.target)
    for stage in needed:
        steps += _stage_steps(stage, resolved, build, context, finals, epoch)
    # Identical steps in two stages (same parent, same inputs) are one vertex in BuildKit. Its
    # name is the one marshalled last: llb's marshal (client/llb/state.go) walks the target's
    # inputs depth first (a copy's destination chain before its source, an exec's mounts by
    # target) and each vertex's metadata overwrites the earlier one of the same digest.
    order = _marshal_order(finals[needed[-1].index].last if needed else None)
    position = {id(step): index for index, step in enumerate(order)}
    winner: dict[str, ModelStep] = {}
    for index, step in enumerate(steps):
        held = winner.get(step.key)
        if held is None or position.get(id(step), index) >= position.get(id(held), -1):
            winner[step.key] = step
    return [step for step in steps if winner[step.key] is step]


def _marshal_order(final: ModelStep | None) -> list[ModelStep]:
    """Vertices in the order BuildKit's llb marshal writes them (post-order, inputs first)."""
    order: list[ModelStep] = []
    seen: set[int] = set()
    stack: list[tuple[ModelStep, int]] = [(final, 0)] if final is not None else []
    while stack:
        step, next_input = stack.pop()
        if next_input == 0:
            if id(step) in seen:
                continue
            seen.add(id(step))
        if next_input < len(step.inputs):
            stack.append((step, next_input + 1))
            stack.append((step.inputs[next_input], 0))
        else:
            order.append(step)
    return order


def _stage_steps(stage: Stage, resolved: _Resolved, build: BuildInput, context: _Context,
                 finals: dict[int, _State], epoch: str | None) -> list[ModelStep]:
    dockerfile, escape = resolved.dockerfile, resolved.dockerfile.escape
    base = resolved.bases[stage.index]
    parent_stage = resolved.base_stage(stage)
    from_ins = stage.instructions[0]
    from_vertex = parent_stage is None and base != SCRATCH
    total = int(from_vertex) + sum(1 for i in stage.instructions if i.keyword in ("RUN", "COPY", "ADD", "WORKDIR"))
    prefix = dockerfile.label_prefix(stage)
    steps: list[ModelStep] = []
    position = 0
    parent_label: str | None = None

    def emit(ins: Instruction, parts: dict[str, Any], key: str, **extra: Any) -> ModelStep:
        nonlocal position, parent_label
        position += 1
        label = f"{prefix}{position}/{total}"
        step = ModelStep(label=label, stage=stage.label_name, position=position, instruction=ins.text,
                         keyword=ins.keyword, key=key, parts=parts, parent=parent_label, **extra)
        if parent_label is None and parent_stage is not None:
            step.from_stage = parent_stage.label_name
        step.inputs = [state.last] if ins.keyword != "FROM" and state.last is not None else []
        for other in _source_stages(ins, resolved.dockerfile):
            if (source := finals[other.index].last) is not None:
                step.inputs.append(source)
        state.last = step
        steps.append(step)
        parent_label = label
        return step

    if parent_stage is not None:
        inherited = finals[parent_stage.index]
        state = dataclasses.replace(inherited, env=dict(inherited.env), shell=list(inherited.shell), args=dict(inherited.args))
    else:
        platform = from_ins.flag("platform")
        parts: dict[str, Any] = {"base": base, "platform": _expand(from_ins, platform, resolved.globals, escape)
                                 if platform else resolved.globals["TARGETPLATFORM"]}
        state = _State(_hash(parts))
        if from_vertex:
            emit(from_ins, parts, state.chain)
    args = state.args
    for ins in stage.instructions[1:]:
        variables = {**args, **state.env}
        if ins.keyword == "ARG":
            for key, default in arg_decls(ins):
                if key in build.build_args:
                    args[key] = build.build_args[key]
                elif default is not None:
                    args[key] = _expand(ins, default, variables, escape)
                elif key in resolved.globals:
                    args[key] = resolved.globals[key]
                variables = {**args, **state.env}
        elif ins.keyword == "ENV":
            for key, value in env_decls(ins):
                state.env[_expand(ins, key, variables, escape)] = _expand(ins, value, variables, escape)
                variables = {**args, **state.env}
        elif ins.keyword == "USER":
            state.user = _expand(ins, ins.words[0], variables, escape)
        elif ins.keyword == "SHELL":
            state.shell = list(ins.words)
        elif ins.keyword == "WORKDIR":
            state.workdir = posixpath.normpath(posixpath.join(state.workdir, _expand(ins, ins.words[0], variables, escape)))
            if state.workdir != "/":  # BuildKit counts WORKDIR / but makes no step of it
                parts = {"workdir": state.workdir, "user": state.user, "epoch": epoch}
                state.chain = _hash([state.chain, "WORKDIR", parts])
                emit(ins, parts, state.chain)
        elif ins.keyword == "RUN":
            parts, files, file_stage = _run_parts(ins, state, args, variables, resolved, context, finals, escape)
            state.chain = _hash([state.chain, "RUN", parts])
            emit(ins, parts, state.chain, files=files, file_stage=file_stage)
        elif ins.keyword in ("COPY", "ADD"):
            parts, files, file_stage = _copy_parts(ins, state, variables, resolved, context, finals, escape)
            # With --link the copy itself does not depend on the parent, but BuildKit joins it to
            # the parent in a second vertex that reruns when the parent changes; both are one step.
            state.chain = _hash([state.chain, _hash([ins.keyword, parts])])
            emit(ins, parts, state.chain, files=files, file_stage=file_stage)
    finals[stage.index] = state
    return steps


def _source_stages(ins: Instruction, dockerfile: Dockerfile) -> list[Stage]:
    """The stages a step reads besides its own chain, in LLB input order."""
    if ins.keyword == "COPY":
        refs = ins.flag_values("from")
    elif ins.keyword == "RUN":
        mounts = sorted((mount_options(m) for m in ins.flag_values("mount")), key=lambda o: o.get("target", ""))
        refs = [o.get("from", "") for o in mounts]
    else:
        return []
    return [stage for stage in (dockerfile.stage(ref) for ref in refs if ref) if stage is not None]


def _stage_content(ref: str, resolved: _Resolved, finals: Mapping[int, _State]) -> tuple[Any, str | None]:
    """What `--from=ref` reads: a stage's result (and its name), or an image."""
    other = resolved.dockerfile.stage(ref)
    if other is not None:
        return {"stage": finals[other.index].chain}, other.label_name
    return {"image": ref}, None


def _run_parts(ins: Instruction, state: _State, args: Mapping[str, str], variables: Mapping[str, str],
               resolved: _Resolved, context: _Context, finals: Mapping[int, _State],
               escape: str) -> tuple[dict[str, Any], dict[str, tuple[Any, ...]], str | None]:
    mounts: list[dict[str, Any]] = []
    files: dict[str, tuple[Any, ...]] = {}
    file_stage = None
    for spec in ins.flag_values("mount"):
        options = {k: _expand(ins, v, variables, escape) for k, v in mount_options(spec).items()}
        entry: dict[str, Any] = dict(options)
        if options.get("type", "bind") == "bind":
            if options.get("from"):
                entry["content"], file_stage = _stage_content(options["from"], resolved, finals)
            else:
                mounted = context.select(options.get("source", "."))
                entry["content"] = _hash(mounted)
                files.update(mounted)
        elif options.get("type") == "cache":
            entry = _cache_mount_key(entry)
        mounts.append(entry)
    parts = {"cmd": _run_command(ins, state),
             "flags": sorted((k, v) for k, v in ins.flags if k != "mount"), "mounts": mounts,
             "env": sorted(state.env.items()), "args": sorted(args.items()), "user": state.user,
             "workdir": state.workdir, "shell": state.shell}
    return parts, files, file_stage


def _cache_mount_key(options: dict[str, Any]) -> dict[str, Any]:
    """A cache mount as BuildKit keys it (solver/llbsolver/ops/exec.go checkShouldClearCacheOpts,
    v0.25): the id and sharing mode count only while both are the defaults (id = the cleaned
    target, sharing=shared); any other id or sharing clears both from the key."""
    target = posixpath.normpath(options.get("target", "") or ".")
    default = options.get("id", target) in (target, "") and options.get("sharing", "shared") in ("shared", "")
    key = {k: v for k, v in options.items() if k not in ("id", "sharing")}
    key["cache"] = {"id": target, "sharing": "shared"} if default else "cleared"
    return key


def _run_command(ins: Instruction, state: _State) -> Any:
    """The argv BuildKit runs: a lone `<<EOF` runs the heredoc's text itself (its name does
    not count; with `#!` it runs the text as a file named after it), any other heredoc line
    is handed to the shell with the bodies appended."""
    if ins.json:
        return list(ins.words)
    if not ins.heredocs:
        return [*state.shell, ins.rest]
    if parse_heredoc(ins.rest) is not None:
        data = ins.heredocs[0].data
        return ["/dev/pipes/" + ins.heredocs[0].name, data] if data.startswith("#!") else [*state.shell, data]
    return [*state.shell, ins.rest + "".join(f"\n{h.content}{h.name}" for h in ins.heredocs)]


def _copy_parts(ins: Instruction, state: _State, variables: Mapping[str, str], resolved: _Resolved,
                context: _Context, finals: Mapping[int, _State],
                escape: str) -> tuple[dict[str, Any], dict[str, tuple[Any, ...]], str | None]:
    sources, dest = copy_sources(ins)
    sources = [_expand(ins, s, variables, escape) for s in sources]
    dest_text = _expand(ins, dest, variables, escape)
    dest = posixpath.normpath(posixpath.join(state.workdir, dest_text)) + ("/" if dest_text.endswith("/") else "")
    excludes = [_expand(ins, p, variables, escape) for p in ins.flag_values("exclude")]
    from_ref = ins.flag("from") if ins.keyword == "COPY" else None
    files: dict[str, tuple[Any, ...]] = {}
    file_stage = None
    content: Any
    if from_ref:
        content, file_stage = _stage_content(from_ref, resolved, finals)
        content = {**content, "paths": sources}
    else:
        remote = [s for s in sources if "://" in s or s.startswith("git@")]
        if remote and ins.keyword == "COPY":
            raise DockerfileError(f"line {ins.line}: source can't be a URL for COPY")
        for src in sources:
            if src not in remote:
                files.update(context.select(src, excludes, parents=ins.flag("parents") == "true"))
        content = {"files": files, "remote": remote, "sources": sources}
    heredocs = []
    for doc in ins.heredocs:
        data = doc.data
        if doc.expand:
            try:
                data = Lex(escape, raw_quotes=True, skip_unset=True).process_word(data, variables)
            except ShellError:
                pass
        heredocs.append((doc.name, data))
    parts = {"op": ins.keyword, "dest": dest, "chown": _expand(ins, ins.flag("chown") or "", variables, escape),
             "chmod": ins.flag("chmod"), "link": ins.flag("link") == "true", "content": content, "heredocs": heredocs,
             "exclude": excludes, "parents": ins.flag("parents"), "checksum": ins.flag("checksum"),
             "unpack": ins.flag("unpack")}
    return parts, files, file_stage


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
        return f"platform changed: {bp.get('platform')} -> {hp.get('platform')}", []
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
        return (f"copies from stage {head.file_stage}, which was rebuilt{hint}; content-decided: BuildKit keys this copy by "
                "content, so it still hits if the rebuilt files are byte-identical"), []
    if head.parts != base.parts:
        return "step inputs changed", []
    if head.parent is None and head.from_stage:
        culprit = next((label for label, s in base_steps.items() if s.stage == head.from_stage and misses.get(label)), None)
        return f"builds on stage {head.from_stage}, which was rebuilt" + (f" (its step {culprit} missed)" if culprit else ""), []
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
    prefix = normalise(head.context) + "/" if normalise(head.context) else ""
    predictions = []
    misses: dict[str, bool] = {}
    decided: dict[str, bool] = {}  # label -> content-decided
    last_of_stage: dict[str, str] = {}
    for step in head_steps:
        hit = step.key in base_keys
        misses[step.label] = not hit
        if hit:
            predictions.append(StepPrediction(step.label, step.instruction, "hit", None))
            last_of_stage[step.stage] = step.label
            continue
        counterpart = by_position.get((step.stage, step.position)) or next(
            (b for b in base_steps if b.stage == step.stage and b.instruction == step.instruction), None)
        reason, changed = _reason(step, counterpart, by_label, misses, ignored_in_base, prefix)
        parent_settled = step.parent is None or not misses.get(step.parent, False) or decided.get(step.parent, False)
        if step.parent is None and step.from_stage:
            parent_settled = decided.get(last_of_stage.get(step.from_stage, ""), False) or not misses.get(
                last_of_stage.get(step.from_stage, ""), False)
        content = (reason.startswith(f"copies from stage {step.file_stage},") and parent_settled) or (
            reason.startswith("follows the miss at ") and decided.get(step.parent or "", False)) or (
            reason.startswith("builds on stage ") and decided.get(last_of_stage.get(step.from_stage or "", ""), False))
        decided[step.label] = content
        last_of_stage[step.stage] = step.label
        predictions.append(StepPrediction(step.label, step.instruction, "miss", reason, tuple(changed), content))
    return ImagePrediction(name, tuple(predictions))

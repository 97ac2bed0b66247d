"""Stand at one Dockerfile step: the build's state just before (or just after) it, and what
that step's cache key saw change between a base revision and the working tree.

How the state is reached: the Dockerfile is cut at the step. Everything before the cut is
kept byte for byte (global ARGs, earlier stages, the stage's own instructions, its ENV/ARG/
USER lines), the rest of that stage and every later stage are dropped, so the cut stage is
the last one and the build needs no `--target`. BuildKit's cache keys come from the LLB ops,
not from the Dockerfile's text or line numbers (those are only progress metadata), so with
the same build args, context and cache imports every kept step is a cache hit. Only the step
labels of the cut stage change (`deps 3/3` instead of `deps 3/4`): names, not keys.

Step labels, which steps a target needs and the first predicted miss come from explain's
model (ci/explain), so `debug` and `explain` always speak of the same steps.

`python -m ci.debug --repo DIR --image NAME --step LABEL|first-miss [--at before|after]
[--base REV] [--build-arg N=V]...` prints the plan as JSON (standard library only: the
Dagger `debug` function runs it in a plain Python container); people use `dimbybot-ci debug`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import posixpath
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from . import config as project_config
from .errors import InputError
from .explain.dockerfile import Dockerfile, DockerfileError, Instruction, parse
from .explain.predict import BuildInput, ModelStep, compare, model
from .explain.run import default_base, snapshot
from .explain.snapshot import DirSnapshot, FileInfo
from .model import BuildRequest, Output

Position = Literal["before", "after"]
FIRST_MISS = "first-miss"
POSITIONS: tuple[Position, ...] = ("before", "after")


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the build, as explain models it, tied to its Dockerfile instruction."""

    label: str
    stage_index: int
    instruction: Instruction
    modelled: ModelStep


class _TextSnapshot:
    """Only the Dockerfile: enough to model step labels (no context files are read)."""

    exact_modes = True

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def read(self, path: str) -> str | None:
        return self.text if path == self.path else None

    def listing(self, directory: str) -> dict[str, FileInfo]:
        return {}

    def digest(self, path: str) -> str:
        raise KeyError(path)


def _stage_name(dockerfile: Dockerfile, index: int) -> str:
    return dockerfile.stages[index].name or f"stage-{index}"


def steps(text: str, target: str | None = None, build_args: Mapping[str, str] | None = None) -> list[Step]:
    """The steps the target needs, in build order, each with its instruction (and line)."""
    try:
        dockerfile = parse(text)
        modelled = model(BuildInput(_TextSnapshot("Dockerfile", text), "Dockerfile", ".", dict(build_args or {}), target))
    except DockerfileError as err:
        raise InputError("--dockerfile", str(err)) from None
    except ValueError as err:  # an unknown --target
        raise InputError("--target", str(err).removeprefix("--target: ")) from None
    by_name = {_stage_name(dockerfile, s.index): s for s in dockerfile.stages}
    found: list[Step] = []
    remaining: dict[int, list[Instruction]] = {}
    for step in modelled:
        stage = by_name[step.stage]
        queue = remaining.setdefault(stage.index, list(stage.instructions))
        # The model walks a stage's instructions in order: the next one with the same text is this step.
        while queue and queue[0].text != step.instruction:
            queue.pop(0)
        if not queue:
            raise InputError("--step", f"cannot find `{step.instruction}` of {step.label} in the Dockerfile")
        found.append(Step(step.label, stage.index, queue.pop(0), step))
    return found


def _normal(label: str) -> str:
    """`[deps  4/4]`, `deps 4/4` and `DEPS 4/4` are one label (BuildKit pads the number)."""
    return " ".join(label.strip().strip("[]").split()).lower()


def find_step(text: str, label: str, target: str | None = None, build_args: Mapping[str, str] | None = None) -> Step:
    """The step with this label, or a one-line InputError naming the valid labels."""
    known = steps(text, target, build_args)
    wanted = _normal(label)
    for step in known:
        if _normal(step.label) == wanted:
            return step
    valid = ", ".join(s.label for s in known)
    stage = wanted.rsplit(" ", 1)[0] if " " in wanted else None
    dockerfile = parse(text)
    needed = {_stage_name(dockerfile, s.stage_index).lower() for s in known}
    for index in range(len(dockerfile.stages)):
        name = _stage_name(dockerfile, index)
        if stage == name.lower() and stage not in needed:
            final = target or _stage_name(dockerfile, len(dockerfile.stages) - 1)
            raise InputError("--step", f"{label!r} is in stage {name}, which target {final} does not need "
                                       f"(it is never built; valid: {valid})")
    raise InputError("--step", f"unknown step {label!r} (valid: {valid})")


@dataclasses.dataclass(frozen=True)
class Cut:
    """The Dockerfile cut at one step: build it (no target) to get the state there."""

    dockerfile: str
    label: str
    at: Position
    instruction: str
    keyword: str
    notes: tuple[str, ...] = ()
    run_env: tuple[tuple[str, str], ...] = ()  # before a RUN: the build args it sees as environment


def _mounts(instruction: Instruction) -> list[str]:
    described = []
    for spec in instruction.flag_values("mount"):
        fields = dict(part.partition("=")[::2] for part in spec.split(","))
        kind = fields.get("type", "bind")
        where = fields.get("target") or fields.get("dst") or fields.get("destination") or "?"
        extra = f" (id={fields['id']})" if "id" in fields else (f" (from={fields['from']})" if "from" in fields else "")
        described.append(f"{kind} mount at {where}{extra}")
    return described


def cut(text: str, step: Step, at: Position) -> Cut:
    """Cut the Dockerfile just before `step` (or just after it, with at="after")."""
    if at not in POSITIONS:
        raise InputError("--at", f"must be 'before' or 'after', got {at!r}")
    if at == "before" and step.instruction.keyword == "FROM":
        raise InputError("--at", f"{step.label} is the stage's FROM: nothing exists before it; use --at=after for the base image")
    dockerfile = parse(text)
    stage = dockerfile.stages[step.stage_index]
    position = stage.instructions.index(step.instruction)
    if at == "before":
        end = step.instruction.line
    else:
        following = stage.instructions[position + 1:]
        later = dockerfile.stages[step.stage_index + 1:]
        end = following[0].line if following else (later[0].instructions[0].line if later else len(text.splitlines()) + 1)
    kept = "".join(text.splitlines(keepends=True)[:end - 1])
    notes: list[str] = []
    mounts = _mounts(step.instruction)
    if mounts and at == "after":
        notes.append(f"the step ran with {', '.join(mounts)}: mount contents are not part of the image, so they are not here")
    elif mounts:
        notes.append(f"the step will run with {', '.join(mounts)}: not mounted in this state")
    run_env: tuple[tuple[str, str], ...] = ()
    if at == "before" and step.instruction.keyword == "RUN":
        run_env = tuple((str(key), str(value)) for key, value in step.modelled.parts.get("args", []))
        if run_env:
            notes.append("build args the step sees as environment are set: " + ", ".join(k for k, _ in run_env))
    return Cut(dockerfile=kept if kept.endswith("\n") else kept + "\n", label=step.label, at=at,
               instruction=step.instruction.text, keyword=step.instruction.keyword, notes=tuple(notes), run_env=run_env)


# --- what the step's cache key saw change -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    what: str  # file, build arg, env, or an input of the key (instruction, user, workdir, base, ...)
    name: str
    before: str | None
    after: str | None

    def describe(self) -> str:
        if self.before is None:
            return f"{self.what} {self.name}: added ({self.after})"
        if self.after is None:
            return f"{self.what} {self.name}: removed (was {self.before})"
        return f"{self.what} {self.name}: {self.before} -> {self.after}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StepChanges:
    label: str
    base: str  # the revision compared with the working tree
    status: str  # hit or miss, as explain predicts it
    reason: str | None
    changes: tuple[Change, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "base": self.base, "status": self.status, "reason": self.reason,
                "changes": [c.to_dict() for c in self.changes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepChanges:
        return cls(data["label"], data["base"], data["status"], data["reason"], tuple(Change(**c) for c in data["changes"]))


def _file_changes(base: Mapping[str, tuple[Any, ...]], head: Mapping[str, tuple[Any, ...]], prefix: str) -> list[Change]:
    """Selected files that differ: (kind, mode, digest) per path, as explain's model keeps them."""
    changes = []
    for path in sorted(set(base) | set(head)):
        before, after = base.get(path), head.get(path)
        if before == after:
            continue
        name = prefix + path
        if before is None or after is None:
            kind, mode, digest = after or before  # type: ignore[misc]
            state = f"{kind}, mode {str(mode)[2:]}, {str(digest)[:12]}"
            changes.append(Change("file", name, None if before is None else state, None if after is None else state))
            continue
        if before[0] != after[0]:
            changes.append(Change("file type", name, str(before[0]), str(after[0])))
        if before[1] != after[1]:
            changes.append(Change("file mode", name, str(before[1])[2:], str(after[1])[2:]))
        if before[2] != after[2]:
            changes.append(Change("file content", name, str(before[2])[:12], str(after[2])[:12]))
    return changes


def _pairs_changes(what: str, base: Any, head: Any) -> list[Change]:
    old, new = dict(base or []), dict(head or [])
    return [Change(what, key, None if key not in old else repr(old[key]), None if key not in new else repr(new[key]))
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def step_changes(base: BuildInput, head: BuildInput, label: str, base_name: str) -> StepChanges:
    """What differs, between base and head, in the inputs of this step's cache key: the
    selected files (content, mode), the build args and environment a RUN sees, and the
    step's own settings."""
    prediction = next(s for s in compare("debug", base, head).steps if s.label == label)
    if prediction.status == "hit":
        return StepChanges(label, base_name, "hit", None, ())
    head_step = next(s for s in model(head) if s.label == label)
    try:
        base_steps = model(base)
    except (FileNotFoundError, ValueError):
        base_steps = []
    counterpart = next((s for s in base_steps if s.label == label and s.instruction == head_step.instruction), None) or next(
        (s for s in base_steps if s.stage == head_step.stage and s.instruction == head_step.instruction), None)
    if counterpart is None:
        return StepChanges(label, base_name, "miss", prediction.reason,
                           (Change("step", label, None, head_step.instruction),))
    prefix = "" if head.context in ("", ".") else head.context.strip("/") + "/"
    changes: list[Change] = []
    if counterpart.instruction != head_step.instruction:
        changes.append(Change("instruction", label, counterpart.instruction, head_step.instruction))
    changes += _file_changes(counterpart.files, head_step.files, prefix)
    changes += _pairs_changes("build arg", counterpart.parts.get("args"), head_step.parts.get("args"))
    changes += _pairs_changes("env", counterpart.parts.get("env"), head_step.parts.get("env"))
    for key in sorted(set(counterpart.parts) | set(head_step.parts)):
        if key in ("args", "env", "content", "cmd"):
            continue
        before, after = counterpart.parts.get(key), head_step.parts.get(key)
        if before != after and key != "stage":
            changes.append(Change(key, label, repr(before), repr(after)))
    if head_step.file_stage and counterpart.parts.get("content", counterpart.parts.get("stage")) != head_step.parts.get(
            "content", head_step.parts.get("stage")) and not head_step.files:
        changes.append(Change("stage", head_step.file_stage, "as in the base", "rebuilt"))
    return StepChanges(label, base_name, "miss", prediction.reason, tuple(changes))


# --- a whole debug session's plan, for one configured image ------------------------------------


@dataclasses.dataclass(frozen=True)
class DebugPlan:
    image: str
    cut: Cut
    dockerignore: str | None  # the Dockerfile's own `<Dockerfile>.dockerignore`, copied next to the cut
    changes: StepChanges | None
    first_miss: bool  # the step was chosen as explain's first predicted miss

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "cut": {**dataclasses.asdict(self.cut), "notes": list(self.cut.notes),
                                            "run_env": [list(p) for p in self.cut.run_env]},
                "dockerignore": self.dockerignore, "changes": self.changes.to_dict() if self.changes else None,
                "first_miss": self.first_miss}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DebugPlan:
        raw = dict(data["cut"])
        raw["notes"] = tuple(raw["notes"])
        raw["run_env"] = tuple((k, v) for k, v in raw["run_env"])
        return cls(data["image"], Cut(**raw), data["dockerignore"],
                   StepChanges.from_dict(data["changes"]) if data["changes"] else None, data["first_miss"])

    def summary(self) -> list[str]:
        """What a person reads before the shell opens."""
        where = "first predicted miss " if self.first_miss else ""
        lines = [f"{self.image}: {self.cut.at} {where}{self.cut.label}: {self.cut.instruction.splitlines()[0][:200]}"]
        if self.changes is not None:
            if self.changes.status == "hit":
                lines.append(f"  from {_short(self.changes.base)} to the working tree this step's cache key is unchanged (it will hit)")
            else:
                lines.append(f"  from {_short(self.changes.base)} to the working tree it will miss: {self.changes.reason}")
                lines += [f"    {change.describe()}" for change in self.changes.changes]
        lines += [f"  note: {note}" for note in self.cut.notes]
        return lines


def _short(revision: str) -> str:
    return revision[:12] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision


def prepare(repo: pathlib.Path, image: str, step: str, at: str = "before", base: str | None = None,
            build_args: Mapping[str, str] | None = None) -> DebugPlan:
    """Resolve the step (a label, or `first-miss` between base and the working tree), cut
    the image's Dockerfile there, and say what the step's cache key saw change."""
    repo = repo.resolve()
    if at not in POSITIONS:
        raise InputError("--at", f"must be 'before' or 'after', got {at!r}")
    if not step.strip():
        raise InputError("--step", f"give a step label or {FIRST_MISS}")
    chosen = project_config.load(repo).image(image)
    args = {**dict(chosen.build_args), **dict(build_args or {})}
    head_snapshot = DirSnapshot(repo)
    text = head_snapshot.read(chosen.dockerfile)
    if text is None:
        raise InputError("--image", f"image {image!r}: Dockerfile {chosen.dockerfile!r} not found in {repo}")
    head = BuildInput(head_snapshot, chosen.dockerfile, chosen.context, args, chosen.target)
    first_miss = step.strip().lower() == FIRST_MISS
    base_input: BuildInput | None = None
    base_name = base or ""
    try:
        base_name = base or default_base(repo)
        base_input = BuildInput(snapshot(repo, base_name, "--base"), chosen.dockerfile, chosen.context, args, chosen.target)
    except InputError:
        if base or first_miss:  # a base the user named, or one first-miss needs, must exist
            raise
    if first_miss:
        assert base_input is not None  # noqa: S101 - raised above otherwise
        label = compare(image, base_input, head).first_miss
        if label is None:
            valid = ", ".join(s.label for s in steps(text, chosen.target, args))
            raise InputError("--step", f"no miss predicted for {image} from {base_name} to the working tree: every step "
                                       f"will hit (give a step label instead: {valid})")
        step = label
    found = find_step(text, step, chosen.target, args)
    changes = step_changes(base_input, head, found.label, base_name) if base_input is not None else None
    ignore = head_snapshot.read(chosen.dockerfile + ".dockerignore")
    return DebugPlan(image, cut(text, found, at), ignore, changes, first_miss)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci.debug")
    parser.add_argument("--repo", type=pathlib.Path, default=pathlib.Path("."))
    parser.add_argument("--image", required=True)
    parser.add_argument("--step", required=True)
    parser.add_argument("--at", default="before")
    parser.add_argument("--base")
    parser.add_argument("--build-arg", action="append", default=[])
    options = parser.parse_args(argv)
    try:
        pairs = {}
        for item in options.build_arg:
            key, sep, value = item.partition("=")
            if not sep or not re.match(r"^\w+$", key):
                raise InputError("--build-arg", f"expected NAME=value, got {item!r}")
            pairs[key] = value
        plan = prepare(options.repo, options.image, options.step, options.at, options.base, pairs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_dict(), indent=2))
    return 0


def cut_path(dockerfile: str, directory: str) -> str:
    """Where the cut Dockerfile goes: `directory/<the Dockerfile's own name>`, so that a
    `<name>.dockerignore` copied beside it is the one BuildKit reads."""
    return posixpath.join(directory, posixpath.basename(dockerfile))


def cut_request(request: BuildRequest, dockerfile_path: str, output: Output) -> BuildRequest:
    """The real build's request, pointed at the cut Dockerfile: same context, build args,
    SOURCE_DATE_EPOCH and cache imports (so every kept step hits), no target (the cut stage is
    the last one) and no cache export (a partial build must never replace the cache's index)."""
    return dataclasses.replace(request, image=f"{request.image}-debug", dockerfile=dockerfile_path, target=None,
                               cache_to=(), output=output)


# Prefer bash where the image has it; a plain sh otherwise.
INTERACTIVE_SHELL = "command -v bash >/dev/null 2>&1 && exec bash || exec sh"


def shell_argv(docker: str, tag: str, command: str | None, env: Sequence[tuple[str, str]], tty: bool) -> list[str]:
    """`docker run` for a shell (or one command) in the debug image: its own user, workdir and
    environment, plus the build args a RUN would see; removed when it exits."""
    argv = [docker, "run", "--rm", "-i", *(["-t"] if tty else []), "--entrypoint", "sh"]
    for key, value in env:
        argv += ["-e", f"{key}={value}"]
    return [*argv, tag, "-c", command if command is not None else INTERACTIVE_SHELL]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

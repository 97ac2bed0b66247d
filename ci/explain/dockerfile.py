"""A Dockerfile as BuildKit understands it: stages, their instructions, and BuildKit's checks.

`syntax.py` splits the text into instructions; here they get their meaning (flags checked,
argument counts, stages, `ONBUILD` triggers) and everything BuildKit rejects before
building is rejected with one line naming the line (`line 4: unknown instruction: FOO`).

Only FROM, RUN, COPY, ADD and WORKDIR become steps (vertices); the others (ENV, ARG, USER,
LABEL, CMD, ...) only change the state later steps see. Step labels are computed by the
predictor (predict.py), which knows which FROM and WORKDIR steps BuildKit leaves out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from .shell import Lex, ShellError
from .syntax import DockerfileError, Heredoc, Node, parse_heredoc, parse_syntax

__all__ = ["STEP_KEYWORDS", "Dockerfile", "DockerfileError", "Heredoc", "Instruction", "Stage", "arg_decls",
           "copy_sources", "env_decls", "expand", "parse"]

STEP_KEYWORDS = frozenset({"FROM", "RUN", "COPY", "ADD", "WORKDIR"})
SCRATCH = "scratch"

_STRING, _STRINGS, _BOOL = "string", "strings", "bool"
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": _STRING},
    "RUN": {"mount": _STRINGS, "network": _STRING, "security": _STRING, "device": _STRINGS},
    "COPY": {"chown": _STRING, "from": _STRING, "chmod": _STRING, "link": _BOOL, "exclude": _STRINGS, "parents": _BOOL},
    "ADD": {"chown": _STRING, "chmod": _STRING, "checksum": _STRING, "link": _BOOL, "keep-git-dir": _BOOL,
            "unpack": _BOOL, "exclude": _STRINGS},
    "HEALTHCHECK": {"interval": _STRING, "timeout": _STRING, "start-period": _STRING, "start-interval": _STRING,
                    "retries": _STRING},
}
_KNOWN = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
_EXACTLY_ONE = frozenset({"MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"})
_AT_LEAST_ONE = frozenset({"ENV", "LABEL", "ONBUILD", "HEALTHCHECK", "EXPOSE", "VOLUME", "ARG", "SHELL"})
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the text after the keyword, flags included, continuation lines joined as BuildKit joins them
    line: int
    flags: tuple[tuple[str, str], ...] = ()  # (name, value); a bare boolean flag has the value "true"
    rest: str = ""  # args without the leading --flags
    words: tuple[str, ...] = ()  # the arguments as BuildKit's parser splits them (JSON form: the list)
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    end_line: int = 0

    def flag(self, name: str) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value
        return None

    def flag_values(self, name: str) -> list[str]:
        return [value for key, value in self.flags if key == name]

    @property
    def text(self) -> str:
        """The instruction as BuildKit prints it in a step name: keyword upper-cased, the rest as written."""
        return f"{self.keyword} {self.args}".rstrip()


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    name: str | None  # lower-cased, as BuildKit keys stages
    base: str  # as written (may contain ${ARG})
    instructions: tuple[Instruction, ...]  # FROM first

    @property
    def steps(self) -> tuple[Instruction, ...]:
        return tuple(i for i in self.instructions if i.keyword in STEP_KEYWORDS)

    @property
    def label_name(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    global_args: tuple[Instruction, ...]
    stages: tuple[Stage, ...]
    escape: str = "\\"

    def stage(self, ref: str) -> Stage | None:
        """A stage by name (case-insensitive) or index, as `--from` and `--target` name them."""
        for stage in self.stages:
            if stage.name and stage.name == ref.lower():
                return stage
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None

    def base_stage(self, stage: Stage, base: str) -> Stage | None:
        """The earlier stage a FROM builds on (BuildKit matches the expanded name exactly)."""
        return next((s for s in self.stages[:stage.index] if s.name is not None and s.name == base), None)

    def external_sources(self) -> set[str]:
        """Images that `COPY --from` / `RUN --mount=from=` name directly: BuildKit counts each as a
        stage of its own (so a one-stage Dockerfile that copies from an image gets `stage-0` labels)."""
        refs: set[str] = set()
        for stage in self.stages:
            for ins in stage.instructions:
                for ref in [*ins.flag_values("from"), *(mount_options(m).get("from", "") for m in ins.flag_values("mount"))]:
                    if ref and not ref.isdigit() and self.stage(ref) is None:
                        refs.add(ref)
        return refs

    def dispatch_states(self) -> int:
        """How many dispatch states BuildKit's frontend makes: one per stage, plus one for each
        `COPY --from=<image>` (toCommand) and one for each `RUN --mount` whose `from=` names no
        stage (detectRunMount; a mount without `from=` counts as from "scratch", whatever its
        type: bind, cache, tmpfs, secret, ssh). BuildKit v0.25 dockerfile2llb/convert.go:429-431
        (Docker 28.5) drops the stage name from labels only when this is 1."""
        count = len(self.stages)
        for stage in self.stages:
            for ins in stage.instructions:
                if ins.keyword == "COPY":
                    ref = ins.flag("from")
                    count += bool(ref) and not (ref or "").isdigit() and self.stage(ref or "") is None
                elif ins.keyword == "RUN":
                    for spec in ins.flag_values("mount"):
                        ref = mount_options(spec).get("from", "") or SCRATCH
                        named = next((s for s in self.stages if s.name is not None and s.name == ref.lower()), None)
                        count += named is None
        return count

    def label_prefix(self, stage: Stage) -> str:
        """`deps ` or `stage-1 `; nothing when BuildKit sees a single dispatch state."""
        if self.dispatch_states() == 1:
            return ""
        return stage.label_name + " "


def _instruction(node: Node) -> Instruction:
    keyword = node.keyword.upper()
    if keyword not in _KNOWN:
        raise DockerfileError(f"line {node.start_line}: unknown instruction: {node.keyword}")
    flags = _check_flags(keyword, node)
    _check_args(keyword, node)
    original = node.original.strip()
    parts = re.split(r"[\t\v\f\r ]+", original, maxsplit=1)
    return Instruction(keyword, parts[1] if len(parts) > 1 else "", node.start_line, flags, node.rest, node.args,
                       node.json, node.heredocs, node.end_line)


def _check_flags(keyword: str, node: Node) -> tuple[tuple[str, str], ...]:
    allowed = _FLAGS.get(keyword, {})
    if keyword == "HEALTHCHECK" and node.args and node.args[0].upper() == "NONE":
        allowed = {}
    used: set[str] = set()
    flags: list[tuple[str, str]] = []
    for raw in node.flags:
        if raw == "--":
            break
        if not raw.startswith("--"):
            raise DockerfileError(f"line {node.start_line}: arg should start with -- : {raw}")
        name, has_value, value = raw[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise DockerfileError(f"line {node.start_line}: unknown flag: --{name}")
        if name in used and kind != _STRINGS:
            raise DockerfileError(f"line {node.start_line}: duplicate flag specified: --{name}")
        used.add(name)
        if kind == _BOOL:
            if has_value and not value:
                raise DockerfileError(f"line {node.start_line}: missing a value on flag: --{name}")
            if value.lower() not in ("", "true", "false"):
                raise DockerfileError(f"line {node.start_line}: expecting boolean value for flag --{name}, not: {value}")
            value = "false" if value.lower() == "false" else "true"
        elif not has_value:
            raise DockerfileError(f"line {node.start_line}: missing a value on flag: --{name}")
        flags.append((name, value))
    return tuple(flags)


def _check_args(keyword: str, node: Node) -> None:
    line, args = node.start_line, node.args
    if keyword in _EXACTLY_ONE and len(args) != 1:
        raise DockerfileError(f"line {line}: {keyword} requires exactly one argument")
    if keyword in _AT_LEAST_ONE and not args and node.sub is None:
        raise DockerfileError(f"line {line}: {keyword} requires at least one argument")
    if keyword in ("COPY", "ADD"):
        if len(args) < 2:
            raise DockerfileError(f"line {line}: {keyword} requires at least two arguments, but only one was provided. "
                                  "Destination could not be determined")
        if parse_heredoc(args[-1]) is not None:
            raise DockerfileError(f"line {line}: {keyword} cannot accept a heredoc as a destination")
    elif keyword == "FROM":
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.match(args[2].lower()):
                raise DockerfileError(f"line {line}: invalid name for build stage: {args[2]!r}, "
                                      "name can't start with a number or contain symbols")
        elif len(args) != 1:
            raise DockerfileError(f"line {line}: FROM requires either one or three arguments")
    elif keyword in ("ENV", "LABEL", "ARG"):
        names = args[0::3] if keyword != "ARG" else [a.partition("=")[0] for a in args]
        if any(not name for name in names):
            raise DockerfileError(f"line {line}: {keyword} names can not be blank")
    elif keyword == "SHELL" and not node.json:
        raise DockerfileError(f"line {line}: SHELL requires the arguments to be in JSON form")
    elif keyword == "VOLUME" and any(not v.strip() for v in args):
        raise DockerfileError(f"line {line}: VOLUME specified can not be an empty string")
    elif keyword == "HEALTHCHECK":
        kind = args[0].upper()
        if kind == "NONE" and len(args) > 1:
            raise DockerfileError(f"line {line}: HEALTHCHECK NONE takes no arguments")
        if kind == "CMD" and len(args) < 2:
            raise DockerfileError(f"line {line}: Missing command after HEALTHCHECK CMD")
        if kind not in ("NONE", "CMD"):
            raise DockerfileError(f"line {line}: Unknown type {args[0]!r} in HEALTHCHECK (try CMD)")
    elif keyword == "ONBUILD":
        trigger = node.sub.keyword.upper() if node.sub else ""
        if trigger == "ONBUILD":
            raise DockerfileError(f"line {line}: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise DockerfileError(f"line {line}: {trigger} isn't allowed as an ONBUILD trigger")


def parse(text: str) -> Dockerfile:
    """Parse and check a Dockerfile; DockerfileError (one line, naming the line) if BuildKit would refuse it."""
    syntax = parse_syntax(text)
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    for node in syntax.nodes:
        ins = _instruction(node)
        if ins.keyword == "FROM":
            if current is not None:
                stages.append(_stage(len(stages), current))
            current = [ins]
        elif current is None:
            if ins.keyword != "ARG":
                raise DockerfileError(f"line {ins.line}: {ins.keyword} before the first FROM: no build stage in current context")
            global_args.append(ins)
        else:
            current.append(ins)
    if current is None:
        raise DockerfileError("dockerfile contains no stages to build (no FROM instruction)")
    stages.append(_stage(len(stages), current))
    dockerfile = Dockerfile(tuple(global_args), tuple(stages), syntax.escape)
    _check_stage_references(dockerfile)
    return dockerfile


def _stage(index: int, instructions: list[Instruction]) -> Stage:
    words = instructions[0].words
    name = words[2].lower() if len(words) == 3 else None
    return Stage(index, name, words[0], tuple(instructions))


def _check_stage_references(dockerfile: Dockerfile) -> None:
    """`--from` without variables, stages that exist, and no cycles (BuildKit's checks)."""
    edges: dict[int, list[int]] = {}
    for stage in dockerfile.stages:
        for ins in stage.instructions:
            refs = ins.flag_values("from") if ins.keyword == "COPY" else []
            refs += [mount_options(m).get("from", "") for m in ins.flag_values("mount")]
            for ref in filter(None, refs):
                if ins.keyword == "COPY" and "$" in ref:
                    raise DockerfileError(f"line {ins.line}: variable expansion is not supported for --from, define a new "
                                          "stage with FROM using ARG from global scope as a workaround")
                if ref.isdigit() and int(ref) >= len(dockerfile.stages):
                    raise DockerfileError(f"line {ins.line}: invalid stage index {ref}")
                other = dockerfile.stage(ref)
                if other is not None:
                    edges.setdefault(stage.index, []).append(other.index)
    state: dict[int, str] = {}

    def visit(index: int) -> None:
        state[index] = "visiting"
        for dep in edges.get(index, []):
            if state.get(dep) == "visiting":
                raise DockerfileError(f"circular dependency detected on stage: {dockerfile.stages[dep].label_name}")
            if dep not in state:
                visit(dep)
        state[index] = "done"

    for stage in dockerfile.stages:
        if stage.index not in state:
            visit(stage.index)


def mount_options(spec: str) -> dict[str, str]:
    """`type=cache,target=/c,ro` -> {"type": "cache", "target": "/c", "ro": "true"} (CSV, quotes allowed)."""
    import csv

    fields = next(csv.reader([spec]), [])
    out: dict[str, str] = {}
    for field in fields:
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        out[{"src": "source", "dst": "target", "destination": "target"}.get(key, key)] = value if sep else "true"
    return out


def arg_decls(instruction: Instruction) -> list[tuple[str, str | None]]:
    """`ARG A=1 B` -> [("A", "1"), ("B", None)]; values still to be expanded (see `expand`)."""
    return [(key, value if sep else None) for key, sep, value in (w.partition("=") for w in instruction.words)]


def env_decls(instruction: Instruction) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` or the legacy `ENV A 1`: (key, raw value); values still to be expanded."""
    triples = instruction.words
    return [(triples[i], triples[i + 1]) for i in range(0, len(triples) - 2, 3)]


def expand(text: str, variables: Mapping[str, str], escape: str = "\\") -> str:
    """Expand variables and remove quotes the way the Dockerfile frontend does for FROM, COPY,
    ADD, WORKDIR, ENV, ARG, USER (not RUN: the shell expands those at run time).
    Raises DockerfileError for a malformed `${...}`."""
    try:
        return Lex(escape).process_word(text, variables)
    except ShellError as err:
        raise DockerfileError(str(err)) from None


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of COPY/ADD, exec form or shell form; heredoc sources are left
    out (their content is in `instruction.heredocs`)."""
    if len(instruction.words) < 2:
        raise DockerfileError(f"line {instruction.line}: {instruction.keyword} requires at least two arguments")
    *sources, dest = instruction.words
    return [s for s in sources if parse_heredoc(s) is None], dest

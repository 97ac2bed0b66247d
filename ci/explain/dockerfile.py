"""A Dockerfile parser that knows what BuildKit turns into build steps.

Only FROM, RUN, COPY, ADD and WORKDIR become steps (vertices); the others (ENV, ARG, USER,
LABEL, CMD, ...) only change the state later steps see. BuildKit labels steps
`[<stage> k/n]`: n counts the stage's step instructions including FROM; an unnamed stage is
`stage-<index>`, and a Dockerfile with a single unnamed stage has no stage prefix.
"""

from __future__ import annotations

import dataclasses
import re
import shlex

STEP_KEYWORDS = frozenset({"FROM", "RUN", "COPY", "ADD", "WORKDIR"})
_FLAG = re.compile(r"^--([a-z-]+)(?:=(.*))?$")


class DockerfileError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str  # the text after the keyword, continuation lines joined, flags included
    line: int
    flags: tuple[tuple[str, str], ...] = ()
    rest: str = ""  # args without the leading --flags

    def flag(self, name: str) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value
        return None

    def flag_values(self, name: str) -> list[str]:
        return [value for key, value in self.flags if key == name]

    @property
    def text(self) -> str:
        """How BuildKit names the step: the keyword and its arguments, whitespace folded."""
        return " ".join(f"{self.keyword} {self.args}".split())


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str  # as written (may contain ${ARG})
    instructions: tuple[Instruction, ...]  # FROM first

    @property
    def steps(self) -> tuple[Instruction, ...]:
        return tuple(i for i in self.instructions if i.keyword in STEP_KEYWORDS)


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    global_args: tuple[Instruction, ...]
    stages: tuple[Stage, ...]

    def stage(self, ref: str) -> Stage | None:
        """A stage by name (case-insensitive) or index, as `--from` and `--target` name them."""
        for stage in self.stages:
            if stage.name and stage.name.lower() == ref.lower():
                return stage
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None

    def label_prefix(self, stage: Stage) -> str:
        if len(self.stages) == 1 and stage.name is None:
            return ""
        return (stage.name or f"stage-{stage.index}") + " "


def _split_flags(args: str) -> tuple[tuple[tuple[str, str], ...], str]:
    flags = []
    rest = args
    while True:
        rest = rest.lstrip()
        if not rest.startswith("--"):
            break
        token, _, remainder = rest.partition(" ")
        m = _FLAG.match(token)
        if not m:
            break
        flags.append((m[1], m[2] if m[2] is not None else "true"))
        rest = remainder
    return tuple(flags), rest.strip()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines; keep heredoc bodies whole."""
    escape = "\\"
    lines = text.splitlines()
    for raw in lines[:5]:  # parser directives come first
        m = re.match(r"^#\s*escape\s*=\s*(\S)\s*$", raw, re.I)
        if m:
            escape = m[1]
    result: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            i += 1
            continue
        if buffer and stripped.startswith("#"):
            i += 1  # comment lines inside a continuation are ignored
            continue
        if not buffer:
            start = i + 1
        if line.rstrip().endswith(escape):
            buffer.append(line.rstrip()[:-1])
            i += 1
            continue
        buffer.append(line)
        joined = " ".join(part.strip() for part in buffer)
        buffer = []
        heredoc = re.search(r"<<-?([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1", joined)
        if heredoc and joined.split(" ", 1)[0].upper() in ("RUN", "COPY", "ADD"):
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != heredoc[2]:
                body.append(lines[i])
                i += 1
            joined = joined + "\n" + "\n".join(body) + "\n" + heredoc[2]
        result.append((start, joined))
        i += 1
    if buffer:
        result.append((start, " ".join(part.strip() for part in buffer)))
    return result


def parse(text: str) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    name: str | None = None
    base = ""
    for line, content in _logical_lines(text):
        keyword, _, args = content.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        flags, rest = _split_flags(args) if keyword in ("FROM", "RUN", "COPY", "ADD") else ((), args)
        instruction = Instruction(keyword, args, line, flags, rest)
        if keyword == "FROM":
            if current is not None:
                stages.append(Stage(len(stages), name, base, tuple(current)))
            parts = rest.split()
            if not parts:
                raise DockerfileError(f"line {line}: FROM needs an image")
            base = parts[0]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            current = [instruction]
        elif current is None:
            if keyword != "ARG":
                raise DockerfileError(f"line {line}: {keyword} before the first FROM")
            global_args.append(instruction)
        else:
            current.append(instruction)
    if current is not None:
        stages.append(Stage(len(stages), name, base, tuple(current)))
    if not stages:
        raise DockerfileError("no FROM instruction")
    return Dockerfile(tuple(global_args), tuple(stages))


def arg_decls(instruction: Instruction) -> list[tuple[str, str | None]]:
    """`ARG A=1 B` -> [("A", "1"), ("B", None)]."""
    decls = []
    for token in shlex.split(instruction.args):
        key, sep, value = token.partition("=")
        decls.append((key, value if sep else None))
    return decls


def env_decls(instruction: Instruction) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` or the legacy `ENV A 1`."""
    tokens = shlex.split(instruction.args)
    if tokens and "=" not in tokens[0]:
        return [(tokens[0], " ".join(tokens[1:]))]
    return [(k, v) for k, _, v in (t.partition("=") for t in tokens)]


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, variables: dict[str, str]) -> str:
    """Expand $VAR / ${VAR} / ${VAR:-default} the way the Dockerfile frontend does for
    FROM, COPY, ADD, WORKDIR, ENV, USER (not RUN: the shell expands those at run time)."""

    def repl(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        whole = m[0]
        default = re.match(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}$", whole)
        alternative = re.match(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\+(.*)\}$", whole)
        value = variables.get(name)
        if alternative:
            return alternative[1] if value else ""
        if value is None or (value == "" and default and ":-" in whole):
            return default[1] if default else ""
        return value

    return _VAR.sub(repl, text)


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of COPY/ADD, exec form or shell form."""
    rest = instruction.rest
    if rest.startswith("["):
        import json

        parts = json.loads(rest)
    else:
        parts = rest.split("\n", 1)[0].split()
    if len(parts) < 2:
        raise DockerfileError(f"line {instruction.line}: {instruction.keyword} needs a source and a destination")
    return parts[:-1], parts[-1]

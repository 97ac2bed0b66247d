"""The Dockerfile's surface syntax, read the way BuildKit's parser reads it
(frontend/dockerfile/parser): lines into instructions, before any meaning is given to them.

- A UTF-8 byte-order mark at the start is ignored.
- Parser directives (`# escape=`, `# syntax=`, `# check=`) count only at the very top: the
  first line that is not one (a comment, a blank line, an instruction) ends them.
- Continuation lines are joined verbatim: the escape character (and spaces/tabs after it)
  is removed, nothing else; indentation and spaces before the escape are kept. An escaped
  escape character at the end of a line is not a continuation. Comment lines and blank
  lines inside a continuation are skipped and do not end the instruction.
- Any whitespace separates the keyword from its arguments; `--flags` come first, `--` ends
  them.
- Heredocs (`<<EOF`, `<<-EOF`, `<<'EOF'`, several on a line) in RUN, COPY and ADD (not in
  JSON form) take the lines that follow up to their terminator.
"""

from __future__ import annotations

import dataclasses
import json
import re

from .shell import Lex, ShellError

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_HEREDOC_KEYWORDS = frozenset({"add", "copy", "run"})


class DockerfileError(ValueError):
    """A Dockerfile BuildKit would reject; the message names the line."""


@dataclasses.dataclass(frozen=True)
class Heredoc:
    name: str
    content: str  # the body lines as written, each with its newline
    expand: bool = True  # False when the name was quoted: no variable expansion in the body
    chomp: bool = False  # `<<-`: leading tabs are removed from the body
    fd: int = 0

    @property
    def data(self) -> str:
        """The content as the file or script receives it."""
        return re.sub(r"(?m)^\t+", "", self.content) if self.chomp else self.content


@dataclasses.dataclass(frozen=True)
class Node:
    """One instruction as the parser leaves it."""

    keyword: str  # as written
    args: tuple[str, ...]  # the arguments as the keyword's line parser splits them
    flags: tuple[str, ...]  # `--name=value`, quotes removed
    original: str  # the whole instruction, continuation lines joined
    start_line: int
    end_line: int
    json: bool = False  # exec (JSON array) form
    heredocs: tuple[Heredoc, ...] = ()
    sub: Node | None = None  # ONBUILD's instruction
    rest: str = ""  # the text after the keyword and its flags


@dataclasses.dataclass(frozen=True)
class Syntax:
    nodes: tuple[Node, ...]
    escape: str
    directives: tuple[tuple[str, str], ...] = ()


class _Directives:
    def __init__(self) -> None:
        self.done = False
        self.seen: dict[str, str] = {}
        self.escape = "\\"
        self.continuation = self._continuation("\\")

    @staticmethod
    def _continuation(escape: str) -> re.Pattern[str]:
        e = re.escape(escape)
        return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")

    def feed(self, line: str, number: int) -> None:
        if self.done:
            return
        if not line.startswith("#"):
            self.done = True
            return
        m = _DIRECTIVE.match(line[1:].lstrip())
        if not m or m[1].lower() not in _DIRECTIVES:
            self.done = True
            return
        name = m[1].lower()
        if name in self.seen:
            raise DockerfileError(f"line {number}: only one {name} parser directive can be used")
        self.seen[name] = m[2]
        if name == "escape":
            if m[2] not in ("`", "\\"):
                raise DockerfileError(f"line {number}: invalid escape token '{m[2]}' does not match ` or \\")
            self.escape = m[2]
            self.continuation = self._continuation(m[2])

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """(line without its continuation mark, whether the instruction ends here)."""
        if self.continuation.search(line):
            return self.continuation.sub(lambda m: m[1] or "", line), False
        return line, True


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def parse_syntax(text: str) -> Syntax:
    """Split a Dockerfile into instructions, or raise DockerfileError naming the line."""
    text = text.removeprefix("\ufeff")
    lines = _lines(text)
    d = _Directives()
    nodes: list[Node] = []
    i = current = 0
    while i < len(lines):
        token = lines[i].rstrip("\r\n").lstrip()
        i += 1
        current += 1
        d.feed(token, current)
        token = "" if token.startswith("#") else token
        start = current
        token, end = d.trim_continuation(token)
        if end and not token:
            continue
        parts = [token]
        while not end and i < len(lines):
            raw = lines[i]
            i += 1
            current += 1
            token = raw.rstrip("\r\n")
            d.feed(token, current)
            if _is_comment(raw) or not token.strip():
                continue
            token, end = d.trim_continuation(token)
            parts.append(token)
        line = "".join(parts)
        try:
            node = _node(line, d.escape, start, current)
        except (DockerfileError, ShellError) as err:
            raise DockerfileError(f"line {start}: {err}") from None
        if _can_contain_heredoc(node) and "<<" in line:
            heredocs = []
            for doc in _heredocs_in(line, start):
                body: list[str] = []
                while True:
                    if i >= len(lines):
                        raise DockerfileError(f"line {start}: unterminated heredoc {doc.name}")
                    raw = lines[i]
                    i += 1
                    current += 1
                    candidate = raw.rstrip("\r\n")
                    if (candidate.lstrip("\t") if doc.chomp else candidate) == doc.name:
                        break
                    body.append(raw)
                heredocs.append(dataclasses.replace(doc, content="".join(body)))
            node = _with_heredocs(node, tuple(heredocs), current)
        nodes.append(dataclasses.replace(node, end_line=current) if node.end_line != current else node)
    if not nodes:
        raise DockerfileError(f"line {current}: file with no instructions")
    return Syntax(tuple(nodes), d.escape, tuple(d.seen.items()))


def _with_heredocs(node: Node, heredocs: tuple[Heredoc, ...], end: int) -> Node:
    if node.sub is not None and node.keyword.lower() == "onbuild":
        return dataclasses.replace(node, sub=dataclasses.replace(node.sub, heredocs=heredocs), end_line=end)
    return dataclasses.replace(node, heredocs=heredocs, end_line=end)


def _can_contain_heredoc(node: Node) -> bool:
    if node.keyword.lower() == "onbuild" and node.sub is not None:
        node = node.sub
    return node.keyword.lower() in _HEREDOC_KEYWORDS and not node.json


def parse_heredoc(word: str) -> Heredoc | None:
    """`<<EOF`, `<<-EOF`, `3<<'EOF'` -> the heredoc it opens; None if the word opens none."""
    m = _HEREDOC.match(word)
    if not m or not m[3]:
        return None
    plain = Lex(skip_unset=True).process_words(m[3], {})
    if len(plain) != 1:
        return None
    raw = Lex(raw_quotes=True, skip_unset=True).process_words(m[3], {})

    def quotes(text: str) -> int:
        return text.count("'") + text.count('"')

    return Heredoc(plain[0], "", expand=quotes(plain[0]) == quotes(raw[0]), chomp=m[2] == "-", fd=int(m[1] or 0))


def _heredocs_in(line: str, number: int) -> list[Heredoc]:
    try:
        words = Lex(raw_quotes=True, raw_escapes=True, skip_unset=True).process_words(line, {})
    except ShellError:
        words = []
    docs = []
    for word in words:
        try:
            doc = parse_heredoc(word)
        except ShellError as err:
            raise DockerfileError(f"line {number}: {err}") from None
        if doc is not None:
            docs.append(doc)
    return docs


def _split_command(line: str, escape: str) -> tuple[str, tuple[str, ...], str]:
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    if len(parts) < 2:
        return parts[0], (), ""
    rest, flags = _builder_flags(parts[1], escape)
    return parts[0], tuple(flags), rest.strip()


def _builder_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Leading `--flag[=value]` words (quotes and escapes processed); the rest of the line."""
    words: list[str] = []
    word: list[str] = []
    phase, quote, blank_ok = "space", "", False
    pos = 0
    while pos <= len(line):
        at_end = pos == len(line)
        ch = "" if at_end else line[pos]
        if phase == "space":
            if at_end:
                break
            if ch.isspace():
                pos += 1
                continue
            if ch != "-" or pos + 1 == len(line) or line[pos + 1] != "-":
                return line[pos:], words
            phase = "word"
        if at_end:
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if phase == "word":
            if ch.isspace():
                text = "".join(word)
                phase = "space"
                if text == "--":
                    return line[pos:], words
                if blank_ok or text:
                    words.append(text)
                word, blank_ok = [], False
            elif ch in "'\"":
                quote, blank_ok, phase = ch, True, "quote"
            elif ch == escape:
                if pos + 1 < len(line):
                    pos += 1
                    word.append(line[pos])
            else:
                word.append(ch)
        elif ch == quote:
            phase = "word"
        elif ch == escape:
            if pos + 1 == len(line):
                phase = "word"
            else:
                pos += 1
                word.append(line[pos])
        else:
            word.append(ch)
        pos += 1
    return "", words


def _node(line: str, escape: str, start: int, end: int) -> Node:
    keyword, flags, rest = _split_command(line, escape)
    args: tuple[str, ...] = ()
    is_json = False
    sub: Node | None = None
    kind = keyword.lower()
    if kind in ("add", "copy", "volume"):
        args, is_json = _json_or_words(rest)
    elif kind in ("cmd", "entrypoint", "run", "shell"):
        args, is_json = _json_or_string(rest)
    elif kind in ("expose", "from"):
        args = tuple(_WHITESPACE.split(rest)) if rest else ()
    elif kind in ("maintainer", "stopsignal", "user", "workdir"):
        args = (rest,) if rest else ()
    elif kind == "arg":
        args = tuple(words(rest, escape))
    elif kind in ("env", "label"):
        args = _name_values(rest, kind.upper(), escape)
    elif kind == "healthcheck":
        args, is_json = _health(rest)
    elif kind == "onbuild" and rest:
        sub = _node(rest, escape, start, end)
    return Node(keyword, args, flags, line, start, end, is_json, (), sub, rest)


def _json(rest: str) -> tuple[str, ...] | None:
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise DockerfileError("when using JSON array syntax, arrays must be comprised of strings only")
    return tuple(value)


def _json_or_words(rest: str) -> tuple[tuple[str, ...], bool]:
    parsed = _json(rest)
    if parsed is not None:
        return parsed, True
    return (tuple(_WHITESPACE.split(rest)) if rest else ()), False


def _json_or_string(rest: str) -> tuple[tuple[str, ...], bool]:
    if not rest:
        return (), False
    parsed = _json(rest)
    return (parsed, True) if parsed is not None else ((rest,), False)


def _health(rest: str) -> tuple[tuple[str, ...], bool]:
    sep = next((i for i, ch in enumerate(rest) if ch.isspace()), len(rest))
    if sep == 0:
        return (), False
    command, is_json = _json_or_string(rest[sep:].lstrip())
    return (rest[:sep], *command), is_json


def words(rest: str, escape: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes (removed later, per value)."""
    out: list[str] = []
    word: list[str] = []
    phase, quote, blank_ok = "space", "", False
    pos = 0
    while pos <= len(rest):
        at_end = pos == len(rest)
        ch = "" if at_end else rest[pos]
        pos += 1
        if phase == "space":
            if at_end:
                break
            if ch.isspace():
                continue
            phase = "word"
        if at_end:
            if blank_ok or word:
                out.append("".join(word))
            break
        if phase == "word":
            if ch.isspace():
                phase = "space"
                if blank_ok or word:
                    out.append("".join(word))
                word, blank_ok = [], False
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, "quote"
            if ch == escape:
                if pos == len(rest):
                    continue
                word.append(ch)
                ch = rest[pos]
                pos += 1
            word.append(ch)
            continue
        if ch == quote:
            phase = "word"
        if ch == escape and quote != "'":
            if pos == len(rest):
                phase = "word"
                continue
            word.append(ch)
            ch = rest[pos]
            pos += 1
        word.append(ch)
    return out


def _name_values(rest: str, keyword: str, escape: str) -> tuple[str, ...]:
    """ENV/LABEL: `k v` (legacy) or `k=v ...`, as (key, raw value, separator) triples."""
    found = words(rest, escape)
    if not found:
        return ()
    if "=" not in found[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"{keyword} must have two arguments")
        return parts[0], parts[1], ""
    out: list[str] = []
    for word in found:
        if "=" not in word:
            raise DockerfileError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        key, _, value = word.partition("=")
        out += [key, value, "="]
    return tuple(out)

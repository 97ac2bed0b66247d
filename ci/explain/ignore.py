""".dockerignore files and `COPY --exclude` patterns, with Docker's semantics
(moby/patternmatcher and its ignorefile reader).

Reading a .dockerignore: a UTF-8 byte-order mark at the start is ignored; a line is a comment
only when `#` is its first character (`  #x` is a pattern); surrounding spaces are trimmed;
`!` re-includes; patterns are cleaned paths relative to the context (`./a`, `/a`, `a//b/../a`
are all `a`).

Matching: `*` and `?` never cross `/`, `**` matches any number of directories, `[...]`
classes (`[^...]` negates), and a backslash escapes the next character (`a\\*b` is the file
`a*b`). A pattern that matches a directory matches everything below it; the last pattern
that matches a path or one of its parents decides. Malformed patterns (`!` alone, `[`, `a[`,
`[-]`, `[a-b-c]`, a trailing backslash, ...) raise `IgnorePatternError` when read, as Docker
fails the build.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import warnings
from collections.abc import Iterable
from typing import Literal

_ESCAPED = frozenset(".+()|{}$")
MatchKind = Literal["exact", "prefix", "suffix", "regexp"]


class IgnorePatternError(ValueError):
    """A pattern Docker rejects."""


def _go_clean(path: str) -> str:
    """Go's filepath.Clean: like normpath, but '//a' is '/a' and '' is '.'."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _check_syntax(pattern: str) -> None:
    """Go's filepath.Match syntax check (it validates the whole pattern)."""

    def escaped(chunk: str, i: int) -> int:
        if i >= len(chunk) or chunk[i] in "-]":
            raise IgnorePatternError(f"syntax error in pattern {pattern!r}")
        if chunk[i] == "\\":
            i += 1
            if i >= len(chunk):
                raise IgnorePatternError(f"syntax error in pattern {pattern!r}")
        i += 1
        if i >= len(chunk):
            raise IgnorePatternError(f"syntax error in pattern {pattern!r}")
        return i

    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            i += 1
            if i < len(pattern) and pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < len(pattern) and pattern[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = escaped(pattern, i)
                if pattern[i] == "-":
                    i = escaped(pattern, i + 1)
                ranges += 1
        elif ch == "\\":
            i += 2
            if i > len(pattern):
                raise IgnorePatternError(f"syntax error in pattern {pattern!r} (a trailing backslash escapes nothing)")
        else:
            i += 1


@dataclasses.dataclass(frozen=True)
class _Pattern:
    text: str
    kind: MatchKind
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, text: str) -> _Pattern:
        _check_syntax(text)
        out, i, first = "^", 0, True
        kind: MatchKind = "exact"
        while i < len(text):
            ch = text[i]
            i += 1
            if ch == "*":
                if text[i:i + 1] == "*":
                    i += 1
                    if text[i:i + 1] == "/":
                        i += 1
                    if i >= len(text):
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            out, kind = out + ".*", "regexp"
                    else:
                        out, kind = out + "(.*/)?", "regexp"
                    if first:
                        kind = "suffix"
                else:
                    out, kind = out + "[^/]*", "regexp"
            elif ch == "?":
                out, kind = out + "[^/]", "regexp"
            elif ch in _ESCAPED:
                out += "\\" + ch
            elif ch == "\\":
                if i < len(text):
                    out, kind = out + "\\" + text[i], "regexp"
                    i += 1
                else:
                    out += "\\\\"
            elif ch in "[]":
                out, kind = out + ch, "regexp"
            else:
                out += ch
            first = False
        if kind != "regexp":
            return cls(text, kind, None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return cls(text, kind, re.compile(out + "$", re.S))
        except re.error as err:
            raise IgnorePatternError(f"syntax error in pattern {text!r}: {err}") from None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


def read_ignore_file(text: str | None) -> list[str]:
    """The patterns of a .dockerignore file, `!` kept, as Docker's ignorefile.ReadAll reads them."""
    out = []
    for number, line in enumerate((text or "").split("\n")):
        line = line.removesuffix("\r")
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if negated else pattern)
    return out


@dataclasses.dataclass(frozen=True)
class IgnoreRules:
    patterns: tuple[tuple[str, bool], ...] = ()  # (cleaned pattern, is_exclusion "!")
    _compiled: tuple[_Pattern, ...] = dataclasses.field(default=(), compare=False, repr=False)
    # directory -> which patterns match it or one of its parents (a cache: contexts are large)
    _dir_hits: dict[str, tuple[bool, ...]] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str | None) -> IgnoreRules:
        """Rules from a .dockerignore file's text (None: no file)."""
        return cls.from_patterns(read_ignore_file(text))

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> IgnoreRules:
        """Rules from a pattern list (patternmatcher.New): `!` negates; IgnorePatternError if one is malformed."""
        rules: list[tuple[str, bool]] = []
        compiled: list[_Pattern] = []
        for raw in patterns:
            pattern = raw.strip()
            if not pattern:
                continue
            pattern = _go_clean(pattern)
            negated = pattern.startswith("!")
            if negated:
                if len(pattern) == 1:
                    raise IgnorePatternError('illegal exclusion pattern: "!"')
                pattern = pattern[1:]
            compiled.append(_Pattern.compile(pattern))
            rules.append((pattern, negated))
        return cls(tuple(rules), tuple(compiled))

    def _hits(self, path: str) -> tuple[bool, ...]:
        """For each pattern: does it match `path` or one of its parent directories?"""
        parent = path.rpartition("/")[0]
        inherited = self._dir_hits.get(parent) if parent else None
        if parent and inherited is None:
            inherited = self._hits(parent)
            self._dir_hits[parent] = inherited
        own = tuple(p.match(path) for p in self._compiled)
        return own if inherited is None else tuple(a or b for a, b in zip(inherited, own, strict=True))

    def excludes_tree(self, directory: str) -> bool:
        """Whether `directory` and everything below it is kept out: it is ignored, and no `!`
        pattern can match a path below it (its literal start leads elsewhere). A context walk
        need not enter such a directory (a `.venv`, `.git`-like trees under an allow-list)."""
        directory = directory.strip("/")
        if not self.ignored(directory):
            return False
        below = directory + "/"
        for text, negated in self.patterns:
            if negated:
                literal = text[:next((i for i, c in enumerate(text) if c in "*?[\\"), len(text))]
                if not literal or literal.startswith(below) or below.startswith(literal):
                    return False
        return True

    def ignored(self, path: str) -> bool:
        """Whether `path` (relative, '/'-separated) is kept out: the last pattern that matches
        it or a parent directory decides."""
        if not self.patterns:
            return False
        matched = False
        for hit, (_, negated) in zip(self._hits(path.strip("/")), self.patterns, strict=True):
            if hit:
                matched = not negated
        return matched

""".dockerignore matching with moby/patternmatcher semantics.

Patterns are cleaned paths relative to the context; `**` matches any number of directories;
a pattern that matches a directory excludes everything below it; `!pattern` re-includes;
the last matching pattern wins.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from functools import lru_cache


def _clean(pattern: str) -> str:
    pattern = pattern.strip().replace("\\", "/")
    cleaned = posixpath.normpath(pattern.lstrip("/")) if pattern.lstrip("/") else ""
    return "" if cleaned == "." else cleaned


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    out = "^"
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i:i + 2] == "**":
                i += 2
                if pattern[i:i + 1] == "/":
                    i += 1
                    out += "(?:.*/)?"  # zero or more directories
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                body = pattern[i + 1:end]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out += f"[{body}]"
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


@dataclasses.dataclass(frozen=True)
class IgnoreRules:
    patterns: tuple[tuple[str, bool], ...] = ()  # (pattern, is_exclusion "!")
    # directory -> which patterns match it or one of its parents (a cache: contexts are large)
    _dir_hits: dict[str, tuple[bool, ...]] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str | None) -> IgnoreRules:
        rules = []
        for raw in (text or "").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            cleaned = _clean(line[1:] if negated else line)
            if cleaned:
                rules.append((cleaned, negated))
        return cls(tuple(rules))

    def _hits(self, path: str) -> tuple[bool, ...]:
        """For each pattern: does it match `path` or one of its parent directories?"""
        parent = path.rpartition("/")[0]
        inherited = self._dir_hits.get(parent) if parent else None
        if parent and inherited is None:
            inherited = self._hits(parent)
            self._dir_hits[parent] = inherited
        own = tuple(bool(_regex(pattern).match(path)) for pattern, _ in self.patterns)
        return own if inherited is None else tuple(a or b for a, b in zip(inherited, own, strict=True))

    def ignored(self, path: str) -> bool:
        """Whether `path` (relative, '/'-separated) is kept out of the context: the last
        pattern that matches it or a parent directory decides."""
        if not self.patterns:
            return False
        matched = False
        for hit, (_, negated) in zip(self._hits(path.strip("/")), self.patterns, strict=True):
            if hit:
                matched = not negated
        return matched

    def may_contain_included(self, directory: str) -> bool:
        """Whether a directory that is itself ignored might still hold re-included files."""
        directory = directory.strip("/")
        return any(negated and (p.startswith(directory + "/") or "*" in p) for p, negated in self.patterns)

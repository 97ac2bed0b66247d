"""Variable substitution and word splitting as the Dockerfile frontend does them
(BuildKit's frontend/dockerfile/shell/lex.go), not as a POSIX shell does.

Used for FROM, COPY/ADD, WORKDIR, ENV, ARG, USER, ... arguments, for heredoc names and for
step names. Quotes are removed (`'$foo'` stays literal), the escape character escapes the
next character, and `$x`, `${x}`, `${x:-word}`, `${x-word}`, `${x:+word}`, `${x+word}`,
`${x?msg}`, `${x:?msg}`, `${x#pat}`, `${x##pat}`, `${x%pat}`, `${x%%pat}`, `${x/pat/repl}`
and `${x//pat/repl}` are expanded, nested (`${a:-${b}}`). Malformed `${` forms raise
`ShellError`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

_SPECIAL = frozenset("@*#?-$!0")
_EOF = ""


class ShellError(ValueError):
    """A word BuildKit refuses to expand (bad substitution, unterminated quote, ...)."""


@dataclasses.dataclass(frozen=True)
class Lex:
    escape: str = "\\"
    raw_quotes: bool = False  # keep the quote characters in the result
    raw_escapes: bool = False  # keep the escape characters in the result
    skip_unset: bool = False  # leave references to unset variables as written

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """The word with its variables expanded and quotes removed (spaces kept)."""
        return _Scan(self, word, env).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """The word expanded, then split on unquoted whitespace."""
        return _Scan(self, word, env).process()[1]


class _Words:
    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and "".join(self.buf):
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.buf.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.buf and "".join(self.buf):
            self.words.append("".join(self.buf))
        self.buf = []
        return self.words


class _Scan:
    def __init__(self, lex: Lex, text: str, env: Mapping[str, str]) -> None:
        self.lex, self.text, self.env, self.pos = lex, text, env, 0
        self.raw_escapes = lex.raw_escapes

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def process(self) -> tuple[str, list[str]]:
        try:
            return self.until(_EOF, self.raw_escapes)
        except ShellError as err:
            raise ShellError(f"failed to process {self.text!r}: {err}") from None

    def until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._until(stop)
        finally:
            self.raw_escapes = saved

    def _until(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        special = {"$": self.dollar, "<": self.possible_heredoc, "'": self.single_quote, '"': self.double_quote}
        while (ch := self.peek()) != _EOF:
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch in special:
                piece = special[ch]()
                result.append(piece)
                if ch == "$":
                    words.add_string(piece)
                else:
                    words.add_raw(piece)
                continue
            ch = self.next()
            if ch == self.lex.escape:
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                ch = self.next()
                if ch == _EOF:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise ShellError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        first = self.next()
        out = [first] if self.lex.raw_quotes else []
        while True:
            ch = self.next()
            if ch == _EOF:
                raise ShellError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        first = self.next()
        out = [first] if self.lex.raw_quotes else []
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise ShellError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.lex.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue
                if following in ('"', "$", self.lex.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while (ch := self.peek()) != _EOF:
            if not out and ch.isdigit():
                while self.peek() != _EOF and self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL:
                return self.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None and self.lex.skip_unset:
                return "$" + name
            return value or ""
        self.next()
        if self.peek() == _EOF:
            raise ShellError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ShellError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value = self.lookup(name)
            if value is None and self.lex.skip_unset:
                return "${" + name + "}"
            return value or ""
        if ch == "/":
            return self.replace(name)
        modifier = ch
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self.next()
            modifier += ch
        if ch not in ("+", "-", "?", "#", "%"):
            self.until("}", False)  # BuildKit reads the word before refusing the modifier
            raise ShellError(f"unsupported modifier ({modifier}) in substitution")
        pattern_like = ch in "#%"
        if null_is_unset and pattern_like:
            raise ShellError(f"unsupported modifier ({modifier}) in substitution")
        word = self.closing_word("}", pattern_like)
        value = self.lookup(name)
        if value is None and self.lex.skip_unset:
            return "${" + name + modifier + word + "}"
        empty = value is None or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value or ""
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if value is None:
                raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        return _trim_suffix(word, value or "", greedy) if ch == "%" else _trim_prefix(word, value or "", greedy)

    def closing_word(self, stop: str, raw_escapes: bool) -> str:
        try:
            return self.until(stop, raw_escapes)[0]
        except ShellError:
            if self.peek() == _EOF:
                raise ShellError(f"syntax error: missing '{stop}'") from None
            raise

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self.closing_word("/", True)
        replacement = self.closing_word("}", True)
        value = self.lookup(name)
        if value is None and self.lex.skip_unset:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return regex.sub(lambda _: replacement, value or "")
        return regex.sub(lambda _: replacement, value or "", count=1)

    def possible_heredoc(self) -> str:
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        spaces = []
        while self.peek() in ("\t", "\r", " ") and self.peek() != _EOF:
            spaces.append(self.next())
        return "<<" + "".join(spaces)


def _pattern_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A `${x#pattern}` shell pattern (`*`, `?`, escapes; no brackets) as a regex."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i < len(pattern) and pattern[i] in "}/":
                continue
            following = pattern[i] if i < len(pattern) else ""
            i += 1
            if following not in ("*", "?", "\\"):
                raise ShellError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'")
            out.append(re.escape(following))
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(pattern, greedy, anchored=True).search(value)
    return value[m.end():] if m else value


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Reverse pattern and value: the shortest rightmost match becomes a leftmost one.
    reversed_pattern: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            reversed_pattern[:0] = ["\\", pattern[i + 1]]
            i += 2
        else:
            reversed_pattern.insert(0, pattern[i])
            i += 1
    return _trim_prefix("".join(reversed_pattern), value[::-1], greedy)[::-1]

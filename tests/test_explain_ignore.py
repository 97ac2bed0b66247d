""".dockerignore and --exclude patterns with Docker's semantics."""

from __future__ import annotations

import pytest

from ci.explain.ignore import IgnorePatternError, IgnoreRules


@pytest.mark.parametrize(("text", "path", "ignored"), [
    ("a\\*b\n", "a*b", True),                    # a backslash escapes: the file named a*b
    ("a\\*b\n", "axb", False),
    ("a\\*b\n", "a/b", False),                   # ... and is not a separator
    ("#notes.md\n", "#notes.md", False),         # a comment in column one
    ("  #notes.md\n", "#notes.md", True),        # not in column one: a pattern
    ("\ufeffsecret.txt\n", "secret.txt", True),  # a byte-order mark is ignored
    ("**/*.pyc\n", "a/b/c.pyc", True),
    ("docs\n!docs/README.md\n", "docs/README.md", False),
    ("docs\n!docs/README.md\n", "docs/other.md", True),
    ("./build//out/../out\n", "build/out/x", True),
    ("file?.txt\n", "file1.txt", True),
    ("file?.txt\n", "file/.txt", False),
])
def test_matching(text: str, path: str, ignored: bool) -> None:
    assert IgnoreRules.parse(text).ignored(path) is ignored


@pytest.mark.parametrize("text", ["!\n", "[\n", "a[\n", "[-]\n", "[a-b-c]\n", "trailing\\\n", "[]a]\n"])
def test_malformed_patterns_fail_when_read(text: str) -> None:
    with pytest.raises(IgnorePatternError):
        IgnoreRules.parse(text)

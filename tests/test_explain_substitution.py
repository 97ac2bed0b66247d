"""`${...}` substitution with the Dockerfile frontend's rules (quotes, escapes, nesting, errors)."""

from __future__ import annotations

import pytest

from ci.explain.dockerfile import DockerfileError, expand

ENV = {"HOME": "/home/app", "EMPTY": "", "NAME": "bot", "FILE": "archive.tar.gz"}


@pytest.mark.parametrize(("word", "value"), [
    ("$HOME/x", "/home/app/x"),
    ("'$HOME'", "$HOME"),                       # single quotes keep it literal
    ('"$HOME"', "/home/app"),
    ("\\$HOME", "$HOME"),                       # an escaped dollar
    ("${UNSET:-${NAME}}", "bot"),               # nested default
    ("${EMPTY:-dflt}/${EMPTY-dflt}", "dflt/"),  # ':' treats empty as unset
    ("${NAME:+${HOME}}|${UNSET:+x}", "/home/app|"),
    ("${NAME?}", "bot"),
    ("${FILE%.*}|${FILE%%.*}|${FILE#*.}|${FILE##*.}", "archive.tar|archive|tar.gz|gz"),
    ("${FILE/tar/zip}", "archive.zip.gz"),
    ("$1x${2:-two}", "xtwo"),                   # positional parameters are never set
    ("a$", "a$"),
])
def test_expansion(word: str, value: str) -> None:
    assert expand(word, ENV) == value


@pytest.mark.parametrize("word", ["${}", "${UNSET?}", "${UNSET:?must be set}", "${EMPTY:?}", "${NAME", "${NAME:=x}",
                                  "${:-x}", "${{NAME}", "'unterminated"])
def test_malformed_or_failing_substitutions_are_clear_errors(word: str) -> None:
    with pytest.raises(DockerfileError, match="failed to process"):
        expand(word, ENV)

"""The Dockerfile parser and checks, as BuildKit reads a Dockerfile (examples written for this
project; BuildKit's own parser tests were used while building it, not copied)."""

from __future__ import annotations

import pathlib

import pytest

from ci.explain.dockerfile import DockerfileError, parse
from ci.explain.predict import BuildInput, model
from ci.explain.snapshot import DirSnapshot
from ci.explain.syntax import parse_syntax


def only_run(text: str) -> str:
    return next(n for n in parse_syntax(text).nodes if n.keyword.upper() == "RUN").rest


def test_continuation_lines_are_joined_verbatim() -> None:
    # The escape goes, the indentation and the spaces before it stay; no space is added.
    assert only_run("FROM x\nRUN apt-get update \\\n    && apt-get install -y curl\n") == \
        "apt-get update     && apt-get install -y curl"
    assert only_run("FROM x\nRUN echo a\\\nb\n") == "echo ab"


def test_blank_and_comment_lines_do_not_end_a_continuation() -> None:
    text = "FROM x\nRUN echo a \\\n\n    # note\n    && echo b\nRUN echo c\n"
    runs = [n.rest for n in parse_syntax(text).nodes if n.keyword == "RUN"]
    assert runs == ["echo a     && echo b", "echo c"]


def test_any_whitespace_separates_keyword_and_arguments() -> None:
    assert only_run("FROM x\nRUN\techo tab\n") == "echo tab"


def test_an_escaped_escape_at_the_end_of_a_line_is_not_a_continuation() -> None:
    nodes = parse_syntax("FROM x\nRUN echo a\\\\\nRUN echo b\n").nodes
    assert [n.rest for n in nodes[1:]] == ["echo a\\\\", "echo b"]


@pytest.mark.parametrize(("text", "escape"), [
    ("# escape=`\nFROM x\nRUN echo a `\n b\n", "`"),
    ("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n", "`"),
    ("# a comment\n# escape=`\nFROM x\n", "\\"),       # after a comment: just a comment
    ("\n# escape=`\nFROM x\n", "\\"),                  # after a blank line: just a comment
])
def test_parser_directives_count_only_at_the_top(text: str, escape: str) -> None:
    assert parse_syntax(text).escape == escape


def test_a_byte_order_mark_is_ignored() -> None:
    dockerfile = parse("\ufeffFROM debian\nRUN true\n")
    assert dockerfile.stages[0].base == "debian"


def test_heredocs_several_on_a_line_quoted_names_and_chomping() -> None:
    text = "FROM x\nCOPY <<one.txt <<'two' /dst/\n1\none.txt\n$two\ntwo\nRUN <<-EOF\n\techo hi\n\tEOF\nRUN <<eo'f'\nx\neof\n"
    copy, run_chomp, run_partly_quoted = parse(text).stages[0].instructions[1:]
    assert [(h.name, h.content, h.expand) for h in copy.heredocs] == [("one.txt", "1\n", True), ("two", "$two\n", False)]
    assert run_chomp.heredocs[0].chomp and run_chomp.heredocs[0].data == "echo hi\n"
    assert (run_partly_quoted.heredocs[0].name, run_partly_quoted.heredocs[0].expand) == ("eof", False)


@pytest.mark.parametrize("text", ['FROM x\nRUN echo "<<EOF"\n', 'FROM x\nRUN ["cat", "<<EOF"]\n'])
def test_heredoc_markers_in_quotes_or_json_form_are_text(text: str) -> None:
    assert parse(text).stages[0].instructions[1].heredocs == ()


def test_an_unterminated_heredoc_is_an_error_naming_its_line() -> None:
    with pytest.raises(DockerfileError, match=r"^line 2: unterminated heredoc EOF$"):
        parse("FROM x\nRUN <<EOF\necho never closed\n")


def test_double_dash_ends_the_flags() -> None:
    copy = parse("FROM x\nCOPY --chmod=644 -- --weird-name /dst/\n").stages[0].instructions[1]
    assert copy.flags == (("chmod", "644"),) and copy.words == ("--weird-name", "/dst/")


@pytest.mark.parametrize(("text", "message"), [
    ("FROM x\nFOO bar\n", "line 2: unknown instruction: FOO"),
    ("FROM x\nWORKDIR\n", "line 2: WORKDIR requires exactly one argument"),
    ("FROM x\nONBUILD FROM y\n", "line 2: FROM isn't allowed as an ONBUILD trigger"),
    ("FROM x\nCOPY --from=a b\n", "line 2: COPY requires at least two arguments"),
    ("FROM x\nCOPY --frm=a b c\n", "line 2: unknown flag: --frm"),
    ("FROM x AS 1st\n", "line 1: invalid name for build stage"),
    ("FROM x\nSHELL /bin/bash -c\n", "line 2: SHELL requires the arguments to be in JSON form"),
    ("FROM a AS one\nCOPY --from=two f /\nFROM b AS two\nCOPY --from=one f /\n", "circular dependency detected on stage: one"),
    ("# comment\n# escape=x\nFROM x\n", None),  # not a directive any more: fine
    ("# escape=x\nFROM x\n", "line 1: invalid escape token"),
    ("RUN true\n", "line 1: RUN before the first FROM"),
    ("# only a comment\n", "file with no instructions"),
])
def test_what_buildkit_rejects_is_one_line_naming_the_line(text: str, message: str | None) -> None:
    if message is None:
        parse(text)
        return
    with pytest.raises(DockerfileError) as caught:
        parse(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_env_value_is_an_error_naming_its_line_not_a_traceback(tmp_path: pathlib.Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\nENV name='a\\'b'\nRUN true\n")
    with pytest.raises(DockerfileError, match=r"^line 2: failed to process .*single-quote$"):
        model(BuildInput(DirSnapshot(tmp_path), "Dockerfile", "."))

"""Reading BuildKit progress: golden logs captured from real builds (tests/data/progress).

The logs come from tests/data/progress/Dockerfile built with docker buildx 0.13 / BuildKit
0.13 here: cold (--no-cache), warm (everything cached), partial (input.txt changed) and
failed (Dockerfile.failed: the last RUN exits 1), each as rawjson and plain.
"""

from __future__ import annotations

import io
import pathlib

import pytest

from ci import progress

DATA = pathlib.Path(__file__).parent / "data" / "progress"
LABELS = ["build 2/4", "build 3/4", "build 4/4", "stage-1 2/3", "stage-1 3/3"]


def parse(name: str) -> progress.BuildLog:
    with (DATA / name).open() as stream:
        return progress.parse_stream(stream)


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_warm_build_hits_every_cacheable_step(fmt: str) -> None:
    log = parse(f"warm.{fmt}")
    assert [s.label for s in log.cacheable] == LABELS
    assert log.cached_count == 5 and log.hit_ratio == 1.0
    assert log.error is None


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_partial_build_misses_from_the_changed_copy_on(fmt: str) -> None:
    log = parse(f"partial.{fmt}")
    assert {s.label: s.cached for s in log.cacheable} == {
        "build 2/4": True, "build 3/4": False, "build 4/4": False, "stage-1 2/3": False, "stage-1 3/3": False}
    assert log.hit_ratio == pytest.approx(0.2)


def test_cold_rawjson_build_hits_nothing() -> None:
    log = parse("cold.rawjson")
    assert log.cached_count == 0
    assert all(s.duration is not None for s in log.steps)


def test_from_steps_are_steps_but_not_cacheable() -> None:
    log = parse("warm.plain")
    froms = [s for s in log.steps if s.is_from]
    assert froms and all(s not in log.cacheable for s in froms)
    assert froms[0].label == "build 1/4"


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_failed_build_names_the_failing_step(fmt: str) -> None:
    log = parse(f"failed.{fmt}")
    failing = [s for s in log.steps if s.error]
    assert [s.label for s in failing] == ["stage-1 3/3"]
    assert log.error is not None and "exit code: 1" in log.error


@pytest.mark.parametrize("fmt", ["rawjson", "plain"])
def test_bookkeeping_is_kept_apart(fmt: str) -> None:
    log = parse(f"warm.{fmt}")
    names = [b.name for b in log.bookkeeping]
    assert "[internal] load build definition from Dockerfile" in names
    assert not any(s.name.startswith("[internal]") for s in log.steps)


def test_format_is_detected_and_junk_is_refused() -> None:
    assert progress.detect('  {"vertexes": []}') == "rawjson"
    assert progress.detect("#1 [internal] load") == "plain"
    with pytest.raises(ValueError, match="not BuildKit progress"):
        progress.parse_text("hello world")


def test_rawjson_is_read_in_small_chunks_across_value_boundaries() -> None:
    text = (DATA / "partial.rawjson").read_text()

    class Trickle(io.StringIO):
        def read(self, size: int | None = -1) -> str:  # deliver 7 characters at a time
            return super().read(7)

    log = progress.parse_stream(Trickle(text))
    assert [s.cached for s in log.cacheable] == [True, False, False, False, False]


def test_truncated_rawjson_is_an_error() -> None:
    text = (DATA / "warm.rawjson").read_text()
    with pytest.raises(ValueError, match="truncated"):
        progress.parse_text(text[: len(text) // 2 + 1].rstrip() + "\n{")


def test_copy_link_reports_two_vertices_that_are_one_step() -> None:
    # Captured from a cold build of tests/data/progress/Dockerfile.copy-link: BuildKit reports
    # `[6/6] COPY --link ...` (miss) and `[6/6] LINK COPY --link ...` (cached merge).
    log = parse("copy-link.rawjson")
    assert [s.label for s in log.cacheable] == ["2/6", "3/6", "4/6", "5/6", "6/6"]
    last = log.cacheable[-1]
    assert (last.instruction, last.cached) == ("COPY --link a.txt /c.txt", False)


def test_padded_step_numbers_of_long_stages_keep_their_labels() -> None:
    # BuildKit right-aligns the step number to the width of the total (seen on Docker 28.5 with
    # an 11-step stage: `#10 [stage-1  7/11] RUN echo b6`); multi-platform builds prefix the
    # platform. The label must be the one explain predicts, without the padding.
    plain = ("#4 [stage-1  1/11] FROM docker.io/library/debian:bookworm\n#4 DONE 0.0s\n"
             "#10 [stage-1  7/11] RUN echo b6\n#10 CACHED\n"
             "#13 [stage-1 10/11] RUN echo b9\n#13 DONE 0.2s\n"
             "#20 [ 9/12] COPY a /a\n#20 DONE 0.1s\n"
             "#21 [linux/arm/v7 deps  2/10] RUN make\n#21 DONE 1.0s\n")
    log = progress.parse_stream(io.StringIO(plain))
    assert [(s.label, s.cached) for s in log.cacheable] == [  # ordered by stage, then step number
        ("9/12", False), ("deps 2/10", False), ("stage-1 7/11", True), ("stage-1 10/11", False)]
    assert log.by_label()["deps 2/10"].instruction == "RUN make"


def test_a_step_run_again_after_its_cached_layer_was_evicted_is_a_miss_with_its_reason() -> None:
    """evicted.rawjson: the bot image on a fresh runner after the gha cache evicted the layers its
    index lists (captured with Docker 28.5 in tests/test_gha_cache.py; log lines dropped).
    BuildKit first reports each step cached, fails to fetch its blob, then runs it again."""
    log = parse("evicted.rawjson")
    assert log.cached_count == 0 and log.error is None
    assert all(s.rerun_because and "not found" in s.rerun_because for s in log.cacheable)

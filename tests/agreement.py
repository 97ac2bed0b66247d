"""explain against real BuildKit: one build's cache flags per step, and the comparison with a
prediction, shared by the mutation scenarios (test_explain_buildkit.py) and the Dockerfile
shapes (test_explain_buildkit_shapes.py). conftest prints the totals of AGREEMENT."""

from __future__ import annotations

import pathlib

from ci import local
from ci.explain.predict import ImagePrediction
from ci.model import BuildRequest, Output

# scenario -> (steps agreeing, steps, misses BuildKit reported), over the steps explain decides
AGREEMENT: dict[str, tuple[int, int, int]] = {}
# scenario -> (content-decided steps, how many of them BuildKit reported CACHED): steps BuildKit
# keys by the bytes a rebuilt stage produced; explain says so and does not count them as agreed.
CONTENT_DECIDED: dict[str, tuple[int, int]] = {}


def build(root: pathlib.Path, work: pathlib.Path, args: dict[str, str], image: str, target: str | None = "final") -> dict[str, bool]:
    """Build the target (default `final`) of root/Dockerfile; each labelled step -> did BuildKit report it CACHED."""
    request = BuildRequest(image=image, context=".", dockerfile="Dockerfile", output=Output("cacheonly"),
                           target=target, build_args=tuple(sorted(args.items())))
    outcome = local.run_build(request, root, work)
    assert outcome.ok, outcome.stderr_tail
    return {s.label: s.cached for s in outcome.log.cacheable if s.label}


def assert_agreement(scenario: str, prediction: ImagePrediction, actual: dict[str, bool], unchanged: bool) -> None:
    """Same labels, same hit/miss on every step explain decides (all hits when nothing changed);
    content-decided steps are recorded apart (CONTENT_DECIDED), the rest in AGREEMENT."""
    steps = [s for s in prediction.steps if not s.instruction.startswith("FROM ")]
    predicted = {s.label: s.status == "hit" for s in steps}
    by_content = {s.label for s in steps if s.content_decided}
    assert sorted(predicted) == sorted(actual), f"explain and BuildKit label the steps differently: {sorted(predicted)} vs {sorted(actual)}"
    if unchanged:
        assert all(actual.values())
        assert not by_content
    decided = [label for label in actual if label not in by_content]
    agree = sum(predicted[label] == actual[label] for label in decided)
    AGREEMENT[scenario] = (agree, len(decided), sum(not actual[label] for label in decided))
    if by_content:
        CONTENT_DECIDED[scenario] = (len(by_content), sum(actual[label] for label in by_content))
    details = {label: (predicted[label], actual[label]) for label in decided if predicted[label] != actual[label]}
    assert not details, f"{scenario}: (predicted hit, BuildKit cached) differ on {details}; reasons: " + str(
        [(s.label, s.reason) for s in prediction.steps])

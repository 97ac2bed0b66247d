"""explain against real BuildKit: one build's cache flags per step, and the comparison with a
prediction, shared by the mutation scenarios (test_explain_buildkit.py) and the Dockerfile
shapes (test_explain_buildkit_shapes.py). conftest prints the totals of AGREEMENT."""

from __future__ import annotations

import pathlib

from ci import local
from ci.explain.predict import ImagePrediction
from ci.model import BuildRequest, Output

# scenario -> (steps agreeing, steps, misses BuildKit reported)
AGREEMENT: dict[str, tuple[int, int, int]] = {}


def build(root: pathlib.Path, work: pathlib.Path, args: dict[str, str], image: str) -> dict[str, bool]:
    """Build the `final` target of root/Dockerfile; each labelled step -> did BuildKit report it CACHED."""
    request = BuildRequest(image=image, context=".", dockerfile="Dockerfile", output=Output("cacheonly"),
                           target="final", build_args=tuple(sorted(args.items())))
    outcome = local.run_build(request, root, work)
    assert outcome.ok, outcome.stderr_tail
    return {s.label: s.cached for s in outcome.log.cacheable if s.label}


def assert_agreement(scenario: str, prediction: ImagePrediction, actual: dict[str, bool], unchanged: bool) -> None:
    """Same labels, same hit/miss on every step (all hits when nothing changed); recorded in AGREEMENT."""
    predicted = {s.label: s.status == "hit" for s in prediction.steps if not s.instruction.startswith("FROM ")}
    assert sorted(predicted) == sorted(actual), "explain and BuildKit label the steps differently"
    if unchanged:
        assert all(actual.values())
    agree = sum(predicted[label] == actual[label] for label in actual)
    AGREEMENT[scenario] = (agree, len(actual), sum(not hit for hit in actual.values()))
    details = {label: (predicted[label], actual[label]) for label in actual if predicted[label] != actual[label]}
    assert not details, f"{scenario}: (predicted hit, BuildKit cached) differ on {details}; reasons: " + str(
        [(s.label, s.reason) for s in prediction.steps])

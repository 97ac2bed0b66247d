"""explain against real BuildKit: one build's cache flags per step, and the comparison with a
prediction, shared by the mutation scenarios (test_explain_buildkit.py) and the Dockerfile
shapes (test_explain_buildkit_shapes.py). conftest prints the totals of AGREEMENT.

The same base and head builds check build avoidance (ci.avoidance, issue 19): wherever BuildKit
missed any step, the head's input key must differ from the base's (or there is none), so
avoidance never skips a build BuildKit would not have hit entirely (AVOIDANCE)."""

from __future__ import annotations

import functools
import pathlib
import subprocess

from ci import avoidance, local
from ci.errors import PipelineError
from ci.explain.predict import BuildInput, ImagePrediction
from ci.model import BuildRequest, Output

# scenario -> (steps agreeing, steps, misses BuildKit reported), over the steps explain decides
AGREEMENT: dict[str, tuple[int, int, int]] = {}
# scenario -> (content-decided steps, how many of them BuildKit reported CACHED): steps BuildKit
# keys by the bytes a rebuilt stage produced; explain says so and does not count them as agreed.
CONTENT_DECIDED: dict[str, tuple[int, int]] = {}
# scenario -> (the head's input key equals the base's, BuildKit missed a step of the head build)
AVOIDANCE: dict[str, tuple[bool, bool]] = {}


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


@functools.cache
def _daemon_digest(ref: str) -> str:
    """What the daemon's BuildKit builds FROM: these scenarios' bases are local stand-in images,
    in no registry, so the daemon's own image id is the digest the reference resolves to."""
    done = subprocess.run([local.DOCKER, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    if done.returncode:
        raise PipelineError(f"{ref}: not in the daemon")
    return done.stdout.strip()


@functools.cache
def _builder() -> str:
    return local.builder_identity() or "unknown"


def input_key(build: BuildInput) -> str | None:
    request = BuildRequest(image="avoidance", context=build.context, dockerfile=build.dockerfile, output=Output("cacheonly"),
                           target=build.target, build_args=tuple(sorted(build.build_args.items())))
    return avoidance.input_key(build.snapshot, request, _builder(), _daemon_digest).key


def assert_avoidance(scenario: str, base: BuildInput, head: BuildInput, actual: dict[str, bool], unchanged: bool) -> None:
    """A miss anywhere in the head build means another input key: avoidance would build.
    Unchanged inputs give the same key (avoidance would skip), unless the model cannot see them."""
    base_key, head_key = input_key(base), input_key(head)
    missed = sorted(label for label, cached in actual.items() if not cached)
    same = base_key is not None and base_key == head_key
    AVOIDANCE[scenario] = (same, bool(missed))
    assert not (same and missed), f"{scenario}: same input key {base_key} but BuildKit missed {missed}: avoidance would skip wrongly"
    if unchanged and base_key is not None:
        assert same, f"{scenario}: nothing changed, yet the input key did ({base_key} -> {head_key})"

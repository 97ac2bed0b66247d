"""Fuzz campaign over every reader of outside input (the targets of tests/test_fuzz_readers.py).

    nice -n 19 .venv/bin/python bench/fuzz_campaign.py --inputs 1000000 [--targets dockerfile,...] [--seconds S]

Seeds: tests/data (through the targets module) and, read here at run time only, the upstream
vectors in ../shared/vectors (never copied into the project). Each input is a seed with one to
eight random edits (flips, inserts, deletes, duplicates, the reader's tokens, splices). Prints
JSON: per target the inputs run, seconds, and crashes (distinct signatures: exception type and
the innermost project frame), with one reproducer per crash written to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import random
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_fuzz_readers import TARGETS, TOKENS, mutate, project_seeds  # noqa: E402

VECTORS = ROOT.parent / "shared" / "vectors"


def vector_seeds() -> dict[str, list[bytes]]:
    """The upstream Dockerfile and .dockerignore vectors, when ../shared/vectors is there."""
    seeds: dict[str, list[bytes]] = {"dockerfile": [], "dockerignore": []}
    cases = VECTORS / "dockerfile_cases" / "cases.json"
    if cases.exists():
        for case in json.loads(cases.read_text())["cases"]:
            if isinstance(case.get("text"), str):
                seeds["dockerfile"].append(case["text"].encode())
            elif isinstance(case.get("input"), str) and (VECTORS / "dockerfile_cases" / case["input"]).is_file():
                seeds["dockerfile"].append((VECTORS / "dockerfile_cases" / case["input"]).read_bytes())
    ignore = VECTORS / "dockerignore_cases.json"
    if ignore.exists():
        for case in json.loads(ignore.read_text())["cases"]:
            if isinstance(case.get("patterns"), list):
                seeds["dockerignore"].append("\n".join(map(str, case["patterns"])).encode())
            elif isinstance(case.get("text"), str):
                seeds["dockerignore"].append(case["text"].encode())
    return seeds


def signature(err: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/ci/" in f.filename]
    where = f"{pathlib.Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    cause = err.__cause__ if err.__class__.__name__ == "Crash" and err.__cause__ else err
    return f"{type(err).__name__}({type(cause).__name__}) at {where}"


def run(target: str, inputs: int, seconds: float, seeds: list[bytes], out: pathlib.Path, rng: random.Random) -> dict[str, object]:
    fn = TARGETS[target]
    crashes: dict[str, str] = {}
    started = time.monotonic()
    done = 0
    pool = seeds or [b""]
    while done < inputs and time.monotonic() - started < seconds:
        data = mutate(rng.choice(pool), rng, TOKENS[target], pool) if rng.random() > 0.02 else rng.randbytes(rng.randint(0, 64))
        done += 1
        try:
            fn(data)
        except Exception as err:  # noqa: BLE001 - a crash is what we are looking for
            sig = signature(err)
            if sig not in crashes:
                path = out / f"{target}-{hashlib.sha1(sig.encode(), usedforsecurity=False).hexdigest()[:10]}.bin"
                path.write_bytes(data)
                crashes[sig] = str(path)
    return {"inputs": done, "seconds": round(time.monotonic() - started, 1), "crashes": len(crashes), "signatures": crashes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=float("inf"), help="time budget per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/fuzz-crashes"))
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = project_seeds()
    for name, extra in vector_seeds().items():
        seeds[name] = seeds.get(name, []) + extra
    rng = random.Random(args.seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    results = {}
    for target in args.targets.split(","):
        results[target] = run(target, args.inputs, args.seconds, seeds[target], args.out, rng)
        print(json.dumps({target: results[target]}), file=sys.stderr, flush=True)
    print(json.dumps({"seed": args.seed, "targets": results}, indent=2))


if __name__ == "__main__":
    main()

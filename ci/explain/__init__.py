"""Predict, without building, which Dockerfile steps hit or miss BuildKit's cache, and why.

  dockerfile.py   parse a Dockerfile into stages and steps, with BuildKit's step labels
  ignore.py       .dockerignore matching (moby/patternmatcher semantics)
  snapshot.py     the files of a build context at a revision (git) or on disk
  predict.py      model each step's cache key; compare base and head; explain each miss
"""

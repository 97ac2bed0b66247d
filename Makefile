# The verbs a developer types every day; each is a thin call of a tool the project already has.
#   make dev        the bot + Lavalink with live code (compose.dev.yaml; Ctrl-C stops watching)
#   make test       the tests (ARGS="-k trends" to choose)
#   make build      both images with the local driver (ARGS="--registry ... --cache ...")
#   make explain    which steps will miss the cache, and why (ARGS="--base origin/main")
#   make lock       re-lock the bot's dependencies with hashes (needs uv)
#   make trends     trends and alerts over downloaded build reports (REPORTS=dir), chart in .work/
# Variables: PYTHON (the project's venv), COMPOSE, ARGS. Settings of the dev stack: compose.dev.yaml.

PYTHON ?= .venv/bin/python
# Not named CI: CI=true is set by every CI service, and `?=` would take it.
DIMBYBOT_CI ?= $(PYTHON) -m ci.cli
COMPOSE ?= docker compose -f compose.dev.yaml
UV ?= uv
REPORTS ?= .work/reports
CHART ?= .work/trends.svg
ARGS ?=
# Every `make build` keeps its report under $(REPORTS), so `make trends` has history to read.
STAMP := $(shell date -u +%Y%m%dT%H%M%SZ)

.DEFAULT_GOAL := help
.PHONY: help dev down logs test lint build explain lock trends

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 10

dev:  ## run the bot and Lavalink with live code (edits restart the bot; a lock change rebuilds)
	$(COMPOSE) up --build --watch $(ARGS)

down:  ## stop the dev stack and remove its containers
	$(COMPOSE) down $(ARGS)

logs:  ## follow the dev stack's logs
	$(COMPOSE) logs --follow $(ARGS)

test:  ## run the tests
	$(PYTHON) -m pytest $(ARGS)

lint:  ## mypy (strict) and ruff
	$(PYTHON) -m mypy
	$(PYTHON) -m ruff check ci tests bench

build:  ## build both images with docker buildx (the local driver of the pipeline)
	@mkdir -p $(REPORTS)/$(STAMP)
	$(DIMBYBOT_CI) build-and-push --report-file $(REPORTS)/$(STAMP)/report.json $(ARGS)

explain:  ## predict cache misses and say why
	$(DIMBYBOT_CI) explain $(ARGS)

lock:  ## bot/requirements.in -> bot/requirements.lock (hashed, for Python 3.11)
	$(UV) pip compile bot/requirements.in --generate-hashes --universal --python-version 3.11 -o bot/requirements.lock $(ARGS)

trends:  ## trends and alerts over the reports in REPORTS (default .work/reports), chart in CHART
	$(DIMBYBOT_CI) trends $(REPORTS) --chart $(CHART) $(ARGS)

# Every target bootstraps .venv itself, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# `make bench PEERS=apscheduler`: the peer scheduler lives in a side environment, never in $(VENV).
PEERS ?=
PEER_VENV ?= .venv-peers
PEER_REQUIREMENT_apscheduler := apscheduler>=3.11,<4

.PHONY: help install dev demo test lint typecheck unit mutation bench soak docs clean

help:
	@echo "make demo   - create $(VENV), install quiv, run examples/demo.py"
	@echo "make test   - create $(VENV), install dev extras, run lint, type check and tests"
	@echo "make mutation - mutation-test the pure modules (_schedule, _validation, _triggers,"
	@echo "              _stores._rows);"
	@echo "              fails on a survivor"
	@echo "make bench  - run the benchmark suite (benchmarks/), print a table, write JSON;"
	@echo "              PEERS=apscheduler adds APScheduler 3.11's figures (side venv $(PEER_VENV))"
	@echo "make soak   - run the long mixed-workload soak (not part of CI)"
	@echo "make docs   - build the documentation site with mkdocs --strict"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(STAMP)

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

# Our own small runner (tools/mutation.py): pytest collects the targeted tests
# once, then each mutant runs them in a forked child; about a minute.
mutation: $(STAMP)
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

bench: $(STAMP) $(if $(PEERS),$(PEER_VENV)/.installed-$(PEERS))
	$(BIN)/python -m benchmarks $(if $(PEERS),--peers $(PEERS) --peer-python $(PEER_VENV)/bin/python) $(BENCH_ARGS)

# The peer's own interpreter: the peer, plus what benchmarks/_harness.py imports; not quiv.
$(PEER_VENV)/.installed-%:
	@test -n "$(PEER_REQUIREMENT_$*)" || { echo "unknown peer '$*' (known: apscheduler)"; exit 2; }
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet '$(PEER_REQUIREMENT_$*)' 'anyio>=4.16' 'psutil>=5.9'
	touch $@

soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

$(VENV)/.installed-docs: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

# NO_MKDOCS_2_WARNING only silences mkdocs-material's banner about its successor.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(PEER_VENV) .mypy_cache .pytest_cache .ruff_cache site build dist

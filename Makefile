# Every target bootstraps .venv itself, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: help install dev demo test lint typecheck unit mutation bench soak docs clean

help:
	@echo "make demo   - create $(VENV), install quiv, run examples/demo.py"
	@echo "make test   - create $(VENV), install dev extras, run lint, type check and tests"
	@echo "make mutation - mutation-test the pure modules (_schedule, _validation); fails on a survivor"
	@echo "make bench  - run the benchmark suite (benchmarks/), print a table, write JSON"
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

# Our own small runner (tools/mutation.py): each mutant runs in a forked child
# against the module's targeted tests; about a minute.
mutation: $(STAMP)
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

$(VENV)/.installed-docs: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

# NO_MKDOCS_2_WARNING only silences mkdocs-material's banner about its successor.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site build dist

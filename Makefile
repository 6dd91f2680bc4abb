# Everything a fresh machine with python3.11 and make needs: `make run`, `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,rl]"
	touch $(STAMP)

run: $(STAMP)  ## the main job: sinusoid DMAML, 1 vs 4 workers (about a minute)
	$(BIN)/python -m harness run

test: $(STAMP)  ## lint, type-check, the whole test suite, then every suite once at smoke scale
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest suites/ --benchmark-only -q

bench: $(STAMP)  ## pytest-benchmark over the suites (smoke scale)
	$(BIN)/python -m pytest suites/ --benchmark-only

check: $(STAMP)  ## throughput regression gate against results/baselines/
	$(BIN)/python -m harness check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks

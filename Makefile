# Everything a fresh machine with python3.11 and make needs: `make run`, `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench check clean

# tensorflow-cpu (the old dependency) and tensorflow install the same package: an older .venv
# gives up tensorflow-cpu before the install brings tensorflow, so they never coexist.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if $(BIN)/python -m pip show --quiet tensorflow-cpu 2>/dev/null; then \
		$(BIN)/python -m pip uninstall --quiet --yes tensorflow-cpu; fi
	$(BIN)/python -m pip install --quiet -e ".[test,rl]"
	touch $(STAMP)

run: $(STAMP)  ## the main job: sinusoid DMAML, 1 vs 4 workers, 2 seeds, 300 runs each (quick scale)
	$(BIN)/python -m harness run

# the same commands as tox.ini's [testenv] (tests/test_packaging.py checks that they agree)
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

# `make run`: MAML on sinusoid regression with the published budget, offline. `make test`: the whole test suite.
# Each creates .venv from pyproject.toml when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	rm -rf runs/maml-sinusoid
	$(VENV)/bin/jmeta train --algo maml --dataset sinusoid --out runs/maml-sinusoid

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --durations=15 tests

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/sinusoid.py

clean:
	rm -rf $(VENV) runs

# Two entry points for a fresh machine: `make repro` (the pipeline) and `make test`.
# Both create .venv and install charlab into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch must be installed before anything that depends on torch, or pip
# pulls a multi-GB CUDA build. On a CUDA machine: make TORCH="torch==2.13.0 --index-url ..."
TORCH ?= torch==2.13.0

.PHONY: setup repro test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: setup
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -q

lint: setup
	$(BIN)/ruff check src stages tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

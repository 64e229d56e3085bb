# Two entry points for a fresh machine: `make repro` (the pipeline) and `make test`.
# Both create .venv and install charlab into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed before anything that depends on it, so pip never picks a build itself.
# A machine whose nvidia-smi lists a GPU gets the CUDA build (CUDA_WHEELS: the wheel index's
# CUDA version, e.g. cu126, cu128); any other machine the CPU build from PyTorch's CPU index
# (a plain `pip install torch` pulls a multi-GB CUDA build from PyPI). Where that index cannot
# be reached, pip warns and takes a local CPU wheel (find-links) if there is one. Override
# with TORCH="torch==... ...".
TORCH_VERSION ?= 2.13.0
CUDA_WHEELS ?= cu128
HAS_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH ?= torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/$(CUDA_WHEELS)
else
# PyPI's Linux torch wheel is the CUDA build; the CPU index's 2.13.0+cpu sorts above it
TORCH ?= torch==$(TORCH_VERSION) --extra-index-url https://download.pytorch.org/whl/cpu
endif

.PHONY: setup repro test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
ifeq ($(HAS_GPU),yes)
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
		'error: nvidia-smi lists a GPU but torch ' + torch.__version__ + ' cannot use it: ' \
		'pick the CUDA build for its driver, e.g. make CUDA_WHEELS=cu126')"
	@$(BIN)/python -c "import torch; print('torch', torch.__version__, 'on', \
		torch.cuda.get_device_name(0))"
endif
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

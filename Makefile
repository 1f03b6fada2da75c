# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# they create .venv, install the CPU build of torch pinned below, then leanseg itself.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of this version is available locally on the team's machines; set TORCH_SPEC to
# another requirement (e.g. "torch>=2.1") to use what your platform offers.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/leanseg demo --force

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

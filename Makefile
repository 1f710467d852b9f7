# ecolora: the two commands a new user needs are `make run` and `make test`; both set up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: setup run smoke test test-all lint clean gpu-check

setup: $(STAMP)

# Re-installs only when the package metadata or the constraints change (idempotent).
$(STAMP): pyproject.toml constraints.txt Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,flower]"
	touch $(STAMP)

run: setup  ## the main job: federated fine-tuning of SmolLM2-135M on BIG-bench NI (quickstart preset)
	$(BIN)/ecolora run --config configs/quickstart.yaml

smoke: setup
	$(BIN)/ecolora run --config configs/smoke.yaml

test: setup  ## unit + integration tests, Flower processes included (CPU, offline after the first asset download)
	$(BIN)/python -m pytest -q -m "not slow and not ns3"

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup  ## ruff on src and tests, mypy --strict on src (settings in pyproject.toml)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

gpu-check:  ## 2 rounds x 3 clients on llama2-7b-shape on one CUDA GPU (no setup, no internet)
	PYTHON=$(PY) bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Two commands matter: `make run` and `make test`. Both create .venv on first use
# and reinstall only when the package metadata or a Cython source changed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sniper-installed
PYX := $(shell find sniper -name '*.pyx')

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml setup.py $(PYX)
	$(BIN)/pip install --quiet "cython>=3.0" "numpy>=1.26"
	$(BIN)/pip install --quiet --no-build-isolation -e ".[dev]"
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run_sniper.py --config configs/sim.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Not CI: the reliability tests at full size (10,000 fuzz examples a test: over 100,000 generated
# websocket frames and as many REST answers; five minutes of load),
# then an hour of the daemon trading through faults (benchmarks/soak.py; SOAK_SECONDS to shorten).
.PHONY: soak
soak: $(STAMP)
	SNIPER_FUZZ_EXAMPLES=10000 SNIPER_LOAD_SECONDS=300 $(BIN)/python -m pytest --timeout=0 tests/reliability
	$(BIN)/python -m benchmarks soak

lint: $(STAMP)
	$(BIN)/ruff check sniper tests benchmarks run_sniper.py setup.py

clean:
	rm -rf $(VENV) build *.egg-info sniper/*.so sniper/*.c sniper/**/*.so .pytest_cache .hypothesis

# The commands users learn. Each target sets up .venv first (Python 3.11+), so on a fresh
# clone `make dev` and `make test` work as they are.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv dev test lint typecheck gen gen-check check bench clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "taskcast needs Python 3.11 or newer (set PYTHON=python3.x)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

dev: venv                ## Redis (found or started), server and worker in the foreground
	$(BIN)/taskcast dev

test: venv               ## the whole suite against real processes
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/python scripts/typecheck.py

gen: venv                ## regenerate protos/taskcast/v1/*_pb2*.py after editing a .proto
	$(BIN)/python scripts/gen_protos.py

gen-check: venv
	$(BIN)/python scripts/gen_protos.py --check

check: gen-check lint typecheck test   ## what CI runs

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BIN)/.bench-installed   ## a quick pass of every benchmark (see bench/README.md)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .taskcast build *.egg-info

# The commands users learn. Each target sets up .venv first (Python 3.11+), so on a fresh
# clone `make dev` and `make test` work as they are.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS := all,dev

.PHONY: venv chromium dev test lint typecheck gen gen-check check bench clean FORCE

# The development install is setuptools' strict editable mode: a tree of symlinks to the sources
# under build/__editable__.*, on the venv's path, that mypy, Pyright and readers follow like any
# installed package (the default mode maps the folders into `taskcast.*` through an import hook
# that no static tool sees). Edits show at once; a module added, removed or renamed needs the tree
# rebuilt, so the install depends on the list of package files, rewritten only when it changes.
PACKAGE_FILES := $(shell find core server worker client cli protos/taskcast/v1 -not -path '*/__pycache__/*' \
	\( -name '*.py' -o -name '*.pyi' -o -name '*.lua' -o -name '*.proto' -o -name py.typed \) | LC_ALL=C sort)
FILE_LIST := build/package-files.txt

$(FILE_LIST): FORCE
	@mkdir -p build
	@printf '%s\n' $(PACKAGE_FILES) | cmp -s - $@ || printf '%s\n' $(PACKAGE_FILES) > $@

$(BIN)/.installed: pyproject.toml $(FILE_LIST)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "taskcast needs Python 3.11 or newer (set PYTHON=python3.x)")'
	test -x $(BIN)/python || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip; }
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' --config-settings editable_mode=strict
	@touch $@

venv: $(BIN)/.installed

dev: venv                ## Redis (found or started), server and worker in the foreground
	$(BIN)/taskcast dev

test: venv chromium      ## the whole suite against real processes
	$(BIN)/pytest

chromium:                ## the system Chromium tests/web drives: installed when missing and root
	@scripts/chromium.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv          ## mypy --strict on the packages as installed, tests/ (relaxed), examples
	$(BIN)/mypy -p taskcast.core -p taskcast.server -p taskcast.worker -p taskcast.client -p taskcast.cli
	$(BIN)/mypy tests
	$(BIN)/mypy examples/fastapi/app.py

gen: venv                ## regenerate protos/taskcast/v1/*_pb2*.py after editing a .proto
	$(BIN)/python scripts/gen_protos.py

gen-check: venv
	$(BIN)/python scripts/gen_protos.py --check

check: gen-check lint typecheck test   ## what CI runs

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS),bench]' --config-settings editable_mode=strict
	@touch $@

bench: $(BIN)/.bench-installed   ## a quick pass of every benchmark (see bench/README.md)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .taskcast build *.egg-info

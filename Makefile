# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: quickstart test lint services-start services-stop protos benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[dev]'
	touch $@

## quickstart: create .venv, install potluck and run examples/quickstart on embedded defaults
quickstart: $(VENV)/.installed
	cd examples/quickstart && ../../$(PY) quickstart.py

## lint: ruff, mypy --strict on src/, import-linter layer contracts, stale generated protos
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks examples scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## test: install dev deps and Feast 0.9's SDK (.venv-feast09), start every service the tests need, lint, run the whole suite
test: $(VENV)/.installed-dev
	bash scripts/feast09_venv.sh
	bash scripts/services.sh start
	$(MAKE) lint
	set -a; . .services/env; set +a; $(VENV)/bin/pytest -q -p no:cacheprovider; \
	  status=$$?; bash scripts/services.sh stop; exit $$status

services-start:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

## protos: regenerate src/potluck/_proto after editing protos/
protos: $(VENV)/.installed-dev
	$(PY) scripts/gen_protos.py

benchmarks: $(VENV)/.installed-dev
	bash scripts/services.sh start
	set -a; . .services/env; set +a; for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-feast09 .services .potluck examples/quickstart/.potluck examples/quickstart/data

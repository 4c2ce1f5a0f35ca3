# The README's commands. Each creates .venv on first use and re-installs only when
# pyproject.toml has changed since the last install.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: install
	IKEPU_DEMO=$${IKEPU_DEMO:-1} $(PY) -m server

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	@for b in bench/[!_]*.py; do $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache

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

# Two pytest-xdist workers, one per core: each starts its own database and emulator; tests
# marked solo measure time, so they run alone afterwards. The console's browser tests need
# Debian's chromium and a CJK font: installed here when they are missing and we are root;
# otherwise those tests skip, saying so.
test: install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && { [ ! -x /usr/bin/chromium ] || [ -z "$$(fc-list :lang=zh 2>/dev/null)" ]; }; then \
	  echo "installing chromium and fonts-noto-cjk for the console's browser tests"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null; \
	fi
	$(PY) -m pytest -q -rs -n 2 -m 'not solo' $(PYTEST_ARGS)
	$(PY) -m pytest -q -rs -m solo $(PYTEST_ARGS)

bench: install
	@for b in bench/[!_]*.py; do $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts

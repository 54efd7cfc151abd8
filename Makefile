# `make run` serves the app as the Procfile does; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin

.PHONY: run test lint lock system-packages bench bench-quick soak compat vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs come from the lock (requirements*.txt: exact versions with their hashes), so a deploy
# next month gets what the tests passed with; the project itself goes in on top, without its
# dependencies (they are all in the lock) and built with the environment's own setuptools.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --requirement requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --requirement requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@ $(VENV)/.installed

# The lock, made again from pyproject.toml's ranges by uv (`make lock UPGRADE=openai` moves just
# that package to its newest allowed release; without it, versions stay where they are if allowed).
# setuptools is locked too: it builds the project in place (the venv's own is too old for that).
UV_COMPILE = echo 'setuptools>=70.1,<81' | $(BIN)/uv pip compile pyproject.toml - --quiet --generate-hashes \
	--python-version 3.11 $(if $(UPGRADE),--upgrade-package $(UPGRADE))

lock: $(VENV)/.installed-dev
	$(UV_COMPILE) --output-file requirements.txt
	$(UV_COMPILE) --extra dev --output-file requirements-dev.txt

run: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/dotenv -f .env run --no-override -- \
		sh -c "exec $$(sed -n 's/^web: *//p' Procfile)"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests wsgi.py gunicorn.conf.py
	$(BIN)/ruff format --check app tests wsgi.py gunicorn.conf.py
	$(BIN)/mypy app

# The browser tests drive Debian's Chromium (never a downloaded browser), the shared rate limit
# tests a real Redis and the conversation storage tests a real PostgreSQL; where they cannot be
# installed (not root), those tests skip and say why. PostgreSQL's programs are not on PATH but in
# /usr/lib/postgresql/<version>/bin, so it is looked for there.
SYSTEM_PACKAGES := chromium redis-server

system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -z "$$missing" ] || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } >/dev/null 2>&1 || \
		echo "Could not install$$missing (it takes root and apt-get): the tests that need them will be skipped"

test: lint system-packages
	$(BIN)/pytest

# Not part of `make test`: figures, not pass/fail. Results also go to bench-results/bench.json.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench --quick

# Tens of thousands of mixed streams through one worker: RSS, descriptors, greenlets, leaks.
soak: $(VENV)/.installed-dev
	$(BIN)/python -m tests.soak

# Not part of `make test`: the service against a real gateway, the LiteLLM proxy with mock and
# paced models on loopback. LiteLLM goes into a virtualenv of its own, never the project's.
COMPAT_VENV := .venv-compat
LITELLM ?= litellm[proxy]==1.108.7

$(COMPAT_VENV)/.installed:
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet '$(LITELLM)'
	touch $@

compat: $(VENV)/.installed-dev $(COMPAT_VENV)/.installed
	$(BIN)/python -m tests.compat.check --upstream litellm --litellm $(CURDIR)/$(COMPAT_VENV)/bin/litellm

# The page's third-party files (app/static/vendor/): fetched again from the npm registry at the
# versions pinned in vendor.json, each package checked against the integrity hash the registry
# publishes. To upgrade one, change its version there and run this. No node needed.
vendor: $(VENV)/.installed
	$(BIN)/python -m tests.vendor

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .mypy_cache .ruff_cache .coverage bench-results

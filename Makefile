# Two entry points promised by the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
LOCK    = requirements.lock
# `make lock` runs pip-compile from its own small venv, so the project's venv stays exactly the lock.
LOCK_VENV ?= .venv-lock
# `make lock LOCKFLAGS=--upgrade` moves every pin to the newest version the bounds allow.
LOCKFLAGS ?=

.PHONY: demo test lint lock clean screenshots

# The venv holds exactly what requirements.lock pins (hash-checked), plus the project itself
# without dependencies; it is rebuilt from scratch whenever pyproject.toml or the lock changes.
$(BIN)/reconciler: pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

demo: $(BIN)/reconciler
	$(BIN)/reconciler demo

# The README's test command: lint, format, layers (import-linter), types (mypy), then the suite
# on TEST_WORKERS pytest-xdist workers, a module per worker at a time (`make test TEST_WORKERS=0`:
# one process). The suite is CPU bound (ansible-playbook, the daemons): 3 workers keep 2 cores busy.
TEST_WORKERS ?= 3
test: $(BIN)/reconciler
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/ruff format --check reconciler tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy reconciler
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

lint: $(BIN)/reconciler
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/ansible-lint --profile production playbooks/deploy-app.yml playbooks/reconciler-observe.yml playbooks/reconciler-observe-command.yml roles/deploy_app

# Regenerate the README's images of the web page (docs/img/*.png) with the browser tests
# (tests/web: Debian's chromium + chromium-driver, a real daemon on the local fleet).
screenshots: $(BIN)/reconciler
	RECONCILER_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/web/test_page.py

# Regenerate requirements.lock from pyproject.toml (dependencies + the `test` extra), with hashes.
# Existing pins are kept unless pyproject.toml excludes them; LOCKFLAGS=--upgrade refreshes all.
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet 'pip-tools>=7.4,<8'
	$(LOCK_VENV)/bin/pip-compile --quiet $(LOCKFLAGS) --extra test --generate-hashes \
	  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .mypy_cache .import_linter_cache

# Two entry points promised by the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/reconciler: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

demo: $(BIN)/reconciler
	$(BIN)/reconciler demo

test: $(BIN)/reconciler
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/python -m pytest

lint: $(BIN)/reconciler
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/ansible-lint --profile production playbooks/deploy-app.yml roles/deploy_app

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands on a fresh machine: `make dev` runs attachd, `make test` runs the tests.
# Both create .venv and install what they need from PyPI; nothing else, no root.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

.PHONY: dev test check install docs
install: $(BIN)/.installed

dev: $(BIN)/.installed
	$(BIN)/attachd dev $(ARGS)

test: check
	$(BIN)/python -m pytest -q $(ARGS)

# Lint, format and types: the first part of `make test`, and of CI.
check: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# docs/settings.md and workers/contract.schema.json from their definitions (tests fail when either is stale).
docs: $(BIN)/.installed
	$(BIN)/python -m services.core.settings --markdown > docs/settings.md
	$(BIN)/python -m services.core.contract > workers/contract.schema.json

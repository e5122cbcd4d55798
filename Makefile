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

.PHONY: dev test install docs
install: $(BIN)/.installed

dev: $(BIN)/.installed
	$(BIN)/attachd dev $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(ARGS)

# docs/settings.md from the settings' definitions (tests/test_settings.py fails when it is stale).
docs: $(BIN)/.installed
	$(BIN)/python -m services.core.settings --markdown > docs/settings.md

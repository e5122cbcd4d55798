# Two commands on a fresh machine: `make dev` runs attachd, `make test` runs the tests.
# Both create .venv and install what they need from PyPI; nothing else, no root.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The deploy checks' own tools (checkov and friends would otherwise share attachd's venv and its pins).
TOOLS  ?= .venv-deploy
UV_VERSION = 0.13.9
# Every lock is resolved for every platform attachd supports, with hashes; `make lock ARGS=--upgrade` moves the pins.
LOCK = $(BIN)/python -m uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(ARGS)

# The pinned versions (requirements/dev.txt, hashes checked), then attachd itself on top, editable.
$(BIN)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e ".[dev,test]"
	$(BIN)/python -m pip check
	touch $@

.PHONY: dev test check install docs docs-viewer lock deploy-check console
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

# The upload console's bundle, services/console/static/, from console/ (npm ci from the lockfile, then esbuild);
# commit what it writes: the package ships it, so nobody else needs npm (tests/test_console.py fails when stale).
console:
	cd console && npm ci --no-audit --no-fund && npm run build

# The /docs page's viewer: Swagger UI's dist files from the npm registry, copied into the package (the page loads
# nothing from elsewhere; its source map reference is dropped, as the map is not shipped).
SWAGGER_UI = 5.35.0
VIEWER = services/web/static/docs
docs-viewer:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI) >/dev/null \
	  && tar xzf swagger-ui-dist-$(SWAGGER_UI).tgz && cd package \
	  && cp swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt favicon-32x32.png LICENSE NOTICE $(CURDIR)/$(VIEWER)/ \
	  && grep -v sourceMappingURL swagger-ui.css > $(CURDIR)/$(VIEWER)/swagger-ui.css \
	  && echo "swagger-ui-dist@$(SWAGGER_UI) $$(npm view --silent swagger-ui-dist@$(SWAGGER_UI) dist.integrity)" \
	    > $(CURDIR)/$(VIEWER)/VERSION && rm -r $$tmp

# requirements/*.txt from pyproject.toml and requirements/*.in (a test fails when a lock misses a dependency).
lock: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK) pyproject.toml -o requirements/runtime.txt
	$(LOCK) pyproject.toml --extra dev --extra test -o requirements/dev.txt
	$(LOCK) requirements/build.in -o requirements/build.txt
	$(LOCK) requirements/deploy-check.in -o requirements/deploy-check.txt

$(TOOLS)/.installed: requirements/deploy-check.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r requirements/deploy-check.txt
	touch $@

# deploy/: each Kubernetes overlay rendered and validated, checkov, hadolint, compose.yaml (deploy/check).
deploy-check: $(TOOLS)/.installed
	TOOLS=$(TOOLS) deploy/check

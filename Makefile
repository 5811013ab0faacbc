# Each target builds .venv on first use, so a fresh clone needs only `make run` / `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo drill bench package clean chromium

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,infra,local]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/emailplatform up

# The report screenshot test needs a real browser: Debian's chromium (installed when missing, as root).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) chromium
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m local.demo

drill: $(STAMP)
	$(BIN)/python -m local.drill

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.send

# Lambda artifact for infra/ (arm64, Python 3.11): runtime dependencies + our packages, no moto/pulumi.
package: $(STAMP)
	rm -rf build/lambda dist/lambda.zip && mkdir -p build/lambda dist
	$(BIN)/pip install -q --target build/lambda --platform manylinux2014_aarch64 --implementation cp \
		--python-version 3.11 --only-binary=:all: boto3 pydantic pydantic-settings jinja2 structlog \
		prometheus-client 'apscheduler<4' 'aws-lambda-powertools[validation]' email-validator standardwebhooks opensearch-py
	cp -r config core handlers build/lambda/
	cd build/lambda && $(CURDIR)/$(BIN)/python -m zipfile -c $(CURDIR)/dist/lambda.zip .
	@echo "dist/lambda.zip ready"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# `pulumi preview` of a stack with the CrossGuard policy pack (infra/policy). Needs: the pulumi CLI
# on PATH, a logged-in backend (`pulumi login`), AWS credentials for the stack's account, and the
# Lambda artifact (`make package`). Without the CLI it says so and stops (exit 0).
STACK ?= staging
.PHONY: preview
preview:
	@if ! command -v pulumi >/dev/null 2>&1; then \
		echo "preview: the pulumi CLI is not installed (https://www.pulumi.com/docs/install/); nothing to do."; \
		echo "preview: it also needs 'pulumi login', AWS credentials and dist/lambda.zip ('make package')."; \
		exit 0; \
	fi; \
	$(MAKE) --no-print-directory $(STAMP) || exit 1; \
	test -f dist/lambda.zip || echo "preview: dist/lambda.zip is missing; run 'make package' first."; \
	pulumi preview --stack $(STACK) --policy-pack infra/policy --diff

# Each target builds .venv on first use, so a fresh clone needs only `make run` / `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo drill drill-auto bench package clean chromium

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

# Every tier in one run on PYTEST_WORKERS pytest-xdist workers (0: one process), each with its own
# moto server. tests/conftest.py keeps the tests on the shared e2e stack on one worker in file order
# (least privilege last), starts the e2e runs with stacks of their own early on the other, and keeps
# a file with module fixtures on one worker; unit, integration and infra tests fill the gaps (the
# e2e tier mostly waits on its stacks). One run, no barrier between the tiers. Three workers on two
# cores: the e2e tests spend much of their time waiting on their stacks (windows, restarts), and a
# third worker fills those waits (pytest 357 s against 382 s with two, same machine, same tree).
# mypy (about 20 s of CPU without a cache) runs beside the tests for the same reason; its verdict
# counts like theirs (and is printed after them).
PYTEST_WORKERS ?= 3

test: $(STAMP) chromium prometheus
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	@$(BIN)/mypy > .mypy.out 2>&1 & mypy=$$!; \
	$(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup --durations=15; tests=$$?; \
	wait $$mypy; types=$$?; echo "mypy:"; cat .mypy.out; rm -f .mypy.out; \
	test $$tests -eq 0 -a $$types -eq 0

# Fast feedback before `make test` (< 60 s on 2 cores once .venv exists): lint, import contracts,
# types ([tool.mypy] in pyproject.toml) and the tests that need no AWS.
CHECK_TESTS := tests/unit $(wildcard tests/services)
.PHONY: check
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider $(CHECK_TESTS)

RECIPIENTS ?= 300
demo: $(STAMP)
	$(BIN)/python -m local.demo --recipients $(RECIPIENTS)

drill: $(STAMP)
	$(BIN)/python -m local.drill

# automatic failover: a partition DR must ride out, then the primary killed mid-send (no human step)
drill-auto: $(STAMP)
	$(BIN)/python -m local.drill --auto

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.send
	$(BIN)/python -m bench.embedded_aws
	$(BIN)/python -m bench.cost

# Lambda artifact for infra/ (arm64, Python 3.11): the pinned runtime dependencies of
# requirements-lambda.txt (no moto/pulumi/test tools) + our packages, deflated.
# tests/deploy/test_lambda_artifact.py builds it with the same targets for this machine's platform
# (LAMBDA_PLATFORM= and its own directories), so the artifact tested is the one built here.
LAMBDA_PLATFORM ?= --platform manylinux2014_aarch64 --implementation cp --python-version 3.11
LAMBDA_DEPS_DIR ?= build/lambda-deps
LAMBDA_DIR ?= build/lambda
LAMBDA_ZIP ?= dist/lambda.zip
LAMBDA_SOURCES := config core handlers
# the roots of requirements-lambda.txt (pyproject.toml's runtime dependencies)
LAMBDA_REQUIREMENTS := boto3 pydantic pydantic-settings jinja2 structlog prometheus-client 'apscheduler<4' \
	'aws-lambda-powertools[validation,tracer]' email-validator standardwebhooks opensearch-py 'pyjwt[crypto]'
.PHONY: lambda-zip lambda-lock

package: $(STAMP)
	@$(MAKE) --no-print-directory lambda-zip
	@echo "$(LAMBDA_ZIP) ready"

# Dependencies are installed once per lock (and platform: give each its own LAMBDA_DEPS_DIR).
$(LAMBDA_DEPS_DIR)/.lock: requirements-lambda.txt
	rm -rf $(LAMBDA_DEPS_DIR) && mkdir -p $(LAMBDA_DEPS_DIR)
	$(BIN)/pip install -q --target $(LAMBDA_DEPS_DIR) $(LAMBDA_PLATFORM) --only-binary=:all: --no-deps \
		-r requirements-lambda.txt
	cp requirements-lambda.txt $@

lambda-zip: $(LAMBDA_DEPS_DIR)/.lock
	rm -rf $(LAMBDA_DIR) $(LAMBDA_ZIP) && mkdir -p $(LAMBDA_DIR) $(dir $(LAMBDA_ZIP))
	cp -R $(LAMBDA_DEPS_DIR)/. $(LAMBDA_DIR)/ && rm $(LAMBDA_DIR)/.lock
	cp -R $(LAMBDA_SOURCES) $(LAMBDA_DIR)/
	find $(LAMBDA_DIR) -name __pycache__ -prune -exec rm -rf {} +
	$(BIN)/python -c 'import shutil, sys; shutil.make_archive(sys.argv[1], "zip", sys.argv[2])' \
		$(basename $(abspath $(LAMBDA_ZIP))) $(LAMBDA_DIR)

# requirements-lambda.txt: the versions installed in .venv of LAMBDA_REQUIREMENTS and their runtime
# dependencies, resolved for the Lambda platform (only wheels for it; needs the package index).
lambda-lock: $(STAMP)
	rm -rf build/lock && mkdir -p build/lock
	$(BIN)/pip freeze --exclude-editable > build/lock/installed.txt
	$(BIN)/pip install -q --dry-run --ignore-installed --report build/lock/report.json --target build/lock/target \
		$(LAMBDA_PLATFORM) --only-binary=:all: -c build/lock/installed.txt $(LAMBDA_REQUIREMENTS)
	$(BIN)/python -c 'import json; r = json.load(open("build/lock/report.json")); \
		pins = sorted((i["metadata"]["name"].lower().replace("_", "-"), i["metadata"]["version"]) for i in r["install"]); \
		open("requirements-lambda.txt", "w").write("# The Lambda artifact'"'"'s runtime dependencies, pinned. Generated by `make lambda-lock` from .venv;\n# installed by `make package` with --no-deps (and by tests/deploy for this machine'"'"'s platform).\n" + "".join(f"{n}=={v}\n" for n, v in pins))'

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

# The alert-rule tests (promtool) and the Prometheus e2e test need Debian's prometheus package
# (installed when missing, as root). Only the binaries are used: its daemon is never started here,
# and `EMAILPLATFORM_PROMETHEUS=1 make run` runs it as a child of the embedded stack.
.PHONY: prometheus
prometheus:
	@command -v promtool >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)

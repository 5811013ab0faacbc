# Each target builds .venv on first use, so a fresh clone needs only `make run` / `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint demo bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,infra]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/emailplatform up

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m local.demo

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.send

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

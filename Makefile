# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TORCH := torch==2.13.0

.PHONY: demo test install lint docs clean debian-data

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so that no dependency pulls a CUDA build from the registry; the package
# alone (what `make demo` needs), the test tools (pytest, playwright, mypy, mkdocs...) on top for
# `make test`, `make lint` and `make docs`
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[test]"
	touch $(TEST_STAMP)

install: $(STAMP)

# the Debian packages waterbirds-photos is built from (bird cut-outs, landscape photographs), when missing
debian-data:
	@bash scripts/debian-packages.sh

demo: $(STAMP) debian-data
	$(BIN)/xgir demo --out results/demo

test: $(TEST_STAMP) debian-data
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests

# the documentation site (docs/*.md and the docstrings) into site/; `make test` also checks it
docs: $(TEST_STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) results .xgir-cache site

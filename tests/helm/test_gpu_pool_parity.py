"""The chart selects GPU nodes and the cache's class as `vllm-deploy render` does, for every
GPU pool preset, and refuses what the stack config refuses, naming the same key."""

from __future__ import annotations

import copy
import re
from typing import Any

import helm_python
import pytest

from components import catalog, manifests, policy
from components.config import ConfigError, parse_stack_config
from components.helm_values import helm_values
from tests.helm.chart import MINIMAL, differences, normalise, render, render_stack

BASE = {"model": {"id": "Qwen/Qwen2.5-1.5B-Instruct", "gated": False}}
PRESETS: dict[str, dict[str, Any]] = {
    "gke-a100": {"gpu": {"type": "A100-80GB"}, "kubernetes": {"gpuPool": {"preset": "gke"}}},
    "gke-h100-two-series-scale-to-zero": {
        "gpu": {"type": "H100"},
        "idleTimeout": "10m",
        "kubernetes": {"gpuPool": {"preset": "gke"}, "nodeSelector": {"cloud.google.com/gke-spot": "true"}},
    },
    "gke-named-class": {
        "gpu": {"type": "L4"},
        "kubernetes": {"gpuPool": {"preset": "gke"}, "cache": {"storageClass": "premium-rwo"}},
    },
    "karpenter-a100-40": {
        "gpu": {"type": "A100-40GB"},
        "kubernetes": {"gpuPool": {"preset": "karpenter"}, "cache": {"storageClass": "gp3"}},
    },
    "node-group-aks": {
        "gpu": {"type": "T4"},
        "kubernetes": {
            "gpuPool": {"preset": "nodeGroup", "label": "kubernetes.azure.com/agentpool", "value": "gput4"},
            "cache": {"storageClass": "managed-csi"},
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        },
    },
    "gfd-h200-explicit": {"gpu": {"type": "H200"}, "kubernetes": {"gpuPool": {"preset": "gfd"}}},
    "gfd-by-default-l40s": {"gpu": {"type": "L40S"}},
}


def config_of(variant: dict[str, Any]):
    return parse_stack_config(BASE | variant, secrets_present={"vllmApiKey"}, require_secrets=False)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_chart_equals_pulumi_for_every_preset(chart, name):
    config = config_of(PRESETS[name])
    rendered = render_stack(chart, helm_values(config, "placeholders"), config)
    assert differences(normalise(rendered), normalise(manifests.build(config).all())) == []
    assert policy.violations(rendered) == []


@pytest.mark.parametrize("gpu", sorted(catalog.GPUS))
@pytest.mark.parametrize("preset", ["gke", "karpenter", "gfd"])
def test_chart_equals_pulumi_for_every_gpu_a_preset_offers(chart, gpu, preset):
    variant = {"gpu": {"type": gpu}, "kubernetes": {"gpuPool": {"preset": preset}, "cache": {"storageClass": "gp3"}}}
    try:
        config = config_of(variant)
    except ConfigError:
        assert preset == "gke" and not catalog.GPUS[gpu].gke_accelerators
        return
    rendered = render_stack(chart, helm_values(config, "placeholders"), config)
    assert differences(normalise(rendered), normalise(manifests.build(config).all())) == []


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"kubernetes": {"gpuPool": {"preset": "karpenter"}}}, "kubernetes.cache.storageClass"),
        (
            {"kubernetes": {"gpuPool": {"preset": "nodeGroup", "label": "agentpool"}, "cache": {"storageClass": "x"}}},
            "kubernetes.gpuPool.value",
        ),
        ({"gpu": {"type": "A10G"}, "kubernetes": {"gpuPool": {"preset": "gke"}}}, "kubernetes.gpuPool.preset"),
        ({"kubernetes": {"gpuPool": {"preset": "gke", "label": "pool"}}}, "kubernetes.gpuPool.label"),
        ({"gpu": {"type": "none"}, "kubernetes": {"gpuPool": {"preset": "gke"}}}, "kubernetes.gpuPool"),
    ],
)
def test_the_chart_refuses_what_the_stack_config_refuses(chart, values, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        config_of(values)
    merged = copy.deepcopy(MINIMAL)
    for section, value in values.items():
        merged[section] = value
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(f"{key}: ")):
        render(chart, merged, "vllm", "vllm")


def test_the_schema_lists_the_presets_the_config_knows(chart):
    preset = chart.schema["properties"]["kubernetes"]["properties"]["gpuPool"]["properties"]["preset"]
    assert preset["enum"] == ["gfd", "gke", "karpenter", "nodeGroup"]

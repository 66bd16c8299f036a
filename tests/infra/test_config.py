"""A stack's config: defaults, the fit check, and errors that name the key and the fix."""

from __future__ import annotations

import pytest

from components.config import ConfigError, parse_stack_config
from components.secrets import SECRET_KEYS
from components.stackfile import load_stack, read_raw, stack_names

ALL_SECRETS = set(SECRET_KEYS)  # the Modal proxy token too (autoscale needs it)


def problems(raw: dict, secrets: set[str] = ALL_SECRETS) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, secrets_present=secrets)
    return error.value.problems


def test_every_shipped_stack_file_is_valid() -> None:
    for name in stack_names():
        config = parse_stack_config(read_raw(name), secrets_present=ALL_SECRETS)
        assert config.model.id


def test_defaults_give_a_single_a100_always_on() -> None:
    config = parse_stack_config({"model": {"id": "meta-llama/Llama-3.1-8B-Instruct"}}, secrets_present=ALL_SECRETS)
    assert (config.target, config.gpu.type, config.gpu.count) == ("kubernetes", "A100-80GB", 1)
    assert config.tensor_parallel_size == 1
    assert config.idle_timeout == 0 and not config.scales_to_zero
    assert config.model.name == "llama-3.1-8b-instruct"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(900, 900), ("15m", 900), ("120s", 120), ("1h", 3600), ("never", 0), ("0", 0), ("90", 90)],
)
def test_idle_timeout_accepts_seconds_and_durations(value: object, seconds: int) -> None:
    raw = {"model": {"id": "meta-llama/Llama-3.1-8B-Instruct"}, "idleTimeout": value}
    assert parse_stack_config(raw, secrets_present=ALL_SECRETS).idle_timeout == seconds


def test_dev_releases_its_gpu_after_fifteen_idle_minutes_and_prod_never() -> None:
    assert load_stack("dev").idle_timeout == 900
    assert load_stack("prod").idle_timeout == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"model": {"id": "m"}, "gpu": {"type": "A100X"}}, "gpu.type: unknown GPU type 'A100X'; use one of"),
        ({"model": {"id": "m"}, "gpu": {"count": 0}}, "gpu.count: Input should be greater than or equal to 1 (got 0)"),
        ({"model": {"id": "m"}, "gpu": {"count": "two"}}, "gpu.count: Input should be a valid integer"),
        ({"model": {"id": "m"}, "idleTimeout": -5}, "idleTimeout: must not be negative"),
        ({"model": {"id": "m"}, "idleTimeout": "soon"}, "idleTimeout: 'soon' is not a duration"),
        ({"gpu": {"count": 1}}, "model: required; set it in the stack file"),
        ({"model": {"id": "m"}, "gpuu": {"count": 1}}, "gpuu: unknown key"),
        ({"model": {"id": "m"}, "target": "ecs"}, "target: Input should be 'kubernetes' or 'modal'"),
        ({"model": {"id": "m"}, "vllm": {"image": "vllm/vllm-openai:latest"}}, "vllm.image: 'vllm/vllm-openai:latest' is not pinned"),
        ({"model": {"id": "m"}, "vllm": {"image": "vllm/vllm-openai"}}, "vllm.image: 'vllm/vllm-openai' is not pinned"),
        ({"model": {"id": "m"}, "vllm": {"extraArgs": ["--api-key=abc"]}}, "vllm.extraArgs: --api-key must not be passed as an argument"),
        ({"model": {"id": "m"}, "vllm": {"extraArgs": ["--api_key", "abc"]}}, "vllm.extraArgs: --api-key must not be passed as an argument"),
        ({"model": {"id": "m"}, "vllm": {"gpuMemoryUtilization": 1.5}}, "vllm.gpuMemoryUtilization: Input should be less than or equal to 0.99"),
        ({"model": {"id": "m"}, "wrapper": {"replicas": {"min": 4, "max": 2}}}, "wrapper.replicas: max (2) must be ≥ min (4)"),
        ({"model": {"id": "m"}, "kubernetes": {"namespace": "Bad_NS"}}, "kubernetes.namespace: String should match pattern"),
        ({"model": {"id": "m"}, "kubernetes": {"cache": {"size": "lots"}}}, "kubernetes.cache.size: 'lots' is not a Kubernetes quantity"),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_key(raw: dict, expected: str) -> None:
    found = problems(raw)
    assert any(line.startswith(expected) for line in found), found
    assert all("\n" not in line for line in found)


def test_a_secret_value_is_never_part_of_an_error() -> None:
    raw = {"model": {"id": "m"}, "gpu": {"count": 0}, "vllmApiKey": "sk-very-secret"}
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw)
    assert "sk-very-secret" not in str(error.value)


def test_missing_secrets_name_the_key_and_the_command_that_sets_it() -> None:
    raw = {"model": {"id": "meta-llama/Llama-3.1-8B-Instruct"}}
    found = problems(raw, secrets=set())
    assert found[0].startswith("vllmApiKey: required") and "pulumi config set --secret vllmApiKey < " in found[0]
    assert found[1].startswith("hfToken: required for the gated model meta-llama/Llama-3.1-8B-Instruct")
    assert "pulumi config set --secret hfToken < " in found[1]  # from a file, never typed (shell history)


def test_public_models_need_no_hf_token() -> None:
    raw = {"model": {"id": "Qwen/Qwen2.5-0.5B-Instruct", "gated": False}}
    assert parse_stack_config(raw, secrets_present={"vllmApiKey"}).model.gated is False


def test_errors_carry_the_stack_file_they_come_from() -> None:
    with pytest.raises(ConfigError, match=r"^stacks/Pulumi.x.yaml: gpu.count"):
        parse_stack_config({"model": {"id": "m"}, "gpu": {"count": 0}}, source="stacks/Pulumi.x.yaml")


class TestFitCheck:
    def test_70b_in_bf16_does_not_fit_one_a100_and_the_error_gives_the_arithmetic(self) -> None:
        raw = {"model": {"id": "meta-llama/Llama-3.1-70B-Instruct"}, "gpu": {"type": "A100-80GB", "count": 1}}
        (line,) = [p for p in problems(raw) if p.startswith("gpu.count")]
        assert "131.5 GiB of weights (70.6B parameters × 2 bytes)" in line
        assert "1 × A100-80GB × 0.9 utilisation gives 72.0 GiB" in line
        assert line.endswith("Set gpu.count: 2 (the smallest count that fits).")

    def test_70b_fits_two_a100s(self) -> None:
        report = load_stack("prod").fit
        assert report is not None and report.fits and report.smallest_count == 2
        assert 130 < report.weights_gib < 133

    def test_quantisation_shrinks_the_weights(self) -> None:
        raw = {
            "model": {"id": "meta-llama/Llama-3.1-70B-Instruct"},
            "gpu": {"type": "A100-80GB", "count": 1},
            "vllm": {"quantization": "awq"},
        }
        report = parse_stack_config(raw, secrets_present=ALL_SECRETS).fit
        assert report is not None and report.fits and 32 < report.weights_gib < 34

    def test_tensor_parallel_size_must_divide_the_attention_heads(self) -> None:
        raw = {"model": {"id": "meta-llama/Llama-3.1-70B-Instruct"}, "gpu": {"type": "A100-80GB", "count": 3}}
        assert any("does not divide meta-llama/Llama-3.1-70B-Instruct's 64 attention heads" in p for p in problems(raw))

    def test_unknown_models_are_sized_from_their_name_or_the_stack(self) -> None:
        raw = {"model": {"id": "acme/Giant-180B-Chat"}, "gpu": {"type": "A100-80GB", "count": 1}}
        assert any("acme/Giant-180B-Chat does not fit 1 × A100-80GB" in p for p in problems(raw))
        raw = {"model": {"id": "acme/mystery", "parametersBillion": 7}, "gpu": {"type": "L4", "count": 1}}
        report = parse_stack_config(raw, secrets_present=ALL_SECRETS).fit
        assert report is not None and report.parameters_billion == 7

    def test_cpu_serving_skips_the_gpu_fit(self) -> None:
        assert load_stack("local").fit is None
        assert load_stack("local").tensor_parallel_size == 1

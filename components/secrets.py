"""What is secret in a stack: its secret keys, the names they travel under, the flags that would leak them.

Standard library only: the Modal containers import it without the project's dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SecretKey:
    # The stack's config key: `pulumi config set --secret <name>`, `secrets.<name>` in chart values.
    name: str
    # The environment variable (and Secret data key) the servers read it from.
    env: str
    # Older names the Modal Secret also carries, for the scripts of the deployments this replaced.
    aliases: tuple[str, ...] = ()


SECRETS = (
    SecretKey("hfToken", "HF_TOKEN", ("HUGGING_FACE_HUB_TOKEN",)),  # huggingface_hub reads both
    SecretKey("vllmApiKey", "VLLM_API_KEY", ("VLLM_SERVER_API_KEY",)),  # vLLM's --api-key; the wrapper sends it
    SecretKey("wrapperApiKey", "VLLM_WRAPPER_API_KEY"),  # Bearer key clients send to the wrapper
)
# Modal autoscale only: the proxy auth token the wrapper sends to the GPU function (its
# `requires_proxy_auth` endpoint). Made in Modal's dashboard (Settings → Proxy Auth Tokens).
MODAL_PROXY_TOKEN = (
    SecretKey("modalProxyTokenId", "VLLM_MODAL_KEY"),  # wk-…, sent as Modal-Key
    SecretKey("modalProxyTokenSecret", "VLLM_MODAL_SECRET"),  # ws-…, sent as Modal-Secret
)
SECRET_KEYS = tuple(key.name for key in (*SECRETS, *MODAL_PROXY_TOKEN))
# Stack secret name → the environment variable that carries it.
SECRET_ENV = {key.name: key.env for key in SECRETS}

# Flags that would put a secret on a command line (it shows in `ps`, pod specs and state).
SECRET_FLAGS = ("--api-key", "--hf-token", "--token", "--password")


def secret_flag(arg: object) -> str | None:
    """`--api_key=abc` → `--api-key`; None for an ordinary argument. vLLM accepts either spelling."""
    flag = str(arg).split("=", 1)[0].replace("_", "-")
    return flag if flag in SECRET_FLAGS else None

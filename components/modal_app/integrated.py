"""Integrated: vLLM's own OpenAI server as a Modal web endpoint on the stack's GPUs.

    clients ──HTTPS──▶ serve_vllm (A100-80GB:N, tensor parallel N, vLLM OpenAI server)

Scales to zero after the stack's idle timeout (Modal's `scaledown_window`); weights are cached
in a Modal Volume; vLLM's `--api-key` comes from the secret's VLLM_API_KEY, never argv.
"""

from __future__ import annotations

import modal
from components.modal_app import common
from components.modal_app.spec import current

spec = current("integrated")
app = modal.App(spec.app_name)


@app.function(**common.vllm_function_options(spec))
@modal.concurrent(max_inputs=spec.max_concurrent_inputs)
@modal.web_server(port=spec.port, startup_timeout=spec.startup_timeout)
def serve_vllm() -> None:
    common.start_vllm(spec)


if spec.predownload:

    @app.function(**common.download_options(spec))
    def download_weights() -> str:
        return common.download_weights(spec)

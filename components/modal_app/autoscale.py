"""Autoscale: the project's wrapper always on (CPU), vLLM on a GPU that scales to zero.

    clients ──HTTPS──▶ serve_wrapper (CPU, min_containers=1, the `wrapper/` package)
                          │ HTTPS, Modal-Key/Modal-Secret (proxy auth) + Bearer VLLM_API_KEY, SSE through
                          ▼
                       serve_vllm (GPU, vLLM OpenAI server, scaledown_window = idle timeout)

A request that arrives while the GPU side is scaled to zero is held by Modal until vLLM
is up (its `startup_timeout`); the wrapper's VLLM_TIMEOUT covers that cold start. Modal's
150 s limit on the client's own request is met by the wrapper's early SSE headers and
keep-alives on streams (wrapper/keepalive.py); non-streamed clients follow Modal's 303 (README).
"""

from __future__ import annotations

import modal
from components.modal_app import WRAPPER_PACKAGE, common
from components.modal_app.spec import current

spec = current("autoscale")
app = modal.App(spec.app_name)


@app.function(**common.vllm_function_options(spec))
@modal.concurrent(max_inputs=spec.max_concurrent_inputs)
# Behind Modal's proxy auth: only a caller with the stack's proxy token (the wrapper) reaches it,
# so a stranger who finds the URL cannot start a GPU container.
@modal.web_server(port=spec.port, startup_timeout=spec.startup_timeout, requires_proxy_auth=True)
def serve_vllm() -> None:
    common.start_vllm(spec)


@app.function(
    image=common.wrapper_image(spec, WRAPPER_PACKAGE),
    secrets=[common.secret(spec)],
    env={**spec.function_env(), **spec.wrapper_env},
    min_containers=spec.wrapper_min_containers,
    timeout=spec.function_timeout,
)
@modal.concurrent(max_inputs=spec.wrapper_max_concurrent_inputs)
@modal.asgi_app()
def serve_wrapper():
    from components.modal_app.wrapper_asgi import build_wrapper_app

    async def gpu_runners() -> int:
        return (await serve_vllm.get_current_stats.aio()).num_total_runners

    return build_wrapper_app(spec, vllm_url=serve_vllm.get_web_url(), gpu_runners=gpu_runners)


if spec.predownload:

    @app.function(**common.download_options(spec))
    def download_weights() -> str:
        return common.download_weights(spec)

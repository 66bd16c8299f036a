"""A vLLM replica's ``/metrics`` page on loopback, with load the test sets: what the autoscaler
scrapes, in the text format vLLM 0.32's Prometheus logger writes (one gauge per engine, labelled
``engine`` and ``model_name``: vllm/v1/metrics/loggers.py, ``vllm:num_requests_running`` and
``vllm:num_requests_waiting``). Real vLLM stands in for it in test_e2e.py."""

from __future__ import annotations

from aiohttp import web

from tests.support.ports import free_port


class MetricsReplica:
    def __init__(self) -> None:
        self.port = free_port()
        self.running = 0
        self.waiting = 0
        # vLLM's e2e latency histogram: the seconds finished requests took in total (_sum) and
        # how many finished (_count); latency_sum None: the histogram is left off the page.
        self.latency_sum: float | None = None
        self.finished = 0
        self.scrapes = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{engine="0",model_name="tiny"}} {float(self.running)}\n'
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{engine="0",model_name="tiny"}} {float(self.waiting)}\n'
            "# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.\n"
            "# TYPE vllm:num_preemptions_total counter\n"
            'vllm:num_preemptions_total{engine="0",model_name="tiny"} 0.0\n'
        )
        if self.latency_sum is not None:
            text += (
                "# TYPE vllm:e2e_request_latency_seconds histogram\n"
                f'vllm:e2e_request_latency_seconds_sum{{engine="0",model_name="tiny"}} {self.latency_sum}\n'
                f'vllm:e2e_request_latency_seconds_count{{engine="0",model_name="tiny"}} {float(self.finished)}\n'
            )
        return web.Response(text=text, content_type="text/plain")

    async def start(self) -> MetricsReplica:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""A real Prometheus scraping a real wrapper (scale-to-zero on) and a real vLLM on loopback.

    with LiveStack(tmp_dir) as live:
        live.prometheus.query('up')

* vLLM: the CPU build on the fast tiny model, prefix caching on (tests/support/real_vllm.py).
* The Kubernetes API the wrapper's scaler talks to: tests/scaling/fake_apiserver.py, a real HTTP
  server that answers like the API server. The StatefulSet starts at 0 replicas; when the wrapper
  scales it to 1, the "controller" marks it ready after WAKE_SECONDS (the vLLM process is already
  running: starting it takes minutes here). With VLLM_WAKE_TIMEOUT below that, the request that
  woke it gets a real 503 (`model_waking`), and the wake is measured: the data scale-to-zero
  panels and the error panels show.
* The wrapper: `python -m wrapper` with VLLM_IDLE_TIMEOUT > 0, so the scaler's metrics exist.
* Prometheus: Debian's package (`bash .ci/install-prometheus`), 1 s scrape and rule evaluation,
  the repository's rules file loaded. Each target carries the labels the PodMonitors give it
  (`namespace`, `pod`, and the pod's labels through `labelmap`: app_kubernetes_io_component...),
  see components/observability.py pod_monitor.
* Traffic: a thread sends completions (a shared long system prompt, so the prefix cache hits)
  until the stack stops; once: a streamed chat through the official `openai` client and a
  request for an unknown model (404).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

from components.observability import RULES_FILE
from tests.scaling.fake_apiserver import FakeAPIServer
from tests.support.ports import free_port
from tests.support.real_vllm import VllmServer
from tests.wrapper._wrapper_servers import Wrapper

NAMESPACE = "obs-test"
STATEFULSET = "vllm"
WAKE_SECONDS = 4.0  # the "pod" becomes ready this long after the scale-up
WAKE_TIMEOUT = 2  # the wrapper holds a request this long: the first one gets 503
SYSTEM = "You are a helpful assistant for a kubernetes cluster. " * 40  # ~500 tokens, shared


def pod_labels(component: str) -> dict[str, str]:
    """The labels a PodMonitor with the `labelmap` relabeling puts on this component's series."""
    return {
        "namespace": NAMESPACE,
        "pod": f"{component}-0",
        "app_kubernetes_io_name": "vllm-deploy",
        "app_kubernetes_io_instance": "vllm",
        "app_kubernetes_io_component": component,
    }


class Prometheus:
    """`prometheus` on 127.0.0.1 with its own config and TSDB in `workdir`."""

    def __init__(self, workdir: Path, targets: dict[str, tuple[str, dict[str, str]]]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "no prometheus on PATH: run `bash .ci/install-prometheus` (make test does)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [address], "labels": labels}]}
                for job, (address, labels) in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait(lambda: httpx.get(self.url + "/-/ready", timeout=2).status_code == 200, 60, "/-/ready")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus: no {what} after {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: Any) -> Any:
        reply = httpx.get(self.url + "/api/v1/" + path, params=params, timeout=30)
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def wait_for_data(
        self, expr: str, timeout: float = 120.0, until: Callable[[list[dict]], bool] | None = None
    ) -> list[dict]:
        """The result of `expr` once it has a series with a finite value (and ``until(result)``
        holds: each series is first scraped at its own time); fails naming `expr`."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if any(math.isfinite(float(s["value"][1])) for s in result) and (until is None or until(result)):
                return result
            time.sleep(0.5)
        raise AssertionError(f"no finite data after {timeout} s for: {expr}\nlast result: {result}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class LiveStack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.vllm: VllmServer | None = None
        self.api: FakeAPIServer | None = None
        self.wrapper: Wrapper | None = None
        self.prometheus: Prometheus | None = None
        self.first_status: int | None = None
        self._stop = threading.Event()
        self._traffic: threading.Thread | None = None
        self.sent = 0
        self.started = time.time()

    def __enter__(self) -> LiveStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.vllm = VllmServer("fast", extra_args=["--enable-prefix-caching"]).start()
        self.api = FakeAPIServer(NAMESPACE, STATEFULSET, replicas=0, ready=0).start()

        def controller(old: int, new: int) -> None:  # the StatefulSet controller and kubelet
            if new >= 1 and old == 0:
                time.sleep(WAKE_SECONDS)
            self.api.set_ready(min(new, 1))

        self.api.on_replicas = controller
        self.wrapper = Wrapper(
            self.vllm.base_url,
            api_key=self.vllm.api_key,
            model=self.vllm.model,
            idle_timeout=3600,
            wake_timeout=WAKE_TIMEOUT,
            k8s_namespace=NAMESPACE,
            k8s_statefulset=STATEFULSET,
            k8s_api_url=self.api.url,
        )
        self.prometheus = Prometheus(
            self.workdir,
            {
                "vllm": (f"127.0.0.1:{self.vllm.port}", pod_labels("vllm")),
                "vllm-wrapper": (f"127.0.0.1:{self.wrapper.port}", pod_labels("wrapper")),
            },
        )
        # Only once Prometheus has the "before" samples can it see the wake and the first errors.
        # Both targets scraped successfully (each target's first scrape lands at its own offset).
        both_up = f'count(up{{namespace="{NAMESPACE}"}} == 1) == 2'
        for expr in (both_up, "vllm_wrapper_scale_wake_duration_seconds_count"):
            self.prometheus.wait_for_data(expr)
        self._first_requests()
        self._traffic = threading.Thread(target=self._keep_busy, name="traffic", daemon=True)
        self._traffic.start()

    def _chat(self, client: httpx.Client, **extra: Any) -> httpx.Response:
        body = {
            "model": self.vllm.model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"question {self.sent}"}],
            "max_tokens": 8,
            **extra,
        }
        self.sent += 1
        return client.post(self.wrapper.base_url + "/chat/completions", json=body, timeout=120)

    def _first_requests(self) -> None:
        with httpx.Client() as client:
            # vLLM is "scaled to zero": this request wakes it and gives up after WAKE_TIMEOUT.
            self.first_status = self._chat(client).status_code
            deadline = time.monotonic() + 60
            while (reply := self._chat(client)).status_code != 200:
                assert time.monotonic() < deadline, f"vLLM never woke: {reply.status_code} {reply.text}"
                time.sleep(0.5)
            missing = client.post(
                self.wrapper.base_url + "/chat/completions",
                json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
                timeout=60,
            )
            assert missing.status_code == 404, missing.text
        oai = openai.OpenAI(base_url=self.wrapper.base_url, api_key="unused", max_retries=0)
        stream = oai.chat.completions.create(
            model=self.vllm.model, messages=[{"role": "user", "content": "tell me a story"}], max_tokens=32, stream=True
        )
        assert sum(1 for _ in stream) > 1

    def _keep_busy(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                try:
                    self._chat(client)
                    client.post(
                        self.wrapper.base_url + "/completions",
                        json={"model": self.vllm.model, "prompt": SYSTEM, "max_tokens": 4},
                        timeout=120,
                    )
                except httpx.HTTPError:
                    pass
                self._stop.wait(0.3)

    def stop(self) -> None:
        self._stop.set()
        if self._traffic is not None:
            self._traffic.join(150)
        for part in (self.prometheus, self.wrapper, self.api, self.vllm):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # stop the rest whatever one of them does
                    pass

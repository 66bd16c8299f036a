"""vLLM's pods for the autoscale end-to-end test and benchmark: real vLLM servers (CPU build, tiny
model) started and stopped as the fake API server's StatefulSet changes ``spec.replicas``, the way
the StatefulSet controller creates pod ``i`` for each ordinal below it and deletes the highest."""

from __future__ import annotations

import secrets
import threading
import time

from tests.scaling.fake_apiserver import FakeAPIServer
from tests.support.ports import free_port
from tests.support.real_vllm import VllmServer, replica_cpus


class Pods:
    """The StatefulSet controller of this test: pod ``i`` is vLLM server ``i`` on a fixed port."""

    def __init__(self, api: FakeAPIServer, n: int) -> None:
        key = secrets.token_urlsafe(24)
        self.api = api
        self.ports = [free_port() for _ in range(n)]
        self.servers = []
        for i in range(n):
            s = VllmServer(
                "fast",
                startup_timeout=1500,
                extra_args=["--max-num-seqs", "8", "--shutdown-timeout", "30"],
                cpus=replica_cpus(i),
            )
            s.api_key = key  # one key for every replica: the wrapper has one VLLM_API_KEY
            self.servers.append(s)
        self.base_urls = [f"http://127.0.0.1:{p}/v1" for p in self.ports]
        self.requested: dict[int, float] = {}
        self.ready: dict[int, float] = {}
        self.stopped: dict[int, float] = {}
        self.lock = threading.Lock()

    def on_replicas(self, old: int, new: int) -> None:  # the fake API server's hook thread
        with self.lock:
            for i, s in enumerate(self.servers):
                if i < new and not s.is_running():
                    self.requested[i] = time.monotonic()
                    s.start(port=self.ports[i])
                    assert s.port == self.ports[i], "the port was taken: pod DNS names are fixed"
                    self.ready[i] = time.monotonic()
                elif i >= new and s.is_running():
                    s.stop()  # SIGTERM: what the kubelet sends the pod the StatefulSet removes
                    self.stopped[i] = time.monotonic()
            self.api.set_ready(sum(s.is_running() for s in self.servers))

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

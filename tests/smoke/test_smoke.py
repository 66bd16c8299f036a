"""`vllm-deploy smoke` against a real wrapper in front of a real vLLM, both started by the tests.

No mocks: the port-forward step runs a stand-in `kubectl` (tests/smoke/forwarder.py) that
really forwards the local port smoke picked to the running wrapper and records the arguments
it was given. A model still loading is a real vLLM behind a port that opens only after a delay;
a stack scaled to zero is a wrapper configured from the stack's own manifest, scaling through
the loopback Kubernetes API server of tests/scaling, whose "pod" opens the way to the real vLLM.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from components.plan import startup_budget_seconds
from components.stackfile import load_stack
from tests.scaling.fake_apiserver import FakeAPIServer
from tests.smoke.conftest import REPO, Wrapper, free_port, stack_wrapper_env, start_wrapper
from tests.smoke.forwarder import Forwarder
from tests.support.cli import vllm_deploy

ALL_CHECKS = ["health", "models", "chat", "stream", "auth", "metrics"]
CONFIGURED_WAKE_TIMEOUT = 600  # the test stack's wrapper.wakeTimeout: what smoke must NOT wait for when nothing can wake


def smoke(args: list[str], *, key: str | None = None, path: list[Path] = (),
          extra_env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """`vllm-deploy smoke ARGS`, in-process (tests/support/cli.py); smoke_process() runs the process."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("VLLM_", "SMOKE_"))}
    if key is not None:
        env["VLLM_WRAPPER_API_KEY"] = key
    env["PATH"] = os.pathsep.join([*map(str, path), os.environ.get("PATH", "")])
    env.update(extra_env or {})
    return vllm_deploy("smoke", *args, cwd=REPO, env=env)  # pytest-timeout bounds a hang


@dataclass
class Row:
    status: str
    seconds: float
    detail: str
    hints: list[str] = field(default_factory=list)


def table(stdout: str) -> dict[str, Row]:
    """The report's rows by check name, each with the `check:` lines printed under it."""
    rows: dict[str, Row] = {}
    last: Row | None = None
    for line in stdout.splitlines():
        if match := re.match(r"  (PASS|FAIL|SKIP)  (\w+) +([\d.]+) s  (.*)$", line):
            assert match[2] not in rows, f"{match[2]} printed twice:\n{stdout}"
            last = rows[match[2]] = Row(match[1], float(match[3]), match[4])
        elif line.startswith("        check: "):
            assert last is not None, line
            last.hints.append(line.removeprefix("        check: "))
    return rows


def assert_each_step_once(result: subprocess.CompletedProcess[str], names: list[str]) -> None:
    """Each check is printed once on the terminal (stdout and stderr together), when it ends."""
    lines = result.stdout.splitlines() + result.stderr.splitlines()
    for name in names:
        mentions = [l for l in lines if re.match(rf"  (PASS|FAIL|SKIP)  {name} ", l) or l.startswith(f"… {name}: ")]
        assert len(mentions) == 1, (name, mentions)


def progress(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [l.removeprefix("… ") for l in result.stderr.splitlines() if l.startswith("… ")]


def smoke_process(args: list[str], extra_env: dict | None = None, path: list[Path] = ()) -> subprocess.Popen[str]:
    """`vllm-deploy smoke` running, for a test that acts when it reports a step on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SMOKE_"))}
    env["PATH"] = os.pathsep.join([*map(str, path), env.get("PATH", "")])
    env.update(extra_env or {})
    return subprocess.Popen([sys.executable, "-m", "components.cli", "smoke", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen[str], text: str) -> str:
    """stderr up to and including the line that contains `text` (the event the test waits on)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"smoke ended without printing {text!r}:\n{''.join(seen)}")


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def kubectl_runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def assert_no_key(result: subprocess.CompletedProcess[str], *keys: str | None) -> None:
    for key in keys:
        if key:
            assert key not in result.stdout and key not in result.stderr


def test_port_forward_all_checks_pass(wrapper: Wrapper, stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    result = smoke(
        ["smoke", "--stacks-dir", str(stacks_dir), "--json"],
        key=wrapper.key, path=[fake_bin],
        extra_env={"SMOKE_KUBECTL_LOG": str(log), "SMOKE_FORWARD_TO": str(wrapper.port)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["via"] == "port-forward" and report["model"] == "tiny"
    assert [c["name"] for c in report["checks"]] == ALL_CHECKS
    assert all(c["status"] == "pass" for c in report["checks"]), report["checks"]
    assert report["wake_seconds"] is None and report["key_configured"] is True
    assert_no_key(result, wrapper.key)
    # --json: stdout is the document; each step is one progress line on stderr.
    assert_each_step_once(result, ALL_CHECKS)
    steps = [l for l in progress(result) if l.split(":")[0] in ALL_CHECKS]
    assert [re.sub(r" \([\d.]+ s\)$", "", l) for l in steps] == [f"{n}: pass" for n in ALL_CHECKS]

    # What smoke asked kubectl for: the stack's namespace, wrapper Service, context and port.
    start, stop = kubectl_runs(log)
    local = int(report["url"].rsplit(":", 1)[1])
    assert start["argv"] == [
        "--context", "ctx-from-stack", "port-forward", "--namespace", "smoke-ns", "svc/smoke-wrapper",
        f"{local}:8001", "--address", "127.0.0.1",
    ]
    # ...and that it closed the forward afterwards.
    assert stop == {"event": "stopped", "pid": start["pid"]}
    assert closed(local)
    assert "port-forward svc/smoke-wrapper -n smoke-ns" in result.stderr
    assert "port-forward closed" in result.stderr


def test_context_override_and_table(wrapper: Wrapper, stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    result = smoke(
        ["smoke", "--stacks-dir", str(stacks_dir), "--context", "other-ctx"],
        key=wrapper.key, path=[fake_bin],
        extra_env={"SMOKE_KUBECTL_LOG": str(log), "SMOKE_FORWARD_TO": str(wrapper.port)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert kubectl_runs(log)[0]["argv"][:2] == ["--context", "other-ctx"]
    # The table is the progress: each row printed once, as its check ends; none repeated on stderr.
    assert_each_step_once(result, ALL_CHECKS)
    assert list(table(result.stdout)) == ALL_CHECKS
    lines = result.stdout.splitlines()
    for name in ALL_CHECKS:
        (line,) = [l for l in lines if l.split()[1:2] == [name]]
        assert line.split()[0] == "PASS" and " s " in line, line
    assert lines[-1] == "ok: 6 passed, 0 failed"
    assert "usage" in next(l for l in lines if " chat " in l)
    assert "[DONE]" in next(l for l in lines if " stream " in l)
    assert_no_key(result, wrapper.key)


def test_wrong_key_fails(wrapper: Wrapper, stacks_dir: Path) -> None:
    wrong = "not-the-wrapper-key-0123456789"
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", wrapper.url], key=wrong)
    assert result.returncode == 1, result.stdout + result.stderr
    fails = {l.split()[1]: l for l in result.stdout.splitlines() if l.startswith("  FAIL")}
    assert {"models", "chat", "stream"} <= set(fails)
    assert "HTTP 401: the wrapper refused the key" in fails["models"]
    assert result.stdout.splitlines()[-1].startswith("FAILED:")
    assert_no_key(result, wrong, wrapper.key)


def test_no_key_against_a_keyed_wrapper_fails(wrapper: Wrapper, stacks_dir: Path) -> None:
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", wrapper.url, "--json"])
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["models"]["status"] == "fail" and "set VLLM_WRAPPER_API_KEY" in checks["models"]["detail"]
    assert checks["auth"]["status"] == "fail"


def test_key_read_from_the_stack_secret_config(wrapper: Wrapper, stacks_dir: Path, tmp_path: Path) -> None:
    """No key in the environment: smoke asks `pulumi config get wrapperApiKey --stack keyed`."""
    bin_dir = tmp_path / "pulumi-bin"
    bin_dir.mkdir()
    calls = tmp_path / "pulumi-calls"
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        '[ "$*" = "config get wrapperApiKey --stack keyed" ] || { echo "unexpected: $*" >&2; exit 1; }\n'
        f"echo {wrapper.key}\n"
    )
    pulumi.chmod(0o755)
    result = smoke(["keyed", "--stacks-dir", str(stacks_dir), "--url", wrapper.url], path=[bin_dir])
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.read_text().split("\n")[0] == "config get wrapperApiKey --stack keyed"
    assert "wrapper key from the stack secret config" in result.stderr
    assert_no_key(result, wrapper.key)


def test_declared_key_without_a_way_to_read_it(stacks_dir: Path, tmp_path: Path) -> None:
    # PATH without pulumi: only the interpreter's directory.
    result = smoke(
        ["keyed", "--stacks-dir", str(stacks_dir), "--url", "http://127.0.0.1:9"],
        extra_env={"PATH": str(Path(sys.executable).parent)},
    )
    assert result.returncode == 2
    assert "VLLM_WRAPPER_API_KEY is not set and the pulumi CLI is not installed" in result.stderr


def test_kubectl_that_cannot_forward(stacks_dir: Path, tmp_path: Path) -> None:
    """A kubectl that exits at once (no cluster): a clear error and exit 2, not a hang."""
    bin_dir = tmp_path / "broken-bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text('#!/bin/sh\necho "error: services \\"smoke-wrapper\\" not found" >&2\nexit 1\n')
    kubectl.chmod(0o755)
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir)], key="k", path=[bin_dir])
    assert result.returncode == 2
    assert 'kubectl port-forward exited with 1: error: services "smoke-wrapper" not found' in result.stderr
    # ...and what to check: the stack's Service where smoke looked, the context, or --url.
    assert result.stderr.splitlines()[-3:] == [
        "  check: the stack's wrapper Service: kubectl --context ctx-from-stack get svc -n smoke-ns smoke-wrapper",
        "  check: the kube context: ctx-from-stack (kubernetes.context or --context) must be the cluster the stack is deployed to",
        "  check: or pass --url with the URL of a wrapper you can reach directly",
    ]


def test_modal_stack_needs_a_url(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.m.yaml").write_text(
        "config:\n  vllm-deploy:target: modal\n  vllm-deploy:model: {id: meta-llama/Llama-3.1-8B-Instruct}\n"
    )
    result = smoke(["m", "--stacks-dir", str(tmp_path)], key="k")
    assert result.returncode == 2 and "pass the wrapper's URL with --url" in result.stderr


# ------------------------------------------------- vLLM down: wait only for what can wake


def test_always_on_stack_with_vllm_down_fails_at_once(vllm_down: Wrapper, stacks_dir: Path, fake_bin: Path,
                                                      tmp_path: Path) -> None:
    """No idleTimeout: nothing will wake vLLM, so smoke does not wait the stack's 600 s wakeTimeout;
    it says which of the stack's objects to look at, named as its manifests name them."""
    started = time.monotonic()
    result = smoke(
        ["smoke", "--stacks-dir", str(stacks_dir)], path=[fake_bin],
        extra_env={"SMOKE_KUBECTL_LOG": str(tmp_path / "kubectl.jsonl"), "SMOKE_FORWARD_TO": str(vllm_down.port)},
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == ["health", "vllm", "auth", "metrics"]
    assert rows["health"].status == "PASS" and rows["health"].detail == "wrapper up; vLLM not available (unavailable / degraded)"
    assert rows["vllm"].status == "FAIL"
    assert rows["vllm"].detail == (
        "vLLM unavailable / degraded and the stack is always on (no idleTimeout): nothing will wake it"
    )
    budget = startup_budget_seconds(load_stack("smoke", stacks_dir))
    assert rows["vllm"].hints == [
        "kubectl --context ctx-from-stack get pods -n smoke-ns",
        "kubectl --context ctx-from-stack logs -n smoke-ns statefulset/smoke -c vllm",
        f"just deployed? the model may still be loading: rerun with --wait {budget}",
    ]
    assert result.stdout.splitlines()[-1] == "FAILED: 2 passed, 1 failed"
    # It neither woke nor waited: returned long before the configured wait could have run out.
    assert not [l for l in progress(result) if "wak" in l or "waiting" in l]
    assert elapsed < CONFIGURED_WAKE_TIMEOUT
    assert_each_step_once(result, list(rows))


def test_wait_gives_an_always_on_stack_that_long(vllm_down: Wrapper, stacks_dir: Path) -> None:
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", vllm_down.url, "--wait", "3", "--json"])
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == ["health", "wait", "auth", "metrics"]
    assert checks["wait"]["status"] == "fail"
    assert checks["wait"]["detail"] == "vLLM not available after 3 s (last health: unavailable / degraded)"
    assert checks["wait"]["seconds"] >= 3  # it did wait what was asked
    assert checks["wait"]["hint"] == [
        "kubectl --context ctx-from-stack get pods -n smoke-ns",
        "kubectl --context ctx-from-stack logs -n smoke-ns statefulset/smoke -c vllm",
    ]
    assert checks["auth"]["status"] == "skip"  # this wrapper has no key: the line says it is open
    assert report["wake_seconds"] is None and not report["ok"]
    # Waiting, not waking: no wake request on an always-on stack; the wait announced once.
    assert [l for l in progress(result) if "waiting" in l or "waking" in l] == ["vLLM is unavailable / degraded: waiting up to 3 s for it (--wait)"]
    assert_each_step_once(result, list(checks))


def test_wait_for_a_model_still_loading(real_vllm, stacks_dir: Path) -> None:  # noqa: F811
    """Right after `pulumi up`: vLLM's port opens only once smoke has found it unavailable and
    started waiting (the model loading); --wait waits for it, then every check passes."""
    port = free_port()
    backend_port = int(real_vllm.base_url.rsplit(":", 1)[1].split("/")[0])
    loading = start_wrapper(f"http://127.0.0.1:{port}/v1", real_vllm.api_key, None, None)
    gate: Forwarder | None = None
    proc = smoke_process(["smoke", "--stacks-dir", str(stacks_dir), "--url", loading.url, "--wait", "120", "--json"])
    try:
        seen = read_until(proc, "waiting up to 120 s for it (--wait)")
        gate = Forwarder(port, backend_port).start()  # the model has loaded: vLLM listens
        stdout, rest = proc.communicate(timeout=300)
    finally:
        stop_process(proc)
        if gate is not None:
            gate.stop()
        loading.stop()
    assert proc.returncode == 0, stdout + seen + rest
    report = json.loads(stdout)
    assert [c["name"] for c in report["checks"]] == ["health", "wait", *ALL_CHECKS[1:]]
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert report["checks"][1]["detail"].startswith("vLLM available after ")
    assert report["wake_seconds"] is None  # nothing was woken: it loaded
    assert "waking" not in seen + rest


class Pod:
    """vLLM's pod for the fake API server: replicas 1 opens the way to the real vLLM after a load
    delay, then reports it ready; replicas 0 closes it (what the StatefulSet controller and the
    readiness probe do). With `starts=False` it never comes up (say, no GPU node to schedule on)."""

    LOAD_SECONDS = 2.0

    def __init__(self, api: FakeAPIServer, port: int, backend_port: int, starts: bool = True) -> None:
        self.api, self.port, self.backend_port, self.starts = api, port, backend_port, starts
        self.gate: Forwarder | None = None
        self.lock = threading.Lock()

    def on_replicas(self, old: int, new: int) -> None:
        with self.lock:
            if new >= 1 and self.gate is None and self.starts:
                time.sleep(self.LOAD_SECONDS)
                self.gate = Forwarder(self.port, self.backend_port).start()
                while self.gate.opened_at is None:
                    time.sleep(0.01)
                self.api.set_ready(1)
            elif new == 0 and self.gate is not None:
                self.stop()
                self.api.set_ready(0)

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.stop()
            self.gate = None


def sleeping_stack(stacks_dir: Path, backend_port: int, *, starts: bool = True, vllm_key: str = "unused"):
    """The `sleepy` stack at zero replicas: the fake API server, its pod, and the stack's wrapper."""
    env = stack_wrapper_env(stacks_dir, "sleepy")
    api = FakeAPIServer(env["VLLM_K8S_NAMESPACE"], env["VLLM_K8S_STATEFULSET"], replicas=0, ready=0).start()
    pod = Pod(api, free_port(), backend_port, starts)
    api.on_replicas = pod.on_replicas
    try:
        asleep = start_wrapper(f"http://127.0.0.1:{pod.port}/v1", vllm_key, None, None,
                               env_extra={**env, "VLLM_K8S_API_URL": api.url})
    except BaseException:
        api.stop()
        raise
    # The wrapper knows it is asleep after its first read of the StatefulSet.
    deadline = time.monotonic() + 60
    while httpx.get(asleep.url + "/health", timeout=5).json().get("scale_state") != "scaled_to_zero":
        assert time.monotonic() < deadline, asleep.log()
        time.sleep(0.1)
    return api, pod, asleep


def scale_ups(api: FakeAPIServer) -> list:
    return [r for r in api.requests if r.method == "PATCH" and r.path.endswith("/scale") and r.body["spec"] == {"replicas": 1}]


def test_scaled_to_zero_stack_is_woken(real_vllm, stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:  # noqa: F811
    """idleTimeout set and vLLM at zero replicas: smoke's request makes the wrapper scale the
    StatefulSet to 1, smoke waits for the pod, reports the wake, then every check passes."""
    backend_port = int(real_vllm.base_url.rsplit(":", 1)[1].split("/")[0])
    api, pod, asleep = sleeping_stack(stacks_dir, backend_port, vllm_key=real_vllm.api_key)
    try:
        result = smoke(
            ["sleepy", "--stacks-dir", str(stacks_dir), "--json"], path=[fake_bin],
            extra_env={"SMOKE_KUBECTL_LOG": str(tmp_path / "kubectl.jsonl"), "SMOKE_FORWARD_TO": str(asleep.port)},
        )
    finally:
        asleep.stop()
        api.stop()
        pod.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = report["checks"]
    assert [c["name"] for c in checks] == ["health", "wake", *ALL_CHECKS[1:]]
    assert all(c["ok"] for c in checks), checks
    assert checks[0]["detail"] == "wrapper up; vLLM not available (scaled_to_zero / unavailable / degraded)"
    assert report["wake_seconds"] >= Pod.LOAD_SECONDS  # it waited for the pod to load
    (up,) = scale_ups(api)  # one wake, by the stack's wrapper, of the stack's StatefulSet
    assert up.path == "/apis/apps/v1/namespaces/smoke-ns/statefulsets/smoke/scale"
    notes = progress(result)
    assert [l for l in notes if "waking it" in l] == [
        "vLLM is scaled_to_zero / unavailable / degraded (scales to zero after 300 s idle): waking it, waiting up to 120 s"
    ]
    assert len(notes) == len(set(notes)), notes  # no progress line repeated
    assert_each_step_once(result, [c["name"] for c in checks])


def test_scaled_to_zero_stack_that_does_not_wake(stacks_dir: Path) -> None:
    """The wake is asked for but the pod never comes up: the wake fails after the wait, pointing
    at the pods, vLLM's log and the wrapper's (whose scaler made the call)."""
    api, pod, asleep = sleeping_stack(stacks_dir, free_port(), starts=False)
    try:
        result = smoke(["sleepy", "--stacks-dir", str(stacks_dir), "--url", asleep.url, "--wait", "3"])
    finally:
        asleep.stop()
        api.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == ["health", "wake", "auth", "metrics"]
    assert rows["wake"].status == "FAIL" and rows["wake"].seconds >= 3
    assert rows["wake"].detail.startswith("vLLM not available after 3 s (last health: ")
    assert rows["wake"].hints == [
        "kubectl --context ctx-from-stack get pods -n smoke-ns",
        "kubectl --context ctx-from-stack logs -n smoke-ns statefulset/smoke -c vllm",
        "kubectl --context ctx-from-stack logs -n smoke-ns deployment/smoke-wrapper",
    ]
    assert len(scale_ups(api)) == 1  # smoke's request did ask the API server for the wake
    # An open wrapper would hold a request while vLLM wakes: smoke does not send it one to wait on.
    assert rows["auth"].status == "SKIP" and rows["auth"].detail.endswith("(not probed while vLLM is unavailable)")
    assert rows["metrics"].status == "PASS"


def test_modal_always_on_stack_fails_at_once(vllm_down: Wrapper, stacks_dir: Path) -> None:
    result = smoke(["modal-on", "--stacks-dir", str(stacks_dir), "--url", vllm_down.url])
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == ["health", "vllm", "auth", "metrics"]
    assert rows["vllm"].detail.endswith("the stack is always on (no idleTimeout): nothing will wake it")
    assert rows["vllm"].hints[0] == "modal app logs vllm-deploy-modal-on"  # the app name pulumi up gives it
    assert not [l for l in progress(result) if "wak" in l or "waiting" in l]


def test_modal_autoscale_stack_waits_for_its_wake(vllm_down: Wrapper, stacks_dir: Path) -> None:
    """idleTimeout with minContainers 0: the GPU side sleeps, so smoke wakes it and waits the
    stack's wakeTimeout (3 s here) before failing."""
    result = smoke(["modal-auto", "--stacks-dir", str(stacks_dir), "--url", vllm_down.url, "--json"])
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert list(checks) == ["health", "wake", "auth", "metrics"]
    assert checks["wake"]["detail"].startswith("vLLM not available after 3 s") and checks["wake"]["seconds"] >= 3
    assert checks["wake"]["hint"] == ["modal app logs smoke-modal"]
    assert "(scales to zero after 120 s idle): waking it, waiting up to 3 s" in result.stderr


# ------------------------------------------------- the wrapper cannot be reached


def test_url_where_nothing_answers(stacks_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", url])
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == ["health"]  # nothing else can pass without the wrapper
    assert rows["health"].status == "FAIL"
    assert rows["health"].detail.startswith(f"cannot reach the wrapper at {url} (ConnectError: ")
    assert rows["health"].hints == [
        f"--url {url}: the wrapper's base URL (without /v1), reachable from here: curl {url}/health",
        "or leave --url out: smoke port-forwards to svc/smoke-wrapper -n smoke-ns in context ctx-from-stack",
    ]


def test_port_forward_with_no_wrapper_behind_it(stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:
    """kubectl opens the local port, but the pod refuses: kubectl logs the error and exits, as it
    does since 1.23. smoke names the forward, kubectl's words, the pods and the context to check."""
    log = tmp_path / "kubectl.jsonl"
    result = smoke(
        ["smoke", "--stacks-dir", str(stacks_dir)], path=[fake_bin],
        extra_env={"SMOKE_KUBECTL_LOG": str(log), "SMOKE_FORWARD_TO": str(free_port())},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == ["health"]
    assert rows["health"].detail.startswith("cannot reach the wrapper at http://127.0.0.1:")
    forward, pods, context, url = rows["health"].hints
    assert forward.startswith(
        "the port-forward `kubectl --context ctx-from-stack port-forward --namespace smoke-ns svc/smoke-wrapper "
    )
    assert "an error occurred forwarding" in forward and "connection refused" in forward.lower()
    assert pods == "the wrapper's pods: kubectl --context ctx-from-stack get pods -n smoke-ns"
    assert context.startswith("the kube context: ctx-from-stack (kubernetes.context or --context)")
    assert url == "or pass --url with the URL of a wrapper you can reach directly"
    assert [run["event"] for run in kubectl_runs(log)] == ["start", "lost"]  # the stand-in exited like kubectl


def test_help_says_when_to_wait() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "components.cli", "smoke", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400", "TERM": "dumb"},
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--wait SECONDS" in text
    assert "right after `pulumi up`, while the model downloads and loads" in text
    assert "an always-on stack with vLLM down fails at once" in text


def test_port_forward_lost_while_waiting_ends_the_wait(stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:
    """The wrapper goes away during a wake (its pod restarts): kubectl exits, so there is nothing
    left to wait through; smoke says so then, not after the stack's 120 s wakeTimeout."""
    api, pod, asleep = sleeping_stack(stacks_dir, free_port(), starts=False)
    log = tmp_path / "kubectl.jsonl"
    proc = smoke_process(["sleepy", "--stacks-dir", str(stacks_dir)], path=[fake_bin],
                         extra_env={"SMOKE_KUBECTL_LOG": str(log), "SMOKE_FORWARD_TO": str(asleep.port)})
    try:
        seen = read_until(proc, "waking it")  # smoke has started the wake
        asleep.stop()  # the wrapper's pod goes away mid-wait
        stdout, rest = proc.communicate(timeout=300)
    finally:
        stop_process(proc)
        asleep.stop()
        api.stop()
    assert proc.returncode == 1, stdout + seen + rest
    rows = table(stdout)
    assert list(rows) == ["health", "wake"]  # the wrapper is gone: nothing else is tried
    assert rows["wake"].status == "FAIL" and rows["wake"].detail.startswith("lost the wrapper after ")
    assert rows["wake"].seconds < 120  # ended by the lost forward, not by the wait running out
    assert rows["wake"].hints[0].startswith("the port-forward `kubectl --context ctx-from-stack port-forward ")
    assert "kubectl port-forward exited with 1" in rows["wake"].hints[0]
    assert "lost" in [run["event"] for run in kubectl_runs(log)]

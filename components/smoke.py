"""`vllm-deploy smoke STACK`: does the deployed wrapper really serve?

Reaches the stack's wrapper Service over `kubectl port-forward` (or any wrapper with
`--url`) and runs, each timed, with a PASS/FAIL line printed as it finishes:

    health    GET /health answers (the wrapper is up); vLLM available
    wake      only when vLLM was not available and can wake (the stack scales to zero): a
              request wakes it, /health is polled until `vllm_available`, the wake time is reported
    wait      the same without the wake request, when `--wait SECONDS` asks to wait on a stack
              that is always on (right after `pulumi up`, while the model loads)
    vllm      vLLM is not available and nothing will wake it (always on, no --wait): fails at
              once, with the commands that show why
    models    GET /v1/models lists the stack's served model
    chat      POST /v1/chat/completions answers with a message and usage
    stream    the same streamed: content tokens arrive, the stream ends with `data: [DONE]`
    auth      with a wrapper key configured, a request without it (and one with a wrong key)
              gets 401; without one the wrapper is open and the line says so
    metrics   GET /metrics answers in Prometheus text format

A failed check carries what to look at next (the port-forward, `--url`, the kube context, the
stack's pods and vLLM logs), named from the stack's own config. The wrapper key comes from
`VLLM_WRAPPER_API_KEY`, else from the stack's secret config (`pulumi config get wrapperApiKey`)
when the pulumi CLI is installed. It is sent in a header only, never printed, never in --json.
Exit status: 0 all passed, 1 a check failed, 2 the smoke could not start (stack file, kubectl,
port-forward).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

KEY_ENV = "VLLM_WRAPPER_API_KEY"
PROMPT = "Say hello in five words."
Progress = Callable[[str], None]
HEARTBEAT_SECONDS = 30.0  # while waiting and nothing changes, a reminder this often


class SmokeError(RuntimeError):
    """The smoke could not run at all (exit 2); `hint` says what to check."""

    def __init__(self, message: str, hint: list[str] | None = None) -> None:
        super().__init__(message)
        self.hint = hint or []


@dataclass
class Check:
    name: str
    status: str  # "pass", "fail" or "skip" (skip = not applicable, never a failure)
    seconds: float
    detail: str
    hint: list[str] = field(default_factory=list)  # what to look at next (failed checks only)

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass
class Report:
    url: str
    via: str  # "port-forward" or "url"
    model: str | None
    key_configured: bool
    wake_seconds: float | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for check in data["checks"]:
            check["ok"] = check["status"] != "fail"
            check["seconds"] = round(check["seconds"], 3)
        if data["wake_seconds"] is not None:
            data["wake_seconds"] = round(data["wake_seconds"], 1)
        return data


@dataclass(frozen=True)
class Waking:
    """Whether smoke may wait for an unavailable vLLM, and how long.

    Waiting only helps where something will bring vLLM up: a stack that scales to zero (the
    wrapper wakes it on a request), or a fresh deploy whose model is still loading, which
    only the user knows of (`--wait`). An always-on stack with vLLM down fails at once.
    """

    scales_to_zero: bool = False
    why: str = "always on"  # how the stack scales, for the output: "scales to zero after 300 s idle"
    wake_timeout: float = 600.0  # the default wait where vLLM can wake (the stack's wrapper.wakeTimeout)
    wait: float | None = None  # --wait SECONDS: wait this long, on any stack
    suggest_wait: int = 600  # what --wait to suggest on an always-on stack (its vLLM startup budget)


@dataclass(frozen=True)
class Hints:
    """What to look at when a check fails, as commands and checks with the stack's real names."""

    vllm: Callable[[], list[str]] = lambda: []  # vLLM is not serving: its pods and logs
    reach: Callable[[], list[str]] = lambda: []  # the wrapper cannot be reached: forward, --url, context
    gone: Callable[[], bool] = lambda: False  # the way to the wrapper is closed for good (kubectl exited)


# ----------------------------------------------------------------- the checks


def _describe(response: httpx.Response) -> str:
    """Status and a short, key-free excerpt of an error body."""
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code}" + (f": {text[:160]}" if text else "")


class Smoke:
    """The checks against one wrapper base URL (no trailing slash)."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        key_expected: bool = False,
        timeout: float = 60.0,
        waking: Waking = Waking(),
        hints: Hints = Hints(),
        poll_interval: float = 2.0,
        progress: Progress | None = None,
        on_check: Callable[[Check], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._key = api_key
        self.key_expected = key_expected or api_key is not None
        self.timeout = timeout
        self.waking = waking
        self.hints = hints
        self.poll_interval = poll_interval
        self.progress = progress or (lambda message: None)
        self.on_check = on_check or (lambda check: None)
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        self.checks: list[Check] = []
        self.wake_seconds: float | None = None
        self.vllm_ready = False
        self.wrapper_lost = False

    # helpers

    def _headers(self, key: str | None = "configured") -> dict[str, str]:
        key = self._key if key == "configured" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _record(self, name: str, started: float, status: str, detail: str, hint: list[str] | None = None) -> Check:
        check = Check(name, status, time.monotonic() - started, detail, list(hint or []) if status == "fail" else [])
        self.checks.append(check)
        self.on_check(check)  # the one line a step prints: the caller decides where
        return check

    def _run(self, name: str, body: Callable[[], tuple[str, str]]) -> Check:
        started = time.monotonic()
        hint: list[str] = []
        try:
            status, detail = body()
        except httpx.TimeoutException as error:
            status, detail = "fail", f"timed out after {self.timeout:g} s ({type(error).__name__})"
            hint = [
                f"a slow answer? raise the per-request limit with --timeout (now {self.timeout:g} s)",
                *self.hints.reach(),
            ]
        except httpx.TransportError as error:
            # Refused, reset or closed: nothing answered at the other end of the URL.
            status, detail = "fail", f"cannot reach the wrapper at {self.url} ({type(error).__name__}: {error})"
            hint = self.hints.reach()
        except httpx.HTTPError as error:
            status, detail = "fail", f"{type(error).__name__}: {error}"
        except (ValueError, KeyError, TypeError, IndexError) as error:
            status, detail = "fail", f"unexpected answer: {type(error).__name__}: {error}"
        return self._record(name, started, status, detail, hint)

    def _unauthorized(self, response: httpx.Response) -> str:
        if response.status_code == 401:
            if self._key is None:
                return f"HTTP 401: the wrapper wants a key; set {KEY_ENV} (or the stack's wrapperApiKey secret)"
            return "HTTP 401: the wrapper refused the key (is it the stack's wrapperApiKey?)"
        return _describe(response)

    # checks

    def health(self) -> dict[str, Any] | None:
        state: dict[str, Any] = {}

        def body() -> tuple[str, str]:
            response = self.client.get("/health")
            if response.status_code != 200:
                return "fail", _describe(response) + " (is this the wrapper?)"
            state.update(response.json())
            if state.get("vllm_available") is True:
                self.vllm_ready = True
                self.model = self.model or state.get("model")
                return "pass", f"{state.get('status')}: vLLM available, model {state.get('model')}"
            return "pass", f"wrapper up; vLLM not available ({_vllm_state(state)})"

        check = self._run("health", body)
        if check.status == "fail" and not check.hint:
            check.hint.extend(self.hints.reach())  # an answer, but not the wrapper's
        return state if check.status == "pass" else None

    def await_vllm(self, state: dict[str, Any]) -> None:
        """vLLM is not available: wake it and wait where it can wake, else say at once what to look at."""
        started = time.monotonic()
        w = self.waking
        # The wrapper reports `scale_state` only when it scales vLLM to zero itself (Kubernetes
        # scaler, Modal autoscale): then a request wakes it even if the stack file says otherwise.
        wakes = w.scales_to_zero or bool(state.get("scale_state"))
        why = w.why if w.scales_to_zero or not wakes else f"the wrapper reports scale_state {state['scale_state']}"
        budget = w.wait if w.wait is not None else (w.wake_timeout if wakes else 0.0)
        if budget <= 0:
            if wakes:
                detail = f"vLLM {_vllm_state(state)}; not waking it (--wait 0)"
            else:
                detail = f"vLLM {_vllm_state(state)} and the stack is {why}: nothing will wake it"
            hint = [
                *self.hints.vllm(),
                f"just deployed? the model may still be loading: rerun with --wait {w.suggest_wait}",
            ]
            self._record("vllm", started, "fail", detail, hint)
            return
        name = "wake" if wakes else "wait"
        if wakes:
            self.progress(f"vLLM is {_vllm_state(state)} ({why}): waking it, waiting up to {budget:g} s")
            self._nudge(budget)
        else:
            self.progress(f"vLLM is {_vllm_state(state)}: waiting up to {budget:g} s for it (--wait)")
        seen, next_note = _vllm_state(state), started + HEARTBEAT_SECONDS
        while True:
            elapsed = time.monotonic() - started
            try:
                response = self.client.get("/health", timeout=min(self.timeout, 10))
                last = response.json() if response.status_code == 200 else {"status": _describe(response)}
            except httpx.TransportError as error:
                if self.hints.gone():  # no wrapper to wait through any more: waiting is pointless
                    self.wrapper_lost = True
                    detail = f"lost the wrapper after {elapsed:.0f} s ({type(error).__name__}: {error})"
                    self._record(name, started, "fail", detail, self.hints.reach())
                    return
                last = {"status": f"health unreachable ({type(error).__name__})"}
            except (httpx.HTTPError, ValueError) as error:
                last = {"status": f"health unreachable ({type(error).__name__})"}
            if last.get("vllm_available") is True:
                self.vllm_ready = True
                seconds = time.monotonic() - started
                self.wake_seconds = seconds if wakes else None
                self.model = self.model or last.get("model")
                self._record(name, started, "pass", f"vLLM available after {seconds:.1f} s")
                return
            now_state = _vllm_state(last)
            if elapsed >= budget:
                detail = f"vLLM not available after {budget:g} s (last health: {now_state})"
                self._record(name, started, "fail", detail, self.hints.vllm())
                return
            # One line when what /health says changes (scaled_to_zero → waking), and a sparse
            # reminder while it does not: never the same line every poll.
            if now_state != seen or time.monotonic() >= next_note:
                self.progress(f"vLLM {now_state} after {elapsed:.0f} s (waiting up to {budget:g} s)")
                seen, next_note = now_state, time.monotonic() + HEARTBEAT_SECONDS
            time.sleep(min(self.poll_interval, max(0.0, budget - elapsed)))

    def _nudge(self, budget: float) -> None:
        """Send the request that wakes a scaled-to-zero vLLM, in the background."""

        def nudge() -> None:
            # The wrapper wakes vLLM on the first request that needs it (a one-token chat, as a
            # client would send); it may hold that request until vLLM is ready or answer 503.
            # Its answer does not matter: /health says when vLLM is available.
            try:
                httpx.post(
                    f"{self.url}/v1/chat/completions",
                    headers=self._headers(),
                    json=self._chat_body(max_tokens=1),
                    timeout=budget,
                )
            except httpx.HTTPError:
                pass

        threading.Thread(target=nudge, name="smoke-wake", daemon=True).start()

    def models(self) -> None:
        def body() -> tuple[str, str]:
            response = self.client.get("/v1/models", headers=self._headers())
            if response.status_code != 200:
                return "fail", self._unauthorized(response)
            ids = [item["id"] for item in response.json()["data"]]
            if not ids:
                return "fail", "no models listed"
            if self.model and self.model not in ids:
                return "fail", f"{self.model!r} is not served (served: {', '.join(ids)})"
            self.model = self.model or ids[0]
            return "pass", f"serves {', '.join(ids)}"

        self._run("models", body)

    def _chat_body(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 16,
            "temperature": 0,
            **extra,
        }

    def chat(self) -> None:
        def body() -> tuple[str, str]:
            response = self.client.post("/v1/chat/completions", headers=self._headers(), json=self._chat_body())
            if response.status_code != 200:
                return "fail", self._unauthorized(response)
            data = response.json()
            message = data["choices"][0]["message"]
            usage = data.get("usage") or {}
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if not isinstance(prompt, int) or not isinstance(completion, int) or prompt <= 0:
                return "fail", f"no usage in the answer ({usage or 'missing'})"
            if usage.get("total_tokens") != prompt + completion:
                return "fail", f"usage does not add up: {usage}"
            if message.get("content") is None:
                return "fail", "the answer has no message content"
            return (
                "pass",
                f"usage {prompt} prompt + {completion} completion tokens, finish {data['choices'][0].get('finish_reason')}",
            )

        self._run("chat", body)

    def stream(self) -> None:
        def body() -> tuple[str, str]:
            started = time.monotonic()
            first: float | None = None
            pieces, done, after_done = 0, False, 0
            payload = self._chat_body(stream=True)
            with self.client.stream("POST", "/v1/chat/completions", headers=self._headers(), json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    return "fail", self._unauthorized(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if done:
                        after_done += 1
                        continue
                    if data == "[DONE]":
                        done = True
                        continue
                    event = json.loads(data)
                    for choice in event.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            pieces += 1
                            first = first if first is not None else time.monotonic() - started
            if pieces == 0:
                return "fail", "the stream delivered no content tokens" + ("" if done else " and no [DONE]")
            if not done:
                return "fail", f"{pieces} content chunks but the stream ended without data: [DONE]"
            if after_done:
                return "fail", f"{after_done} events after data: [DONE]"
            return "pass", f"{pieces} content chunks, first after {(first or 0.0) * 1000:.0f} ms, ended with [DONE]"

        self._run("stream", body)

    def auth(self) -> None:
        def body() -> tuple[str, str]:
            if not self.key_expected:
                if not self.vllm_ready:
                    # An open wrapper passes this request to vLLM, and one that wakes vLLM holds
                    # it for up to its wakeTimeout (/v1/models counts as activity): do not probe.
                    return (
                        "skip",
                        "no wrapper key configured: the wrapper is open (not probed while vLLM is unavailable)",
                    )
                response = self.client.get("/v1/models")
                if response.status_code == 401:
                    return "fail", f"the wrapper wants a key none was given for; set {KEY_ENV}"
                return "skip", "no wrapper key configured: the wrapper is open to anyone who reaches it"
            without = self.client.get("/v1/models")
            wrong = self.client.get("/v1/models", headers=self._headers(f"wrong-{secrets.token_hex(8)}"))
            bad = [
                f"{label} → HTTP {r.status_code}"
                for label, r in (("no key", without), ("wrong key", wrong))
                if r.status_code != 401
            ]
            if bad:
                return "fail", "key not enforced: " + ", ".join(bad) + " (expected 401)"
            return "pass", "no key → 401, wrong key → 401"

        self._run("auth", body)

    def metrics(self) -> None:
        def body() -> tuple[str, str]:
            response = self.client.get("/metrics")
            if response.status_code != 200:
                return "fail", _describe(response)
            text = response.text
            samples = [line for line in text.splitlines() if line and not line.startswith("#")]
            if "# TYPE" not in text or not samples:
                return "fail", "not Prometheus text (no # TYPE lines or no samples)"
            return "pass", f"{len(samples)} samples"

        self._run("metrics", body)

    def run(self) -> list[Check]:
        try:
            state = self.health()
            if state is None:
                return self.checks  # the wrapper itself does not answer: nothing else can pass
            if not self.vllm_ready:
                self.await_vllm(state)
                if self.wrapper_lost:
                    return self.checks  # as when health finds no wrapper
            if self.vllm_ready:
                self.models()
                self.chat()
                self.stream()
            self.auth()
            self.metrics()
            return self.checks
        finally:
            self.client.close()


def _vllm_state(health: dict[str, Any]) -> str:
    parts = [str(health[key]) for key in ("scale_state", "vllm_status", "status") if health.get(key)]
    return " / ".join(dict.fromkeys(parts)) or "unknown"


# ------------------------------------------------------------------- the key


def wrapper_key(
    stack: str | None, *, stack_declares_key: bool, cwd: Path | None = None, progress: Progress | None = None
) -> tuple[str | None, str]:
    """The wrapper key and where it came from ("env", "pulumi", "none"); the key is never logged."""
    value = os.environ.get(KEY_ENV, "").strip()
    if value:
        return value, "env"
    if stack_declares_key and stack and shutil.which("pulumi"):
        (progress or (lambda message: None))(f"reading the stack's wrapperApiKey with `pulumi config get` ({stack})")
        try:
            result = subprocess.run(
                ["pulumi", "config", "get", "wrapperApiKey", "--stack", stack],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SmokeError(
                f"`pulumi config get wrapperApiKey` failed ({type(error).__name__}); set {KEY_ENV}"
            ) from None
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip(), "pulumi"
        # pulumi's stderr names the key, never its value.
        raise SmokeError(
            f"the stack sets wrapperApiKey but `pulumi config get wrapperApiKey --stack {stack}` failed: "
            f"{result.stderr.strip()[:300] or f'exit {result.returncode}'}; set {KEY_ENV} instead"
        )
    elif stack_declares_key:
        raise SmokeError(
            f"the stack sets wrapperApiKey but {KEY_ENV} is not set and the pulumi CLI is not installed to read it"
        )
    return None, "none"


# ----------------------------------------------------------------- the stack


def waking_for(config: Any, *, wait: float | None) -> Waking:
    """Whether the stack's vLLM can wake on a request, from its typed config."""
    from components.plan import startup_budget_seconds
    from components.targets import target_of

    # A setting that keeps GPU replicas up whatever the idle timeout (Modal's minContainers).
    kept = target_of(config).kept_warm(config)
    scales = config.scales_to_zero and kept is None
    if scales:
        why = f"scales to zero after {config.idle_timeout} s idle"
    elif config.scales_to_zero and kept is not None:
        why = f"always on ({kept.setting})"
    else:
        why = "always on (no idleTimeout)"
    return Waking(
        scales_to_zero=scales,
        why=why,
        wake_timeout=config.wrapper.wake_timeout,
        wait=wait,
        suggest_wait=startup_budget_seconds(config),
    )


@dataclass(frozen=True)
class KubeNames:
    """The objects a user looks at, as the stack's manifests name them."""

    namespace: str
    statefulset: str  # vLLM
    container: str  # vLLM's container in it
    deployment: str  # the wrapper
    service: str  # the wrapper's Service

    @classmethod
    def of(cls, config: Any) -> KubeNames:
        from components import manifests

        built = manifests.build(config)
        (sts,) = [m for m in built.vllm if m["kind"] == "StatefulSet"]
        (deploy,) = [m for m in built.wrapper if m["kind"] == "Deployment"]
        (svc,) = [m for m in built.wrapper if m["kind"] == "Service"]
        return cls(
            namespace=sts["metadata"]["namespace"],
            statefulset=sts["metadata"]["name"],
            container=sts["spec"]["template"]["spec"]["containers"][0]["name"],
            deployment=deploy["metadata"]["name"],
            service=svc["metadata"]["name"],
        )


def _kubectl(context: str | None) -> str:
    return f"kubectl --context {context}" if context else "kubectl"


def _context_hint(context: str | None) -> str:
    if context:
        return f"the kube context: {context} (kubernetes.context or --context) must be the cluster the stack is deployed to"
    return (
        "the kube context: the current one (`kubectl config current-context`); "
        "set kubernetes.context or pass --context if the stack is deployed elsewhere"
    )


def vllm_hints(config: Any, stack: str, context: str | None) -> list[str]:
    """Where to see why vLLM is not serving."""
    from components.targets import target_of

    if target_of(config).wrapper_service(config) is None:  # Modal: no Service, an app
        from components.modal_target import app_name_for

        return [f"modal app logs {app_name_for(config, stack)}"]
    n, k = KubeNames.of(config), _kubectl(context)
    hints = [
        f"{k} get pods -n {n.namespace}",
        f"{k} logs -n {n.namespace} statefulset/{n.statefulset} -c {n.container}",
    ]
    if config.scales_to_zero:  # the wrapper's scaler wakes vLLM: its API errors are in the wrapper's log
        hints.append(f"{k} logs -n {n.namespace} deployment/{n.deployment}")
    return hints


def url_hints(config: Any, stack: str, url: str, context: str | None) -> list[str]:
    """What to check when a wrapper given with --url does not answer."""
    from components.targets import target_of

    hints = [f"--url {url}: the wrapper's base URL (without /v1), reachable from here: curl {url}/health"]
    if target_of(config).wrapper_service(config) is None:
        hints.append(f"the app's URL: pulumi stack output app_url --stack {stack}")
    else:
        n = KubeNames.of(config)
        where = f" in context {context}" if context else ""
        hints.append(f"or leave --url out: smoke port-forwards to svc/{n.service} -n {n.namespace}{where}")
    return hints


def forward_hints(forward: Any, config: Any, context: str | None) -> list[str]:
    """What to check when the wrapper does not answer through the port-forward."""
    n = KubeNames.of(config)
    return [
        f"the port-forward `{' '.join(forward.command())}`: {forward.state()}",
        f"the wrapper's pods: {_kubectl(context)} get pods -n {n.namespace}",
        _context_hint(context),
        "or pass --url with the URL of a wrapper you can reach directly",
    ]


# ------------------------------------------------------------------- output


def format_check(check: Check) -> list[str]:
    lines = [f"  {check.status.upper():<4}  {check.name:<8} {check.seconds:>7.2f} s  {check.detail}"]
    lines += [f"        check: {hint}" for hint in check.hint]
    return lines


def format_verdict(report: Report) -> str:
    passed = sum(c.status == "pass" for c in report.checks)
    failed = sum(c.status == "fail" for c in report.checks)
    verdict = "ok" if report.ok else "FAILED"
    wake = f"; woke in {report.wake_seconds:.1f} s" if report.wake_seconds is not None else ""
    return f"{verdict}: {passed} passed, {failed} failed{wake}"


def format_report(report: Report) -> str:
    lines = [f"smoke {report.url} ({report.via})"]
    for check in report.checks:
        lines += format_check(check)
    lines.append(format_verdict(report))
    return "\n".join(lines)


def _say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


@contextmanager
def _target(
    config: Any, stack: str, url: str | None, context: str | None, progress: Progress
) -> Iterator[tuple[str, str, Hints]]:
    """The wrapper's base URL, how it is reached, and what to check when it does not answer."""

    def vllm() -> list[str]:
        return vllm_hints(config, stack, context)

    if url:
        yield url, "url", Hints(vllm=vllm, reach=lambda: url_hints(config, stack, url, context))
        return
    from components.portforward import PortForward, PortForwardError
    from components.targets import target_of

    service = target_of(config).wrapper_service(config)
    if service is None:
        raise SmokeError(
            f"the stack targets {config.target}: pass the wrapper's URL with --url",
            [f"the app's URL: pulumi stack output app_url --stack {stack}"],
        )
    context = context or service.context
    n = KubeNames.of(config)
    forward = PortForward(
        namespace=service.namespace,
        service=service.name,
        port=service.port,
        context=context,
        progress=progress,
    )
    try:
        forward.start()
    except PortForwardError as error:
        raise SmokeError(
            str(error),
            [
                f"the stack's wrapper Service: {_kubectl(context)} get svc -n {n.namespace} {n.service}",
                _context_hint(context),
                "or pass --url with the URL of a wrapper you can reach directly",
            ],
        ) from None
    try:
        hints = Hints(
            vllm=vllm, reach=lambda: forward_hints(forward, config, context), gone=lambda: forward.exit_code is not None
        )
        yield forward.url, "port-forward", hints
    finally:
        forward.stop()
        progress("port-forward closed")


WAIT_HELP = (
    "Wait up to SECONDS for vLLM to become available, on any stack: e.g. right after `pulumi up`, "
    "while the model downloads and loads. Default: wrapper.wakeTimeout where the stack scales to zero "
    "(idleTimeout; on Modal with minContainers 0), else 0: an always-on stack with vLLM down fails at once"
)


def smoke_command(
    stack: Annotated[str, typer.Argument(help="Stack name: stacks/Pulumi.<STACK>.yaml")],
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir", help="Where the stack files live")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Check this wrapper URL instead of port-forwarding (Modal, an ingress)")
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="kube context (default: kubernetes.context, else the current one)")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Served model to expect (default: the stack's model name)")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds per request")] = 60,
    wait: Annotated[float | None, typer.Option("--wait", min=0, metavar="SECONDS", help=WAIT_HELP)] = None,
    # The earlier name of --wait, kept for scripts that pass it.
    wake_timeout: Annotated[float | None, typer.Option("--wake-timeout", min=0, hidden=True)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (progress goes to stderr)")] = False,
) -> None:
    """Check that a deployed stack serves: health, wake-up, models, chat, streaming, auth, metrics.

    Waits for vLLM only where it can wake (the stack scales to zero) or with --wait; a failed check says what to look at (the port-forward, --url, the kube context, the stack's pods and logs).
    """
    from components.config import ConfigError
    from components.stackfile import STACKS_DIR, load_stack

    stacks_dir = stacks_dir or STACKS_DIR

    def row(check: Check) -> None:
        # Each step is printed once, when it finishes: as its table row, or (with --json, whose
        # answer is the JSON document) as a progress line on stderr.
        if as_json:
            _say(f"{check.name}: {check.status} ({check.seconds:.2f} s)")
        else:
            typer.echo("\n".join(format_check(check)))

    try:
        config = load_stack(stack, stacks_dir)
        from components.targets import target_of

        service = target_of(config).wrapper_service(config)
        context = context or (service.context if service is not None else None)
        key, source = wrapper_key(
            stack, stack_declares_key="wrapperApiKey" in config.secrets_present, cwd=stacks_dir.parent, progress=_say
        )
        if source != "none":
            _say(f"wrapper key from {'$' + KEY_ENV if source == 'env' else 'the stack secret config'}")
        with _target(config, stack, url, context, _say) as (base, via, hints):
            if not as_json:
                typer.echo(f"smoke {base} ({via})")
            smoke = Smoke(
                base,
                model=model or config.model.name,
                api_key=key,
                key_expected="wrapperApiKey" in config.secrets_present,
                timeout=timeout,
                waking=waking_for(config, wait=wait if wait is not None else wake_timeout),
                hints=hints,
                progress=_say,
                on_check=row,
            )
            checks = smoke.run()
            report = Report(base, via, smoke.model, smoke.key_expected, smoke.wake_seconds, checks)
    except (ConfigError, SmokeError) as error:
        hint = error.hint if isinstance(error, SmokeError) else []
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(error), "hint": hint, "checks": []}, indent=2))
        typer.echo("\n".join([f"error: {error}", *(f"  check: {line}" for line in hint)]), err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else format_verdict(report))
    if not report.ok:
        raise typer.Exit(1)

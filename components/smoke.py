"""`vllm-deploy smoke STACK`: does the deployed wrapper really serve?

Reaches the stack's wrapper Service over `kubectl port-forward` (or any wrapper with
`--url`) and runs, each timed, with a PASS/FAIL line:

    health    GET /health answers (the wrapper is up); vLLM available
    wake      only when vLLM was not available (scaled to zero, waking, loading): a request
              wakes it, /health is polled until `vllm_available`, the wake time is reported
    models    GET /v1/models lists the stack's served model
    chat      POST /v1/chat/completions answers with a message and usage
    stream    the same streamed: content tokens arrive, the stream ends with `data: [DONE]`
    auth      with a wrapper key configured, a request without it (and one with a wrong key)
              gets 401; without one the wrapper is open and the line says so
    metrics   GET /metrics answers in Prometheus text format

The wrapper key comes from `VLLM_WRAPPER_API_KEY`, else from the stack's secret config
(`pulumi config get wrapperApiKey`) when the pulumi CLI is installed. It is sent in a
header only, never printed, never in --json. Exit status: 0 all passed, 1 a check failed,
2 the smoke could not start (stack file, kubectl, port-forward).
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


class SmokeError(RuntimeError):
    """The smoke could not run at all (exit 2)."""


@dataclass
class Check:
    name: str
    status: str  # "pass", "fail" or "skip" (skip = not applicable, never a failure)
    seconds: float
    detail: str

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
        wake_timeout: float = 600.0,
        poll_interval: float = 2.0,
        progress: Progress | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._key = api_key
        self.key_expected = key_expected or api_key is not None
        self.timeout = timeout
        self.wake_timeout = wake_timeout
        self.poll_interval = poll_interval
        self.progress = progress or (lambda message: None)
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        self.checks: list[Check] = []
        self.wake_seconds: float | None = None
        self.vllm_ready = False

    # helpers

    def _headers(self, key: str | None = "configured") -> dict[str, str]:
        key = self._key if key == "configured" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _record(self, name: str, started: float, status: str, detail: str) -> Check:
        check = Check(name, status, time.monotonic() - started, detail)
        self.checks.append(check)
        self.progress(f"{name}: {check.status} ({check.seconds:.2f} s)")
        return check

    def _run(self, name: str, body: Callable[[], tuple[str, str]]) -> Check:
        started = time.monotonic()
        try:
            status, detail = body()
        except httpx.TimeoutException as error:
            status, detail = "fail", f"timed out after {self.timeout:g} s ({type(error).__name__})"
        except httpx.HTTPError as error:
            status, detail = "fail", f"{type(error).__name__}: {error}"
        except (ValueError, KeyError, TypeError, IndexError) as error:
            status, detail = "fail", f"unexpected answer: {type(error).__name__}: {error}"
        return self._record(name, started, status, detail)

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
                return "fail", _describe(response)
            state.update(response.json())
            if state.get("vllm_available") is True:
                self.vllm_ready = True
                self.model = self.model or state.get("model")
                return "pass", f"{state.get('status')}: vLLM available, model {state.get('model')}"
            return "pass", f"wrapper up; vLLM not available yet ({_vllm_state(state)})"

        check = self._run("health", body)
        return state if check.status == "pass" else None

    def wake(self, state: dict[str, Any]) -> None:
        """Send one request that wakes a scaled-to-zero vLLM, poll /health until it is available."""
        started = time.monotonic()
        self.progress(f"vLLM is {_vllm_state(state)}: waking it (up to {self.wake_timeout:g} s)")

        def nudge() -> None:
            # The wrapper wakes vLLM on the first request that needs it (a one-token chat, as a
            # client would send); it may hold that request until vLLM is ready or answer 503.
            # Its answer does not matter: /health says when vLLM is available.
            try:
                httpx.post(
                    f"{self.url}/v1/chat/completions",
                    headers=self._headers(),
                    json=self._chat_body(max_tokens=1),
                    timeout=self.wake_timeout,
                )
            except httpx.HTTPError:
                pass

        threading.Thread(target=nudge, name="smoke-wake", daemon=True).start()
        next_note = started + 10
        last = state
        while True:
            elapsed = time.monotonic() - started
            try:
                response = self.client.get("/health", timeout=min(self.timeout, 10))
                if response.status_code == 200:
                    last = response.json()
                    if last.get("vllm_available") is True:
                        self.vllm_ready = True
                        self.wake_seconds = time.monotonic() - started
                        self.model = self.model or last.get("model")
                        self._record("wake", started, "pass", f"vLLM available after {self.wake_seconds:.1f} s")
                        return
            except httpx.HTTPError as error:
                last = {"status": f"health unreachable ({type(error).__name__})"}
            if elapsed >= self.wake_timeout:
                self._record(
                    "wake", started, "fail",
                    f"vLLM not available after {self.wake_timeout:g} s (last health: {_vllm_state(last)})",
                )
                return
            if time.monotonic() >= next_note:
                self.progress(f"waiting for vLLM: {_vllm_state(last)}, {elapsed:.0f} s")
                next_note = time.monotonic() + 10
            time.sleep(min(self.poll_interval, max(0.0, self.wake_timeout - elapsed)))

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
            return "pass", f"usage {prompt} prompt + {completion} completion tokens, finish {data['choices'][0].get('finish_reason')}"

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
            return "pass", f"{pieces} content chunks, first after {first * 1000:.0f} ms, ended with [DONE]"

        self._run("stream", body)

    def auth(self) -> None:
        def body() -> tuple[str, str]:
            if not self.key_expected:
                response = self.client.get("/v1/models")
                if response.status_code == 401:
                    return "fail", f"the wrapper wants a key none was given for; set {KEY_ENV}"
                return "skip", "no wrapper key configured: the wrapper is open to anyone who reaches it"
            without = self.client.get("/v1/models")
            wrong = self.client.get("/v1/models", headers=self._headers(f"wrong-{secrets.token_hex(8)}"))
            bad = [f"{label} → HTTP {r.status_code}" for label, r in (("no key", without), ("wrong key", wrong)) if r.status_code != 401]
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
                self.wake(state)
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
    parts = [str(health[key]) for key in ("vllm_status", "status") if health.get(key)]
    return " / ".join(dict.fromkeys(parts)) or "unknown"


# ------------------------------------------------------------------- the key


def wrapper_key(stack: str | None, *, stack_declares_key: bool, cwd: Path | None = None, progress: Progress | None = None) -> tuple[str | None, str]:
    """The wrapper key and where it came from ("env", "pulumi", "none"); the key is never logged."""
    value = os.environ.get(KEY_ENV, "").strip()
    if value:
        return value, "env"
    if stack_declares_key and stack and shutil.which("pulumi"):
        (progress or (lambda message: None))(f"reading the stack's wrapperApiKey with `pulumi config get` ({stack})")
        try:
            result = subprocess.run(
                ["pulumi", "config", "get", "wrapperApiKey", "--stack", stack],
                capture_output=True, text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SmokeError(f"`pulumi config get wrapperApiKey` failed ({type(error).__name__}); set {KEY_ENV}") from None
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


# ------------------------------------------------------------------- output


def format_report(report: Report) -> str:
    lines = [f"smoke {report.url} ({report.via})"]
    for check in report.checks:
        lines.append(f"  {check.status.upper():<4}  {check.name:<8} {check.seconds:>7.2f} s  {check.detail}")
    passed = sum(c.status == "pass" for c in report.checks)
    failed = sum(c.status == "fail" for c in report.checks)
    verdict = "ok" if report.ok else "FAILED"
    wake = f"; woke in {report.wake_seconds:.1f} s" if report.wake_seconds is not None else ""
    lines.append(f"{verdict}: {passed} passed, {failed} failed{wake}")
    return "\n".join(lines)


def _progress(to_stderr: bool) -> Progress:
    def say(message: str) -> None:
        print(f"… {message}", file=sys.stderr if to_stderr else sys.stdout, flush=True)

    return say


@contextmanager
def _target(config: Any, url: str | None, context: str | None, progress: Progress) -> Iterator[tuple[str, str]]:
    if url:
        yield url, "url"
        return
    from components.portforward import PortForward, PortForwardError
    from components.targets import target_of

    service = target_of(config).wrapper_service(config)
    if service is None:
        raise SmokeError(f"the stack targets {config.target}: pass the wrapper's URL with --url")
    forward = PortForward(
        namespace=service.namespace,
        service=service.name,
        port=service.port,
        context=context or service.context,
        progress=progress,
    )
    try:
        forward.start()
    except PortForwardError as error:
        raise SmokeError(str(error)) from None
    try:
        yield forward.url, "port-forward"
    finally:
        forward.stop()
        progress("port-forward closed")


def smoke_command(
    stack: Annotated[str, typer.Argument(help="Stack name: stacks/Pulumi.<STACK>.yaml")],
    stacks_dir: Annotated[Path, typer.Option("--stacks-dir", help="Where the stack files live")] = None,  # type: ignore[assignment]
    url: Annotated[str | None, typer.Option("--url", help="Check this wrapper URL instead of port-forwarding (Modal, an ingress)")] = None,
    context: Annotated[str | None, typer.Option("--context", help="kube context (default: kubernetes.context, else the current one)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Served model to expect (default: the stack's model name)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds per request")] = 60,
    wake_timeout: Annotated[float | None, typer.Option("--wake-timeout", min=0, help="Seconds to wait for a scaled-to-zero vLLM (default: wrapper.wakeTimeout)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (progress goes to stderr)")] = False,
) -> None:
    """Check that a deployed stack serves: health, wake-up, models, chat, streaming, auth, metrics."""
    from components.config import ConfigError
    from components.stackfile import STACKS_DIR, load_stack

    progress = _progress(to_stderr=True)
    stacks_dir = stacks_dir or STACKS_DIR
    try:
        config = load_stack(stack, stacks_dir)
        key, source = wrapper_key(
            stack, stack_declares_key="wrapperApiKey" in config.secrets_present, cwd=stacks_dir.parent, progress=progress
        )
        if source != "none":
            progress(f"wrapper key from {'$' + KEY_ENV if source == 'env' else 'the stack secret config'}")
        with _target(config, url, context, progress) as (base, via):
            smoke = Smoke(
                base,
                model=model or config.model.name,
                api_key=key,
                key_expected="wrapperApiKey" in config.secrets_present,
                timeout=timeout,
                wake_timeout=config.wrapper.wake_timeout if wake_timeout is None else wake_timeout,
                progress=progress,
            )
            checks = smoke.run()
            report = Report(base, via, smoke.model, smoke.key_expected, smoke.wake_seconds, checks)
    except (ConfigError, SmokeError) as error:
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(error), "checks": []}, indent=2))
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else format_report(report))
    if not report.ok:
        raise typer.Exit(1)

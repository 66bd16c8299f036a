"""Start a real vLLM OpenAI-compatible server (CPU build) on a tiny local model.

Runs in the project venv and never imports vllm: the server is a separate
process started from the vLLM venv that ``bash .ci/install-vllm`` creates, as in
production where vLLM is its own server.

    from tests.support.real_vllm import VllmServer

    with VllmServer("fast") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key)
        client.chat.completions.create(model=server.model, messages=[...])

Readiness means /health returned 200 *and* one completion succeeded (a
mis-configured model passes /health and then dies on the first request).

Note: the readiness probe itself generates one token, so tests reading vLLM's
counters (``vllm:generation_tokens_total``...) should compare deltas.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port

__all__ = [
    "REPO_ROOT",
    "VllmNotInstalled",
    "VllmServer",
    "VllmStartError",
    "ensure_tiny_model",
    "parse_metrics",
    "replica_cpus",
    "vllm_python",
    "vllm_venv",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run `bash .ci/install-vllm` first"
MODEL_SCRIPT = Path(__file__).resolve().with_name("make_tiny_model.py")
SERVED_MODEL_NAME = "tiny"
_STAMP = ".vllm-install-ok"
DEFAULT_STARTUP_TIMEOUT = 420.0  # override: $VLLM_TEST_STARTUP_TIMEOUT
# Called before every start; tests/conftest.py adds one that refuses a start from a test without
# the ``vllm`` marker, so ``make test-fast`` cannot start a vLLM by accident.
START_CHECKS: list[Callable[[], None]] = []


class VllmNotInstalled(RuntimeError):
    """The vLLM venv is missing or incomplete."""


class VllmStartError(RuntimeError):
    """The server did not become ready (the message holds the log tail)."""


def replica_cpus(i: int) -> list[int]:
    """The core replica ``i`` of several on this machine runs on, as a pod has cores of its own.

    vLLM's CPU backend binds its worker's OpenMP threads with ``VLLM_CPU_OMP_THREADS_BIND=auto``:
    on a 2-core box every server picks core 0 and reserves core 1 for the frontend. Several
    replicas then share one core, and a busy replica's spinning OpenMP threads starve one that is
    loading its model (a second replica took over 15 min to start under load). Replica ``i`` gets
    core ``i`` modulo the cores we may use, for its worker and for all its processes."""
    cores = sorted(os.sched_getaffinity(0))
    return [cores[i % len(cores)]]


def vllm_venv() -> Path:
    """The vLLM venv: $VLLM_VENV (relative to the repo root) or <repo>/.venv-vllm."""
    p = Path(os.environ.get("VLLM_VENV", ".venv-vllm"))
    return p if p.is_absolute() else REPO_ROOT / p


def vllm_python() -> Path:
    """The vLLM venv's interpreter; raises VllmNotInstalled if the install is incomplete."""
    venv = vllm_venv()
    py = venv / "bin" / "python"
    if not py.exists() or not (venv / _STAMP).exists():
        raise VllmNotInstalled(f"no working vLLM venv at {venv}: {INSTALL_HINT}")
    return py


def ensure_tiny_model(variant: str = "fast", *, timeout: float = 600.0) -> Path:
    """Generate (or reuse) <repo>/.tiny-models/<variant> with the vLLM venv's python."""
    out = REPO_ROOT / ".tiny-models" / variant
    cmd = [str(vllm_python()), str(MODEL_SCRIPT), variant, "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise VllmStartError(f"make_tiny_model.py {variant} failed (rc {proc.returncode}):\n{tail}")
    return Path(proc.stdout.strip().splitlines()[-1])


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Parse Prometheus text format into {name: value}.

    Samples of one name with several label sets are summed under the bare name
    (right for counters and gauges such as ``vllm:num_requests_running``);
    histogram buckets (``le``) and quantiles get no bare entry. Each labelled
    sample is also kept under ``name{labels}`` exactly as exposed, e.g.
    ``vllm:num_requests_running{engine="0",model_name="tiny"}``.
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        name, labels, raw = m.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        if labels:
            out[name + labels] = value
            if 'le="' in labels or 'quantile="' in labels:
                continue  # summing histogram buckets/quantiles means nothing
        out[name] = out.get(name, 0.0) + value
    return out


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the test runner
    except OSError:
        pass


def _session_members(sid: int) -> list[int]:
    """PIDs whose session id is ``sid`` (the server and its EngineCore/Worker children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the ")" closing comm: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


class VllmServer:
    """A real vLLM OpenAI-compatible server on a tiny local model.

    Attributes once started: ``base_url`` (``http://127.0.0.1:<port>/v1``),
    ``root_url`` (``http://127.0.0.1:<port>``), ``api_key`` (random per
    instance; never printed), ``model`` (``"tiny"``), ``pid``, ``port``,
    ``model_dir``, ``log_path``, ``workdir``.
    """

    def __init__(
        self,
        variant: str = "fast",
        *,
        model_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float | None = None,
        max_model_len: int = 2048,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        cpus: Sequence[int] | None = None,
        host: str = "127.0.0.1",
        keep_workdir: bool | None = None,
    ) -> None:
        self.variant = variant
        self.model = SERVED_MODEL_NAME
        self.host = host
        # Measured 75 s to ready on 2 idle cores (three processes each import
        # vLLM: api_server, EngineCore, Worker) and 165-175 s on the same box
        # with other suites running: 180 s is not enough headroom.
        self.startup_timeout = (
            startup_timeout
            if startup_timeout is not None
            else float(os.environ.get("VLLM_TEST_STARTUP_TIMEOUT", DEFAULT_STARTUP_TIMEOUT))
        )
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.cpus = list(cpus) if cpus else None  # pin every process of the server to these cores
        if self.cpus:
            self.extra_env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, self.cpus)))
        self._model_dir = Path(model_dir) if model_dir else None
        self.keep_workdir = (
            keep_workdir if keep_workdir is not None else os.environ.get("VLLM_TEST_KEEP_TMP") == "1"
        )
        self.api_key = secrets.token_urlsafe(24)
        self.port: int | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------

    def __repr__(self) -> str:  # never includes the API key
        state = f"pid={self._proc.pid} port={self.port}" if self._proc else "not started"
        return f"<VllmServer {self.variant} {state}>"

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server not started")
        return self._proc.pid

    @property
    def model_dir(self) -> Path:
        if self._model_dir is None:
            raise RuntimeError("model not prepared yet")
        return self._model_dir

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, port: int | None = None) -> VllmServer:
        """Start the server (on ``port``, else a free one) and wait until it serves a completion."""
        for check in START_CHECKS:
            check()
        with self._lock:
            if self._proc is not None:
                raise RuntimeError("already started")
            py = vllm_python()
            if self._model_dir is None:
                self._model_dir = ensure_tiny_model(self.variant)
            t0 = time.monotonic()
            last_error: VllmStartError | None = None
            for attempt in range(3):  # a free port can be taken before vLLM binds it
                try:
                    self._launch(py, port if attempt == 0 else None)
                    self._wait_ready(t0 + self.startup_timeout)
                    self.startup_seconds = time.monotonic() - t0
                    atexit.register(self.stop)
                    return self
                except VllmStartError as exc:
                    last_error = exc
                    port_clash = "address already in use" in self.log_tail(80).lower()
                    self._terminate()
                    self._proc = None
                    if not port_clash or time.monotonic() > t0 + self.startup_timeout:
                        break
                    self._cleanup_workdir(force=True)
                except BaseException:
                    self._terminate()
                    self._proc = None
                    raise
            assert last_error is not None
            raise last_error

    def ensure_running(self) -> bool:
        """Restart the server if its process died (e.g. a test crashed the engine).

        Keeps the port when it is still free (so ``base_url`` stays valid) and
        the API key. Returns True when it restarted.
        """
        if self.is_running():
            return False
        old_port = self.port
        with self._lock:
            if self._proc is not None:
                self._terminate()
                self._proc = None
                self._cleanup_workdir(force=True)
        self.start(port=old_port)
        return True

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, wait, SIGKILL what is left. Idempotent."""
        with self._lock:
            if self._proc is None:
                return
            self._terminate(timeout)
            self._proc = None
            self._cleanup_workdir()
            atexit.unregister(self.stop)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def metrics(self) -> dict[str, float]:
        """GET /metrics parsed by :func:`parse_metrics` (bare names summed over labels)."""
        return parse_metrics(self._get("/metrics").decode())

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log, with the API key redacted."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-200_000:].decode(errors="replace")
        return "\n".join(data.splitlines()[-lines:]).replace(self.api_key, "***")

    # -- internals ----------------------------------------------------------

    def _get(self, path: str, timeout: float = 10.0) -> bytes:
        with urllib.request.urlopen(self.root_url + path, timeout=timeout) as resp:
            return bytes(resp.read())

    def _launch(self, py: Path, port: int | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"vllm-{self.variant}-"))
        tmp = self.workdir / "tmp"
        cache = self.workdir / "cache"
        tmp.mkdir()
        cache.mkdir()
        self.log_path = self.workdir / "server.log"
        self.port = port or free_port(self.host)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CACHE_ROOT": str(cache),
            "TMPDIR": str(tmp),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            # The key goes through the environment, not argv: vLLM logs its
            # non-default CLI args at start-up and argv is visible in `ps`.
            "VLLM_API_KEY": self.api_key,
            **self.extra_env,
        }
        env.pop("VIRTUAL_ENV", None)
        cmd = [
            str(py), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--host", self.host,
            "--port", str(self.port),
            "--served-model-name", self.model,
            "--max-model-len", str(self.max_model_len),
            "--enforce-eager",
            # float32, not the model's bfloat16: vLLM 0.32's CPU backend sends bfloat16 attention
            # to its AMX kernels whenever the CPU advertises AMX (vllm/v1/attention/backends/
            # cpu_attn.py, _get_attn_isa), and on a VM that advertises AMX without running it the
            # worker dies of SIGILL (exit code -4) at the first request. float32 takes the
            # AVX-512/AVX2 path on every x86 machine; the tiny models are as fast either way.
            "--dtype", "float32",
            *self.extra_args,
        ]
        in_main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
                # PDEATHSIG fires when the creating *thread* exits: only safe from the main thread.
                preexec_fn=_set_pdeathsig if in_main_thread else None,
            )
        if self.cpus:
            # Right after exec, long before the server starts a thread or its engine processes,
            # which inherit it (a preexec_fn cannot be used from the threads that start pods).
            os.sched_setaffinity(self._proc.pid, self.cpus)

    def _fail(self, why: str) -> VllmStartError:
        return VllmStartError(
            f"vLLM ({self.variant}) did not become ready: {why}\n"
            f"log: {self.log_path}\n--- last lines ---\n{self.log_tail()}"
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        healthy = False
        last = "no response yet"
        body = json.dumps(
            {"model": self.model, "prompt": "hello", "max_tokens": 1, "temperature": 0}
        ).encode()
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise self._fail(f"server exited with code {rc} ({last})")
            if time.monotonic() > deadline:
                raise self._fail(f"timed out after {self.startup_timeout:.0f} s ({last})")
            try:
                if not healthy:
                    self._get("/health", timeout=5)
                    healthy = True
                req = urllib.request.Request(
                    self.base_url + "/completions",
                    data=body,
                    headers={**self.headers, "Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=30) as resp:
                    data = json.loads(resp.read())
                if data.get("usage", {}).get("completion_tokens", 0) >= 1:
                    return
                last = f"probe completion without tokens: {str(data)[:200]}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} from {'completion' if healthy else '/health'}"
                if healthy and exc.code >= 500:
                    # vLLM exits after an engine crash; give it a moment to do so.
                    time.sleep(1.0)
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)

    def _terminate(self, timeout: float = 20.0) -> None:
        proc = self._proc
        if proc is None:
            return
        sid = proc.pid  # start_new_session: sid == pgid == pid of the api_server
        try:
            os.killpg(sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Give EngineCore/Worker a moment to follow the api_server, then force.
        end = time.monotonic() + 5.0
        while _session_members(sid) and time.monotonic() < end:
            time.sleep(0.1)
        for pid in _session_members(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass

    def _cleanup_workdir(self, force: bool = False) -> None:
        if self.workdir is not None and (force or not self.keep_workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)

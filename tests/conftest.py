"""Suite-wide rules: which tests need a real vLLM or checkov, and where tests may write files.

Markers are derived from what a test uses, so nobody has to remember them: a test that needs a
fixture in ``VLLM_FIXTURES`` gets ``vllm``, one that needs ``CHECKOV_FIXTURES`` gets ``checkov``
(``make test-fast`` deselects both). A test that starts its own ``VllmServer`` requests the
``vllm_venv_installed`` fixture, which marks it too; a ``VllmServer`` started from a test (or a
fixture it set up) without the marker raises at once, naming the test, instead of quietly making
the fast tier start vLLM.

Files: for the whole session ``TMPDIR``, ``HOME`` and the XDG directories point into pytest's own
temp dir, so whatever a test or a process it starts writes through ``tempfile`` or into a home
cache (helm's ~/.cache/helm, Hugging Face's ~/.cache/huggingface, Modal's ~/.modal.toml) lands
there and nowhere else.
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx._transports.default as httpx_transports
import pytest

from tests.support import real_vllm
from tests.support.vllm_fixture import require_vllm_venv

VLLM_FIXTURES = frozenset({"real_vllm", "slow_vllm", "vllm_venv_installed"})
CHECKOV_FIXTURES = frozenset({"checkov_bin"})

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKOV = Path(os.environ.get("CHECKOV_VENV", REPO_ROOT / ".venv-checkov")) / "bin" / "checkov"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))  # the closure: fixtures of fixtures too
        if used & VLLM_FIXTURES:
            item.add_marker(pytest.mark.vllm)
        if used & CHECKOV_FIXTURES:
            item.add_marker(pytest.mark.checkov)


_running: list[pytest.Item] = []  # the test whose setup, call or teardown runs now


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


def _refuse_vllm_in_an_unmarked_test() -> None:
    for item in _running:
        if item.get_closest_marker("vllm") is None:
            raise RuntimeError(
                f"{item.nodeid} starts a real vLLM but has no `vllm` marker: have the test or its "
                "fixture request `vllm_venv_installed` (tests/conftest.py)"
            )


real_vllm.START_CHECKS.append(_refuse_vllm_in_an_unmarked_test)


@pytest.fixture(scope="session", autouse=True)
def files_stay_in_pytest_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point TMPDIR, HOME and XDG_* into pytest's temp dir for the session (restored after)."""
    root = tmp_path_factory.mktemp("session")
    dirs = {
        name: root / name.lower()
        for name in ("TMPDIR", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, path in dirs.items():
            path.mkdir()
            patch.setenv(name, str(path))
        patch.setattr(tempfile, "tempdir", str(dirs["TMPDIR"]))  # gettempdir() caches its answer
        yield root


@pytest.fixture(scope="session", autouse=True)
def one_tls_context_for_httpx() -> Iterator[None]:
    """Every ``httpx.get``/``httpx.post`` (and every ``httpx.Client``) builds a TLS context from
    certifi's bundle (or $SSL_CERT_FILE), about 20 ms of CPU, though the tests speak plain HTTP to
    127.0.0.1; in the test process the default one is built once and shared (an SSLContext is
    made to be shared). Servers and CLIs the tests start are separate processes, untouched."""
    build = httpx_transports.create_ssl_context

    @functools.cache
    def default_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
        return build()  # what httpx builds from certifi's bundle, or from SSL_CERT_FILE/SSL_CERT_DIR

    def create_ssl_context(verify: object = True, cert: object = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return default_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return build(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx_transports, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(scope="session")
def vllm_venv_installed() -> None:
    """For a test that starts its own ``VllmServer``: fails (never skips) without the vLLM venv."""
    require_vllm_venv()


@pytest.fixture(scope="session")
def checkov_bin() -> Path:
    """checkov in its own venv; fails (never skips) when `bash .ci/install-checkov` has not run."""
    if not CHECKOV.exists():
        pytest.fail(f"no checkov at {CHECKOV}: run `bash .ci/install-checkov` (make test does)", pytrace=False)
    return CHECKOV

"""The suite's own rules (tests/conftest.py): tests that need vLLM or checkov carry their marker,
files land in pytest's temp dir, and metrics are read through the public registry API."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import CHECKOV_FIXTURES, VLLM_FIXTURES
from tests.support.ports import free_port
from tests.support.processes import ServerProcess
from tests.support.real_vllm import VllmServer

TESTS = Path(__file__).resolve().parent


def test_every_collected_test_that_needs_vllm_or_checkov_carries_its_marker(request: pytest.FixtureRequest) -> None:
    """Under `make test-fast` (-m "not vllm and not checkov") this proves none slipped through."""
    items = request.session.items
    assert request.node in items
    for item in items:
        used = set(item.fixturenames)
        marks = {m.name for m in item.iter_markers()}
        assert not (used & VLLM_FIXTURES) or "vllm" in marks, item.nodeid
        assert not (used & CHECKOV_FIXTURES) or "checkov" in marks, item.nodeid


def test_a_test_without_the_vllm_marker_cannot_start_vllm(request: pytest.FixtureRequest) -> None:
    """So `make test-fast` never starts vLLM, even through a fixture that forgot to mark its tests."""
    server = VllmServer("fast")
    with pytest.raises(RuntimeError, match=re.escape(request.node.nodeid) + ".*vllm_venv_installed"):
        server.start()
    assert not server.is_running()


def test_checkov_is_reached_only_through_the_checkov_bin_fixture() -> None:
    """The fixture marks its tests `checkov`; a test that finds the binary itself would run under test-fast."""
    direct = re.compile(r"""["']bin["']\s*/\s*["']checkov["']""")
    found = [
        f"{p.relative_to(TESTS)}:{n}"
        for p in _test_sources()
        if p != TESTS / "conftest.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if direct.search(line)
    ]
    assert found == []


def test_temp_files_home_and_caches_point_into_pytests_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp().resolve()
    for name in ("TMPDIR", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        assert Path(os.environ[name]).resolve().is_relative_to(base), name
    assert Path(tempfile.gettempdir()).resolve().is_relative_to(base)
    assert Path(os.path.expanduser("~/.cache/huggingface")).resolve().is_relative_to(base)


def test_a_server_process_keeps_its_log_in_pytests_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    server = ServerProcess([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], port, ready="/")
    try:
        assert server.log_path.resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve())
    finally:
        server.stop()
    assert server.proc.returncode is not None  # stopped, not left behind


def _test_sources() -> list[Path]:
    return [p for p in TESTS.rglob("*.py") if p != Path(__file__).resolve()]


def test_no_test_writes_to_a_fixed_temp_path_or_the_real_home() -> None:
    fixed = re.compile(r"""["']/tmp\b|Path\.home\(\)|["']~/""")
    found = [
        f"{p.relative_to(TESTS)}:{n}"
        for p in _test_sources()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if fixed.search(line)
    ]
    assert found == []


def test_metrics_are_read_through_the_registry_not_private_attributes() -> None:
    private = re.compile(r"\._(value|sum|metrics|samples|created)\b|_names_to_collectors")
    found = [
        f"{p.relative_to(TESTS)}:{n}"
        for p in _test_sources()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert found == []

"""Every query of the dashboard and every series the alerts read returns data from a real
Prometheus scraping a real wrapper and a real vLLM (tests/observability/live.py), and the
dashboard's picture is drawn from that data.

A panel whose query can never return anything (a misspelt metric, a label that does not exist)
fails here. The scale-to-zero panels have data because the wrapper runs with VLLM_IDLE_TIMEOUT > 0
and woke vLLM from zero once; without scale-to-zero those series do not exist (documented in the
chart README).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.observability import RULES_FILE, dashboard_model, dashboard_queries
from tests.observability.live import NAMESPACE, LiveStack

# Vector selectors of the metrics the rules read (not label values, not function names).
SELECTOR = re.compile(r'(?<![\w:"])(up|vllm:[a-z_]+|vllm_wrapper_[a-z_]+)(\{[^}]*\})?')
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, vllm_venv_installed: None) -> Iterator[LiveStack]:
    with LiveStack(tmp_path_factory.mktemp("live")) as stack:
        yield stack


def queries() -> list[tuple[dict, dict, str]]:
    return dashboard_queries(dashboard_model(), namespace=NAMESPACE, model="tiny", rate_interval="1m", time_range="1h")


def test_the_request_that_woke_vllm_from_zero_got_503_after_the_wake_timeout(live: LiveStack) -> None:
    assert live.first_status == 503


def test_every_dashboard_query_returns_data(live: LiveStack) -> None:
    for panel, target, expr in queries():
        result = live.prometheus.wait_for_data(expr)
        assert result, f"{panel['title']} / {target['refId']}"


def test_the_error_panel_shows_the_404_and_the_503(live: LiveStack) -> None:
    (expr,) = [q for p, _, q in queries() if p["title"].startswith("Errors/s")]

    def statuses(result: list[dict]) -> set[str]:
        return {s["metric"]["status"] for s in result}

    # The 503 came first (the wake), the 404 after it: wait until Prometheus has both series.
    result = live.prometheus.wait_for_data(expr, until=lambda r: {"404", "503"} <= statuses(r))
    assert {"404", "503"} <= statuses(result)


def test_the_variables_list_the_namespace_and_the_model(live: LiveStack) -> None:
    found = {}
    for variable in dashboard_model()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        expr, label = LABEL_VALUES.match(variable["query"]["query"]).groups()
        expr = expr.replace("$namespace", NAMESPACE)
        found[variable["name"]] = {s["metric"].get(label) for s in live.prometheus.wait_for_data(expr)}
    assert found == {"namespace": {NAMESPACE}, "model": {"tiny"}}


def test_prometheus_evaluates_every_rule_without_error(live: LiveStack) -> None:
    wanted = [r["alert"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]
    deadline = time.monotonic() + 60
    while True:
        rules = [r for g in live.prometheus.api("rules")["groups"] for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert [r["name"] for r in rules] == wanted
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == [(n, "ok", "") for n in wanted]
    # A healthy deployment: none of the page-worthy alerts fires.
    assert not [r["name"] for r in rules if r["state"] == "firing" and r["labels"]["severity"] == "critical"]


def test_every_series_an_alert_reads_exists(live: LiveStack) -> None:
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            selectors = {m.group(0) for m in SELECTOR.finditer(rule["expr"])}
            assert selectors, rule["alert"]
            for selector in sorted(selectors):
                assert live.prometheus.wait_for_data(selector), (rule["alert"], selector)


def test_the_dashboard_picture_is_drawn_from_this_data(live: LiveStack, tmp_path: Path) -> None:
    # Imported here: matplotlib takes ~0.4 s to import, paid by every process that collects this
    # module (each `make test-fast` worker) though only this test (vllm tier) draws.
    from benchmarks.dashboard_png import render

    # Enough history for lines, not a bound on anything.
    live.prometheus.wait_for_data(f'count_over_time(up{{namespace="{NAMESPACE}"}}[60s]) >= 30', timeout=180)
    end = time.time()
    png = tmp_path / "dashboard.png"
    drawn = render(live.prometheus.url, png, namespace=NAMESPACE, model="tiny", start=live.started, end=end)
    assert [title for title, n in drawn.items() if n == 0] == []
    assert png.stat().st_size > 50_000
    if target := os.environ.get("OBSERVABILITY_PNG"):  # refreshing the README's picture
        shutil.copyfile(png, target)

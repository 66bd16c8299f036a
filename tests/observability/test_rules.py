"""The alert rules file: Prometheus' own checker accepts it and its unit tests pass.

vllm-deploy.test.yaml covers each alert firing and not firing (promtool's rule unit tests:
https://prometheus.io/docs/prometheus/2.42/configuration/unit_testing_rules/).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from components.observability import RULES_FILE

HERE = Path(__file__).resolve().parent
UNIT_TESTS = HERE / "vllm-deploy.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "no promtool on PATH: run `bash .ci/install-prometheus` (make test does)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def alerts() -> list[str]:
    return [r["alert"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules_accepts_the_file() -> None:
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [case for t in tests for case in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fired == set(alerts()) and silent == set(alerts())


def test_every_alert_says_what_to_look_at_first() -> None:
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            assert "Look first at" in rule["annotations"]["summary"], rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_a_broken_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests are sensitive: the error-rate alert at 50 % instead of 5 % fails them."""
    rules = tmp_path / "charts" / "vllm-deploy" / "rules" / RULES_FILE.name
    rules.parent.mkdir(parents=True)
    rules.write_text(RULES_FILE.read_text().replace("> 0.05", "> 0.5"))
    (tmp_path / "tests" / "observability").mkdir(parents=True)
    copy = tmp_path / "tests" / "observability" / UNIT_TESTS.name
    copy.write_text(UNIT_TESTS.read_text())
    result = promtool("test", "rules", str(copy))
    assert result.returncode != 0 and "VllmWrapperErrorRate" in result.stdout + result.stderr

"""The shipped alert rules and scrape example pass promtool, and every alert is unit-tested both ways.

promtool comes with Debian's `prometheus` package; tests.prometheus.tool installs it when it is
missing (never a skip).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import ALERTS, ROOT, tool

RULE_TESTS = ALERTS.with_name("alerts.test.yml")
SCRAPE_CONFIG = ALERTS.with_name("prometheus.yml")


def promtool(*args: str, cwd: Path = ALERTS.parent) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_cases() -> list[dict[str, Any]]:
    return [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", ALERTS.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rule_tests_fail_when_an_alert_does_not_behave_as_expected(tmp_path: Path) -> None:
    # The unit tests above can fail: the same tests, expecting the fast queue to alert.
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    text = RULE_TESTS.read_text()
    assert text.count("queue: conveyor.slow") == 1
    (tmp_path / RULE_TESTS.name).write_text(text.replace("queue: conveyor.slow", "queue: conveyor.fast"))

    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)

    assert result.returncode != 0
    assert "ConveyorQueueWaitAboveObjective" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = rule_cases()

    for rule in alert_rules():
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == rule["alert"]]
        assert True in outcomes, f"{rule['alert']}: no case where it fires"
        assert False in outcomes, f"{rule['alert']}: no case where it stays silent"
    assert {case["alertname"] for case in cases} <= {rule["alert"] for rule in alert_rules()}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_bad_it_is_and_what_it_means(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("Conveyor")
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]


def test_promtool_accepts_the_scrape_example_and_the_rules_it_loads() -> None:
    result = promtool("check", "config", SCRAPE_CONFIG.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(SCRAPE_CONFIG.read_text())["rule_files"] == [ALERTS.name]


def test_every_alert_has_a_section_on_the_docs_page() -> None:
    page = (ROOT / "docs" / "operations" / "dashboards-and-alerts.md").read_text()
    headings = set(re.findall(r"^### (Conveyor\w+)$", page, flags=re.MULTILINE))

    assert headings == {rule["alert"] for rule in alert_rules()}

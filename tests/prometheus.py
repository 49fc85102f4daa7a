"""A real Prometheus for the tests: Debian's ``prometheus`` package, its own data folder, a free port.

The session fixture :func:`prometheus` starts one server per test session (each xdist worker
is one) with the shipped alert rules loaded, a 1 s scrape and evaluation interval, and no
target. A test points it at what it started with :meth:`Prometheus.scrape` (a file-based
service discovery file, picked up within a second, no reload) and lets go of it afterwards.

The shipped dashboard's queries are read from ``deploy/grafana/conveyor.json`` by
:func:`dashboard_queries`, with Grafana's variables replaced by values Prometheus understands.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import yaml

from tests.smtp import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "conveyor.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Installs the `prometheus` package (with promtool) when it is missing; never starts its service.
ENSURE_PACKAGES = ROOT / "scripts" / "ensure-system-packages.sh"

#: Grafana's built-in variables, as a 1 s scrape makes sense of them.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}
#: The dashboard's own variables when "All" is chosen: every queue, every kind.
ALL = {"queue": ".*", "kind": ".*"}


def tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``, installing Debian's package when it is missing.

    Raises AssertionError when it cannot be installed: a missing tool fails, never skips.
    """
    found = shutil.which(name)
    if found is None:
        result = subprocess.run(
            ["bash", str(ENSURE_PACKAGES)], capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        found = shutil.which(name)
    assert found is not None, f"{name} is not installed and {ENSURE_PACKAGES.name} did not install it"
    return found


# ---------------------------------------------------------------- the dashboard's queries


@dataclass(frozen=True)
class DashboardQuery:
    """One query of the dashboard: a panel's target or a variable's ``label_values``."""

    where: str
    expr: str


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana's built-in and the dashboard's variables replaced by values."""
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    for name, value in variables.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"a variable is left in {expr!r}"
    return expr


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in document["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(variables: Mapping[str, str] = ALL) -> list[DashboardQuery]:
    """Every panel target's ``expr``, and every query variable's selector, ready for Prometheus."""
    document = dashboard()
    queries = [
        DashboardQuery(
            f"panel {panel['title']!r} target {target['refId']}", substitute(target["expr"], variables)
        )
        for panel in panels(document)
        for target in panel.get("targets", [])
    ]
    for variable in document["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match is not None, f"variable {variable['name']}: not label_values(selector, label)"
        queries.append(DashboardQuery(f"variable {variable['name']}", substitute(match.group(1), variables)))
    return queries


# ---------------------------------------------------------------- the server


class Prometheus:
    """A running Prometheus, reached over its HTTP API."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, targets: Path) -> None:
        self.process = process
        self.url = url
        self.targets = targets

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/PATH``: the decoded answer, also when Prometheus reports an error."""
        query = f"?{urlencode(params)}" if params else ""
        try:
            with urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
                answer: dict[str, Any] = json.load(response)
        except HTTPError as exc:  # a bad query is a 400 whose body says why
            answer = json.loads(exc.read())
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query's whole answer (``status``, ``data`` or ``error``)."""
        return self.api("query", query=expr)

    def scrape(self, job: str, targets: list[str]) -> None:
        """Scrape ``targets`` (``host:port``) as ``job`` from now on; an empty list stops it."""
        path = self.targets / f"{job}.json"
        groups = [{"targets": targets, "labels": {"job": job}}] if targets else []
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(groups))
        staging.replace(path)  # atomic: Prometheus never reads half a file

    def active_targets(self, job: str) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", state="active")["data"]["activeTargets"]
        return [t for t in targets if t["labels"].get("job") == job]

    def wait_for_scrapes(self, job: str, count: int, *, timeout: float = 60) -> None:
        """Wait until ``count`` targets of ``job`` are up, then for three more scrapes of them."""
        deadline = time.monotonic() + timeout
        while True:
            up = [t for t in self.active_targets(job) if t["health"] == "up"]
            if len(up) >= count:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{job}: {len(up)} of {count} targets up: {self.active_targets(job)}")
            time.sleep(0.2)
        time.sleep(3.5)

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule, each with its group's name under ``group``."""
        groups = self.api("rules")["data"]["groups"]
        return [{**rule, "group": group["name"]} for group in groups for rule in group["rules"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(targets: Path, rule_files: list[Path]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "conveyor",
                "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": "1s"}],
            }
        ],
    }


@contextmanager
def running_prometheus(folder: Path, rule_files: list[Path] | None = None) -> Iterator[Prometheus]:
    """A Prometheus with its configuration, data and log in ``folder``; stopped on leaving."""
    binary = tool("prometheus")
    targets = folder / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(targets, [ALERTS] if rule_files is None else rule_files)))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(process, f"http://127.0.0.1:{port}", targets)
    try:
        _wait_ready(server, folder / "prometheus.log")
        yield server
    finally:
        server.stop()
        log.close()


def _wait_ready(server: Prometheus, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"prometheus exited with {server.process.returncode}:\n{log.read_text()}")
        try:
            with urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (URLError, ConnectionError):
            pass
        time.sleep(0.1)
    pytest.fail(f"prometheus not ready within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """One real Prometheus for the session, with the shipped alert rules and no target yet."""
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server

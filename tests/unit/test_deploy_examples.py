"""The deployment examples in deploy/ parse, and agree with the CLI and the settings they drive.

Real tools where this machine has them (systemd-analyze, docker compose, bash, jq); a
structural check where it has not, never a skip: each test can fail.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click
import pytest
import yaml

from cli import main
from jobs.admin.queues import QueueStats
from jobs.kinds import KINDS
from jobs.settings import Settings
from workers.runtime import resolve_queues

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE_FILE = DEPLOY / "docker" / "compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
LATENCY_SCRIPT = KUBERNETES / "queue-latency-metric.sh"
UNITS = ["conveyor-worker@.service", "conveyor-scheduler.service", "conveyor-migrate.service"]
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
INSTALLED_CONVEYOR = "/opt/conveyor/bin/conveyor"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "conveyor.json"
MONITORING_FILES = [
    PROMETHEUS / "prometheus.yml",
    PROMETHEUS / "alerts.yml",
    PROMETHEUS / "alerts.test.yml",
    DASHBOARD,
    GRAFANA / "provisioning" / "datasources.yml",
    GRAFANA / "provisioning" / "dashboards.yml",
]

# ---------------------------------------------------------------- helpers


def conveyor_params(argv: list[str], tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Parse ``conveyor ARGV`` with the real click commands, without running anything.

    Returns the subcommand path (``"db upgrade"``) and the leaf's parameters, defaults
    included. Fails on an unknown subcommand, an unknown flag or a bad value.
    """
    command: click.Command = main
    path: list[str] = []
    rest = list(argv)
    while isinstance(command, click.Group):
        if command.invoke_without_command and (not rest or rest[0] not in command.commands):
            break  # `conveyor queues --json`: the group runs itself
        assert rest, f"`conveyor {' '.join(path)}` needs a subcommand"
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`conveyor {' '.join([*path, name])}` is not a conveyor command"
        path.append(name)
        command = sub
    # click.Path(exists=True) checks the file, which lives on the target host, not here.
    local = [_stand_in(arg, tmp_path) if arg.startswith("/etc/conveyor/") else arg for arg in rest]
    try:
        context = command.make_context(f"conveyor {' '.join(path)}", local)
    except click.ClickException as exc:
        pytest.fail(f"`conveyor {' '.join([*path, *rest])}`: {exc.format_message()}")
    return " ".join(path), context.params


def _stand_in(container_path: str, tmp_path: Path) -> str:
    stand_in = tmp_path / "stand-ins" / container_path.lstrip("/")
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.touch()
    return str(stand_in)


def seconds(text: str | int | float) -> float:
    """A systemd (``330s``, ``5min``, ``1h 30s``) or Compose (``5m30s``) duration, in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+", text), f"not a duration: {text!r}"
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}}; configparser rejects repeated keys, systemd does not."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: bad section header"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: a setting outside any section"
        assert "=" in line, f"{path.name}:{number}: not KEY=VALUE"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def manifests(path: Path) -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert documents, f"{path.name} holds no document"
    assert all(isinstance(doc, dict) for doc in documents)
    return documents


def all_manifests() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in manifests(path)}


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = document["spec"]["template"]["spec"]
    return spec


def shutdown_timeout(params: dict[str, Any]) -> float:
    value = params["shutdown_timeout"]
    assert isinstance(value, int | float)
    return float(value)


# ---------------------------------------------------------------- systemd


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        # Fallback without systemd: every key must be one systemd knows in its section.
        for name in UNITS:
            _check_unit_keys(parse_unit(SYSTEMD / name), name)
        return
    # verify insists on an executable ExecStart; point the units at a stand-in.
    fake = tmp_path / "bin" / "conveyor"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert INSTALLED_CONVEYOR in text
        (tmp_path / name).write_text(text.replace(INSTALLED_CONVEYOR, str(fake)))
    targets = [str(tmp_path / name.replace("@.", "@1.")) for name in UNITS]
    result = subprocess.run(
        [analyze, "verify", "--man=no", *targets], capture_output=True, text=True, timeout=60, check=False
    )
    # verify reports unknown keys and unparsable values on stderr, yet exits 0 for them.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


_UNIT_KEYS = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "After", "Before", "StartLimitIntervalSec"},
    "Install": {"WantedBy", "RequiredBy"},
    "Service": {
        "Type", "User", "Group", "EnvironmentFile", "Environment", "ExecStart", "Restart", "RestartSec",
        "KillMode", "KillSignal", "TimeoutStopSec", "TimeoutStartSec", "StateDirectory",
        "StateDirectoryMode", "WorkingDirectory", "ReadWritePaths", "NoNewPrivileges", "ProtectSystem",
        "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
        "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "RestrictAddressFamilies",
        "CapabilityBoundingSet", "SystemCallArchitectures", "SystemCallFilter", "UMask",
    },
}  # fmt: skip


def _check_unit_keys(unit: dict[str, dict[str, list[str]]], name: str) -> None:
    for section, keys in unit.items():
        assert section in _UNIT_KEYS, f"{name}: unknown section [{section}]"
        unknown = set(keys) - _UNIT_KEYS[section]
        assert not unknown, f"{name}: unknown keys in [{section}]: {sorted(unknown)}"


def test_systemd_unit_keys_are_known_even_without_systemd() -> None:
    # The fallback above must accept today's units, or it would fail where systemd is missing.
    for name in UNITS:
        _check_unit_keys(parse_unit(SYSTEMD / name), name)


@pytest.mark.parametrize(
    ("unit_name", "expected"),
    [
        ("conveyor-worker@.service", "worker"),
        ("conveyor-scheduler.service", "scheduler"),
        ("conveyor-migrate.service", "db upgrade"),
    ],
)
def test_each_systemd_unit_runs_a_real_conveyor_command(
    unit_name: str, expected: str, tmp_path: Path
) -> None:
    unit = parse_unit(SYSTEMD / unit_name)
    binary, *argv = shlex.split(unit_value(unit, "Service", "ExecStart"))

    assert binary == INSTALLED_CONVEYOR
    assert conveyor_params(argv, tmp_path)[0] == expected
    assert unit_value(unit, "Service", "EnvironmentFile") == "/etc/conveyor/conveyor.env"
    assert unit_value(unit, "Service", "User") == "conveyor"
    assert unit_value(unit, "Service", "NoNewPrivileges") == "yes"
    assert unit_value(unit, "Service", "ProtectSystem") == "strict"


def test_the_systemd_worker_restarts_and_stops_gracefully(tmp_path: Path) -> None:
    unit = parse_unit(SYSTEMD / "conveyor-worker@.service")
    _, params = conveyor_params(shlex.split(unit_value(unit, "Service", "ExecStart"))[1:], tmp_path)

    assert unit_value(unit, "Service", "Restart") == "on-failure"
    # mixed: SIGTERM to the supervisor only; a second SIGTERM would stop worker processes at once.
    assert unit_value(unit, "Service", "KillMode") == "mixed"
    assert unit_value(unit, "Service", "KillSignal") == "SIGTERM"
    assert seconds(unit_value(unit, "Service", "TimeoutStopSec")) > shutdown_timeout(params)
    # Without it, systemd gives up on a worker after five quick failures during an outage.
    assert unit_value(unit, "Unit", "StartLimitIntervalSec") == "0"
    assert unit_value(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_systemd_migration_is_a_oneshot() -> None:
    unit = parse_unit(SYSTEMD / "conveyor-migrate.service")

    assert unit_value(unit, "Service", "Type") == "oneshot"
    assert "Restart" not in unit["Service"]


@pytest.mark.parametrize("unit_name", UNITS)
def test_the_example_file_outbox_is_writable_under_protect_system_strict(unit_name: str) -> None:
    unit = parse_unit(SYSTEMD / unit_name)
    smtp_url = env_file(SYSTEMD / "conveyor.env.example")["CONVEYOR_SMTP_URL"]
    assert smtp_url.startswith("file:///")
    outbox = Path(smtp_url.removeprefix("file://"))
    writable = [Path("/var/lib") / d for d in unit["Service"].get("StateDirectory", [])]
    writable += [Path(p) for v in unit["Service"].get("ReadWritePaths", []) for p in v.split()]

    assert any(outbox.is_relative_to(folder) for folder in writable), f"{outbox} is read-only in {unit_name}"


# ---------------------------------------------------------------- settings everywhere


def _compose_settings() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["worker"]["environment"].items()}


def _kubernetes_settings() -> dict[str, str]:
    docs = all_manifests()
    return {
        **docs["ConfigMap", "conveyor-config"]["data"],
        **docs["Secret", "conveyor-secrets"]["stringData"],
    }


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: env_file(SYSTEMD / "conveyor.env.example"), id="systemd-env-file"),
        pytest.param(_compose_settings, id="compose"),
        pytest.param(_kubernetes_settings, id="kubernetes"),
    ],
)
def test_every_example_environment_is_accepted_by_settings(source: Any) -> None:
    environment: dict[str, str] = source()
    required = {"CONVEYOR_BROKER_URL", "CONVEYOR_DATABASE_URL", "CONVEYOR_REDIS_URL", "CONVEYOR_SMTP_URL"}

    assert required <= set(environment)
    # from_env rejects unknown CONVEYOR_* names and malformed URLs, as every replica would.
    settings = Settings.from_env(environment)
    assert settings.broker_url.startswith("amqp")
    assert settings.database_url.startswith("postgresql")


# ---------------------------------------------------------------- Docker


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in instructions]


def test_the_dockerfile_builds_a_non_root_conveyor_image() -> None:
    # No Docker engine on this kind of machine, so the Dockerfile is read, not built.
    instructions = dockerfile_instructions()
    known = {
        "FROM",
        "RUN",
        "COPY",
        "ENV",
        "WORKDIR",
        "USER",
        "STOPSIGNAL",
        "ENTRYPOINT",
        "CMD",
        "ARG",
        "LABEL",
    }
    assert {name for name, _ in instructions} <= known
    stages = [args for name, args in instructions if name == "FROM"]
    final = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM") :]

    assert all(stage.split()[0] == "python:3.11-slim" for stage in stages)
    assert json.loads(next(args for name, args in final if name == "ENTRYPOINT")) == ["conveyor"]
    user = [args for name, args in final if name == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    assert any(name == "RUN" and "pip install" in args and "/src" in args for name, args in instructions)
    for name, args in instructions:
        if name == "COPY" and "--from" not in args:
            *sources, _ = [word for word in args.split() if not word.startswith("--")]
            assert all((ROOT / source).exists() for source in sources), args


def test_the_image_has_the_system_libraries_the_project_installs_for_weasyprint() -> None:
    script = (ROOT / "scripts" / "ensure-system-packages.sh").read_text()
    match = re.search(r"PACKAGES=\(([^)]*)\)", script)
    assert match is not None
    installs = " ".join(args for name, args in dockerfile_instructions() if name == "RUN")

    assert set(match.group(1).split()) <= set(installs.split())
    assert "jq" in installs.split()


def test_the_docker_build_context_keeps_the_package_and_leaves_the_venv_out() -> None:
    lines = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    excluded = [p for p in patterns if not p.startswith("!")]

    def ignored(path: str) -> bool:
        hit = any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in excluded)
        return hit and f"!{path}" not in patterns

    assert ignored(".venv")
    assert ignored(".git")
    for needed in ["pyproject.toml", "README.md", "cli.py", "jobs", "workers", "producers", "templates"]:
        assert not ignored(needed), needed
    assert not ignored("console")
    assert not ignored("deploy/kubernetes/queue-latency-metric.sh")


# ---------------------------------------------------------------- Compose

_COMPOSE_TOP = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
_COMPOSE_SERVICE = {
    "build", "command", "container_name", "depends_on", "deploy", "entrypoint", "env_file", "environment",
    "expose", "healthcheck", "image", "init", "labels", "logging", "networks", "ports", "profiles",
    "pull_policy", "read_only", "restart", "stop_grace_period", "stop_signal", "user", "volumes",
    "working_dir", "tmpfs", "ulimits", "security_opt", "cap_drop", "cap_add", "extra_hosts", "hostname",
}  # fmt: skip


def test_the_compose_file_is_valid() -> None:
    docker = shutil.which("docker")
    has_compose = docker is not None and (
        subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    )
    if has_compose:
        assert docker is not None
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return
    # Fallback without the compose plugin: known keys only, and references that resolve.
    document = compose()
    assert set(document) - _COMPOSE_TOP <= {k for k in document if k.startswith("x-")}
    services = document["services"]
    for name, service in services.items():
        assert set(service) <= _COMPOSE_SERVICE, f"{name}: {sorted(set(service) - _COMPOSE_SERVICE)}"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition["condition"] in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            )


def test_compose_volumes_exist() -> None:
    # `docker compose config` does not look at bind-mount sources; Docker would create a
    # missing file's path as an empty folder and the scheduler would fail on it.
    document = compose()
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).is_file(), f"{name}: {source}"
            else:
                assert source in document["volumes"], f"{name}: volume {source}"


def test_compose_workers_scale_and_stop_gracefully(tmp_path: Path) -> None:
    services = compose()["services"]
    worker = services["worker"]
    _, params = conveyor_params(worker["command"], tmp_path)

    # --scale worker=N: names and host ports would collide between replicas.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert seconds(worker["stop_grace_period"]) > shutdown_timeout(params)
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert worker["restart"] in ("on-failure", "unless-stopped", "always")


def test_compose_services_have_healthchecks_that_dependents_wait_for() -> None:
    services = compose()["services"]

    assert "management" in services["rabbitmq"]["image"]
    for name in ("rabbitmq", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


@pytest.mark.parametrize(
    ("service", "expected"), [("migrate", "db upgrade"), ("worker", "worker"), ("scheduler", "scheduler")]
)
def test_compose_services_run_real_conveyor_commands(service: str, expected: str, tmp_path: Path) -> None:
    document = compose()
    definition = document["services"][service]
    build = definition["build"]

    assert conveyor_params(definition["command"], tmp_path)[0] == expected
    assert "entrypoint" not in definition  # the image's ENTRYPOINT is `conveyor`
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


# ---------------------------------------------------------------- Kubernetes

_METADATA = {"name", "namespace", "labels", "annotations"}
_SPEC_KEYS = {
    "Deployment": {"replicas", "selector", "template", "strategy", "minReadySeconds", "revisionHistoryLimit",
                   "paused", "progressDeadlineSeconds"},
    "Job": {"parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "template",
            "ttlSecondsAfterFinished", "completionMode", "suspend", "podFailurePolicy"},
    "Service": {"selector", "ports", "type", "clusterIP", "sessionAffinity", "internalTrafficPolicy"},
    "ScaledObject": {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                     "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
                     "triggers"},
    "ServiceMonitor": {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
                       "podTargetLabels", "sampleLimit"},
}  # fmt: skip
_POD_KEYS = {
    "containers", "initContainers", "volumes", "restartPolicy", "terminationGracePeriodSeconds",
    "securityContext", "serviceAccountName", "nodeSelector", "affinity", "tolerations",
    "topologySpreadConstraints", "imagePullSecrets", "priorityClassName", "activeDeadlineSeconds",
}  # fmt: skip
_CONTAINER_KEYS = {
    "name", "image", "command", "args", "env", "envFrom", "ports", "resources", "volumeMounts",
    "livenessProbe", "readinessProbe", "startupProbe", "securityContext", "imagePullPolicy", "lifecycle",
    "workingDir",
}  # fmt: skip
_DATA_KINDS = {"ConfigMap": {"data"}, "Secret": {"stringData", "data", "type"}}


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_each_kubernetes_manifest_is_well_formed(path: Path) -> None:
    # No API server here for `kubectl --dry-run`: PyYAML, and the fields the API would reject.
    for document in manifests(path):
        kind = document["kind"]
        assert document["apiVersion"], path.name
        assert document["metadata"]["name"], path.name
        assert set(document["metadata"]) <= _METADATA
        if kind in _DATA_KINDS:
            assert set(document) - {"apiVersion", "kind", "metadata"} <= _DATA_KINDS[kind]
            continue
        assert kind in _SPEC_KEYS, f"{path.name}: unexpected kind {kind}"
        assert set(document["spec"]) <= _SPEC_KEYS[kind], f"{path.name}: {kind} spec"
        if kind in ("Deployment", "Job"):
            pod = pod_spec(document)
            assert set(pod) <= _POD_KEYS, f"{path.name}: pod spec {sorted(set(pod) - _POD_KEYS)}"
            for container in pod["containers"]:
                assert set(container) <= _CONTAINER_KEYS, f"{path.name}: container {container['name']}"
                assert container["resources"]["requests"]
                assert container["resources"]["limits"]["memory"]
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
        if kind == "Deployment":
            labels = document["spec"]["template"]["metadata"]["labels"]
            assert document["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kubernetes_pods_take_their_settings_from_the_example_configmap_and_secret() -> None:
    docs = all_manifests()
    for (kind, name), document in docs.items():
        if kind not in ("Deployment", "Job"):
            continue
        for container in pod_spec(document)["containers"]:
            if container["name"] == "http":
                continue  # serves a file, reads no setting
            sources = {
                (ref.get("configMapRef") or ref.get("secretRef"))["name"] for ref in container["envFrom"]
            }
            assert sources == {"conveyor-config", "conveyor-secrets"}, name
            assert ("ConfigMap", "conveyor-config") in docs
            assert ("Secret", "conveyor-secrets") in docs


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("conveyor-worker", "Deployment", "worker"),
        ("conveyor-scheduler", "Deployment", "scheduler"),
        ("conveyor-migrate", "Job", "db upgrade"),
    ],
)
def test_kubernetes_containers_run_real_conveyor_commands(
    name: str, kind: str, expected: str, tmp_path: Path
) -> None:
    (container,) = pod_spec(all_manifests()[kind, name])["containers"]

    assert "command" not in container  # the image's ENTRYPOINT is `conveyor`
    assert conveyor_params(container["args"], tmp_path)[0] == expected


def test_kubernetes_workers_drain_within_their_grace_period(tmp_path: Path) -> None:
    worker = all_manifests()["Deployment", "conveyor-worker"]
    pod = pod_spec(worker)
    (container,) = pod["containers"]
    _, params = conveyor_params(container["args"], tmp_path)

    assert pod["terminationGracePeriodSeconds"] > shutdown_timeout(params)
    # `conveyor ping` needs the whole stack: as a liveness probe it restarts every worker in an outage.
    assert "livenessProbe" not in container
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_kubernetes_runs_two_schedulers_and_a_migration_job() -> None:
    docs = all_manifests()
    migrate = docs["Job", "conveyor-migrate"]

    assert docs["Deployment", "conveyor-scheduler"]["spec"]["replicas"] == 2
    assert pod_spec(migrate)["restartPolicy"] in ("Never", "OnFailure")
    assert migrate["spec"]["backoffLimit"] >= 1


def test_keda_scales_the_worker_deployment_on_its_real_queues(tmp_path: Path) -> None:
    docs = all_manifests()
    scaled = docs["ScaledObject", "conveyor-worker"]["spec"]
    worker = docs["Deployment", "conveyor-worker"]
    (container,) = pod_spec(worker)["containers"]
    _, params = conveyor_params(container["args"], tmp_path)
    settings = Settings.from_env(_kubernetes_settings())
    consumed = resolve_queues(settings, params["queues"].split(",")) or {
        settings.queue_name(kind.queue) for kind in KINDS.values()
    }
    rabbitmq = [t["metadata"] for t in scaled["triggers"] if t["type"] == "rabbitmq"]

    assert scaled["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    # A running worker publishes delayed jobs and retries when due: never scale to zero.
    assert scaled["minReplicaCount"] >= 1
    assert {t["queueName"] for t in rabbitmq} == consumed
    for trigger in rabbitmq:
        assert trigger["mode"] == "QueueLength"
        assert float(trigger["value"]) > 0
        assert trigger["hostFromEnv"] in _kubernetes_settings()


def test_keda_reads_latency_from_the_queue_metrics_service(tmp_path: Path) -> None:
    docs = all_manifests()
    (latency,) = [
        t for t in docs["ScaledObject", "conveyor-worker"]["spec"]["triggers"] if t["type"] == "metrics-api"
    ]
    service = docs["Service", "conveyor-queue-metrics"]
    deployment = docs["Deployment", "conveyor-queue-metrics"]
    containers = {c["name"]: c for c in pod_spec(deployment)["containers"]}
    url = re.fullmatch(r"http://([\w-]+)\.[\w-]+\.svc:(\d+)/([\w.]+)", latency["metadata"]["url"])
    assert url is not None
    (port,) = service["spec"]["ports"]

    # Latency does not add up over replicas: scale by latency / target, not per replica.
    assert latency["metricType"] == "Value"
    assert url.group(1) == service["metadata"]["name"]
    assert int(url.group(2)) == port["port"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert port["targetPort"] in {p["name"] for p in containers["http"]["ports"]}
    assert url.group(3) in containers["sampler"]["args"][0]
    assert "queue-latency-metric --json" in containers["sampler"]["args"][0]
    copies = [args for name, args in dockerfile_instructions() if name == "COPY" and "queue-latency" in args]
    assert copies
    assert copies[0].endswith("/usr/local/bin/queue-latency-metric")
    # The field KEDA reads is one the script prints.
    output = run_latency_script(tmp_path, SAMPLE_ROWS, "--json")
    assert latency["metadata"]["valueLocation"] in json.loads(output.stdout)


# ---------------------------------------------------------------- queue-latency-metric.sh

SAMPLE_ROWS = [
    QueueStats("conveyor.default", ["noop"], 3, 1, 1, 0, 0, 4.2),
    QueueStats("conveyor.email", ["email"], 0, 0, 0, 2, 1, None),
    QueueStats("conveyor.images", ["image"], 9, 0, 0, 2, 4, 61.5),
    QueueStats("conveyor.reports", ["report"], 0, 0, 0, 1, 0, None),
]


def run_latency_script(
    tmp_path: Path, rows: list[QueueStats], *args: str, exit_code: int = 0
) -> subprocess.CompletedProcess[str]:
    """The script, with a fake `conveyor` on PATH printing ``rows`` as `conveyor queues --json` would."""
    listing = tmp_path / "queues.json"
    listing.write_text(json.dumps([row.to_dict() for row in rows], indent=2))
    fake = tmp_path / "bin" / "conveyor"
    fake.parent.mkdir(exist_ok=True)
    body = f'cat "{listing}"' if exit_code == 0 else 'echo "conveyor: error: RabbitMQ unreachable" >&2'
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$*" = "queues --json" ] || { echo "fake conveyor: unexpected arguments: $*" >&2; exit 99; }\n'
        f"{body}\nexit {exit_code}\n"
    )
    fake.chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    environment["PATH"] = f"{fake.parent}{os.pathsep}{environment.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(
        ["bash", str(LATENCY_SCRIPT), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
        check=False,
    )


def test_the_latency_script_is_valid_bash_and_executable() -> None:
    result = subprocess.run(["bash", "-n", str(LATENCY_SCRIPT)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
    assert os.access(LATENCY_SCRIPT, os.X_OK)


def test_the_latency_script_reads_real_keys_of_conveyor_queues_json(tmp_path: Path) -> None:
    script = LATENCY_SCRIPT.read_text()
    _, params = conveyor_params(["queues", "--json"], tmp_path)

    assert params["as_json"] is True
    assert "conveyor queues --json" in script
    for key in ("queue", "kinds", "oldest_wait_seconds"):
        assert f".{key}" in script
        assert key in QueueStats.__dataclass_fields__
    # An unknown CONVEYOR_* variable would stop the conveyor command the script runs.
    assert not re.search(r"\bCONVEYOR_[A-Z_]+=", script)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "61.5"),
        (("email",), "0"),
        (("default",), "4.2"),
        (("noop", "conveyor.email"), "4.2"),
        (("image",), "61.5"),
        (
            ("--json", "default", "email"),
            '{"oldest_wait_seconds":4.2,"queues":["conveyor.default","conveyor.email"]}',
        ),
    ],
)
def test_the_latency_script_prints_the_oldest_waiting_jobs_age(
    args: tuple[str, ...], expected: str, tmp_path: Path
) -> None:
    result = run_latency_script(tmp_path, SAMPLE_ROWS, *args)

    assert (result.returncode, result.stdout, result.stderr) == (0, expected + "\n", "")


def test_the_latency_script_prints_zero_when_nothing_waits(tmp_path: Path) -> None:
    idle = [QueueStats("conveyor.email", ["email"], 0, 5, 0, 2, 0, None)]

    assert run_latency_script(tmp_path, idle).stdout == "0\n"
    assert json.loads(run_latency_script(tmp_path, idle, "--json").stdout)["oldest_wait_seconds"] == 0


@pytest.mark.parametrize(
    ("args", "exit_code", "expected_code", "message"),
    [
        (("bogus",), 0, 2, "unknown queue(s): bogus"),
        (("--bogus",), 0, 2, "unknown option --bogus"),
        ((), 3, 3, "RabbitMQ unreachable"),
    ],
)
def test_the_latency_script_fails_loudly_and_prints_no_number(
    args: tuple[str, ...], exit_code: int, expected_code: int, message: str, tmp_path: Path
) -> None:
    # An autoscaler reading a made-up 0 during an outage would scale the workers down.
    result = run_latency_script(tmp_path, SAMPLE_ROWS, *args, exit_code=exit_code)

    assert (result.returncode, result.stdout) == (expected_code, "")
    assert message in result.stderr


def test_the_latency_script_explains_itself(tmp_path: Path) -> None:
    result = run_latency_script(tmp_path, SAMPLE_ROWS, "--help")

    assert result.returncode == 0
    assert "Usage: queue-latency-metric.sh" in result.stdout
    assert "autoscaler" in result.stdout


# ---------------------------------------------------------------- README


def test_the_deploy_readme_covers_every_example() -> None:
    readme = (DEPLOY / "README.md").read_text()
    shipped = [
        *(SYSTEMD / name for name in [*UNITS, "conveyor.env.example"]),
        DOCKERFILE,
        COMPOSE_FILE,
        *MANIFESTS,
        LATENCY_SCRIPT,
        *MONITORING_FILES,
    ]

    for path in shipped:
        assert path.name in readme, path.name
    for phrase in (
        "terminationGracePeriodSeconds",
        "stop_grace_period",
        "TimeoutStopSec",
        "--shutdown-timeout",
    ):
        assert phrase in readme


def test_the_examples_name_the_image_of_the_current_version() -> None:
    """The version lives in pyproject.toml alone; every image tag in the examples follows it."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tags = {
        (path.relative_to(ROOT).as_posix(), tag)
        for path in DEPLOY.rglob("*")
        if path.is_file()
        for tag in re.findall(r"conveyor:(\d+\.\d+\.\d+)", path.read_text())
    }
    assert tags, "no example names a conveyor image tag"
    assert {tag for _, tag in tags} == {version}, sorted(tags)


# ---------------------------------------------------------------- TLS between hosts

#: The URL parameters that name the CA a connection verifies its server against.
_CA_PARAMETERS = {
    "CONVEYOR_BROKER_URL": "cafile",
    "CONVEYOR_DATABASE_URL": "sslrootcert",
    "CONVEYOR_REDIS_URL": "ssl_ca_certs",
    "CONVEYOR_SMTP_URL": "cafile",
    "CONVEYOR_RABBITMQ_API_URL": "cafile",
}


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: env_file(SYSTEMD / "conveyor.env.example"), id="systemd-env-file"),
        pytest.param(_kubernetes_settings, id="kubernetes"),
    ],
)
def test_the_examples_between_hosts_use_verified_tls_to_every_service(source: Any) -> None:
    environment: dict[str, str] = source()
    broker, database = environment["CONVEYOR_BROKER_URL"], environment["CONVEYOR_DATABASE_URL"]
    redis, smtp = environment["CONVEYOR_REDIS_URL"], environment["CONVEYOR_SMTP_URL"]

    assert broker.startswith("amqps://")
    assert _query(broker).get("cafile")
    assert _query(database).get("sslmode") == "verify-full"
    assert _query(database).get("sslrootcert")
    assert redis.startswith("rediss://")
    assert _query(redis).get("ssl_cert_reqs", "required") == "required"
    assert smtp.startswith(("smtps://", "smtp://", "file://"))
    # Neither an opt-out of STARTTLS nor of the plaintext-password refusal in an example.
    assert not {"starttls", "allow_plaintext_auth", "verify"} & set(_query(smtp))
    assert environment.get("CONVEYOR_RABBITMQ_API_URL", "https://").startswith("https://")
    Settings.from_env(environment)


def test_kubernetes_pods_mount_the_ca_files_their_urls_name() -> None:
    secrets = _kubernetes_settings()
    files = [
        _query(secrets[name])[key] for name, key in _CA_PARAMETERS.items() if key in _query(secrets[name])
    ]
    assert len(files) == len(_CA_PARAMETERS)  # every connection names its CA
    for (kind, name), document in all_manifests().items():
        if kind not in ("Deployment", "Job"):
            continue
        pod = pod_spec(document)
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            if "envFrom" not in container:
                continue  # reads no setting
            mounts = [m for m in container.get("volumeMounts", []) if m["name"] in volumes]
            for path in files:
                mount = next((m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
                assert mount is not None, f"{name}/{container['name']}: nothing mounted at {path}"
                assert mount.get("readOnly") is True
                assert "secret" in volumes[mount["name"]] or "configMap" in volumes[mount["name"]]


def test_the_compose_stack_on_one_host_says_how_to_turn_tls_on() -> None:
    # One Docker host: the services talk over Compose's private network; the file points to TLS.
    assert "docs/security/tls.md" in COMPOSE_FILE.read_text()


# ---------------------------------------------------------------- monitoring

#: The metric families Conveyor defines (SPEC §8 and issue 17), by who serves them.
REPLICA_FAMILIES = {
    "conveyor_job_attempts_finished_total": "counter",
    "conveyor_job_run_seconds": "histogram",
    "conveyor_job_queue_wait_seconds": "histogram",
    "conveyor_jobs_in_progress": "gauge",
    "conveyor_email_deliveries_total": "counter",
}
#: Families a replica adds beyond SPEC §8 (jobs/metrics.py) that the dashboard reads.
REPLICA_EXTRAS = {
    "conveyor_worker_threads": "gauge",
    "conveyor_worker_threads_busy": "gauge",
    "conveyor_store_write_seconds": "histogram",
}
EXPORTER_FAMILIES = {
    name: "gauge"
    for name in [
        "conveyor_queue_messages_ready",
        "conveyor_queue_messages_unacked",
        "conveyor_queue_consumers",
        "conveyor_queue_oldest_wait_seconds",
        "conveyor_dead_letters",
        "conveyor_delayed_jobs",
        "conveyor_jobs",
        "conveyor_running_oldest_seconds",
        "conveyor_workers_up",
        "conveyor_scheduler_leader",
        "conveyor_jobs_drift",
        "conveyor_exporter_up",
    ]
}
_SOURCE_FOLDERS = ("jobs", "workers", "console")


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for top in dashboard()["panels"] for p in [top, *top.get("panels", [])]]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def families_in(expr: str) -> set[str]:
    """The metric families an expression reads (a histogram's _bucket/_sum/_count series folded)."""
    names = set(re.findall(r"\bconveyor_[a-z_]+\b", expr))
    return {
        re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
        for n in names
    }


def _defined_in_code(family: str) -> bool:
    # Named in full in a string literal; prometheus_client adds `_total` to a counter's name.
    name = family.removesuffix("_total")
    return any(
        re.search(rf"[\"']{re.escape(name)}(_total)?[\"']", path.read_text())
        for folder in _SOURCE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
    )


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_the_dashboard_and_the_alerts_read_only_metrics_conveyor_defines(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    used = set().union(*(families_in(expr) for expr in exprs))
    known = {**REPLICA_FAMILIES, **REPLICA_EXTRAS, **EXPORTER_FAMILIES}

    assert used, source
    assert used <= set(known), sorted(used - set(known))
    for name in used:
        if known[name] == "histogram":
            assert all(f"{name}_bucket" in e or f"{name}_sum" in e or f"{name}_count" in e
                       for e in exprs if name in e), name  # fmt: skip
    # Once the code serves a server's families (replica or exporter), it serves every one used.
    for families in ({**REPLICA_FAMILIES, **REPLICA_EXTRAS}, EXPORTER_FAMILIES):
        defined = {name for name in families if _defined_in_code(name)}
        if defined:
            assert used & set(families) <= defined, sorted(used & set(families) - defined)


def test_the_dashboard_shows_every_metric_family() -> None:
    used = set().union(*(families_in(expr) for expr in dashboard_exprs()))

    assert set(REPLICA_FAMILIES) | set(EXPORTER_FAMILIES) <= used


def test_the_dashboard_is_a_grafana_model_on_a_prometheus_variable() -> None:
    document = dashboard()
    variables = {v["name"]: v for v in document["templating"]["list"]}
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]

    assert document["schemaVersion"] >= 36
    assert document["uid"]
    assert document["title"]
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("queue", "kind"):
        assert variables[name]["type"] == "query"
        assert re.fullmatch(
            rf"label_values\(conveyor_\w+(\{{.*\}})?, {name}\)", variables[name]["query"]["query"]
        )
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        # Every query with a queue or kind label honours the variable.
        for expr in (t["expr"] for t in panel["targets"]):
            for label in ("queue", "kind"):
                if label in _labels_of(expr):
                    assert f'{label}=~"${label}"' in expr, (panel["title"], expr)


def _labels_of(expr: str) -> set[str]:
    names = families_in(expr)
    families = {
        **{k: ("queue", "kind") for k in REPLICA_FAMILIES},
        **{k: ("queue",) for k in EXPORTER_FAMILIES},
        **{k: () for k in REPLICA_EXTRAS},
    }
    families["conveyor_email_deliveries_total"] = ()
    families["conveyor_jobs"] = ("queue", "kind")
    for name in ("conveyor_workers_up", "conveyor_scheduler_leader", "conveyor_exporter_up"):
        families[name] = ()
    return {label for name in names for label in families[name]}


def test_the_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]


def _exporter_params(argv: list[str], tmp_path: Path) -> dict[str, Any]:
    """``conveyor exporter …`` parsed by the real command; by its SPEC form (§8) until it exists."""
    if "exporter" in main.commands:
        path, params = conveyor_params(argv, tmp_path)
        assert path == "exporter"
        return params
    match = re.fullmatch(r"exporter --host (\S+) --port (\d+)", " ".join(argv))
    assert match is not None, argv
    return {"host": match.group(1), "port": int(match.group(2))}


def test_compose_prometheus_scrapes_every_worker_replica_and_the_exporter(tmp_path: Path) -> None:
    services = compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    settings = Settings.from_env(_compose_settings())
    exporter = _exporter_params(services["exporter"]["command"], tmp_path)
    (workers,) = jobs["conveyor-worker"]["dns_sd_configs"]

    # Every replica, through Docker's DNS, on the port its settings open to the network.
    assert (workers["names"], workers["type"]) == (["worker"], "A")
    assert workers["port"] == settings.metrics_port
    assert settings.metrics_host == "0.0.0.0"
    assert jobs["conveyor-exporter"]["static_configs"] == [{"targets": [f"exporter:{exporter['port']}"]}]
    assert exporter["host"] == "0.0.0.0"
    assert "9464/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    assert str(settings.metrics_port) in " ".join(services["worker"]["healthcheck"]["test"])


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A Compose service's files from this repository: {path in the container: file here}."""
    pairs = [volume.split(":")[:2] for volume in service["volumes"]]
    return {
        target: (COMPOSE_FILE.parent / source).resolve() for source, target in pairs if source.startswith(".")
    }


def test_compose_monitoring_mounts_the_shipped_files_where_their_configs_look() -> None:
    services = compose()["services"]
    prometheus, grafana = (_bind_mounts(services[name]) for name in ("prometheus", "grafana"))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards.yml").read_text())["providers"][0]
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources.yml").read_text())["datasources"]

    assert prometheus == {
        "/etc/prometheus/prometheus.yml": PROMETHEUS / "prometheus.yml",
        **{f"/etc/prometheus/{name}": PROMETHEUS / name for name in config["rule_files"]},
    }
    assert grafana[f"{provider['options']['path']}/conveyor.json"] == DASHBOARD
    assert any(target.startswith("/etc/grafana/provisioning/dashboards/") for target in grafana)
    assert any(target.startswith("/etc/grafana/provisioning/datasources/") for target in grafana)
    assert (source["type"], source["isDefault"]) == ("prometheus", True)
    assert source["url"] == f"http://prometheus:{services['prometheus']['ports'][0].rsplit(':', 1)[1]}"
    for name in ("exporter", "prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_kubernetes_workers_serve_metrics_and_are_ready_on_healthz() -> None:
    (container,) = pod_spec(all_manifests()["Deployment", "conveyor-worker"])["containers"]
    settings = Settings.from_env({**_kubernetes_settings(), **_container_env(container)})
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]

    assert settings.metrics_port == ports["metrics"]
    assert settings.metrics_host == "0.0.0.0"
    assert (probe["path"], probe["port"]) == ("/healthz", "metrics")


def test_kubernetes_exporter_serves_the_port_its_service_and_probe_name(tmp_path: Path) -> None:
    docs = all_manifests()
    deployment = docs["Deployment", "conveyor-exporter"]
    (container,) = pod_spec(deployment)["containers"]
    params = _exporter_params(container["args"], tmp_path)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (service_port,) = docs["Service", "conveyor-exporter"]["spec"]["ports"]

    assert deployment["spec"]["replicas"] == 1  # one per namespace: a second doubles the queries
    assert "command" not in container
    assert (params["host"], params["port"]) == ("0.0.0.0", ports["metrics"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert service_port["targetPort"] == "metrics"


@pytest.mark.parametrize("component", ["worker", "exporter"])
def test_kubernetes_service_monitors_reach_a_metrics_port_of_the_right_pods(component: str) -> None:
    docs = all_manifests()
    monitor = docs["ServiceMonitor", f"conveyor-{component}"]["spec"]
    (endpoint,) = monitor["endpoints"]
    wanted = monitor["selector"]["matchLabels"].items()
    (service,) = [
        doc
        for (kind, _), doc in docs.items()
        if kind == "Service" and wanted <= doc["metadata"]["labels"].items()
    ]
    pods = docs["Deployment", f"conveyor-{component}"]["spec"]["template"]["metadata"]["labels"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    (container,) = pod_spec(docs["Deployment", f"conveyor-{component}"])["containers"]

    assert endpoint["path"] == "/metrics"
    assert service["spec"]["selector"].items() <= pods.items()
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    if component == "worker":
        assert service["spec"]["clusterIP"] == "None"  # each replica, not one at random


def test_every_dashboard_panel_is_explained_on_the_docs_page() -> None:
    page = (ROOT / "docs" / "operations" / "dashboards-and-alerts.md").read_text()

    for panel in dashboard_panels():
        heading = f"### {panel['title']}" if panel["type"] == "row" else f"| {panel['title']} |"
        assert heading in page, panel["title"]

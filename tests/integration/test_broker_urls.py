"""Several broker URLs against the real RabbitMQ: a node that refuses connections is passed over
by producers, workers and the admin commands alike."""

from __future__ import annotations

import json

import pytest

from jobs.admin.queues import management_queues
from jobs.settings import Settings
from producers import Client
from tests.conftest import AMQP_URL
from tests.helpers import WorkerProcess, run_cli, secret

pytestmark = pytest.mark.integration

#: Port 1 on loopback: nothing listens, so a connection is refused at once (a node that is down).
DEAD_NODE = "amqp://guest:{password}@127.0.0.1:1/%2F"
DEAD_API = "http://guest:{password}@127.0.0.1:1"
API_URL = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture
def password() -> str:
    return secret("dead node")


def test_producer_and_worker_pass_over_a_node_that_is_down(
    settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory, password: str
) -> None:
    urls = f"{DEAD_NODE.format(password=password)},{AMQP_URL}"
    worker = start_worker("--processes", "1", "--threads", "2", env={"CONVEYOR_BROKER_URL": urls})

    with Client(settings.with_overrides(broker_url=urls)) as client:
        result = client.enqueue("noop", sleep=0.01).wait(timeout=30)

    assert result is not None
    assert all(password not in line for line in worker.lines)


def test_admin_commands_read_queues_through_the_next_node_and_api(
    settings: Settings, service_env: dict[str, str], password: str
) -> None:
    env = {
        **service_env,
        "CONVEYOR_BROKER_URL": f"{DEAD_NODE.format(password=password)},{AMQP_URL}",
        "CONVEYOR_RABBITMQ_API_URL": f"{DEAD_API.format(password=password)},{API_URL}",
    }

    listed = run_cli("queues", "--json", env=env)

    assert listed.returncode == 0, listed.stderr
    queues = json.loads(listed.stdout)
    assert queues
    assert all(queue["unacked"] is not None for queue in queues)
    assert password not in listed.stdout + listed.stderr


def test_when_every_node_is_down_the_error_names_them_all_masked(
    service_env: dict[str, str], password: str
) -> None:
    dead = DEAD_NODE.format(password=password)
    env = {**service_env, "CONVEYOR_BROKER_URL": f"{dead},{dead.replace(':1/', ':2/')}"}

    listed = run_cli("queues", env=env)

    assert listed.returncode == 3
    assert "RabbitMQ" in listed.stderr
    assert "127.0.0.1:1/" in listed.stderr
    assert "127.0.0.1:2/" in listed.stderr
    assert password not in listed.stdout + listed.stderr


def test_the_management_listing_skips_an_api_node_that_is_down(settings: Settings, password: str) -> None:
    two = settings.with_overrides(rabbitmq_api_url=f"{DEAD_API.format(password=password)},{API_URL}")

    assert isinstance(management_queues(two, settings.namespace), dict)

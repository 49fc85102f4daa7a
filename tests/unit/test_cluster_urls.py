"""Several RabbitMQ nodes in CONVEYOR_BROKER_URL: each URL checked alone, masked alone, tried in turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.broker import amqp_url, broker_parameters, build_broker
from jobs.errors import SettingsError
from jobs.settings import Settings, check_tls_files, mask_url, split_urls
from tests.helpers import secret

THREE_NODES = (
    "amqp://guest:guest@mq-a:5682/%2F,amqp://guest:guest@mq-b:5683/%2F, amqp://guest:guest@mq-c:5684/%2F"
)


def test_comma_separated_urls_are_the_cluster_nodes_in_the_order_given() -> None:
    settings = Settings.from_env({"CONVEYOR_BROKER_URL": THREE_NODES})

    assert settings.broker_urls == (
        "amqp://guest:guest@mq-a:5682/%2F",
        "amqp://guest:guest@mq-b:5683/%2F",
        "amqp://guest:guest@mq-c:5684/%2F",
    )
    assert Settings().broker_urls == (Settings().broker_url,)


def test_every_node_gets_its_own_pika_parameters_with_the_fail_fast_defaults() -> None:
    settings = Settings(broker_url=THREE_NODES, broker_heartbeat=7)

    nodes = broker_parameters(settings)

    assert [(p.host, p.port) for p in nodes] == [("mq-a", 5682), ("mq-b", 5683), ("mq-c", 5684)]
    assert all(p.heartbeat == 7 and p.connection_attempts == 1 for p in nodes)
    assert "mq-a:5682" in amqp_url(settings)
    assert "mq-c:5684" in amqp_url(settings, settings.broker_urls[2])


def test_the_broker_connects_through_the_list_of_nodes() -> None:
    broker = build_broker(Settings(broker_url=THREE_NODES, queue_type="quorum"))

    assert [(p.host, p.port) for p in broker.parameters] == [("mq-a", 5682), ("mq-b", 5683), ("mq-c", 5684)]


def test_a_comma_inside_one_url_does_not_split_it() -> None:
    assert split_urls("amqp://u:p@mq/%2F?client_properties=a,b") == [
        "amqp://u:p@mq/%2F?client_properties=a,b"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("amqp://u:p@mq-a/%2F,http://u:p@mq-b/%2F", "must start with one of: amqp://"),
        ("amqp://u:p@mq-a/%2F,amqp://u:p@mq-b:99999/%2F", "not a valid URL"),
        ("amqp://u:p@mq-a/%2F,amqp:///%2F", "names no host"),
        ("amqp://u:p@mq-a/%2F,memory://", "memory:// cannot be one of several URLs"),
        ("amqp://u:p@mq-a/%2F,amqp://u:p@mq-b/staging", "different virtual hosts"),
        ("amqp://u:p@mq-a/%2F,amqp://u:p@mq-b/%2F?cafile=/ca.pem", "are for amqps:// URLs only"),
        ("amqps://u:p@mq-a/%2F,amqps://u:p@mq-b/%2F?keyfile=/k.pem", "keyfile= needs certfile="),
    ],
)
def test_each_node_url_passes_the_checks_of_a_single_url(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"CONVEYOR_BROKER_URL": value})


def test_each_node_has_its_own_tls_parameters(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    settings = Settings(broker_url=f"amqps://u:p@mq-a/%2F?cafile={ca},amqps://u:p@mq-b/%2F")

    with pytest.raises(SettingsError, match=r"CONVEYOR_BROKER_URL=amqps://u:\*\*\*@mq-a/"):
        broker_parameters(settings)


def test_a_missing_ca_file_of_the_second_node_is_found_at_start(tmp_path: Path) -> None:
    settings = Settings(
        broker_url=f"amqps://u:p@mq-a/%2F,amqps://u:p@mq-b/%2F?cafile={tmp_path / 'none.pem'}"
    )

    with pytest.raises(SettingsError, match=r"mq-b/%2F\?cafile=.*is not a file"):
        check_tls_files(settings)


def test_every_password_of_a_list_is_masked() -> None:
    passwords = [secret(f"node{n}") for n in range(3)]
    urls = ",".join(f"amqp://app:{pw}@mq-{n}:5672/%2F" for n, pw in enumerate(passwords))

    masked = mask_url(urls)
    shown = repr(Settings(broker_url=urls)) + str(Settings(broker_url=urls).masked())

    assert masked == ",".join(f"amqp://app:***@mq-{n}:5672/%2F" for n in range(3))
    assert not any(pw in masked or pw in shown for pw in passwords)


def test_a_bad_node_url_is_reported_without_its_password() -> None:
    password = secret("node")
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"CONVEYOR_BROKER_URL": f"amqp://u:p@mq-a/%2F,http://u:{password}@mq-b/%2F"})

    assert password not in str(error.value)


def test_the_management_api_takes_one_url_per_node_too() -> None:
    settings = Settings(rabbitmq_api_url="http://u:p@mq-a:15672,http://u:p@mq-b:15672")

    assert mask_url(settings.rabbitmq_api_url or "") == "http://u:***@mq-a:15672,http://u:***@mq-b:15672"
    with pytest.raises(SettingsError, match="CONVEYOR_RABBITMQ_API_URL"):
        Settings(rabbitmq_api_url="http://u:p@mq-a:15672,amqp://u:p@mq-b:5672")

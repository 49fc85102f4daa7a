"""The dashboard's jobs, job detail and dead letters over HTTP (Starlette's TestClient) on the
real PostgreSQL, RabbitMQ and workers: pages and their /api/ JSON, 400 and 404 answers, and
retry, cancel, requeue and purge with and without the token."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pika
import pytest
from starlette.testclient import TestClient

from console.web.app import create_app
from jobs.admin.audit import Actor
from jobs.admin.operations import Operations
from jobs.errors import JobFailed
from jobs.fingerprint import fingerprint
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.dead_letters import DeadJobStore
from producers import Client, Job
from tests.helpers import AMQP_URL, WorkerProcess, eventually, message_count, run_cli, secret

pytestmark = pytest.mark.integration

TOKEN = "web-jobs-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def acting(settings: Settings) -> Settings:
    """The settings of a dashboard that takes actions (a token is set)."""
    return replace(settings, web_token=TOKEN)


@pytest.fixture
def http(acting: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(acting, db)) as test_client:
        yield test_client


@pytest.fixture
def read_only(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db)) as test_client:
        yield test_client


def audit_rows(settings: Settings, db: Database, action: str) -> list[Any]:
    ops = Operations(settings, db, Actor.cli())
    try:
        return ops.audit_log(action=action)
    finally:
        ops.close()


def dead_queue(settings: Settings) -> str:
    return f"{settings.namespace}.default.XQ"


def kill(client: Client, settings: Settings, count: int, **payload: Any) -> list[Job]:
    """``count`` noop jobs that fail for good, dead-lettered (the XQ holds them all)."""
    before = message_count(dead_queue(settings))
    jobs = [client.enqueue("noop", **payload) for _ in range(count)]
    for job in jobs:
        with pytest.raises(JobFailed):
            job.wait(timeout=30)
    eventually(lambda: message_count(dead_queue(settings)) == before + count)
    return jobs


# ------------------------------------------------------------------ jobs


def test_the_jobs_page_filters_searches_and_pages_by_keyset(
    http: TestClient, client: Client, settings: Settings
) -> None:
    jobs = client.enqueue_many("noop", [{"sleep": 0.0} for _ in range(52)], delay=600)
    marked = client.enqueue("noop", sleep=0.25, delay=600)
    queue = {"queue": "default"}

    first = http.get("/api/jobs", params=queue).json()
    second = http.get("/api/jobs", params={**queue, "before": first["next"]}).json()

    assert len(first["jobs"]) == 50
    assert first["jobs"][0]["id"] == marked.id  # newest first
    assert second["next"] is None
    listed = [j["id"] for j in first["jobs"] + second["jobs"]]
    assert sorted(listed) == sorted([j.id for j in jobs] + [marked.id])
    assert first["older"].startswith("/jobs?queue=default&before=")
    page = http.get("/jobs", params=queue)
    assert page.status_code == 200
    assert marked.id in page.text
    assert 'rel="next"' in page.text
    by_payload = http.get("/api/jobs", params={**queue, "q": "sleep=0.25"}).json()
    assert [j["id"] for j in by_payload["jobs"]] == [marked.id]
    by_json = http.get("/api/jobs", params={**queue, "q": '{"sleep": 0.25}'}).json()
    assert [j["id"] for j in by_json["jobs"]] == [marked.id]
    by_id = http.get("/api/jobs", params={"q": marked.id.upper()}).json()
    assert [j["id"] for j in by_id["jobs"]] == [marked.id]
    queued = http.get("/api/jobs", params={**queue, "status": "succeeded"}).json()
    assert queued["jobs"] == []


def test_a_key_value_search_also_finds_the_value_inside_a_list(http: TestClient, client: Client) -> None:
    several = client.send_email(
        to=["bob@example.com", "ada@example.com"], template="welcome", context={"name": "A"}
    )
    client.send_email(to="carol@example.com", template="welcome", context={"name": "C"})

    found = http.get("/api/jobs", params={"queue": "email", "q": "to=ada@example.com"}).json()
    exact = http.get("/api/jobs", params={"queue": "email", "q": '{"to": "ada@example.com"}'}).json()

    assert [j["id"] for j in found["jobs"]] == [several.id]
    assert exact["jobs"] == []  # a JSON object is PostgreSQL's @> as it is: a string is no list


def test_error_search_finds_a_failed_job_by_a_piece_of_its_error(
    http: TestClient, client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    (dead,) = kill(client, settings, 1, permanent=True)

    found = http.get("/api/jobs", params={"queue": "default", "q": "ASKED TO FAIL", "since": "1h"}).json()
    html = http.get("/jobs", params={"queue": "default", "q": "asked to fail"})

    assert [j["id"] for j in found["jobs"]] == [dead.id]
    assert "PermanentError" in found["jobs"][0]["error"]
    assert dead.id in html.text


def test_api_job_rows_and_detail_have_the_cli_json_keys(
    http: TestClient, client: Client, service_env: dict[str, str]
) -> None:
    job = client.enqueue("noop", delay=600)

    listed = run_cli("jobs", "list", "--json", "--queue", "default", env=service_env)
    shown = run_cli("jobs", "show", job.id, "--json", env=service_env)
    api_rows = http.get("/api/jobs", params={"queue": "default"}).json()["jobs"]
    api_job = http.get(f"/api/jobs/{job.id}").json()

    assert listed.returncode == 0, listed.stderr
    assert shown.returncode == 0, shown.stderr
    assert set(api_rows[0]) == set(json.loads(listed.stdout)[0])
    cli_job = json.loads(shown.stdout)
    assert set(api_job) == set(cli_job)
    assert api_job == cli_job


def test_the_job_page_masks_secrets_in_the_html_and_the_json(http: TestClient, client: Client) -> None:
    token = secret("a job's api token")
    job = client.send_email(
        to="ada@example.com", template="welcome", context={"name": "Ada", "api_token": token}
    )

    html = http.get(f"/jobs/{job.id}")
    api = http.get(f"/api/jobs/{job.id}")
    listing = http.get("/jobs", params={"queue": "email"})

    assert html.status_code == 200
    assert api.status_code == 200
    for text in (html.text, api.text, listing.text):
        assert token not in text
    assert api.json()["payload"]["context"] == {"name": "Ada", "api_token": "***"}
    assert "ada@example.com" in html.text
    assert "***" in html.text


def test_the_job_page_shows_attempts_tracebacks_and_children(
    http: TestClient, client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    job = client.enqueue("noop", fail_attempts=1, min_backoff=0.05, max_backoff=0.1)
    job.wait(timeout=30)

    html = http.get(f"/jobs/{job.id}").text
    api = http.get(f"/api/jobs/{job.id}").json()

    assert [a["outcome"] for a in api["history"]] == ["retrying", "succeeded"]
    assert all(a["duration"] is not None for a in api["history"])
    assert 'class="badge status-succeeded"' in html
    assert "<details" in html
    assert "Traceback of attempt 1" in html
    assert api["history"][0]["worker"] in html


@pytest.mark.parametrize("path", ["/jobs/{}", "/api/jobs/{}"])
def test_an_unknown_job_is_404_and_a_malformed_id_is_400(http: TestClient, path: str) -> None:
    unknown = http.get(path.format(uuid.uuid4()))
    malformed = http.get(path.format("not-a-uuid"))

    assert unknown.status_code == 404
    assert malformed.status_code == 400
    assert "a job id is a UUID" in malformed.text
    if path.startswith("/api/"):
        assert "error" in unknown.json()
        assert "error" in malformed.json()


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"since": "last tuesday"},
        {"before": "not-a-cursor"},
        {"q": "{broken"},
        {"colour": "red"},
    ],
)
@pytest.mark.parametrize("path", ["/jobs", "/api/jobs"])
def test_malformed_filters_are_400(http: TestClient, path: str, params: dict[str, str]) -> None:
    answer = http.get(path, params=params)

    assert answer.status_code == 400


def test_a_payload_search_on_encrypted_payloads_is_refused_with_a_reason(
    acting: Settings, database_url: str
) -> None:
    keys = "k1:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
    from jobs.keyring import keyring_of

    sealed = Database(database_url, keyring=keyring_of(keys))
    try:
        with TestClient(create_app(replace(acting, encryption_keys=keys), sealed)) as http:
            answer = http.get("/api/jobs", params={"q": "to=ada@example.com"})
    finally:
        sealed.dispose()

    assert answer.status_code == 400
    assert "encrypted" in answer.json()["error"]


def test_an_artifact_downloads_as_a_safe_attachment_and_an_unknown_one_is_404(
    http: TestClient, client: Client
) -> None:
    art = client.artifacts.put(b"a,b\n1,2\n", name='r\u00e9sum\u00e9 "q".csv', content_type="text/csv")

    got = http.get(f"/artifacts/{art.id}")
    unknown = http.get(f"/artifacts/{uuid.uuid4()}")
    malformed = http.get("/artifacts/nope")

    assert got.status_code == 200
    assert got.content == b"a,b\n1,2\n"
    assert got.headers["content-type"].startswith("text/csv")
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"r_sum___q_.csv\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22q%22.csv"
    )
    assert got.headers["x-content-type-options"] == "nosniff"
    assert unknown.status_code == 404
    assert malformed.status_code == 404


# ------------------------------------------------------------------ retry and cancel


def test_retry_with_the_bearer_token_runs_the_job_again_and_is_audited(
    http: TestClient,
    client: Client,
    settings: Settings,
    db: Database,
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1, fail_attempts=1, max_retries=0)

    answer = http.post(f"/api/jobs/{job.id}/retry", headers=BEARER)

    assert answer.status_code == 200, answer.text
    assert answer.json()["outcomes"] == {job.id: "retried"}
    assert job.wait(timeout=30) == {"attempt": 2, "slept": 0.0}
    (row,) = audit_rows(settings, db, "jobs.retry")
    assert (row.source, row.actor, row.job_ids, row.count, row.outcome) == ("web", "api", [job.id], 1, "ok")


def test_cancel_answers_a_dry_run_first_then_cancels_when_confirmed(
    http: TestClient, client: Client, settings: Settings, db: Database, job_store: JobStore
) -> None:
    job = client.enqueue("noop", delay=600)

    dry = http.post(f"/api/jobs/{job.id}/cancel", headers=BEARER)
    after_dry = job_store.get(job.id).status
    done = http.post(f"/api/jobs/{job.id}/cancel", headers=BEARER, data={"confirm": "yes"})

    assert dry.status_code == 200
    assert dry.json()["dry_run"] is True
    assert dry.json()["count"] == 1
    assert after_dry == "queued"
    assert done.status_code == 200, done.text
    assert done.json()["outcomes"] == {job.id: "cancelled"}
    assert job_store.get(job.id).status == "cancelled"
    (row,) = audit_rows(settings, db, "jobs.cancel")
    assert (row.source, row.job_ids, row.count) == ("web", [job.id], 1)


def test_actions_on_an_unknown_job_are_404_and_on_a_malformed_id_400(http: TestClient) -> None:
    assert http.post(f"/api/jobs/{uuid.uuid4()}/retry", headers=BEARER).status_code == 404
    assert http.post("/api/jobs/x/cancel", headers=BEARER).status_code == 400


def test_without_the_right_token_actions_are_refused_and_nothing_changes(
    http: TestClient,
    read_only: TestClient,
    client: Client,
    settings: Settings,
    db: Database,
    job_store: JobStore,
) -> None:
    job = client.enqueue("noop", delay=600)
    cancel = f"/api/jobs/{job.id}/cancel"
    confirm = {"confirm": "yes"}

    missing = http.post(cancel, data=confirm)
    wrong = http.post(cancel, data=confirm, headers={"Authorization": "Bearer wrong"})
    no_token_set = read_only.post(cancel, data=confirm, headers=BEARER)
    retried = http.post(f"/api/jobs/{job.id}/retry")

    assert (missing.status_code, wrong.status_code, no_token_set.status_code) == (401, 403, 403)
    assert retried.status_code == 401
    assert job_store.get(job.id).status == "queued"
    assert audit_rows(settings, db, "jobs.cancel") == []
    assert audit_rows(settings, db, "jobs.retry") == []


def _signed_in(http: TestClient, user: str = "grace") -> str:
    """Sign in with the login form; the CSRF token of the session's forms."""
    form = http.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    answer = http.post(
        "/login", data={"user": user, "token": TOKEN, "csrf": csrf.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303
    page = http.get("/jobs").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_the_cancel_form_asks_for_confirmation_then_cancels_as_the_signed_in_user(
    http: TestClient, client: Client, settings: Settings, db: Database, job_store: JobStore
) -> None:
    job = client.enqueue("noop", delay=600)
    csrf = _signed_in(http)
    page = http.get(f"/jobs/{job.id}").text
    assert 'data-action="cancel"' in page

    first = http.post(
        f"/api/jobs/{job.id}/cancel",
        data={"csrf": csrf, "next": f"/jobs/{job.id}?confirm=cancel"},
        follow_redirects=False,
    )
    assert first.status_code == 303
    assert first.headers["location"] == f"/jobs/{job.id}?confirm=cancel"
    assert job_store.get(job.id).status == "queued"
    asking = http.get(first.headers["location"]).text
    assert 'data-action="confirm"' in asking
    forged = http.post(f"/api/jobs/{job.id}/cancel", data={"csrf": "forged", "confirm": "yes"})
    assert forged.status_code == 403
    assert job_store.get(job.id).status == "queued"

    done = http.post(
        f"/api/jobs/{job.id}/cancel",
        data={"csrf": csrf, "confirm": "yes", "next": f"/jobs/{job.id}"},
        follow_redirects=False,
    )

    assert done.status_code == 303
    assert job_store.get(job.id).status == "cancelled"
    assert "cancelled" in http.get(done.headers["location"]).text
    (row,) = audit_rows(settings, db, "jobs.cancel")
    assert (row.source, row.actor) == ("web", "grace")


# ------------------------------------------------------------------ dead letters


def test_dead_letters_are_grouped_by_fingerprint_with_the_cli_keys(
    http: TestClient,
    client: Client,
    settings: Settings,
    service_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    permanent = kill(client, settings, 2, permanent=True)
    (transient,) = kill(client, settings, 1, fail_attempts=1, max_retries=0)

    api = http.get("/api/dead", params={"queue": "default"}).json()
    html = http.get("/dead")
    cli = run_cli("dlq", "list", "--json", "--queue", "default", env=service_env)

    assert cli.returncode == 0, cli.stderr
    assert [len(letter) for letter in api["letters"]] == [len(row) for row in json.loads(cli.stdout)]
    assert {key for letter in api["letters"] for key in letter} == {
        k for r in json.loads(cli.stdout) for k in r
    }
    groups = {g["error_type"]: g for g in api["groups"]}
    assert groups["PermanentError"]["count"] == 2
    assert sorted(groups["PermanentError"]["ids"]) == sorted(j.id for j in permanent)
    assert groups["PermanentError"]["kind"] == "noop"
    assert groups["PermanentError"]["queues"] == [f"{settings.namespace}.default"]
    assert groups["PermanentError"]["first_seen"] <= groups["PermanentError"]["last_seen"]
    assert transient.id in groups["TransientError"]["ids"]
    assert html.status_code == 200
    assert groups["PermanentError"]["message"] in html.text
    assert http.get("/dead", params={"queue": "nope"}).status_code == 400


def test_a_group_requeue_counts_first_then_requeues_when_confirmed(
    http: TestClient,
    client: Client,
    settings: Settings,
    db: Database,
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    kill(client, settings, 1, permanent=True)
    (transient,) = kill(client, settings, 1, fail_attempts=1, max_retries=0)
    key = next(g for g in http.get("/api/dead").json()["groups"] if g["error_type"] == "TransientError")[
        "fingerprint"
    ]

    dry = http.post(f"/api/dead/{key}/requeue", headers=BEARER)
    depth_after_dry = message_count(dead_queue(settings))
    done = http.post(f"/api/dead/{key}/requeue", headers=BEARER, data={"confirm": "yes"})

    assert dry.json() == {"dry_run": True, "count": 1, "fingerprint": key, "message": dry.json()["message"]}
    assert depth_after_dry == 2
    assert done.status_code == 200, done.text
    assert done.json()["ids"] == [transient.id]
    assert transient.wait(timeout=30) == {"attempt": 2, "slept": 0.0}
    assert message_count(dead_queue(settings)) == 1
    after = http.get("/api/dead").json()
    assert [g["error_type"] for g in after["groups"]] == ["PermanentError"]  # its row is unmarked
    assert (after["letters_total"], after["in_queues"]) == (1, 1)
    (row,) = audit_rows(settings, db, "dlq.requeue")
    assert (row.source, row.count, row.job_ids) == ("web", 1, [transient.id])
    assert row.selection == {"fingerprint": key}


def test_a_group_purge_includes_a_member_that_died_after_the_dry_run(
    http: TestClient,
    client: Client,
    settings: Settings,
    db: Database,
    job_store: JobStore,
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    first = kill(client, settings, 2, permanent=True)
    key = http.get("/api/dead").json()["groups"][0]["fingerprint"]

    dry = http.post(f"/api/dead/{key}/purge", headers=BEARER).json()
    late = kill(client, settings, 1, permanent=True)
    done = http.post(f"/api/dead/{key}/purge", headers=BEARER, data={"confirm": "yes"}).json()

    assert dry["count"] == 2
    assert sorted(done["ids"]) == sorted(j.id for j in first + late)
    assert message_count(dead_queue(settings)) == 0
    assert {job_store.get(j.id).status for j in first + late} == {"failed"}
    after = http.get("/api/dead").json()
    assert (after["groups"], after["letters_total"], after["in_queues"]) == ([], 0, 0)
    (row,) = audit_rows(settings, db, "dlq.purge")
    assert row.count == 3


def test_group_actions_without_the_token_change_nothing(
    http: TestClient,
    read_only: TestClient,
    client: Client,
    settings: Settings,
    db: Database,
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    kill(client, settings, 1, permanent=True)
    key = http.get("/api/dead").json()["groups"][0]["fingerprint"]
    confirm = {"confirm": "yes"}

    answers = [
        http.post(f"/api/dead/{key}/purge", data=confirm).status_code,
        http.post(
            f"/api/dead/{key}/requeue", data=confirm, headers={"Authorization": "Bearer nope"}
        ).status_code,
        read_only.post(f"/api/dead/{key}/purge", data=confirm, headers=BEARER).status_code,
    ]

    assert answers == [401, 403, 403]
    assert message_count(dead_queue(settings)) == 1
    assert audit_rows(settings, db, "dlq.purge") == []
    assert audit_rows(settings, db, "dlq.requeue") == []
    assert http.post("/api/dead/NOTAKEY/purge", headers=BEARER).status_code == 400


def publish_raw(queue: str, body: bytes) -> None:
    """A message straight onto ``queue``, as a producer that is not Conveyor's would leave one."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def test_the_page_groups_the_marked_rows_and_flags_messages_they_do_not_account_for(
    http: TestClient,
    client: Client,
    settings: Settings,
    db: Database,
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1, permanent=True)
    clean = http.get("/api/dead").json()
    publish_raw(dead_queue(settings), b"not json")

    api = http.get("/api/dead").json()
    html = http.get("/dead").text
    exact = http.get("/api/dead", params={"source": "queues"}).json()

    (row,) = DeadJobStore(db).rows([job.id]).values()
    assert row.group == fingerprint("noop", row.error).key  # stored by the worker that dead-lettered it
    assert [g["fingerprint"] for g in clean["groups"]] == [row.group]
    assert (clean["source"], clean["letters_total"], clean["in_queues"]) == ("rows", 1, 1)
    assert (api["letters_total"], api["in_queues"]) == (1, 2)
    assert "the job rows account for 1" in html
    assert "/dead?source=queues" in html
    assert (exact["source"], exact["letters_total"], exact["in_queues"]) == ("queues", 2, 2)
    assert {letter["foreign"] for letter in exact["letters"]} == {True, False}
    assert row.group in {g["fingerprint"] for g in exact["groups"]}  # the same key in both readings
    assert http.get("/dead", params={"source": "queues"}).status_code == 200
    assert http.get("/api/dead", params={"source": "cache"}).status_code == 400


def test_with_rabbitmq_unreachable_the_page_shows_the_rows_account_and_says_so(
    acting: Settings,
    client: Client,
    settings: Settings,
    db: Database,
    start_worker: WorkerProcess.Factory,
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1, permanent=True)
    unreachable = replace(acting, broker_url="amqp://guest:guest@127.0.0.1:1/%2F")

    with TestClient(create_app(unreachable, db)) as offline:
        api = offline.get("/api/dead").json()
        html = offline.get("/dead").text

    assert api["in_queues"] is None
    assert api["groups"][0]["ids"] == [job.id]
    assert "rabbitmq" in api["unavailable"]
    assert "RabbitMQ cannot be reached" in html

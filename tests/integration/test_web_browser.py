"""The dashboard clicked through in Debian's Chromium, its effects checked in PostgreSQL and RabbitMQ.

One live stack serves the whole module (it runs on one xdist worker, in file order): a
`conveyor web` with a token, a `conveyor worker`, and seeded jobs: some succeeded, one failed for
good (retried here), a dead-lettered group of three that succeed when run again (requeued here),
and one delayed by an hour (cancelled here). Each test signs in a fresh browser context through
the login form, as a person would.

Every page is photographed first, while the seeded jobs are all there (``web-<page>.png``, full
page at 1280×800): into ``docs/assets/screenshots`` with ``SCREENSHOTS=1`` (``make
screenshots``), else a temporary folder. The actions come after.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from sqlalchemy import text

from jobs.admin.dlq import list_dead
from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import Database, JobStore
from producers import Client
from tests.browser import WebServer, new_page, screenshot_folder
from tests.helpers import (
    AMQP_URL,
    WorkerProcess,
    consumer_count,
    eventually,
    message_count,
    observe,
    queue_names,
    secret,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("web-browser")]

#: Seconds a worker is given to notice a pause before a job is enqueued behind it.
PAUSE_NOTICE_S = 20.0
#: Seconds a job enqueued on a paused queue must stay there, ready and queued.
PAUSED_HOLD_S = 3.0

_stacks = itertools.count()


@dataclass
class Stack:
    """The live dashboard, its worker and the seeded jobs' ids."""

    settings: Settings
    web: WebServer
    client: Client
    store: JobStore
    db: Database
    succeeded: list[str]
    failed: str
    dead_group: list[str]
    delayed: str

    @property
    def url(self) -> str:
        return self.web.url

    @property
    def token(self) -> str:
        assert self.settings.web_token is not None
        return self.settings.web_token

    def queue(self, name: str = "default") -> str:
        return f"{self.settings.namespace}.{name}"


def _seed(client: Client, settings: Settings) -> dict[str, object]:
    """Jobs in every state the pages show; returns their ids once each has settled."""
    succeeded = [client.enqueue("noop", sleep=0.05 * i) for i in range(3)]
    failed = client.enqueue("noop", permanent=True)
    group = [client.enqueue("noop", fail_attempts=1, max_retries=0) for _ in range(3)]
    delayed = client.enqueue("noop", delay=3600)
    for job in succeeded:
        job.wait(timeout=30)
    for job in [failed, *group]:
        with pytest.raises(JobFailed):
            job.wait(timeout=30)
    eventually(lambda: message_count(f"{settings.namespace}.default.XQ") == 4)
    return {
        "succeeded": [job.id for job in succeeded],
        "failed": failed.id,
        "dead_group": [job.id for job in group],
        "delayed": delayed.id,
    }


@pytest.fixture(scope="module")
def stack(database_url: str, session_token: str) -> Iterator[Stack]:
    """`conveyor web` (with a token) and `conveyor worker` on a namespace of this module, seeded."""
    namespace = f"t{session_token}-web{next(_stacks)}"
    settings = Settings(
        broker_url=AMQP_URL, database_url=database_url, namespace=namespace, web_token=secret("web token")
    )
    env = WebServer.environment(settings)
    db = Database(database_url)
    client = Client(settings, db=db)
    with contextlib.ExitStack() as running:
        running.callback(_delete_queues, namespace)
        running.callback(db.dispose)
        running.callback(client.close)
        worker = WorkerProcess.start(env)
        running.callback(worker.terminate)
        web = WebServer(env)
        running.callback(web.stop)
        seeded = _seed(client, settings)
        yield Stack(settings, web, client, JobStore(db), db, **seeded)  # type: ignore[arg-type]


def _delete_queues(namespace: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in queue_names(namespace):
            channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh browser context, signed in through the login form."""
    signed_in = new_page(browser)
    sign_in(signed_in, stack)
    yield signed_in
    signed_in.context.close()


def sign_in(page: Page, stack: Stack) -> None:
    visit(page, f"{stack.url}/login")
    page.fill('input[name="user"]', "alice")
    page.fill('input[name="token"]', stack.token)
    page.click('[data-action="login"]')
    expect(page.locator('[data-action="logout"]')).to_be_visible()


def visit(page: Page, url: str) -> None:
    """Open ``url``; it must answer 200, and its HTML must not hold a password of the session."""
    response = page.goto(url)
    assert response is not None, url
    assert response.status == 200, f"{url}: {response.status} {response.text()[:500]}"
    observe(page.content(), f"the page {url}")


def act(page: Page, scope: Page | Locator, action: str) -> None:
    """Click ``scope``'s ``data-action`` button and wait for the page it leads to."""
    with page.expect_navigation():
        scope.locator(f'[data-action="{action}"]').first.click()


def flash(page: Page) -> str:
    """The flash message an action left (role=status)."""
    message = page.locator('.flash[role="status"]')
    expect(message).to_be_visible()
    return message.inner_text()


def row_of(page: Page, action: str, has: str, *, has_not: tuple[str, ...] = ()) -> Locator:
    """The innermost element holding ``has`` (and none of ``has_not``) and a ``data-action`` button:
    one table row, list item or card of a page."""
    rows = page.locator("tr, li, article, section, div").filter(
        has_text=has, has=page.locator(f'[data-action="{action}"]')
    )
    for text_ in has_not:
        rows = rows.filter(has_not_text=text_)
    expect(rows.first).to_be_visible()
    return rows.last


def paused_queues(stack: Stack) -> list[str]:
    """The full names of the stack namespace's queues that have a ``queue_pauses`` row."""
    query = text("SELECT queue FROM queue_pauses WHERE namespace = :namespace ORDER BY queue")
    with stack.db.engine.connect() as connection:
        return [str(row[0]) for row in connection.execute(query, {"namespace": stack.settings.namespace})]


# ---------------------------------------------------------------- signing in


def test_signing_in_with_the_token_shows_who_is_signed_in(browser: Browser, stack: Stack) -> None:
    signed_out = new_page(browser)
    try:
        visit(signed_out, stack.url + "/")
        expect(signed_out.locator('[data-action="logout"]')).to_have_count(0)

        sign_in(signed_out, stack)

        expect(signed_out.locator("nav.top")).to_contain_text("alice")
    finally:
        signed_out.context.close()


def test_a_wrong_token_does_not_sign_in(browser: Browser, stack: Stack) -> None:
    signed_out = new_page(browser)
    try:
        visit(signed_out, f"{stack.url}/login")
        signed_out.fill('input[name="user"]', "mallory")
        signed_out.fill('input[name="token"]', "not-the-token-at-all")
        signed_out.click('[data-action="login"]')

        expect(signed_out.locator('[role="alert"]')).to_contain_text("Wrong name or token")
        expect(signed_out.locator('[data-action="logout"]')).to_have_count(0)
    finally:
        signed_out.context.close()


# ---------------------------------------------------------------- every page, photographed before the actions

#: Each page of the dashboard: its screenshot's name, and its path (``{job}``: the failed job).
PAGES = {
    "overview": "/",
    "queues": "/queues",
    "jobs": "/jobs",
    "job-detail": "/jobs/{job}",
    "dead-letters": "/dead",
    "workers": "/workers",
    "schedule": "/schedule",
}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders_for_a_signed_in_user_and_is_photographed(
    page: Page, stack: Stack, name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    visit(page, stack.url + PAGES[name].format(job=stack.failed))

    expect(page.locator("main h1").first).to_be_visible()
    path = screenshot_folder(tmp_path_factory.mktemp("screenshots")) / f"web-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, "an empty-looking screenshot"


def test_the_login_page_is_photographed(
    browser: Browser, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    signed_out = new_page(browser)
    try:
        visit(signed_out, f"{stack.url}/login")
        path: Path = screenshot_folder(tmp_path_factory.mktemp("screenshots")) / "web-login.png"
        signed_out.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5_000
    finally:
        signed_out.context.close()


# ---------------------------------------------------------------- the actions, checked where they take effect


def test_retry_on_a_failed_jobs_page_runs_it_again(page: Page, stack: Stack) -> None:
    assert stack.store.get(stack.failed).status == "failed"
    visit(page, f"{stack.url}/jobs/{stack.failed}")

    act(page, page, "retry")

    assert flash(page)
    # It fails for good again (permanent=True), but only after a second attempt.
    again = eventually(lambda: (job := stack.store.get(stack.failed)).attempts == 2 and job)
    assert again.status in ("queued", "running", "failed")
    assert eventually(lambda: stack.store.get(stack.failed).status == "failed")


def test_requeueing_a_dead_letter_group_shows_its_count_then_empties_it_and_runs_its_jobs(
    page: Page, stack: Stack
) -> None:
    group = set(stack.dead_group)
    visit(page, f"{stack.url}/dead")
    row = row_of(page, "requeue", "TransientError", has_not=("PermanentError",))

    act(page, row, "requeue")

    # A dry run first: the count of what would be requeued, and nothing has moved yet.
    expect(page.locator("main")).to_contain_text(re.compile(r"\b3\b"))
    assert group <= {letter.job_id for letter in list_dead(stack.settings, stack.db)}
    act(page, page, "confirm")

    assert flash(page)
    eventually(lambda: not group & {letter.job_id for letter in list_dead(stack.settings, stack.db)})
    for job_id in group:
        done = eventually(
            lambda job_id=job_id: (job := stack.store.get(job_id)).status == "succeeded" and job
        )
        assert done.attempts == 2


def test_a_paused_queue_keeps_new_jobs_ready_in_rabbitmq_until_it_is_resumed(
    page: Page, stack: Stack
) -> None:
    queue = stack.queue()
    visit(page, f"{stack.url}/queues")
    act(page, row_of(page, "pause", "default", has_not=("email", "images", "reports")), "pause")
    try:
        assert flash(page)
        assert paused_queues(stack) == [queue]
        # The worker noticed the pause once its consumer of the queue has let go (it checks the
        # paused queues each second; a loaded machine may take a few).
        eventually(lambda: consumer_count(queue) == 0, timeout=PAUSE_NOTICE_S)

        held = stack.client.enqueue("noop")
        eventually(lambda: message_count(queue) == 1)
        time.sleep(PAUSED_HOLD_S)
        assert message_count(queue) == 1
        assert stack.store.get(held.id).status == "queued"

        visit(page, f"{stack.url}/queues")
        act(page, row_of(page, "resume", "default", has_not=("email", "images", "reports")), "resume")
        assert flash(page)
    finally:
        _resume(stack)  # a failed test must not leave the module's queue paused
    assert held.wait(timeout=30) == {"attempt": 1, "slept": 0.0}
    assert paused_queues(stack) == []


def _resume(stack: Stack) -> None:
    """Resume the queue with the API's bearer token, so that a failed test leaves it running."""
    request = urllib.request.Request(
        f"{stack.url}/api/queues/default/resume",
        method="POST",
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    # Already resumed, or no such route yet: the assertions of the test say what failed.
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=10).close()


def test_cancel_asks_for_confirmation_and_cancels_only_then(page: Page, stack: Stack) -> None:
    visit(page, f"{stack.url}/jobs/{stack.delayed}")

    act(page, page, "cancel")

    expect(page.locator('[data-action="confirm"]')).to_be_visible()
    assert stack.store.get(stack.delayed).status == "queued", "the dry run changed the job"
    act(page, page, "confirm")
    assert flash(page)
    assert stack.store.get(stack.delayed).status == "cancelled"


# ---------------------------------------------------------------- without JavaScript


def test_the_jobs_page_has_its_table_in_the_html_without_javascript(browser: Browser, stack: Stack) -> None:
    plain = new_page(browser, javascript=False)
    try:
        # Its own queue: the session's other tests add jobs to the shared database meanwhile.
        visit(plain, f"{stack.url}/jobs?queue={stack.queue()}")

        table = plain.locator("table")
        expect(table.first).to_be_visible()
        html = plain.content()
        assert all(job_id in html for job_id in stack.succeeded), "the seeded jobs are not in the HTML"
    finally:
        plain.context.close()

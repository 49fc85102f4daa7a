"""Schedule files are validated as a whole; ticks follow cron, time zones, DST and intervals."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from console.exit_codes import EXIT_USAGE, exit_code
from jobs.errors import SettingsError
from jobs.schedule import runner
from jobs.schedule.cron import CronTiming, IntervalTiming, Timing, parse_timing, utc_iso
from jobs.schedule.runner import ON_TIME_GRACE, due_ticks
from jobs.schedule.spec import CatchUp, ScheduleEntry, load_schedule, parse_schedule
from jobs.settings import Settings
from tests.helpers import ROOT, run_cli

SETTINGS = Settings()
PARIS = ZoneInfo("Europe/Paris")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def parse(text: str) -> list[ScheduleEntry]:
    return list(parse_schedule(tomllib.loads(text), SETTINGS, source="test.toml").entries)


def entry(timing: Timing, catch_up: CatchUp = CatchUp.ALL) -> ScheduleEntry:
    return ScheduleEntry(name="e", kind="noop", timing=timing, catch_up=catch_up)


def ticks(timing: Timing, after: datetime, until: datetime) -> list[datetime]:
    """Every tick in (after, until], stepping with next_after."""
    found = []
    moment = timing.next_after(after)
    while moment <= until:
        found.append(moment)
        moment = timing.next_after(moment)
    return found


# ---------------------------------------------------------------- the file


def test_the_example_schedule_file_is_valid() -> None:
    schedule = load_schedule(ROOT / "deploy" / "schedule.example.toml", SETTINGS)

    summary = schedule.entries[0]
    assert schedule.names() == ["daily-summary", "canary"]
    assert summary.kind == "report"
    assert summary.payload["email_to"] == ["admins@example.com"]
    assert summary.catch_up is CatchUp.LATEST
    assert summary.options.max_retries == 2
    assert summary.timing.describe() == "0 6 * * * (Europe/Paris)"


def test_an_entry_needs_only_a_name_a_timing_and_a_kind() -> None:
    (only,) = parse('[[job]]\nname = "beat"\ncron = "@hourly"\nkind = "noop"\n')

    assert only.payload == {}
    assert only.catch_up is CatchUp.ALL
    assert only.options.max_retries is None
    assert only.idempotency_key("ns", utc("2026-11-30T06:00:00")) == "schedule:ns:beat:2026-11-30T06:00:00Z"


JOB = '[[job]]\nname = "nightly"\nkind = "noop"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (JOB + 'cron = "0 3 * * *"\ncrn = "x"\n', "job #1 'nightly': unknown key\\(s\\) crn"),
        (JOB + 'cron = "0 25 * * *"\n', "job #1 'nightly': cron '0 25 \\* \\* \\*': Bad hour"),
        (JOB + 'cron = "0 3 * *"\n', "4 fields; expected 5"),
        (JOB + 'cron = "0 0 30 2 *"\n', "Bad day-of-month"),
        (JOB + 'cron = "@fortnightly"\n', "unknown nickname"),
        (JOB + 'cron = "@daily"\nevery = "1h"\n', "exactly one of cron or every"),
        (JOB, "exactly one of cron or every"),
        (JOB + 'every = "1x"\n', "every '1x': expected a number and a unit"),
        (JOB + 'every = "0s"\n', "at least 1s"),
        (JOB + "every = 5\n", "every must be a string"),
        (JOB + 'every = "5s"\ntimezone = "Europe/Paris"\n', "timezone applies to cron only"),
        (JOB + 'cron = "@daily"\ntimezone = "Mars/Olympus"\n', "timezone 'Mars/Olympus': unknown"),
        (JOB + 'cron = "@daily"\ncatch_up = "some"\n', "catch_up must be one of all, latest, none"),
        (JOB + 'cron = "@daily"\nmax_retries = -1\n', "max_retries must be a whole number"),
        (JOB + 'cron = "@daily"\npriority = 300\n', "priority must be between 0 and 255"),
        (JOB + 'cron = "@daily"\npayload = { sleep = 99 }\n', "noop payload: sleep=99"),
        (JOB + 'cron = "@daily"\npayload = { at = 2026-11-01 }\n', "dates and times as quoted strings"),
        (JOB + 'cron = "@daily"\npayload = "sleep"\n', "payload must be a table"),
        (
            '[[job]]\nname = "m"\nkind = "email"\ncron = "@daily"\n'
            'payload = { to = "a@example.com", template = "welcome", context = { name = "A\\u0000" } }\n',
            "payload.context.name: contains a NUL character",
        ),
        (JOB + 'cron = "@daily"\nmax_retries = 2147483648\n', "max_retries must be between 0 and 2147483647"),
        ('[[job]]\nname = "x"\nkind = "sms"\ncron = "@daily"\n', "job #1 'x': unknown job kind 'sms'"),
        ('[[job]]\nkind = "noop"\ncron = "@daily"\n', "job #1: name is required"),
        ('[[job]]\nname = "a b"\nkind = "noop"\ncron = "@daily"\n', "name must be 1-100 letters"),
        (
            JOB + 'cron = "@daily"\n' + JOB + 'cron = "@hourly"\n',
            "job #2 'nightly': the name is already used",
        ),
        ('[[job]]\nname = "r"\nkind = "report"\ncron = "@daily"\npayload = { report = "nope" }\n', "nope"),
        ("", "no \\[\\[job\\]\\] entries"),
        ('[jobs]\nname = "x"\n', "unknown top-level key\\(s\\) jobs"),
    ],
)
def test_a_bad_entry_is_one_settings_error_naming_the_file_and_the_entry(body: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        parse(body)

    assert str(raised.value).startswith("schedule test.toml: ")
    assert exit_code(raised.value) == EXIT_USAGE


def test_a_file_that_is_not_toml_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text("[[job]\nname = ", encoding="utf-8")

    with pytest.raises(SettingsError, match=f"schedule {path}: not valid TOML"):
        load_schedule(path, SETTINGS)


def test_the_commands_exit_with_code_2_on_a_bad_schedule_before_touching_any_service(tmp_path: Path) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text(JOB + 'cron = "61 * * * *"\n', encoding="utf-8")
    # Nothing listens on port 1: reaching a service would be exit code 3.
    env = {"PATH": "/usr/bin:/bin", "CONVEYOR_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}

    for args in (["scheduler"], ["schedule", "list"]):
        result = run_cli(*args, "--schedule", str(path), env=env)
        assert result.returncode == 2, result.stderr
        assert "job #1 'nightly': cron '61 * * * *': Bad minute" in result.stderr
        assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- cron ticks


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("0 6 * * *", "2026-11-29T07:00:00", "2026-11-30T06:00:00"),
        ("0 6 * * *", "2026-11-30T05:59:59.999", "2026-11-30T06:00:00"),
        ("0 6 * * *", "2026-11-30T06:00:00", "2026-12-01T06:00:00"),
        ("@hourly", "2026-11-30T06:00:00", "2026-11-30T07:00:00"),
        ("@daily", "2026-11-30T06:00:00", "2026-12-01T00:00:00"),
        ("@weekly", "2026-11-30T06:00:00", "2026-12-06T00:00:00"),
        ("@monthly", "2026-11-30T06:00:00", "2026-12-01T00:00:00"),
        ("*/15 * * * * *", "2026-11-30T06:00:07", "2026-11-30T06:00:15"),
        ("30 9 * * MON-FRI", "2026-11-27T10:00:00", "2026-11-30T09:30:00"),
    ],
)
def test_the_next_tick_follows_the_cron_expression_in_utc(cron: str, after: str, expected: str) -> None:
    assert parse_timing(cron, None, None).next_after(utc(after)) == utc(expected)


def test_a_time_zone_keeps_the_local_time_across_summer_and_winter() -> None:
    timing = parse_timing("0 6 * * *", None, "Europe/Paris")

    assert timing.next_after(utc("2026-01-15T00:00:00")) == utc("2026-01-15T05:00:00")
    assert timing.next_after(utc("2026-07-15T00:00:00")) == utc("2026-07-15T04:00:00")


def test_a_local_time_skipped_by_the_spring_change_runs_once_just_after_the_gap() -> None:
    timing = parse_timing("30 2 * * *", None, "Europe/Paris")

    day = ticks(timing, utc("2026-03-28T12:00:00"), utc("2026-03-29T12:00:00"))

    assert [t.astimezone(PARIS).strftime("%H:%M %Z") for t in day] == ["03:00 CEST"]


def test_a_local_time_repeated_by_the_autumn_change_runs_once() -> None:
    timing = parse_timing("30 2 * * *", None, "Europe/Paris")

    day = ticks(timing, utc("2026-10-24T12:00:00"), utc("2026-10-25T12:00:00"))

    assert [t.astimezone(PARIS).strftime("%H:%M %Z") for t in day] == ["02:30 CEST"]


@pytest.mark.parametrize(
    "cron", ["30 2 * * *", "0 * * * *", "*/20 * * * *", "15 1-3 * * *", "0 */10 * * * *"]
)
@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25", "2026-11-30"])
def test_counting_back_from_now_finds_the_ticks_counting_forward_finds(cron: str, day: str) -> None:
    # The runner counts back from now (cheap after a long downtime); both ways must agree,
    # also on DST days, or a tick would be enqueued twice or never.
    timing = parse_timing(cron, None, "Europe/Paris")
    after, until = utc(f"{day}T00:00:00") - timedelta(hours=3), utc(f"{day}T06:00:00")

    forward = ticks(timing, after, until)
    backward, more = timing.latest(after, until, limit=1000)

    assert backward == forward
    assert not more
    assert len(set(forward)) == len(forward)


def test_latest_counts_until_itself_but_not_after_and_says_when_it_left_ticks_out() -> None:
    timing = CronTiming.parse("* * * * *", None)
    after, until = utc("2026-11-30T06:00:00"), utc("2026-11-30T06:05:00")

    assert timing.latest(after, until, 10) == ([utc(f"2026-11-30T06:0{m}:00") for m in range(1, 6)], False)
    assert timing.latest(after, until, 2) == ([utc("2026-11-30T06:04:00"), utc("2026-11-30T06:05:00")], True)


# ---------------------------------------------------------------- intervals


def test_an_interval_ticks_on_multiples_of_itself_since_the_epoch() -> None:
    second = IntervalTiming.parse("1s")
    hour = IntervalTiming.parse("1h")

    assert second.next_after(utc("2026-11-30T06:00:00.5")) == utc("2026-11-30T06:00:01")
    assert second.next_after(utc("2026-11-30T06:00:01")) == utc("2026-11-30T06:00:02")
    assert hour.next_after(utc("2026-11-30T06:59:59")) == utc("2026-11-30T07:00:00")
    assert IntervalTiming.parse("90m").next_after(utc("2026-11-30T00:00:00")) == utc("2026-11-30T01:30:00")
    assert second.describe() == "every 1s"


def test_an_interval_lists_its_latest_ticks_like_stepping_forward() -> None:
    timing = IntervalTiming.parse("10s")
    after, until = utc("2026-11-30T06:00:00"), utc("2026-11-30T06:01:05")

    latest, more = timing.latest(after, until, 100)

    assert latest == ticks(timing, after, until)
    assert len(latest) == 6
    assert not more
    assert timing.latest(after, until, 2) == (latest[-2:], True)
    assert timing.latest(until, until, 5) == ([], False)


def test_a_tick_is_written_as_utc_iso_with_a_z() -> None:
    assert utc_iso(datetime(2026, 11, 30, 7, 0, tzinfo=PARIS)) == "2026-11-30T06:00:00Z"


# ---------------------------------------------------------------- catch-up rules


def test_catch_up_all_enqueues_every_missed_tick_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "MAX_CATCH_UP", 5)
    timing = IntervalTiming.parse("1s")
    last, now = utc("2026-11-30T06:00:00"), utc("2026-11-30T06:00:03.2")

    assert due_ticks(entry(timing), last, now) == (
        [last + timedelta(seconds=s) for s in (1, 2, 3)],
        now.replace(microsecond=0),
        False,
    )

    due = due_ticks(entry(timing), last, last + timedelta(seconds=60))
    assert due.ticks == [last + timedelta(seconds=s) for s in range(56, 61)]
    assert due.skipped


def test_catch_up_latest_enqueues_only_the_most_recent_missed_tick() -> None:
    timing = IntervalTiming.parse("1m")
    last = utc("2026-11-30T06:00:00")

    due = due_ticks(entry(timing, CatchUp.LATEST), last, utc("2026-11-30T06:10:30"))

    assert due.ticks == [utc("2026-11-30T06:10:00")]
    assert due.skipped
    assert not due_ticks(entry(timing, CatchUp.LATEST), last, utc("2026-11-30T06:01:30")).skipped


def test_catch_up_none_skips_ticks_later_than_the_grace() -> None:
    timing = IntervalTiming.parse("30s")
    last = utc("2026-11-30T06:00:00")
    now = last + timedelta(minutes=5, seconds=1)

    due = due_ticks(entry(timing, CatchUp.NONE), last, now)

    assert due.ticks == [t for t in ticks(timing, last, now) if t >= now - ON_TIME_GRACE]
    assert len(due.ticks) == 2
    assert due.newest == utc("2026-11-30T06:05:00")
    assert due.skipped
    assert due_ticks(entry(timing, CatchUp.NONE), last, last + timedelta(seconds=31)).ticks == [
        last + timedelta(seconds=30)
    ]


def test_nothing_is_due_before_the_next_tick() -> None:
    last = utc("2026-11-30T06:00:00")

    assert due_ticks(entry(IntervalTiming.parse("1m")), last, last + timedelta(seconds=59)) == (
        [],
        None,
        False,
    )

"""Periodic jobs: a schedule file of cron entries, and the scheduler replicas that enqueue them.

``spec`` reads and validates the file, ``cron`` computes ticks, ``leader`` elects the replica
that enqueues (a PostgreSQL advisory lock), ``ticks`` keeps each entry's last tick, ``runner``
is the loop, ``status`` what ``conveyor schedule list`` shows.
"""

from jobs.schedule.runner import Scheduler
from jobs.schedule.spec import CatchUp, Schedule, ScheduleEntry, load_schedule

__all__ = ["CatchUp", "Schedule", "ScheduleEntry", "Scheduler", "load_schedule"]

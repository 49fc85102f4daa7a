"""Retention (``CONVEYOR_RETENTION_DAYS``, per kind ``CONVEYOR_RETENTION_DAYS_<KIND>``): the
scheduler's leader deletes finished jobs older than their kind's retention, with their attempts,
artifacts and the artifacts' files, in batches, at start and then hourly.

Each run that deletes something logs one line of counts and writes one audit row (source
``scheduler``). Only the namespace's own queues are touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobs.admin.audit import Auditor
from jobs.admin.files import outbox_folder, remove_email_copies, unlink_artifact_files
from jobs.admin.prune import pruned_batches
from jobs.errors import SettingsError
from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.status import FINAL_STATUSES
from jobs.store import Database
from jobs.store.maintenance import PruneScope, PruneStore

logger = logging.getLogger("conveyor.retention")

#: Batches one run deletes at most: a scheduler round stays short; the rest waits for the next round.
MAX_BATCHES_PER_RUN = 20


@dataclass(frozen=True)
class RetentionRule:
    """Jobs of ``kind`` (``None``: every kind without a rule of its own) are kept ``days`` days."""

    kind: str | None
    days: int


@dataclass
class RetentionRun:
    jobs: int = 0
    artifacts: int = 0
    files: int = 0
    #: Whether a rule had more to delete than one run may (the next round goes on at once).
    more: bool = False


def retention_rules(settings: Settings) -> list[RetentionRule]:
    """The rules the settings ask for (none: retention is off).

    Raises:
        SettingsError: a ``CONVEYOR_RETENTION_DAYS_<KIND>`` names no registered kind.
    """
    rules = [RetentionRule(kind, days) for kind, days in settings.retention_days_by_kind]
    unknown = [rule.kind for rule in rules if rule.kind not in KINDS]
    if unknown:
        raise SettingsError(
            f"CONVEYOR_RETENTION_DAYS_{str(unknown[0]).upper()}: no job kind {unknown[0]!r} "
            f"(known: {', '.join(sorted(KINDS))})"
        )
    if settings.retention_days is not None:
        rules.append(RetentionRule(None, settings.retention_days))
    return rules


class Retention:
    """Applies the retention rules of one namespace."""

    def __init__(self, settings: Settings, db: Database, auditor: Auditor) -> None:
        self.rules = retention_rules(settings)
        self.store = PruneStore(db)
        self.auditor = auditor
        self.namespace = settings.namespace
        self.outbox = outbox_folder(settings)  # the .eml copies of CONVEYOR_SMTP_URL=file://DIR

    def run(self, now: datetime, max_batches: int = MAX_BATCHES_PER_RUN) -> RetentionRun:
        """Delete what is past its retention at ``now`` (at most ``max_batches`` batches per rule).

        Raises:
            ServiceUnavailable: the database cannot be reached (the batches done stay done).
        """
        done = RetentionRun()
        statuses = [s.value for s in FINAL_STATUSES]
        with_rules = tuple(rule.kind for rule in self.rules if rule.kind is not None)
        per_rule: dict[str, int] = {}
        for rule in self.rules:
            scope = PruneScope(
                kind=rule.kind,
                not_kinds=() if rule.kind is not None else with_rules,
                queue_prefix=f"{self.namespace}.",
                whole_days=True,
            )
            cutoff = now - timedelta(days=rule.days)
            deleted = self._apply(cutoff, statuses, scope, max_batches, done)
            if deleted:
                per_rule[rule.kind or "*"] = deleted
        if done.jobs:
            logger.info(
                "retention: deleted %d finished job(s), %d artifact(s), %d file(s) in namespace %s (%s)",
                done.jobs,
                done.artifacts,
                done.files,
                self.namespace,
                ", ".join(f"{kind}: {count}" for kind, count in per_rule.items()),
            )
            self.auditor.record(
                "retention",
                count=done.jobs,
                selection={rule.kind or "*": f"{rule.days}d" for rule in self.rules},
                details={"artifacts": done.artifacts, "files": done.files, "per_kind": per_rule},
            )
        return done

    def _apply(
        self, cutoff: datetime, statuses: list[str], scope: PruneScope, max_batches: int, done: RetentionRun
    ) -> int:
        deleted = 0
        batches = pruned_batches(self.store, cutoff, statuses, scope, with_ids=self.outbox is not None)
        for _ in range(max_batches):
            if (batch := next(batches, None)) is None:
                return deleted
            deleted += batch.jobs
            done.jobs += batch.jobs
            done.artifacts += batch.artifacts
            done.files += unlink_artifact_files(batch.files)  # after the batch's commit
            done.files += remove_email_copies(self.outbox, batch.job_ids)
        done.more = True
        return deleted

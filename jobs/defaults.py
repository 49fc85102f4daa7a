"""Documented defaults. Each ``DEFAULT_*`` names its unit."""

from __future__ import annotations

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SMTP_URL = "file://./outbox"
DEFAULT_NAMESPACE = "conveyor"

#: Seconds between AMQP heartbeats; a dead peer is noticed after about two of them.
DEFAULT_BROKER_HEARTBEAT = 30
#: Seconds a connection attempt to any service may take before it counts as unreachable.
DEFAULT_CONNECT_TIMEOUT = 5

#: Quorum queues: deliveries of one message before RabbitMQ dead-letters it.
DEFAULT_DELIVERY_LIMIT = 20
#: Seconds a producer retries one enqueue across a RabbitMQ restart before raising.
DEFAULT_ENQUEUE_TIMEOUT = 30.0
#: Seconds a worker process may fail to consume before it exits to be restarted.
DEFAULT_CONSUME_TIMEOUT = 120.0
#: Seconds between two sweeps for orphaned jobs (each sweep needs two sightings before acting).
DEFAULT_RECONCILE_INTERVAL = 30.0
#: Seconds between two polls for delayed messages that have come due.
DELAYED_POLL_INTERVAL = 0.5

#: Worker processes and threads per process started by ``conveyor worker``.
DEFAULT_WORKER_PROCESSES = 2
DEFAULT_WORKER_THREADS = 8
#: Seconds ``conveyor worker`` waits for in-flight jobs after SIGTERM before giving up on them
#: (they are redelivered, never lost).
DEFAULT_SHUTDOWN_TIMEOUT = 600

#: Seconds between two polls of a job's row in ``Job.wait`` (it backs off up to the maximum).
DEFAULT_WAIT_POLL_MIN = 0.02
DEFAULT_WAIT_POLL_MAX = 0.5

#: Seconds: the longest sleep a ``noop`` job may ask for.
NOOP_MAX_SLEEP = 60.0

#: Seconds a Redis command may take before Conveyor goes on without Redis (fail open).
DEFAULT_REDIS_TIMEOUT = 1.0

#: Email: sender, recipients per message, SMTP timeout (seconds), idle connection lifetime (seconds).
DEFAULT_EMAIL_FROM = "Conveyor <noreply@localhost>"
DEFAULT_EMAIL_MAX_RECIPIENTS = 50
DEFAULT_SMTP_TIMEOUT = 30.0
DEFAULT_SMTP_IDLE_TIMEOUT = 30.0
#: Bytes: the largest email (all attachments included) Conveyor will build.
DEFAULT_EMAIL_MAX_BYTES = 25 * 1024 * 1024

#: Images: the largest input in bytes and in pixels (checked from the header, before decoding),
#: and the seconds one image job may run.
DEFAULT_IMAGE_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_IMAGE_MAX_PIXELS = 100_000_000
DEFAULT_IMAGE_TIME_LIMIT = 60.0
#: Images: the most pixels any image an operation makes may have (every intermediate
#: and every output; 10000×10000, the largest box an operation may ask for), and the most bytes
#: one encoded output may take.
DEFAULT_IMAGE_MAX_OUTPUT_PIXELS = 100_000_000
DEFAULT_IMAGE_MAX_OUTPUT_BYTES = 100 * 1024 * 1024

#: Seconds an identical report (name, params, formats) reuses the artifacts of the previous run.
DEFAULT_REPORT_CACHE_TTL = 600
#: Where artifacts' bytes are written: a folder relative to the working directory.
DEFAULT_ARTIFACT_URL = "file:.conveyor/artifacts"
#: Bytes read or written at a time when artifacts stream.
ARTIFACT_CHUNK = 1024 * 1024

# Untrusted input: payloads, delays and backoffs.
#: Bytes: the largest payload (its compact JSON in UTF-8) a job may carry; big data goes in artifacts.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: Bytes: the most ``CONVEYOR_MAX_PAYLOAD_BYTES`` may be set to (PostgreSQL's ``jsonb`` holds < 256 MiB).
MAX_PAYLOAD_BYTES_LIMIT = 256 * 1024 * 1024
#: Bytes a message body may carry beyond its payload (the envelope, options, a retry's traceback).
MESSAGE_ENVELOPE_BYTES = 256 * 1024
#: Seconds: the longest ``delay`` an enqueue takes (ten years; beyond, a date overflows).
MAX_DELAY = 10 * 365 * 86400.0
#: Seconds: the longest ``min_backoff``/``max_backoff`` a job may ask for (30 days).
MAX_BACKOFF = 30 * 86400.0
# Signed messages.
#: Characters: the shortest ``CONVEYOR_SIGNING_KEY`` accepted (HMAC-SHA256 wants 32 bytes of secret).
MIN_SIGNING_KEY_LENGTH = 32

#: Seconds a job runs before its ``running`` state is written (``CONVEYOR_RUNNING_AFTER``).
DEFAULT_RUNNING_AFTER = 0.5

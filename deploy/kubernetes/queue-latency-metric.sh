#!/usr/bin/env bash
# queue-latency-metric.sh — how long the oldest waiting job has waited, in seconds: the signal
# to scale Conveyor workers on.
#
# Usage: queue-latency-metric.sh [--json] [QUEUE...]
#   QUEUE   a queue (email, images, reports, default, or the full conveyor.email) or a job
#           kind (email, report, image, noop); default: every queue of the namespace.
#   --json  print {"oldest_wait_seconds": N, "queues": [...]} instead of the bare number,
#           for KEDA's metrics-api scaler (see queue-metrics.yaml).
#
# Why this number: queue length says how much work waits, not whether users notice. The age
# of the oldest job that is due and not yet started is the queue's latency: when it grows
# past what you promise (30 s for email, say), add replicas; when it stays near 0, replicas
# are idle. Feed it to an autoscaler with metricType Value (HPA then scales replicas in
# proportion to latency / target), or alert on it.
#
# It runs `conveyor queues --json` (RabbitMQ and PostgreSQL, configured by the same
# CONVEYOR_* variables as the workers) and needs jq. A queue with nothing waiting counts as 0.
# Delayed jobs count only once due, but from their enqueue time, so a job enqueued with a
# long delay shows that delay as its age until a worker starts it.
#
# Exit status: 0; 2 for bad usage or an unknown queue; otherwise conveyor's own (3: a service
# is unreachable). On any failure nothing is printed on stdout: an autoscaler must read "no
# value", never a made-up 0 that would scale workers down during an outage.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

as_json=false
queues=()
for arg in "$@"; do
    case "$arg" in
        --json) as_json=true ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "queue-latency-metric: unknown option $arg (try --help)" >&2; exit 2 ;;
        *) queues+=("$arg") ;;
    esac
done

if ! command -v jq >/dev/null 2>&1; then
    echo "queue-latency-metric: jq is required (apt-get install jq)" >&2
    exit 2
fi

# set -e: when conveyor fails (exit 3 for an unreachable service), so does this script.
listing=$(conveyor queues --json)

# shellcheck disable=SC2016  # $q, $rows, $ARGS are jq variables, not the shell's
program='
def wanted($q): .queue == $q or (.queue | endswith("." + $q)) or any((.kinds // [])[]; . == $q);
. as $all
| $ARGS.positional as $names
| [$names[] as $q | select([$all[] | wanted($q)] | any | not) | $q] as $unknown
| if ($unknown | length) > 0 then
      error("unknown queue(s): \($unknown | join(", ")); known: \([$all[].queue] | join(", "))")
  else . end
| (if ($names | length) == 0 then $all else [$all[] | select(. as $row | any($names[]; . as $q | $row | wanted($q)))] end) as $rows
| ([$rows[] | .oldest_wait_seconds // 0] | max // 0) as $age
| if $json then {oldest_wait_seconds: $age, queues: [$rows[].queue]} else $age end
'
if ! result=$(jq -c --argjson json "$as_json" "$program" --args ${queues[@]+"${queues[@]}"} <<<"$listing"); then
    echo "queue-latency-metric: unexpected output from \`conveyor queues --json\`, or an unknown queue (above)" >&2
    exit 2
fi
printf '%s\n' "$result"

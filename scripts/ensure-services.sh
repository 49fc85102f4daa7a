#!/usr/bin/env bash
# ensure-services.sh — make sure the services the test suite needs answer on loopback:
#   PostgreSQL 127.0.0.1:5432 (user postgres, trust auth)
#   Redis      127.0.0.1:6379
#   RabbitMQ   127.0.0.1:5672 (guest/guest)
# Starts a service when it does not answer, installs it with apt-get when its
# server binary is missing. Idempotent; returns in a fraction of a second when
# everything already answers. Only 127.0.0.1 is ever contacted.
# Last, ensure-browser.sh installs Debian's Chromium for the dashboard's browser tests.
set -euo pipefail

# rabbitmq-server & co. live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly HOST=127.0.0.1
readonly PG_PORT=5432 REDIS_PORT=6379 AMQP_PORT=5672
readonly PG_TIMEOUT=30 REDIS_TIMEOUT=10 RABBIT_TIMEOUT=90

log() { printf 'ensure-services: %s\n' "$*"; }
die() { printf 'ensure-services: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command with root privileges: directly when root, via sudo when available.
priv() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- probes ----
tcp_open() { # tcp_open PORT — does 127.0.0.1:PORT accept a TCP connection?
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -h "$HOST" -p "$PG_PORT" -q -t 2
    else
        tcp_open "$PG_PORT"
    fi
}

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(timeout 2 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
    else
        tcp_open "$REDIS_PORT"
    fi
}

rabbit_answers() { tcp_open "$AMQP_PORT"; }

# Slow (~1-2 s): only used while waiting for a node we started.
rabbit_node_up() { priv rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

rabbit_ready() { rabbit_node_up && rabbit_answers; }

# ------------------------------------------------------------- install -----
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "$1 is not installed and apt-get is unavailable; install it manually"
    log "installing $*…"
    if [[ $APT_UPDATED -eq 0 ]]; then
        priv apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    priv env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" \
        || die "apt-get install -y $* failed"
}

# wait_for NAME TIMEOUT LOGFILE PROBE — poll PROBE until it succeeds or TIMEOUT s pass.
wait_for() {
    local name=$1 limit=$2 logfile=$3 probe=$4 start=$SECONDS
    while ! "$probe"; do
        if (( SECONDS - start >= limit )); then
            die "$name did not answer on $HOST within ${limit} s; see $logfile"
        fi
        sleep 0.5
    done
    log "$name ready ($((SECONDS - start)) s)"
}

# ------------------------------------------------------------ PostgreSQL ----
pg_set_trust() { # rewrite 127.0.0.1/32 and ::1/128 host lines to trust (fresh clusters only)
    local hba=$1
    priv sed -i -E \
        's#^([[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' \
        "$hba"
    if ! priv grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        # No matching line to rewrite: put one in front (first match wins).
        priv sed -i '1i host    all    postgres    127.0.0.1/32    trust' "$hba"
    fi
    log "PostgreSQL: set trust auth for 127.0.0.1/::1 in $hba"
}

ensure_postgres() {
    pg_answers && return 0

    local fresh=0 ver
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        apt_install postgresql
        fresh=1
    fi

    # shellcheck disable=SC2012  # version directory names are plain
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
    # shellcheck disable=SC2012
    [[ -n $ver ]] || ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
    [[ -n $ver ]] || die "PostgreSQL installed but no server version found under /usr/lib/postgresql"

    if [[ ! -d /etc/postgresql/$ver/main ]]; then
        log "PostgreSQL: creating cluster $ver/main…"
        priv pg_createcluster -p "$PG_PORT" "$ver" main || die "pg_createcluster $ver main failed"
        fresh=1
    fi

    local logfile=/var/log/postgresql/postgresql-$ver-main.log
    if (( fresh )); then pg_set_trust "/etc/postgresql/$ver/main/pg_hba.conf"; fi

    # pg_ctlcluster status: 0 = running, 3 = not running.
    if priv pg_ctlcluster "$ver" main status >/dev/null 2>&1; then
        # Already running (e.g. started by the package's postinst): apply the new hba.
        if (( fresh )); then priv pg_ctlcluster --skip-systemctl-redirect "$ver" main reload; fi
        pg_answers && return 0
        log "waiting for PostgreSQL $ver/main…"
    else
        log "starting PostgreSQL $ver/main…"
        priv pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
            || die "PostgreSQL $ver/main failed to start; see $logfile"
    fi
    wait_for PostgreSQL "$PG_TIMEOUT" "$logfile" pg_answers
}

# ----------------------------------------------------------------- Redis ----
ensure_redis() {
    redis_answers && return 0

    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
        redis_answers && return 0   # the package may have started it
    fi

    local logfile=/var/log/redis/ci.log
    log "starting Redis…"
    priv mkdir -p /var/lib/redis /var/log/redis
    priv redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile "$logfile" \
        || die "redis-server failed to start; see $logfile"
    wait_for Redis "$REDIS_TIMEOUT" "$logfile" redis_answers
}

# -------------------------------------------------------------- RabbitMQ ----
rabbit_logfile() {
    local f newest=""
    for f in /var/log/rabbitmq/rabbit@*.log; do
        [[ -e $f && $f != *_upgrade.log ]] || continue
        [[ -z $newest || $f -nt $newest ]] && newest=$f
    done
    printf '%s' "${newest:-/var/log/rabbitmq/}"
}

ensure_rabbitmq() {
    rabbit_answers && return 0

    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi

    if rabbit_node_up; then
        # Node already running (e.g. started by postinst, or still booting): just wait for AMQP.
        log "waiting for RabbitMQ…"
    else
        log "starting RabbitMQ…"
        priv rabbitmq-server -detached \
            || die "rabbitmq-server -detached failed; see $(rabbit_logfile)"
    fi
    local start=$SECONDS
    while ! rabbit_ready; do
        if (( SECONDS - start >= RABBIT_TIMEOUT )); then
            die "RabbitMQ did not answer on $HOST:$AMQP_PORT within ${RABBIT_TIMEOUT} s; see $(rabbit_logfile)"
        fi
        sleep 1
    done
    log "RabbitMQ ready ($((SECONDS - start)) s)"
}

readonly MANAGEMENT_PORT=15672

# `conveyor queues` reads unacknowledged counts and rates from the management API; its tests need it.
ensure_rabbitmq_management() {
    tcp_open "$MANAGEMENT_PORT" && return 0
    log "enabling the RabbitMQ management plugin…"
    priv rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null \
        || die "rabbitmq-plugins enable rabbitmq_management failed; see $(rabbit_logfile)"
    local start=$SECONDS
    until tcp_open "$MANAGEMENT_PORT"; do
        if (( SECONDS - start >= 60 )); then
            die "the RabbitMQ management API did not answer on $HOST:$MANAGEMENT_PORT within 60 s"
        fi
        sleep 1
    done
    log "RabbitMQ management API ready ($((SECONDS - start)) s)"
}

ensure_postgres
ensure_redis
ensure_rabbitmq
ensure_rabbitmq_management
log "PostgreSQL, Redis, RabbitMQ (with its management API) answer on $HOST"
# The dashboard's browser tests (tests/browser.py) drive Debian's Chromium; never started here.
bash "$(dirname "${BASH_SOURCE[0]}")/ensure-browser.sh"

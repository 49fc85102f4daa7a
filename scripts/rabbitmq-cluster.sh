#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, beside (never instead of) the machine's own broker.
#
#   scripts/rabbitmq-cluster.sh start  [DIR]   start the nodes that are down, join them (idempotent)
#   scripts/rabbitmq-cluster.sh stop   [DIR]   stop this cluster's nodes (and only them)
#   scripts/rabbitmq-cluster.sh status [DIR]   each node: running or not, and its PID
#   scripts/rabbitmq-cluster.sh pid NODE [DIR] the PID of one node's Erlang VM (a, b or c)
#   scripts/rabbitmq-cluster.sh urls   [DIR]   CONVEYOR_BROKER_URL and CONVEYOR_RABBITMQ_API_URL
#
# Nodes conveyor-a@localhost, conveyor-b@localhost, conveyor-c@localhost listen for AMQP on
# 5682, 5683, 5684, for the management API on 15682-15684, and for Erlang distribution on
# 25682-25684. Each has its own data, log and config files under DIR (default
# ${TMPDIR:-/tmp}/conveyor-rabbitmq-cluster); they share an Erlang cookie kept in DIR, and the
# machine's epmd. Ports can be moved with CLUSTER_PORT_BASE (AMQP port of node a).
set -euo pipefail

COMMAND="${1:-status}"
if [[ "$COMMAND" == pid ]]; then
    PID_NODE="${2:?pid needs a node: a, b or c}"
    DIR="${3:-${TMPDIR:-/tmp}/conveyor-rabbitmq-cluster}"
else
    DIR="${2:-${TMPDIR:-/tmp}/conveyor-rabbitmq-cluster}"
fi
PORT_BASE="${CLUSTER_PORT_BASE:-5682}"
NODES=(a b c)
RABBIT_BIN=/usr/lib/rabbitmq/bin
START_TIMEOUT=120

node_name() { echo "conveyor-$1@localhost"; }
node_index() { case "$1" in a) echo 0 ;; b) echo 1 ;; c) echo 2 ;; *) echo "unknown node $1" >&2; exit 2 ;; esac; }
amqp_port() { echo $((PORT_BASE + $(node_index "$1"))); }
api_port() { echo $((PORT_BASE + 10000 + $(node_index "$1"))); }
dist_port() { echo $((PORT_BASE + 20000 + $(node_index "$1"))); }

# The environment of one node's server and of the rabbitmqctl calls that address it. HOME holds
# the shared cookie; the env file replaces /etc/rabbitmq/rabbitmq-env.conf (the main broker's).
node_env() {
    local node="$1" home="$DIR/$1"
    echo "HOME=$DIR"
    echo "RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf"
    echo "RABBITMQ_NODENAME=$(node_name "$node")"
    echo "RABBITMQ_USE_LONGNAME=false"
    echo "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
    echo "RABBITMQ_NODE_PORT=$(amqp_port "$node")"
    echo "RABBITMQ_DIST_PORT=$(dist_port "$node")"
    echo "RABBITMQ_MNESIA_BASE=$home/mnesia"
    echo "RABBITMQ_LOG_BASE=$home/log"
    echo "RABBITMQ_CONFIG_FILE=$home/rabbitmq.conf"
    echo "RABBITMQ_ADVANCED_CONFIG_FILE=$home/advanced.config"
    echo "RABBITMQ_ENABLED_PLUGINS_FILE=$home/enabled_plugins"
    echo "RABBITMQ_PLUGINS_EXPAND_DIR=$home/plugins-expand"
    # One scheduler and no busy-waiting: three nodes share a small machine with other work.
    echo "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"
}

in_node_env() {
    local node="$1"
    shift
    local -a vars
    mapfile -t vars < <(node_env "$node")
    env "${vars[@]}" "$@"
}

ctl() {
    local node="$1"
    shift
    in_node_env "$node" "$RABBIT_BIN/rabbitmqctl" -q -n "$(node_name "$node")" "$@"
}

prepare() {
    mkdir -p "$DIR"
    if [[ ! -s "$DIR/.erlang.cookie" ]]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F >"$DIR/.erlang.cookie")
    fi
    chmod 400 "$DIR/.erlang.cookie"
    echo "ERL_EPMD_ADDRESS=127.0.0.1" >"$DIR/rabbitmq-env.conf"
    local node
    for node in "${NODES[@]}"; do
        mkdir -p "$DIR/$node/mnesia" "$DIR/$node/log"
        cat >"$DIR/$node/rabbitmq.conf" <<EOF
listeners.tcp.default = $(amqp_port "$node")
management.tcp.port = $(api_port "$node")
management.tcp.ip = 127.0.0.1
loopback_users.guest = true
cluster_partition_handling = pause_minority
EOF
        echo "[]." >"$DIR/$node/advanced.config"
        echo "[rabbitmq_management]." >"$DIR/$node/enabled_plugins"
    done
}

# The Erlang VM of one node: the beam.smp process whose environment names this node and DIR.
node_pid() {
    local pid name="RABBITMQ_NODENAME=$(node_name "$1")" base="RABBITMQ_MNESIA_BASE=$DIR/$1/mnesia"
    for pid in $(pgrep -x beam.smp); do
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -e "$name" && \
            tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -e "$base"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

is_running() { ctl "$1" status >/dev/null 2>&1; }

launch() {
    local node="$1"
    if node_pid "$node" >/dev/null; then
        return 0
    fi
    # setsid: the node outlives this script and the terminal that ran it.
    in_node_env "$node" setsid "$RABBIT_BIN/rabbitmq-server" >>"$DIR/$node/log/console.log" 2>&1 </dev/null &
}

await_node() {
    local node="$1" deadline=$((SECONDS + START_TIMEOUT))
    # await_startup needs the Erlang node to answer at all: poll until it does.
    until ctl "$node" ping >/dev/null 2>&1; do
        ((SECONDS < deadline)) || break
        sleep 0.5
    done
    if ! ctl "$node" await_startup --timeout "$START_TIMEOUT" >/dev/null 2>&1; then
        echo "node $(node_name "$node") did not start; see $DIR/$node/log" >&2
        tail -n 20 "$DIR/$node/log/console.log" >&2 || true
        return 1
    fi
}

# Whether $1's view of the cluster lists node a among its running members.
is_clustered() {
    ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "$(node_name a)"
}

join() {
    local node="$1"
    if is_clustered "$node"; then
        return 0
    fi
    {
        ctl "$node" stop_app
        ctl "$node" reset
        ctl "$node" join_cluster "$(node_name a)"
        ctl "$node" start_app
    } >>"$DIR/$node/log/console.log" 2>&1
}

start() {
    local began node
    began="$(date +%s.%N)"
    prepare
    for node in "${NODES[@]}"; do launch "$node"; done
    for node in "${NODES[@]}"; do await_node "$node"; done
    for node in b c; do join "$node"; done
    for node in "${NODES[@]}"; do ctl "$node" await_startup --timeout "$START_TIMEOUT" >/dev/null; done
    echo "cluster up in $(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s: $(urls | head -n1)"
}

stop() {
    local node pid
    for node in c b a; do
        pid="$(node_pid "$node" || true)"
        [[ -n "$pid" ]] || continue
        ctl "$node" stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        echo "stopped $(node_name "$node") (pid $pid)"
    done
}

status() {
    local node pid
    for node in "${NODES[@]}"; do
        pid="$(node_pid "$node" || true)"
        if [[ -n "$pid" ]] && is_running "$node"; then
            echo "$(node_name "$node") running pid=$pid amqp=$(amqp_port "$node") api=$(api_port "$node")"
        else
            echo "$(node_name "$node") down"
        fi
    done
}

urls() {
    local node amqp="" api=""
    for node in "${NODES[@]}"; do
        amqp+="${amqp:+,}amqp://guest:guest@127.0.0.1:$(amqp_port "$node")/%2F"
        api+="${api:+,}http://guest:guest@127.0.0.1:$(api_port "$node")"
    done
    echo "CONVEYOR_BROKER_URL=$amqp"
    echo "CONVEYOR_RABBITMQ_API_URL=$api"
}

case "$COMMAND" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    urls) urls ;;
    pid) node_pid "$PID_NODE" ;;
    *) echo "usage: $0 start|stop|status|urls [DIR] | pid NODE [DIR]" >&2; exit 2 ;;
esac

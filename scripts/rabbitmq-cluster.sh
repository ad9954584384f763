#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, beside the broker on 5672 (which it never
# touches), for tests/cluster.rs and the failover drill in docs/scaling.md.
#
#   scripts/rabbitmq-cluster.sh start        # start the nodes that are down, join them to node 1
#   scripts/rabbitmq-cluster.sh stop         # stop all three nodes and delete their state
#   scripts/rabbitmq-cluster.sh status       # each node; exit 0 only when all three run clustered
#   scripts/rabbitmq-cluster.sh stop-node N  # stop node N (1-3) alone: the failover drill
#   scripts/rabbitmq-cluster.sh kill-node N  # SIGKILL node N's Erlang VM: a node that crashes
#   scripts/rabbitmq-cluster.sh urls         # the nodes' AMQP URLs, comma-separated (AMQP_URL)
#   scripts/rabbitmq-cluster.sh ctl N ARGS   # rabbitmqctl -n cbN@localhost ARGS (as the rabbitmq user)
#
# Nodes cb1@localhost, cb2@localhost, cb3@localhost: AMQP on 127.0.0.1:5681-5683, Erlang
# distribution on 25681-25683, no plugins (so no management or prometheus listeners), one
# config, plugins file, data, log and pid file per node under the state directory. They run as
# the `rabbitmq` user with its Erlang cookie (the one the broker on 5672 uses) and share the
# machine's epmd with it; they never join that broker's cluster. `start` is idempotent: running
# nodes are left alone, a node stopped by `stop-node` is started again and rejoins.
#
# Environment:
#   CB_CLUSTER_DIR        state directory (default ${TMPDIR:-/tmp}/council-bridge-rabbitmq-cluster)
#   CB_CLUSTER_WAIT_SECS  how long to wait for a node to start (default 90)
set -euo pipefail

STATE_DIR="${CB_CLUSTER_DIR:-${TMPDIR:-/tmp}/council-bridge-rabbitmq-cluster}"
WAIT_SECS="${CB_CLUSTER_WAIT_SECS:-90}"
NODES=(1 2 3)
RMQ_BIN=/usr/lib/rabbitmq/bin

log() { printf '[rabbitmq-cluster] %s\n' "$*" >&2; }
die() {
    printf '[rabbitmq-cluster] ERROR: %s\n' "$*" >&2
    exit 1
}

node_name() { printf 'cb%s@localhost' "$1"; }
amqp_port() { printf '%s' $((5680 + $1)); }
dist_port() { printf '%s' $((25680 + $1)); }
node_dir() { printf '%s/cb%s' "$STATE_DIR" "$1"; }

# Runs a command as the `rabbitmq` user (its home holds the Erlang cookie the CLI tools and the
# nodes share), from root through runuser, from another user through sudo.
as_rabbitmq() {
    local home
    home="$(getent passwd rabbitmq | cut -d: -f6)"
    if [ "$(id -un)" = rabbitmq ]; then
        env HOME="$home" "$@"
    elif [ "$(id -u)" -eq 0 ]; then
        runuser -u rabbitmq -- env HOME="$home" "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -u rabbitmq env HOME="$home" "$@"
    else
        die "need root, sudo or the rabbitmq user to run: $*"
    fi
}

ctl() { as_rabbitmq "$RMQ_BIN/rabbitmqctl" -q "$@"; }

# Whether node N's Erlang VM answers and the rabbit application runs.
node_running() {
    ctl -n "$(node_name "$1")" --timeout 5 status >/dev/null 2>&1
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

prepare_node() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    mkdir -p "$dir/mnesia" "$dir/log"
    # AMQP on one loopback port; the package's /etc/rabbitmq/rabbitmq.conf (the broker on 5672)
    # is not read. No plugins, so no management (15672) or prometheus (15692) listener.
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
EOF
    : >"$dir/enabled_plugins"
    # Replaces /etc/rabbitmq/rabbitmq-env.conf (which names the broker on 5672).
    : >"$dir/rabbitmq-env.conf"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R rabbitmq:rabbitmq "$STATE_DIR"
    fi
}

start_node() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    prepare_node "$n"
    log "starting $(node_name "$n") (AMQP 127.0.0.1:$(amqp_port "$n"), distribution $(dist_port "$n"))"
    (cd "$dir" && as_rabbitmq \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$RMQ_BIN/rabbitmq-server" -detached >"$dir/log/detached.out" 2>&1) ||
        log "rabbitmq-server -detached returned non-zero for node $n; waiting anyway"
}

wait_node() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    if ! ctl -n "$(node_name "$n")" --timeout "$WAIT_SECS" wait "$dir/pid" >/dev/null 2>&1 ||
        ! port_open "$(amqp_port "$n")"; then
        for f in "$dir"/log/*.log "$dir/log/detached.out"; do
            [ -s "$f" ] || continue
            printf -- '--- last lines of %s ---\n' "$f" >&2
            tail -n 20 "$f" >&2 || true
        done
        die "$(node_name "$n") did not start within ${WAIT_SECS}s (logs above, under $dir/log)"
    fi
}

# Node N's cluster_status field FIELD (running_nodes, disk_nodes), one node per line.
cluster_field() {
    ctl -n "$(node_name "$1")" cluster_status --formatter json 2>/dev/null |
        tr -d '\n ' | sed -n "s/.*\"$2\":\[\([^]]*\)\].*/\1/p" | tr ',' '\n' | tr -d '"'
}
running_members() { cluster_field "$1" running_nodes; }
disk_members() { cluster_field "$1" disk_nodes; }

cmd_start() {
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server is not installed"
    mkdir -p "$STATE_DIR"
    local n started=()
    for n in "${NODES[@]}"; do
        if node_running "$n"; then
            continue
        fi
        port_open "$(amqp_port "$n")" && die "port $(amqp_port "$n") is taken by something that is not $(node_name "$n")"
        start_node "$n"
        started+=("$n")
    done
    for n in "${started[@]}"; do
        wait_node "$n"
    done
    local first
    first="$(node_name 1)"
    for n in 2 3; do
        if disk_members "$n" | grep -qx "$first"; then
            continue
        fi
        log "joining $(node_name "$n") to $first"
        local step out
        for step in stop_app reset "join_cluster $first" start_app; do
            # shellcheck disable=SC2086 # the step is a command and its argument
            out="$(ctl -n "$(node_name "$n")" $step 2>&1)" || die "rabbitmqctl -n $(node_name "$n") $step failed: $out"
        done
    done
    local deadline=$((SECONDS + WAIT_SECS))
    until [ "$(running_members 1 | grep -c '^cb[123]@localhost$')" -eq 3 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "the three nodes did not form one running cluster within ${WAIT_SECS}s"
        sleep 1
    done
    log "cluster running: $(running_members 1 | tr '\n' ' ')"
    cmd_urls
}

cmd_stop() {
    local n pids=()
    # The three nodes at once (each stop is a few seconds of rabbitmqctl): their state is deleted
    # afterwards, so the order they go in does not matter.
    for n in "${NODES[@]}"; do
        (
            if node_running "$n" || [ -s "$(node_dir "$n")/pid" ]; then
                log "stopping $(node_name "$n")"
                stop_node "$n"
            fi
        ) &
        pids+=("$!")
    done
    for n in "${pids[@]}"; do
        wait "$n" || true
    done
    rm -rf "$STATE_DIR"
    log "stopped; state removed ($STATE_DIR)"
}

stop_node() {
    local n="$1" pid_file
    pid_file="$(node_dir "$n")/pid"
    if [ -s "$pid_file" ]; then
        ctl -n "$(node_name "$n")" stop "$pid_file" >/dev/null 2>&1 || true
    else
        ctl -n "$(node_name "$n")" stop >/dev/null 2>&1 || true
    fi
    # A VM that did not answer the CLI: end that node's process by its own pid file.
    if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        kill "$(cat "$pid_file")" 2>/dev/null || true
    fi
    rm -f "$pid_file"
}

cmd_stop_node() {
    local n="${1:-}"
    case "$n" in 1 | 2 | 3) ;; *) die "stop-node takes 1, 2 or 3" ;; esac
    log "stopping $(node_name "$n") alone"
    stop_node "$n"
}

cmd_kill_node() {
    local n="${1:-}" pid_file
    case "$n" in 1 | 2 | 3) ;; *) die "kill-node takes 1, 2 or 3" ;; esac
    pid_file="$(node_dir "$n")/pid"
    [ -s "$pid_file" ] || die "$(node_name "$n") has no pid file ($pid_file): is it running?"
    log "killing $(node_name "$n") (SIGKILL to pid $(cat "$pid_file"))"
    as_rabbitmq kill -KILL "$(cat "$pid_file")"
}

cmd_status() {
    local n all=0
    for n in "${NODES[@]}"; do
        if node_running "$n"; then
            printf '%s running on 127.0.0.1:%s\n' "$(node_name "$n")" "$(amqp_port "$n")"
        else
            printf '%s stopped\n' "$(node_name "$n")"
            all=3
        fi
    done
    local members=""
    for n in "${NODES[@]}"; do
        if node_running "$n"; then
            members="$(running_members "$n" | tr '\n' ' ')"
            break
        fi
    done
    printf 'running cluster members: %s\n' "${members:-none}"
    [ "$(wc -w <<<"$members")" -eq 3 ] || all=3
    return "$all"
}

cmd_urls() {
    local n out=()
    for n in "${NODES[@]}"; do
        out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f")
    done
    (
        IFS=,
        printf '%s\n' "${out[*]}"
    )
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
stop-node) cmd_stop_node "${2:-}" ;;
kill-node) cmd_kill_node "${2:-}" ;;
urls) cmd_urls ;;
ctl)
    case "${2:-}" in 1 | 2 | 3) ;; *) die "ctl takes a node number (1, 2 or 3) first" ;; esac
    n="$2"
    shift 2
    ctl -n "$(node_name "$n")" "$@"
    ;;
*)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac

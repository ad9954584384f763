#!/usr/bin/env bash
# The project's one test command: make sure RabbitMQ answers on 127.0.0.1:5672 and PostgreSQL on
# 127.0.0.1:5432 (and that openssh-server is installed, for tests/sftp.rs, and chromium +
# chromium-driver, for tests/browser.rs), then run `cargo test --all-targets --locked` from the
# repository root twice: once on SQLite stores, once with every test's store in a fresh
# PostgreSQL database (COUNCIL_BRIDGE_TEST_STORE). Extra arguments go to cargo test.
# tests/cluster.rs starts its own three-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh, ports
# 5681-5683, as the rabbitmq user) from the same installed RabbitMQ and stops it at the end; a
# cluster left behind by an interrupted run is stopped here afterwards.
#
#   scripts/test.sh                        # broker + whole test suite
#   scripts/test.sh -- --nocapture         # extra arguments are passed to cargo test
#   scripts/test.sh --ensure-broker-only   # only make sure the broker is up, then exit
#
# Environment:
#   RABBITMQ_WAIT_SECS   how long to wait for the broker to come up (default 90)
#   COUNCIL_BRIDGE_PG_URL
#                        the PostgreSQL server of the second pass (default
#                        postgres://postgres@127.0.0.1:5432/postgres; trust authentication)
#   FUZZ_SECONDS         when set (e.g. 15) and cargo-fuzz is installed, also run each fuzz
#                        target that long after the tests (7 targets; keep the total to a
#                        minute or two). See docs/fuzzing.md.
#   COUNCIL_BRIDGE_REQUIRE_REAL_DATA
#                        1: the public real council files (../shared/data/real beside the
#                        repository) must be there, their absence fails the tests (.ci/run sets
#                        it); unset: tests that need them print that they were not run and why
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

AMQP_HOST=127.0.0.1
AMQP_PORT=5672
WAIT_SECS="${RABBITMQ_WAIT_SECS:-90}"

log() { printf '[test.sh] %s\n' "$*"; }
die() {
    printf '[test.sh] ERROR: %s\n' "$*" >&2
    exit 1
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

port_open() {
    # bash's /dev/tcp; `timeout` keeps a filtered port from hanging us.
    timeout 2 bash -c "exec 3<>/dev/tcp/${AMQP_HOST}/${AMQP_PORT}" >/dev/null 2>&1
}

broker_ping() {
    as_root rabbitmq-diagnostics -q ping --timeout 5 >/dev/null 2>&1
}

install_broker() {
    log "rabbitmq-server is not installed: installing it with apt-get"
    # Do not let the package's maintainer scripts try to start the service (there may be no
    # init system); we start the broker ourselves below.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server || rc=$?
    fi
    if [ "$created_policy" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    [ "$rc" -eq 0 ] || die "apt-get could not install rabbitmq-server (exit $rc)"
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server still not on PATH after install"
}

broker_logs() {
    local f
    for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log /var/log/rabbitmq/rabbit@*.log; do
        [ -s "$f" ] || continue
        printf '[test.sh] --- last lines of %s ---\n' "$f" >&2
        tail -n 20 "$f" >&2 || true
    done
}

ensure_guest_user() {
    if as_root rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx guest; then
        return 0
    fi
    log "guest user missing: creating guest/guest with full permissions on vhost /"
    as_root rabbitmqctl -q add_user guest guest >/dev/null
    as_root rabbitmqctl -q set_user_tags guest administrator >/dev/null
    as_root rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' >/dev/null
}

# tests/sftp.rs starts its own OpenSSH sshd (own config, host key and chroot; the system's
# ssh service is neither configured nor started): it needs Debian's openssh-server.
ensure_sshd() {
    if [ -x /usr/sbin/sshd ]; then
        return 0
    fi
    log "openssh-server is not installed (tests/sftp.rs needs /usr/sbin/sshd): installing it with apt-get"
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server || rc=$?
    fi
    if [ "$created_policy" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    [ "$rc" -eq 0 ] || die "apt-get could not install openssh-server (exit $rc)"
    [ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd still missing after installing openssh-server"
}

# tests/browser.rs drives Debian's chromium through chromedriver (W3C WebDriver).
ensure_chromium() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        return 0
    fi
    log "chromium / chromium-driver are not installed (tests/browser.rs needs them): installing them with apt-get"
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver || rc=$?
    fi
    [ "$rc" -eq 0 ] || die "apt-get could not install chromium chromium-driver (exit $rc)"
    [ -x /usr/bin/chromedriver ] || die "/usr/bin/chromedriver still missing after installing chromium-driver"
}

ensure_broker() {
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        install_broker
    fi

    if broker_ping && port_open; then
        log "RabbitMQ already running and answering on ${AMQP_HOST}:${AMQP_PORT}"
    else
        if ! broker_ping; then
            log "RabbitMQ is not running: starting it (rabbitmq-server -detached)"
            # Fails harmlessly when a node is already booting; the wait below decides.
            as_root rabbitmq-server -detached >/dev/null 2>&1 || log "rabbitmq-server -detached returned non-zero; waiting anyway"
        fi
        log "waiting up to ${WAIT_SECS}s for RabbitMQ on ${AMQP_HOST}:${AMQP_PORT}"
        local deadline=$((SECONDS + WAIT_SECS)) up=0
        while [ "$SECONDS" -lt "$deadline" ]; do
            if broker_ping; then
                local left=$((deadline - SECONDS))
                [ "$left" -ge 1 ] || left=1
                if as_root rabbitmqctl -q --timeout "$left" await_startup >/dev/null 2>&1 && port_open; then
                    up=1
                    break
                fi
            fi
            sleep 2
        done
        if [ "$up" -ne 1 ]; then
            broker_logs
            die "RabbitMQ did not come up on ${AMQP_HOST}:${AMQP_PORT} within ${WAIT_SECS}s (see logs above and /var/log/rabbitmq/)"
        fi
        log "RabbitMQ is up after $((SECONDS - deadline + WAIT_SECS))s"
    fi
    ensure_guest_user
    log "broker ready: amqp://guest:guest@${AMQP_HOST}:${AMQP_PORT}/%2f"
}

PG_URL="${COUNCIL_BRIDGE_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_up() {
    timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/5432" >/dev/null 2>&1 &&
        { ! command -v pg_isready >/dev/null 2>&1 || pg_isready -q -h 127.0.0.1 -p 5432 -t 3; }
}

# The PostgreSQL pass needs the server: started here (Debian's cluster) when it is down.
ensure_postgres() {
    if pg_up; then
        log "PostgreSQL already answering on 127.0.0.1:5432"
        return 0
    fi
    command -v pg_ctlcluster >/dev/null 2>&1 || die "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is not installed (apt-get install postgresql)"
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$version" ] || die "PostgreSQL is not running and no cluster is configured in /etc/postgresql"
    log "PostgreSQL is not running: starting cluster ${version}/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        die "pg_ctlcluster could not start PostgreSQL ${version}/main (see /var/log/postgresql/)"
    local deadline=$((SECONDS + 30))
    until pg_up; do
        [ "$SECONDS" -lt "$deadline" ] || die "PostgreSQL ${version}/main did not answer on 127.0.0.1:5432 within 30s (see /var/log/postgresql/)"
        sleep 1
    done
    log "PostgreSQL is up"
}

# Runs the suite once; prints `tests: N passed, M failed (LABEL stores)`; returns cargo's status.
run_suite() {
    local label="$1" out rc=0 started=$SECONDS
    shift
    out="$(mktemp)"
    cargo test --all-targets --locked --no-fail-fast "$@" 2>&1 | tee "$out" || rc=$?
    # One closing line per pass (the bench targets print last otherwise).
    local passed failed
    passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$out" | awk '{s += $4} END {print s + 0}')
    failed=$(grep -Eo '[0-9]+ failed;' "$out" | awk '{s += $1} END {print s + 0}')
    rm -f "$out"
    SUMMARY+="tests: ${passed} passed, ${failed} failed (${label} stores, $((SECONDS - started))s)"$'\n'
    printf 'tests: %s passed, %s failed (%s stores)\n' "$passed" "$failed" "$label"
    return "$rc"
}

# Optional: each fuzz target for a few seconds (stable toolchain: RUSTC_BOOTSTRAP, no sanitizer).
run_fuzz() {
    local secs="$1" target
    if ! cargo fuzz --version >/dev/null 2>&1; then
        die "FUZZ_SECONDS is set but cargo-fuzz is not installed (cargo install cargo-fuzz)"
    fi
    for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        log "fuzzing ${target} for ${secs}s"
        mkdir -p "fuzz/corpus/${target}"
        # New inputs go to the first folder (not committed); the regressions seed it.
        RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --codegen-units 16 "$target" "fuzz/corpus/${target}" "fuzz/regressions/${target}" -- \
            -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -max_len=65536 || return $?
    done
}

main() {
    local broker_only=0
    if [ "${1:-}" = "--ensure-broker-only" ]; then
        broker_only=1
        shift
    fi

    ensure_broker
    if [ "$broker_only" -eq 1 ]; then
        return 0
    fi
    ensure_postgres
    ensure_sshd
    ensure_chromium

    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"

    if [ "${COUNCIL_BRIDGE_REQUIRE_REAL_DATA:-}" = "1" ]; then
        [ -d ../shared/data/real ] || die "COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1 but ../shared/data/real is missing beside $REPO_ROOT"
        log "real council files required: $(cd ../shared/data/real && pwd)"
    elif [ -d ../shared/data/real ]; then
        log "real council files found in ../shared/data/real (set COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1 to require them)"
    else
        log "../shared/data/real is missing: the tests on real council files will print NOT RUN"
    fi
    SUMMARY=""
    local rc=0
    log "running on SQLite stores: cargo test --all-targets --locked${*:+ $*}"
    COUNCIL_BRIDGE_TEST_STORE= run_suite sqlite "$@" || rc=$?
    log "running on PostgreSQL stores (${PG_URL}, a database per test): cargo test --all-targets --locked${*:+ $*}"
    COUNCIL_BRIDGE_TEST_STORE="$PG_URL" run_suite postgres "$@" || rc=$?
    if [ -d "${CB_CLUSTER_DIR:-${TMPDIR:-/tmp}/council-bridge-rabbitmq-cluster}" ]; then
        log "stopping the three-node cluster an interrupted tests/cluster.rs left running"
        bash scripts/rabbitmq-cluster.sh stop || true
    fi
    printf '%s' "$SUMMARY"
    if [ "$rc" -eq 0 ] && [ -n "${FUZZ_SECONDS:-}" ]; then
        run_fuzz "$FUZZ_SECONDS" || rc=$?
    fi
    return "$rc"
}

main "$@"

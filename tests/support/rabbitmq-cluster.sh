#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the integration tests
# that prove the daemon runs on the cluster it recommends (issue 23).
#
#   start DIR PORT_A PORT_B PORT_C [DIST_A DIST_B DIST_C]
#                                 three nodes zds-<tag>-{a,b,c}@localhost,
#                                 tag = basename DIR; b and c join a.
#                                 OWNER_PID=<pid> in the environment: a
#                                 detached reaper stops the cluster and
#                                 deletes DIR once that process is gone.
#   kill DIR LETTER               SIGKILL that node's VM, wait until gone
#   restart DIR LETTER            start it again, wait until back in the cluster
#   stop-node DIR LETTER          graceful stop (rolling restarts)
#   leader DIR QUEUE              letter of the node leading quorum queue QUEUE (vhost /)
#   running DIR                   letters of the running members, e.g. "abc"
#   stop DIR                      stop all three, delete DIR (idempotent)
#
# Prints nothing but errors. Every node gets its own environment, so the
# machine's broker (rabbit@localhost, /etc/rabbitmq) is never touched:
# variables from the environment win over rabbitmq-env.conf, and our own
# RABBITMQ_CONF_ENV_FILE replaces the machine's file altogether
# (https://www.rabbitmq.com/docs/man/rabbitmq-env.conf.5,
# https://www.rabbitmq.com/docs/configure#supported-environment-variables).
# Clustering by hand, as https://www.rabbitmq.com/docs/clustering describes:
# one Erlang cookie for all nodes, then stop_app, join_cluster, start_app.
set -euo pipefail

SBIN=${RABBITMQ_SBIN:-/usr/lib/rabbitmq/bin}
LETTERS=(a b c)
# Seconds a node may take to boot (2 cores, other builds running).
BOOT_TIMEOUT=${ZDS_CLUSTER_BOOT_TIMEOUT:-60}
# Seconds a graceful stop may take before the VM is killed.
STOP_TIMEOUT=${ZDS_CLUSTER_STOP_TIMEOUT:-10}

die() {
    echo "rabbitmq-cluster: $*" >&2
    exit 1
}

# Runs a command quietly; on failure prints its output and the node's log tail.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        echo "rabbitmq-cluster: failed: $*" >&2
        echo "$out" >&2
        return 1
    fi
}

# ZDS_CLUSTER_TRACE=1: timestamps of the steps on stderr, to see where time goes.
trace() {
    [[ -z ${ZDS_CLUSTER_TRACE:-} ]] || echo "$(date +%T.%3N) $*" >&2
}

node_name() { echo "zds-$TAG-$1@localhost"; }
node_dir() { echo "$DIR/node-$1"; }

# The node's own environment (in the current shell: call in a subshell).
node_env() {
    local d
    d=$(node_dir "$1")
    read -r amqp dist <"$d/ports"
    export HOME="$DIR/home"
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node_name "$1")
    export RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
    export RABBITMQ_CONFIG_FILES="$d/conf.d"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$d/mnesia"
    export RABBITMQ_LOG_BASE="$d/log"
    export RABBITMQ_PID_FILE="$d/pid"
    export RABBITMQ_DIST_PORT="$dist"
    # The VM's command line does not name the node (3.10 passes it in the
    # environment): this inert init argument lets `pgrep -af zds-` see it.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-zds_node $RABBITMQ_NODENAME"
    # rabbitmqctl's own distribution port: 0 lets the OS pick, instead of the
    # shared 35672..35682 range parallel runs would exhaust.
    export RABBITMQ_CTL_DIST_PORT_MIN=0 RABBITMQ_CTL_DIST_PORT_MAX=0
}

ctl() {
    ctl_within 30 "$@"
}

# rabbitmqctl against node LETTER, killed after SECS seconds.
ctl_within() {
    local secs=$1 letter=$2
    shift 2
    (node_env "$letter" && timeout "$secs" "$SBIN/rabbitmqctl" -q -n "$(node_name "$letter")" "$@")
}

# The pid of the node's VM, when it runs.
vm_pid() {
    local f
    f="$(node_dir "$1")/pid"
    [[ -s $f ]] || return 1
    local pid
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# A free TCP port on 127.0.0.1 from the ephemeral range, when none is given.
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((32768 + RANDOM % 28000))
        if ! ss -Htln "sport = :$port" | grep -q .; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

write_node_files() {
    local letter=$1 amqp=$2 dist=$3 d
    d=$(node_dir "$letter")
    mkdir -p "$d/mnesia" "$d/log"
    echo "$amqp $dist" >"$d/ports"
    # https://www.rabbitmq.com/docs/networking#ports ; guest may connect
    # over loopback by default (loopback_users, https://www.rabbitmq.com/docs/access-control#loopback-users).
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp
log.file.level = warning
log.console = false
EOF
    # Like the machine's file: epmd and distribution on loopback only.
    cat >"$d/rabbitmq-env.conf" <<'EOF'
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    # No plugins: the management plugin would bind 15672 like the machine's broker.
    echo '[].' >"$d/enabled_plugins"
}

boot() {
    local letter=$1 d
    d=$(node_dir "$letter")
    if vm_pid "$letter" >/dev/null; then
        return 0
    fi
    rm -f "$d/pid"
    (node_env "$letter" && cd "$DIR" &&
        setsid "$SBIN/rabbitmq-server" -detached </dev/null >>"$d/log/boot.out" 2>&1)
}

# Waits until the node's RabbitMQ application runs. await_startup fails
# at once while the VM is not yet reachable, so it is retried.
await_up() {
    local letter=$1 deadline=$((SECONDS + BOOT_TIMEOUT))
    # Each rabbitmqctl call boots a VM of its own, CPU the nodes need: look
    # for the pid file (written once the node is reachable) first.
    until vm_pid "$letter" >/dev/null || ((SECONDS >= deadline)); do sleep 0.1; done
    until trace "await $letter" && ctl_within 20 "$letter" await_startup --timeout 15 >/dev/null 2>&1; do
        [[ -d $DIR ]] || return 1 # stopped meanwhile (by the reaper)
        if ((SECONDS >= deadline)); then
            echo "rabbitmq-cluster: node $(node_name "$letter") did not start; log:" >&2
            tail -n 30 "$(node_dir "$letter")"/log/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
}

# Joins b and c to a (https://www.rabbitmq.com/docs/clustering): both stop
# and start their application side by side, the joins themselves (quick,
# one schema change each) go one after the other.
join_b_and_c() {
    local pids=() p failed=0
    for p in b c; do
        quiet ctl "$p" stop_app &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    ((failed == 0)) || return 1
    trace join
    quiet ctl b join_cluster "$(node_name a)"
    quiet ctl c join_cluster "$(node_name a)"
    trace start_app
    pids=()
    for p in b c; do
        quiet ctl "$p" start_app &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    ((failed == 0))
}

start_reaper() {
    local owner=$1
    setsid nohup env ZDS_REAPER=1 bash "$0" reap "$DIR" "$owner" </dev/null >/dev/null 2>&1 &
    echo $! >"$DIR/reaper.pid"
}

cmd_start() {
    [[ $# -ge 3 ]] || die "usage: start DIR PORT_A PORT_B PORT_C [DIST_A DIST_B DIST_C]"
    local amqp=("$1" "$2" "$3") dist=("${4:-}" "${5:-}" "${6:-}")
    mkdir -p "$DIR/home"
    echo $$ >"$DIR/busy.pids"
    [[ -n ${OWNER_PID:-} ]] && start_reaper "$OWNER_PID"
    if [[ ! -s $DIR/home/.erlang.cookie ]]; then
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/home/.erlang.cookie"
        chmod 400 "$DIR/home/.erlang.cookie"
    fi
    local i
    for i in 0 1 2; do
        write_node_files "${LETTERS[$i]}" "${amqp[$i]}" "${dist[$i]:-$(free_port)}"
    done
    trace boot
    for i in a b c; do boot "$i"; done
    local pids=() failed=0
    for i in a b c; do
        await_up "$i" &
        pids+=($!)
        echo $! >>"$DIR/busy.pids"
    done
    for i in "${pids[@]}"; do wait "$i" || failed=1; done
    [[ $failed == 0 ]] || die "cluster $TAG did not start"
    trace stop_app
    join_b_and_c || die "nodes b and c did not join a"
    trace started
}

# SIGKILLs PID and waits until it is gone.
kill_pid() {
    local pid=$1
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

cmd_kill() {
    local pid
    pid=$(vm_pid "$1") || return 0
    kill_pid "$pid"
}

# Waits until LETTER is among the running nodes its peers report.
await_in_cluster() {
    local letter=$1 deadline=$((SECONDS + BOOT_TIMEOUT)) me
    me=$(node_name "$letter")
    until ctl "$letter" cluster_status --formatter json 2>/dev/null |
        grep -o '"running_nodes":\[[^]]*\]' | grep -q "\"$me\""; do
        [[ -d $DIR ]] || die "cluster $TAG stopped meanwhile"
        ((SECONDS < deadline)) || die "node $me did not rejoin the cluster"
        sleep 0.2
    done
}

cmd_restart() {
    local letter=$1
    [[ -d $DIR ]] || die "no cluster in $DIR"
    echo $$ >>"$DIR/busy.pids"
    boot "$letter"
    await_up "$letter" || die "node $(node_name "$letter") did not restart"
    await_in_cluster "$letter"
}

cmd_stop_node() {
    local letter=$1 pid deadline=$((SECONDS + STOP_TIMEOUT))
    pid=$(vm_pid "$letter") || return 0
    ctl_within "$STOP_TIMEOUT" "$letter" stop >/dev/null 2>&1 || true
    # stop returns (and the pid file goes) before the VM has exited.
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill_pid "$pid"
}

cmd_leader() {
    local queue=$1 letter out
    for letter in a b c; do
        vm_pid "$letter" >/dev/null || continue
        # list_queues' `leader` column names a quorum queue's leader node
        # (https://www.rabbitmq.com/docs/rabbitmqctl.8#list_queues).
        out=$(ctl "$letter" list_queues -p / name leader --no-table-headers 2>/dev/null) || continue
        local leader
        leader=$(awk -F'\t' -v q="$queue" '$1 == q { print $2; exit }' <<<"$out")
        case $leader in
        "zds-$TAG-"[abc]"@localhost")
            leader=${leader#"zds-$TAG-"}
            echo "${leader%@localhost}"
            return 0
            ;;
        esac
    done
    die "no leader found for quorum queue $queue"
}

# The letters of the running cluster members, as a running node reports them.
cmd_running() {
    local letter out
    for letter in a b c; do
        vm_pid "$letter" >/dev/null || continue
        out=$(ctl "$letter" cluster_status --formatter json 2>/dev/null) || continue
        grep -o '"running_nodes":\[[^]]*\]' <<<"$out" | grep -o "zds-$TAG-[abc]@" |
            sed "s/^zds-$TAG-//; s/@\$//" | sort | tr -d '\n'
        echo
        return 0
    done
    die "no node of cluster $TAG answers"
}

# SIGKILLs any VM of this cluster still running without a pid file (one
# whose boot a reaper overtook), found by the marker only its nodes carry.
kill_marked() {
    local pid
    for pid in $(pgrep -f -- "-zds_node zds-$TAG-[abc]@localhost" || true); do
        kill_pid "$pid"
    done
}

cmd_stop() {
    if [[ -z ${ZDS_REAPER:-} && -s $DIR/reaper.pid ]]; then
        kill "$(<"$DIR/reaper.pid")" 2>/dev/null || true
    fi
    local letter pids=()
    for letter in a b c; do
        [[ -f $(node_dir "$letter")/ports ]] || continue
        cmd_stop_node "$letter" &
        pids+=($!)
    done
    local p
    for p in "${pids[@]}"; do wait "$p" || true; done
    kill_marked
    rm -rf "$DIR"
}

# Stops the cluster once the owner is gone: first the start that may still
# run (no boot after this), then the nodes, then any VM a boot in flight
# forked meanwhile.
cmd_reap() {
    local owner=$1
    while kill -0 "$owner" 2>/dev/null; do sleep 0.5; done
    if [[ -s $DIR/busy.pids ]]; then
        # A start or restart still running, and the waits it runs side by
        # side; a pid is only taken for one while it still runs this script.
        local pid
        for pid in $(<"$DIR/busy.pids"); do
            if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "rabbitmq-cluster.sh [a-z]* $DIR "; then
                kill "$pid" 2>/dev/null || true
            fi
        done
        sleep 1
    fi
    cmd_stop
    sleep 2
    kill_marked
}

main() {
    [[ $# -ge 2 ]] || die "usage: $0 start|kill|restart|stop-node|leader|stop|reap DIR ..."
    local cmd=$1
    DIR=$2
    shift 2
    [[ $DIR == /* ]] || DIR="$PWD/$DIR"
    TAG=$(basename "$DIR")
    case $cmd in
    start) cmd_start "$@" ;;
    kill) cmd_kill "$1" ;;
    restart) cmd_restart "$1" ;;
    stop-node) cmd_stop_node "$1" ;;
    leader) cmd_leader "$1" ;;
    running) cmd_running ;;
    stop) cmd_stop ;;
    reap) cmd_reap "$1" ;;
    *) die "unknown command $cmd" ;;
    esac
}

main "$@"

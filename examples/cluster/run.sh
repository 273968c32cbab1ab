#!/usr/bin/env bash
# The cluster demo (make cluster-demo): HAProxy, with consistent hashing on
# X-Conversation-Key, in front of 3 replicas, each with its own claudepool
# pool against the real CLI, all sharing one mock of the Messages API; the
# driver runs its conversations through HAProxy, kills a replica halfway
# through its second phase and prints the figures. HAProxy comes from the
# distribution's packages when it is missing. Everything started here is
# stopped on exit, however the script ends.
#
# Settings (environment): CLAUDEPOOL_CLI (the claude executable), GO,
# CLUSTER_PORT (HAProxy's port, default 18080; replicas on the next three,
# HAProxy's statistics 10 above), CLUSTER_SIZE (1) and CLUSTER_MAXPROCS (3)
# of each replica's pool, CLUSTER_CONVERSATIONS (30), CLUSTER_TURNS (5),
# CLUSTER_CONCURRENCY (2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GO=${GO:-go}
CLI=${CLAUDEPOOL_CLI:-$ROOT/.cli/node_modules/.bin/claude}
PORT=${CLUSTER_PORT:-18080}
STATS_PORT=$((PORT + 10))
SIZE=${CLUSTER_SIZE:-1}
MAXPROCS=${CLUSTER_MAXPROCS:-3}
SYSTEM="You are a concise assistant."
REPLICAS=(r1 r2 r3)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- HAProxy, from the distribution's packages when missing ---------------
if ! command -v haproxy >/dev/null 2>&1; then
	log "HAProxy is missing: installing it with apt-get"
	SUDO=
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install haproxy"; exit 1; }
		SUDO=sudo
	fi
	# The package would start a system-wide HAProxy: keep it from starting,
	# so that the demo leaves no service behind.
	POLICY=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		POLICY=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
		$SUDO chmod +x "$POLICY"
	fi
	status=0
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy >/dev/null || status=$?
	[ -z "$POLICY" ] || $SUDO rm -f "$POLICY"
	[ "$status" = 0 ] || { log "apt-get install haproxy failed"; exit 1; }
fi
[ -x "$CLI" ] || command -v "$CLI" >/dev/null 2>&1 || { log "no CLI at $CLI (make cli)"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/claudepool-cluster.XXXXXX")
PIDS=()    # every process started here, in order
NAMES=()

cleanup() {
	local status=$? i pid cli=() left=()
	set +e
	trap - EXIT INT TERM
	# The replicas' CLI processes, to check that none outlives them.
	for pid in "${PIDS[@]}"; do
		for t in /proc/"$pid"/task/*/children; do
			[ -r "$t" ] && cli+=($(cat "$t" 2>/dev/null))
		done
	done
	# Last started, first stopped: HAProxy, the replicas (they drain and
	# close their pools on SIGTERM), the mock.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null
	done
	for _ in $(seq 150); do
		left=()
		for pid in "${PIDS[@]}" "${cli[@]}"; do
			[ -d /proc/"$pid" ] && [ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ] && left+=("$pid")
		done
		[ ${#left[@]} = 0 ] && break
		sleep 0.1
	done
	for pid in "${left[@]}"; do
		log "still running after 15 s, killing: $(ps -o pid=,args= -p "$pid" 2>/dev/null)"
		kill -KILL "$pid" 2>/dev/null
	done
	left=()
	for pid in "${PIDS[@]}" "${cli[@]}"; do
		[ -d /proc/"$pid" ] && [ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ] && left+=("$pid")
	done
	if [ ${#left[@]} = 0 ]; then
		log "stopped ${NAMES[*]:-nothing} and ${#cli[@]} CLI processes; nothing left running"
	else
		log "LEFT RUNNING: ${left[*]}"
		status=1
	fi
	if [ "$status" != 0 ]; then
		log "logs:"; tail -n 20 "$WORK"/*.log >&2 2>/dev/null
	fi
	rm -rf "$WORK"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME LOG CMD...: run in the background and remember it
	local name=$1 logf=$2
	shift 2
	"$@" >"$logf" 2>&1 &
	PIDS+=($!)
	disown $! # no job report when the driver kills a replica
	NAMES+=("$name")
}

# wait_for WHAT SECONDS CMD...: poll until CMD succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	for _ in $(seq $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	log "$what not ready after ${secs}s"
	return 1
}

for p in $(seq "$PORT" $((PORT + 3))) "$STATS_PORT"; do
	if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
		log "port $p is in use: set CLUSTER_PORT"; exit 1
	fi
done

log "building the demo's programs"
(cd "$ROOT" && $GO build -o "$WORK/bin/" ./examples/cluster/mockapi ./examples/cluster/replica ./examples/cluster/drive)

start mockapi "$WORK/mockapi.log" "$WORK/bin/mockapi" -env-file "$WORK/mock.env"
wait_for "mockapi" 10 test -s "$WORK/mock.env"

REPS=() RPIDS=()
for i in "${!REPLICAS[@]}"; do
	name=${REPLICAS[i]} port=$((PORT + i + 1))
	start "$name" "$WORK/$name.log" "$WORK/bin/replica" -name "$name" -addr "127.0.0.1:$port" \
		-cli "$CLI" -env-file "$WORK/mock.env" -system "$SYSTEM" -size "$SIZE" -maxprocs "$MAXPROCS"
	REPS+=("$name=http://127.0.0.1:$port")
	RPIDS+=("$name=${PIDS[-1]}")
done
log "3 replicas starting (Size $SIZE, MaxProcs $MAXPROCS each)"
for i in "${!REPLICAS[@]}"; do
	wait_for "${REPLICAS[i]}" 120 curl -fsS "http://127.0.0.1:$((PORT + i + 1))/healthz"
done

cat >"$WORK/haproxy.cfg" <<CFG
global
    maxconn 256

defaults
    mode http
    timeout connect 1s
    timeout client 5m
    timeout server 5m
    # A turn carries its whole history, so any replica can answer it: on a
    # refused connection, or a replica that died before answering, HAProxy
    # sends it again, to another replica (redispatch on every retry).
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response 502 503

frontend chat
    bind 127.0.0.1:$PORT
    default_backend replicas

backend replicas
    # Each conversation to the replica whose process holds it.
    balance hdr(X-Conversation-Key)
    hash-type consistent
    option httpchk GET /healthz
    default-server check inter 1s fall 2 rise 2
$(for i in "${!REPLICAS[@]}"; do echo "    server ${REPLICAS[i]} 127.0.0.1:$((PORT + i + 1))"; done)

listen stats
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /stats
CFG
haproxy -q -c -f "$WORK/haproxy.cfg"
start haproxy "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy.cfg"
all_up() { [ "$(curl -fsS "http://127.0.0.1:$STATS_PORT/stats;csv" | grep -c '^replicas,r[0-9],.*,UP')" = ${#REPLICAS[@]} ]; }
wait_for "HAProxy" 20 all_up
log "HAProxy $(haproxy -v | head -n1 | awk '{print $3}') on 127.0.0.1:$PORT, all replicas UP"

echo "machine: $(nproc) cores, Linux $(uname -r); CLI $("$CLI" --version 2>/dev/null | head -n1); HAProxy $(haproxy -v | head -n1 | awk '{print $3}')"
echo "replicas: ${#REPLICAS[@]}, each Size $SIZE MaxProcs $MAXPROCS; balance hdr(X-Conversation-Key), hash-type consistent"
IFS=,
"$WORK/bin/drive" -lb "http://127.0.0.1:$PORT" -haproxy-stats "http://127.0.0.1:$STATS_PORT/stats;csv" \
	-replicas "${REPS[*]}" -pids "${RPIDS[*]}" -kill r2 -system "$SYSTEM" \
	-conversations "${CLUSTER_CONVERSATIONS:-30}" -turns "${CLUSTER_TURNS:-5}" -concurrency "${CLUSTER_CONCURRENCY:-2}"
unset IFS

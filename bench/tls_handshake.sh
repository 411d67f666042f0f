#!/usr/bin/env bash
# bench/tls_handshake.sh [PORT] - full TLS handshakes per second, next to the machine's
# ECDSA P-256 signing rate measured in the same invocation.
#
# Without PORT: makes a throwaway CA and an EC P-256 server certificate (tests/gen-test-cert.sh),
# starts `openssl s_server -www` with it on a free 127.0.0.1 port, measures it, and stops it by PID.
# With PORT: measures the TLS server already listening on HOST:PORT (portier's implicit-TLS
# listener, say); start it with a P-256 certificate to compare like with like.
#
# Measures: `openssl s_time -connect HOST:PORT -new -time TIME` (a new session for every
# connection: no resumption), timed on the wall clock; then `openssl speed -seconds SPEED_SECONDS
# ecdsap256` (one core). s_time, the server and speed share the machine's cores.
# Output:
#   server:      what was measured, with the protocol, cipher and group it negotiated
#   handshakes:  N in T s = R/s
#   server CPU:  ms of server CPU (user + system, all threads) per handshake, when its PID is known
#   ecdsap256:   S sign/s, V verify/s
#   ratio:       R / S (each full handshake costs the server one ECDSA signature plus an ECDHE)
#   vs s_server: R / reference rate (only with PORT and REFERENCE=1)
#
# Environment: HOST (127.0.0.1) TIME (5) SPEED_SECONDS (3) OPENSSL (openssl)
#   S_TIME_ARGS (extra s_time arguments, e.g. -tls1_2 or -cipher ...)
#   SERVER_PID (with PORT: the server's PID, to report its CPU per handshake)
#   REFERENCE (0; 1 with PORT: measure an s_server reference first, in the same invocation)
# Exit: 0 measured; 1 something failed (the server's log is shown).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
OPENSSL=${OPENSSL:-openssl}
HOST=${HOST:-127.0.0.1}
TIME=${TIME:-5}
SPEED_SECONDS=${SPEED_SECONDS:-3}
S_TIME_ARGS=${S_TIME_ARGS:-}
SERVER_PID=${SERVER_PID:-}
REFERENCE=${REFERENCE:-0}
START_TIMEOUT=10	# s for s_server to accept connections

work=$(mktemp -d "${TMPDIR:-/tmp}/tls_handshake.XXXXXX")
server_pid=

# cleanup - stop the server we started (by PID) and remove the work directory
cleanup() {
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# die - message, the server's log if any, exit 1
die() {
	echo "tls_handshake: $*" >&2
	if [ -s "$work/server.log" ]; then
		echo "--- s_server log (tail) ---" >&2
		tail -n 20 "$work/server.log" >&2
	fi
	exit 1
}

# free_port - a port on HOST that was free a moment ago
free_port() {
	/usr/bin/python3 -c 'import socket,sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$HOST"
}

# port_open - whether HOST:$1 accepts TCP connections
port_open() {
	(exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# now_ns - monotonic-enough wall clock in nanoseconds
now_ns() {
	date +%s%N
}

# cpu_ticks - utime + stime of PID $1 (all threads), in clock ticks; empty if unknown
cpu_ticks() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0
	# Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
	sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# start_s_server - s_server -www with a fresh P-256 certificate; sets port and server_pid
start_s_server() {
	local deadline
	if [ ! -f "$work/cert/cert.pem" ]; then
		"$root/tests/gen-test-cert.sh" "$work/cert" localhost || die "cannot make a test certificate"
	fi
	port=$(free_port)
	"$OPENSSL" s_server -accept "$HOST:$port" -cert "$work/cert/cert.pem" \
		-key "$work/cert/key.pem" -www -quiet </dev/null >"$work/server.log" 2>&1 &
	server_pid=$!
	deadline=$((SECONDS + START_TIMEOUT))
	until port_open "$port"; do
		kill -0 "$server_pid" 2>/dev/null || die "s_server exited"
		[ $SECONDS -lt $deadline ] || die "s_server not listening after ${START_TIMEOUT}s"
		sleep 0.1
	done
}

# stop_s_server - stop the s_server we started, by PID
stop_s_server() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=
	fi
}

# measure LABEL PORT PID - one s_time run against HOST:PORT; prints its lines, sets rate
measure() {
	local label=$1 p=$2 pid=$3 brief proto cipher group out n start end c0 c1 tck
	# What a client gets: one s_client run, reading its -brief summary.
	# shellcheck disable=SC2086
	brief=$(timeout 10 "$OPENSSL" s_client -connect "$HOST:$p" -brief $S_TIME_ARGS \
		</dev/null 2>&1 || true)
	proto=$(sed -n 's/^Protocol version: *//p' <<<"$brief" | head -n 1)
	cipher=$(sed -n 's/^Ciphersuite: *//p' <<<"$brief" | head -n 1)
	group=$(sed -n 's/^\(Server Temp Key\|Negotiated TLS1.3 group\): *//p' <<<"$brief" | head -n 1)
	[ -n "$proto" ] || die "no TLS handshake with $HOST:$p: $(head -n 3 <<<"$brief")"

	c0=$(cpu_ticks "$pid")
	start=$(now_ns)
	# shellcheck disable=SC2086
	out=$(timeout $((TIME + 30)) "$OPENSSL" s_time -connect "$HOST:$p" -new -time "$TIME" \
		$S_TIME_ARGS 2>&1) || die "s_time failed: $(tail -n 3 <<<"$out")"
	end=$(now_ns)
	c1=$(cpu_ticks "$pid")
	n=$(sed -n 's/^\([0-9][0-9]*\) connections in [0-9]* real seconds.*/\1/p' <<<"$out" | head -n 1)
	if [ -z "$n" ] || [ "$n" -eq 0 ]; then
		die "s_time made no connection: $(tail -n 3 <<<"$out")"
	fi
	tck=$(getconf CLK_TCK)
	rate=$(awk -v n="$n" -v ns="$((end - start))" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
	awk -v n="$n" -v ns="$((end - start))" -v label="$label" -v proto="$proto" \
	    -v cipher="$cipher" -v group="$group" -v c0="$c0" -v c1="$c1" -v tck="$tck" \
	    -v what="$what" 'BEGIN {
		t = ns / 1e9
		printf "%-12s %s; %s %s%s\n", label ":", what, proto, cipher, group != "" ? ", " group : ""
		printf "%-12s %d in %.2f s = %.0f/s (s_time -new, one connection at a time)\n", "handshakes:", n, t, n / t
		if (c0 != "" && c1 != "" && c1 > c0) {
			ms = (c1 - c0) / tck * 1000 / n
			printf "%-12s %.3f ms CPU per handshake = %.0f/s per core\n", "server CPU:", ms, 1000 / ms
		}
	}'
}

# speed - openssl speed ecdsap256; sets sign and verify
speed() {
	local out line
	out=$(timeout $((4 * SPEED_SECONDS + 30)) "$OPENSSL" speed -seconds "$SPEED_SECONDS" \
		ecdsap256 2>/dev/null) || die "openssl speed failed"
	line=$(grep -E '^ *256 bits ecdsa' <<<"$out" | tail -n 1)
	[ -n "$line" ] || die "cannot read openssl speed's output"
	sign=$(awk '{ print $(NF - 1) }' <<<"$line")
	verify=$(awk '{ print $NF }' <<<"$line")
}

if [ $# -gt 1 ]; then
	echo "usage: $0 [PORT]" >&2
	exit 2
fi

if [ $# -eq 1 ]; then
	port=$1
	port_open "$port" || die "nothing listens on $HOST:$port"
	if [ "$REFERENCE" = 1 ]; then
		what="openssl s_server, EC P-256 certificate ($("$OPENSSL" version | cut -d' ' -f1-2))"
		start_s_server
		measure reference "$port" "$server_pid"
		ref_rate=$rate
		stop_s_server
		port=$1
	fi
	what="$HOST:$port (already running)"
	measure server "$port" "${SERVER_PID:-}"
else
	what="openssl s_server, EC P-256 certificate ($("$OPENSSL" version | cut -d' ' -f1-2))"
	start_s_server
	measure server "$port" "$server_pid"
	stop_s_server
fi

speed
awk -v rate="$rate" -v sign="$sign" -v verify="$verify" -v ref="${ref_rate:-}" 'BEGIN {
	printf "%-12s %.0f sign/s, %.0f verify/s (openssl speed, one core)\n", "ecdsap256:", sign, verify
	printf "%-12s %.4f handshakes per P-256 signature\n", "ratio:", rate / sign
	if (ref != "")
		printf "%-12s %.2f (server / s_server reference)\n", "vs s_server:", rate / ref
}'

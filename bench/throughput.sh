#!/usr/bin/env bash
# bench/throughput.sh - message throughput of portier against a direct reference, in one run.
#
# (a) reference: smtp-source -> smtp-sink directly
# (b) portier:   smtp-source -> portier -> smtp-sink (relay = smtp:, pooled backend connections)
# Same parameters for both: SESSIONS parallel sessions, SIZE-byte messages, MESSAGES messages,
# one recipient in example.test, a sink that counts (-c) and saves nothing. Each run gets a fresh
# sink (and a fresh portier), is timed on the monotonic clock, and is checked: smtp-source must
# exit 0 and the sink's counter must show exactly MESSAGES messages. Prints msg/s for each run,
# the ratio portier/direct (target >= 0.7) and portier's peak RSS (VmHWM). Runs alternate
# direct, portier, direct, portier... for ROUNDS rounds; the ratio is of the median rates.
# A second pair with smtp-source -d (sessions kept open across messages) runs too unless
# KEEPALIVE=no.
#
# PORTIER_B=/other/portier adds a third run to every round, so that two builds are compared in
# the same invocation, alternating with the reference (the machine's speed drifts between
# invocations; a comparison across two invocations mostly measures that drift).
#
# FILTERS / FILTERS_B set the listener's "filters =" for PORTIER / PORTIER_B (default: none,
# so the role's implied filters only); e.g. PORTIER_B=tests/filters/portier-test
# FILTERS_B=test-pass measures one inline filter that passes everything.
#
# TARGET_B (default: the same 0.7) is the target the ratio_b lines are held to.
# SERVER_EXTRA adds lines to both portiers' [server] section (resolver = ...), CONF_EXTRA
# sections at the end of their configurations ([filter dkim-sign] ...), and MESSAGE_FILE makes
# smtp-source send that file (-F: its header and body, e.g. a signed message) instead of SIZE
# octets of its own; bench/auth_filters.sh uses the three.
#
# Environment: MESSAGES (10000) SESSIONS (20) SIZE (5120) ROUNDS (3) KEEPALIVE (yes) WARMUP (500) WORKERS (0: one loop per core)
#   IO_URING (unset: the default; yes/no sets portier's io_uring key; each portier line shows the
#   writes= its startup logged)
#   PORTIER (smtpd/portier) PORTIER_B (none) RUN_TIMEOUT (60 + MESSAGES/25 s per run) STRICT (0; 1 = exit 2
#   when the ratio is below target) KEEP_TMP (0; 1 = keep the work directory
#   and logs, which are kept anyway when a run fails)
# Exit: 0 measured; 1 a run failed or portier is missing; 2 below target with STRICT=1.
# Every process it starts is stopped by its PID on exit; it never touches the system Postfix.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=/usr/bin/python3
SINK=/usr/sbin/smtp-sink
SOURCE=/usr/sbin/smtp-source
PORTIER=${PORTIER:-$root/smtpd/portier}
PORTIER_B=${PORTIER_B:-}
MESSAGES=${MESSAGES:-10000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-5120}
KEEPALIVE=${KEEPALIVE:-yes}
WARMUP=${WARMUP:-500}
ROUNDS=${ROUNDS:-3}
STRICT=${STRICT:-0}
KEEP_TMP=${KEEP_TMP:-0}
TARGET=0.7
START_TIMEOUT=15        # s for a sink or portier to greet
STOP_TIMEOUT=15         # s for a process to exit after SIGTERM before SIGKILL
COUNT_TIMEOUT=10        # s for the sink's counter to catch up after smtp-source exits

failed=0
die() { echo "throughput.sh: ERROR: $*" >&2; failed=1; exit 1; }
lib() { "$PY" "$here/benchlib.py" "$@"; }

for v in MESSAGES SESSIONS SIZE WARMUP ROUNDS; do
	case ${!v} in '' | *[!0-9]*) die "$v must be a non-negative integer, got '${!v}'" ;; esac
done
if [ "$MESSAGES" -eq 0 ] || [ "$SESSIONS" -eq 0 ] || [ "$ROUNDS" -eq 0 ]; then
	die "MESSAGES, SESSIONS and ROUNDS must be > 0"
fi
RUN_TIMEOUT=${RUN_TIMEOUT:-$((60 + MESSAGES / 25))}
[ -x "$PY" ] || die "$PY not found"
if [ ! -x "$SINK" ] || [ ! -x "$SOURCE" ]; then
	die "$SINK / $SOURCE not found (Debian package: postfix)"
fi

sink_user=()
portier_user=
if [ "$(id -u)" = 0 ]; then
	sink_user=(-u nobody)       # smtp-sink refuses to run as root without -u
	portier_user="user = nobody"
fi

portier_ok=yes
[ -f "$PORTIER" ] && [ -x "$PORTIER" ] || portier_ok=no
if [ -n "$PORTIER_B" ] && { [ ! -f "$PORTIER_B" ] || [ ! -x "$PORTIER_B" ]; }; then
	die "PORTIER_B=$PORTIER_B is not an executable file"
fi

tmp=$(mktemp -d /tmp/portier-bench.XXXXXX)
chmod 755 "$tmp"
pids=()                     # processes started here and not yet stopped

# alive PID: true while PID exists and is not a zombie (kill -0 succeeds on zombies).
alive() {
	local s
	s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "${s%% *}" != Z ]
}

forget() {
	local p rest=()
	for p in "${pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
	pids=("${rest[@]}")
}

# stop PID: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; sets stop_rc to its exit status.
stop() {
	local pid=$1 i=0
	stop_rc=0
	kill -TERM "$pid" 2>/dev/null || true
	while alive "$pid" && [ "$i" -lt $((STOP_TIMEOUT * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if alive "$pid"; then
		echo "throughput.sh: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || stop_rc=$?
	forget "$pid"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do stop "$p"; done
	if [ "$KEEP_TMP" = 1 ] || [ "$failed" = 1 ]; then
		echo "throughput.sh: work directory (configs, logs, sink counters) kept: $tmp" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The last "sess=N quit=N mesg=N" record written by smtp-sink -c ("\r"-separated); prints N.
sink_count() {
	local last
	last=$(tail -c 200 "$1" | tr '\r' '\n' | grep 'mesg=' | tail -n 1) || true
	last=${last##*mesg=}
	echo "${last:-0}"
}

show_log() { # FILE WHAT
	if [ -s "$1" ]; then
		echo "---- last lines of $2 ($1) ----" >&2
		tail -n 25 "$1" >&2
		echo "----" >&2
	fi
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

# run_case MODE KEEP N: MODE direct|portier|portier_b, KEEP yes = smtp-source -d, N messages.
# Sets elapsed (s), rate (msg/s) and hwm (portier's VmHWM in bytes, 0 for direct); dies on failure.
run_case() {
	local mode=$1 keep=$2 n=$3
	local sport pport target spid xpid="" conf log rc got i
	local tag=${mode}-${keep}-${n}
	read -r sport pport < <(lib ports 2)

	"$SINK" -c "${sink_user[@]}" "127.0.0.1:$sport" 1024 >"$tmp/sink-$tag.out" 2>"$tmp/sink-$tag.err" &
	spid=$!
	pids+=("$spid")
	lib wait-smtp "$sport" "$START_TIMEOUT" "$spid" 2>"$tmp/wait.err" || {
		show_log "$tmp/sink-$tag.err" smtp-sink
		die "smtp-sink did not start: $(cat "$tmp/wait.err")"
	}
	target=$sport

	hwm=0
	if [ "$mode" != direct ]; then
		local bin=$PORTIER filters=${FILTERS:-}
		[ "$mode" = portier_b ] && bin=$PORTIER_B filters=${FILTERS_B:-}
		conf=$tmp/portier-$tag.conf
		log=$tmp/portier-$tag.log
		cat >"$conf" <<-EOF
			; written by bench/throughput.sh
			[server]
			hostname = bench.test
			$portier_user
			workers = ${WORKERS:-0}
			log = stderr
			local_domains = example.test
			max_sessions = 20000
			${IO_URING:+io_uring = $IO_URING}
			${SERVER_EXTRA:-}

			[listener bench]
			listen = 127.0.0.1:$pport
			role = mx
			tls = none
			${filters:+filters = $filters}

			[backend]
			relay = smtp:127.0.0.1:$sport
			relay_pool = 32

			${CONF_EXTRA:-}
		EOF
		chmod 644 "$conf"
		"$bin" -c "$conf" >"$log" 2>&1 &
		xpid=$!
		pids+=("$xpid")
		lib wait-smtp "$pport" "$START_TIMEOUT" "$xpid" 2>"$tmp/wait.err" || {
			show_log "$log" "portier's log"
			die "portier ($bin -c $conf) did not greet on 127.0.0.1:$pport: $(cat "$tmp/wait.err")"
		}
		target=$pport
	fi

	local flags=(-s "$SESSIONS" -m "$n" -f bench@origin.test -t rcpt@example.test -M client.test)
	if [ -n "${MESSAGE_FILE:-}" ]; then
		flags+=(-F "$MESSAGE_FILE")
	else
		flags+=(-l "$SIZE" -S bench)
	fi
	[ "$keep" = yes ] && flags+=(-d)
	lib timed "$RUN_TIMEOUT" "$tmp/time" "$SOURCE" "${flags[@]}" "127.0.0.1:$target" \
		2>"$tmp/source-$tag.err"
	read -r elapsed rc <"$tmp/time"
	if [ "$rc" != 0 ]; then
		show_log "$tmp/source-$tag.err" smtp-source
		[ -n "$xpid" ] && show_log "$log" "portier's log"
		if [ "$rc" = 124 ]; then
			die "$mode run: smtp-source did not finish $n messages within ${RUN_TIMEOUT}s (RUN_TIMEOUT)"
		fi
		die "$mode run: smtp-source exited with status $rc after ${elapsed}s"
	fi

	# Every message must have reached the sink, exactly once.
	i=0
	got=$(sink_count "$tmp/sink-$tag.out")
	while [ "$got" -lt "$n" ] && [ "$i" -lt $((COUNT_TIMEOUT * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
		got=$(sink_count "$tmp/sink-$tag.out")
	done
	if [ "$got" != "$n" ]; then
		[ -n "$xpid" ] && show_log "$log" "portier's log"
		die "$mode run: smtp-source sent $n messages but the sink counted $got"
	fi

	if [ -n "$xpid" ]; then
		alive "$xpid" || { show_log "$log" "portier's log"; die "portier exited during the run"; }
		hwm=$(lib status "$xpid" VmHWM)
		wmode=$(grep -o 'writes=[a-z_]*' "$log" | head -n 1) || wmode="writes=?"
		stop "$xpid"
		if [ "$stop_rc" != 0 ]; then
			echo "throughput.sh: warning: portier exited with status $stop_rc after SIGTERM (expected 0)" >&2
			show_log "$log" "portier's log"
		fi
	fi
	stop "$spid"

	rate=$(awk -v n="$n" -v t="$elapsed" 'BEGIN { printf "%.0f", n / t }')
}

# show LABEL N ELAPSED RATE HWM [NOTE]
show() {
	local extra=""
	[ "$5" = 0 ] || extra="   (peak RSS $(mb "$5"), VmHWM)"
	printf '%-15s %d msgs in %.2f s = %s msg/s%s%s\n' "$1:" "$2" "$3" "$4" "$extra" "${6:-}"
}

# median "RATE ELAPSED HWM" ...: the record with the median rate (lower middle for an even count)
median() {
	printf '%s\n' "$@" | sort -n -k1,1 | awk '{ r[NR] = $0 } END { print r[int((NR + 1) / 2)] }'
}

ratio_line() { # LABEL PORTIER_RATE DIRECT_RATE NOTE [TARGET]; sets below=1 when below target
	local r t=${5:-$TARGET}
	r=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')
	below=$(awk -v r="$r" -v t="$t" 'BEGIN { print (r < t) ? 1 : 0 }')
	printf '%-15s %s (target >= %s)%s%s\n' "$1:" "$r" "$t" \
		"$([ "$below" = 1 ] && echo ' BELOW TARGET' || echo ' ok')" "$4"
}

echo "portier throughput benchmark: $(nproc) cores; $SESSIONS sessions, $SIZE-byte messages," \
	"$MESSAGES messages per run; sink counts and saves nothing"
[ "$MESSAGES" -ge 10000 ] || echo "note: MESSAGES=$MESSAGES is below the benchmark's 10000: figures are indicative only"
[ "$portier_ok" = yes ] && echo "portier binary: $PORTIER" ||
	echo "portier binary: $PORTIER NOT FOUND: only the direct reference will run"

# Warm-up (not measured): page cache, smtp-source/sink binaries, TCP state.
if [ "$WARMUP" -gt 0 ]; then run_case direct no "$WARMUP"; fi

fail=0
keeps=(no)
[ "$KEEPALIVE" = no ] || keeps+=(yes)
for keep in "${keeps[@]}"; do
	echo
	if [ "$keep" = yes ]; then
		echo "smtp-source -d (sessions kept open, $SESSIONS connections in all):"
		suffix=" -d"
	else
		echo "one connection per message (smtp-source default):"
		suffix=""
	fi
	d_runs=()
	p_runs=()
	b_runs=()
	for ((round = 1; round <= ROUNDS; round++)); do
		tagr=""
		[ "$ROUNDS" = 1 ] || tagr=" #$round"
		run_case direct "$keep" "$MESSAGES"
		show "direct$suffix$tagr" "$MESSAGES" "$elapsed" "$rate" 0
		d_runs+=("$rate $elapsed 0")
		if [ "$portier_ok" = yes ]; then
			run_case portier "$keep" "$MESSAGES"
			show "portier$suffix$tagr" "$MESSAGES" "$elapsed" "$rate" "$hwm" "   $wmode"
			p_runs+=("$rate $elapsed $hwm")
		fi
		if [ -n "$PORTIER_B" ]; then
			run_case portier_b "$keep" "$MESSAGES"
			show "portier_b$suffix$tagr" "$MESSAGES" "$elapsed" "$rate" "$hwm" "   $wmode"
			b_runs+=("$rate $elapsed $hwm")
		fi
	done
	read -r d_rate d_el _ <<<"$(median "${d_runs[@]}")"
	if [ "$ROUNDS" != 1 ]; then
		echo "median of $ROUNDS rounds (peak RSS: highest of all rounds):"
		show "direct$suffix" "$MESSAGES" "$d_el" "$d_rate" 0
	fi
	if [ "$portier_ok" != yes ]; then
		echo "portier$suffix: NOT RUN: $PORTIER does not exist or is not executable" \
			"(build it: ./autogen.sh && ./configure && make; or set PORTIER=/path/to/portier)"
		continue
	fi
	read -r p_rate p_el p_hwm <<<"$(median "${p_runs[@]}")"
	if [ "$ROUNDS" != 1 ]; then
		p_hwm=$(printf '%s\n' "${p_runs[@]}" | awk '$3 > m { m = $3 } END { print m + 0 }')
		show "portier$suffix" "$MESSAGES" "$p_el" "$p_rate" "$p_hwm"
	fi
	if [ "$keep" = yes ]; then
		ratio_line "ratio$suffix" "$p_rate" "$d_rate" " [informational: the target is set for the default pair]"
	else
		ratio_line "ratio" "$p_rate" "$d_rate" ""
		if [ "$below" = 1 ]; then fail=2; fi
	fi
	if [ -n "$PORTIER_B" ]; then
		read -r b_rate b_el b_hwm <<<"$(median "${b_runs[@]}")"
		b_hwm=$(printf '%s\n' "${b_runs[@]}" | awk '$3 > m { m = $3 } END { print m + 0 }')
		show "portier_b$suffix" "$MESSAGES" "$b_el" "$b_rate" "$b_hwm" "   ($PORTIER_B)"
		ratio_line "ratio_b$suffix" "$b_rate" "$d_rate" " [PORTIER_B${FILTERS_B:+, filters = $FILTERS_B}]" \
			"${TARGET_B:-$TARGET}"
	fi
done

if [ "$portier_ok" != yes ]; then
	echo "throughput.sh: ERROR: portier half not run: $PORTIER does not exist or is not executable" >&2
	exit 1
fi
if [ "$fail" = 2 ] && [ "$STRICT" = 1 ]; then
	exit 2
fi
exit 0

#!/usr/bin/env bash
# bench/milter.sh - messages/s through one pass-through milter, in portier and in Postfix, next to
# each without it, in one invocation (issue #11).
#
# The milter is tests/milters/testmilter (libmilter, one thread per milter connection), run once
# on 127.0.0.1 without -l: it answers "continue" to every command of this traffic (nothing in
# it triggers anything) and hashes the body chunks it gets.  Both MTAs use that one process.
# Four cases, all smtp-source -> MTA -> smtp-sink (the sink counts and saves nothing), with
# SESSIONS parallel sessions, one connection per message, SIZE-byte messages (throughput.sh's
# 5,120 by default), MESSAGES messages per run:
#   A  portier, no filter                        } bench/throughput.sh, PORTIER and PORTIER_B =
#   B  portier, filters = milter:pass            } the same binary, FILTERS_B = milter:pass, its
#                                                  rounds alternating direct, A, B
#   C  Postfix smtpd, smtpd_milters = the milter } one private Postfix instance (own config and
#   D  Postfix smtpd, no milter                  } queue in the work directory, never the system's),
#                                                  two smtpd ports, relayhost = the sink; rounds D, C
# portier keeps no queue: its 250 is the sink's, so when smtp-source exits every message is at the
# sink.  Postfix writes each message to its queue on disk (fsync) and answers 250, and its own
# smtp client delivers it later; two figures per Postfix run: "accepted" (smtp-source's run, what
# a client sees) and "delivered" (until the sink counted every message, the same thing portier's
# figure measures).  Postfix runs with its defaults (in_flow_delay 1s, process limit 100,
# logging to a maillog file through postlogd) and milter_default_action = tempfail, so a milter
# that fails fails the run; a probe checks first that C's port consults the milter and D's not.
#
# How to read it: B/A is what the milter costs portier, C/D what the same milter costs Postfix;
# B/C compares the two MTAs with the milter (against Postfix's delivered rate; the accepted one
# is next to it).  The last line is testmilter's CPU time per message in B and in C (from
# /proc/PID/stat): libmilter runs a thread per milter connection, that is per SMTP session, and
# polls before every read, so the milter's own cost is a large part of what B/A and C/D show.
# The figures are medians of ROUNDS runs.  Source, MTA, milter and sink share the machine's
# cores: compare ratios from one invocation, not figures across invocations.  There is no
# target: throughput.sh's "ratio_b" line (B against direct) is printed with target >= 0.
#
# Environment: BUILD (the build directory holding smtpd/portier and tests/milters/testmilter;
#   default: the source root; use a build without sanitizers) PORTIER TESTMILTER, MESSAGES (5000)
#   SESSIONS (20) SIZE (5120) ROUNDS (3) WARMUP (500: unmeasured messages to each Postfix port,
#   and throughput.sh's own warm-up) RUN_TIMEOUT (60 + MESSAGES/25 s per run) KEEP_TMP (0), and
#   throughput.sh's other variables for A and B (KEEPALIVE defaults to no here).
# Runs as root (Postfix's master starts as root; portier and the sink drop to nobody).  Every
# process it starts is stopped by its PID (Postfix: its master and the children it had).
# Exit: 0 measured; 1 something failed (the work directory is then kept).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=/usr/bin/python3
SINK=/usr/sbin/smtp-sink
SOURCE=/usr/sbin/smtp-source
POSTFIX=/usr/sbin/postfix
BUILD=${BUILD:-$root}
PORTIER=${PORTIER:-$BUILD/smtpd/portier}
TESTMILTER=${TESTMILTER:-$BUILD/tests/milters/testmilter}
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-5120}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-500}
KEEP_TMP=${KEEP_TMP:-0}
START_TIMEOUT=15        # s for a server to answer
STOP_TIMEOUT=15         # s for a process to exit after SIGTERM before SIGKILL

failed=0
die() { echo "milter.sh: ERROR: $*" >&2; failed=1; exit 1; }
lib() { "$PY" "$here/benchlib.py" "$@"; }

for v in MESSAGES SESSIONS SIZE WARMUP ROUNDS; do
	case ${!v} in '' | *[!0-9]*) die "$v must be a non-negative integer, got '${!v}'" ;; esac
done
[ "$MESSAGES" -gt 0 ] && [ "$SESSIONS" -gt 0 ] && [ "$ROUNDS" -gt 0 ] ||
	die "MESSAGES, SESSIONS and ROUNDS must be > 0"
RUN_TIMEOUT=${RUN_TIMEOUT:-$((60 + MESSAGES / 25))}
[ "$(id -u)" = 0 ] || die "run as root: Postfix's master must start as root"
[ -x "$PORTIER" ] || die "$PORTIER not found: build portier first (or set BUILD / PORTIER)"
[ -x "$TESTMILTER" ] || die "$TESTMILTER not found: make tests/milters/testmilter in BUILD"
for f in "$PY" "$SINK" "$SOURCE" "$POSTFIX"; do
	[ -x "$f" ] || die "$f not found (Debian packages: python3, postfix)"
done

tmp=$(mktemp -d /tmp/portier-milterbench.XXXXXX)
chmod 755 "$tmp"                # Postfix's own user must traverse it
exec 9>&2                       # the script's own stderr, for cleanup
pids=()                         # our children not yet stopped
mpid=                           # Postfix's master (not our child)

# gone PID - true when PID no longer runs (a zombie counts as gone)
gone() {
	local s
	s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
	[ "${s%% *}" = Z ]
}

# stop PID... - SIGTERM, up to STOP_TIMEOUT for all of them to go, then SIGKILL to the rest
stop() {
	local p i=0 left
	kill -TERM "$@" 2>/dev/null || true
	while :; do
		left=()
		for p in "$@"; do gone "$p" || left+=("$p"); done
		[ "${#left[@]}" -gt 0 ] && [ "$i" -lt $((STOP_TIMEOUT * 10)) ] || break
		sleep 0.1
		i=$((i + 1))
	done
	if [ "${#left[@]}" -gt 0 ]; then
		echo "milter.sh: ${left[*]} ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL" >&2
		kill -KILL "${left[@]}" 2>/dev/null || true
	fi
}

# postfix_stop - the master by its PID, with the children it had (it signals its group too)
postfix_stop() {
	local kids
	[ -n "$mpid" ] || return 0
	mapfile -t kids < <(ps -o pid= --ppid "$mpid" | tr -d ' ')
	stop "$mpid" "${kids[@]}"
	mpid=
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	exec 2>&9       # a signal's trap may run inside a command's 2> redirection
	postfix_stop
	for p in "${pids[@]}"; do stop "$p"; wait "$p" 2>/dev/null || true; done
	if [ "$KEEP_TMP" = 1 ] || [ "$failed" = 1 ] || [ "$rc" != 0 ]; then
		echo "milter.sh: work directory (configs, logs, Postfix's maillog) kept: $tmp" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() { # FILE WHAT
	if [ -s "$1" ]; then
		echo "---- last lines of $2 ($1) ----" >&2
		tail -n 25 "$1" >&2
		echo "----" >&2
	fi
}

# sink_total - the messages smtp-sink -c has counted so far (its last "mesg=N" record)
sink_total() {
	tail -c 200 "$tmp/sink.out" | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' |
		tail -n 1 | grep . || echo 0
}

# median VALUE... - the middle value (the lower one of an even count)
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# milter_cpu - testmilter's CPU time so far (user + system), in microseconds
milter_cpu() {
	sed 's/^.*) //' "/proc/$tmpid/stat" |
		awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($12 + $13) * 1e6 / hz }'
}

read -r mport pfport_c pfport_d sinkport < <(lib ports 4)

# The milter: up when it takes a TCP connection.
"$TESTMILTER" -p "inet:$mport@127.0.0.1" -n pass >"$tmp/testmilter.log" 2>&1 &
tmpid=$!
pids+=("$tmpid")
for ((i = 0; i < START_TIMEOUT * 10; i++)); do
	(exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break
	gone "$tmpid" && break
	sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null || {
	show_log "$tmp/testmilter.log" testmilter
	die "testmilter does not listen on 127.0.0.1:$mport"
}

echo "milter benchmark: testmilter (libmilter, pass-through) on 127.0.0.1:$mport; $(nproc) cores," \
	"$SESSIONS sessions, $SIZE-byte messages, $MESSAGES messages per run, $ROUNDS rounds"
cpu0=$(milter_cpu)
echo
echo "== A, B: portier without and with filters = milter:pass (bench/throughput.sh) =="
export PORTIER
PORTIER_B=$PORTIER FILTERS_B=milter:pass TARGET_B=0 \
	KEEPALIVE=${KEEPALIVE:-no} MESSAGES=$MESSAGES SESSIONS=$SESSIONS SIZE=$SIZE ROUNDS=$ROUNDS \
	WARMUP=$WARMUP CONF_EXTRA="[milter pass]
socket = inet:127.0.0.1:$mport" "$here/throughput.sh" | tee "$tmp/throughput.out" ||
	die "bench/throughput.sh failed"
# Its median lines ("portier:", "portier_b:"; per-round lines carry " #N").
rate_of() { awk -v l="$1:" '$1 == l { for (i = 1; i < NF; i++) if ($i == "=") r = $(i + 1) }
	END { print r }' "$tmp/throughput.out"; }
rate_a=$(rate_of portier)
rate_b=$(rate_of portier_b)
[ -n "$rate_a" ] && [ -n "$rate_b" ] || die "no portier / portier_b figure in throughput.sh's output"
gone "$tmpid" && die "testmilter exited during the portier runs"
cpu_b=$(($(milter_cpu) - cpu0))     # only B's runs talk to the milter

# The Postfix instance (../shared/recipes/postfix-instance.md): all mail relays to the sink.
pf=$tmp/postfix
mkdir -p "$pf/etc" "$pf/spool"
cat >"$pf/etc/main.cf" <<EOF
# written by bench/milter.sh
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pf-bench.example.test
mydomain = example.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:$sinkport
smtp_dns_support_level = disabled
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
milter_default_action = tempfail
biff = no
EOF
cat >"$pf/etc/master.cf" <<EOF
# written by bench/milter.sh: C on $pfport_c, D on $pfport_d
127.0.0.1:$pfport_c inet n - n - - smtpd -o smtpd_milters=inet:127.0.0.1:$mport
127.0.0.1:$pfport_d inet n - n - - smtpd -o smtpd_milters=
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF

# One sink for every Postfix run: each run waits for its own messages on top of the count so far.
"$SINK" -c -u nobody "127.0.0.1:$sinkport" 1024 >"$tmp/sink.out" 2>"$tmp/sink.err" &
spid=$!
pids+=("$spid")
lib wait-smtp "$sinkport" "$START_TIMEOUT" "$spid" 2>"$tmp/wait.err" ||
	die "smtp-sink did not start: $(cat "$tmp/wait.err")"

"$POSTFIX" -c "$pf/etc" start >"$tmp/postfix-start.out" 2>&1 || {
	show_log "$tmp/postfix-start.out" "postfix start"
	show_log "$pf/maillog" "Postfix's maillog"
	die "postfix -c $pf/etc start failed"
}
mpid=$(tr -d ' \n' <"$pf/spool/pid/master.pid")
for port in "$pfport_c" "$pfport_d"; do
	lib wait-smtp "$port" "$START_TIMEOUT" "$mpid" 2>"$tmp/wait.err" || {
		show_log "$pf/maillog" "Postfix's maillog"
		die "Postfix does not greet on 127.0.0.1:$port: $(cat "$tmp/wait.err")"
	}
done

# send PORT N [FROM] - smtp-source as throughput.sh runs it; sets elapsed and rc
send() {
	lib timed "$RUN_TIMEOUT" "$tmp/time" "$SOURCE" -s "$SESSIONS" -m "$2" -l "$SIZE" -S bench \
		-f "${3:-bench@origin.test}" -t rcpt@example.test -M client.test "127.0.0.1:$1" \
		2>"$tmp/source.err" >/dev/null
	read -r elapsed rc <"$tmp/time"
}

# The probe: testmilter rejects a sender whose local part starts with "mreject".  Through C's
# port the message must not reach the sink, through D's it must.
before=$(sink_total)
SESSIONS=1 send "$pfport_c" 1 mreject@origin.test
for ((i = 0; i < 50; i++)); do
	grep -q milter-reject "$pf/maillog" 2>/dev/null && break
	sleep 0.1
done
SESSIONS=1 send "$pfport_d" 1 mreject@origin.test
for ((i = 0; i < 50; i++)); do [ "$(sink_total)" = "$before" ] || break; sleep 0.1; done
if ! grep -q milter-reject "$pf/maillog" 2>/dev/null || [ "$(sink_total)" != $((before + 1)) ]; then
	show_log "$pf/maillog" "Postfix's maillog"
	die "probe: mreject@ should be refused by the milter on $pfport_c and reach the sink" \
		"through $pfport_d; the sink counted $(($(sink_total) - before))"
fi

# postfix_run PORT N - N messages to Postfix on PORT; sets acc_rate and del_rate (msg/s) and the
# times they come from, or dies
postfix_run() {
	local port=$1 n=$2 base got t0 i=0
	base=$(sink_total)
	t0=$EPOCHREALTIME
	send "$port" "$n"
	acc_s=$elapsed
	if [ "$rc" != 0 ]; then
		show_log "$tmp/source.err" smtp-source
		show_log "$pf/maillog" "Postfix's maillog"
		die "Postfix on $port: smtp-source exited with status $rc after ${elapsed}s (124: RUN_TIMEOUT)"
	fi
	got=$(sink_total)
	while [ $((got - base)) -lt "$n" ] && [ "$i" -lt $((RUN_TIMEOUT * 20)) ]; do
		sleep 0.05
		i=$((i + 1))
		got=$(sink_total)
	done
	del_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f", b - a }')
	if [ $((got - base)) != "$n" ]; then
		show_log "$pf/maillog" "Postfix's maillog"
		die "Postfix on $port: $n messages accepted, the sink counted $((got - base))"
	fi
	acc_rate=$(awk -v n="$n" -v t="$acc_s" 'BEGIN { printf "%.0f", n / t }')
	del_rate=$(awk -v n="$n" -v t="$del_s" 'BEGIN { printf "%.0f", n / t }')
}

echo
echo "== C, D: Postfix $(postconf -d -h mail_version) smtpd with and without smtpd_milters =" \
	"the same testmilter, relayhost = smtp-sink =="
echo "Postfix queues: each message is written to $pf/spool ($(stat -f -c %T "$pf/spool")) and" \
	"fsynced before its 250, then delivered by Postfix's smtp client; portier's 250 is the sink's"
cpu0=$(milter_cpu)
if [ "$WARMUP" -gt 0 ]; then
	postfix_run "$pfport_d" "$WARMUP"
	postfix_run "$pfport_c" "$WARMUP"
fi
c_acc=() c_del=() d_acc=() d_del=()
for ((round = 1; round <= ROUNDS; round++)); do
	for mode in D C; do
		if [ "$mode" = C ]; then
			postfix_run "$pfport_c" "$MESSAGES"
			c_acc+=("$acc_rate") c_del+=("$del_rate")
			label="postfix+milter"
		else
			postfix_run "$pfport_d" "$MESSAGES"
			d_acc+=("$acc_rate") d_del+=("$del_rate")
			label="postfix"
		fi
		printf '%-22s %d msgs accepted in %.2f s = %s msg/s, at the sink in %.2f s = %s msg/s\n' \
			"$label #$round:" "$MESSAGES" "$acc_s" "$acc_rate" "$del_s" "$del_rate"
	done
done
gone "$tmpid" && die "testmilter exited during the Postfix runs"
cpu_c=$(($(milter_cpu) - cpu0))     # C's warm-up and runs
postfix_stop

ca=$(median "${c_acc[@]}") cdel=$(median "${c_del[@]}")
da=$(median "${d_acc[@]}") ddel=$(median "${d_del[@]}")
echo
echo "== summary: msg/s, medians of $ROUNDS rounds of $MESSAGES messages =="
printf '%-42s %6s msg/s\n' "A portier, no filter:" "$rate_a"
printf '%-42s %6s msg/s\n' "B portier, filters = milter:pass:" "$rate_b"
pf_fmt='%-42s %6s msg/s delivered (%s accepted)\n'
printf "$pf_fmt" "C Postfix, smtpd_milters = testmilter:" "$cdel" "$ca"
printf "$pf_fmt" "D Postfix, no milter:" "$ddel" "$da"
echo "B/A: $(ratio "$rate_b" "$rate_a")   what the milter costs portier"
echo "C/D: $(ratio "$cdel" "$ddel") delivered, $(ratio "$ca" "$da") accepted" \
	"  what the same milter costs Postfix"
echo "B/C: $(ratio "$rate_b" "$cdel") against Postfix's delivered rate, $(ratio "$rate_b" "$ca")" \
	"against its accepted rate   (Postfix queues to disk and fsyncs; portier relays before its 250)"
echo "testmilter's CPU per message: $((cpu_b / (ROUNDS * MESSAGES))) us with portier (B)," \
	"$((cpu_c / (ROUNDS * MESSAGES + WARMUP))) us with Postfix (C)"

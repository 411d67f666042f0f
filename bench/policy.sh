#!/usr/bin/env bash
# bench/policy.sh - messages/s through portier with the shared-state policies (ratelimit and
# greylist) on Redis and in memory, next to no policy filter, in one invocation.
#
# smtp-source -> portier -> smtp-sink, through bench/throughput.sh, twice: PORTIER without
# filters and PORTIER_B = the same binary with "filters = ratelimit greylist",
#   (1) in memory (no [redis]),
#   (2) on a private redis-server on 127.0.0.1 (started here, stopped by its PID).
# Each throughput.sh run alternates the direct reference, no filter and the policies, so each
# ratio is taken within one run; the last lines put the two runs side by side.
#
# ratelimit counts everything that applies to a client without AUTH: connections, messages and
# recipients per client and per network, messages and recipients per sender domain (8 counters
# a message), with limits far above what the run sends (nothing is refused: a refused message
# would fail the run, which checks that the sink got every one).  greylist runs with delay = 0
# (every triplet passes, but is looked up and recorded in the store); if this portier refuses
# delay = 0, greylist is left out and the output says so.
#
# Environment: PORTIER (smtpd/portier: build without sanitizers), REDIS_SERVER
# (/usr/bin/redis-server) and everything bench/throughput.sh reads (MESSAGES, SESSIONS, SIZE,
# ROUNDS, KEEPALIVE, WORKERS...).  KEEPALIVE defaults to no here (the per-connection path is
# the one the connection counters are on).
# Exit: 0 measured; 1 a run failed or a program is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=/usr/bin/python3
PORTIER=${PORTIER:-$root/smtpd/portier}
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}
export KEEPALIVE=${KEEPALIVE:-no}

die() { echo "policy.sh: ERROR: $*" >&2; exit 1; }
lib() { "$PY" "$here/benchlib.py" "$@"; }
[ -x "$PORTIER" ] || die "$PORTIER not found: build portier first"
[ -x "$REDIS_SERVER" ] && [ -x "$REDIS_CLI" ] ||
	die "$REDIS_SERVER / $REDIS_CLI not found (Debian package: redis-server)"

tmp=$(mktemp -d /tmp/portier-policybench.XXXXXX)
chmod 755 "$tmp"
rpid=
cleanup() {
	if [ -n "$rpid" ]; then
		kill "$rpid" 2>/dev/null || true
		wait "$rpid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

BIG=1000000000/3600
RATELIMIT="[filter ratelimit]
client_connections = $BIG
network_connections = $BIG
client_messages = $BIG
network_messages = $BIG
sender_domain_messages = $BIG
client_recipients = $BIG
network_recipients = $BIG
sender_domain_recipients = $BIG
"
GREYLIST="[filter greylist]
delay = 0
"

# Does this portier take greylist with delay = 0?
cat >"$tmp/probe.conf" <<EOF
[server]
hostname = bench.test
local_domains = example.test
[listener bench]
listen = 127.0.0.1:2525
role = mx
filters = ratelimit greylist
[backend]
relay = smtp:127.0.0.1:9
$RATELIMIT
$GREYLIST
EOF
if "$PORTIER" -t -c "$tmp/probe.conf" >"$tmp/probe.out" 2>&1; then
	policies="ratelimit greylist"
	extra="$RATELIMIT
$GREYLIST"
else
	policies="ratelimit"
	extra=$RATELIMIT
	echo "note: greylist left out: this portier refuses it with delay = 0:" \
		"$(tail -n 1 "$tmp/probe.out")"
fi

# The Redis server.
rport=$(lib ports 1)
"$REDIS_SERVER" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
	--logfile "$tmp/redis.log" --daemonize no >/dev/null 2>&1 &
rpid=$!
for _ in $(seq 50); do
	[ "$("$REDIS_CLI" -p "$rport" PING 2>/dev/null)" = PONG ] && break
	sleep 0.1
done
[ "$("$REDIS_CLI" -p "$rport" PING 2>/dev/null)" = PONG ] ||
	die "redis-server did not start: $(tail -n 5 "$tmp/redis.log" 2>/dev/null)"

# run NAME CONF_EXTRA: one throughput.sh run, its output shown and kept in $tmp/NAME.out
run() {
	echo
	echo "==== $1: filters = $policies$([ "$1" = redis ] && echo ", [redis] on 127.0.0.1:$rport")"
	PORTIER=$PORTIER PORTIER_B=$PORTIER FILTERS_B=$policies TARGET_B=0 CONF_EXTRA="$2" \
		"$here/throughput.sh" | tee "$tmp/$1.out"
	[ "${PIPESTATUS[0]}" = 0 ] || die "throughput.sh failed for the $1 run"
}

# rate FILE LABEL: the msg/s of the last "LABEL:" line (the median when ROUNDS > 1)
rate() {
	awk -v l="$2:" '$1 == l { for (i = 2; i <= NF; i++) if ($i == "msg/s") r = $(i - 1) }
		END { print r + 0 }' "$1"
}

# paired FILE: the median over the rounds of portier_b / portier within each round (the
# machine's speed drifts between rounds; a ratio within a round is steadier than one of medians)
paired() {
	awk '/^median of/ { medians = 1 }
	!medians && $1 ~ /^portier(_b)?(:|$)/ && !/\(\// {
		lab = $1; sub(/:$/, "", lab); k = ($2 ~ /^#/) ? $2 : "#1"
		for (i = 2; i <= NF; i++) if ($i == "msg/s") r[lab, k] = $(i - 1)
		if (lab == "portier") ks[k] = 1
	}
	END {
		n = 0
		for (k in ks) if (r["portier", k] > 0 && r["portier_b", k] > 0)
			v[++n] = r["portier_b", k] / r["portier", k]
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
		printf "%.2f\n", n ? v[int((n + 1) / 2)] : 0
	}' "$1"
}

run memory "$extra"
"$REDIS_CLI" -p "$rport" CONFIG RESETSTAT >/dev/null
run redis "$extra
[redis]
server = 127.0.0.1:$rport"
evals=$("$REDIS_CLI" -p "$rport" INFO commandstats | tr -d '\r' |
	awk -F'[=,:]' '/^cmdstat_eval(sha)?:/ { n += $3 } END { print n + 0 }')

m0=$(rate "$tmp/memory.out" portier)
m1=$(rate "$tmp/memory.out" portier_b)
r0=$(rate "$tmp/redis.out" portier)
r1=$(rate "$tmp/redis.out" portier_b)
mp=$(paired "$tmp/memory.out")
rp=$(paired "$tmp/redis.out")
echo
echo "summary ($(nproc) cores; rates: medians of the rounds; ratios: median of the ratios"
echo "within each round, policy filters / no filter):"
awk -v m0="$m0" -v m1="$m1" -v r0="$r0" -v r1="$r1" -v mp="$mp" -v rp="$rp" -v p="$policies" \
	-v e="${evals:-0}" 'BEGIN {
	printf "%-28s %8.0f msg/s\n", "no policy filter (run 1):", m0
	printf "%-28s %8.0f msg/s   %.2f x no filter\n", p " in memory:", m1, mp
	printf "%-28s %8.0f msg/s\n", "no policy filter (run 2):", r0
	printf "%-28s %8.0f msg/s   %.2f x no filter\n", p " on Redis:", r1, rp
	printf "%-28s %8.2f\n", "Redis / memory:", (mp > 0) ? rp / mp : 0
	printf "%-28s %8d (all rounds of run 2, warm-up excluded)\n", "Redis script calls:", e
}'

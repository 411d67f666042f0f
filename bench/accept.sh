#!/usr/bin/env bash
# bench/accept.sh - portier's connection-accept rate with the per-client concurrency limits on
# (listener keys client_limit = 10, network_limit = 100) next to off, and how a flood from one
# address beyond its limit affects the sessions of another, in one invocation.
#
# Two portiers (the same PORTIER, build without sanitizers), started once and alike but for the
# two keys: "off" and "on".  A small client in C (one epoll loop; written to the work dir and
# built with CC) makes short sessions: connect, read the 220 banner, QUIT, read the 221.
#   rate:    N sessions at CONC at once, from ADDRS loopback addresses (127.0.0.2 ... : CONC /
#            ADDRS per address, below client_limit; all of 127.0.0.0/24 is one network, below
#            network_limit), for off then on in each of ROUNDS rounds, after a warm-up of each.
#            Reported: sessions/s (median of the rounds), portier's CPU per session (user +
#            system of all its threads, from /proc/PID/stat) and the ratio on/off (median of the
#            ratios within each round).  A refused or failed session fails the run.
#   flood:   on "on": 127.0.1.2 holds client_limit sessions open, then FLOOD_CONC slots open
#            connections from it as fast as they can for FLOOD_SECS s (each gets 421 4.7.0 at
#            once and is reset); meanwhile 127.0.0.3 (another network) runs sessions one after
#            the other (connect, banner, EHLO, QUIT) and reports their latency (p50/p99), next
#            to the same measure just before without the flood.  The flooder runs in a process
#            of its own.
#
# Environment: PORTIER (smtpd/portier), N (50000), CONC (32), ADDRS (8), ROUNDS (3),
# WARMUP (2000), WORKERS (0: one loop per core), FLOOD_SECS (5), FLOOD_CONC (64),
# LATENCY_N (sessions of the latency measure, 3000), KEEP_TMP (0), CC (cc).
# Exit: 0 measured; 1 a run failed or portier is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=/usr/bin/python3
CC=${CC:-cc}
PORTIER=${PORTIER:-$root/smtpd/portier}
N=${N:-50000}
CONC=${CONC:-32}
ADDRS=${ADDRS:-8}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2000}
WORKERS=${WORKERS:-0}
FLOOD_SECS=${FLOOD_SECS:-5}
FLOOD_CONC=${FLOOD_CONC:-64}
LATENCY_N=${LATENCY_N:-3000}
CLIENT_LIMIT=10
NETWORK_LIMIT=100

lib() { "$PY" "$here/benchlib.py" "$@"; }
[ -x "$PORTIER" ] || { echo "accept.sh: ERROR: $PORTIER not found: build portier first" >&2; exit 1; }

tmp=$(mktemp -d /tmp/portier-acceptbench.XXXXXX)
chmod 755 "$tmp"
pids=()
failed=0
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	if [ "${KEEP_TMP:-0}" = 1 ] || [ "$failed" = 1 ]; then
		echo "work directory kept: $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

die() {
	failed=1
	echo "accept.sh: ERROR: $*" >&2
	local f
	for f in "$tmp"/*.log; do
		[ -s "$f" ] && { echo "--- tail of $f" >&2; tail -n 5 "$f" >&2; }
	done
	exit 1
}

cat >"$tmp/client.c" <<'EOF'
/*
 * client.c - the accept benchmark's client: short SMTP sessions on one
 * epoll loop.  Prints one line of name=value fields.
 *   rate PORT N CONC ADDR...         N sessions (connect, 220, QUIT, 221), CONC
 *                                    at once, slot i from ADDR[i % count]:
 *                                    ok= refused= errors= secs=
 *   flood PORT SECS CONC HOLD ADDR   HOLD sessions held open from ADDR, then
 *                                    CONC slots connect, read one reply and
 *                                    reset, for SECS s:
 *                                    held= refused= other= errors= secs=
 *   latency PORT COUNT ADDR          COUNT sessions (connect, 220, EHLO, 250,
 *                                    QUIT, 221) one after the other:
 *                                    n= errors= p50_ms= p99_ms= max_ms=
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { RATE, FLOOD, LATENCY };

struct conn {
	int fd, step, src;
	size_t len;
	double t0;
	char buf[2048];
};

static int mode, ep, nsrc;
static struct sockaddr_in dst, *srcs;
static long left, ok, refused, other, errors, active;
static double deadline, *lat;

static const char *cmds[] = { NULL, "EHLO bench.test\r\n", "QUIT\r\n" };
static const int codes[] = { 220, 250, 221 };

/* now - the monotonic clock in seconds */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* more - whether a slot that is done starts another session */
static int
more(void)
{
	if (mode == FLOOD)
		return now() < deadline;
	return left > 0;
}

/* start - a new session on c: nonblocking connect from its address */
static void
start(struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int one = 1;

	for (;;) {
		if (mode != FLOOD)
			left--;
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd < 0) {
			perror("socket");
			exit(1);
		}
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		c->len = 0;
		c->step = 0;
		c->t0 = now();
		if (bind(c->fd, (struct sockaddr *)&srcs[c->src], sizeof(srcs[0])) == 0 &&
		    (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) == 0 ||
		    errno == EINPROGRESS)) {
			ev.data.ptr = c;
			if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
				perror("epoll_ctl");
				exit(1);
			}
			return;
		}
		errors++;
		close(c->fd);
		if (!more()) {
			active--;
			return;
		}
	}
}

/* finish - close c's session (a reset with rst) and start another or retire */
static void
finish(struct conn *c, int rst)
{
	struct linger l = { 1, 0 };

	if (rst)
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(c->fd);
	if (more())
		start(c);
	else
		active--;
}

/* reply - c got a whole reply with code */
static void
reply(struct conn *c, int code)
{
	const char *cmd;

	if (mode == FLOOD) {
		if (code == 421)
			refused++;
		else
			other++;
		finish(c, 1);
		return;
	}
	if (code == 421 && c->step == 0) {
		refused++;
		finish(c, 0);
		return;
	}
	if (code != codes[c->step]) {
		errors++;
		finish(c, 0);
		return;
	}
	if (c->step == 2) {
		if (mode == LATENCY)
			lat[ok] = now() - c->t0;
		ok++;
		finish(c, 0);
		return;
	}
	c->step = mode == LATENCY ? c->step + 1 : 2;
	cmd = cmds[c->step];
	if (write(c->fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd)) {
		errors++;
		finish(c, 0);
	}
}

/* readable - read what c's server sent; act on each whole reply */
static void
readable(struct conn *c)
{
	ssize_t n;
	char *p, *eol;

	n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		errors++;
		finish(c, 0);
		return;
	}
	c->len += n;
	c->buf[c->len] = '\0';
	p = c->buf;
	while ((eol = strstr(p, "\r\n")) != NULL) {
		if (eol - p >= 3 && p[3] != '-') {
			c->len = 0;		/* one reply at a time: nothing follows it */
			reply(c, atoi(p));
			return;
		}
		p = eol + 2;
	}
	if (c->len == sizeof(c->buf) - 1) {
		errors++;
		finish(c, 0);
	}
}

/* hold - count blocking sessions from src that got their banner, kept open */
static long
hold(long count, struct sockaddr_in *src)
{
	char buf[512];
	long i;

	for (i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0 || bind(fd, (struct sockaddr *)src, sizeof(*src)) != 0 ||
		    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 ||
		    read(fd, buf, sizeof(buf)) < 4 || strncmp(buf, "220", 3) != 0) {
			fprintf(stderr, "a held session got no 220\n");
			exit(1);
		}
	}
	return i;
}

static int
cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[256];
	struct conn *conns;
	long conc, held = 0, i;
	double t0, last;
	int argi;

	if (argc < 5) {
		fprintf(stderr, "usage: client rate|flood|latency PORT ...\n");
		return 2;
	}
	mode = strcmp(argv[1], "rate") == 0 ? RATE : strcmp(argv[1], "flood") == 0 ? FLOOD :
	    LATENCY;
	dst.sin_family = AF_INET;
	dst.sin_port = htons(atoi(argv[2]));
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	if (mode == RATE) {
		left = atol(argv[3]);
		conc = atol(argv[4]);
		argi = 5;
	} else if (mode == FLOOD) {
		deadline = atof(argv[3]);
		conc = atol(argv[4]);
		argi = 6;
	} else {
		left = atol(argv[3]);
		conc = 1;
		argi = 4;
		lat = calloc(left, sizeof(*lat));
	}
	nsrc = argc - argi;
	if (nsrc < 1 || conc < 1)
		return 2;
	srcs = calloc(nsrc, sizeof(*srcs));
	for (i = 0; i < nsrc; i++) {
		srcs[i].sin_family = AF_INET;
		if (inet_pton(AF_INET, argv[argi + i], &srcs[i].sin_addr) != 1)
			return 2;
	}
	if (mode == FLOOD)
		held = hold(atol(argv[5]), &srcs[0]);
	ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc(conc, sizeof(*conns));
	t0 = last = now();
	if (mode == FLOOD)
		deadline += t0;
	for (i = 0; i < conc && more(); i++) {
		conns[i].src = i % nsrc;
		active++;
		start(&conns[i]);
	}
	while (active > 0) {
		long before = ok + refused + other + errors;
		int n = epoll_wait(ep, evs, 256, 1000);

		for (i = 0; i < n; i++)
			readable(evs[i].data.ptr);
		if (ok + refused + other + errors != before)
			last = now();
		else if (now() - last > 10) {
			fprintf(stderr, "no progress for 10 s (%ld sessions open)\n", active);
			return 1;
		}
	}
	t0 = now() - t0;
	if (mode == RATE)
		printf("ok=%ld refused=%ld errors=%ld secs=%.3f\n", ok, refused, errors, t0);
	else if (mode == FLOOD)
		printf("held=%ld refused=%ld other=%ld errors=%ld secs=%.3f\n", held, refused,
		    other, errors, t0);
	else {
		qsort(lat, ok, sizeof(*lat), cmpd);
		if (ok == 0)
			printf("n=0 errors=%ld p50_ms=nan p99_ms=nan max_ms=nan\n", errors);
		else
			printf("n=%ld errors=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", ok, errors,
			    1000 * lat[ok / 2], 1000 * lat[ok * 99 / 100],
			    1000 * lat[ok - 1]);
	}
	return 0;
}
EOF
"$CC" -O2 -Wall -o "$tmp/client" "$tmp/client.c" || die "cannot build the client with $CC"

# start NAME PORT KEYS: a portier with an mx listener on PORT plus KEYS (listener lines)
start() {
	cat >"$tmp/$1.conf" <<EOC
[server]
hostname = bench.test
user = nobody
workers = $WORKERS
log = stderr
local_domains = example.test
drain_timeout = 2
[listener mx]
listen = 127.0.0.1:$2
role = mx
tls = none
reverse_lookup = no
$3
[backend]
relay = smtp:127.0.0.1:9
EOC
	"$PORTIER" -c "$tmp/$1.conf" >"$tmp/$1.log" 2>&1 &
	pids+=($!)
	eval "pid_$1=$!"
	lib wait-smtp "$2" 15 "$!" || die "portier ($1) did not start"
}

read -r port_off port_on <<<"$(lib ports 2)"
start off "$port_off" ""
start on "$port_on" "client_limit = $CLIENT_LIMIT
network_limit = $NETWORK_LIMIT"

addrs=()
for i in $(seq 2 $((ADDRS + 1))); do addrs+=("127.0.0.$i"); done

# cpu PID: utime + stime of PID (all threads) in clock ticks
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# field LINE NAME: NAME's value in a client's output line
field() { sed -n "s/.*\\b$2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }

# rate NAME COUNT: one rate run on portier NAME; sets rate_r (sessions/s) and rate_c (us of
# portier CPU per session)
rate() {
	local pid port c0 out
	pid=$(eval echo "\$pid_$1")
	port=$(eval echo "\$port_$1")
	c0=$(cpu "$pid")
	out=$("$tmp/client" rate "$port" "$2" "$CONC" "${addrs[@]}") ||
		die "the client failed on $1"
	echo "$1: $out" >>"$tmp/runs.txt"
	[ "$(field "$out" ok)" = "$2" ] || die "$1: not every session went through: $out"
	read -r rate_r rate_c <<<"$(awk -v n="$2" -v s="$(field "$out" secs)" \
		-v c="$(( $(cpu "$pid") - c0 ))" -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%.0f %.1f\n", n / s, c * 1e6 / hz / n }')"
}

echo "accept rate: $N sessions (connect, 220, QUIT, 221) at $CONC at once from ${#addrs[@]}" \
	"addresses, $ROUNDS rounds; $(nproc) cores, workers = $WORKERS"
rate off "$WARMUP"
rate on "$WARMUP"
: >"$tmp/rounds.txt"
for r in $(seq "$ROUNDS"); do
	rate off "$N"
	off_r=$rate_r off_c=$rate_c
	rate on "$N"
	printf "round %d: off %6d sessions/s (%5.1f us CPU each)   on %6d sessions/s (%5.1f us CPU each)\n" \
		"$r" "$off_r" "$off_c" "$rate_r" "$rate_c"
	echo "$off_r $off_c $rate_r $rate_c" >>"$tmp/rounds.txt"
done
grep -q "event=client_limit\|event=network_limit" "$tmp/on.log" &&
	die "a session of the rate runs was refused on \"on\""
awk '
function median(a, n,   i, j, t) {
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((n + 1) / 2)]
}
{ n++; or[n] = $1; oc[n] = $2; nr[n] = $3; nc[n] = $4; q[n] = $3 / $1 }
END {
	printf "limits off:          %6d sessions/s  %5.1f us portier CPU/session (medians)\n", median(or, n), median(oc, n)
	printf "limits on (10/100):  %6d sessions/s  %5.1f us portier CPU/session (medians)\n", median(nr, n), median(nc, n)
	printf "ratio on/off:        %6.2f (median of the ratios within each round)\n", median(q, n)
}' "$tmp/rounds.txt"

echo
echo "flood: 127.0.1.2 holds $CLIENT_LIMIT sessions and opens more from $FLOOD_CONC slots for" \
	"${FLOOD_SECS} s; 127.0.0.3 measures $LATENCY_N sessions (connect, 220, EHLO, QUIT)"
quiet=$("$tmp/client" latency "$port_on" "$LATENCY_N" 127.0.0.3) || die "latency client"
"$tmp/client" flood "$port_on" "$FLOOD_SECS" "$FLOOD_CONC" "$CLIENT_LIMIT" 127.0.1.2 \
	>"$tmp/flood.out" 2>"$tmp/flood.log" &
fpid=$!
pids+=("$fpid")
sleep 0.5
loaded=$("$tmp/client" latency "$port_on" "$LATENCY_N" 127.0.0.3) || die "latency client"
flooding=yes
kill -0 "$fpid" 2>/dev/null || flooding=no
wait "$fpid" || die "the flood client failed"
flood=$(cat "$tmp/flood.out")
refusals=$(grep -c "event=client_limit client=127.0.1.2 " "$tmp/on.log" || true)
flooder_lines=$(grep -c " client=127.0.1.2 " "$tmp/on.log" || true)
echo "127.0.0.3 alone:       $quiet"
echo "127.0.0.3 under flood: $loaded$([ $flooding = no ] && echo "  (the flood ended before the measure did)")"
echo "flooder 127.0.1.2:     $flood"
awk -v r="$(field "$flood" refused)" -v s="$(field "$flood" secs)" -v l="$refusals" -v a="$flooder_lines" \
	-v q="$(field "$quiet" p99_ms)" -v f="$(field "$loaded" p99_ms)" \
	-v q5="$(field "$quiet" p50_ms)" -v f5="$(field "$loaded" p50_ms)" 'BEGIN {
	printf "flood refused:       %6d connections/s with 421 4.7.0 (%d event=client_limit lines logged, %d lines naming the flooder in all)\n", r / s, l, a
	printf "127.0.0.3 latency:   p50 %.2f -> %.2f ms, p99 %.2f -> %.2f ms (alone -> under flood)\n", q5, f5, q, f
}'
[ "$(field "$loaded" errors)" = 0 ] && [ "$(field "$quiet" errors)" = 0 ] ||
	die "127.0.0.3 had failed sessions"
[ "$(field "$flood" other)" = 0 ] || die "the flooder got something else than 421: $flood"

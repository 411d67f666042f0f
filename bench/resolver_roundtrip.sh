#!/usr/bin/env bash
# bench/resolver_roundtrip.sh - the cost of one cached DNS answer through libunbound's thread
# (the way smtpd/resolver.c asked before it moved to event mode), through libunbound's event mode
# on an event_base of the caller's, with and without parsing the answer packet with libldns (the
# way it asks now, on a loop and in resolver_sync), and through ub_resolve in the caller's
# thread, against a private unbound on 127.0.0.1.  The authentication filters ask 4 to 5 such
# questions a message (bench/auth_filters.sh); this says what each costs here.
# Environment: N (20000 queries each), UNBOUND (/usr/sbin/unbound), CC (cc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
UNBOUND=${UNBOUND:-/usr/sbin/unbound}
N=${N:-20000}
tmp=$(mktemp -d /tmp/portier-ubbench.XXXXXX)
upid=
cleanup() {
	[ -n "$upid" ] && kill "$upid" 2>/dev/null && wait "$upid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
"${CC:-cc}" -O2 -o "$tmp/roundtrip" "$here/resolver_roundtrip.c" -lunbound -levent -lldns
port=$(/usr/bin/python3 "$here/benchlib.py" ports 1)
cat >"$tmp/unbound.conf" <<EOC
server:
  interface: 127.0.0.1
  port: $port
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$tmp"
  use-syslog: no
  logfile: "$tmp/unbound.log"
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "origin.test." static
  local-data: 'origin.test. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"'
EOC
"$UNBOUND" -d -c "$tmp/unbound.conf" >"$tmp/unbound.out" 2>&1 &
upid=$!
for _ in $(seq 50); do
	grep -q "start of service" "$tmp/unbound.log" 2>/dev/null && break
	sleep 0.1
done
"$tmp/roundtrip" "127.0.0.1@$port" origin.test. "$N"

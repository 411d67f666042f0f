#!/usr/bin/env bash
# bench/auth_filters.sh - throughput with the message-authentication filters "spf dkim-verify
# dmarc" against a private DNS server, next to no filters and to the direct reference, in one run.
#
# A private unbound on 127.0.0.1 serves origin.test: an SPF record that gives "neutral" for
# 127.0.0.1 (so DMARC must find an aligned DKIM pass), the DKIM key of selector "bench" (RSA
# 2048, or Ed25519 with KEY=ed25519) and a DMARC record with p=reject.  The message smtp-source
# sends (-F) is signed once by dkimpy (relaxed/relaxed) with that key: a message that does not
# verify would be refused 550 5.7.1 by dmarc and the run would fail (the sink counts every
# message), so the figure is that of verified mail.  Caches are warm: every message asks the
# same names.
#
# Runs bench/throughput.sh with PORTIER (no filters) and PORTIER_B = the same binary with
# FILTERS_B="spf dkim-verify dmarc"; its ratio lines give each against direct smtp-source ->
# smtp-sink.  Target (issue #10): portier_b >= 0.5x direct.
#
# Environment: KEY (rsa | ed25519, default rsa), SIZE (5120: body octets of the signed message)
# and everything bench/throughput.sh reads (MESSAGES, SESSIONS, ROUNDS, KEEPALIVE...).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=/usr/bin/python3
UNBOUND=${UNBOUND:-/usr/sbin/unbound}
PORTIER=${PORTIER:-$root/smtpd/portier}
KEY=${KEY:-rsa}
SIZE=${SIZE:-5120}

die() { echo "auth_filters.sh: ERROR: $*" >&2; exit 1; }
[ -x "$UNBOUND" ] || die "$UNBOUND not found (Debian package: unbound)"
"$PY" -c 'import dkim' 2>/dev/null || die "dkimpy missing (Debian package: python3-dkim)"
[ -x "$PORTIER" ] || die "$PORTIER not found: build portier first"
case $KEY in rsa | ed25519) ;; *) die "KEY must be rsa or ed25519, got '$KEY'" ;; esac

tmp=$(mktemp -d /tmp/portier-authbench.XXXXXX)
chmod 755 "$tmp"
upid=
cleanup() {
	[ -n "$upid" ] && kill "$upid" 2>/dev/null && wait "$upid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# The key and the signed message.
if [ "$KEY" = rsa ]; then
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/key.pem" 2>/dev/null
else
	openssl genpkey -algorithm ed25519 -out "$tmp/key.pem" 2>/dev/null
fi
"$PY" - "$tmp" "$KEY" "$SIZE" <<'EOF'
import base64, subprocess, sys
import dkim
tmp, kind, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
pem = open(tmp + "/key.pem", "rb").read()
der = subprocess.run(["openssl", "pkey", "-in", tmp + "/key.pem", "-pubout", "-outform", "DER"],
                     check=True, capture_output=True).stdout
if kind == "rsa":
    priv, pub, alg, k = pem, base64.b64encode(der).decode(), b"rsa-sha256", "rsa"
else:
    # dkimpy takes the raw 32-octet Ed25519 seed, base64; the record's p= is the raw public key.
    seed = subprocess.run(["openssl", "pkey", "-in", tmp + "/key.pem", "-outform", "DER"],
                          check=True, capture_output=True).stdout[-32:]
    priv, pub, alg, k = base64.b64encode(seed), base64.b64encode(der[-32:]).decode(), \
        b"ed25519-sha256", "ed25519"
line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
body = line * max(1, size // len(line))     # whole lines: SMTP ends the last one with CRLF
msg = (b"From: Bench <bench@origin.test>\r\nTo: rcpt@example.test\r\n"
       b"Subject: authentication benchmark\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
       b"Message-ID: <bench@origin.test>\r\n\r\n" + body)
sig = dkim.sign(msg, b"bench", b"origin.test", priv, canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=alg, include_headers=[b"from", b"to", b"subject", b"date",
                                                          b"message-id"])
# smtp-source -F sends each line with CRLF: the file has LF line ends.
open(tmp + "/message", "wb").write((sig + msg).replace(b"\r\n", b"\n"))
rec = "v=DKIM1; k=%s; p=%s" % (k, pub)
strings = " ".join('"%s"' % rec[i:i + 200] for i in range(0, len(rec), 200))
with open(tmp + "/zones", "w") as f:
    f.write('  local-zone: "." refuse\n  local-zone: "origin.test." static\n')
    f.write("  local-data: 'origin.test. 300 IN TXT \"v=spf1 ip4:192.0.2.1 ?all\"'\n")
    f.write("  local-data: 'bench._domainkey.origin.test. 300 IN TXT %s'\n" % strings)
    f.write("  local-data: '_dmarc.origin.test. 300 IN TXT \"v=DMARC1; p=reject\"'\n")
EOF

# The DNS server.
port=$("$PY" "$here/benchlib.py" ports 1)
cat >"$tmp/unbound.conf" <<EOF
server:
  interface: 127.0.0.1
  port: $port
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$tmp"
  pidfile: "$tmp/unbound.pid"
  use-syslog: no
  logfile: "$tmp/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
$(cat "$tmp/zones")
EOF
"$UNBOUND" -d -c "$tmp/unbound.conf" >"$tmp/unbound.out" 2>&1 &
upid=$!
for _ in $(seq 50); do
	grep -q "start of service" "$tmp/unbound.log" 2>/dev/null && break
	sleep 0.1
done
grep -q "start of service" "$tmp/unbound.log" 2>/dev/null ||
	die "unbound did not start: $(cat "$tmp/unbound.out" "$tmp/unbound.log" 2>/dev/null)"

echo "authentication filters: spf dkim-verify dmarc, $KEY key, a $(wc -c <"$tmp/message")-octet" \
	"signed message, DNS from a private unbound on 127.0.0.1:$port (warm caches)"
PORTIER_B=$PORTIER FILTERS_B="spf dkim-verify dmarc" TARGET_B=0.5 MESSAGE_FILE=$tmp/message \
	SERVER_EXTRA="resolver = 127.0.0.1@$port" "$here/throughput.sh"

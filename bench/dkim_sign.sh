#!/usr/bin/env bash
# bench/dkim_sign.sh - the dkim-sign filter's cost, in one run.
#
# (1) raw signing rate: tests/unit/check_dkim_sign --bench signs one 5 KiB message again and
#     again through the filter (configure once, then final(): libopendkim parses the PEM key,
#     hashes header and body, signs) on one thread, for an RSA 2048 key (opendkim-genkey) and
#     an Ed25519 key (openssl genpkey); next to it `openssl speed` sign/s for the same key type
#     on one thread, and the ratio (target >= 0.80).
# (2) throughput: bench/throughput.sh with PORTIER_B = the same portier and FILTERS_B = dkim-sign
#     (sign_unauthenticated = yes, as smtp-source does not log in), so that messages/s with and
#     without signing come from the same invocation, next to the direct smtp-source ->
#     smtp-sink reference.  THROUGHPUT=no skips it; KEY=rsa|ed25519|both picks the keys there.
#
# Environment: BUILD (the build directory holding smtpd/portier and tests/unit/check_dkim_sign;
#   default: the source root) SPEED_SECONDS (5) KEY (rsa) THROUGHPUT (yes), and every variable
#   of throughput.sh (MESSAGES, SESSIONS, SIZE, ROUNDS...).  Use a build without sanitizers for
#   figures worth quoting.
# Exit: 0 measured; 1 something failed.  Temporary keys are removed on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
BUILD=${BUILD:-$root}
PORTIER=${PORTIER:-$BUILD/smtpd/portier}
CHECK=${CHECK:-$BUILD/tests/unit/check_dkim_sign}
SPEED_SECONDS=${SPEED_SECONDS:-5}
KEY=${KEY:-rsa}
THROUGHPUT=${THROUGHPUT:-yes}
TARGET=0.80

die() { echo "dkim_sign.sh: ERROR: $*" >&2; exit 1; }
case $SPEED_SECONDS in '' | *[!0-9]* | 0) die "SPEED_SECONDS must be a positive integer" ;; esac
[ -x "$CHECK" ] || die "$CHECK not found (make tests/unit/check_dkim_sign in BUILD)"
command -v opendkim-genkey >/dev/null || die "opendkim-genkey not found (opendkim-tools)"
command -v openssl >/dev/null || die "openssl not found"

tmp=$(mktemp -d /tmp/dkim-sign-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
opendkim-genkey -b 2048 -d example.test -s rsa -D "$tmp"
openssl genpkey -algorithm ed25519 -out "$tmp/ed.pem" 2>/dev/null
chmod 644 "$tmp/rsa.private" "$tmp/ed.pem"
rsa_key=$tmp/rsa.private
ed_key=$tmp/ed.pem

# ours TYPE KEYFILE - signatures/s through the filter
ours() {
	"$CHECK" --bench "$1" "$2" "$SPEED_SECONDS" 2>/dev/null |
	    sed -n 's/.*signatures_per_s=\([0-9]*\).*/\1/p'
}

# speed ALG - openssl speed sign/s, one thread (-mr: "+F2:i:bits:sign:verify", "+F6:i:bits:name:sign:verify")
speed() {
	case $1 in
	rsa2048) openssl speed -seconds "$SPEED_SECONDS" -mr rsa2048 2>/dev/null |
	    awk -F: '$1 == "+F2" && $3 == 2048 { printf "%.0f\n", $4 }' ;;
	ed25519) openssl speed -seconds "$SPEED_SECONDS" -mr ed25519 2>/dev/null |
	    awk -F: '$1 == "+F6" && $4 == "Ed25519" { printf "%.0f\n", $5 }' ;;
	esac
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "== raw signing rate (one thread, 5 KiB message, ${SPEED_SECONDS}s each) =="
status=0
for t in rsa ed25519; do
	if [ $t = rsa ]; then key=$rsa_key alg=rsa2048; else key=$ed_key alg=ed25519; fi
	o=$(ours $t "$key")
	s=$(speed $alg)
	[ -n "$o" ] && [ -n "$s" ] || die "no figure for $t (ours='$o' openssl='$s')"
	r=$(ratio "$o" "$s")
	verdict=ok
	awk -v r="$r" -v t="$TARGET" 'BEGIN { exit !(r < t) }' && verdict="BELOW target $TARGET"
	printf "%-8s portier dkim-sign %8s sig/s   openssl speed %-8s %8s sign/s   ratio %s  (%s)\n" \
	    "$t" "$o" "$alg" "$s" "$r" "$verdict"
done

[ "$THROUGHPUT" = yes ] || exit $status
[ -x "$PORTIER" ] || die "$PORTIER not found"
case $KEY in
rsa) keys="example.test:rsa:$rsa_key" ;;
ed25519) keys="example.test:ed:$ed_key" ;;
both) keys="example.test:rsa:$rsa_key example.test:ed:$ed_key" ;;
*) die "KEY must be rsa, ed25519 or both" ;;
esac
echo "== throughput: no filter (PORTIER) vs dkim-sign (PORTIER_B), key $KEY =="
# throughput.sh's smtp-source sends as bench@origin.test (its From: header too): sign that domain.
from_domain=${FROM_DOMAIN:-origin.test}
keys=${keys//example.test/$from_domain}
CONF_EXTRA="[filter dkim-sign]
keys = $keys
sign_unauthenticated = yes" PORTIER="$PORTIER" PORTIER_B="$PORTIER" FILTERS_B=dkim-sign \
    "$here/throughput.sh"

#!/bin/sh
# tests/gen-test-cert.sh DIR [CN] - a throwaway CA and a server certificate signed by it, for tests.
#
# Writes into DIR (created if needed, mode 0700):
#   ca.pem       the CA certificate (trust anchor for clients: relay_tls_ca, openssl -CAfile)
#   ca-key.pem   the CA's private key
#   cert.pem     the server certificate, CN = CN (default localhost),
#                subjectAltName = DNS:CN, IP:127.0.0.1; serverAuth
#   key.pem      the server's private key (unencrypted)
# All keys are EC P-256; both certificates are valid for 1 day from now.
#
# Never use these outside tests and never commit them: the keys sit unencrypted in DIR.
# Prints nothing on success; on failure prints openssl's output to stderr and exits 1.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
	echo "usage: $0 DIR [CN]" >&2
	exit 2
fi
dir=$1
cn=${2:-localhost}
case $cn in
*[!A-Za-z0-9.-]*|'')
	echo "$0: CN must be a host name (letters, digits, dots, hyphens): $cn" >&2
	exit 2
	;;
esac
OPENSSL=${OPENSSL:-openssl}

umask 077
mkdir -p "$dir"
log=$dir/.gen-test-cert.log
ext=$dir/.server.ext
csr=$dir/.server.csr

# run - run openssl quietly; on failure show what it said and stop
run() {
	if ! "$OPENSSL" "$@" >"$log" 2>&1; then
		echo "$0: openssl $1 failed:" >&2
		cat "$log" >&2
		rm -f "$log" "$ext" "$csr"
		exit 1
	fi
}

# serial - 16 random bytes as hex, so two runs never issue the same serial
serial() {
	"$OPENSSL" rand -hex 16
}

run req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days 1 -sha256 \
	-subj "/O=portier tests/CN=portier test CA $(serial)" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign"

run req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$dir/key.pem" -out "$csr" -subj "/O=portier tests/CN=$cn"

cat >"$ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:$cn, IP:127.0.0.1
EOF

run x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
	-set_serial "0x$(serial)" -days 1 -sha256 -extfile "$ext" -out "$dir/cert.pem"

rm -f "$log" "$ext" "$csr"

#!/bin/sh
# install-deps.sh - install the Debian packages portier needs.
#   install-deps.sh                  what the build needs
#   install-deps.sh run              and the clients scripts/run-default.sh tells you to try
#   install-deps.sh test             and every peer the tests talk to
#   install-deps.sh --list [MODE]    print the packages of MODE, one a line; install nothing
# Idempotent and non-interactive, as root or through sudo; never starts a system
# service (policy-rc.d blocks that while we install, the tests run their own
# private instances).  unbound (the server) is a build package: make check
# runs the resolver's unit tests against a private one, ldnsutils signs their
# DNSSEC test zone, and python3-yaml reads the RFC 7208 suite.
set -eu

BUILD_PKGS="build-essential autoconf automake libtool pkg-config
 libevent-dev libssl-dev libinih-dev check libsubunit-dev libcrypt-dev liburing-dev
 libunbound-dev libldns-dev unbound ldnsutils clang libclang-rt-dev
 libspf2-dev libopendkim-dev libopendmarc-dev publicsuffix python3-yaml libmilter-dev libhiredis-dev"
RUN_PKGS="swaks python3"
TEST_PKGS="postfix dovecot-core dovecot-lmtpd libnet-ssleay-perl libauthen-sasl-perl msmtp
 python3-pytest openssl procps iproute2
 python3-dkim python3-nacl python3-spf opendkim-tools
 opendkim rspamd postfix-policyd-spf-python postgrey socat haproxy redis-server"

list=false
if [ "${1:-}" = "--list" ]; then
	list=true
	shift
fi
case "${1:-}" in
"") pkgs=$BUILD_PKGS ;;
run) pkgs="$BUILD_PKGS $RUN_PKGS" ;;
test) pkgs="$BUILD_PKGS $RUN_PKGS $TEST_PKGS" ;;
*)
	echo "usage: install-deps.sh [--list] [run|test]" >&2
	exit 2
	;;
esac
# The package lists are split into words on purpose (SC2086 below).
if $list; then
	# shellcheck disable=SC2086
	printf '%s\n' $pkgs
	exit 0
fi

want=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		want="$want $p"
done
[ -z "$want" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-deps.sh: needs root or sudo to install:$want" >&2
		exit 1
	fi
	SUDO=sudo
fi
# sudo resets the environment: pass the front-end to apt-get and dpkg explicitly.
APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q"
echo "postfix postfix/main_mailer_type select No configuration" |
	$SUDO debconf-set-selections
# Never start daemons while installing.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 755 /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$APT update
# shellcheck disable=SC2086
$APT -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	install --no-install-recommends $want

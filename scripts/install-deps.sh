#!/bin/sh
# install-deps.sh - install every Debian package portier's build and tests need.
# Idempotent and non-interactive; never starts a system service (policy-rc.d
# blocks that while we install, the tests run their own private instances).
set -eu

BUILD_PKGS="build-essential autoconf automake libtool pkg-config
 libevent-dev libssl-dev libinih-dev check libsubunit-dev libcrypt-dev liburing-dev
 clang libclang-rt-dev"
TEST_PKGS="postfix dovecot-core dovecot-lmtpd swaks libnet-ssleay-perl libauthen-sasl-perl msmtp python3 python3-pytest openssl
 procps iproute2"

want=""
for p in $BUILD_PKGS ${1:+$TEST_PKGS}; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		want="$want $p"
done
[ -z "$want" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" |
	$SUDO debconf-set-selections
# Never start daemons while installing.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 755 /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $want

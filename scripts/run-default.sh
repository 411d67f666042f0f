#!/usr/bin/env bash
# run-default.sh - build portier and run it on the embedded default config:
# 127.0.0.1:2525, mail for "localhost", Maildir delivery under ./var/mail.
# This is the README's first command.  Runs in the foreground; Ctrl-C stops it.
# It installs (scripts/install-deps.sh run) what it then tells you to use: swaks, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh run
[ -x configure ] || ./autogen.sh >/dev/null 2>&1
# Build out of tree, so scripts/test-all.sh can still configure its own builds.
mkdir -p build-default
(cd build-default && { [ -f Makefile ] || ../configure >/dev/null; } &&
	make -j"$(nproc 2>/dev/null || echo 2)" smtpd/portier >/dev/null)
mkdir -p var/mail
cat <<MSG
portier is starting on 127.0.0.1:2525 (config: etc/portier.conf).
Send it a test message from another terminal:

  swaks --server 127.0.0.1:2525 --from you@localhost --to newcomer@localhost

or, with nothing but Python:

  python3 -c 'import smtplib; smtplib.SMTP("127.0.0.1", 2525).sendmail("you@localhost", ["newcomer@localhost"], "Subject: hello\r\n\r\nIt works.\r\n")'

then look in var/mail/localhost/newcomer/new/.
MSG
exec build-default/smtpd/portier -c etc/portier.conf

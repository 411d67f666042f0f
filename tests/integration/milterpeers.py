"""milterpeers.py - real third-party milters for the milter client's tests (issue #11).

  Rspamd    rspamd's proxy worker as a self-scanning milter (../shared/recipes/rspamd.md): a
            private config in its own temp dir, only that worker, offline (no DNS, Redis or
            HTTP), milter_headers on local mail too; hyperscan's compiled classes kept in one
            cache dir under /var/tmp shared by every start, so only the first start on a machine
            takes about 12 s, later ones about 1 s
  OpenDkim  OpenDKIM in milter mode (../shared/recipes/opendkim-milter.md), Mode sv: signs mail
            From: its domain coming from 127.0.0.1 (its default InternalHosts), verifies the
            rest; public keys from a TestPublicKeys file instead of DNS.  Its directory is under
            /run/portier-test: opendkim refuses a config or key below a world-writable dir
            such as /tmp.  It logs only to syslog, so its failures show as portier's replies.
  genkey    opendkim-genkey: a private key and its DNS name and TXT record

Each listens on 127.0.0.1 on a free port and is stopped by its own PID (rspamd's main process,
which stops its workers).  A peer that does not start raises peers.PeerError with its log: these
tests fail, they never skip, when the program cannot run here.
"""
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile

import peers

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
OPENDKIM_GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"
RSPAMD_HS_CACHE = "/var/tmp/portier-rspamd-hs"
RSPAMD_START_DEADLINE = 90.0        # a cold hyperscan cache: ~12 s alone, more on a busy machine
OPENDKIM_BASE = "/run/portier-test"


def section(name, port, extra=None):
    """The [milter NAME] section pointing portier at 127.0.0.1:port."""
    kv = {"socket": "inet:127.0.0.1:%d" % port}
    kv.update(extra or {})
    return "[milter %s]\n%s\n" % (name, "".join("%s = %s\n" % i for i in kv.items()))


def genkey(d, domain, selector, bits=2048):
    """opendkim-genkey in d: (private key path, DNS name with the root dot, TXT record)."""
    subprocess.run([OPENDKIM_GENKEY, "-b", str(bits), "-d", domain, "-s", selector, "-D", d],
                   check=True, timeout=60)
    with open(os.path.join(d, selector + ".txt")) as f:
        record = "".join(re.findall(r'"([^"]*)"', f.read()))   # a zone stub, several strings
    return (os.path.join(d, selector + ".private"),
            "%s._domainkey.%s." % (selector, domain), record)


class KeyRecords:
    """DKIM key records by DNS name; dnsfunc answers dkimpy's lookups from them."""

    def __init__(self, records=None):
        self.records = dict(records or {})

    def dnsfunc(self, name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        rec = self.records.get(name if name.endswith(".") else name + ".")
        return rec.encode() if rec else None


def listening(port):
    """Is a TCP socket listening on 127.0.0.1:port?  Read from /proc/net/tcp rather than
    probed with a connection, which a milter would log as a client that left too early."""
    local = {"0100007F:%04X" % port, "7F000001:%04X" % port}     # either byte order
    try:
        with open("/proc/net/tcp") as f:
            rows = [l.split() for l in f.read().splitlines()[1:]]
    except OSError:
        return peers.port_accepts(port)
    return any(r[1] in local and r[3] == "0A" for r in rows if len(r) > 3)


class MilterPeer(peers.Process):
    """A milter daemon on a free port: start() tries up to four ports, as the other peers do."""

    start_deadline = peers.START_DEADLINE

    def start(self, argv_for_port, logfile):
        for attempt in range(4):
            self.port = peers.free_port()
            argv = argv_for_port(self.port)
            peers.Process.__init__(self, self.name, argv, logfile)
            ok = peers.wait_until(lambda: not self.alive() or listening(self.port),
                                  self.start_deadline, interval=0.1)
            if ok and self.alive():
                return
            log = self.log_text()
            alive = self.alive()
            self.stop(signal.SIGKILL)
            if not alive and "in use" in log and attempt < 3:
                continue
            self.fail("did not listen on 127.0.0.1:%d within %.0f s" % (self.port,
                                                                         self.start_deadline)
                      if alive else "exited with status %r before listening on 127.0.0.1:%d"
                      % (self.returncode(), self.port))

    def section(self, name, extra=None):
        return section(name, self.port, extra)


# ---------------------------------------------------------------------------------------------
# rspamd
# ---------------------------------------------------------------------------------------------

RSPAMD_CONF = """.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}
logging {{ type = "console"; level = "info"; }}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}";
    milter = yes;
    upstream "local" {{ default = yes; self_scan = yes; }}
    timeout = 120s;
    count = 1;
    reject_message = "Spam message rejected";
}}
"""

RSPAMD_OPTIONS = """filters = "chartable,regexp";
dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }}
hs_cache_dir = "{hs}";
"""

# Modules that would look things up on the network or need Redis.
RSPAMD_OFF = ("rbl surbl spf dkim dmarc arc asn fuzzy_check phishing multimap whitelist "
              "rspamd_update hfilter mx_check url_redirector mid mime_types dkim_signing "
              "once_received").split()

# Mail from 127.0.0.1 is local: without skip_local = false it gets no headers at all.
RSPAMD_HEADERS = """use = ["x-spamd-result", "x-spam-status", "x-rspamd-queue-id"];
skip_local = false;
skip_authenticated = false;
"""


class Rspamd(MilterPeer):
    """rspamd -f with a private config: one proxy worker, milter = yes, self_scan, on .port."""

    start_deadline = RSPAMD_START_DEADLINE

    def __init__(self, tmp=None):
        self.tmp = tmp or peers.make_tempdir("rspamd")
        user = "_rspamd"
        ids = pwd.getpwnam(user)
        for d in (RSPAMD_HS_CACHE, os.path.join(self.tmp, "db"), os.path.join(self.tmp, "run")):
            os.makedirs(d, mode=0o755, exist_ok=True)
            os.chown(d, ids.pw_uid, ids.pw_gid)       # hs_helper writes the cache as _rspamd
        local = os.path.join(self.tmp, "conf", "local.d")
        os.makedirs(local)
        os.makedirs(os.path.join(self.tmp, "conf", "override.d"))
        write(os.path.join(local, "options.inc"), RSPAMD_OPTIONS.format(hs=RSPAMD_HS_CACHE))
        for m in RSPAMD_OFF:
            write(os.path.join(local, m + ".conf"), "enabled = false;\n")
        write(os.path.join(local, "milter_headers.conf"), RSPAMD_HEADERS)
        self.conf = os.path.join(self.tmp, "rspamd.conf")
        variables = ["--var=LOCAL_CONFDIR=%s/conf" % self.tmp, "--var=DBDIR=%s/db" % self.tmp,
                     "--var=RUNDIR=%s/run" % self.tmp]
        # As root it must drop privileges; -f: $! is the main process, which stops its workers.
        ug = ["-u", user, "-g", user] if os.geteuid() == 0 else []

        def argv(port):
            write(self.conf, RSPAMD_CONF.format(port=port))
            return [RSPAMD, "-f"] + ug + ["-c", self.conf] + variables

        self.name = "rspamd"
        self.start(argv, os.path.join(self.tmp, "rspamd.log"))

    def workers(self):
        """PIDs of the processes in rspamd's session other than the main one."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == self.pid:
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.pid:             # field 6 (session id) after ')'
                out.append(int(p))
        return out

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """SIGTERM to the main process; a worker it left behind is killed by its PID and
        fails the stop."""
        rc = super().stop(sig, timeout)
        left = self.workers()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left and sig == signal.SIGTERM:
            raise peers.PeerError("rspamd's main process exited leaving workers %r" % left)
        return rc


# ---------------------------------------------------------------------------------------------
# OpenDKIM
# ---------------------------------------------------------------------------------------------

OPENDKIM_CONF = """Syslog                  yes
Mode                    sv
Socket                  inet:{port}@127.0.0.1
UserID                  opendkim:opendkim
Domain                  {domain}
Selector                {selector}
KeyFile                 {key}
Canonicalization        relaxed/simple
AuthservID              {authserv_id}
TestPublicKeys          {testkeys}
"""


class OpenDkim(MilterPeer):
    """opendkim -f in Mode sv, signing for `domain` with a key of its own (selector), checking
    signatures with the keys of .keys (a KeyRecords: its own plus `records`, {dns name:
    TXT}), and writing Authentication-Results as authserv_id."""

    def __init__(self, domain, selector, records=None, authserv_id=peers.HOSTNAME):
        os.makedirs(OPENDKIM_BASE, mode=0o755, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="odkim.", dir=OPENDKIM_BASE)
        os.chmod(self.tmp, 0o755)
        kdir = os.path.join(self.tmp, "keys")
        os.mkdir(kdir, 0o700)
        key, name, record = genkey(kdir, domain, selector)
        self.keys = KeyRecords(records)
        self.keys.records[name] = record
        ids = pwd.getpwnam("opendkim")
        for p in (kdir, key, os.path.join(kdir, selector + ".txt")):
            os.chown(p, ids.pw_uid, ids.pw_gid)        # read as opendkim after the drop
        testkeys = os.path.join(self.tmp, "testkeys")
        write(testkeys, "".join("%s %s\n" % (n.rstrip("."), r)
                                for n, r in self.keys.records.items()))
        self.conf = os.path.join(self.tmp, "opendkim.conf")
        self.domain, self.selector = domain, selector

        def argv(port):
            write(self.conf, OPENDKIM_CONF.format(port=port, domain=domain, selector=selector,
                                                  key=key, authserv_id=authserv_id,
                                                  testkeys=testkeys))
            return [OPENDKIM, "-f", "-x", self.conf]

        self.name = "opendkim"
        self.start(argv, os.path.join(self.tmp, "opendkim.out"))

    def log_text(self):
        return peers.read_text(self.logfile) + "\n(opendkim logs to syslog only)\n" + \
            "config %s:\n%s" % (self.conf, peers.read_text(self.conf))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)

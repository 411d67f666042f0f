"""peers.py - the real programs the integration tests talk to, and a raw SMTP client.

What is here:
  Portier      the server under test ($PORTIER -c FILE), in its own temp dir, on a free port
  Sink         Postfix smtp-sink saving every message to $T/dump (SMTP or LMTP mode)
  Dovecot      Dovecot LMTP (TCP + unix socket), users alice/bob@example.test, Maildir under $T/mail
  MiniSmtpd    minismtpd.py (this directory): an SMTP/LMTP server in Python whose per-recipient
               replies are scripted and which saves the exact bytes it received
  Unbound      a private unbound on 127.0.0.1:.port answering local-data test zones, with
               drop.test (never answered: timeouts) and servfail.test (SERVFAIL at once)
  HAProxy      haproxy in TCP mode: frontends sending PROXY v2/v1 headers to backends,
               round-robin (fixture `haproxy` in test_proxy.py)
  SmtpClient   a raw socket client: send bytes, read whole (multi-line) replies with a timeout,
               and check every reply line carries an RFC 3463 enhanced status code
and helpers to build messages, dot-stuff them and take apart what a backend stored.

Rules every peer follows: 127.0.0.1 only, a port found by binding port 0, its own temp dir
(mode 0755, daemons that drop privileges must read it), started with a deadline for its port to
accept (its log is shown when it does not), stopped by its own PID.  Nothing here may hang: every
socket read has a timeout.
"""
import email.utils
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
from signal import SIGTERM
import socket
import subprocess
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
HOSTNAME = "mx.example.test"          # [server] hostname in every test config
LOCAL_DOMAIN = "example.test"
NOBODY = pwd.getpwnam("nobody")
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_DEADLINE = 15.0                 # seconds a peer may take to accept connections
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")

ENHANCED_RE = re.compile(rb"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ")


class PeerError(Exception):
    """A peer did not start, or misbehaved outside the test's control."""


def portier_binary(test_filters=False):
    """Absolute path of the server under test (PORTIER, else SRCDIR/smtpd/portier); with
    test_filters, the build that also has the test filters of tests/filters (PORTIER_TEST, else
    next to PORTIER's build: ../tests/filters/portier-test)."""
    path = os.environ.get("PORTIER")
    if not path and os.environ.get("SRCDIR"):
        path = os.path.join(os.environ["SRCDIR"], "smtpd", "portier")
    if test_filters:
        tpath = os.environ.get("PORTIER_TEST")
        if not tpath and path:
            tpath = os.path.join(os.path.dirname(os.path.dirname(path)), "tests", "filters",
                                 "portier-test")
        return tpath
    return path


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def make_tempdir(tag):
    """A fresh temp dir, mode 0755 (daemons running as nobody/dovecot must traverse it)."""
    d = tempfile.mkdtemp(prefix="portier-it-%s." % tag)
    os.chmod(d, 0o755)
    return d


def read_text(path, limit=200000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if len(data) > limit:
        data = b"[...]\n" + data[-limit:]
    return data.decode("utf-8", "replace")


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


def unix_accepts(path, timeout=0.5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(pred, timeout, interval=0.05):
    """Poll pred() until it returns something true or timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


class Process:
    """A child process with its output in LOGFILE, stopped by its own PID."""

    def __init__(self, name, argv, logfile, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.log_fh = open(logfile, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_fh,
                                     stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.stopped_by_us = False      # an exit from now on was asked for (stop/SIGTERM/SIGKILL)

    def alive(self):
        return self.proc.poll() is None

    def returncode(self):
        return self.proc.poll()

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.stopped_by_us = True
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """Wait for exit; returns the exit status or None if still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=SIGTERM, timeout=10.0):
        """Stop by PID: sig, then SIGKILL after timeout.  Returns the exit status."""
        if self.alive():
            self.stopped_by_us = True
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        rc = self.proc.wait(timeout=10)
        try:
            self.log_fh.close()
        except OSError:
            pass
        return rc

    def log_text(self):
        return read_text(self.logfile)

    def fail(self, why):
        raise PeerError("%s (pid %d) %s; argv=%r; log %s:\n%s"
                        % (self.name, self.pid, why, self.argv, self.logfile, self.log_text()))


# ---------------------------------------------------------------------------------------------
# portier
# ---------------------------------------------------------------------------------------------

def portier_config(relay="smtp:127.0.0.1:9", server=None, listener=None, backend=None,
                   extra=""):
    """Config text for one mx listener on {port} (filled in by start_portier).

    server/listener/backend: dicts of keys added to (or replacing) the defaults below;
    a value of None removes a default key.  extra: raw text appended (more sections).
    """
    srv = {
        "hostname": HOSTNAME,
        "user": "nobody",
        "workers": "2",
        "log": "stderr",
        "local_domains": LOCAL_DOMAIN,
        "max_message_size": "10485760",
        "max_recipients": "100",
        "max_errors": "20",
        "command_timeout": "30",
        "data_timeout": "30",
        "drain_timeout": "5",
    }
    lst = {"listen": "127.0.0.1:{port}", "role": "mx", "tls": "none"}
    bke = {"relay": relay, "relay_timeout": "5", "relay_connect_timeout": "3"}
    for base, upd in ((srv, server), (lst, listener), (bke, backend)):
        for k, v in (upd or {}).items():
            if v is None:
                base.pop(k, None)
            else:
                base[k] = str(v)

    def section(title, kv):
        return "[%s]\n%s\n" % (title, "".join("%s = %s\n" % (k, v) for k, v in kv.items()))

    return (section("server", srv) + section("listener mx", lst) + section("backend", bke)
            + extra)


class Portier(Process):
    """The server under test.  Config text may use {port} and {tmp}; .port is the listener's."""

    def __init__(self, config_text, tmp=None, args=(), ports=None, start=True, test_filters=False):
        self.tmp = tmp or make_tempdir("portier")
        self.config_template = config_text
        self.conf = os.path.join(self.tmp, "portier.conf")
        self.extra_args = list(args)
        self.ports = dict(ports or {})
        self.binary = portier_binary(test_filters)
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise PeerError("portier binary not found or not executable: %r "
                            "(set PORTIER=/abs/path/smtpd/portier)" % (self.binary,))
        if start:
            self._start_with_retries()

    def render(self, text):
        out = text.replace("{port}", str(self.port)).replace("{tmp}", self.tmp)
        for k, v in self.ports.items():
            out = out.replace("{%s}" % k, str(v))
        return out

    def write_config(self, text=None):
        if text is not None:
            self.config_template = text
        with open(self.conf, "w") as f:
            f.write(self.render(self.config_template))
        os.chmod(self.conf, 0o644)

    def _start_with_retries(self):
        # The free port may be taken by someone else between our probe and portier's bind;
        # then pick another one (a concurrent run of this suite must not make us fail).
        for attempt in range(4):
            self.port = free_port()
            self.write_config()
            logfile = os.path.join(self.tmp, "portier.log")
            Process.__init__(self, "portier", [self.binary] + self.extra_args + ["-c", self.conf],
                             logfile, cwd=self.tmp)
            if self._wait_ready():
                return
            log = self.log_text()
            if not self.alive() and "in use" in log and attempt < 3:
                with open(logfile, "ab") as f:
                    f.write(b"--- retrying on another port ---\n")
                continue
            rc = self.returncode()
            self.stop(signal.SIGKILL)
            if rc is not None:
                self.fail("exited with status %r before accepting connections on 127.0.0.1:%d"
                          % (rc, self.port))
            self.fail("did not accept connections on 127.0.0.1:%d within %.0fs"
                      % (self.port, START_DEADLINE))

    def _wait_ready(self):
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            except OSError:
                time.sleep(0.05)
                continue
            # Speak a little so the probe session ends cleanly (it counts as a session).
            try:
                s.settimeout(5)
                s.recv(4096)
                s.sendall(b"QUIT\r\n")
                s.recv(4096)
            except OSError:
                pass
            finally:
                s.close()
            return True
        return False

    def fail(self, why):
        try:
            with open(self.conf) as f:
                conf = f.read()
        except OSError:
            conf = "(unreadable)"
        raise PeerError("portier (pid %d) %s; argv=%r\nconfig %s:\n%s\nlog:\n%s"
                        % (self.pid, why, self.argv, self.conf, conf, self.log_text()))

    def connect(self, **kw):
        return SmtpClient(self.port, **kw)

    def reload(self, config_text):
        """Rewrite the config file and send SIGHUP."""
        self.write_config(config_text)
        self.signal(signal.SIGHUP)

    def wait_log(self, pattern, timeout=5.0, after=0):
        """First match of regex pattern in the log (from offset after), waiting up to timeout."""
        rx = re.compile(pattern, re.M)

        def look():
            return rx.search(self.log_text()[after:])
        m = wait_until(look, timeout)
        return m

    def txns(self):
        """Every transaction summary line (event=txn) logged so far, in order, as dicts of its
        fields (quoted values unquoted): id, txn, from, to, result, reply, ..."""
        return [parse_log_fields(m.group(0)) for m in TXN_LINE_RE.finditer(self.log_text())]

    def wait_txns(self, n, timeout=10.0):
        """Wait until at least n transaction summary lines are logged; returns them all.  A
        transaction's line comes once portier is done with it: its reply, its relay and any
        DSN are over, so what a backend did not get by then it will not get."""
        wait_until(lambda: len(self.txns()) >= n, timeout)
        got = self.txns()
        assert len(got) >= n, "expected %d event=txn lines in portier's log, got %d:\n%s" % (
            n, len(got), self.log_text()[-5000:])
        return got

    def sanitizer_report(self):
        log = self.log_text()
        for mark in SANITIZER_MARKS:
            if mark in log:
                return log
        return None

    def uid_lines(self):
        """{tid: (Uid line, Gid line)} from /proc/PID/task/*/status."""
        out = {}
        base = "/proc/%d/task" % self.pid
        for tid in os.listdir(base):
            try:
                with open(os.path.join(base, tid, "status")) as f:
                    st = f.read()
            except OSError:
                continue
            uid = re.search(r"^Uid:\s+(.*)$", st, re.M).group(1).split()
            gid = re.search(r"^Gid:\s+(.*)$", st, re.M).group(1).split()
            out[tid] = (uid, gid)
        return out


TXN_LINE_RE = re.compile(r"^.*\bevent=txn\b.*$", re.M)
LOG_FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_fields(line):
    """'... id=x event=txn reply="250 ok" ...' -> {'id': 'x', 'event': 'txn', 'reply': '250 ok'}"""
    out = {}
    for k, v in LOG_FIELD_RE.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out.setdefault(k, v)
    return out


def start_portier(config_text, **kw):
    """Start portier on a free port with config_text ({port}/{tmp} substituted)."""
    return Portier(config_text, **kw)


def run_portier_check(config_path, timeout=20):
    """`portier -t -c FILE`: returns (exit status, stdout+stderr text)."""
    binary = portier_binary()
    if not binary or not os.access(binary, os.X_OK):
        raise PeerError("portier binary not found: %r" % (binary,))
    p = subprocess.run([binary, "-t", "-c", config_path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# smtp-sink
# ---------------------------------------------------------------------------------------------

class StoredMessage:
    """One message as a backend stored it, taken apart.

    envelope: mail_from (str, '' for <>), rcpts [str], mail_args (raw MAIL argument string)
    headers:  the trace headers stripped from the top, as unfolded str, in order
    content:  what follows them, bytes, line ends as the backend stored them
    """

    def __init__(self, path, raw, mail_from=None, rcpts=(), mail_args="", rcpt_args=(),
                 helo=None, headers=(), content=b"", nl=b"\n"):
        self.path = path
        self.raw = raw
        self.mail_from = mail_from
        self.rcpts = list(rcpts)
        self.mail_args = mail_args
        self.rcpt_args = list(rcpt_args)
        self.helo = helo
        self.headers = list(headers)
        self.content = content
        self.nl = nl

    def portier_received(self):
        return [h for h in self.headers if is_portier_received(h)]

    def __repr__(self):
        return "<StoredMessage %s from=%r rcpts=%r %d bytes>" % (
            os.path.basename(self.path), self.mail_from, self.rcpts, len(self.raw))


def angle_addr(args):
    """'<a@b> SIZE=1' -> 'a@b'; '<>' -> ''."""
    m = re.match(r"\s*<([^>]*)>", args)
    if m:
        return m.group(1)
    return args.split()[0] if args.split() else ""


def split_header_fields(data, nl):
    """Leading header fields of data as [(name_lower, raw_field_bytes)], and the offset after
    them (pointing at the first line that is not a header field or continuation)."""
    fields = []
    pos = 0
    while pos < len(data):
        end = data.find(nl, pos)
        if end < 0:
            break
        line = data[pos:end]
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + nl)
        else:
            m = re.match(rb"^([!-9;-~]+):", line)
            if not m:
                break
            fields.append((m.group(1).decode("ascii").lower(), line + nl))
        pos = end + len(nl)
    return fields, pos


def unfold(raw):
    """Header field bytes -> one-line str with folding whitespace collapsed."""
    s = raw.decode("utf-8", "replace")
    s = re.sub(r"\r?\n[ \t]+", " ", s).strip("\r\n")
    return re.sub(r"[ \t]+", " ", s)


PORTIER_RECEIVED_RE = re.compile(
    r"^Received: from (?P<helo>\S+) \((?P<name>\S+) \[(?:IPv6:)?(?P<addr>[0-9a-fA-F:.]+)\]\) "
    r"by " + re.escape(HOSTNAME) + r" \(portier\) with (?P<proto>[A-Z0-9]+) "
    r"id (?P<id>\S+?)(?: [^;]*)?; (?P<date>.+)$")


def is_portier_received(h):
    return h.lower().startswith("received:") and "(portier)" in h


def check_portier_received(h, helo=None, proto=None):
    """Assert h (unfolded) is portier's Received header; returns the match."""
    m = PORTIER_RECEIVED_RE.match(h)
    assert m, "portier's Received header has an unexpected form: %r" % h
    assert m.group("addr") == "127.0.0.1", h
    if helo is not None:
        assert m.group("helo") == helo, h
    if proto is not None:
        assert m.group("proto") == proto, h
    assert email.utils.parsedate_to_datetime(m.group("date").strip()) is not None, h
    return m


def strip_trace(data, nl, names):
    """Remove the leading header fields whose names are in `names` (lower-case) from data.
    Returns (list of unfolded stripped headers, rest)."""
    fields, _ = split_header_fields(data, nl)
    stripped = []
    pos = 0
    for name, raw in fields:
        if name not in names:
            break
        stripped.append(unfold(raw))
        pos += len(raw)
    return stripped, data[pos:]


def parse_sink_dump(path, raw):
    """Take apart an smtp-sink -d file: X-* envelope lines, smtp-sink's own Received header,
    then the message (LF line ends, dot-unstuffed, plus one extra empty line at the end)."""
    nl = b"\n"
    fields, pos = split_header_fields(raw, nl)
    env = {"x-mail-args": "", "x-helo-args": None}
    rcpt_args = []
    i = 0
    while i < len(fields) and fields[i][0].startswith("x-"):
        name, fraw = fields[i]
        val = fraw.decode("utf-8", "replace").split(":", 1)[1].strip("\r\n")
        if val.startswith(" "):
            val = val[1:]
        if name == "x-rcpt-args":
            rcpt_args.append(val)
        else:
            env[name] = val
        i += 1
    off = sum(len(r) for _, r in fields[:i])
    rest = raw[off:]
    headers = []
    # smtp-sink's Received (present once DATA started), then what portier sent.
    if i < len(fields) and fields[i][0] == "received" and b"smtp-sink" in fields[i][1]:
        headers.append(unfold(fields[i][1]))
        rest = rest[len(fields[i][1]):]
    more, rest = strip_trace(rest, nl, ("received",))
    headers.extend(more)
    if headers and rest.endswith(b"\n"):
        rest = rest[:-1]           # smtp-sink writes the LF of the final CRLF.CRLF too
    return StoredMessage(path, raw, mail_from=angle_addr(env.get("x-mail-args", "")),
                         rcpts=[angle_addr(a) for a in rcpt_args],
                         mail_args=env.get("x-mail-args", ""), rcpt_args=rcpt_args,
                         helo=env.get("x-helo-args"), headers=headers, content=rest, nl=nl)


class Sink(Process):
    """smtp-sink saving one file per transaction to $T/dump (owner nobody)."""

    def __init__(self, tmp=None, args=(), lmtp=False, port=None, name="smtp-sink"):
        self.tmp = tmp or make_tempdir("sink")
        self.dump = os.path.join(self.tmp, "dump")
        if not os.path.isdir(self.dump):
            os.mkdir(self.dump)
            os.chown(self.dump, NOBODY.pw_uid, NOBODY.pw_gid)
        self.args = list(args)
        self.lmtp = lmtp
        self.port = port or free_port()
        self.sink_name = name
        self.start()

    def start(self):
        # A new file-name prefix per start: smtp-sink seeds its random file-name suffix with
        # time(), so a sink restarted within the same second would collide with its
        # predecessor's files and exit ("mail_file_open: something is looping").
        self.generation = getattr(self, "generation", 0) + 1
        template = os.path.join(self.dump, "g%03d.%%Y%%m%%d%%H%%M%%S." % self.generation)
        argv = [SMTP_SINK, "-u", "nobody"] + (["-L"] if self.lmtp else []) + self.args + [
            "-d", template, "127.0.0.1:%d" % self.port, "100"]
        Process.__init__(self, self.sink_name, argv, os.path.join(self.tmp, "sink.log"))
        ok = wait_until(lambda: not self.alive() or port_accepts(self.port), START_DEADLINE)
        if not ok or not self.alive():
            self.stop(signal.SIGKILL)
            self.fail("did not accept connections on 127.0.0.1:%d" % self.port)

    def restart(self):
        """Start again on the same port with the same dump dir (after stop/kill)."""
        if self.alive():
            self.stop()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                self.start()
                return
            except PeerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def files(self):
        try:
            names = sorted(os.listdir(self.dump))
        except OSError:
            return []
        return [os.path.join(self.dump, n) for n in names]

    def messages(self, complete=True):
        """Every saved transaction, parsed.  complete=True: only those that got DATA
        (smtp-sink writes its Received header at DATA), in file-name order."""
        out = []
        for p in self.files():
            try:
                with open(p, "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            m = parse_sink_dump(p, raw)
            if complete and not any("smtp-sink" in h for h in m.headers):
                continue
            out.append(m)
        return out

    def wait_messages(self, n, timeout=10.0):
        """Wait until at least n complete messages are saved; returns them all."""
        msgs = wait_until(lambda: len(self.messages()) >= n and self.messages(), timeout)
        return self.messages() if msgs else self.messages()

    def assert_nothing(self, marker=None, *, portier, txns=1):
        """No message (or none containing `marker`) was saved, checked at once when `portier`
        has logged the summary line (event=txn) of its first `txns` transactions: then it is
        done with them (see Portier.wait_txns), so what the backend has not got it never will.
        Count every transaction that ends by then, delivered ones too.  txns=0 (no transaction
        was started, so there is no summary line): no wait at all, the caller has already
        waited for its own definite line (the session's event=disconnect, the refusal's event)."""
        portier.wait_txns(txns)
        msgs = self.messages(complete=False)
        if marker is not None:
            msgs = [m for m in msgs if marker.encode() in m.raw]
        else:
            msgs = [m for m in msgs if any("smtp-sink" in h for h in m.headers)]
        assert not msgs, "backend received a message it must not have: %r\n%s" % (
            msgs, "\n----\n".join(m.raw.decode("utf-8", "replace") for m in msgs))


# ---------------------------------------------------------------------------------------------
# Dovecot LMTP
# ---------------------------------------------------------------------------------------------

DOVECOT_CONF = """protocols = lmtp
listen = 127.0.0.1
base_dir = {T}/run
state_dir = {T}/state
log_path = {T}/dovecot.log
ssl = no
first_valid_uid = 5000
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {T}/users
}}
userdb {{
  driver = passwd-file
  args = {T}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {PORT}
  }}
  unix_listener {T}/lmtp.sock {{
    mode = 0666
  }}
}}
"""

DOVECOT_USERS = ("alice", "bob")


class Dovecot(Process):
    """Dovecot LMTP on 127.0.0.1:.port and unix .socket; users alice/bob@example.test."""

    def __init__(self, tmp=None):
        self.tmp = tmp or make_tempdir("dovecot")
        T = self.tmp
        for d in ("run", "state", "mail"):
            os.makedirs(os.path.join(T, d), exist_ok=True)
        os.chown(os.path.join(T, "mail"), 5000, 5000)
        with open(os.path.join(T, "users"), "w") as f:
            for u in DOVECOT_USERS:
                f.write("%s@%s::5000:5000::%s/mail/%s/%s\n" % (u, LOCAL_DOMAIN, T, LOCAL_DOMAIN, u))
        os.chmod(os.path.join(T, "users"), 0o644)
        self.socket = os.path.join(T, "lmtp.sock")
        for attempt in range(4):
            self.port = free_port()
            with open(os.path.join(T, "dovecot.conf"), "w") as f:
                f.write(DOVECOT_CONF.format(T=T, PORT=self.port))
            Process.__init__(self, "dovecot", [DOVECOT, "-F", "-c", os.path.join(T, "dovecot.conf")],
                             os.path.join(T, "fg.out"))
            ok = wait_until(lambda: not self.alive() or
                            (port_accepts(self.port) and unix_accepts(self.socket)),
                            START_DEADLINE)
            if ok and self.alive():
                return
            log = self.log_text() + read_text(os.path.join(T, "dovecot.log"))
            self.stop(signal.SIGKILL)
            if "in use" in log and attempt < 3:
                continue
            raise PeerError("dovecot did not start on 127.0.0.1:%d / %s:\n%s"
                            % (self.port, self.socket, log))

    def log_text(self):
        return read_text(self.logfile) + read_text(os.path.join(self.tmp, "dovecot.log"))

    def maildir(self, user):
        return os.path.join(self.tmp, "mail", LOCAL_DOMAIN, user, "Maildir")

    def message_files(self, user):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user), sub)
            if os.path.isdir(d):
                out.extend(os.path.join(d, n) for n in sorted(os.listdir(d)))
        return out

    def messages(self, user):
        out = []
        for p in self.message_files(user):
            with open(p, "rb") as f:
                raw = f.read()
            headers, rest = strip_trace(raw, b"\n", ("return-path", "delivered-to", "received"))
            m = StoredMessage(p, raw, headers=headers, content=rest, nl=b"\n")
            rp = [h for h in headers if h.lower().startswith("return-path:")]
            m.mail_from = angle_addr(rp[0].split(":", 1)[1]) if rp else None
            out.append(m)
        return out

    def wait_messages(self, user, n, timeout=10.0):
        wait_until(lambda: len(self.message_files(user)) >= n, timeout)
        return self.messages(user)


# ---------------------------------------------------------------------------------------------
# minismtpd.py: scripted SMTP/LMTP server
# ---------------------------------------------------------------------------------------------

class MiniSmtpd(Process):
    """minismtpd.py on a free port.  Options (see minismtpd.py --help):
    lmtp=True, ext=["SMTPUTF8", ...], rcpt_reply={regex: "550 5.1.1 ..."},
    data_reply={regex: "550 5.2.1 ..."} (per recipient after DATA; SMTP: first match wins),
    starttls_reply="454 4.7.0 ..." (with ext=["STARTTLS"]), data_idle=SECONDS (421 and close
    when the data stalls that long), data_cmd_reply="451 ..." (the first DATA command of each
    connection gets it)."""

    def __init__(self, tmp=None, lmtp=False, ext=(), rcpt_reply=None, data_reply=None,
                 starttls_reply=None, data_idle=None, data_cmd_reply=None):
        self.tmp = tmp or make_tempdir("minismtpd")
        self.dir = os.path.join(self.tmp, "msgs")
        os.makedirs(self.dir, exist_ok=True)
        self.lmtp = lmtp
        for attempt in range(4):
            self.port = free_port()
            argv = [PYTHON, os.path.join(HERE, "minismtpd.py"), "--port", str(self.port),
                    "--dir", self.dir]
            if lmtp:
                argv.append("--lmtp")
            for e in ext:
                argv += ["--ext", e]
            for k, v in (rcpt_reply or {}).items():
                argv += ["--rcpt-reply", "%s=%s" % (k, v)]
            for k, v in (data_reply or {}).items():
                argv += ["--data-reply", "%s=%s" % (k, v)]
            if starttls_reply:
                argv += ["--starttls-reply", starttls_reply]
            if data_idle:
                argv += ["--data-idle", str(data_idle)]
            if data_cmd_reply:
                argv += ["--data-cmd-reply", data_cmd_reply]
            Process.__init__(self, "minismtpd", argv, os.path.join(self.tmp, "minismtpd.log"))
            ok = wait_until(lambda: not self.alive() or port_accepts(self.port), START_DEADLINE)
            if ok and self.alive():
                return
            self.stop(signal.SIGKILL)
            if attempt == 3 or "in use" not in self.log_text():
                self.fail("did not start")

    def transactions(self):
        """Completed transactions: dicts with helo, mail_from, mail_params, rcpts (accepted),
        results {rcpt: reply}, data (bytes exactly as received, dot-unstuffed, CRLF kept)."""
        out = []
        for n in sorted(os.listdir(self.dir)):
            if not n.endswith(".json"):
                continue
            with open(os.path.join(self.dir, n)) as f:
                t = json.load(f)
            with open(os.path.join(self.dir, n[:-5] + ".eml"), "rb") as f:
                t["data"] = f.read()
            out.append(t)
        return out

    def wait_transactions(self, n, timeout=10.0):
        wait_until(lambda: len(self.transactions()) >= n, timeout)
        return self.transactions()


# ---------------------------------------------------------------------------------------------
# raw SMTP client
# ---------------------------------------------------------------------------------------------

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"


class Unbound(Process):
    """A private unbound on 127.0.0.1:.port (../shared/recipes/unbound-zones.md).

    zones: local-zone/local-data lines of its server: clause, e.g.
      'local-zone: "client.test." static', 'local-data: "a.client.test. 300 IN A 127.0.0.2"',
      'local-data-ptr: "127.0.0.2 a.client.test."'
    Built in: everything else is refused; names under drop.test (and reverse names in the
    zones given in `stall`, e.g. "4.0.0.127.in-addr.arpa.") are silently dropped, so a query
    times out; names under servfail.test (and the zones in `servfail`) get SERVFAIL at once
    (forwarded to an address unbound will not query).  .servers is the value for [server]
    resolver.
    """

    def __init__(self, zones=(), stall=(), servfail=(), tmp=None):
        self.tmp = tmp or make_tempdir("unbound")
        failing = ["servfail.test."] + list(servfail)
        lines = ['local-zone: "." refuse', 'local-zone: "drop.test." deny']
        lines += ['local-zone: "%s" deny' % z for z in stall]
        lines += ['local-zone: "%s" transparent' % z for z in failing]
        lines += list(zones)
        for attempt in range(4):
            self.port = free_port()
            conf = os.path.join(self.tmp, "unbound.conf")
            with open(conf, "w") as f:
                f.write(UNBOUND_CONF.format(T=self.tmp, PORT=self.port,
                                            ZONES="".join("  %s\n" % l for l in lines)))
                for z in failing:
                    f.write('forward-zone:\n  name: "%s"\n  forward-addr: ::1@53\n' % z)
            Process.__init__(self, "unbound", [UNBOUND, "-d", "-c", conf],
                             os.path.join(self.tmp, "fg.out"))
            ok = wait_until(lambda: not self.alive() or "start of service" in
                            read_text(os.path.join(self.tmp, "unbound.log")), START_DEADLINE)
            if ok and self.alive():
                self.servers = "127.0.0.1@%d" % self.port
                return
            log = self.log_text()
            self.stop(signal.SIGKILL)
            if "in use" in log and attempt < 3:
                continue
            raise PeerError("unbound did not start on 127.0.0.1:%d:\n%s" % (self.port, log))

    def log_text(self):
        return read_text(self.logfile) + read_text(os.path.join(self.tmp, "unbound.log"))


UNBOUND_CONF = """server:
  interface: 127.0.0.1
  port: {PORT}
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{T}"
  pidfile: "{T}/unbound.pid"
  use-syslog: no
  logfile: "{T}/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
{ZONES}"""


class Redis(Process):
    """A private, non-persistent redis-server on 127.0.0.1:.port and the unix socket .sock
    (../shared/recipes/redis.md).  restart() brings it back on the same port and socket, empty;
    pause()/resume() stop and continue it (a hung server); cli(...) runs redis-cli against it."""

    def __init__(self, tmp=None, password=None):
        self.tmp = tmp or make_tempdir("redis")
        self.sock = os.path.join(self.tmp, "redis.sock")
        self.password = password
        self.port = free_port()
        self._start()

    def _start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.tmp, "--unixsocket", self.sock,
                "--unixsocketperm", "700", "--logfile", os.path.join(self.tmp, "redis.log"),
                "--daemonize", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        Process.__init__(self, "redis", argv, os.path.join(self.tmp, "fg.out"))
        if not wait_until(lambda: not self.alive() or self._pong(), START_DEADLINE):
            self.stop(signal.SIGKILL)
            raise PeerError("redis-server did not start on 127.0.0.1:%d:\n%s"
                            % (self.port, self.log_text()))
        if not self.alive():
            raise PeerError("redis-server exited:\n%s" % self.log_text())
        self.server = "127.0.0.1:%d" % self.port

    def _pong(self):
        try:
            return self.cli("PING", timeout=2).strip() == "PONG"
        except (subprocess.SubprocessError, OSError):
            return False

    def cli(self, *args, timeout=10):
        argv = ["redis-cli", "-p", str(self.port)]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        return subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout, check=True).stdout

    def restart(self):
        """Kill -9 and start again: same port and socket, no data."""
        self.stop(signal.SIGKILL)
        self._start()

    def pause(self):
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, sig=SIGTERM, timeout=10.0):
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return Process.stop(self, sig, timeout)

    def log_text(self):
        return read_text(self.logfile) + read_text(os.path.join(self.tmp, "redis.log"))


HAPROXY_HEAD = """global
    log stderr format short local0 info
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 10s
    timeout server 10s
"""


class HAProxy(Process):
    """haproxy -db (foreground, $! is haproxy itself) in TCP mode (../shared/recipes/
    haproxy-proxy.md).  fronts: [(backend ports, "send-proxy-v2" | "send-proxy"), ...]: one
    frontend on 127.0.0.1 per entry, on the free port .ports[i], balancing its backends
    round-robin (no health checks: haproxy connects to a backend only for a client)."""

    def __init__(self, tmp, fronts):
        self.ports = [free_port() for _ in fronts]
        cfg = HAPROXY_HEAD
        for i, (backends, send) in enumerate(fronts):
            cfg += ("frontend fe%d\n    bind 127.0.0.1:%d\n    default_backend be%d\n"
                    "backend be%d\n    balance roundrobin\n" % (i, self.ports[i], i, i))
            cfg += "".join("    server s%d 127.0.0.1:%d %s\n" % (j, port, send)
                           for j, port in enumerate(backends))
        path = os.path.join(tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        Process.__init__(self, "haproxy", ["haproxy", "-db", "-f", path],
                         os.path.join(tmp, "haproxy.log"))
        if not wait_until(lambda: all(port_accepts(p) for p in self.ports), 10):
            self.stop()
            self.fail("did not listen on 127.0.0.1:%s" % self.ports)
        # Each probe went on to a backend, on another thread maybe: wait for its log line
        # (at its end), so that it cannot take a client's turn in the round-robin.
        done = re.compile(r"\] fe(\d+) be\d+/")
        if not wait_until(lambda: len(set(done.findall(self.log_text()))) == len(fronts), 5):
            self.stop()
            self.fail("logged no end of its probe connections")

    def stop(self, sig=signal.SIGUSR1, timeout=10.0):
        """Soft stop (SIGUSR1: exit 0)."""
        return Process.stop(self, sig, timeout)


class ConnectionClosed(Exception):
    pass


class Reply:
    """One SMTP reply: code (int), lines (list of bytes without CRLF)."""

    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[0][:3])
        m = re.match(rb"^\d{3}[ -](\d\.\d{1,3}\.\d{1,3}) ", lines[0])
        self.enhanced = m.group(1).decode() if m else None

    @property
    def text(self):
        return "\n".join(l.decode("utf-8", "replace") for l in self.lines)

    def texts(self):
        """Text after 'NNN-' / 'NNN ' of each line."""
        return [l[4:].decode("utf-8", "replace") for l in self.lines]

    def is_(self, code, enhanced=None):
        return self.code == int(code) and (enhanced is None or self.enhanced == enhanced)

    def __repr__(self):
        return "<Reply %r>" % self.text


class SmtpClient:
    """A raw SMTP client for tests that must control every byte.

    Every reply line is checked for an RFC 3463 enhanced code except the 220 greeting,
    354, and the 250 reply to EHLO/HELO (first line text = the server's hostname).
    """

    def __init__(self, port, host="127.0.0.1", timeout=10.0, check_enhanced=True,
                 hostname=HOSTNAME, family=socket.AF_INET, source=None):
        self.timeout = timeout
        self.check_enhanced = check_enhanced
        self.hostname = hostname
        # source: the local address to connect from (another loopback address: 127.0.0.2)
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.replies = []
        self.closed = False

    # -- sending
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def sendline(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")

    # -- receiving
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no complete reply within the timeout; have %r" % self.buf[-300:])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed("connection closed by server; pending %r" % self.buf)
        self.buf += chunk

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self, timeout=None):
        """Read one complete reply (all continuation lines)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\r\n", 1)
            assert re.match(rb"^\d{3}([ -]|$)", line), "malformed reply line %r" % line
            if lines:
                assert line[:3] == lines[0][:3], "reply code changed mid-reply: %r" % (lines + [line])
            lines.append(line)
            if len(line) < 4 or line[3:4] == b" ":
                break
        r = Reply(lines)
        self.replies.append(r)
        if self.check_enhanced:
            self._check_enhanced(r)
        return r

    def _check_enhanced(self, r):
        if r.code in (220, 354):
            return
        first = r.lines[0][4:].split(b" ")[0].decode("utf-8", "replace")
        if r.code == 250 and first == self.hostname:       # EHLO / HELO reply
            return
        for l in r.lines:
            assert ENHANCED_RE.match(l), "reply line without an enhanced status code: %r" % l

    def read_replies(self, n, timeout=None):
        return [self.read_reply(timeout) for _ in range(n)]

    def replies_until_closed(self, timeout):
        """Every reply until the server closes the connection, waiting up to timeout seconds
        in all: (replies, closed).  A TLS connection cut short (an SSL error) counts as closed;
        running out of time does not."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                out.append(self.read_reply(timeout=deadline - time.monotonic()))
            except ConnectionClosed:
                return out, True
            except socket.timeout:
                return out, False
            except OSError:             # ssl.SSLError among them
                return out, True

    def cmd(self, line, expect=None, timeout=None):
        """Send one command line, read its reply; expect: '250' or '250 2.1.0'."""
        self.sendline(line)
        r = self.read_reply(timeout)
        if expect is not None:
            expect_reply(r, expect, "reply to %r" % line)
        return r

    def greeting(self, expect="220"):
        r = self.read_reply()
        if expect:
            expect_reply(r, expect, "greeting")
        return r

    def ehlo(self, name="client.test", expect="250"):
        r = self.cmd("EHLO " + name, expect=expect)
        return r

    def start(self, name="client.test"):
        """Greeting + EHLO; returns the EHLO reply."""
        self.greeting()
        return self.ehlo(name)

    def expect_closed(self, timeout=5.0):
        """Assert the server closes the connection (no further reply) within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                if b"\r\n" in self.buf:
                    raise AssertionError("expected the connection to close, got more data %r"
                                         % self.buf)
        except ConnectionClosed:
            return
        except socket.timeout:
            raise AssertionError("server did not close the connection within %.1fs" % timeout)

    def is_closed(self, timeout=0.5):
        try:
            self._fill(time.monotonic() + timeout)
        except ConnectionClosed:
            return True
        except socket.timeout:
            return False
        return False

    def send_message(self, msg, expect=None, timeout=None):
        """DATA with msg (bytes, CRLF lines): DATA -> 354, stuffed msg + '.', final reply."""
        self.cmd("DATA", expect="354")
        self.send(dot_stuff(msg) + b".\r\n")
        r = self.read_reply(timeout)
        if expect is not None:
            expect_reply(r, expect, "reply after the final dot")
        return r

    def send_message_paced(self, msg, seconds, step=0.5, timeout=20):
        """DATA, then msg's lines spread over about `seconds` seconds (a write every `step`: a
        slow sender), then the final dot; returns the reply after it."""
        self.cmd("DATA", expect="354")
        lines = dot_stuff(msg).split(b"\r\n")[:-1]
        writes = max(1, int(seconds / step))
        per = -(-len(lines) // writes)
        for i in range(0, len(lines), per):
            self.send(b"".join(l + b"\r\n" for l in lines[i:i + per]))
            time.sleep(step)
        self.send(b".\r\n")
        return self.read_reply(timeout)

    def transaction(self, mail_from, rcpts, msg, expect="250", params=""):
        """MAIL, RCPT..., DATA; each must succeed; returns the final reply."""
        self.cmd("MAIL FROM:<%s>%s" % (mail_from, params), expect="250")
        for r in rcpts:
            self.cmd("RCPT TO:<%s>" % r, expect="250")
        return self.send_message(msg, expect=expect)

    def quit(self):
        try:
            r = self.cmd("QUIT")
            expect_reply(r, "221 2.0.0", "reply to QUIT")
            return r
        finally:
            self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def expect_reply(r, expect, what="reply"):
    parts = str(expect).split()
    ok = r.code == int(parts[0]) and (len(parts) < 2 or r.enhanced == parts[1])
    assert ok, "%s: expected %s, got %r" % (what, expect, r.text)


def ehlo_keywords(r):
    """EHLO reply -> {KEYWORD: 'params'} (upper-case keywords), skipping the first line."""
    out = {}
    for t in r.texts()[1:]:
        parts = t.split(None, 1)
        if parts:
            out[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    return out


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------

def unique_id(tag="m"):
    return "%s-%s" % (tag, uuid.uuid4().hex[:16])


def make_message(subject=None, body_lines=None, headers=None, msgid=None, frm="sender@origin.test",
                 to="alice@example.test"):
    """A message as bytes with CRLF line ends (ends with CRLF).  body_lines: list of str/bytes."""
    msgid = msgid or unique_id()
    hdrs = [("From", "<%s>" % frm), ("To", "<%s>" % to), ("Subject", subject or msgid),
            ("Date", email.utils.formatdate(localtime=False)),
            ("Message-Id", "<%s@client.test>" % msgid)]
    hdrs += list(headers or [])
    out = [("%s: %s\r\n" % (k, v)).encode("utf-8") for k, v in hdrs] + [b"\r\n"]
    if body_lines is None:
        body_lines = ["Hello,", "", "this is %s." % msgid, "-- ", "end"]
    for l in body_lines:
        out.append((l.encode("utf-8") if isinstance(l, str) else l) + b"\r\n")
    return b"".join(out)


def tricky_body():
    """Body lines exercising transparency: leading dots, a lone dot, whitespace, 8-bit, long."""
    return [
        "first line",
        ".leading dot",
        ".",
        "..",
        "...three",
        " . space then dot",
        "",
        "trailing spaces   ",
        "\ttab\tseparated\t",
        "From the start of a line",
        "caf\u00e9 \u00fcber na\u00efve \u65e5\u672c",
        "x" * 998,
        "",
        "",
        "last line",
    ]


def dot_stuff(msg):
    """Dot-stuff msg (bytes, CRLF line ends; a missing final CRLF is added)."""
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    lines = msg.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def split_message(msg, nl=b"\r\n"):
    """(header block incl. the empty line, body)."""
    sep = nl + nl
    i = msg.find(sep)
    if i < 0:
        return msg, b""
    return msg[:i + len(sep)], msg[i + len(sep):]


def digest(b):
    return hashlib.sha256(b).hexdigest()


def assert_same_message(sent, stored, nl=b"\n"):
    """The stored content (trace headers already stripped) equals what the client sent,
    compared as header-block digest and body digest (line ends converted to nl)."""
    expect = sent.replace(b"\r\n", nl) if nl != b"\r\n" else sent
    sh, sb = split_message(expect, nl)
    gh, gb = split_message(stored, nl)
    assert digest(gh) == digest(sh), "header block differs:\nsent:\n%r\ngot:\n%r" % (sh, gh)
    assert digest(gb) == digest(sb), "body differs:\nsent:\n%r\ngot:\n%r" % (sb, gb)
    assert stored == expect


def maildir_files(path):
    d = os.path.join(path, "new")
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, n) for n in sorted(os.listdir(d))]


def run(argv, timeout=60, **kw):
    """subprocess.run with a timeout; returns CompletedProcess (text)."""
    return subprocess.run(argv, stdin=kw.pop("stdin", subprocess.DEVNULL), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout, **kw)

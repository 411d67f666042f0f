"""tlsauth.py - helpers for the TLS, AUTH and relay-control integration tests.

What is here:
  make_certs(dir)          a throwaway CA + server certificate (tests/gen-test-cert.sh), readable
                           by the privilege-dropped server (files 0644, dir 0755)
  hash_password(m, pw)     crypt(3) hashes: "sha512" (openssl passwd -6), "yescrypt", "bcrypt"
                           (libxcrypt via ctypes, the library python's crypt module wraps)
  write_passwd(path, ...)  a passwd-file (user:hash lines), 0644
  DovecotAuth              a throwaway Dovecot auth service (recipes/dovecot-auth.md) on a unix
                           socket and on 127.0.0.1:PORT, users from a passwd-file
  tls_context(ca)          a client SSLContext trusting the test CA
  starttls(c, ctx)         STARTTLS on a peers.SmtpClient, then the handshake on its socket
  wrap_implicit(c, ctx)    the handshake right after connect (implicit TLS), on a SmtpClient
  portier_tls_config(...)  config text: [listener mx] on {port} plus optional more listeners,
                           [tls] and [auth] sections
  check_tls_received(h)    portier's Received header with a "(using ...)" TLS clause
  plain_b64 / b64          SASL helpers

Fixtures (import them into a test module: from tlsauth import certs, tls_server, ...):
  certs                    module-scoped Certs
  tls_server(...)          -> Server(portier, sink, ports): an smtp-sink and a portier relaying
                           to it, with [tls] from certs and the given listeners/[auth]
  users_file(users, ...)   -> path of a passwd-file (default sha512-crypt hashes)
  dovecot_auth(users)      -> DovecotAuth

Every server here binds 127.0.0.1 on a free port and is stopped by its own PID.
"""
import base64
import ctypes
import ctypes.util
import email.utils
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile

import pytest

import peers
from peers import HOSTNAME, PeerError, Process, free_port, port_accepts, unix_accepts, wait_until

SRCDIR = os.environ.get("SRCDIR") or os.path.normpath(os.path.join(peers.HERE, "..", ".."))
GEN_CERT = os.path.join(SRCDIR, "tests", "gen-test-cert.sh")
OPENSSL = "/usr/bin/openssl"
MSMTP = "/usr/bin/msmtp"
CERT_CN = "localhost"


# ---------------------------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------------------------

class Certs:
    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.pem")
        self.cert = os.path.join(d, "cert.pem")
        self.key = os.path.join(d, "key.pem")


def make_certs(d, cn=CERT_CN):
    """CA + server cert (CN and SAN DNS:cn, IP:127.0.0.1) in d; everything world-readable
    (throwaway keys: portier reads them as nobody after dropping privileges)."""
    p = subprocess.run(["/bin/sh", GEN_CERT, d, cn], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise PeerError("gen-test-cert.sh failed (%d): %s" % (p.returncode, p.stdout.decode()))
    os.chmod(d, 0o755)
    for n in os.listdir(d):
        os.chmod(os.path.join(d, n), 0o644)
    return Certs(d)


def tls_context(certs, minimum=None, maximum=None):
    """Client context verifying the server against the test CA (host name 'localhost')."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


# ---------------------------------------------------------------------------------------------
# password hashes
# ---------------------------------------------------------------------------------------------

_libcrypt = None


def _xcrypt():
    global _libcrypt
    if _libcrypt is None:
        name = ctypes.util.find_library("crypt")
        if not name:
            raise OSError("libcrypt not found")
        lib = ctypes.CDLL(name)
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
                                      ctypes.c_int]
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        _libcrypt = lib
    return _libcrypt


class HashUnavailable(Exception):
    pass


def hash_password(method, password):
    """crypt(3) hash of password: method 'sha512' ($6$, openssl passwd -6), 'sha256' ($5$),
    'yescrypt' ($y$) or 'bcrypt' ($2b$, cost 5).  Raises HashUnavailable if this system
    cannot make one."""
    if method in ("sha512", "sha256"):
        flag = "-6" if method == "sha512" else "-5"
        p = subprocess.run([OPENSSL, "passwd", flag, "-stdin"], input=password.encode() + b"\n",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            raise HashUnavailable("openssl passwd %s: %s" % (flag, p.stderr.decode()))
        h = p.stdout.decode().strip()
        assert h.startswith("$6$" if method == "sha512" else "$5$"), h
        return h
    prefix, count = {"yescrypt": (b"$y$", 0), "bcrypt": (b"$2b$", 5)}[method]
    try:
        lib = _xcrypt()
        salt = lib.crypt_gensalt(prefix, count, None, 0)
        if not salt:
            raise HashUnavailable("crypt_gensalt(%s) failed: no %s in libcrypt" % (prefix, method))
        h = lib.crypt(password.encode(), salt)
    except (OSError, AttributeError) as e:
        raise HashUnavailable("libxcrypt: %s" % e)
    if not h or not h.startswith(prefix) or h.startswith(b"*"):
        raise HashUnavailable("crypt(3) cannot make %s hashes here (got %r)" % (method, h))
    return h.decode()


def write_passwd(path, entries):
    """entries: [(user, hash)] or raw lines (str).  Mode 0644."""
    with open(path, "w") as f:
        for e in entries:
            f.write(e if isinstance(e, str) else "%s:%s\n" % e)
    os.chmod(path, 0o644)
    return path


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


# ---------------------------------------------------------------------------------------------
# SASL
# ---------------------------------------------------------------------------------------------

def b64(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return base64.b64encode(s).decode("ascii")


def plain_b64(user, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


# ---------------------------------------------------------------------------------------------
# client side TLS on a peers.SmtpClient
# ---------------------------------------------------------------------------------------------

def starttls(c, ctx, server_hostname=CERT_CN):
    """STARTTLS -> 220 2.0.0, nothing else pending, then the handshake; returns the reply."""
    r = c.cmd("STARTTLS", expect="220 2.0.0")
    assert c.buf == b"", "data after the 220 to STARTTLS: %r" % c.buf
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    return r


def wrap_implicit(c, ctx, server_hostname=CERT_CN):
    """Handshake on a fresh connection (implicit TLS): nothing may have arrived before it."""
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    return c


def tls_version(c):
    return c.sock.version() if isinstance(c.sock, ssl.SSLSocket) else None


# ---------------------------------------------------------------------------------------------
# portier configuration
# ---------------------------------------------------------------------------------------------

def section(title, kv):
    return "[%s]\n%s\n" % (title, "".join("%s = %s\n" % (k, v) for k, v in kv.items()
                                          if v is not None))


def portier_tls_config(relay, certs=None, listener=None, listeners=None, tls=None, auth=None,
                       server=None, backend=None, extra=""):
    """[listener mx] on {port} (keys from `listener`), more listeners {name: {keys}} (use
    placeholders such as {subs} for their ports, see peers.Portier ports=), [tls] with the
    test certificate (when certs is given; `tls` adds keys), [auth] from `auth`."""
    for name, kv in (listeners or {}).items():
        extra += section("listener %s" % name, kv)
    if certs is not None:
        t = {"cert": certs.cert, "key": certs.key}
        t.update(tls or {})
        extra += section("tls", t)
    if auth is not None:
        extra += section("auth", auth)
    return peers.portier_config(relay, server=server, listener=listener, backend=backend,
                                extra=extra)


# portier's Received header when the session used TLS (unfolded)
TLS_RECEIVED_RE = re.compile(
    r"^Received: from (?P<helo>\S+) \((?P<name>\S+) \[(?P<addr>[0-9a-fA-F:.]+)\]\) "
    r"\(using (?P<tls>[^()]*)\) "
    r"by " + re.escape(HOSTNAME) + r" \(portier\) with (?P<proto>[A-Z0-9]+) "
    r"id (?P<id>\S+?)(?: [^;]*)?; (?P<date>.+)$")


def check_tls_received(h, proto, version="TLSv1.3", helo=None):
    m = TLS_RECEIVED_RE.match(h)
    assert m, "portier's Received header lacks the expected TLS form: %r" % h
    assert m.group("addr") == "127.0.0.1", h
    assert m.group("tls").startswith(version + " "), h
    assert m.group("proto") == proto, h
    if helo is not None:
        assert m.group("helo") == helo, h
    assert email.utils.parsedate_to_datetime(m.group("date").strip()) is not None, h
    return m


# ---------------------------------------------------------------------------------------------
# openssl s_client
# ---------------------------------------------------------------------------------------------

def s_client(port, certs, args=(), stdin=b"", timeout=20, delay=0.7):
    """openssl s_client to 127.0.0.1:port; returns (exit status, output text).

    stdin is written after `delay` seconds (the handshake is done by then: input that is
    ready earlier goes out in the same segment as the client's Finished, a case
    test_tls.py::test_first_flight_after_handshake covers on its own), and kept open until
    s_client exits (the server closes after QUIT, or the handshake fails) or timeout passes:
    at end of input s_client sends close_notify at once, racing the server's replies."""
    argv = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", certs.ca,
            "-servername", CERT_CN, "-verify_return_error", "-nocommands"] + list(args)
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            try:
                p.stdin.write(stdin)
                p.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait(timeout=10)
                out.write(b"\n[s_client killed after %d s]\n" % timeout)
        finally:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
        out.seek(0)
        return rc, out.read().decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Dovecot auth service
# ---------------------------------------------------------------------------------------------

DOVECOT_AUTH_CONF = """protocols =
listen = 127.0.0.1
base_dir = {T}/run
state_dir = {T}/state
log_path = {T}/dovecot.log
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {T}/passwd
}}
userdb {{
  driver = static
  args = uid=5000 gid=5000 home=/nonexistent
}}
service auth {{
  unix_listener {T}/auth-client {{
    mode = 0666
  }}
  inet_listener auth-client {{
    address = 127.0.0.1
    port = {PORT}
  }}
}}
"""


class DovecotAuth(Process):
    """Dovecot's auth service only (protocols = empty): .socket (unix) and .port (TCP).
    users: {user: password}; hashed SHA512-CRYPT, or BLF-CRYPT for users in blf."""

    def __init__(self, tmp, users, blf=()):
        self.tmp = tmp
        T = tmp
        os.chmod(T, 0o755)
        for d in ("run", "state"):
            os.makedirs(os.path.join(T, d), exist_ok=True)
        lines = []
        for u, pw in users.items():
            if u in blf:
                h = "{BLF-CRYPT}" + hash_password("bcrypt", pw)
            else:
                h = "{SHA512-CRYPT}" + hash_password("sha512", pw)
            lines.append("%s:%s\n" % (u, h))
        write_passwd(os.path.join(T, "passwd"), lines)
        self.socket = os.path.join(T, "auth-client")
        for attempt in range(4):
            self.port = free_port()
            with open(os.path.join(T, "dovecot.conf"), "w") as f:
                f.write(DOVECOT_AUTH_CONF.format(T=T, PORT=self.port))
            Process.__init__(self, "dovecot-auth",
                             [peers.DOVECOT, "-F", "-c", os.path.join(T, "dovecot.conf")],
                             os.path.join(T, "fg.out"))
            ok = wait_until(lambda: not self.alive() or
                            (port_accepts(self.port) and unix_accepts(self.socket)),
                            peers.START_DEADLINE)
            if ok and self.alive():
                return
            log = self.log_text()
            self.stop(signal.SIGKILL)
            if "in use" in log and attempt < 3:
                continue
            raise PeerError("dovecot auth did not start on 127.0.0.1:%d / %s:\n%s"
                            % (self.port, self.socket, log))

    def log_text(self):
        return peers.read_text(self.logfile) + peers.read_text(os.path.join(self.tmp,
                                                                            "dovecot.log"))


# ---------------------------------------------------------------------------------------------
# misc
# ---------------------------------------------------------------------------------------------

def port_listening(port):
    """Something listens on TCP port (from /proc/net/tcp*, without connecting: a probe
    connection on an implicit-TLS port would be a client leaving mid-handshake)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_ports(ports, timeout=10.0):
    """Every port is in LISTEN state."""
    for p in ports:
        if not wait_until(lambda: port_listening(p), timeout):
            raise PeerError("nothing listens on port %d" % p)


def recv_all(sock, timeout):
    """Everything the peer sends until it closes or timeout passes: (bytes, closed)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return data, True


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

# The accounts most tests use: login -> password.
ALICE = "alice@example.test"
ALICE_PW = "alice-Secret-1"
BOB = "bob@example.test"
BOB_PW = "bob-Secret-2"
USERS = {ALICE: ALICE_PW, BOB: BOB_PW}


class Server:
    def __init__(self, portier, sink, ports):
        self.portier = portier
        self.sink = sink
        self.ports = ports
        self.port = portier.port

    def __getattr__(self, name):            # server.sub, server.subs: listener ports
        ports = self.__dict__.get("ports") or {}
        if name in ports:
            return ports[name]
        raise AttributeError(name)


@pytest.fixture(scope="module")
def certs():
    d = peers.make_tempdir("certs")
    try:
        yield make_certs(os.path.join(d, "tls"))
    finally:
        if os.environ.get("PORTIER_KEEP") != "1":
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def users_file(tmpdir_0755):
    """users_file(users=USERS, method="sha512", name="passwd", extra_lines=()) -> path."""
    def make(users=None, method="sha512", name="passwd", extra_lines=()):
        entries = [(u, hash_password(method, pw)) for u, pw in (users or USERS).items()]
        return write_passwd(os.path.join(tmpdir_0755, name), entries + list(extra_lines))
    return make


@pytest.fixture
def aux_file(tmpdir_0755):
    """aux_file(name, text) -> path of a 0644 file in a 0755 temp dir."""
    def make(name, text):
        return write_file(os.path.join(tmpdir_0755, name), text)
    return make


@pytest.fixture
def tls_server(portier, sink, certs, users_file):
    """tls_server(listener={...}, listeners={name: {...}}, tls={...}, auth={...} or "default",
    server={...}, sink_args=()) -> Server.

    listener: keys of [listener mx] on {port} (default role mx, tls starttls).
    listeners: more listeners; each gets a free port, substituted for "{name}" and filled into
    listen = 127.0.0.1:{name} unless given.  auth="default": passwd_file with USERS
    (sha512-crypt) and max_failures = 100."""
    def make(listener=None, listeners=None, tls=None, auth=None, server=None, sink_args=(),
             extra=""):
        s = sink(args=sink_args)
        lst = {"tls": "starttls"}
        lst.update(listener or {})
        more = {}
        ports = {}
        for name, kv in (listeners or {}).items():
            assert name not in ("port", "tmp")
            ports[name] = free_port()
            d = {"listen": "127.0.0.1:{%s}" % name}
            d.update(kv)
            more[name] = d
        if auth == "default":
            auth = {"passwd_file": users_file(), "max_failures": 100, "failure_window": 60}
        cfg = portier_tls_config("smtp:127.0.0.1:%d" % s.port, certs=certs, listener=lst,
                                 listeners=more, tls=tls, auth=auth, server=server,
                                 extra=extra)
        p = portier(cfg, ports=ports)
        wait_ports(ports.values())
        return Server(p, s, ports)
    return make


@pytest.fixture
def dovecot_auth(request):
    started = []
    tmps = []

    def start(users=None, blf=()):
        tmp = peers.make_tempdir("dovecot-auth")
        tmps.append(tmp)
        d = DovecotAuth(tmp, users or USERS, blf=blf)
        started.append(d)
        return d

    def fin():
        for d in started:
            d.stop()
        for t in tmps:
            if os.environ.get("PORTIER_KEEP") != "1":
                shutil.rmtree(t, ignore_errors=True)

    request.addfinalizer(fin)
    return start


def first_flight(sock, ctx, payload, server_hostname=CERT_CN, wait=3.0):
    """TLS handshake on sock (after STARTTLS's 220, or right after connect) where the client's
    Finished and its first application data (payload) leave in ONE TCP write, as openssl
    s_client does when its input is ready.  Returns (decrypted bytes the server sent until it
    closed or `wait` passed, how it ended: "eof", "close_notify", "reset" or "timeout")."""
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, outg, server_hostname=server_hostname)
    sock.settimeout(10)
    while True:
        try:
            o.do_handshake()
            break
        except ssl.SSLWantReadError:
            d = outg.read()
            if d:
                sock.sendall(d)
            chunk = sock.recv(65536)
            if not chunk:
                raise PeerError("server closed during the handshake")
            inc.write(chunk)
    o.write(payload)
    sock.sendall(outg.read())
    got = b""
    sock.settimeout(wait)
    how = "timeout"
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                how = "eof"
                break
            inc.write(chunk)
            try:
                while True:
                    d = o.read(65536)
                    if not d:
                        break
                    got += d
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                how = "close_notify"
                break
    except socket.timeout:
        pass
    except ConnectionResetError:
        how = "reset"
    return got, how


def challenge(c, line, expect_text=None):
    """Send line, expect a 334 challenge (334 has no enhanced status code); returns the text
    after '334 '."""
    saved = c.check_enhanced
    c.check_enhanced = False
    try:
        r = c.cmd(line)
    finally:
        c.check_enhanced = saved
    if r.code != 334:
        c._check_enhanced(r) if saved else None
    assert r.code == 334 and len(r.lines) == 1, "expected 334 to %r, got %r" % (line[:60], r.text)
    text = r.lines[0][4:].decode("ascii", "replace")
    if expect_text is not None:
        assert text == expect_text, "334 text %r, expected %r" % (text, expect_text)
    return text


def auth_plain(c, user, password, expect="235 2.7.0"):
    return c.cmd("AUTH PLAIN " + plain_b64(user, password), expect=expect)


def auth_login(c, user, password, expect="235 2.7.0"):
    challenge(c, "AUTH LOGIN", "VXNlcm5hbWU6")
    challenge(c, b64(user), "UGFzc3dvcmQ6")
    return c.cmd(b64(password), expect=expect)

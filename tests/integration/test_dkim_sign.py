"""The dkim-sign filter through full SMTP sessions: what portier signs (RSA-SHA256 from an
opendkim-genkey key, Ed25519-SHA256 from an openssl genpkey key) verifies with dkimpy, given a
dnsfunc that serves the test keys' records, and with opendkim-testmsg (libopendkim), run in a
mount namespace whose /etc/resolv.conf points at a private unbound serving the same records;
relaxed and simple; a changed body fails; the key follows the From: domain, and on submission
the login's domain when the From: domain has none; no key, no signature; both keys, two
signatures; a missing key file is a -t error naming it, an unreadable one fails the reload.
Keys are generated once per module."""
import base64
import os
import shutil
import signal
import subprocess

import dkim
import pytest

import peers
from peers import make_message
from tlsauth import (certs, users_file, ALICE, ALICE_PW, tls_context, starttls,  # noqa: F401
                     plain_b64, portier_tls_config)

RCPT = "alice@example.test"


class Keys:
    """RSA 2048 (opendkim-genkey) and Ed25519 (openssl genpkey) for example.test, Ed25519 for
    other.test; .records maps DNS names to TXT records."""

    def __init__(self, d):
        self.dir = d
        self.records = {}
        subprocess.run(["opendkim-genkey", "-b", "2048", "-d", "example.test", "-s", "rsa",
                        "-D", d], check=True)
        self.rsa = os.path.join(d, "rsa.private")
        txt = open(os.path.join(d, "rsa.txt")).read()
        parts = "".join(p.split('"')[1] for p in txt.split("\n") if '"' in p)
        self.records["rsa._domainkey.example.test."] = parts
        self.ed = self.ed25519("ed", "example.test")
        self.other = self.ed25519("o1", "other.test")

    def ed25519(self, sel, domain):
        path = os.path.join(self.dir, "%s.pem" % sel)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", path], check=True)
        der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.records["%s._domainkey.%s." % (sel, domain)] = (
            "v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]).decode())
        return path

    def dnsfunc(self, name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        rec = self.records.get(name if name.endswith(".") else name + ".")
        return rec.encode() if rec else None

    def zones(self):
        out = []
        for domain in ("example.test.", "other.test."):
            out.append('local-zone: "_domainkey.%s" static' % domain)
        for name, rec in self.records.items():
            chunks = " ".join('"%s"' % rec[i:i + 250] for i in range(0, len(rec), 250))
            out.append("local-data: '%s 300 IN TXT %s'" % (name, chunks))
        return out


@pytest.fixture(scope="module")
def keys():
    d = peers.make_tempdir("dkimkeys")
    os.chmod(d, 0o755)
    k = Keys(d)
    yield k
    shutil.rmtree(d, ignore_errors=True)


def section(keys_value, **kw):
    kv = {"keys": keys_value, "sign_unauthenticated": "yes"}
    kv.update(kw)
    return "[filter dkim-sign]\n" + "".join("%s = %s\n" % (k, v) for k, v in kv.items() if v)


def mx_pair(make_pair, text):
    return make_pair(listener={"filters": "dkim-sign"}, extra=text)


def send(p, client, frm="sender@example.test", msg=None):
    c = client(p.port)
    c.start()
    c.transaction("sender@example.test", [RCPT], msg or make_message(frm=frm, to=RCPT))
    c.quit()


def received(s, n=1):
    """The n-th message as portier sent it (CRLF): smtp-sink's envelope lines and Received
    and the LF it adds at the end taken off."""
    msgs = s.wait_messages(n)
    assert len(msgs) >= n, msgs
    raw = msgs[n - 1].raw
    fields, _ = peers.split_header_fields(raw, b"\n")
    i = 0
    while i < len(fields) and fields[i][0].startswith("x-"):
        i += 1
    if i < len(fields) and fields[i][0] == "received" and b"smtp-sink" in fields[i][1]:
        i += 1
    rest = raw[sum(len(f) for _, f in fields[:i]):]
    assert rest.endswith(b"\n"), rest
    return rest[:-1].replace(b"\n", b"\r\n")


def sig_fields(raw):
    """The DKIM-Signature fields, unfolded (str), top first."""
    fields, _ = peers.split_header_fields(raw, b"\r\n")
    return [peers.unfold(f) for name, f in fields if name == "dkim-signature"]


def tags(field):
    v = field.split(":", 1)[1]
    return {t.split("=", 1)[0].strip(): t.split("=", 1)[1].strip()
            for t in v.split(";") if "=" in t}


def dkimpy_results(keys, raw):
    """dkimpy's verdict on each signature, top first (its exceptions are failures)."""
    out = []
    for i in range(len(sig_fields(raw))):
        try:
            out.append(dkim.DKIM(raw).verify(idx=i, dnsfunc=keys.dnsfunc))
        except dkim.ValidationError:
            out.append(False)
    return out


@pytest.mark.parametrize("sel,canon,alg", [
    ("rsa", "relaxed/relaxed", "rsa-sha256"),
    ("rsa", "simple/simple", "rsa-sha256"),
    ("ed", "relaxed/relaxed", "ed25519-sha256"),
    ("ed", "simple/simple", "ed25519-sha256"),
])
def test_signed_verifies_with_dkimpy(make_pair, client, keys, sel, canon, alg):
    """One key: the message arrives with one DKIM-Signature (a=, c=, d=, s= as configured,
    From over-signed in h=) that dkimpy verifies; a changed body fails."""
    path = keys.rsa if sel == "rsa" else keys.ed
    p, s = mx_pair(make_pair, section("example.test:%s:%s" % (sel, path), canonicalization=canon))
    send(p, client)
    raw = received(s)
    sigs = sig_fields(raw)
    assert len(sigs) == 1, raw
    t = tags(sigs[0])
    assert (t["a"], t["c"], t["d"], t["s"]) == (alg, canon, "example.test", sel), t
    assert [h.strip().lower() for h in t["h"].split(":")].count("from") == 2, t["h"]
    assert dkimpy_results(keys, raw) == [True]
    head, body = raw.split(b"\r\n\r\n", 1)
    assert dkimpy_results(keys, head + b"\r\n\r\n" + body.replace(b"Hello", b"Jello")) == [False]
    assert p.wait_log(r"event=dkim_signed .*d=example.test s=%s a=%s" % (sel, alg))


def test_both_keys_two_signatures(make_pair, client, keys):
    """RSA and Ed25519 for one domain: two signatures, both verify with dkimpy."""
    p, s = mx_pair(make_pair, section("example.test:rsa:%s example.test:ed:%s" % (keys.rsa,
                                                                               keys.ed)))
    send(p, client)
    raw = received(s)
    algs = sorted(tags(f)["a"] for f in sig_fields(raw))
    assert algs == ["ed25519-sha256", "rsa-sha256"], raw
    assert dkimpy_results(keys, raw) == [True, True]


def test_key_by_from_domain_and_none(make_pair, client, keys):
    """The From: domain picks the key (other.test's, not example.test's); a From: domain
    without a key gets no signature and an event=dkim_sign_skip line."""
    p, s = mx_pair(make_pair, section("example.test:ed:%s other.test:o1:%s" % (keys.ed,
                                                                               keys.other)))
    send(p, client, frm="someone@other.test")
    send(p, client, frm="someone@nokey.test")
    s.wait_messages(2)
    raws = {b"other" if b"From: <someone@other.test>" in r else b"nokey": r
            for r in (received(s, 1), received(s, 2))}
    t = tags(sig_fields(raws[b"other"])[0])
    assert (t["d"], t["s"]) == ("other.test", "o1"), t
    assert dkimpy_results(keys, raws[b"other"]) == [True]
    assert sig_fields(raws[b"nokey"]) == []
    assert p.wait_log(r"event=dkim_sign_skip .*reason=no_key .*from_domain=nokey.test")


def test_unauthenticated_not_signed_by_default(make_pair, client, keys):
    """Without sign_unauthenticated, a session without a login (mx) is not signed."""
    p, s = mx_pair(make_pair, section("example.test:ed:%s" % keys.ed, sign_unauthenticated=""))
    send(p, client)
    assert sig_fields(received(s)) == []


def test_submission_login_domain(portier, sink, client, keys, certs, users_file):
    """On submission (STARTTLS + AUTH as alice@example.test) From: alice@example.test is
    signed with example.test's key; no sign_unauthenticated needed."""
    s = sink()
    cfg = portier_tls_config("smtp:127.0.0.1:%d" % s.port, certs=certs,
                             listener={"role": "submission", "tls": "starttls",
                                       "filters": "dkim-sign"},
                             auth={"passwd_file": users_file(), "max_failures": 100,
                                   "failure_window": 60})
    p = portier(cfg + section("example.test:ed:%s" % keys.ed, sign_unauthenticated=""))
    c = client(p.port)
    c.start()
    starttls(c, tls_context(certs))
    c.ehlo("client.test")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="235")
    c.transaction(ALICE, ["bob@elsewhere.test"], make_message(frm=ALICE, to="bob@elsewhere.test"))
    c.quit()
    raw = received(s)
    assert [tags(f)["d"] for f in sig_fields(raw)] == ["example.test"]
    assert dkimpy_results(keys, raw) == [True]


def test_opendkim_testmsg_verifies(make_pair, client, unbound, keys, tmpdir_0755):
    """opendkim-testmsg (libopendkim, keys from DNS) verifies what portier signed, RSA and
    Ed25519, relaxed and simple, and refuses a changed body.  It asks the system resolver, so
    it runs in a private mount namespace whose /etc/resolv.conf names 127.0.0.99, where a
    small UDP relay forwards to the test unbound's port."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a private /etc/resolv.conf")
    dns = unbound(zones=keys.zones())
    raws = []
    for sel, path in (("rsa", keys.rsa), ("ed", keys.ed)):
        for canon in ("relaxed/relaxed", "simple/simple"):
            p, s = mx_pair(make_pair, section("example.test:%s:%s" % (sel, path),
                                              canonicalization=canon))
            send(p, client)
            raws.append(received(s))
            assert len(sig_fields(raws[-1])) == 1, raws[-1]
    head, body = raws[0].split(b"\r\n\r\n", 1)
    bad = head + b"\r\n\r\n" + body.replace(b"Hello", b"Jello")
    results = [run_testmsg(dns.port, r, tmpdir_0755) for r in raws + [bad]]
    assert results[:-1] == [(0, b"")] * len(raws), results
    assert results[-1][0] != 0, results


# A UDP relay 127.0.0.99:53 -> 127.0.0.1:PORT, one query at a time (enough for testmsg).
RELAY = """
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.99", 53))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
while True:
    d, a = s.recvfrom(65535)
    u.sendto(d, ("127.0.0.1", port))
    try:
        s.sendto(u.recvfrom(65535)[0], a)
    except OSError:
        pass
"""


def run_testmsg(port, raw, tmp):
    """(exit status, output) of opendkim-testmsg verifying raw, DNS through the relay."""
    msg = os.path.join(tmp, "msg.eml")
    with open(msg, "wb") as f:
        f.write(raw.replace(b"\r\n", b"\n"))
    resolv = os.path.join(tmp, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.99\noptions timeout:2 attempts:1\n")
    relay = os.path.join(tmp, "relay.py")
    with open(relay, "w") as f:
        f.write(RELAY)
    script = ("mount --bind %s /etc/resolv.conf || exit 99; "
              "/usr/bin/python3 %s %d & relay=$!; sleep 0.5; "
              "opendkim-testmsg < %s; rc=$?; kill $relay; exit $rc") % (resolv, relay, port, msg)
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_missing_key_is_a_config_error(tmpdir_0755, keys):
    """portier -t: a key file that does not exist is refused, naming the file."""
    missing = os.path.join(tmpdir_0755, "nokey.pem")
    cfg = peers.portier_config(listener={"filters": "dkim-sign"},
                               extra=section("example.test:rsa:%s" % missing))
    path = os.path.join(tmpdir_0755, "portier.conf")
    with open(path, "w") as f:
        f.write(cfg.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert rc != 0, out
    assert missing in out and "No such file" in out, out


def test_unreadable_key_fails_reload(make_pair, client, keys, tmpdir_0755):
    """A key readable by root only: read at start (as root), but SIGHUP's configure runs as
    the unprivileged user: the reload fails naming the file, the old configuration keeps
    signing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start portier as root")
    key = os.path.join(tmpdir_0755, "root-only.pem")
    shutil.copy(keys.ed, key)
    os.chmod(key, 0o600)
    text = section("example.test:ed:%s" % key)
    p, s = mx_pair(make_pair, text)
    send(p, client)
    assert dkimpy_results(keys, received(s, 1)) == [True]
    p.signal(signal.SIGHUP)
    assert p.wait_log(r"root-only\.pem.*Permission denied|Permission denied.*root-only\.pem",
                      timeout=10)
    send(p, client)
    assert dkimpy_results(keys, received(s, 2)) == [True]

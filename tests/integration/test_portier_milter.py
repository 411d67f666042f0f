"""portier-milter behind a real, private Postfix (../shared/recipes/postfix-instance.md):
smtpd_milters points at portier-milter (milter_default_action = tempfail), Postfix relays
everything to an smtp-sink, and portier-milter asks a private unbound (peers.Unbound) for the
test zones of test_auth_chain: origin.test's SPF (127.0.0.0/8), its DKIM key s1, its DMARC
policy p=reject.

  PortierMilter  $PORTIER_MILTER (else milter/portier-milter next to $PORTIER's build) on a free
                 port, its config in its own temp dir; stopped by its PID with SIGTERM, which
                 must end it with status 0 and no sanitizer report
  Postfix        postfix -c DIR start as root, stopped by its master's PID

The client talks to Postfix (its EHLO names it mta.example.test, macro j); portier-milter's
[server] hostname mx.example.test is the authserv-id of its Authentication-Results.
"""
import os
import re
import signal
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

import peers
from peers import make_message
from test_auth_chain import (rsa_key, zones, signed, ar_headers,  # noqa: F401 (fixtures)
                             sink_message_bytes)
from test_dkim_sign import keys, dkimpy_results, sig_fields  # noqa: F401 (keys: fixture)
from tlsauth import dovecot_auth, ALICE, ALICE_PW, plain_b64  # noqa: F401 (fixture)

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
MTA_NAME = "mta.example.test"
RCPT = "alice@example.test"
CHAIN = "spf dkim-verify dmarc"


def milter_binary():
    """$PORTIER_MILTER, else milter/portier-milter in $PORTIER's build."""
    path = os.environ.get("PORTIER_MILTER")
    if not path:
        portier = peers.portier_binary()
        if portier:
            path = os.path.join(os.path.dirname(os.path.dirname(portier)), "milter",
                                "portier-milter")
    return path


def milter_config(dns, filters=CHAIN, extra="", server=None, milter=None):
    """portier.conf for portier-milter alone: [server] and [milter-server] on {mport}."""
    srv = {"hostname": peers.HOSTNAME, "user": "nobody", "log": "stderr",
           "local_domains": peers.LOCAL_DOMAIN, "resolver": dns.servers,
           "resolver_timeout": "5", "drain_timeout": "5"}
    srv.update(server or {})
    ms = {"listen": "inet:127.0.0.1:{mport}", "filters": filters, "role": "mx"}
    ms.update(milter or {})
    text = "[server]\n" + "".join("%s = %s\n" % kv for kv in srv.items() if kv[1] is not None)
    text += "\n[milter-server]\n" + "".join("%s = %s\n" % kv for kv in ms.items()
                                             if kv[1] is not None)
    return text + "\n" + extra


class PortierMilter(peers.Process):
    """portier-milter -c $T/portier.conf listening on 127.0.0.1:.port."""

    def __init__(self, tmp, config_text, args=()):
        self.tmp = tmp
        self.binary = milter_binary()
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise peers.PeerError("portier-milter not found: %r (set PORTIER_MILTER)"
                                  % (self.binary,))
        self.port = peers.free_port()
        self.conf = os.path.join(tmp, "portier.conf")
        text = config_text.replace("{mport}", str(self.port)).replace("{tmp}", tmp)
        with open(self.conf, "w") as f:
            f.write(text)
        os.chmod(self.conf, 0o644)
        listen = re.search(r"^listen = (\S+)", text, re.M).group(1)
        self.spec = listen      # as Postfix's smtpd_milters names it
        super().__init__("portier-milter", [self.binary] + list(args) + ["-c", self.conf],
                         os.path.join(tmp, "milter.log"), cwd=tmp)
        ok = peers.wait_until(lambda: not self.alive() or
                              re.search(r"event=startup listen=\S+ role=", self.log_text()),
                              peers.START_DEADLINE)
        if not ok or not self.alive():
            self.stop(signal.SIGKILL)
            self.fail("did not start listening on 127.0.0.1:%d" % self.port)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """As Process.stop, but after SIGTERM a connection wakes libmilter's listener, which
        looks at the stop only when its poll of the socket times out (MI_CHK_TIME, 5 s): each
        Postfix test's teardown took 5 s.  The connection is closed at once, so it also
        checks that a client arriving during the stop harms nothing."""
        if sig == signal.SIGTERM and self.alive():
            self.signal(sig)
            for _ in range(10):
                self.wake()
                if self.wait(0.3) is not None:
                    break
        return super().stop(sig, timeout)

    def wake(self):
        """Connect to the milter's socket and hang up (nothing if it is gone)."""
        if self.spec.startswith("unix:"):
            family, addr = socket.AF_UNIX, self.spec[len("unix:"):]
        else:
            family, addr = socket.AF_INET, ("127.0.0.1", self.port)
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sk:
                sk.settimeout(1.0)
                sk.connect(addr)
        except OSError:
            pass

    def txns(self):
        return [peers.parse_log_fields(m.group(0))
                for m in peers.TXN_LINE_RE.finditer(self.log_text())]

    def wait_txns(self, n, timeout=10.0):
        peers.wait_until(lambda: len(self.txns()) >= n, timeout)
        got = self.txns()
        assert len(got) >= n, "expected %d event=txn lines, got:\n%s" % (n, self.log_text())
        return got


MAIN_CF = """compatibility_level = 3.6
queue_directory = {T}/spool
data_directory = {T}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {MTA}
mydomain = example.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:{SINK}
smtp_dns_support_level = disabled
maillog_file = {T}/maillog
maillog_file_prefixes = {T}
smtpd_milters = {MILTER}
milter_default_action = tempfail
biff = no
{EXTRA}
"""

MASTER_CF = """127.0.0.1:{PORT} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix: smtpd on 127.0.0.1:.port with the milter at milter_spec (as
    smtpd_milters takes it), relaying to the sink on sink_port; its own config, queue and data
    dirs under tmp."""

    def __init__(self, tmp, milter_spec, sink_port, extra=""):
        self.tmp = tmp
        self.etc = os.path.join(tmp, "etc")
        os.makedirs(self.etc)
        os.makedirs(os.path.join(tmp, "spool"))
        self.port = peers.free_port()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(T=tmp, MTA=MTA_NAME, SINK=sink_port, MILTER=milter_spec,
                                   EXTRA=extra))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(PORT=self.port))
        r = subprocess.run([POSTFIX, "-c", self.etc, "start"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise peers.PeerError("postfix start failed (%d): %s\n%s" % (
                r.returncode, r.stderr.decode(errors="replace"), self.log_text()))
        pidfile = os.path.join(tmp, "spool", "pid", "master.pid")
        self.pid = int(peers.read_text(pidfile).strip() or 0)
        if not peers.wait_until(lambda: peers.port_accepts(self.port), peers.START_DEADLINE):
            self.stop()
            raise peers.PeerError("postfix did not listen on %d:\n%s" % (self.port,
                                                                          self.log_text()))

    def log_text(self):
        return peers.read_text(os.path.join(self.tmp, "maillog"))

    def alive(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    def stop(self):
        if self.pid and self.alive():
            os.kill(self.pid, signal.SIGTERM)
            if not peers.wait_until(lambda: not self.alive(), 20):
                os.kill(self.pid, signal.SIGKILL)

    def client(self, **kw):
        return peers.SmtpClient(self.port, hostname=MTA_NAME, **kw)


@pytest.fixture
def stack(request, sink, unbound):
    """stack(zone_lines, filters=..., extra=..., server=..., milter=..., postfix_extra=...)
    -> (PortierMilter, Postfix, Sink, Unbound); everything stopped by PID at the end, and
    portier-milter must exit 0 on SIGTERM with no sanitizer report."""
    started = []

    def make(zone_lines, stall=(), postfix_extra="", **kw):
        dns = unbound(zones=zone_lines, stall=list(stall))
        s = sink()
        tmp = peers.make_tempdir("pmilter")
        m = PortierMilter(tmp, milter_config(dns, **kw))
        pf_tmp = peers.make_tempdir("postfix")
        started.append((m, None, tmp, pf_tmp))
        pf = Postfix(pf_tmp, m.spec, s.port, extra=postfix_extra)
        started[-1] = (m, pf, tmp, pf_tmp)
        return m, pf, s, dns

    def fin():
        problems = []
        for m, pf, tmp, pf_tmp in started:
            if pf is not None:
                pf.stop()
            crashed = m.returncode()
            was_stopped = m.stopped_by_us
            rc = m.stop()
            log = m.log_text()
            if crashed is not None and not was_stopped:
                problems.append("portier-milter exited on its own (%r)" % crashed)
            elif rc != 0:
                problems.append("portier-milter exited with %r on SIGTERM" % rc)
            if any(mark in log for mark in peers.SANITIZER_MARKS):
                problems.append("sanitizer report")
            if problems:
                problems.append("log:\n" + log[-20000:])
            for d in (tmp, pf_tmp):
                if os.environ.get("PORTIER_KEEP") != "1":
                    shutil.rmtree(d, ignore_errors=True)
        if problems:
            pytest.fail("\n".join(problems))

    request.addfinalizer(fin)
    return make


def send(pf, msg, mail_from="sender@origin.test", rcpts=(RCPT,), expect="250"):
    c = pf.client()
    c.start()
    r = c.transaction(mail_from, list(rcpts), msg, expect=expect)
    c.quit()
    return r


def ours(ars):
    return [h for h in ars if h.split(":", 1)[1].strip().lower().startswith(peers.HOSTNAME)]


def test_authenticated_message_gets_our_results(stack, rsa_key):
    """SPF-authorised host, signed with the key in the private unbound: the sink gets one
    Authentication-Results of portier-milter's with spf, dkim and dmarc pass; a forged one
    claiming our authserv-id is gone, another host's stays."""
    key, pub = rsa_key
    m, pf, s, _ = stack(zones(pub))
    forged = "Authentication-Results: %s; dkim=pass header.d=forged.test" % peers.HOSTNAME
    other = "Authentication-Results: other.example; spf=fail smtp.mailfrom=x@origin.test"
    msg = (forged + "\r\n" + other + "\r\n").encode() + signed(key)
    send(pf, msg)
    got = s.wait_messages(1)
    assert len(got) == 1, pf.log_text()
    ars = ar_headers(got[0])
    mine = ours(ars)
    assert len(mine) == 1, ars
    text = " ".join(mine[0].split())
    assert "spf=pass smtp.mailfrom=sender@origin.test" in text, text
    assert "dkim=pass header.d=origin.test header.s=s1" in text, text
    assert "dmarc=pass" in text and "header.from=origin.test" in text, text
    assert "forged.test" not in text
    assert any("other.example" in h for h in ars), ars
    t = m.wait_txns(1)[-1]
    assert t["result"] == "accepted" and t["from"] == "<sender@origin.test>", t


def test_spf_fail_rejected_with_our_text(stack, rsa_key):
    """An SPF fail (origin.test lists only 192.0.2.1) under p=reject: Postfix answers MAIL with
    portier's 550 5.7.23 and its text; a recipient outside local_domains (role mx: port25)
    is refused alone, as the relay policy of portier's mx listener refuses it."""
    key, pub = rsa_key
    z = [l.replace("ip4:127.0.0.0/8", "ip4:192.0.2.1") for l in zones(pub)]
    m, pf, s, _ = stack(z)
    c = pf.client()
    c.start()
    r = c.cmd("MAIL FROM:<sender@origin.test>")
    assert r.code == 550 and r.enhanced == "5.7.23", r
    assert "origin.test" in r.text and "127.0.0.1" in r.text, r
    c.cmd("RSET", expect="250")
    c.cmd("MAIL FROM:<>", expect="250")
    r = c.cmd("RCPT TO:<someone@elsewhere.test>")
    assert r.code == 550 and r.enhanced == "5.7.1" and "relay" in r.text.lower(), r
    c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
    c.quit()
    t = m.wait_txns(1)[0]
    assert t["result"] == "rejected" and t["filter"] == "spf", t
    assert t["reply"].startswith("550 5.7.23"), t


def test_dkim_sign_through_postfix(stack, keys, dovecot_auth):
    """role = submission with dkim-sign: Postfix's SASL login (Dovecot) reaches the chain as
    {auth_authen}; the message at the sink carries portier's signature, which dkimpy verifies.
    Without a login, the role's auth-enforce refuses MAIL with 530 5.7.0, through Postfix."""
    auth = dovecot_auth()
    extra = ("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
             "smtpd_sasl_path = inet:127.0.0.1:%d\n" % auth.port)
    m, pf, s, _ = stack([], filters="dkim-sign", milter={"role": "submission"},
                        extra="[filter dkim-sign]\nkeys = example.test:rsa:%s\n" % keys.rsa,
                        postfix_extra=extra)
    c = pf.client()
    c.start()
    r = c.cmd("MAIL FROM:<%s>" % ALICE)
    assert r.code == 530 and r.enhanced == "5.7.0", r
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="235")
    c.transaction(ALICE, ["bob@example.test"], make_message(frm=ALICE, to="bob@example.test"))
    c.quit()
    got = s.wait_messages(1)
    assert len(got) == 1, pf.log_text()
    raw = sink_message_bytes(got[0])
    assert len(sig_fields(raw)) == 1, raw[:800]
    assert dkimpy_results(keys, raw) == [True], raw[:1500]
    assert re.search(r"event=dkim_signed .*d=example.test s=rsa .*by=from", m.log_text())
    t = m.wait_txns(1)[-1]
    assert t["result"] == "accepted" and t["from"] == "<%s>" % ALICE, t


@pytest.mark.parametrize("case", ["spf", "dkim"])
def test_stalled_dns_configured_action(stack, rsa_key, case):
    """DNS for stall.test never answers (resolver_timeout 10 s); the filter's timeout = 2 and
    default_action decide instead, and Postfix answers with that within a few seconds:
      spf (on the filter pool): default_action = reject, 550 5.7.1 at MAIL;
      dkim (waiting on portier-milter's own loop): default_action = tempfail, 451 4.7.1
      after the message.
    The next message on the same portier-milter is served as usual."""
    key, pub = rsa_key
    name = "spf" if case == "spf" else "dkim-verify"
    action = "reject" if case == "spf" else "tempfail"
    m, pf, s, _ = stack(zones(pub), stall=["stall.test."], server={"resolver_timeout": "10"},
                        extra="[filter %s]\ntimeout = 2\ndefault_action = %s\n" % (name, action))
    c = pf.client()
    c.start()
    t0 = time.monotonic()
    if case == "spf":
        r = c.cmd("MAIL FROM:<someone@stall.test>", timeout=30)
        assert r.code == 550 and r.enhanced == "5.7.1", r
    else:
        c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
        c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
        t0 = time.monotonic()
        r = c.send_message(signed(key, domain=b"stall.test"), timeout=30)
        assert r.code == 451 and r.enhanced == "4.7.1", r
    waited = time.monotonic() - t0
    assert 1.5 <= waited < 6, waited
    c.quit()
    assert re.search(r"event=filter_timeout filter=%s .*action=%s" % (name, action),
                     m.log_text()), m.log_text()
    send(pf, signed(key))
    assert len(s.wait_messages(1)) == 1


@pytest.mark.parametrize("case", ["spf", "dkim"])
def test_stalled_session_holds_no_other(stack, rsa_key, case):
    """While one Postfix session waits on DNS that never answers (spf on the filter pool, or
    dkim-verify on its connection's own loop), five others run at once on other libmilter
    threads and loops: their messages arrive with spf, dkim and dmarc pass long before the
    stalled one is answered (451 4.7.24, or dkim=temperror after resolver_timeout)."""
    key, pub = rsa_key
    m, pf, s, _ = stack(zones(pub), stall=["stall.test."], server={"resolver_timeout": "6"})
    slow = pf.client()
    slow.start()
    if case == "spf":
        slow.sendline("MAIL FROM:<someone@stall.test>")
    else:
        slow.cmd("MAIL FROM:<sender@origin.test>", expect="250")
        slow.cmd("RCPT TO:<%s>" % RCPT, expect="250")
        slow.cmd("DATA", expect="354")
        slow.send(peers.dot_stuff(signed(key, domain=b"stall.test")) + b".\r\n")
    time.sleep(0.5)
    t0 = time.monotonic()
    errors = []

    def one():
        try:
            send(pf, signed(key))
        except Exception as e:      # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    got = s.wait_messages(5)
    assert time.monotonic() - t0 < 4, "the others waited for the stalled one"
    assert len(got) == 5, got
    for g in got:
        text = " ".join(" ".join(ours(ar_headers(g))).split())
        assert "spf=pass" in text and "dkim=pass" in text and "dmarc=pass" in text, text
    r = slow.read_reply(timeout=30)
    if case == "spf":
        assert r.code == 451 and r.enhanced == "4.7.24", r
    else:
        assert r.code == 250, r
        late = [g for g in s.wait_messages(6) if b"stall.test" in g.raw]
        assert len(late) == 1, s.messages()
        assert "dkim=temperror" in " ".join(ours(ar_headers(late[0])))
    slow.quit()


def test_client_leaves_during_a_wait(stack, rsa_key):
    """The client hangs up right after its final dot, while dkim-verify waits on DNS that never
    answers: Postfix has the whole message and waits for portier-milter, whose stage ends at
    resolver_timeout; the message goes on with dkim=temperror, the session closes through the
    chain, and the next client's message passes on the same, reused loops."""
    key, pub = rsa_key
    m, pf, s, _ = stack(zones(pub), stall=["stall.test."], server={"resolver_timeout": "2"})
    c = pf.client()
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
    c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
    c.cmd("DATA", expect="354")
    c.send(peers.dot_stuff(signed(key, domain=b"stall.test")) + b".\r\n")
    c.close()
    assert peers.wait_until(lambda: m.log_text().count("event=disconnect") >= 2, 15), \
        m.log_text()
    send(pf, signed(key))
    got = s.wait_messages(2)
    assert len(got) == 2, got
    for g in got:
        text = " ".join(" ".join(ours(ar_headers(g))).split())
        want = "dkim=temperror" if b"d=stall.test" in g.raw else "dkim=pass"
        assert want in text and "dmarc=pass" in text, text


def test_quarantine_holds_at_postfix(stack, rsa_key):
    """DMARC p=quarantine for an unauthenticated From: the chain's QUARANTINE is
    smfi_quarantine: Postfix puts the message on hold (milter-hold) and the sink gets nothing."""
    key, pub = rsa_key
    z = [l.replace("p=reject", "p=quarantine").replace("ip4:127.0.0.0/8", "ip4:192.0.2.1")
         for l in zones(pub)]
    m, pf, s, _ = stack(z, extra="[filter spf]\nfail = tag\n")
    send(pf, make_message())
    t = m.wait_txns(1)[-1]
    assert t["result"] == "quarantined" and t["filter"] == "dmarc", t
    assert peers.wait_until(lambda: "milter-hold" in pf.log_text(), 10), pf.log_text()
    time.sleep(1)
    assert s.messages() == []


def test_sigterm_during_a_wait(stack, rsa_key):
    """SIGTERM while a stage waits on DNS: libmilter stops taking connections, the stage ends
    at its filter's timeout within drain_timeout, and portier-milter exits 0 (no sanitizer
    report: the stack fixture checks both)."""
    key, pub = rsa_key
    m, pf, s, _ = stack(zones(pub), stall=["stall.test."], server={"resolver_timeout": "10"},
                        extra="[filter spf]\ntimeout = 3\n")
    c = pf.client()
    c.start()
    c.sendline("MAIL FROM:<someone@stall.test>")
    time.sleep(1)
    m.signal(signal.SIGTERM)
    assert m.wait(15) == 0, m.log_text()
    assert "event=shutdown state=done" in m.log_text()
    r = c.read_reply(timeout=30)
    assert r.code in (451, 421), r
    c.close()


def test_unix_socket(stack, rsa_key):
    """listen = unix:PATH: made as root before the privilege drop, the socket gets socket_mode
    and [server] user as its owner, and Postfix (another user) delivers through it.  A socket
    left behind stops a start without -f, whose error names -f; with -f it is taken over."""
    key, pub = rsa_key
    m, pf, s, _ = stack(zones(pub), milter={"listen": "unix:{tmp}/milter.sock",
                                            "socket_mode": "0666"})
    path = m.spec[len("unix:"):]
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666, oct(st.st_mode)
    assert st.st_uid == peers.NOBODY.pw_uid, st
    send(pf, signed(key))
    assert len(s.wait_messages(1)) == 1
    m.stop()
    if not os.path.exists(path):            # libmilter may remove it: leave one behind
        left = socket.socket(socket.AF_UNIX)
        left.bind(path)
        left.close()
    tmp = peers.make_tempdir("pmilter-again")
    try:
        conf = open(m.conf).read()
        again = PortierMilter.__new__(PortierMilter)
        with pytest.raises(peers.PeerError) as e:
            PortierMilter.__init__(again, tmp, conf)
        assert "-f removes it" in str(e.value), e.value
        forced = PortierMilter(tmp, conf, args=["-f"])
        try:
            send(pf, signed(key))
            assert len(s.wait_messages(2)) == 2
        finally:
            assert forced.stop() == 0, forced.log_text()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_conf(tmp_path, text):
    p = tmp_path / "portier.conf"
    p.write_text(text)
    return str(p)


BAD_VALUES = [
    ("listen", "inet:[::1]:8891", '"inet:[::1]:8891": write inet:IPV4:PORT or inet6:[IPV6]:PORT'),
    ("listen", "inet6:127.0.0.1:8891", "write inet:IPV4:PORT or inet6:[IPV6]:PORT"),
    ("listen", "unix:relative.sock", "unix: needs an absolute path"),
    ("listen", "local:/x.sock", "write inet:HOST:PORT, inet6:[ADDR]:PORT or unix:/PATH"),
    ("listen", "inet:127.0.0.1:0", "the port must be a number from 1 to 65535"),
    ("role", "submissions", '"submissions" is not one of mx | submission'),
    ("socket_mode", "0999", '"0999" is not a mode'),
    ("socket_mode", "01000", '"01000" is not a mode'),
    ("filters", "spf -port25", "a role's safety filter cannot be removed"),
    ("filters", "auth-enforce", "is the safety filter of role submission"),
]


def test_check_refuses_bad_keys(tmp_path, unbound):
    """portier-milter -t: 0 on a good file; 2 naming FILE:LINE and the key for a typo, a bad
    socket and a filter it does not know; portier -t refuses the typo too."""
    dns = unbound(zones=[])
    good = write_conf(tmp_path, milter_config(dns).replace("{mport}", "8891"))
    r = subprocess.run([milter_binary(), "-t", "-c", good], capture_output=True, text=True)
    assert r.returncode == 0 and "configuration ok" in r.stdout, r
    bad = write_conf(tmp_path, milter_config(dns, milter={"listen": "inet:127.0.0.1",
                                                          "fitlers": "spf"}))
    lines = open(bad).read().split("\n")
    lis = [i + 1 for i, l in enumerate(lines) if l.startswith("listen")][0]
    fil = [i + 1 for i, l in enumerate(lines) if l.startswith("fitlers")][0]
    r = subprocess.run([milter_binary(), "-t", "-c", bad], capture_output=True, text=True)
    assert r.returncode == 2, r
    assert "%s:%d: [milter-server] listen:" % (bad, lis) in r.stderr, r.stderr
    assert "%s:%d: [milter-server] fitlers: unknown key; did you mean filters?" % (bad, fil) \
        in r.stderr, r.stderr
    rc, out = peers.run_portier_check(bad)
    assert rc == 2 and "%s:%d: [milter-server] fitlers" % (bad, fil) in out, out
    for key, value, why in BAD_VALUES:
        bad = write_conf(tmp_path, milter_config(dns, milter={key: value}))
        line = [i + 1 for i, l in enumerate(open(bad).read().split("\n"))
                if l.startswith(key + " =")][0]
        r = subprocess.run([milter_binary(), "-t", "-c", bad], capture_output=True, text=True)
        prefix = "%s:%d: [milter-server] %s: " % (bad, line, key)
        assert r.returncode == 2, r
        assert any(l.startswith(prefix) and why in l for l in r.stderr.split("\n")), r.stderr
    missing = write_conf(tmp_path, milter_config(dns, milter={"listen": None}))
    r = subprocess.run([milter_binary(), "-t", "-c", missing], capture_output=True, text=True)
    assert r.returncode == 2 and "[milter-server] listen: missing" in r.stderr, r.stderr
    unknown = write_conf(tmp_path, milter_config(dns, filters="spf nosuch").replace(
        "{mport}", "8891"))
    fl = [i + 1 for i, l in enumerate(open(unknown).read().split("\n"))
          if l.startswith("filters")][0]
    r = subprocess.run([milter_binary(), "-t", "-c", unknown], capture_output=True, text=True)
    assert r.returncode == 2 and "%s:%d: [milter-server] filters: unknown filter \"nosuch\"" % (
        unknown, fl) in r.stderr, r.stderr


def test_round_trip_through_portier_milter_client(request, portier, sink, unbound, client,
                                                  rsa_key):
    """portier's own milter client in front of portier-milter (milter:pm, no filter of its
    own): the signed, SPF-authorised message reaches the sink with portier-milter's one
    Authentication-Results (spf, dkim and dmarc pass) inserted at the top by the client; an
    SPF fail under p=reject is refused at MAIL with portier-milter's 550 5.7.23 passed on
    through the milter protocol's reply code."""
    key, pub = rsa_key
    dns = unbound(zones=zones(pub) + ['local-zone: "fail.test." static',
                                      "local-data: 'fail.test. 300 IN TXT \"v=spf1 -all\"'"])
    s = sink()
    tmp = peers.make_tempdir("pmilter")
    m = PortierMilter(tmp, milter_config(dns))

    def fin():
        rc = m.stop()
        log = m.log_text()
        shutil.rmtree(tmp, ignore_errors=True)
        assert rc == 0, log[-5000:]
        assert not any(mark in log for mark in peers.SANITIZER_MARKS), log[-20000:]

    request.addfinalizer(fin)
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port,
                                     listener={"filters": "milter:pm"},
                                     extra="[milter pm]\nsocket = %s\n" % m.spec))
    c = client(p.port)
    c.start()
    r = c.transaction("sender@origin.test", [RCPT], signed(key))
    assert r.code == 250, r.text
    [got] = s.wait_messages(1)
    ars = ar_headers(got)
    assert len(ars) == 1, ars
    text = " ".join(ars[0].split())
    assert text.startswith("Authentication-Results: %s;" % peers.HOSTNAME), text
    assert "spf=pass smtp.mailfrom=sender@origin.test" in text, text
    assert "dkim=pass header.d=origin.test header.s=s1" in text and "dmarc=pass" in text, text
    # the inserted header is the first below portier's own Received:
    first = got.content.split(got.nl, 1)[0].decode()
    assert first.startswith("Authentication-Results:"), got.content[:300]
    r = c.cmd("MAIL FROM:<sender@fail.test>")
    assert r.code == 550 and r.enhanced == "5.7.23" and "fail.test" in r.text, r.text
    c.quit()

"""TLS on the backend side: relay_tls (none / opportunistic / required), relay_tls_ca,
relay_tls_name, and REQUIRETLS (RFC 8689) carried across the hop.

The backend is a second portier (B, hostname mx.example.test) speaking STARTTLS with the test
certificate (CN mx.example.test, SAN IP 127.0.0.1), relaying to an smtp-sink (or delivering to
maildir:DIR, final delivery, where REQUIRETLS must end).  The front (A, hostname
front.example.test) relays to B with the relay_tls settings under test.  B's Received header
tells whether A reached it over TLS ("(using TLSv1.3 ...)", "with ESMTPS")."""
import os
import shutil

import pytest

import peers
from peers import make_message
from tlsauth import (make_certs, tls_context, starttls, portier_tls_config,  # noqa: F401
                     check_tls_received)

CN = peers.HOSTNAME                     # mx.example.test: B's certificate and hostname
FRONT = "front.example.test"            # A's hostname (so both Received headers are told apart)
RCPT = "alice@example.test"


def _certs_fixture(tag):
    d = peers.make_tempdir(tag)
    try:
        yield make_certs(os.path.join(d, "tls"), cn=CN)
    finally:
        if os.environ.get("PORTIER_KEEP") != "1":
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def certs():
    yield from _certs_fixture("certs")


@pytest.fixture(scope="module")
def other_certs():
    """A second, unrelated CA (and certificate): B's certificate does not chain to it."""
    yield from _certs_fixture("certs-other")


class Chain:
    def __init__(self, front, back, sink=None, maildir=None):
        self.front = front
        self.back = back
        self.sink = sink
        self.maildir = maildir

    def maildir_files(self, user="alice"):
        return peers.maildir_files(os.path.join(self.maildir, "example.test", user))


@pytest.fixture
def chain(request, portier, sink, certs, tmpdir_0755):
    """chain(front_backend={...}, back_tls="starttls"|"none", back_maildir=False) -> Chain.

    B: mx listener with tls = back_tls, [tls] from certs, relaying to a fresh smtp-sink (or to
    maildir:DIR when back_maildir).  A: mx listener tls = starttls with the same certs,
    hostname front.example.test, relay = smtp:127.0.0.1:<B>, [backend] keys from
    front_backend.

    At the end A is stopped first (its exit status on SIGTERM checked here): its idle pooled
    connection to B would otherwise keep B draining for drain_timeout."""
    fronts = []

    def stop_fronts():
        problems = []
        for a in fronts:
            crashed = a.returncode()
            was_stopped = a.stopped_by_us
            rc = a.stop()
            if crashed is not None and not was_stopped:
                problems.append("front portier pid %d exited on its own with status %r"
                                % (a.pid, crashed))
            elif crashed is None and rc != 0:
                problems.append("front portier pid %d exited with status %r on SIGTERM"
                                % (a.pid, rc))
        if problems:
            pytest.fail("\n".join(problems))

    request.addfinalizer(stop_fronts)

    def make(front_backend=None, back_tls="starttls", back_maildir=False):
        s = None
        md = None
        if back_maildir:
            md = os.path.join(tmpdir_0755, "maildirs")
            os.mkdir(md)
            os.chown(md, peers.NOBODY.pw_uid, peers.NOBODY.pw_gid)
            relay = "maildir:%s" % md
        else:
            s = sink()
            relay = "smtp:127.0.0.1:%d" % s.port
        b = portier(portier_tls_config(relay, certs=certs, listener={"tls": back_tls}))
        a = portier(portier_tls_config("smtp:127.0.0.1:%d" % b.port, certs=certs,
                                       listener={"tls": "starttls"},
                                       server={"hostname": FRONT},
                                       backend=front_backend))
        fronts.append(a)
        return Chain(a, b, sink=s, maildir=md)
    return make


def required(ca, name=CN):
    return {"relay_tls": "required", "relay_tls_ca": ca, "relay_tls_name": name}


def front_client(client, ch, tls=False, certs=None):
    """A client on A after EHLO (and STARTTLS + EHLO again when tls); returns (client, EHLO
    keywords)."""
    c = client(ch.front.port, hostname=FRONT)
    kw = peers.ehlo_keywords(c.start())
    if tls:
        starttls(c, tls_context(certs), server_hostname=CN)
        kw = peers.ehlo_keywords(c.ehlo())
    return c, kw


def back_received(msg):
    """B's Received header (by mx.example.test) among the stored message's trace headers."""
    rec = [h for h in msg.portier_received() if "by %s (portier)" % CN in h]
    assert len(rec) == 1, msg.headers
    return rec[0]


def front_received(msg):
    rec = [h for h in msg.portier_received() if "by %s (portier)" % FRONT in h]
    assert len(rec) == 1, msg.headers
    return rec[0]


def assert_no_maildir(ch):
    """Once A logged its transaction's summary line (B answered it), B's Maildir is empty."""
    ch.front.wait_txns(1)
    files = ch.maildir_files()
    assert files == [], "delivered although it must not have been: %r" % files


# ---------------------------------------------------------------------------------------------
# relay_tls
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [CN, "127.0.0.1"], ids=["name", "ip"])
def test_relay_tls_required_verified(chain, client, certs, name):
    """relay_tls = required with the right CA (expected name mx.example.test, or the IP in the
    SAN): delivered; A logs event=relay_tls ... verified=yes; B's Received header shows the
    hop from A came over TLS 1.3 ('with ESMTPS', HELO front.example.test)."""
    ch = chain(front_backend=required(certs.ca, name))
    c, _ = front_client(client, ch)
    msg = make_message()
    c.transaction("sender@origin.test", [RCPT], msg, expect="250 2.0.0")
    c.quit()
    msgs = ch.sink.wait_messages(1)
    assert len(msgs) == 1, msgs
    m = msgs[0]
    assert m.mail_from == "sender@origin.test" and m.rcpts == [RCPT], m
    check_tls_received(back_received(m), proto="ESMTPS", helo=FRONT)
    # the client -> A hop was plain text
    assert "(using" not in front_received(m), m.headers
    peers.assert_same_message(msg, m.content)
    line = ch.front.wait_log(r"event=relay_tls .*$")
    assert line, "no event=relay_tls in A's log:\n" + ch.front.log_text()
    assert "verified=yes" in line.group(0), line.group(0)


def test_relay_tls_required_wrong_ca(chain, client, certs, other_certs):
    """relay_tls = required, relay_tls_ca = an unrelated CA: the handshake fails; the client
    gets 451 4.7.5 (at RCPT, when MAIL goes to the backend) and nothing is delivered."""
    ch = chain(front_backend=required(other_certs.ca))
    c, _ = front_client(client, ch)
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<%s>" % RCPT)
    peers.expect_reply(r, "451 4.7.5", "RCPT with a backend whose certificate does not verify")
    c.cmd("RSET", expect="250")
    c.quit()
    ch.sink.assert_nothing(portier=ch.front)
    assert ch.front.wait_log(r"event=relay_tls_error "), ch.front.log_text()
    assert not ch.front.wait_log(r"event=relay_tls .*verified=", timeout=0.1), \
        ch.front.log_text()


def test_relay_tls_required_name_mismatch(chain, client, certs):
    """relay_tls = required, right CA but relay_tls_name not in the certificate: 451 4.7.5,
    nothing delivered."""
    ch = chain(front_backend=required(certs.ca, "other.example.test"))
    c, _ = front_client(client, ch)
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<%s>" % RCPT)
    peers.expect_reply(r, "451 4.7.5", "RCPT with a backend certificate for another name")
    c.quit()
    ch.sink.assert_nothing(portier=ch.front)


def test_relay_tls_required_backend_without_tls(chain, client, certs):
    """relay_tls = required, B does not offer STARTTLS (tls = none): 451 4.7.5 'does not offer
    STARTTLS', nothing delivered, A logs event=relay_tls_missing."""
    ch = chain(front_backend=required(certs.ca), back_tls="none")
    c, _ = front_client(client, ch)
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<%s>" % RCPT)
    peers.expect_reply(r, "451 4.7.5", "RCPT with a backend without STARTTLS")
    assert "does not offer STARTTLS" in r.text, r.text
    c.quit()
    ch.sink.assert_nothing(portier=ch.front)
    assert ch.front.wait_log(r"event=relay_tls_missing "), ch.front.log_text()


def test_relay_tls_opportunistic_backend_without_tls(chain, client, certs):
    """relay_tls = opportunistic, B without STARTTLS: delivered in clear (B's Received has no
    TLS clause, 'with ESMTP'); no event=relay_tls."""
    ch = chain(front_backend={"relay_tls": "opportunistic", "relay_tls_ca": certs.ca},
               back_tls="none")
    c, _ = front_client(client, ch)
    msg = make_message()
    c.transaction("sender@origin.test", [RCPT], msg, expect="250 2.0.0")
    c.quit()
    msgs = ch.sink.wait_messages(1)
    assert len(msgs) == 1, msgs
    h = back_received(msgs[0])
    assert "(using" not in h, h
    peers.check_portier_received(h, helo=FRONT, proto="ESMTP")
    peers.assert_same_message(msg, msgs[0].content)
    assert not ch.front.wait_log(r"event=relay_tls ", timeout=0.1), ch.front.log_text()


def test_relay_tls_opportunistic_backend_with_tls(chain, client, certs):
    """relay_tls = opportunistic, B offers STARTTLS: A uses it (B's Received 'with ESMTPS')."""
    ch = chain(front_backend={"relay_tls": "opportunistic", "relay_tls_ca": certs.ca,
                              "relay_tls_name": CN})
    c, _ = front_client(client, ch)
    c.transaction("sender@origin.test", [RCPT], make_message(), expect="250 2.0.0")
    c.quit()
    msgs = ch.sink.wait_messages(1)
    assert len(msgs) == 1, msgs
    check_tls_received(back_received(msgs[0]), proto="ESMTPS", helo=FRONT)
    assert ch.front.wait_log(r"event=relay_tls "), ch.front.log_text()


@pytest.mark.parametrize("mode", ["required", "opportunistic"])
def test_relay_tls_backend_refuses_starttls(portier, minismtpd, client, certs, mode):
    """The backend offers STARTTLS and then refuses it (minismtpd: 454 4.7.0).  relay_tls =
    required: the client gets 451 4.7.5 'refused STARTTLS' at RCPT and nothing goes to the
    backend in clear (no MAIL reaches it).  opportunistic: the message goes in clear and the
    client gets 250."""
    b = minismtpd(ext=["STARTTLS"], starttls_reply="454 4.7.0 TLS not available due to "
                  "temporary reason")
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % b.port, backend={
        "relay_tls": mode, "relay_tls_ca": certs.ca, "relay_tls_name": CN}))
    c = client(p.port)
    c.start()
    msg = make_message()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    if mode == "required":
        r = c.cmd("RCPT TO:<%s>" % RCPT)
        peers.expect_reply(r, "451 4.7.5", "RCPT with a backend refusing STARTTLS")
        assert "refused STARTTLS" in r.text, r.text
        c.cmd("DATA", expect="503 5.5.1")
        c.quit()
        [t] = p.wait_txns(1)
        assert t["result"] == "aborted", t
        assert b.transactions() == []
        assert "C: MAIL" not in b.log_text(), b.log_text()
    else:
        c.cmd("RCPT TO:<%s>" % RCPT, expect="250 2.1.5")
        c.send_message(msg, expect="250 2.0.0")
        c.quit()
        [t] = b.wait_transactions(1)
        assert t["rcpts"] == [RCPT], t
        hdrs, rest = peers.strip_trace(t["data"], b"\r\n", ("received",))
        peers.assert_same_message(msg, rest, nl=b"\r\n")
    log = b.log_text()
    assert "C: STARTTLS" in log and "S: 454 4.7.0" in log, log
    assert not p.wait_log(r"event=relay_tls ", timeout=0.1), p.log_text()


def test_relay_tls_slow_upload_longer_than_relay_timeout(chain, client, certs):
    """relay_tls = required and relay_timeout = 2: a client taking about 5 s to upload gets 250
    and B has the message.  Under TLS the plain connection below the TLS layer has deadlines of
    its own: neither may time the backend out while portier waits for the client."""
    ch = chain(front_backend=dict(required(certs.ca), relay_timeout=2))
    c, _ = front_client(client, ch)
    msg = make_message(body_lines=["slow line %d" % i for i in range(20)])
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<%s>" % RCPT, expect="250 2.1.5")
    r = c.send_message_paced(msg, 5.0)
    assert r.is_(250, "2.0.0"), r
    [m] = ch.sink.wait_messages(1)
    check_tls_received(back_received(m), proto="ESMTPS", helo=FRONT)
    peers.assert_same_message(msg, m.content)
    c.quit()


# ---------------------------------------------------------------------------------------------
# REQUIRETLS (RFC 8689)
# ---------------------------------------------------------------------------------------------

def test_requiretls_over_verified_tls(chain, client, certs):
    """Client -> A under STARTTLS, EHLO shows REQUIRETLS, MAIL ... REQUIRETLS; A relays with
    relay_tls = required + the right CA to B, which offers REQUIRETLS under TLS and delivers to
    its Maildir (final delivery): 250 after DATA, the message is in the Maildir with B's
    Received 'with ESMTPS' and A's 'with ESMTPS' too."""
    ch = chain(front_backend=required(certs.ca), back_maildir=True)
    c, kw = front_client(client, ch, tls=True, certs=certs)
    assert "REQUIRETLS" in kw, kw
    msg = make_message()
    c.transaction("sender@origin.test", [RCPT], msg, expect="250 2.0.0", params=" REQUIRETLS")
    c.quit()
    assert peers.wait_until(ch.maildir_files, 5), "nothing delivered to %s" % ch.maildir
    files = ch.maildir_files()
    assert len(files) == 1, files
    with open(files[0], "rb") as f:
        raw = f.read()
    hdrs, rest = peers.strip_trace(raw, b"\r\n", ("return-path", "received"))
    back = [h for h in hdrs if "by %s (portier)" % CN in h]
    front = [h for h in hdrs if "by %s (portier)" % FRONT in h]
    assert len(back) == 1 and len(front) == 1, hdrs
    check_tls_received(back[0], proto="ESMTPS", helo=FRONT)
    assert "(using TLSv1.3 " in front[0] and " with ESMTPS " in front[0], front[0]
    peers.assert_same_message(msg, rest, nl=b"\r\n")
    line = ch.front.wait_log(r"event=relay_tls .*$")
    assert line and "verified=yes" in line.group(0), ch.front.log_text()


def test_requiretls_refused_without_relay_tls(chain, client, certs):
    """MAIL ... REQUIRETLS under TLS, A with relay_tls = none: MAIL gets 250 (it goes to the
    backend with the first RCPT), that RCPT gets 550 5.7.30, nothing is delivered."""
    ch = chain(front_backend={"relay_tls": "none"}, back_maildir=True)
    c, kw = front_client(client, ch, tls=True, certs=certs)
    assert "REQUIRETLS" in kw, kw
    c.cmd("MAIL FROM:<a@origin.test> REQUIRETLS", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<%s>" % RCPT)
    peers.expect_reply(r, "550 5.7.30", "RCPT of a REQUIRETLS message over a plain backend link")
    c.cmd("DATA", expect="503 5.5.1")
    c.quit()
    assert_no_maildir(ch)


def test_requiretls_refused_unverified_tls(chain, client, certs):
    """REQUIRETLS needs *verified* TLS: relay_tls = opportunistic with relay_tls_verify = no
    (TLS is used but not verified) -> 550 5.7.30 at RCPT, nothing delivered."""
    ch = chain(front_backend={"relay_tls": "opportunistic", "relay_tls_verify": "no"},
               back_maildir=True)
    c, kw = front_client(client, ch, tls=True, certs=certs)
    c.cmd("MAIL FROM:<a@origin.test> REQUIRETLS", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<%s>" % RCPT)
    peers.expect_reply(r, "550 5.7.30", "RCPT of a REQUIRETLS message over unverified TLS")
    c.quit()
    assert_no_maildir(ch)


def test_requiretls_before_starttls(chain, client, certs):
    """REQUIRETLS is not offered before STARTTLS: not in the EHLO reply, and MAIL with it gets
    555 5.5.4; the same MAIL without it is accepted afterwards."""
    ch = chain(front_backend=required(certs.ca), back_maildir=True)
    c, kw = front_client(client, ch)
    assert "REQUIRETLS" not in kw and "STARTTLS" in kw, kw
    c.cmd("MAIL FROM:<a@origin.test> REQUIRETLS", expect="555 5.5.4")
    c.cmd("MAIL FROM:<a@origin.test>", expect="250 2.1.0")
    c.quit()

"""Relaying to LMTP backends: Dovecot (TCP and unix socket) and minismtpd.py for per-recipient
results after DATA (mixed results -> DSN or tempfail)."""
import os
import re
import signal
import time

import pytest

import peers
from peers import make_message


def dovecot_relay(d, kind):
    return "lmtp:127.0.0.1:%d" % d.port if kind == "tcp" else "lmtp:unix:%s" % d.socket


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_dovecot_delivery_byte_identical(portier, dovecot, client, kind):
    """Delivery through Dovecot LMTP (TCP and unix socket) to two mailboxes: each Maildir holds
    the message exactly as sent (header-block and body digests) below Dovecot's Return-Path,
    Delivered-To and Received and exactly one Received from portier."""
    d = dovecot()
    p = portier(peers.portier_config(dovecot_relay(d, kind)))
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=peers.tricky_body(),
                       headers=[("MIME-Version", "1.0"),
                                ("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Transfer-Encoding", "8bit")])
    c.cmd("MAIL FROM:<sender@origin.test> BODY=8BITMIME", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="250 2.1.5")
    c.send_message(msg, expect="250")
    c.quit()
    for user in ("alice", "bob"):
        msgs = d.wait_messages(user, 1)
        assert len(msgs) == 1, "%s has %d messages" % (user, len(msgs))
        m = msgs[0]
        assert m.mail_from == "sender@origin.test", m.headers
        pr = m.portier_received()
        assert len(pr) == 1, m.headers
        peers.check_portier_received(pr[0], helo="client.test", proto="ESMTP")
        peers.assert_same_message(msg, m.content, nl=b"\n")


def test_dovecot_unknown_user_refused_at_rcpt(portier, dovecot, client):
    """RCPT for a user Dovecot does not know gets Dovecot's 550 5.1.1 at RCPT time; the message
    still goes to the known recipient only."""
    d = dovecot()
    p = portier(peers.portier_config(dovecot_relay(d, "tcp")))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<nobody@example.test>", expect="550 5.1.1")
    assert "nobody@example.test" in r.text, r
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    msg = make_message()
    c.send_message(msg, expect="250")
    c.quit()
    assert len(d.wait_messages("alice", 1)) == 1
    assert [t["to"] for t in p.wait_txns(1)] == ["<alice@example.test>"]
    assert d.messages("bob") == []


def test_dovecot_several_messages_one_session(portier, dovecot, client):
    """Three messages in one client session reach Dovecot (backend connection reuse/RSET)."""
    d = dovecot()
    p = portier(peers.portier_config(dovecot_relay(d, "unix")))
    c = client(p.port)
    c.start()
    sent = [make_message() for _ in range(3)]
    for m in sent:
        c.transaction("sender@origin.test", ["bob@example.test"], m)
    c.quit()
    msgs = d.wait_messages("bob", 3)
    assert len(msgs) == 3
    assert sorted(m.content for m in msgs) == sorted(x.replace(b"\r\n", b"\n") for x in sent)


REFUSED = "550 5.2.1 <gone@example.test> mailbox disabled"
DEFERRED = "452 4.2.2 <later@example.test> mailbox full, try again later"


def mixed_setup(portier, minismtpd, sink, mode, data_reply=None):
    """An LMTP backend (minismtpd) refusing gone@ (550) and deferring later@ (452) after the
    data, an smtp-sink as bounce_relay, and portier with lmtp_mixed = mode (None: unset)."""
    lmtp = minismtpd(lmtp=True, data_reply=data_reply or {r"^gone@": REFUSED,
                                                           r"^later@": DEFERRED})
    bounce = sink()
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port, backend={
        "bounce_relay": "smtp:127.0.0.1:%d" % bounce.port, "lmtp_mixed": mode}))
    return lmtp, bounce, p


def send_mixed(c, rcpts, sender="sender@origin.test"):
    """One transaction to rcpts (each accepted at RCPT); returns the reply after the data."""
    c.cmd("MAIL FROM:<%s>" % sender, expect="250 2.1.0")
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, expect="250 2.1.5")
    return c.send_message(make_message())


def test_lmtp_mixed_results_dsn(portier, minismtpd, sink, client):
    """lmtp_mixed = dsn: one recipient accepted, one refused after DATA -> the client gets 250,
    and an RFC 3464 DSN (multipart/report; report-type=delivery-status, Final-Recipient of the
    refused recipient only, Action: failed, Status 5.2.1) from the null sender to the original
    sender arrives at bounce_relay, exactly once."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "dsn")
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["alice@example.test", "gone@example.test"])
    assert r.is_(250, "2.0.0"), r
    c.quit()
    ts = lmtp.wait_transactions(1)
    assert len(ts) == 1 and ts[0]["rcpts"] == ["alice@example.test", "gone@example.test"]
    [txn] = p.wait_txns(1)                  # logged once the DSN was taken
    assert txn["result"] == "delivered", txn
    dsns = bounce.messages()
    assert len(dsns) == 1, "expected one DSN at bounce_relay, got %d" % len(dsns)
    dsn = dsns[0]
    assert dsn.mail_from == "", "a DSN must come from the null sender: %r" % dsn.mail_args
    assert dsn.rcpts == ["sender@origin.test"]
    text = dsn.content.decode("utf-8", "replace")
    assert re.search(r"(?im)^Content-Type:\s*multipart/report;(.|\n[ \t])*report-type=\"?delivery-status",
                     text), text
    assert re.search(r"(?im)^Content-Type:\s*message/delivery-status", text), text
    finals = re.findall(r"(?im)^Final-Recipient:\s*rfc822;\s*<?([^>\s]+)>?", text)
    assert finals == ["gone@example.test"], text
    assert re.findall(r"(?im)^Action:\s*(\S+)", text) == ["failed"], text
    assert re.findall(r"(?im)^Status:\s*(\S+)", text) == ["5.2.1"], text


def test_lmtp_mixed_results_null_sender_gets_no_dsn(portier, minismtpd, sink, client):
    """lmtp_mixed = dsn with the null sender: the client gets 250 and no DSN is sent."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "dsn")
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["alice@example.test", "gone@example.test"], sender="")
    assert r.is_(250, "2.0.0"), r
    c.quit()
    assert len(lmtp.wait_transactions(1)) == 1
    bounce.assert_nothing(portier=p)
    assert p.wait_log(r"event=dsn_suppressed reason=null_sender")


def test_lmtp_mixed_results_tempfail(portier, minismtpd, sink, client):
    """lmtp_mixed = tempfail: 250 for one recipient and 550 for another give the client
    451 4.3.0 for the whole message (logged: its retry duplicates the delivered one), and no
    DSN is sent."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "tempfail")
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["alice@example.test", "gone@example.test"])
    assert r.is_(451, "4.3.0"), r
    c.cmd("NOOP", expect="250 2.0.0")
    bounce.assert_nothing(portier=p)
    assert p.txns()[0]["result"] == "tempfail"
    assert p.wait_log(r"event=lmtp_mixed_tempfail reason=lmtp_mixed delivered=1 deferred=0 "
                      r"refused=1 duplicate_on_retry=1")


@pytest.mark.parametrize("mode", ["tempfail", "dsn"])
@pytest.mark.parametrize("sender", ["sender@origin.test", ""], ids=["sender", "null"])
def test_lmtp_mixed_deferral_is_tempfail(portier, minismtpd, sink, client, mode, sender):
    """250 for one recipient and 452 4.2.2 (a deferral) for another after the data: with
    either lmtp_mixed, and for the null sender too, the client gets 451 4.3.0 for the whole
    message (there is no queue here to retry the deferred recipient, and a DSN would report
    it as failed: a loss); no DSN is sent; the log says that the retry brings the delivered
    recipient a duplicate."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, mode)
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["alice@example.test", "later@example.test"], sender=sender)
    assert r.is_(451, "4.3.0"), r
    c.cmd("NOOP", expect="250 2.0.0")
    [t] = lmtp.wait_transactions(1)
    assert t["results"] == {"alice@example.test": "250 2.0.0 <alice@example.test> Saved",
                            "later@example.test": DEFERRED}, t
    bounce.assert_nothing(portier=p)
    assert p.txns()[0]["result"] == "tempfail", p.txns()
    assert p.wait_log(r"event=lmtp_mixed_tempfail reason=deferred_recipients delivered=1 "
                      r"deferred=1 refused=0 duplicate_on_retry=1")


def test_lmtp_mixed_deferral_and_refusal_is_tempfail(portier, minismtpd, sink, client):
    """lmtp_mixed = dsn, after the data 250 for one recipient, 550 for one and 452 for one:
    the deferral wins, the client gets 451 4.3.0 and no DSN is sent (its retry is refused
    again for the 550 recipient, at the data or earlier)."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "dsn")
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["alice@example.test", "gone@example.test", "later@example.test"])
    assert r.is_(451, "4.3.0"), r
    bounce.assert_nothing(portier=p)
    assert p.wait_log(r"event=lmtp_mixed_tempfail reason=deferred_recipients delivered=1 "
                      r"deferred=1 refused=1 duplicate_on_retry=1")


def test_lmtp_all_deferred_after_data(portier, minismtpd, sink, client):
    """Every recipient deferred after the data (nothing delivered, nothing mixed): the client
    gets the backend's own 452 4.2.2, no DSN."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "dsn")
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["later@example.test"])
    assert r.is_(452, "4.2.2"), r
    bounce.assert_nothing(portier=p)
    assert p.txns()[0]["result"] == "tempfail"


def test_lmtp_mixed_unset_without_bounce_relay_is_tempfail(portier, minismtpd, client):
    """An LMTP relay with neither lmtp_mixed nor bounce_relay set: mixed 250/550 results give
    451 4.3.0 (the default is tempfail when there is no smtp: bounce_relay to send DSNs)."""
    lmtp = minismtpd(lmtp=True, data_reply={r"^gone@": REFUSED})
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port))
    c = client(p.port)
    c.start()
    r = send_mixed(c, ["alice@example.test", "gone@example.test"])
    assert r.is_(451, "4.3.0"), r
    assert p.wait_log(r"event=lmtp_mixed_tempfail reason=lmtp_mixed delivered=1 deferred=0 "
                      r"refused=1 duplicate_on_retry=1")


DSN_CHECK_CASES = {
    # backend keys -> (exit status, regex the whole output must match)
    "dsn-no-bounce": ({"relay": "lmtp:127.0.0.1:24", "lmtp_mixed": "dsn"},
                      2, r":\d+: \[backend\] lmtp_mixed: dsn needs bounce_relay = smtp:HOST:PORT"
                         r".*or lmtp_mixed = tempfail"),
    "dsn-lmtp-bounce": ({"relay": "lmtp:127.0.0.1:24", "lmtp_mixed": "dsn",
                         "bounce_relay": "lmtp:127.0.0.1:25"},
                        2, r":\d+: \[backend\] bounce_relay: .*set bounce_relay = smtp:HOST:PORT"),
    "unset-lmtp-bounce": ({"relay": "lmtp:unix:/run/lmtp", "bounce_relay": "lmtp:unix:/run/b"},
                          2, r":\d+: \[backend\] bounce_relay: "),
    "dsn-smtp-bounce": ({"relay": "lmtp:127.0.0.1:24", "lmtp_mixed": "dsn",
                         "bounce_relay": "smtp:127.0.0.1:25"}, 0, r"configuration ok$"),
    "unset-no-bounce": ({"relay": "lmtp:127.0.0.1:24"}, 0, r"configuration ok$"),
    "tempfail-no-bounce": ({"relay": "lmtp:127.0.0.1:24", "lmtp_mixed": "tempfail"},
                           0, r"configuration ok$"),
    "maildir-dsn": ({"relay": "maildir:/tmp/m", "lmtp_mixed": "dsn"}, 0, r"configuration ok$"),
    "smtp-dsn": ({"relay": "smtp:127.0.0.1:25", "lmtp_mixed": "dsn"}, 0, r"configuration ok$"),
}


@pytest.mark.parametrize("case", list(DSN_CHECK_CASES))
def test_check_refuses_dsn_it_cannot_send(portier_bin, tmpdir_0755, case):
    """-t refuses lmtp_mixed = dsn with an LMTP relay unless bounce_relay is an smtp: relay
    (the LMTP backend would refuse a DSN to a remote sender: 451, and every retry another
    copy), and an lmtp: bounce_relay; the error says what to set.  Maildir and SMTP relays
    never send DSNs."""
    backend, want_rc, rx = DSN_CHECK_CASES[case]
    backend = dict(backend)
    path = os.path.join(tmpdir_0755, "t.conf")
    with open(path, "w") as f:
        f.write(peers.portier_config(backend.pop("relay"), backend=backend)
                .replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert rc == want_rc, out
    assert re.search(rx, out.strip(), re.S), out
    assert len(out.strip().splitlines()) == 1, out


def test_lmtp_single_recipient_refused_after_data(portier, minismtpd, sink, client):
    """With one recipient refused after DATA (nothing mixed) the client gets the backend's own
    reply (552 5.2.2) and no DSN is sent."""
    lmtp = minismtpd(lmtp=True, data_reply={r"^full@": "552 5.2.2 <full@example.test> over quota"})
    bounce = sink()
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port, backend={
        "bounce_relay": "smtp:127.0.0.1:%d" % bounce.port, "lmtp_mixed": "dsn"}))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<full@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="552 5.2.2")
    bounce.assert_nothing(portier=p)


def test_lmtp_all_recipients_accepted(portier, minismtpd, client):
    """LMTP with three recipients all accepted: 250, one LMTP transaction with all three and
    the data as sent (CRLF, exact bytes) below portier's Received."""
    lmtp = minismtpd(lmtp=True)
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port))
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=peers.tricky_body())
    c.transaction("sender@origin.test", ["a@example.test", "b@example.test", "c@example.test"], msg)
    ts = lmtp.wait_transactions(1)
    assert len(ts) == 1
    assert ts[0]["rcpts"] == ["a@example.test", "b@example.test", "c@example.test"]
    hdrs, rest = peers.strip_trace(ts[0]["data"], b"\r\n", ("received",))
    assert len([h for h in hdrs if peers.is_portier_received(h)]) == 1 == len(hdrs), hdrs
    peers.assert_same_message(msg, rest, nl=b"\r\n")


def test_smtp_sink_lmtp_backend(portier, sink, client):
    """smtp-sink -L as an LMTP backend: two recipients, one '250 2.2.0' each after the dot,
    the client gets 250 and the sink holds the message as sent."""
    s = sink(lmtp=True)
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % s.port))
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=peers.tricky_body())
    c.transaction("sender@origin.test", ["alice@example.test", "bob@example.test"], msg)
    c.quit()
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    assert msgs[0].rcpts == ["alice@example.test", "bob@example.test"]
    assert len(msgs[0].portier_received()) == 1
    peers.assert_same_message(msg, msgs[0].content)


def test_lmtp_every_recipient_refused_after_data(portier, sink, client):
    """smtp-sink -L -f . refuses every recipient after the dot (550 5.7.1 each): nothing is
    mixed, so the client gets the backend's 550 5.7.1, not 250."""
    s = sink(lmtp=True, args=["-f", ".", "-B", "550 5.7.1 content refused"])
    bounce = sink()
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % s.port, backend={
        "bounce_relay": "smtp:127.0.0.1:%d" % bounce.port}))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="550 5.7.1")
    c.cmd("NOOP", expect="250 2.0.0")
    bounce.assert_nothing(portier=p)


def test_stale_pooled_connection_and_socket_gone(portier, tmpdir_0755, client):
    """A pooled LMTP connection dies while MAIL is unanswered and the backend's unix socket is
    gone: the one fresh try fails at once (connect: no such file) and the client gets
    451 4.4.1; portier neither reads the freed connection (ASan) nor stops serving."""
    sock = os.path.join(tmpdir_0755, "lmtp.sock")
    sink = peers.Process("smtp-sink", [peers.SMTP_SINK, "-u", "nobody", "-L", "unix:%s" % sock, "100"],
                         os.path.join(tmpdir_0755, "sink.log"))
    try:
        assert peers.wait_until(lambda: peers.unix_accepts(sock), 10), "smtp-sink not up"
        p = portier(peers.portier_config("lmtp:unix:%s" % sock))
        c = client(p.port)
        c.start()
        c.transaction("sender@origin.test", ["alice@example.test"], make_message())
        # The connection is pooled now.  Freeze the sink (the pooled connection stays open
        # but will not answer), take its socket away, then kill it once MAIL is on its way.
        sink.signal(signal.SIGSTOP)
        os.unlink(sock)
        c.sendline("MAIL FROM:<sender@origin.test>")
        assert c.read_reply().is_(250)      # lazy: MAIL goes out with the first RCPT
        c.sendline("RCPT TO:<bob@example.test>")
        time.sleep(0.3)                     # MAIL+RCPT written to the frozen sink
        sink.signal(signal.SIGKILL)
        r = c.read_reply()
        assert r.is_(451, "4.4.1"), r
        c.cmd("RSET", expect="250")
        c.quit()
    finally:
        sink.stop(signal.SIGKILL)

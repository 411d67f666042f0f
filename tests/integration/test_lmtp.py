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
    time.sleep(0.5)
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


def mixed_setup(portier, minismtpd, sink, mode):
    lmtp = minismtpd(lmtp=True, data_reply={r"^gone@": "550 5.2.1 <gone@example.test> mailbox disabled"})
    bounce = sink()
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port, backend={
        "bounce_relay": "smtp:127.0.0.1:%d" % bounce.port, "lmtp_mixed": mode}))
    return lmtp, bounce, p


def test_lmtp_mixed_results_dsn(portier, minismtpd, sink, client):
    """lmtp_mixed = dsn: one recipient accepted, one refused after DATA -> the client gets 250,
    and an RFC 3464 DSN (multipart/report; report-type=delivery-status, Final-Recipient of the
    refused recipient only, Action: failed, Status 5.2.1) from the null sender to the original
    sender arrives at bounce_relay."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "dsn")
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<gone@example.test>", expect="250 2.1.5")
    msg = make_message()
    c.send_message(msg, expect="250")
    c.quit()
    ts = lmtp.wait_transactions(1)
    assert len(ts) == 1 and ts[0]["rcpts"] == ["alice@example.test", "gone@example.test"]
    dsns = bounce.wait_messages(1)
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
    assert re.search(r"(?im)^Action:\s*failed", text), text
    assert re.search(r"(?im)^Status:\s*5\.2\.1", text), text
    time.sleep(1)
    assert len(bounce.messages()) == 1


def test_lmtp_mixed_results_null_sender_gets_no_dsn(portier, minismtpd, sink, client):
    """lmtp_mixed = dsn with the null sender: the client gets 250 and no DSN is sent."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "dsn")
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<gone@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="250")
    c.quit()
    assert len(lmtp.wait_transactions(1)) == 1
    bounce.assert_nothing(settle=2.0)


def test_lmtp_mixed_results_tempfail(portier, minismtpd, sink, client):
    """lmtp_mixed = tempfail: mixed per-recipient results give the client 451 for the whole
    message, and no DSN is sent."""
    lmtp, bounce, p = mixed_setup(portier, minismtpd, sink, "tempfail")
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<gone@example.test>", expect="250 2.1.5")
    r = c.send_message(make_message())
    assert r.code == 451 and r.enhanced and r.enhanced.startswith("4."), r
    c.cmd("NOOP", expect="250 2.0.0")
    bounce.assert_nothing(settle=1.5)


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
    bounce.assert_nothing(settle=1.5)


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
    bounce.assert_nothing(settle=1.0)


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

"""Edges the other files leave out (issue #8 item 7): a client over IPv6, SIGHUP with a broken
config and in the middle of DATA, a DSN owed while bounce_relay is down, one Maildir of several
failing, fifty LMTP recipients in one transaction, and the exact boundaries of max_pipelined,
max_errors and max_message_size."""
import os
import re
import socket

import pytest

import peers
from peers import make_message

SENDER = "sender@origin.test"


def sink_relay(s):
    return "smtp:127.0.0.1:%d" % s.port


def ipv6_loopback_problem():
    """None when this machine can listen on and connect to [::1], else why not."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as e:
        return "no AF_INET6 sockets: %s" % e
    try:
        srv.bind(("::1", 0))
        srv.listen(1)
        socket.create_connection(("::1", srv.getsockname()[1]), timeout=2).close()
    except OSError as e:
        return "[::1] is not usable here: %s" % e
    finally:
        srv.close()
    return None


def test_ipv6_client_delivered(portier, sink, client):
    """A listener on [::1] and a client connecting over ::1: the message is delivered intact;
    the connect and txn log lines say client=::1; portier's Received header reads
    'from client.test (localhost [IPv6:::1])' -- RFC 5321 4.1.3's IPv6 address literal, as
    Postfix writes it, after the client's verified name (::1 is libunbound's built-in
    localhost, whatever the DNS servers)."""
    why = ipv6_loopback_problem()
    if why:
        pytest.skip(why)
    s = sink()
    # 127.0.0.1 too, on the same port: the fixture's readiness probe speaks IPv4.
    p = portier(peers.portier_config(sink_relay(s),
                                     listener={"listen": "127.0.0.1:{port} [::1]:{port}"}))
    mark = len(p.log_text())
    c = client(p.port, host="::1")
    assert c.sock.family == socket.AF_INET6
    c.start()
    msg = make_message()
    c.transaction(SENDER, ["alice@example.test"], msg, expect="250 2.0.0")
    c.quit()
    assert p.wait_log(r"event=connect client=::1 listener=mx$", after=mark), p.log_text()[mark:]
    [t] = p.wait_txns(1)
    assert (t["client"], t["result"], t["to"]) == ("::1", "delivered", "<alice@example.test>"), t
    [m] = s.wait_messages(1)
    [rcvd] = m.portier_received()
    got = peers.PORTIER_RECEIVED_RE.match(rcvd)
    assert got, rcvd
    assert (got.group("helo"), got.group("name"), got.group("addr")) == \
        ("client.test", "localhost", "::1"), rcvd
    assert rcvd.startswith("Received: from client.test (localhost [IPv6:::1]) by "), rcvd
    peers.assert_same_message(msg, m.content)


# ---- SIGHUP -----------------------------------------------------------------------------------

def rcpt_limit(port, tries=6):
    """How many RCPTs a new session on port takes before 452 4.5.3 (at most tries)."""
    c = peers.SmtpClient(port)
    try:
        c.start()
        c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
        for i in range(tries):
            r = c.cmd("RCPT TO:<r%d@example.test>" % i)
            if r.code != 250:
                peers.expect_reply(r, "452 4.5.3", "RCPT past max_recipients")
                return i
            peers.expect_reply(r, "250 2.1.5")
        return tries
    finally:
        c.close()


def reload_and_wait(p, config_text, result):
    """Rewrite the config, SIGHUP, and wait for portier's event=reload line with result
    (ok: the new snapshot is live once it is logged).  Returns the matched line."""
    mark = len(p.log_text())
    p.reload(config_text)
    m = p.wait_log(r"^.*event=reload result=%s\b.*$" % result, after=mark)
    assert m, "no event=reload result=%s after SIGHUP:\n%s" % (result, p.log_text()[mark:])
    return m.group(0)


def test_sighup_broken_config_keeps_old_then_fixed_applies(make_pair, client):
    """SIGHUP with a config that does not load (it raises max_recipients to 4, and another key
    has a bad value): portier logs event=reload result=failed naming the bad key, stays up,
    and new sessions keep the old max_recipients = 2 and are delivered.  A later SIGHUP with
    the mistake fixed applies: new sessions take 4 recipients."""
    p, s = make_pair(server={"max_recipients": 2})
    assert rcpt_limit(p.port) == 2
    line = reload_and_wait(p, peers.portier_config(sink_relay(s), server={
        "max_recipients": 4, "max_errors": "many"}), "failed")
    assert re.search(r'errors=".*max_errors', line), line
    assert p.alive()
    assert rcpt_limit(p.port) == 2, "a failed reload changed the limits"
    c = client(p.port)
    c.start()
    msg = make_message()
    c.transaction(SENDER, ["alice@example.test", "bob@example.test"], msg, expect="250 2.0.0")
    c.quit()
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test", "bob@example.test"]
    peers.assert_same_message(msg, m.content)
    reload_and_wait(p, peers.portier_config(sink_relay(s), server={"max_recipients": 4}), "ok")
    assert rcpt_limit(p.port) == 4, "the fixed config was not applied"


LOG_LINE_START = re.compile(r"^\S+ portier\[\d+\]: [a-z]+: ")


def test_sighup_failure_is_one_log_line(make_pair):
    """A failed reload is one event, so one log line (STYLE.md 9): with two bad keys, the
    event=reload result=failed line is followed directly by the next event's line, and its
    errors="..." value, read back with parse_log_fields, names both keys and both values
    (the quotes around them escaped, as in every log value)."""
    p, s = make_pair()
    mark = len(p.log_text())
    reload_and_wait(p, peers.portier_config(sink_relay(s), server={
        "max_errors": "many", "max_recipients": "lots"}), "failed")
    peers.SmtpClient(p.port).close()        # a later event: the failure is logged in full
    assert p.wait_log(r"event=connect ", after=mark)
    lines = p.log_text()[mark:].splitlines()
    stray = [l for l in lines if not LOG_LINE_START.match(l)]
    assert not stray, "lines that are no log line of their own:\n%s" % "\n".join(lines)
    [line] = [l for l in lines if "event=reload" in l]
    errors = peers.parse_log_fields(line)["errors"]
    for want in ("max_errors", "many", "max_recipients", "lots"):
        assert want in errors, "errors=%r lacks %s" % (errors, want)


def test_sighup_during_data(make_pair, client):
    """SIGHUP while a client is half-way through its DATA, with a config that lowers
    max_recipients from 2 to 1 and max_message_size below that message's size: the client
    finishes, gets 250, the message arrives intact for both recipients; the same session's
    next transaction still takes 2 recipients (a session keeps the config it started with).
    A new session has the new limits: its second RCPT gets 452 4.5.3 and the same message
    552 5.3.4."""
    p, s = make_pair(server={"max_recipients": 2, "max_message_size": 100000})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("inflight")
    msg = make_message(subject=marker,
                       body_lines=["line %03d " % i + "x" * 90 for i in range(100)])   # ~10 KB
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    wire = peers.dot_stuff(msg)
    half = wire.index(b"\r\n", len(wire) // 2) + 2
    c.send(wire[:half])
    reload_and_wait(p, peers.portier_config(sink_relay(s), server={
        "max_recipients": 1, "max_message_size": 4000}), "ok")
    c.send(wire[half:] + b".\r\n")
    peers.expect_reply(c.read_reply(), "250 2.0.0", "reply after the final dot")
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test", "bob@example.test"]
    peers.assert_same_message(msg, m.content)
    c.transaction(SENDER, ["carol@example.test", "dave@example.test"], make_message(),
                  expect="250 2.0.0")
    c.quit()
    assert rcpt_limit(p.port) == 1
    n = client(p.port)
    n.start()
    n.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    n.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    n.send_message(msg, expect="552 5.3.4")
    # in-flight, its session's second, the rcpt_limit probe, the refused one: all logged
    # (the probe's and the refused one's come from two sessions: in either order)
    assert sorted(t["result"] for t in p.wait_txns(4)) == ["aborted", "delivered", "delivered",
                                                           "rejected"]
    got = [x for x in s.messages(complete=False) if marker.encode() in x.raw]
    assert len(got) == 1, "the refused copy reached the backend: %r" % got


# ---- DSN and Maildir ---------------------------------------------------------------------------

def test_dsn_owed_bounce_relay_down(portier, minismtpd, client):
    """LMTP backend accepts alice and refuses gone@ (550) after the data, lmtp_mixed = dsn, and
    bounce_relay is a port nobody listens on: portier cannot send the DSN it owes, so the
    client must not get 250; it gets 451 4.3.0 'could not return a delivery status
    notification' (its retry duplicates alice's copy), the log says event=dsn_failed, the
    transaction is a tempfail, and the session goes on."""
    lmtp = minismtpd(lmtp=True, data_reply={r"^gone@": "550 5.2.1 <gone@example.test> disabled"})
    closed = peers.free_port()
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port, backend={
        "bounce_relay": "smtp:127.0.0.1:%d" % closed, "lmtp_mixed": "dsn"}))
    c = client(p.port)
    c.start()
    r = c.transaction(SENDER, ["alice@example.test", "gone@example.test"], make_message(),
                      expect="451 4.3.0")
    assert r.texts() == ["4.3.0 Error: could not return a delivery status notification, "
                         "try again later"], r
    c.cmd("NOOP", expect="250 2.0.0")
    [t] = p.wait_txns(1)
    assert (t["result"], t["to"]) == ("tempfail", "<alice@example.test>,<gone@example.test>"), t
    assert p.wait_log(r"id=%s event=dsn_failed to=<%s> reply=\"451 4\.4\.1 Error: backend "
                      r"unavailable, try again later\" delivered=1 duplicate_on_retry=1$"
                      % (re.escape(t["id"]), re.escape(SENDER))), p.log_text()
    [lt] = lmtp.transactions()
    assert lt["results"] == {"alice@example.test": "250 2.0.0 <alice@example.test> Saved",
                             "gone@example.test": "550 5.2.1 <gone@example.test> disabled"}, lt


def read_maildir(md):
    """The messages in md/new, portier's Return-Path and Received stripped."""
    out = []
    for fn in peers.maildir_files(md):
        with open(fn, "rb") as f:
            out.append(peers.strip_trace(f.read(), b"\r\n", ("return-path", "received"))[1])
    return out


def test_maildir_one_recipient_unwritable(portier, tmpdir_0755, client):
    """relay = maildir:DIR with DIR/example.test/bob a regular file: alice's copy is written,
    bob's fails, and the client gets R_LMTP_MIXED, 451 4.3.0 'delivery failed for some
    recipients' (logged: event=maildir_error for bob, event=lmtp_mixed_tempfail with
    delivered=1 deferred=1).  Its retry once bob's Maildir can be made is 250, and brings
    alice a second copy: the documented duplicate, never a loss."""
    root = os.path.join(tmpdir_0755, "maildirs")
    dom = os.path.join(root, "example.test")
    os.makedirs(dom)
    for d in (root, dom):
        os.chown(d, peers.NOBODY.pw_uid, peers.NOBODY.pw_gid)
    blocker = os.path.join(dom, "bob")
    with open(blocker, "w") as f:
        f.write("not a Maildir\n")
    p = portier(peers.portier_config("maildir:%s" % root))
    c = client(p.port)
    c.start()
    msg = make_message()
    both = ["alice@example.test", "bob@example.test"]
    r = c.transaction(SENDER, both, msg, expect="451 4.3.0")
    assert r.texts() == ["4.3.0 Error: delivery failed for some recipients, message not "
                         "accepted, try again later"], r
    [t] = p.wait_txns(1)
    assert t["result"] == "tempfail", t
    assert p.wait_log(r"id=%s event=maildir_error rcpt=<bob@example\.test> "
                      r"error=\"open %s: Not a directory\"$"
                      % (re.escape(t["id"]), re.escape(blocker))), p.log_text()
    assert not re.search(r"event=maildir_error rcpt=<alice@", p.log_text())
    assert p.wait_log(r"id=%s event=lmtp_mixed_tempfail reason=deferred_recipients delivered=1 "
                      r"deferred=1 refused=0 duplicate_on_retry=1" % re.escape(t["id"]))
    alice = os.path.join(dom, "alice")
    assert read_maildir(alice) == [msg]
    assert os.listdir(os.path.join(alice, "tmp")) == []
    assert os.path.isfile(blocker)          # portier left the obstacle as it was
    os.unlink(blocker)
    c.transaction(SENDER, both, msg, expect="250 2.0.0")
    c.quit()
    assert [x["result"] for x in p.wait_txns(2)] == ["tempfail", "delivered"]
    assert read_maildir(alice) == [msg, msg]
    assert read_maildir(os.path.join(dom, "bob")) == [msg]


# ---- LMTP with many recipients -----------------------------------------------------------------

def test_lmtp_fifty_recipients(portier, minismtpd, client):
    """Fifty recipients in one transaction to an LMTP backend that accepts them all: one LMTP
    transaction with the fifty in order, one reply per recipient after the data, 250 to the
    client, the message intact.  Portier read all fifty replies: the same session's next
    message, on the same backend connection, gets the backend's own 550 for its recipient
    (a reply left unread would have answered it 250)."""
    lmtp = minismtpd(lmtp=True, data_reply={r"^gone@": "550 5.2.1 <gone@example.test> disabled"})
    p = portier(peers.portier_config("lmtp:127.0.0.1:%d" % lmtp.port))
    rcpts = ["u%02d@example.test" % i for i in range(50)]
    c = client(p.port)
    c.start()
    msg = make_message()
    c.transaction(SENDER, rcpts, msg, expect="250 2.0.0")
    [lt] = lmtp.wait_transactions(1)
    assert lt["rcpts"] == rcpts
    assert lt["results"] == {r: "250 2.0.0 <%s> Saved" % r for r in rcpts}, lt
    hdrs, rest = peers.strip_trace(lt["data"], b"\r\n", ("received",))
    assert len(hdrs) == 1 and peers.is_portier_received(hdrs[0]), hdrs
    peers.assert_same_message(msg, rest, nl=b"\r\n")
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<gone@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="550 5.2.1")
    c.quit()
    txns = p.wait_txns(2)
    assert [(t["result"], t["to"]) for t in txns] == [
        ("delivered", ",".join("<%s>" % r for r in rcpts)),
        ("rejected", "<gone@example.test>")], txns
    # (minismtpd's start-up probe connects too, but never says LHLO)
    lhlos = re.findall(r"C: LHLO ", lmtp.log_text())
    assert len(lhlos) == 1, "the second message did not reuse the backend connection " \
        "(%d LHLOs): the reply-count check above proves nothing" % len(lhlos)


# ---- exact limit boundaries --------------------------------------------------------------------

def test_max_pipelined_boundary(make_pair, client):
    """max_pipelined = 4: four commands in one write are all answered, in order; five in one
    write are answered with nothing but 421 4.7.0 'too many pipelined commands' (portier counts
    the complete lines buffered before it runs any), then the connection closes."""
    n = 4
    p, s = make_pair(server={"max_pipelined": n})
    c = client(p.port)
    c.start()
    c.send(b"NOOP\r\n" * n)
    assert [(r.code, r.enhanced) for r in c.read_replies(n)] == [(250, "2.0.0")] * n
    c.cmd("NOOP", expect="250 2.0.0")
    mark = len(p.log_text())
    f = client(p.port)
    f.start()
    f.send(b"NOOP\r\n" * (n + 1))
    r = f.read_reply()
    peers.expect_reply(r, "421 4.7.0", "reply to %d pipelined commands" % (n + 1))
    assert r.texts() == ["4.7.0 %s Error: too many pipelined commands" % peers.HOSTNAME], r
    f.expect_closed()
    assert p.wait_log(r"event=pipeline_flood client=127\.0\.0\.1", after=mark)
    c.cmd("NOOP", expect="250 2.0.0")


def test_max_errors_boundary(make_pair, client):
    """max_errors = 3: two errors are answered 500 5.5.2 and the session goes on (a NOOP gets
    250); the third error is answered 500 5.5.2 and then 421 4.7.0 'too many errors', and the
    connection closes."""
    n = 3
    p, s = make_pair(server={"max_errors": n})
    c = client(p.port)
    c.start()
    for _ in range(n - 1):
        c.cmd("XYZZY", expect="500 5.5.2")
    c.cmd("NOOP", expect="250 2.0.0")
    c.cmd("XYZZY", expect="500 5.5.2")
    r = c.read_reply()
    peers.expect_reply(r, "421 4.7.0", "reply after error %d of max_errors = %d" % (n, n))
    assert r.texts() == ["4.7.0 %s Error: too many errors" % peers.HOSTNAME], r
    c.expect_closed()
    assert p.wait_log(r"event=too_many_errors client=127\.0\.0\.1 errors=%d\b" % n)


def sized_message(size, marker):
    """A message of exactly size octets as the client means it (CRLF line ends, the final CRLF
    included, before dot-stuffing), with dot-leading lines, so that on the wire it is longer."""
    body = [".dot", "..two dots", "."]
    pad = size - len(make_message(subject=marker, body_lines=body + [""]))
    assert pad >= 0, "size too small for the message skeleton"
    lines = ["." + "p" * 69] * (pad // 72) + ["p" * (pad % 72)]      # 72 octets with CRLF
    msg = make_message(subject=marker, body_lines=body + lines)
    assert len(msg) == size
    return msg


def test_max_message_size_boundary(make_pair, client):
    """max_message_size counts the message as decoded: CRLFs included, the dots of
    dot-stuffing and the final '.' line not.  A message of exactly max_message_size octets
    (longer on the wire) is accepted and arrives intact, logged size=max_message_size; one
    octet more gets 552 5.3.4 after the final dot and is not delivered (logged with the size
    it had, max_message_size + 1).  MAIL SIZE= at the limit is taken, one more is refused
    552 5.3.4."""
    limit = 3000
    p, s = make_pair(server={"max_message_size": limit})
    c = client(p.port)
    c.start()
    exact = sized_message(limit, peers.unique_id("exact"))
    assert len(peers.dot_stuff(exact)) > limit
    c.transaction(SENDER, ["alice@example.test"], exact, expect="250 2.0.0",
                  params=" SIZE=%d" % limit)
    marker = peers.unique_id("over")
    over = sized_message(limit + 1, marker)
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    r = c.send_message(over, expect="552 5.3.4")
    assert r.texts() == ["5.3.4 Error: message size exceeds fixed limit"], r
    c.cmd("MAIL FROM:<%s> SIZE=%d" % (SENDER, limit + 1), expect="552 5.3.4")
    c.cmd("NOOP", expect="250 2.0.0")
    txns = p.wait_txns(2)
    assert [(t["result"], t["size"]) for t in txns] == [("delivered", str(limit)),
                                                       ("rejected", str(limit + 1))], txns
    s.assert_nothing(marker=marker, portier=p, txns=2)
    [m] = s.messages()
    peers.assert_same_message(exact, m.content)

"""The message data: end-of-data detection and SMTP smuggling, bare CR/LF and NUL, dot
transparency, BDAT (RFC 3030)."""
import re

import pytest

import peers
from peers import make_message

VARIANTS = {
    "LF.LF": b"\n.\n",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
}

SMUGGLED = (b"MAIL FROM:<evil@x>\r\n"
            b"RCPT TO:<victim@example.test>\r\n"
            b"DATA\r\n"
            b"From: <evil@x>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")


def smuggling_payload(variant, marker):
    """An outer message whose body has a fake end-of-data followed by a second transaction,
    then the one real CRLF.CRLF."""
    return (("From: <sender@origin.test>\r\nTo: <alice@example.test>\r\nSubject: %s\r\n\r\n"
             "outer body" % marker).encode()
            + VARIANTS[variant] + SMUGGLED + b".\r\n")


def open_data(c, rcpt="alice@example.test"):
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<%s>" % rcpt, expect="250 2.1.5")
    c.cmd("DATA", expect="354")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_smuggling_rejected_by_default(relay_pair, client, variant):
    """Default bare_newline = reject: a fake end-of-data (bare LF/CR variants of CRLF.CRLF) neither ends the message nor starts a
    second one.  The client gets one 554 5.6.0 after the real CRLF.CRLF, no reply to the smuggled
    commands, the session goes on, and the backend receives nothing at all."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    marker = peers.unique_id("smuggle")
    open_data(c)
    c.send(smuggling_payload(variant, marker))
    r = c.read_reply()
    peers.expect_reply(r, "554 5.6.0", "reply after the real end of data")
    c.cmd("NOOP", expect="250 2.0.0")       # not a reply to a smuggled MAIL/RCPT/DATA
    c.cmd("RCPT TO:<alice@example.test>", expect="503 5.5.1")   # no transaction is open
    c.quit()
    s.assert_nothing(portier=p)
    assert [t["result"] for t in p.txns()] == ["rejected"], p.txns()
    assert not [m for m in s.messages(complete=False) if "victim@example.test" in m.rcpts]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_smuggling_normalized_is_one_message(make_pair, client, variant):
    """bare_newline = normalize: the fake end-of-data (each bare LF/CR variant) is just text.  The backend gets
    exactly ONE message, for alice, whose body carries the smuggled commands as text; there is
    never a message for the victim; the client gets exactly one reply."""
    p, s = make_pair(listener={"bare_newline": "normalize"})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("smuggle")
    open_data(c)
    c.send(smuggling_payload(variant, marker))
    r = c.read_reply()
    peers.expect_reply(r, "250", "reply after the real end of data")
    c.cmd("NOOP", expect="250 2.0.0")
    c.quit()
    # After the 221 every transaction of the session has its summary line: exactly one.
    assert [(t["result"], t["to"]) for t in p.wait_txns(1)] == [
        ("delivered", "<alice@example.test>")], p.txns()
    msgs = s.messages(complete=False)
    assert len(msgs) == 1, msgs
    m = msgs[0]
    assert m.rcpts == ["alice@example.test"]
    assert m.mail_from == "sender@origin.test"
    assert marker.encode() in m.content
    assert b"MAIL FROM:<evil@x>" in m.content
    assert b"RCPT TO:<victim@example.test>" in m.content
    assert b"smuggled body" in m.content
    assert len(m.portier_received()) == 1


@pytest.mark.parametrize("bad", [b"bare\nLF inside", b"bare\rCR inside", b"ends with bare LF\n",
                                 b"NUL \x00 inside"], ids=["lf", "cr", "lf-end", "nul"])
def test_bad_bytes_in_data_rejected(relay_pair, client, bad):
    """Default policy: a bare LF, a bare CR or a NUL in the data gets 554 5.6.0 after the real
    CRLF.CRLF; nothing is delivered; the session stays usable and the next message goes through."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    marker = peers.unique_id("bad")
    open_data(c)
    c.send(("Subject: %s\r\n\r\nfirst\r\n" % marker).encode() + bad + b"\r\nlast\r\n.\r\n")
    peers.expect_reply(c.read_reply(), "554 5.6.0", "reply to data with %r" % bad)
    c.cmd("NOOP", expect="250 2.0.0")
    good = make_message()
    c.transaction("sender@origin.test", ["alice@example.test"], good)
    msgs = s.wait_messages(1)
    s.assert_nothing(marker=marker, portier=p, txns=2)
    assert len(msgs) == 1
    peers.assert_same_message(good, msgs[0].content)


def test_nul_rejected_even_with_normalize(make_pair, client):
    """bare_newline = normalize does not let a NUL through: 554 5.6.0, nothing delivered."""
    p, s = make_pair(listener={"bare_newline": "normalize"})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("nul")
    open_data(c)
    c.send(("Subject: %s\r\n\r\nNUL \x00 here\r\n.\r\n" % marker).encode())
    peers.expect_reply(c.read_reply(), "554 5.6.0")
    s.assert_nothing(marker=marker, portier=p)


def test_normalize_delivers_crlf(portier, minismtpd, client):
    """bare_newline = normalize: a message with bare LF line ends is accepted and the backend
    receives it with CRLF line ends everywhere (exact bytes checked)."""
    b = minismtpd()
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % b.port,
                                     listener={"bare_newline": "normalize"}))
    c = client(p.port)
    c.start()
    open_data(c)
    c.send(b"From: <sender@origin.test>\nSubject: normalize me\r\n\nline1\nline2\r\n"
           b"line3\n\nlast\r\n.\r\n")
    peers.expect_reply(c.read_reply(), "250")
    ts = b.wait_transactions(1)
    assert len(ts) == 1
    data = ts[0]["data"]
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", data), "bare CR/LF reached the backend: %r" % data
    hdrs, rest = peers.strip_trace(data, b"\r\n", ("received",))
    assert len([h for h in hdrs if peers.is_portier_received(h)]) == 1, hdrs
    assert rest == (b"From: <sender@origin.test>\r\nSubject: normalize me\r\n\r\nline1\r\nline2\r\n"
                    b"line3\r\n\r\nlast\r\n")


def test_dot_transparency(relay_pair, client):
    """Dot-stuffed lines ('..leading', a line '..', '...') arrive unstuffed exactly once
    ('.leading', '.', '..'); also a message whose only line is '.'."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    msg = (b"X-First: x\r\n\r\n.first body line\r\n"
           b"..two dots\r\n.\r\n..\r\n...\r\nend\r\n")
    open_data(c)
    c.send(peers.dot_stuff(msg) + b".\r\n")
    peers.expect_reply(c.read_reply(), "250")
    only_dot = b".\r\n"                   # a message that is one line '.', sent as '..'
    open_data(c)
    c.send(b"..\r\n.\r\n")
    peers.expect_reply(c.read_reply(), "250")
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    got = sorted(m.content for m in msgs)
    # '.' is no header field: the body starts there, after the empty line portier inserts
    # (test_headers.py)
    assert got == sorted([msg.replace(b"\r\n", b"\n"), b"\n" + only_dot.replace(b"\r\n", b"\n")])


def test_empty_message_and_header_only_message(relay_pair, client):
    """An empty message (DATA then '.') and a message without a body are accepted and
    delivered as sent (plus portier's Received)."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    open_data(c)
    c.send(b".\r\n")
    peers.expect_reply(c.read_reply(), "250")
    hdr_only = b"Subject: only headers\r\n"
    open_data(c)
    c.send(hdr_only + b".\r\n")
    peers.expect_reply(c.read_reply(), "250")
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    contents = sorted(m.content for m in msgs)
    assert contents == sorted([b"", b"Subject: only headers\n"]), contents
    for m in msgs:
        assert len(m.portier_received()) == 1


# ---------------------------------------------------------------------------------------------
# BDAT
# ---------------------------------------------------------------------------------------------

def bdat_open(c, rcpts=("alice@example.test",)):
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, expect="250 2.1.5")


def test_bdat_single_chunk(relay_pair, client):
    """'BDAT n LAST' with the whole message answers with the delivery verdict (the backend's
    250); the message arrives byte-identical - a line '.' inside BDAT data is just data."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    bdat_open(c, ("alice@example.test", "bob@example.test"))
    msg = make_message(body_lines=peers.tricky_body())
    c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    peers.expect_reply(c.read_reply(), "250")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    m = msgs[0]
    assert m.rcpts == ["alice@example.test", "bob@example.test"]
    assert len(m.portier_received()) == 1
    peers.assert_same_message(msg, m.content)


def test_bdat_chunks_at_awkward_places(relay_pair, client):
    """Chunks split mid-line and between CR and LF, then 'BDAT 0 LAST': each chunk gets
    250 2.0.0, LAST gets the verdict, the message arrives byte-identical."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    bdat_open(c)
    msg = make_message(body_lines=peers.tricky_body())
    cr = msg.index(b"\r\n", 40) + 1           # just after a CR, before its LF
    cuts = [0, 7, cr, cr + 1, len(msg) // 2, len(msg)]
    for a, b in zip(cuts, cuts[1:]):
        c.send(b"BDAT %d\r\n" % (b - a) + msg[a:b])
        peers.expect_reply(c.read_reply(), "250 2.0.0", "chunk %d..%d" % (a, b))
    c.cmd("BDAT 0 LAST", expect="250")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    peers.assert_same_message(msg, msgs[0].content)


def test_bdat_pipelined(relay_pair, client):
    """MAIL, RCPT, BDAT, BDAT LAST and a second transaction sent in one write: one reply per
    command, in order; both messages arrive."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    m1 = make_message()
    m2 = make_message()
    h = len(m1) // 2
    c.send(b"MAIL FROM:<sender@origin.test>\r\nRCPT TO:<alice@example.test>\r\n"
           + b"BDAT %d\r\n" % h + m1[:h] + b"BDAT %d LAST\r\n" % (len(m1) - h) + m1[h:]
           + b"MAIL FROM:<sender@origin.test>\r\nRCPT TO:<bob@example.test>\r\n"
           + b"BDAT %d LAST\r\n" % len(m2) + m2 + b"NOOP\r\n")
    rs = c.read_replies(8)
    assert [r.code for r in rs] == [250] * 8, rs
    enh = [r.enhanced for r in rs]
    assert enh[:3] == ["2.1.0", "2.1.5", "2.0.0"] and enh[4:6] == ["2.1.0", "2.1.5"], rs
    assert enh[7] == "2.0.0", rs
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    by_rcpt = {tuple(m.rcpts): m for m in msgs}
    peers.assert_same_message(m1, by_rcpt[("alice@example.test",)].content)
    peers.assert_same_message(m2, by_rcpt[("bob@example.test",)].content)


@pytest.mark.parametrize("line", ["BDAT", "BDAT abc", "BDAT 12x", "BDAT -1", "BDAT LAST"])
def test_bdat_bad_size(relay_pair, client, line):
    """BDAT without a valid size gets 501 5.5.4 and the session ends: the octets that follow
    cannot be framed, and reading chunk data as commands would be smuggling."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    bdat_open(c)
    c.cmd(line, expect="501 5.5.4")
    with pytest.raises(peers.ConnectionClosed):
        c.cmd("NOOP")


def test_bdat_short_data_times_out(make_pair, client):
    """A BDAT that promises more bytes than the client sends, then stalls, ends with
    421 4.4.2 after data_timeout; nothing is delivered."""
    p, s = make_pair(server={"data_timeout": 2})
    c = client(p.port)
    c.start()
    bdat_open(c)
    c.send(b"BDAT 100 LAST\r\n" + b"Subject: short\r\n")
    r = c.read_reply(timeout=12)
    peers.expect_reply(r, "421 4.4.2")
    c.expect_closed()
    s.assert_nothing(portier=p)


def test_bdat_size_smaller_than_data(relay_pair, client):
    """Bytes past the declared BDAT size are read as commands: 'BDAT 5' + 'helloXYZZY' gives
    250 2.0.0 for the chunk, then 500 5.5.2 for 'XYZZY'; nothing is delivered."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    bdat_open(c)
    c.send(b"BDAT 5\r\nhelloXYZZY\r\n")
    peers.expect_reply(c.read_reply(), "250 2.0.0", "chunk")
    peers.expect_reply(c.read_reply(), "500 5.5.2", "the extra bytes as a command")
    c.cmd("RSET", expect="250 2.0.0")
    s.assert_nothing(portier=p)


def test_data_after_bdat(relay_pair, client):
    """DATA after a BDAT chunk in the same transaction gets 503 5.5.1."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    bdat_open(c)
    c.send(b"BDAT 5\r\nhello")
    peers.expect_reply(c.read_reply(), "250 2.0.0")
    c.cmd("DATA", expect="503 5.5.1")
    c.cmd("RSET", expect="250 2.0.0")
    s.assert_nothing(portier=p)


def test_bdat_over_size_limit(make_pair, client):
    """BDAT chunks adding up to more than max_message_size: the chunk still within it gets
    250 2.0.0, the LAST chunk that goes over gets 552 5.3.4, and nothing is delivered; the
    session goes on."""
    p, s = make_pair(server={"max_message_size": 10000})
    c = client(p.port)
    c.start()
    bdat_open(c)
    chunk = (b"y" * 78 + b"\r\n") * 100                  # 8000 bytes
    c.send(b"BDAT 8000\r\n" + chunk)
    r1 = c.read_reply()
    c.send(b"BDAT 8000 LAST\r\n" + chunk)
    r2 = c.read_reply()
    peers.expect_reply(r1, "250 2.0.0", "first chunk, 8000 of 10000 octets")
    peers.expect_reply(r2, "552 5.3.4", "LAST chunk, 16000 of 10000 octets")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("NOOP", expect="250 2.0.0")
    s.assert_nothing(portier=p)

"""TLS on the client side: STARTTLS (RFC 3207) and implicit TLS, protocol floor, handshake
timeout, plaintext injection behind STARTTLS (CVE-2011-0411 class), tls_required, session
resumption, the Received header's TLS clause.  Backend: smtp-sink.  Clients: the raw SmtpClient with python
ssl, openssl s_client."""
import os
import socket
import ssl
import time

import pytest

import peers
from peers import HOSTNAME, make_message
from tlsauth import (certs, users_file, tls_server, aux_file,  # noqa: F401 (fixtures)
                     tls_context, starttls, wrap_implicit, s_client, check_tls_received,
                     recv_all, first_flight, portier_tls_config)

BANNER = ("220 %s ESMTP portier" % HOSTNAME).encode()
IMPLICIT = {"imp": {"role": "mx", "tls": "implicit"}}


def test_starttls_advertised_then_gone(tls_server, client, certs):
    """STARTTLS is advertised before TLS only; 220 2.0.0 Ready to start TLS; the handshake gives
    TLS 1.3; EHLO again shows the same extensions minus STARTTLS; STARTTLS again -> 503 5.5.1."""
    srv = tls_server()
    c = client(srv.port)
    before = peers.ehlo_keywords(c.start())
    assert "STARTTLS" in before, before
    r = starttls(c, tls_context(certs))
    assert r.lines == [b"220 2.0.0 Ready to start TLS"], r.text
    assert c.sock.version() == "TLSv1.3"
    after = peers.ehlo_keywords(c.ehlo())
    assert "STARTTLS" not in after, after
    # Everything but STARTTLS stays; REQUIRETLS (RFC 8689 4) may appear only under TLS.
    assert set(before) - {"STARTTLS"} <= set(after), (before, after)
    assert set(after) - set(before) <= {"REQUIRETLS"}, (before, after)
    assert "REQUIRETLS" not in before, before
    c.cmd("STARTTLS", expect="503 5.5.1")
    c.cmd("NOOP", expect="250 2.0.0")


def test_starttls_not_on_plain_listener(tls_server, client):
    """On a tls = none listener (even with [tls] configured) STARTTLS is not advertised and
    gets 502 5.5.1; the session goes on in plain text."""
    srv = tls_server(listener={"tls": "none"})
    c = client(srv.port)
    kw = peers.ehlo_keywords(c.start())
    assert "STARTTLS" not in kw, kw
    c.cmd("STARTTLS", expect="502 5.5.1")
    c.cmd("NOOP", expect="250 2.0.0")
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")


def test_starttls_with_argument(tls_server, client, certs):
    """STARTTLS takes no argument: 501 5.5.4 and no TLS; a proper STARTTLS then works."""
    srv = tls_server()
    c = client(srv.port)
    c.start()
    c.cmd("STARTTLS now", expect="501 5.5.4")
    c.cmd("NOOP", expect="250 2.0.0")
    starttls(c, tls_context(certs))
    c.ehlo()


@pytest.mark.parametrize("injected", [
    b"RSET\r\n",
    b"MAIL FROM:<x@y>\r\n",
    b"EHLO evil.test\r\nMAIL FROM:<x@origin.test>\r\nRCPT TO:<alice@example.test>\r\n",
], ids=["rset", "mail", "ehlo-mail-rcpt"])
def test_starttls_plaintext_injection_discarded(tls_server, client, certs, injected):
    """Plain text pipelined behind STARTTLS in the same write is thrown away: no reply to it in
    clear or under TLS; after the handshake the state is fresh (MAIL before EHLO -> 503 5.5.1
    send HELO/EHLO first), then EHLO and a transaction work."""
    srv = tls_server()
    c = client(srv.port)
    c.start()
    c.send(b"STARTTLS\r\n" + injected)
    r = c.read_reply()
    assert r.lines == [b"220 2.0.0 Ready to start TLS"], r.text
    assert c.buf == b"", "plain-text data after the 220: %r" % c.buf
    c.sock = tls_context(certs).wrap_socket(c.sock, server_hostname="localhost")
    data, closed = recv_all(c.sock, 1.5)
    assert data == b"" and not closed, \
        "the server answered the injected plain text under TLS: %r (closed=%r)" % (data, closed)
    r = c.cmd("MAIL FROM:<sender@origin.test>", expect="503 5.5.1")
    assert "send HELO/EHLO first" in r.text, r.text
    c.ehlo()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    msgs = srv.sink.wait_messages(1)
    assert [m.rcpts for m in msgs] == [["alice@example.test"]]
    assert msgs[0].mail_from == "sender@origin.test"


def test_starttls_resets_session(tls_server, client, certs):
    """STARTTLS after MAIL: the transaction is gone after the handshake (RFC 3207 4.2): RCPT
    gets 503 5.5.1 (before EHLO) and after EHLO too (no MAIL)."""
    srv = tls_server()
    c = client(srv.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    r = c.cmd("STARTTLS")
    if r.code != 220:
        # refusing STARTTLS inside a transaction is fine too; then it must be 503 5.5.1
        peers.expect_reply(r, "503 5.5.1", "STARTTLS during a transaction")
        return
    assert c.buf == b""
    c.sock = tls_context(certs).wrap_socket(c.sock, server_hostname="localhost")
    c.cmd("RCPT TO:<alice@example.test>", expect="503 5.5.1")
    c.ehlo()
    c.cmd("RCPT TO:<alice@example.test>", expect="503 5.5.1")


def test_handshake_timeout_starttls(tls_server, client):
    """A client that never starts the handshake after 220 is dropped after handshake_timeout
    (2 s), without any reply bytes."""
    srv = tls_server(tls={"handshake_timeout": 2})
    c = client(srv.port)
    c.start()
    c.cmd("STARTTLS", expect="220 2.0.0")
    t0 = time.monotonic()
    data, closed = recv_all(c.sock, 10)
    took = time.monotonic() - t0
    assert closed, "server kept the stalled handshake open for 10 s"
    assert data == b"", "server sent %r to a client that never started the handshake" % data
    assert 1.5 <= took <= 6, "dropped after %.2f s, handshake_timeout is 2" % took


def test_handshake_timeout_partial_hello(tls_server, client):
    """A partial ClientHello (record header, then nothing) on the implicit-TLS listener: dropped
    after handshake_timeout (2 s), with nothing sent back (not even a TLS alert carrying SMTP)."""
    srv = tls_server(tls={"handshake_timeout": 2}, listeners=IMPLICIT)
    s = socket.create_connection(("127.0.0.1", srv.imp), timeout=10)
    try:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        t0 = time.monotonic()
        data, closed = recv_all(s, 10)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert closed, "server kept the stalled handshake open for 10 s"
    assert b"220" not in data and b"ESMTP" not in data, data
    assert 1.5 <= took <= 6, "dropped after %.2f s, handshake_timeout is 2" % took


def test_handshake_timeout_implicit_silent(tls_server):
    """Implicit TLS: a client that connects and says nothing gets no banner (the banner comes
    only after the handshake) and is dropped after handshake_timeout (2 s)."""
    srv = tls_server(tls={"handshake_timeout": 2}, listeners=IMPLICIT)
    s = socket.create_connection(("127.0.0.1", srv.imp), timeout=10)
    try:
        t0 = time.monotonic()
        data, closed = recv_all(s, 10)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert closed and data == b"", (data, closed)
    assert 1.5 <= took <= 6, "dropped after %.2f s, handshake_timeout is 2" % took


def test_client_closes_during_handshake(tls_server, client, certs):
    """Clients that vanish mid-handshake (after STARTTLS: half a ClientHello then close; on the
    implicit listener: connect+close, and half a ClientHello + RST) do not hurt the server:
    full TLS sessions on both listeners work afterwards."""
    srv = tls_server(listeners=IMPLICIT)
    hello_part = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20
    for i in range(3):
        c = client(srv.port)
        c.start()
        c.cmd("STARTTLS", expect="220 2.0.0")
        c.send(hello_part)
        c.close()
        s = socket.create_connection(("127.0.0.1", srv.imp), timeout=5)
        s.close()
        s = socket.create_connection(("127.0.0.1", srv.imp), timeout=5)
        s.sendall(hello_part)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()                       # linger 0: RST
    ctx = tls_context(certs)
    c = client(srv.port)
    c.start()
    starttls(c, ctx)
    c.ehlo()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c2 = wrap_implicit(client(srv.imp), ctx)
    c2.start()
    c2.transaction("sender@origin.test", ["bob@example.test"], make_message())
    msgs = srv.sink.wait_messages(2)
    assert sorted(m.rcpts[0] for m in msgs) == ["alice@example.test", "bob@example.test"]
    assert srv.portier.alive()


@pytest.mark.parametrize("payload,expect", [
    (b"NOOP\r\n", [b"250 2.0.0"]),
    (b"EHLO first.test\r\n", [b"250 DSN"]),
    (b"NOOP\r\nQUIT\r\n", [b"250 2.0.0", b"221 2.0.0"]),
    (b"EHLO first.test\r\nQUIT\r\n", [b"250 DSN", b"221 2.0.0"]),
    (b"QUIT\r\n", [b"221 2.0.0"]),
], ids=["noop", "ehlo", "noop-quit", "ehlo-quit", "quit"])
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_first_flight_after_handshake(tls_server, client, certs, mode, payload, expect):
    """Commands that arrive in the same TCP segment as the client's TLS Finished (openssl
    s_client with its input ready does this) are answered like any others: every reply, in
    order, and the 221 to QUIT before the server closes."""
    srv = tls_server(listeners=IMPLICIT)
    ctx = tls_context(certs)
    if mode == "implicit":
        sock = socket.create_connection(("127.0.0.1", srv.imp), timeout=10)
        prefix = BANNER + b"\r\n"
    else:
        c = client(srv.port)
        c.start()
        c.cmd("STARTTLS", expect="220 2.0.0")
        sock = c.sock
        prefix = b""
    try:
        got, how = first_flight(sock, ctx, payload, wait=3.0 if b"QUIT" in payload else 1.0)
    finally:
        sock.close()
    assert got.startswith(prefix), (got, how)
    lines = got[len(prefix):].split(b"\r\n")
    finals = [l for l in lines if l[3:4] == b" "]
    assert len(finals) == len(expect) and all(f.startswith(e) for f, e in zip(finals, expect)), \
        "sent %r in the Finished's segment; got %r, then the connection ended by %s" % (
            payload, got, how)
    if b"QUIT" in payload:
        assert how in ("eof", "close_notify"), how


@pytest.mark.parametrize("how", ["close", "half-hello", "rst"])
def test_aborted_handshakes_release_sessions(tls_server, client, certs, how):
    """Clients that leave during the implicit-TLS handshake (close at once, close after half a
    ClientHello, RST) free their session slot at once (there is nobody left to write to): with
    max_sessions = 2, 0.3 s after five such clients two full sessions are admitted at the
    same time."""
    srv = tls_server(listeners=IMPLICIT, server={"max_sessions": 2})
    hello_part = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", srv.imp), timeout=5)
        if how != "close":
            s.sendall(hello_part)
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" + b"\x00" * 4)
        s.close()
    ctx = tls_context(certs)

    def two_sessions():
        a = wrap_implicit(client(srv.imp), ctx)
        b = wrap_implicit(client(srv.imp), ctx)
        ra, rb = a.read_reply(), b.read_reply()
        a.close()
        b.close()
        return (ra.code, rb.code) == (220, 220) or (ra.text, rb.text)

    time.sleep(0.3)
    got = two_sessions()
    assert got is True, "0.3 s after 5 aborted handshakes, 2 concurrent sessions were not " \
        "both admitted (max_sessions = 2): %r" % (got,)


def test_implicit_tls_banner_after_handshake(tls_server, client, certs):
    """tls = implicit: nothing comes in clear; after the handshake (TLS 1.3) the banner is the
    usual one; STARTTLS is not advertised there and is refused (5xx 5.5.1)."""
    srv = tls_server(listeners=IMPLICIT)
    c = client(srv.imp)
    data, closed = recv_all(c.sock, 1.0)
    assert data == b"" and not closed, "sent in clear before the handshake: %r" % data
    wrap_implicit(c, tls_context(certs))
    assert c.sock.version() == "TLSv1.3"
    r = c.greeting()
    assert r.lines == [BANNER], r.text
    kw = peers.ehlo_keywords(c.ehlo())
    assert "STARTTLS" not in kw, kw
    r = c.cmd("STARTTLS")
    assert r.code in (502, 503) and r.enhanced == "5.5.1", r.text


def test_implicit_tls_s_client(tls_server, certs):
    """openssl s_client verifies the certificate against the test CA, negotiates TLS 1.3 and
    sees the banner and the EHLO reply."""
    srv = tls_server(listeners=IMPLICIT)
    rc, out = s_client(srv.imp, certs, stdin=b"EHLO s-client.test\r\nQUIT\r\n")
    assert rc == 0, out
    assert "Verify return code: 0 (ok)" in out, out
    assert "New, TLSv1.3" in out, out
    assert BANNER.decode() in out, out
    assert "250 DSN" in out, out


def test_starttls_s_client(tls_server, certs):
    """openssl s_client -starttls smtp: the certificate verifies, TLS 1.3 is negotiated, EHLO
    under TLS is answered.  (The 221 to QUIT: test_starttls_final_replies_flushed.)"""
    srv = tls_server()
    rc, out = s_client(srv.port, certs, ["-starttls", "smtp"],
                       stdin=b"EHLO s-client.test\r\nQUIT\r\n", timeout=8)
    assert "Verify return code: 0 (ok)" in out, out
    assert "New, TLSv1.3" in out, out
    assert "250 DSN" in out, out


def _starttls_once(srv, client, ctx, session=None):
    """One STARTTLS session offering `session`; ends without QUIT, the way testssl and
    openssl s_client -reconnect leave (the client's close_notify, then the TCP close).
    Returns (whether the server resumed `session`, the session to offer next time)."""
    c = client(srv.port)
    c.start()
    c.cmd("STARTTLS", expect="220 2.0.0")
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost", session=session)
    reused = c.sock.session_reused
    c.ehlo()                    # TLS 1.3: the ticket follows the handshake; read past it
    nxt = c.sock.session
    try:
        c.sock.unwrap()         # close_notify (else the client itself drops the session)
    except (ssl.SSLError, OSError):
        pass                    # the server closed without answering it
    c.close()
    return reused, nxt


@pytest.mark.parametrize("version,tickets", [(ssl.TLSVersion.TLSv1_2, True),
                                             (ssl.TLSVersion.TLSv1_3, True),
                                             (ssl.TLSVersion.TLSv1_2, False)],
                         ids=["tls12", "tls13", "tls12-session-id"])
def test_session_resumption_starttls(tls_server, client, certs, version, tickets):
    """portier.conf(5): TLS sessions resume.  A client that offers the session of its last
    connection gets an abbreviated handshake, four times in a row, although each of those
    connections ended without QUIT.  Without tickets (TLS 1.2 session id, the server's cache)
    too: the client's close_notify is answered with ours, so OpenSSL keeps the session."""
    srv = tls_server()
    ctx = tls_context(certs, minimum=version, maximum=version)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    reused, sess = _starttls_once(srv, client, ctx)
    assert not reused
    got = []
    for i in range(4):
        reused, sess = _starttls_once(srv, client, ctx, session=sess)
        got.append(reused)
    assert got == [True] * 4, "session_reused on the next connections: %r" % got


def test_session_resumption_s_client_reconnect(tls_server, certs):
    """openssl s_client -reconnect (as testssl runs it) on implicit TLS 1.2: the first session
    is new and the 5 reconnections resume it.  (s_client drops a TLS 1.3 connection before the
    ticket arrives, so it cannot resume TLS 1.3 this way: test_session_resumption_starttls.)"""
    srv = tls_server(listeners=IMPLICIT)
    rc, out = s_client(srv.imp, certs, ["-reconnect", "-tls1_2"], stdin=b"QUIT\r\n",
                       timeout=15)
    lines = [l for l in out.splitlines() if l.startswith(("New, ", "Reused, "))]
    assert len(lines) == 6, out
    assert lines[0].startswith("New, ") and all(l.startswith("Reused, ") for l in lines[1:]), \
        "\n".join(lines)


# An OpenSSL 3 client refuses TLS 1.0/1.1 by itself at its default security level; level 0
# makes sure the refusal comes from the server.
OLD_TLS = ["-cipher", "DEFAULT:@SECLEVEL=0"]


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_tls11_refused(tls_server, certs, mode):
    """TLS 1.1 is refused by default (TLS 1.0 too): the handshake fails and no SMTP reply comes
    under TLS; TLS 1.2 and 1.3 work."""
    srv = tls_server(listeners=IMPLICIT)
    port, extra = (srv.imp, []) if mode == "implicit" else (srv.port, ["-starttls", "smtp"])
    for proto in ("-tls1_1", "-tls1"):
        rc, out = s_client(port, certs, extra + [proto] + OLD_TLS,
                           stdin=b"EHLO s-client.test\r\nQUIT\r\n")
        assert rc != 0, "%s accepted:\n%s" % (proto, out)
        assert "Cipher is (NONE)" in out, out
        assert "250 DSN" not in out and "221 2.0.0" not in out, out
    for proto in ("-tls1_2", "-tls1_3"):
        rc, out = s_client(port, certs, extra + [proto], stdin=b"EHLO s-client.test\r\nQUIT\r\n",
                           timeout=8)
        assert "New, %s" % ("TLSv1.2" if proto == "-tls1_2" else "TLSv1.3") in out, out
        assert "250 DSN" in out, "%s refused:\n%s" % (proto, out)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_tls11_refusal_alert(tls_server, certs, mode):
    """The refused TLS 1.1 ClientHello gets a protocol_version alert (RFC 8446 4.2.1 / 6.2)
    before the server closes, on both kinds of listener."""
    srv = tls_server(listeners=IMPLICIT)
    port, extra = (srv.imp, []) if mode == "implicit" else (srv.port, ["-starttls", "smtp"])
    rc, out = s_client(port, certs, extra + ["-tls1_1"] + OLD_TLS, stdin=b"QUIT\r\n")
    assert rc != 0, out
    assert "alert protocol version" in out, out


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_final_replies_flushed(tls_server, client, certs, mode):
    """Under TLS, QUIT gets 221 2.0.0 (RFC 5321 4.1.1.10) before the server closes, and so
    does the 421 of too many errors: the last reply reaches the client."""
    srv = tls_server(listeners=IMPLICIT, server={"max_errors": 2})
    ctx = tls_context(certs)
    problems = []
    for final in ("quit", "errors"):
        if mode == "implicit":
            c = wrap_implicit(client(srv.imp), ctx)
            c.start()
        else:
            c = client(srv.port)
            c.start()
            starttls(c, ctx)
            c.ehlo()
        c.cmd("NOOP", expect="250 2.0.0")
        if final == "quit":
            c.sendline("QUIT")
            expect = b"221 2.0.0"
        else:
            c.cmd("XYZZY", expect="500 5.5.2")
            c.sendline("XYZZY")
            expect = b"421 4.7.0"
        data, closed = recv_all(c.sock, 5)
        got = c.buf + data
        if not closed:
            problems.append("not closed after %s: %r" % (final, got))
        elif expect not in got:
            problems.append("%s under %s TLS: expected %r before the close, got %r" % (
                final, mode, expect, got))
    assert not problems, "\n".join(problems)


def test_min_protocol_tls13(tls_server, certs):
    """[tls] min_protocol = TLSv1.3: TLS 1.2 is refused (s_client and python ssl), TLS 1.3 works."""
    srv = tls_server(listeners=IMPLICIT, tls={"min_protocol": "TLSv1.3"})
    rc, out = s_client(srv.imp, certs, ["-tls1_2"], stdin=b"QUIT\r\n")
    assert rc != 0, out
    assert "221 2.0.0" not in out, out
    rc, out = s_client(srv.imp, certs, ["-tls1_3"], stdin=b"QUIT\r\n")
    assert rc == 0, out
    assert "221 2.0.0" in out, out
    ctx = tls_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
    s = socket.create_connection(("127.0.0.1", srv.imp), timeout=10)
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(s, server_hostname="localhost")
    s.close()


def test_ciphers_tls12(tls_server, certs):
    """[tls] ciphers limits the TLS 1.2 suites: the listed one works, another is refused."""
    srv = tls_server(listeners=IMPLICIT, tls={"ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"})
    rc, out = s_client(srv.imp, certs, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                       stdin=b"QUIT\r\n")
    assert rc == 0 and "221 2.0.0" in out, out
    rc, out = s_client(srv.imp, certs, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
                       stdin=b"QUIT\r\n")
    assert rc != 0 and "221 2.0.0" not in out, out


def test_tls_required(tls_server, client, certs):
    """tls_required = yes on a STARTTLS mx listener: MAIL before STARTTLS -> 530 5.7.0 (EHLO,
    NOOP still fine); after STARTTLS the message goes through."""
    srv = tls_server(listener={"tls_required": "yes"})
    c = client(srv.port)
    kw = peers.ehlo_keywords(c.start())
    assert "STARTTLS" in kw
    c.cmd("MAIL FROM:<sender@origin.test>", expect="530 5.7.0")
    c.cmd("NOOP", expect="250 2.0.0")
    starttls(c, tls_context(certs))
    c.ehlo()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1


def test_tls_required_needs_tls_listener(tmpdir_0755, certs):
    """tls_required = yes with tls = none is a configuration error (portier -t exit 2)."""
    cfg = portier_tls_config("smtp:127.0.0.1:9", certs=certs,
                             listener={"tls": "none", "tls_required": "yes"})
    path = os.path.join(tmpdir_0755, "p.conf")
    with open(path, "w") as f:
        f.write(cfg.replace("{port}", "2525"))
    rc, out = peers.run_portier_check(path)
    assert rc == 2, (rc, out)
    assert "tls_required" in out, out


def test_received_header_starttls(tls_server, client, certs):
    """The backend sees portier's Received header with (using TLSv1.3 ...) and 'with ESMTPS'."""
    srv = tls_server()
    c = client(srv.port)
    c.start()
    starttls(c, tls_context(certs))
    c.ehlo("tls-client.test")
    msg = make_message()
    c.transaction("sender@origin.test", ["alice@example.test"], msg)
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1
    rec = msgs[0].portier_received()
    assert len(rec) == 1, msgs[0].headers
    check_tls_received(rec[0], proto="ESMTPS", helo="tls-client.test")
    peers.assert_same_message(msg, msgs[0].content)


def test_received_header_implicit(tls_server, client, certs):
    """Implicit TLS: Received has (using TLSv1.3 ...) and 'with ESMTPS'; HELO gives SMTPS."""
    srv = tls_server(listeners=IMPLICIT)
    ctx = tls_context(certs)
    c = wrap_implicit(client(srv.imp), ctx)
    c.start("imp-client.test")
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c2 = wrap_implicit(client(srv.imp), ctx)
    c2.greeting()
    c2.cmd("HELO helo-client.test", expect="250")
    c2.transaction("sender@origin.test", ["bob@example.test"], make_message())
    msgs = srv.sink.wait_messages(2)
    by = {m.rcpts[0]: m for m in msgs}
    check_tls_received(by["alice@example.test"].portier_received()[0], proto="ESMTPS",
                       helo="imp-client.test")
    check_tls_received(by["bob@example.test"].portier_received()[0], proto="SMTPS",
                       helo="helo-client.test")


def test_plain_received_has_no_tls_clause(tls_server, client):
    """Without STARTTLS on the same listener: plain 'with ESMTP' and no (using ...)."""
    srv = tls_server()
    c = client(srv.port)
    c.start("plain-client.test")
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    m = srv.sink.wait_messages(1)[0]
    rec = m.portier_received()
    assert len(rec) == 1 and "(using" not in rec[0], rec
    peers.check_portier_received(rec[0], helo="plain-client.test", proto="ESMTP")

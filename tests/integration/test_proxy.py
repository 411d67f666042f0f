"""PROXY protocol v1 and v2 on a listener (proxy_protocol = yes, proxy_trusted, proxy_timeout):
headers written here (TCP4, TCP6, LOCAL, UNKNOWN, UNSPEC) and by a real HAProxy (send-proxy-v2,
send-proxy; ../shared/recipes/haproxy-proxy.md), whose client connects from 127.0.0.2 while
haproxy itself reaches portier from 127.0.0.1.  The header's client shows in portier's log
(client=, with proxy= the balancer), in the Received: header the backend (smtp-sink) gets, and
in what a filter sees (test-async at connect).  Bad headers, a second one, an untrusted sender
and silence each end the connection without a greeting, logged with event=proxy_refused and the
reason; other sessions go on.

Each config has a plain mx listener on {port} (what the fixture probes) and the PROXY listener
lb on {pport}."""
import os
import re
import shutil
import signal
import socket
import struct
import time

import pytest

import peers
from test_filter_api import answer_server, stages  # noqa: F401  (fixture)
from test_policyd import policy_server, section as policyd_section  # noqa: F401  (fixture)
from tlsauth import (certs, users_file, tls_server, tls_context, starttls,  # noqa: F401
                     plain_b64, ALICE)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
LB_KEYS = {"listen": "127.0.0.1:{pport}", "role": "mx", "tls": "none",
           "proxy_protocol": "yes", "proxy_trusted": "127.0.0.1/32 10.0.0.0/8",
           "proxy_timeout": "2", "reverse_lookup": "no"}


def lb_section(filters=None, lb=None):
    kv = dict(LB_KEYS, **(lb or {}))
    if filters:
        kv["filters"] = filters
    return "[listener lb]\n%s\n" % "".join("%s = %s\n" % i for i in kv.items())


def config(sink_port, filters=None, extra="", lb=None):
    text = peers.portier_config("smtp:127.0.0.1:%d" % sink_port,
                                listener={"reverse_lookup": "no"}, extra=extra)
    return text + lb_section(filters, lb)


def start(portier, sink_port, **kw):
    pport = peers.free_port()
    p = portier(config(sink_port, **kw), ports={"pport": pport},
                test_filters=bool(kw.get("filters")))
    p.pport = pport
    return p


def v2(cmd, fam, addr=b"", tlv=b""):
    body = addr + tlv
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src, sport, dst="127.0.0.1", dport=25):
    return v2(1, 0x11, socket.inet_pton(socket.AF_INET, src) +
              socket.inet_pton(socket.AF_INET, dst) + struct.pack("!HH", sport, dport))


def v2_tcp6(src, sport, dst="::1", dport=25):
    return v2(1, 0x21, socket.inet_pton(socket.AF_INET6, src) +
              socket.inet_pton(socket.AF_INET6, dst) + struct.pack("!HH", sport, dport))


def proxied_delivery(portier, sink, header):
    """portier and a sink; one message through the PROXY listener after header: (portier,
    sink, the message's marker)."""
    s = sink()
    p = start(portier, s.port)
    c = peers.SmtpClient(p.pport)
    c.send(header)
    tag = peers.unique_id("px")
    deliver(c, tag)
    return p, s, tag


def deliver(c, tag):
    """EHLO, one message marked with tag, QUIT."""
    c.greeting()
    c.ehlo("client.test")
    c.transaction("sender@origin.test", ["alice@example.test"],
                  peers.make_message(subject=tag, body_lines=[tag]))
    c.quit()


def received_addr(sink, tag):
    msgs = [m for m in sink.wait_messages(1) if tag.encode() in m.raw]
    assert len(msgs) == 1, sink.messages()
    recv = msgs[0].portier_received()
    assert len(recv) == 1, msgs[0].headers
    m = peers.PORTIER_RECEIVED_RE.match(recv[0])
    assert m, recv[0]
    return m.group("addr"), recv[0]


def expect_refused(p, data, reason, source=None, close=False, wait=5.0):
    """Send data (bytes) to the PROXY listener: no greeting, the connection ends, and the log
    says event=proxy_refused with reason."""
    mark = len(p.log_text())
    s = socket.create_connection(("127.0.0.1", p.pport), timeout=wait,
                                 source_address=(source, 0) if source else None)
    try:
        if data:
            s.sendall(data)
        if close:
            s.shutdown(socket.SHUT_WR)
        got = b""
        t0 = time.monotonic()
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            got += chunk
        took = time.monotonic() - t0
    finally:
        s.close()
    assert got == b"", "no SMTP reply before the header is taken; got %r" % got
    line = p.wait_log(r"event=proxy_refused client=%s listener=lb reason=\"%s\""
                      % (re.escape(source or "127.0.0.1"), re.escape(reason)), after=mark)
    assert line, "want reason %r in:\n%s" % (reason, p.log_text()[mark:])
    assert "event=connect client=" not in p.log_text()[mark:]
    return took


def plain_session_works(p):
    c = peers.SmtpClient(p.port)
    c.greeting()
    c.ehlo()
    c.quit()
    c.close()


# ---------------------------------------------------------------------------------------------
# headers written by the test
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header,client,want_received", [
    (b"PROXY TCP4 192.0.2.7 198.51.100.25 40001 25\r\n", "192.0.2.7", "192.0.2.7"),
    (b"PROXY TCP6 2001:db8::7 2001:db8::25 40002 25\r\n", "2001:db8::7", "2001:db8::7"),
    (v2_tcp4("192.0.2.8", 40003), "192.0.2.8", "192.0.2.8"),
    (v2_tcp6("2001:db8::8", 40004), "2001:db8::8", "2001:db8::8"),
    # TLVs after the addresses are skipped
    (v2(1, 0x11, socket.inet_aton("192.0.2.9") + socket.inet_aton("127.0.0.1") +
        struct.pack("!HH", 40005, 25), tlv=b"\x04\x00\x02ab"), "192.0.2.9", "192.0.2.9"),
], ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tcp6", "v2-tlv"])
def test_header_gives_client(portier, sink, header, client, want_received):
    """The header's source is the client in the connect line (with proxy= the balancer), the
    summary line, and the Received: header the backend gets."""
    p, s, tag = proxied_delivery(portier, sink, header)
    version = "2" if header.startswith(SIG) else "1"
    assert p.wait_log(r"event=connect client=%s listener=lb proxy=127\.0\.0\.1 proxy_version=%s "
                      r"proxy_kind=TCP[46]$" % (re.escape(client), version)), p.log_text()
    addr, recv = received_addr(s, tag)
    assert addr == want_received, recv
    if ":" in client:
        assert "[IPv6:%s]" % client in recv
    txn = [t for t in p.wait_txns(1) if t.get("client") == client]
    assert txn and txn[0]["result"] == "delivered", p.txns()
    assert p.wait_log(r"event=disconnect client=%s " % re.escape(client))


@pytest.mark.parametrize("header,kind", [
    (v2(0, 0x00), "LOCAL"),
    (v2(0, 0x11, b"\x00" * 12), "LOCAL"),
    (b"PROXY UNKNOWN\r\n", "UNKNOWN"),
    (b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n", "UNKNOWN"),
    (v2(1, 0x00), "UNSPEC"),
    (v2(1, 0x31, b"/a" + b"\x00" * 214), "UNIX"),
], ids=["v2-local", "v2-local-addr", "v1-unknown", "v1-unknown-addr", "v2-unspec", "v2-unix"])
def test_header_without_address_keeps_socket(portier, sink, header, kind):
    """v2 LOCAL, v1 UNKNOWN, v2 AF_UNSPEC and AF_UNIX: the session goes on with the socket's
    address (as Postfix does), logged as address=kept."""
    p, s, tag = proxied_delivery(portier, sink, header)
    assert p.wait_log(r"event=connect client=127\.0\.0\.1 listener=lb proxy=127\.0\.0\.1 "
                      r"proxy_version=\d proxy_kind=%s address=kept$" % kind), p.log_text()
    addr, recv = received_addr(s, tag)
    assert addr == "127.0.0.1", recv


def test_header_and_smtp_in_one_write(portier, sink):
    """What follows the header in the same packet is the client's SMTP, read after the
    greeting (the header alone is consumed)."""
    s = sink()
    p = start(portier, s.port)
    c = peers.SmtpClient(p.pport)
    c.send(b"PROXY TCP4 192.0.2.44 127.0.0.1 1234 25\r\n")
    c.greeting()
    c.send(b"EHLO a.test\r\nQUIT\r\n")
    r = c.read_reply()
    assert r.code == 250
    assert c.read_reply().code == 221


def test_header_and_early_smtp_in_one_write(portier, sink):
    """SMTP in the header's own packet is the client's first input: without greet_pause it is
    answered after the greeting; with greet_pause it is talking before the banner (554 5.5.1,
    as on a listener without PROXY)."""
    s = sink()
    p = start(portier, s.port)
    c = peers.SmtpClient(p.pport)
    c.send(b"PROXY TCP4 192.0.2.45 127.0.0.1 1234 25\r\nEHLO a.test\r\n")
    c.greeting()
    assert c.read_reply().code == 250
    c.quit()
    p = start(portier, s.port, lb={"greet_pause": "1"})
    c = peers.SmtpClient(p.pport)
    c.send(b"PROXY TCP4 192.0.2.46 127.0.0.1 1234 25\r\nEHLO a.test\r\n")
    replies, closed = c.replies_until_closed(5)
    assert [(r.code, r.enhanced) for r in replies] == [(554, "5.5.1")] and closed, replies
    assert p.wait_log(r"event=greet_pause_violation client=192\.0\.2\.46")


def test_filter_sees_real_client(portier, sink, answer_server):  # noqa: F811
    """test-async at connect gets client_addr: the header's source, not the balancer's."""
    s = sink()
    srv = answer_server(stages({}))
    p = start(portier, s.port, filters="test-async",
              extra="[filter test-async]\nserver = 127.0.0.1:%d\nstages = connect\n" % srv.port)
    c = peers.SmtpClient(p.pport)
    c.send(v2_tcp4("198.51.100.77", 5555))
    c.greeting()
    c.quit()
    assert ("connect", "198.51.100.77") in srv.questions, srv.questions


def test_policy_server_sees_real_client_and_server(portier, sink, policy_server):  # noqa: F811
    """A Postfix policy server (policyd:p at connect) gets the header's source as
    client_address/client_port and its destination as server_address/server_port."""
    s = sink()
    srv = policy_server()
    p = start(portier, s.port, filters="policyd:p",
              extra=policyd_section(srv.socket, stages="connect"))
    c = peers.SmtpClient(p.pport)
    c.send(b"PROXY TCP4 192.0.2.99 198.51.100.25 40099 2525\r\n")
    c.greeting()
    c.quit()
    reqs = srv.requests()
    assert len(reqs) == 1, reqs
    r = reqs[0]
    assert (r["client_address"], r["client_port"]) == ("192.0.2.99", "40099"), r
    assert (r["server_address"], r["server_port"]) == ("198.51.100.25", "2525"), r


def test_auth_failures_count_real_client(tls_server, users_file, certs):  # noqa: F811
    """The AUTH failure counters go by the header's client, not the balancer: with
    max_failures = 1, 192.0.2.31 is blocked after one failure while 192.0.2.32, through the
    same balancer, still gets its own first try."""
    srv = tls_server(listeners={"sub": {"role": "submission", "tls": "starttls",
                                        "proxy_protocol": "yes", "proxy_trusted": "127.0.0.1",
                                        "reverse_lookup": "no"}},
                     auth={"passwd_file": users_file(), "max_failures": 1,
                           "failure_window": 600})
    p = srv.portier

    def session(client, expect):
        c = peers.SmtpClient(srv.sub)
        c.send(b"PROXY TCP4 %s 127.0.0.1 1000 587\r\n" % client.encode())
        c.greeting()
        c.ehlo()
        starttls(c, tls_context(certs))
        c.ehlo()
        c.sendline("AUTH PLAIN " + plain_b64(ALICE, "wrong"))
        replies, closed = c.replies_until_closed(5)
        assert [r.code for r in replies] == expect, replies
        c.close()

    session("192.0.2.31", [535, 421])
    assert p.wait_log(r"event=auth result=failed client=192\.0\.2\.31 failures=1 ")
    session("192.0.2.32", [535, 421])
    assert p.wait_log(r"event=auth result=failed client=192\.0\.2\.32 failures=1 ")
    session("192.0.2.31", [421])
    assert p.wait_log(r"event=auth result=blocked client=192\.0\.2\.31 failures=1$")


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

BAD = [
    ("no-header", b"EHLO client.test\r\n", "no PROXY header"),
    ("oversized-v1", b"PROXY TCP4 " + b"1" * 120, "v1: longer than 107 octets"),
    ("bare-lf", b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\n", "v1: line ends in a bare LF"),
    ("v1-wrong-family", b"PROXY TCP4 2001:db8::1 ::1 1 25\r\n",
     "v1: address family does not match the protocol"),
    ("v1-bad-port", b"PROXY TCP4 192.0.2.1 127.0.0.1 65536 25\r\n", "v1: bad port"),
    ("v1-udp", b"PROXY UDP4 192.0.2.1 127.0.0.1 1 25\r\n",
     "v1: protocol is not TCP4, TCP6 or UNKNOWN"),
    ("v2-bogus-length", SIG + b"\x21\x11\xff\xff" + b"\x00" * 64, "v2: length over 2048"),
    ("v2-short-length", v2(1, 0x11, b"\x7f\x00\x00\x01" * 2),
     "v2: length too short for the address family"),
    ("v2-v6-in-v4-length", v2(1, 0x21, b"\x00" * 12),
     "v2: length too short for the address family"),
    ("v2-bogus-family", v2(1, 0x51, b"\x00" * 12), "v2: unknown address family"),
    ("v2-datagram", v2(1, 0x12, b"\x00" * 12), "v2: transport is not STREAM"),
    ("v2-version", SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12, "v2: version is not 2"),
    ("v2-command", SIG + b"\x2f\x11\x00\x0c" + b"\x00" * 12,
     "v2: command is neither LOCAL nor PROXY"),
    ("sent-twice-v1", b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\r\n" * 2, "a second PROXY header"),
    ("sent-twice-v2", v2_tcp4("192.0.2.1", 1) * 2, "a second PROXY header"),
    ("v1-then-v2", b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\r\n" + v2_tcp4("192.0.2.1", 1),
     "a second PROXY header"),
]


@pytest.mark.parametrize("data,reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_header_refused(portier, sink, data, reason):
    """Each ends the connection at once, unanswered, with its reason; a plain session and a
    good PROXY session still work afterwards."""
    s = sink()
    p = start(portier, s.port)
    took = expect_refused(p, data, reason)
    assert took < 1.5, "refused at once, not at proxy_timeout (%.1fs)" % took
    plain_session_works(p)
    c = peers.SmtpClient(p.pport)
    c.send(b"PROXY TCP4 192.0.2.50 127.0.0.1 1 25\r\n")
    c.greeting()
    c.quit()


def test_truncated_then_closed(portier, sink):
    s = sink()
    p = start(portier, s.port)
    expect_refused(p, v2_tcp4("192.0.2.1", 1)[:20], "connection closed before a whole PROXY "
                   "header", close=True)
    expect_refused(p, b"PROXY TCP4 192.0.2.1", "connection closed before a whole PROXY header",
                   close=True)


@pytest.mark.parametrize("data", [b"", b"PROXY TCP4 192.0.2.1 ", v2_tcp4("192.0.2.1", 1)[:27]],
                         ids=["nothing", "truncated-v1", "truncated-v2"])
def test_timeout(portier, sink, data):
    """Nothing, or part of a header, within proxy_timeout (2 s here): closed, unanswered;
    meanwhile the plain listener and other PROXY sessions are served."""
    s = sink()
    p = start(portier, s.port)
    t0 = time.monotonic()
    mark = len(p.log_text())
    held = socket.create_connection(("127.0.0.1", p.pport), timeout=10)
    held.sendall(data)
    plain_session_works(p)
    c = peers.SmtpClient(p.pport)
    c.send(v2_tcp4("192.0.2.60", 6000))
    c.greeting()
    c.quit()
    held.settimeout(10)
    assert held.recv(4096) == b""
    took = time.monotonic() - t0
    held.close()
    assert 1.5 < took < 5, took
    assert p.wait_log(r'event=proxy_refused client=127\.0\.0\.1 listener=lb reason="no whole '
                      r'PROXY header within proxy_timeout"', after=mark), p.log_text()[mark:]


def test_untrusted_sender(portier, sink):
    """A connection from outside proxy_trusted (127.0.0.2) is closed at once, even with a
    good header."""
    s = sink()
    p = start(portier, s.port)
    took = expect_refused(p, v2_tcp4("192.0.2.1", 1), "sender not in proxy_trusted",
                          source="127.0.0.2")
    assert took < 1.5, took


# ---------------------------------------------------------------------------------------------
# a real HAProxy
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def haproxy(request):
    """haproxy(fronts) -> peers.HAProxy (fronts: [(backend ports, "send-proxy-v2"), ...])."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (apt-get install haproxy)")
    started = []
    tmp = peers.make_tempdir("haproxy")

    def start(fronts):
        h = peers.HAProxy(tmp, fronts)
        started.append(h)
        return h

    def fin():
        for h in started:
            h.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    request.addfinalizer(fin)
    return start


@pytest.mark.parametrize("version", ["2", "1"])
def test_haproxy(portier, sink, haproxy, version):
    """A client on 127.0.0.2 through haproxy (which connects from 127.0.0.1): portier logs
    client=127.0.0.2 proxy=127.0.0.1 and writes [127.0.0.2] into Received:."""
    s = sink()
    p = start(portier, s.port)
    h = haproxy([([p.pport], "send-proxy-v2" if version == "2" else "send-proxy")])
    front = h.ports[0]
    c = peers.SmtpClient(front, source="127.0.0.2")
    tag = peers.unique_id("hap")
    deliver(c, tag)
    assert p.wait_log(r"event=connect client=127\.0\.0\.2 listener=lb proxy=127\.0\.0\.1 "
                      r"proxy_version=%s proxy_kind=TCP4$" % version), p.log_text()
    addr, recv = received_addr(s, tag)
    assert addr == "127.0.0.2", recv
    assert any(t.get("client") == "127.0.0.2" for t in p.wait_txns(1)), p.txns()


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keys,key,want", [
    ({"proxy_protocol": "yes"}, "proxy_protocol",
     "needs proxy_trusted = the load balancers' networks"),
    ({"proxy_trusted": "10.0.0.0/8"}, "proxy_trusted",
     "does nothing without proxy_protocol = yes"),
    ({"proxy_protocol": "yes", "proxy_trusted": "10.0.0.0/8", "proxy_timeout": "0"},
     "proxy_timeout", ""),
    ({"proxy_protocol": "yes", "proxy_trusted": "10.0.0.0/33"}, "proxy_trusted",
     "\"10.0.0.0/33\" is not an address or network"),
])
def test_check_refuses(tmpdir_0755, keys, key, want):
    text = peers.portier_config(listener=keys)
    path = os.path.join(tmpdir_0755, "p.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert rc == 2, out
    assert "[listener mx] %s: %s" % (key, want) in out, out


def test_check_refuses_implicit_tls(tmpdir_0755):
    """PROXY before implicit TLS is not built: -t says so."""
    text = peers.portier_config(listener={"proxy_protocol": "yes", "proxy_trusted": "10.0.0.1",
                                          "tls": "implicit", "role": "mx"})
    path = os.path.join(tmpdir_0755, "p.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert rc == 2, out
    assert "[listener mx] proxy_protocol: not implemented yet" in out, out


def test_check_accepts(tmpdir_0755):
    text = peers.portier_config(listener={"proxy_protocol": "yes", "proxy_timeout": "30",
                                          "proxy_trusted": "127.0.0.1 10.0.0.0/8 fd00::/8"})
    path = os.path.join(tmpdir_0755, "p.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert rc == 0, out


def test_drain_closes_waiting_header(portier, sink):
    """SIGTERM: a connection still owing its header is closed unanswered at once, and portier
    exits 0 without waiting for proxy_timeout."""
    s = sink()
    p = start(portier, s.port)
    held = socket.create_connection(("127.0.0.1", p.pport), timeout=10)
    assert p.wait_log(r"event=connect client=127\.0\.0\.1 listener=mx") is not None
    time.sleep(0.2)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert held.recv(4096) == b""
    held.close()
    assert p.wait(10) == 0
    assert time.monotonic() - t0 < 1.5
    assert 'reason="shutting down"' in p.log_text(), p.log_text()

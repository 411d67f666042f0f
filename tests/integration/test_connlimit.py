"""Per-client and per-network concurrency limits of a listener (client_limit, network_limit,
network_prefix4/6, limit_exempt) and the greet pause's allow list (greet_pause_exempt).

Distinct clients connect from distinct loopback addresses (Linux routes all of 127/8 to lo:
127.0.0.2, 127.0.0.3, ...) or name themselves in PROXY headers written here.  The session over a
limit gets "421 4.7.0 Too many connections from [ADDR]" (or "... from your network") before any
reverse lookup or filter and is closed, logged event=client_limit / event=network_limit; the
slot comes back whatever ends a session (QUIT, the client dropping).  A flood of connections
from one address beyond its limit is refused at once while another client's session goes on."""
import os
import re
import time

import pytest

import peers
from test_proxy import lb_section, v2_tcp4

BANNER_WAIT = 5.0


def start(portier, listener=None, extra="", relay="smtp:127.0.0.1:9"):
    lst = {"reverse_lookup": "no"}
    lst.update(listener or {})
    return portier(peers.portier_config(relay, listener=lst, extra=extra))


def session(p, source, port=None):
    """A client from source that got the banner (220)."""
    c = peers.SmtpClient(port or p.port, source=source)
    c.greeting()
    return c


def refused(p, source, why, port=None, header=None, addr=None):
    """A client from source (or named by a PROXY header) that gets the 421 at once, then the
    close."""
    c = peers.SmtpClient(port or p.port, source=source)
    if header is not None:
        c.send(header)
    r = c.read_reply(timeout=BANNER_WAIT)
    want = ("Too many connections from [%s]" % (addr or source) if why == "client"
            else "Too many connections from your network")
    assert r.is_(421, "4.7.0") and r.texts()[0] == "4.7.0 " + want, r
    c.expect_closed()
    return c


def quit_(c):
    c.cmd("QUIT", expect="221")
    c.expect_closed()


def limit_lines(p, event, client):
    return [l for l in p.log_text().splitlines()
            if "event=%s " % event in l and " client=%s " % client in l]


def test_client_limit(portier):
    """The limit+1th session from one address gets 421 at once while another address is served;
    a slot comes back after QUIT and after the client just drops."""
    p = start(portier, {"client_limit": "2"})
    a1, a2 = session(p, "127.0.0.2"), session(p, "127.0.0.2")
    refused(p, "127.0.0.2", "client")
    b = session(p, "127.0.0.3")
    b.ehlo()
    assert p.wait_log(r"event=client_limit client=127\.0\.0\.2 count=2 limit=2$")
    quit_(a1)
    a3 = session(p, "127.0.0.2")
    refused(p, "127.0.0.2", "client")
    # The client drops without QUIT: its slot comes back once portier sees the EOF.
    mark = len(p.log_text())
    a2.sock.close()
    assert p.wait_log(r"event=disconnect client=127\.0\.0\.2 ", after=mark)
    a4 = session(p, "127.0.0.2")
    refused(p, "127.0.0.2", "client")
    for c in (a3, a4, b):
        quit_(c)
    quit_(session(p, "127.0.0.2"))
    quit_(session(p, "127.0.0.2"))


def test_refused_before_dns(portier):
    """The refusal comes before the reverse lookup: with a resolver that never answers, the
    counted sessions wait for their lookup while the refused one gets its 421 at once, and no
    event=rdns line names it."""
    dead = peers.free_port()
    p = portier(peers.portier_config(
        server={"resolver": "127.0.0.1@%d" % dead, "resolver_timeout": "3"},
        listener={"client_limit": "1", "reverse_lookup": "yes"}))
    a = session(p, "127.0.0.2")
    assert p.wait_log(r"event=rdns client=127\.0\.0\.2 ")
    t0 = time.monotonic()
    refused(p, "127.0.0.2", "client")
    assert time.monotonic() - t0 < 1.5, "the refusal waited for the lookup"
    m = p.wait_log(r"id=(\S+) event=client_limit client=127\.0\.0\.2 count=1 limit=1$")
    assert m
    assert not re.search(r"id=%s event=(rdns|connect_refused)" % re.escape(m.group(1)),
                         p.log_text())
    quit_(a)


@pytest.mark.parametrize("prefix,third", [("24", "refused"), ("32", "served")])
def test_network_limit(portier, prefix, third):
    """network_limit counts 127.0.0.2 and 127.0.0.3 together in a /24, apart in a /32."""
    p = start(portier, {"network_limit": "2", "network_prefix4": prefix})
    held = [session(p, "127.0.0.2"), session(p, "127.0.0.3")]
    if third == "refused":
        refused(p, "127.0.0.4", "network")
        assert p.wait_log(r"event=network_limit client=127\.0\.0\.4 count=2 limit=2$")
    else:
        held.append(session(p, "127.0.0.4"))
        held.append(session(p, "127.0.0.2"))
        refused(p, "127.0.0.2", "network")
        assert p.wait_log(r"event=network_limit client=127\.0\.0\.2 count=2 limit=2$")
    quit_(held.pop(0))
    held.append(session(p, "127.0.0.2"))
    for c in held:
        quit_(c)


def test_client_and_network_limits(portier):
    """Both limits at once: an address at its own limit is refused as a client; a new address
    of a full network as the network."""
    p = start(portier, {"client_limit": "1", "network_limit": "2"})
    held = [session(p, "127.0.0.2")]
    refused(p, "127.0.0.2", "client")
    held.append(session(p, "127.0.0.3"))
    refused(p, "127.0.0.4", "network")
    for c in held:
        quit_(c)


def test_limit_exempt(portier):
    """limit_exempt clients are never limited (nor counted); others are."""
    p = start(portier, {"client_limit": "1", "network_limit": "1",
                        "limit_exempt": "127.0.0.2 10.0.0.0/8"})
    held = [session(p, "127.0.0.2") for _ in range(4)]
    held.append(session(p, "127.0.0.3"))
    refused(p, "127.0.0.3", "client")
    refused(p, "127.0.0.4", "network")
    held.append(session(p, "127.0.0.2"))
    for c in held:
        quit_(c)


def test_proxy_client_counts(portier):
    """Behind PROXY the header's client counts, not the balancer: two headers naming 192.0.2.7
    from one balancer address hold its limit, 192.0.2.8 is served, and the 421 names the real
    client."""
    pport = peers.free_port()
    extra = lb_section(lb={"client_limit": "1"})
    p = portier(peers.portier_config(listener={"reverse_lookup": "no"}, extra=extra),
                ports={"pport": pport})
    c1 = peers.SmtpClient(pport)
    c1.send(v2_tcp4("192.0.2.7", 4000))
    c1.greeting()
    refused(p, None, "client", port=pport, header=v2_tcp4("192.0.2.7", 4001), addr="192.0.2.7")
    c2 = peers.SmtpClient(pport)
    c2.send(b"PROXY TCP4 192.0.2.8 127.0.0.1 4002 25\r\n")
    c2.greeting()
    assert p.wait_log(r"event=client_limit client=192\.0\.2\.7 count=1 limit=1$")
    quit_(c1)
    c3 = peers.SmtpClient(pport)
    c3.send(v2_tcp4("192.0.2.7", 4003))
    c3.greeting()
    quit_(c2)
    quit_(c3)


def test_flood(portier, sink):
    """200 connections from one address beyond its limit each get the 421 at once while another
    client's session, begun before, delivers a message; then every slot is back."""
    s = sink()
    p = start(portier, {"client_limit": "2"}, relay="smtp:127.0.0.1:%d" % s.port)
    held = [session(p, "127.0.0.2"), session(p, "127.0.0.2")]
    other = session(p, "127.0.0.3")
    other.ehlo()
    t0 = time.monotonic()
    flood = []
    for _ in range(200):
        c = peers.SmtpClient(p.port, source="127.0.0.2")
        flood.append(c)
    # While the flood's replies are still unread, the other session is served.
    tag = peers.unique_id("flood")
    other.transaction("sender@origin.test", ["alice@example.test"],
                      peers.make_message(subject=tag, body_lines=[tag]))
    for c in flood:
        r = c.read_reply(timeout=BANNER_WAIT)
        assert r.is_(421, "4.7.0"), r
        c.expect_closed()
        c.sock.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 20, elapsed
    # A line a second at most, not one per refusal.
    lines = limit_lines(p, "client_limit", "127.0.0.2")
    assert 1 <= len(lines) <= elapsed + 1, "%d lines in %.1fs" % (len(lines), elapsed)
    assert any(tag.encode() in m.raw for m in s.wait_messages(1))
    quit_(other)
    for c in held:
        quit_(c)
    held = [session(p, "127.0.0.2"), session(p, "127.0.0.2")]
    for c in held:
        quit_(c)


def test_flood_log_summary(portier):
    """Refusals of one address are logged once a second: the first, then the first after a
    quiet second with suppressed= counting those left out, so that the lines still add up to
    every refusal; another address has its own line."""
    p = start(portier, {"client_limit": "1"})
    held = [session(p, "127.0.0.2"), session(p, "127.0.0.3")]
    t0 = time.monotonic()
    for _ in range(30):
        refused(p, "127.0.0.2", "client")
    refused(p, "127.0.0.3", "client")
    time.sleep(1.2)
    refused(p, "127.0.0.2", "client")
    elapsed = time.monotonic() - t0
    assert p.wait_log(r"event=client_limit client=127\.0\.0\.2 count=1 limit=1 suppressed=\d+$")
    lines = limit_lines(p, "client_limit", "127.0.0.2")
    assert lines[0].endswith(" count=1 limit=1"), lines
    assert 2 <= len(lines) <= elapsed + 2, "%d lines in %.1fs" % (len(lines), elapsed)
    told = sum(1 + int(re.search(r"(?: suppressed=(\d+))?$", l).group(1) or 0) for l in lines)
    assert told == 31, lines
    assert len(limit_lines(p, "client_limit", "127.0.0.3")) == 1
    for c in held:
        quit_(c)
    # A refusal left out writes no connect or disconnect line either: the held session's
    # and the logged refusals' only.
    for event in ("connect", "disconnect"):
        peers.wait_until(lambda: len(limit_lines(p, event, "127.0.0.2")) > len(lines), 5)
        said = limit_lines(p, event, "127.0.0.2")
        assert len(said) == 1 + len(lines), (event, said)


def test_greet_pause_exempt(portier):
    """greet_pause_exempt clients get the banner at once; others wait for the pause and are
    refused if they talk before it."""
    p = start(portier, {"greet_pause": "2", "greet_pause_exempt": "127.0.0.2 fd00::/8"})
    t0 = time.monotonic()
    a = session(p, "127.0.0.2")
    assert time.monotonic() - t0 < 1.5
    a.ehlo()
    quit_(a)
    b = peers.SmtpClient(p.port, source="127.0.0.3")
    t0 = time.monotonic()
    b.greeting()
    assert time.monotonic() - t0 >= 1.8
    quit_(b)
    c = peers.SmtpClient(p.port, source="127.0.0.4")
    c.sendline("EHLO early.test")
    r = c.read_reply(timeout=BANNER_WAIT)
    assert r.is_(554, "5.5.1"), r
    # An exempt client is greeted at once, so talking right after the banner is fine.
    d = session(p, "127.0.0.2")
    d.ehlo()
    quit_(d)


def run_check(tmpdir, text):
    """`portier -t` on config text: (exit status, output)."""
    path = os.path.join(tmpdir, "p.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(peers.free_port())))
    return peers.run_portier_check(path)


def test_greet_pause_exempt_proxy(portier):
    """Behind PROXY the header's client is matched against greet_pause_exempt, not the
    balancer."""
    pport = peers.free_port()
    extra = lb_section(lb={"greet_pause": "2", "greet_pause_exempt": "192.0.2.7"})
    portier(peers.portier_config(listener={"reverse_lookup": "no"}, extra=extra),
            ports={"pport": pport})
    a = peers.SmtpClient(pport)
    t0 = time.monotonic()
    a.send(v2_tcp4("192.0.2.7", 4000))
    a.greeting()
    assert time.monotonic() - t0 < 1.5
    b = peers.SmtpClient(pport)
    b.send(v2_tcp4("192.0.2.8", 4001))
    b.sendline("EHLO early.test")
    r = b.read_reply(timeout=BANNER_WAIT)
    assert r.is_(554, "5.5.1"), r
    quit_(a)


@pytest.mark.parametrize("keys,key,want", [
    ({"client_limit": "-1"}, "client_limit", ""),
    ({"client_limit": "many"}, "client_limit", ""),
    ({"network_limit": "1000001"}, "network_limit", ""),
    ({"network_prefix4": "33"}, "network_prefix4", ""),
    ({"network_prefix4": "7"}, "network_prefix4", ""),
    ({"network_prefix6": "129"}, "network_prefix6", ""),
    ({"limit_exempt": "10.0.0.0/33"}, "limit_exempt",
     "\"10.0.0.0/33\" is not an address or network"),
    ({"limit_exempt": "example.test"}, "limit_exempt",
     "\"example.test\" is not an address or network"),
    ({"greet_pause_exempt": "::1/129"}, "greet_pause_exempt",
     "\"::1/129\" is not an address or network"),
])
def test_check_refuses(tmpdir_0755, keys, key, want):
    rc, out = run_check(tmpdir_0755, peers.portier_config(listener=keys))
    assert rc == 2, out
    assert "[listener mx] %s: %s" % (key, want) in out, out


def test_check_accepts(tmpdir_0755):
    rc, out = run_check(tmpdir_0755, peers.portier_config(listener={
        "client_limit": "10", "network_limit": "50", "network_prefix4": "16",
        "network_prefix6": "48", "limit_exempt": "127.0.0.1 10.0.0.0/8 fd00::/8",
        "greet_pause": "3", "greet_pause_exempt": "192.0.2.0/24 2001:db8::/32"}))
    assert rc == 0, out

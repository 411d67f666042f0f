"""The resolver (smtpd/resolver.c over libunbound) and the client's reverse name at connect
(smtpd/rdns.c), against a private unbound with test zones (peers.Unbound).

Clients connect from other loopback addresses (127.0.0.2...), whose reverse names the test
unbound serves (127.0.0.1 is libunbound's built-in "localhost").  The name shows in the
Received: line and the event=rdns log line; a PTR that does not map back gives "unknown"
(Postfix's rule); a DNS server that stalls holds the session at most resolver_timeout, and
the loop serves other clients meanwhile; client EOF, SIGTERM and SIGHUP during the lookup end
or finish the session cleanly (the portier fixture fails a test on any sanitizer report).
"""
import re
import signal
import time

import pytest

import peers
from peers import make_message

ZONES = [
    'local-zone: "client.test." static',
    'local-data: "good.client.test. 300 IN A 127.0.0.2"',
    'local-data: "liar.client.test. 300 IN A 192.0.2.1"',
    'local-zone: "2.0.0.127.in-addr.arpa." static',
    'local-data: "2.0.0.127.in-addr.arpa. 300 IN PTR good.client.test."',
    'local-zone: "3.0.0.127.in-addr.arpa." static',
    'local-data: "3.0.0.127.in-addr.arpa. 300 IN PTR liar.client.test."',
]
STALL = ["4.0.0.127.in-addr.arpa."]     # a client on 127.0.0.4: its PTR is never answered
TIMEOUT = 2


def dns_pair(make_pair, dns, **server):
    srv = {"resolver": dns.servers, "resolver_timeout": str(TIMEOUT), "workers": "1"}
    srv.update(server)
    return make_pair(server=srv)


def received_name(s, n=1):
    msgs = s.wait_messages(n)
    assert len(msgs) >= n, msgs
    rcvd = msgs[n - 1].portier_received()
    assert rcvd, msgs[n - 1].headers
    m = peers.PORTIER_RECEIVED_RE.match(rcvd[0])
    assert m, rcvd[0]
    return m.group("name"), m.group("addr")


def send_one(c):
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c.quit()


@pytest.mark.parametrize("addr,name,ptr,result", [
    # 127.0.0.2's PTR good.client.test maps back to it: that is the client's name
    ("127.0.0.2", "good.client.test", "good.client.test", "verified"),
    # 127.0.0.3's PTR liar.client.test points elsewhere: "unknown", the PTR is logged
    ("127.0.0.3", "unknown", "liar.client.test", "unverified"),
])
def test_name_in_received_and_log(make_pair, unbound, client, addr, name, ptr, result):
    """The client's name in the Received: line and the event=rdns line."""
    dns = unbound(zones=ZONES)
    p, s = dns_pair(make_pair, dns)
    send_one(client(p.port, source=addr))
    assert received_name(s) == (name, addr)
    m = p.wait_log(r"event=rdns client=%s .*" % re.escape(addr))
    assert m, p.log_text()
    f = peers.parse_log_fields(m.group(0))
    assert (f["name"], f["ptr"], f["result"]) == (name, ptr, result), m.group(0)


@pytest.mark.parametrize("addr,result", [("127.0.0.5", "none"), ("127.0.0.6", "tempfail")])
def test_no_ptr_and_servfail_are_unknown(make_pair, unbound, client, addr, result):
    """No PTR (127.0.0.5: NXDOMAIN) or a SERVFAIL (127.0.0.6): "unknown", at once."""
    dns = unbound(zones=ZONES, servfail=["6.0.0.127.in-addr.arpa."])
    p, s = dns_pair(make_pair, dns)
    t0 = time.monotonic()
    send_one(client(p.port, source=addr))
    assert time.monotonic() - t0 < TIMEOUT
    assert received_name(s) == ("unknown", addr)
    m = p.wait_log(r"event=rdns client=%s .*" % re.escape(addr))
    assert m and "ptr=none result=%s " % result in m.group(0), p.log_text()


def test_reverse_lookup_off(make_pair, unbound, client):
    """reverse_lookup = no: no lookup, "unknown"."""
    dns = unbound(zones=ZONES)
    p, s = make_pair(server={"resolver": dns.servers}, listener={"reverse_lookup": "no"})
    send_one(client(p.port, source="127.0.0.2"))
    assert received_name(s) == ("unknown", "127.0.0.2")
    assert "event=rdns" not in p.log_text()


def test_stalled_dns_bounded_and_loop_keeps_serving(make_pair, unbound, client):
    """A DNS server that never answers: the banner comes after about resolver_timeout, the name
    is "unknown" (result=timeout), and meanwhile another client's mail on the same (only) loop
    goes through: no loop thread waits on DNS."""
    dns = unbound(zones=ZONES, stall=STALL)
    p, s = dns_pair(make_pair, dns)
    t0 = time.monotonic()
    slow = client(p.port, source="127.0.0.4")
    time.sleep(0.2)
    fast = client(p.port, source="127.0.0.2")
    send_one(fast)
    assert time.monotonic() - t0 < TIMEOUT - 0.5, "the other client waited for the stalled lookup"
    assert len(s.wait_messages(1)) == 1
    assert slow.greeting().code == 220
    waited = time.monotonic() - t0
    assert TIMEOUT - 0.3 <= waited < TIMEOUT + 1.5, waited
    slow.ehlo()
    slow.transaction("sender@origin.test", ["alice@example.test"], make_message())
    slow.quit()
    names = sorted(m.portier_received()[0] for m in s.wait_messages(2))
    assert len(names) == 2 and "(good.client.test [127.0.0.2])" in names[0] + names[1], names
    assert any("(unknown [127.0.0.4])" in n for n in names), names
    m = p.wait_log(r"event=rdns client=127\.0\.0\.4 .*")
    assert m and "result=timeout" in m.group(0), p.log_text()


def test_client_eof_during_lookup(make_pair, unbound, client):
    """The client leaves while its lookup stalls: the lookup is cancelled (no event=rdns line
    ever comes for it), nothing crashes, and the next client is served."""
    dns = unbound(zones=ZONES, stall=STALL)
    p, s = dns_pair(make_pair, dns)
    c = client(p.port, source="127.0.0.4")
    time.sleep(0.3)
    c.close()
    assert p.wait_log(r"event=disconnect client=127\.0\.0\.4"), p.log_text()
    time.sleep(TIMEOUT + 0.5)
    assert "event=rdns client=127.0.0.4" not in p.log_text()
    send_one(client(p.port, source="127.0.0.2"))
    assert received_name(s) == ("good.client.test", "127.0.0.2")


def test_client_talks_during_lookup(make_pair, unbound, client):
    """A client that talks before the banner while its lookup stalls is refused as one that
    talks during a greet pause (554 5.5.1), the lookup cancelled with the session."""
    dns = unbound(zones=ZONES, stall=STALL)
    p, s = dns_pair(make_pair, dns)
    c = client(p.port, source="127.0.0.4")
    time.sleep(0.3)
    c.sendline("EHLO early.test")
    replies, closed = c.replies_until_closed(timeout=TIMEOUT + 3)
    assert closed and [str(r.code) + " " + r.enhanced for r in replies] == ["554 5.5.1"], replies
    time.sleep(TIMEOUT + 0.5)
    assert "event=rdns client=127.0.0.4" not in p.log_text()


def test_sigterm_during_lookup(make_pair, unbound, client):
    """SIGTERM while the lookup stalls: the session gets 421 (no banner, nothing after it) and
    portier exits 0."""
    dns = unbound(zones=ZONES, stall=STALL)
    p, s = dns_pair(make_pair, dns, drain_timeout="1")
    c = client(p.port, source="127.0.0.4")
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    replies, closed = c.replies_until_closed(timeout=TIMEOUT + 3)
    assert closed and [r.code for r in replies] == [421], replies
    assert p.wait(10) == 0


def test_sighup_during_lookup(make_pair, unbound, client):
    """SIGHUP with another resolver while a lookup stalls: the query in flight finishes on the
    old context (timeout, "unknown"), the next session uses the new one."""
    dns = unbound(zones=ZONES, stall=STALL)
    dns2 = unbound(zones=[z.replace("good.client.test", "other.client.test") for z in ZONES] +
                   ['local-data: "other.client.test. 300 IN A 127.0.0.2"'])
    p, s = dns_pair(make_pair, dns)
    c = client(p.port, source="127.0.0.4")
    time.sleep(0.3)
    p.reload(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={
        "resolver": dns2.servers, "resolver_timeout": str(TIMEOUT), "workers": "1"}))
    assert p.wait_log(r"event=reload result=ok"), p.log_text()  # reload() may already wait
    send_one(client(p.port, source="127.0.0.2"))
    assert received_name(s) == ("other.client.test", "127.0.0.2")
    assert c.greeting().code == 220
    c.ehlo()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c.quit()
    assert any("(unknown [127.0.0.4])" in m.portier_received()[0] for m in s.wait_messages(2))
    m = p.wait_log(r"event=rdns client=127\.0\.0\.4 .*")
    assert m and "result=timeout" in m.group(0), p.log_text()


def test_check_reports_bad_trust_anchor(tmpdir_0755):
    """-t names the file and line of a resolver key it cannot use."""
    import os
    anchor = os.path.join(tmpdir_0755, "root.key")
    with open(anchor, "w") as f:
        f.write(". IN DS not a DS record\n")
    conf = os.path.join(tmpdir_0755, "portier.conf")
    with open(conf, "w") as f:
        f.write(peers.portier_config(server={"resolver_trust_anchor": anchor})
                .replace("{port}", "2525"))
    rc, out = peers.run_portier_check(conf)
    assert rc != 0, out
    assert "resolver_trust_anchor" in out and "root.key" in out and conf + ":" in out, out
    with open(conf, "w") as f:
        f.write(peers.portier_config(server={"resolver_trust_anchor": anchor + ".missing"})
                .replace("{port}", "2525"))
    rc, out = peers.run_portier_check(conf)
    assert rc != 0 and "root.key.missing" in out and "cannot read" in out, out


def test_loopback_client_is_localhost_without_asking(make_pair, client):
    """127.0.0.1 is "localhost" by the resolver's own local data (the session takes it without
    a round trip through libunbound's thread): even a resolver that never answers (a port where
    nothing listens, a long resolver_timeout) does not delay the banner, and the name is in
    Received: and the event=rdns line."""
    p, s = make_pair(server={"resolver": "127.0.0.1@%d" % peers.free_port(),
                             "resolver_timeout": "20", "workers": "1"})
    t0 = time.monotonic()
    c = client(p.port)
    assert c.greeting().code == 220
    assert time.monotonic() - t0 < 2.0
    c.ehlo()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c.quit()
    assert received_name(s) == ("localhost", "127.0.0.1")
    m = p.wait_log(r"event=rdns client=127\.0\.0\.1 .*")
    assert m and "name=localhost ptr=localhost result=verified" in m.group(0), p.log_text()

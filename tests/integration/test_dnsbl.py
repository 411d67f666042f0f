"""The dnsbl filter (filters/dnsbl.c): postscreen-style scoring of the client address at
CONNECT against DNS block and allow lists served by a private unbound (peers.Unbound).

The clients come from 127.0.0.1 (and 127.0.0.2, ::1), so the zone data lists
1.0.0.127.<zone>.  Through the wire: a listed client refused with 554 5.7.1 naming the list,
weights and threshold, an allow list cancelling a listing, a return-code filter that does not
match, answers outside 127/8 and the 127.255.255.254 refusal code (errors, never listings),
NXDOMAIN and SERVFAIL, a zone that never answers (ignored at resolver_timeout while another
client is served at once), the client leaving during the lookup, IPv6 reversed nibbles, and
-t refusing bad keys.  The portier fixture fails a test on any sanitizer report.
"""
import os
import re
import time

import pytest

import peers
from peers import make_message
from test_edges import ipv6_loopback_problem

TIMEOUT = 1                                     # resolver_timeout
V6_ONE = ".".join("1" + "0" * 31)               # ::1 reversed: 1.0.0. ... .0

# two zones of 187 octets: only the first fits in the reply (400) after its 53 octets of text
LONG = [".".join([c * 60] * 3) + ".test" for c in "xy"]

STATIC = LONG + ["bl.test", "one.test", "two.test", "wl.test", "code.test", "outside.test",
          "refused.test", "clean.test", "slow.test", "v6.test"]


def a(name, addr):
    return "local-data: '%s. 300 IN A %s'" % (name, addr)


ZONES = ['local-zone: "%s." static' % z for z in STATIC] + [
    a("1.0.0.127.bl.test", "127.0.0.2"),
    a("1.0.0.127.one.test", "127.0.0.2"),
    a("1.0.0.127.two.test", "127.0.0.3"),
    a("1.0.0.127.wl.test", "127.0.5.2"),
    a("1.0.0.127.code.test", "127.0.0.20"),
    a("1.0.0.127.outside.test", "10.9.8.7"),
    a("1.0.0.127.refused.test", "127.255.255.254"),
    a("%s.v6.test" % V6_ONE, "127.0.0.4"),
] + [a("1.0.0.127." + z, "127.0.0.2") for z in LONG]
# 1.0.0.127.slow.test never answers (127.0.0.2's name does: NXDOMAIN)
STALL = ["1.0.0.127.slow.test."]


def start(make_pair, unbound, zones, threshold=None, listen=None, extra_keys="",
          resolver_timeout=TIMEOUT, probe=r"event=dnsbl client=127\.0\.0\.1 "):
    """A portier whose mx listener runs dnsbl with `zones`; returns (portier, sink, mark), mark
    the log offset after the readiness probe's own session logged `probe`."""
    dns = unbound(zones=ZONES, stall=STALL)
    srv = {"resolver": dns.servers, "resolver_timeout": str(resolver_timeout), "workers": "1"}
    lst = {"filters": "dnsbl"}
    if listen:
        lst["listen"] = listen
    section = "[filter dnsbl]\nzones = %s\n" % zones
    if threshold is not None:
        section += "threshold = %d\n" % threshold
    section += extra_keys
    p, s = make_pair(server=srv, listener=lst, extra=section)
    assert p.wait_log(probe), p.log_text()
    return p, s, len(p.log_text())


def decision(p, mark, client="127.0.0.1", timeout=5.0):
    """The fields of the next event=dnsbl line for client after mark."""
    m = p.wait_log(r"event=dnsbl client=%s .*$" % re.escape(client), timeout=timeout,
                   after=mark)
    assert m, p.log_text()[mark:]
    return peers.parse_log_fields(m.group(0))


def decided(p, mark, score, listed, action, client="127.0.0.1"):
    """The next decision for client after mark has these fields."""
    d = decision(p, mark, client)
    assert (d["score"], d["listed"], d["action"]) == (score, listed, action), d
    return d


def refused(p, source=None, host="127.0.0.1", code=554, enhanced="5.7.1"):
    """Connect: the 554 5.7.1 greeting (or code, enhanced), then the connection closes."""
    c = peers.SmtpClient(p.port, host=host, source=source)
    try:
        r = c.read_reply()
        assert r.is_(code, enhanced), r.text
        with pytest.raises(peers.ConnectionClosed):
            c.read_reply(timeout=3)
    finally:
        c.close()
    return r


def delivered(p, s, source=None):
    """Connect and send one message: it is delivered."""
    c = peers.SmtpClient(p.port, source=source)
    try:
        c.start()
        c.transaction("a@sender.test", ["alice@example.test"], make_message(), expect="250")
        c.quit()
    finally:
        c.close()
    assert len(s.wait_messages(1)) >= 1


def test_listed_refused(make_pair, unbound):
    """127.0.0.1 listed by bl.test (127.0.0.2): 554 5.7.1 naming the client and the list."""
    p, s, mark = start(make_pair, unbound, "bl.test")
    r = refused(p)
    assert r.text == "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test", \
        r.text
    d = decision(p, mark)
    assert (d["score"], d["threshold"], d["listed"], d["action"]) == \
        ("1", "1", "bl.test", "reject"), d
    assert p.wait_log(r"event=connect_refused filter=dnsbl", after=mark)
    s.assert_nothing(portier=p, txns=0)


def test_not_listed_passes(make_pair, unbound):
    """NXDOMAIN from every list: score 0, the banner, the mail goes through."""
    p, s, mark = start(make_pair, unbound, "clean.test bl.test")
    delivered(p, s, source="127.0.0.2")
    decided(p, mark, "0", "", "pass", client="127.0.0.2")
    assert "dnsbl_error" not in p.log_text()[mark:]


SCORES = [
    # zones, threshold, score, listed, the zones the 554 names (None: passes)
    ("one.test two.test clean.test", 2, "2", "one.test,two.test", "one.test, two.test"),
    ("one.test clean.test", 2, "1", "one.test", None),
    ("one.test*2", 2, "2", "one.test", "one.test"),
    # an allow list whose =filter matches 127.0.5.2 cancels the listing; one that does not match
    # cancels nothing
    ("bl.test*2 wl.test=127.0.[0..255].2*-2", None, "0", "bl.test,wl.test", None),
    ("bl.test*2 wl.test=127.0.0.[2..11]*-2", None, "2", "bl.test", "bl.test"),
    # code.test answers 127.0.0.20
    ("code.test=127.0.0.[2..11]", None, "0", "", None),
    ("code.test=127.0.0.[12;20..30]", None, "1", "code.test", "code.test"),
]


@pytest.mark.parametrize("zones,threshold,score,listed,blocked", SCORES,
                         ids=["two-lists", "one-list", "weight", "allow-list",
                              "allow-list-unmatched", "code-unmatched", "code-matched"])
def test_scores(make_pair, unbound, zones, threshold, score, listed, blocked):
    """Weights (two lists of weight 1 with threshold 2 refuse, one passes), allow lists of
    negative weight, return-code filters: the score, the log line and the verdict."""
    p, s, mark = start(make_pair, unbound, zones, threshold=threshold)
    if blocked:
        r = refused(p)
        assert r.text == "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using " + \
            blocked, r.text
    else:
        delivered(p, s)
    decided(p, mark, score, listed, "reject" if blocked else "pass")


def test_reply_names_what_fits(make_pair, unbound):
    """The reply names the zones that fit in it (whole), the log line every one."""
    p, s, mark = start(make_pair, unbound, "\n  ".join(LONG))
    r = refused(p)
    assert r.text == "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using " + \
        LONG[0], r.text
    d = decision(p, mark)
    assert (d["score"], d["listed"]) == ("2", ",".join(LONG)), d


@pytest.mark.parametrize("zone,answer", [("outside.test", "10.9.8.7"),
                                         ("refused.test", "127.255.255.254")])
def test_error_answers_never_list(make_pair, unbound, zone, answer):
    """An answer outside 127/8, or the 'query refused' code 127.255.255.254, is an error
    (event=dnsbl_error zone= answer=), never a listing, even with threshold 1."""
    p, s, mark = start(make_pair, unbound, zone)
    delivered(p, s)
    decided(p, mark, "0", "", "pass")
    m = p.wait_log(r"event=dnsbl_error client=127\.0\.0\.1 zone=%s answer=%s$" %
                   (re.escape(zone), re.escape(answer)), after=mark)
    assert m, p.log_text()[mark:]


def test_error_zone_does_not_hide_others(make_pair, unbound):
    """An erroneous list does not count, the others still do: refused by bl.test."""
    p, s, mark = start(make_pair, unbound, "refused.test*5 outside.test*5 bl.test")
    r = refused(p)
    assert r.text.endswith("blocked using bl.test"), r.text
    assert decision(p, mark)["score"] == "1"


def test_servfail_ignored(make_pair, unbound):
    """SERVFAIL: that zone does not count (logged with its status), the decision is made."""
    p, s, mark = start(make_pair, unbound, "servfail.test one.test", threshold=2)
    delivered(p, s)
    decided(p, mark, "1", "one.test", "pass")
    assert p.wait_log(r"event=dnsbl_error client=127\.0\.0\.1 zone=servfail\.test "
                      r"status=servfail$", after=mark), p.log_text()[mark:]


@pytest.mark.parametrize("zones,threshold,code,text", [
    # the failed list could have reached the threshold: 421
    ("servfail.test*2 one.test", 2, 421, "421 4.4.3 Service temporarily unavailable; "
     "client [127.0.0.1] could not be checked against servfail.test"),
    # a failed allow list could have saved a listed client: 421
    ("servfail.test*-5 bl.test", 1, 421, None),
    # listed enough whatever the failed list says: 554
    ("servfail.test one.test*2", 2, 554, "554 5.7.1 Service unavailable; "
     "client [127.0.0.1] blocked using one.test"),
])
def test_temperror_tempfail(make_pair, unbound, zones, threshold, code, text):
    """temperror = tempfail: a zone that failed (SERVFAIL) and could have changed the decision
    makes it 421 4.4.3 naming that zone; one that could not leaves the decision as it is."""
    p, s, mark = start(make_pair, unbound, zones, threshold=threshold,
                       extra_keys="temperror = tempfail\n")
    r = refused(p, code=code, enhanced="4.4.3" if code == 421 else "5.7.1")
    if text:
        assert r.text == text, r.text
    assert decision(p, mark)["action"] == ("tempfail" if code == 421 else "reject")


def test_temperror_tempfail_certain_pass(make_pair, unbound):
    """temperror = tempfail, but the failed zone could not reach the threshold: pass."""
    p, s, mark = start(make_pair, unbound, "servfail.test clean.test", threshold=2,
                       extra_keys="temperror = tempfail\n")
    delivered(p, s)
    decided(p, mark, "0", "", "pass")


def test_stalled_zone(make_pair, unbound):
    """slow.test never answers for 127.0.0.1: its lookup ends at resolver_timeout and is
    ignored, bl.test's listing refuses it; meanwhile 127.0.0.2 (whose names answer) is greeted
    at once on the same (only) loop."""
    p, s, mark = start(make_pair, unbound, "slow.test bl.test")
    slow = peers.SmtpClient(p.port)
    try:
        t0 = time.monotonic()
        time.sleep(0.1)
        fast = peers.SmtpClient(p.port, source="127.0.0.2")
        try:
            r = fast.read_reply(timeout=TIMEOUT)
            assert r.code == 220, r.text
            assert time.monotonic() - t0 < TIMEOUT * 0.8, "the other client waited"
            fast.quit()
        finally:
            fast.close()
        r = slow.read_reply(timeout=TIMEOUT + 3)
        waited = time.monotonic() - t0
        assert r.is_(554, "5.7.1") and r.text.endswith("blocked using bl.test"), r.text
        assert TIMEOUT - 0.2 <= waited < TIMEOUT + 2, waited
    finally:
        slow.close()
    decided(p, mark, "1", "bl.test", "reject")
    assert p.wait_log(r"event=dnsbl_error client=127\.0\.0\.1 zone=slow\.test status=timeout$",
                      after=mark), p.log_text()[mark:]
    d2 = decision(p, mark, "127.0.0.2")
    assert (d2["score"], d2["action"]) == ("0", "pass"), d2


def test_client_leaves_during_lookup(make_pair, unbound):
    """The client closes while drop.test stalls: the lookups are cancelled (no decision is
    logged for it), nothing crashes (ASan), and the next client is served."""
    p, s, mark = start(make_pair, unbound, "drop.test bl.test")
    c = peers.SmtpClient(p.port)
    time.sleep(0.2)
    c.close()
    assert p.wait_log(r"event=disconnect", after=mark), p.log_text()[mark:]
    time.sleep(TIMEOUT + 0.5)
    assert "event=dnsbl " not in p.log_text()[mark:], p.log_text()[mark:]
    delivered(p, s, source="127.0.0.2")
    assert decision(p, mark, "127.0.0.2")["action"] == "pass"


def test_chain_timeout_first(make_pair, unbound):
    """The filter's timeout (1 s) passes before resolver_timeout (3 s): the chain stops
    waiting, the queries are cancelled (no decision logged, ASan clean) and default_action
    (accept here) applies: the client is greeted."""
    p, s, mark = start(make_pair, unbound, "drop.test bl.test", resolver_timeout=3,
                       extra_keys="timeout = 1\ndefault_action = accept\n",
                       probe=r"event=filter_timeout filter=dnsbl stage=connect")
    t0 = time.monotonic()
    delivered(p, s, source="127.0.0.2")
    assert 0.8 <= time.monotonic() - t0 < 2.5
    assert p.wait_log(r"event=filter_timeout filter=dnsbl stage=connect .*action=accept",
                      after=mark), p.log_text()[mark:]
    time.sleep(2.5)                             # past resolver_timeout: nothing comes late
    assert "event=dnsbl" not in p.log_text(), p.log_text()


def test_ipv6_nibbles(make_pair, unbound):
    """A client over ::1 is looked up by its 32 reversed nibbles: listed by v6.test."""
    why = ipv6_loopback_problem()
    if why:
        pytest.skip(why)
    p, s, mark = start(make_pair, unbound, "v6.test",
                       listen="127.0.0.1:{port} [::1]:{port}")
    r = refused(p, host="::1")
    assert r.text == "554 5.7.1 Service unavailable; client [::1] blocked using v6.test", r.text
    decided(p, mark, "1", "v6.test", "reject", client="::1")


@pytest.mark.parametrize("section,why", [
    ("", "zones"),
    ("zones =\n", "zones"),
    ("zones = ,\n", "zones (line"),
    ("zones = bl.test=127.0.0\n", "filter"),
    ("zones = bl.test*x\n", "weight"),
    ("zones = bad!zone\n", "zone"),
    ("zones = bl.test\nthreshold = 0\n", "threshold"),
    ("zones = bl.test\nreply = 554 %s\n", "unknown key \"reply\""),
    ("zones = bl.test\nreply_text = %s\n" % ("x" * 151), "reply_text (line"),
    ("zones = bl.test\ntemperror = reject\n", "neither ignore nor tempfail"),
    ("zones = bl.test\nzones = wl.test\n", "duplicate key"),
    ("zones = bl.test\nthreads = 2\n", "never blocks a thread"),
])
def test_check_refuses(tmpdir_0755, section, why):
    """portier -t names what is wrong in [filter dnsbl]; a key not implemented is refused."""
    conf = os.path.join(tmpdir_0755, "portier.conf")
    with open(conf, "w") as f:
        f.write(peers.portier_config(listener={"listen": "127.0.0.1:2599",
                                               "filters": "dnsbl"},
                                     extra="[filter dnsbl]\n" + section))
    rc, out = peers.run_portier_check(conf)
    assert rc != 0 and why in out, out


def test_check_accepts(tmpdir_0755):
    """The documented example passes -t."""
    conf = os.path.join(tmpdir_0755, "portier.conf")
    with open(conf, "w") as f:
        f.write(peers.portier_config(
            listener={"listen": "127.0.0.1:2599", "filters": "dnsbl"},
            extra="[filter dnsbl]\nzones = zen.spamhaus.example*2 bl.example=127.0.0.[2..11]*3\n"
                  "        wl.example=127.0.[0..255].2*-2\n"
                  "threshold = 3\ntimeout = 10\ndefault_action = accept\n"))
    rc, out = peers.run_portier_check(conf)
    assert rc == 0, out
    # the continuation line is read as part of zones: a bad entry there is named
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("wl.example=127.0.[0..255].2*-2", "wl.example=127.0.[0..256].2"))
    rc, out = peers.run_portier_check(conf)
    assert rc != 0 and "wl.example=127.0.[0..256].2" in out, out

"""The connection stage's filters: helo-check (HELO/EHLO names: invalid, not fully qualified,
claiming to be us) and rdns-check (clients without a hostname, against the session's reverse
lookup served by a private unbound: 550 5.7.25 for no name, 450 4.7.25 for a lookup that failed
for now).

Clients come from distinct loopback addresses (127.0.0.2, ...), whose reverse names the test
unbound serves (the zones of test_resolver.py), or name themselves in PROXY headers."""
import smtplib

import pytest

import peers
from test_proxy import lb_section, v2_tcp4
from test_resolver import ZONES
from test_connlimit import run_check

HELO_STRICT = "[filter helo-check]\nreject_non_fqdn = yes\nexempt =\n"


def helo_portier(portier, section="", listener=None, extra=""):
    lst = {"reverse_lookup": "no", "filters": "helo-check"}
    lst.update(listener or {})
    return portier(peers.portier_config(listener=lst, extra=section + extra))


@pytest.mark.parametrize("name,want,reason", [
    ("bad..name", "501 5.5.2", "invalid"),
    ("-dash.example.org", "501 5.5.2", "invalid"),
    ("[127.0.0.300]", "501 5.5.2", "invalid"),
    ("localhost", "504 5.5.2", "non_fqdn"),
    ("mx.example.test", "550 5.7.1", "own"),
    ("MX.EXAMPLE.TEST.", "550 5.7.1", "own"),
    ("example.test", "550 5.7.1", "own"),
    ("[127.0.0.1]", "550 5.7.1", "own"),
])
def test_helo_refused(portier, client, name, want, reason):
    """Each refusal, its reply and its log line; the session goes on and a good name passes."""
    p = helo_portier(portier, HELO_STRICT)
    c = client(p.port, source="127.0.0.2")
    c.greeting()
    r = c.cmd("EHLO " + name, expect=want)
    text = {"invalid": "Invalid HELO name",
            "non_fqdn": "Helo command rejected: need fully-qualified hostname",
            "own": "Client claims to be us"}[reason]
    assert r.texts()[0] == want.split()[1] + " " + text, r
    assert p.wait_log(r"event=helo_refused client=127\.0\.0\.2 helo=%s reason=%s$" %
                      (pattern(name), reason))
    c.cmd("MAIL FROM:<a@origin.test>", expect="503")
    c.cmd("EHLO client.origin.test", expect="250")
    c.cmd("MAIL FROM:<a@origin.test>", expect="250")
    c.cmd("QUIT", expect="221")


def pattern(name):
    return "".join("\\" + ch if not ch.isalnum() else ch for ch in name)


def test_helo_smtplib(portier):
    """smtplib's own EHLO and HELO: refused for our name, then accepted for its own."""
    p = helo_portier(portier, HELO_STRICT)
    s = smtplib.SMTP(timeout=10, source_address=("127.0.0.2", 0))
    try:
        s.connect("127.0.0.1", p.port)
        code, msg = s.ehlo("mx.example.test")
        assert (code, msg) == (550, b"5.7.1 Client claims to be us")
        code, msg = s.helo("x")
        assert code == 504, msg
        code, msg = s.helo("relay.origin.test")
        assert code == 250, msg
        s.quit()
    finally:
        s.close()


def test_helo_defaults_exempt_loopback(portier, client):
    """With no section: reject_invalid and reject_own on, loopback clients exempt, a name
    without a dot accepted."""
    p = helo_portier(portier)
    c = client(p.port, source="127.0.0.2")
    c.greeting()
    c.cmd("EHLO mx.example.test", expect="250")
    c.cmd("EHLO bad..name", expect="250")
    c.cmd("QUIT", expect="221")


def test_helo_own_address_through_proxy(portier):
    """Behind PROXY the header's destination is the address the client connected to: a client
    192.0.2.7 (no loopback exemption) claiming [198.51.100.25] is refused, one claiming
    another address or a name of its own is not."""
    pport = peers.free_port()
    p = portier(peers.portier_config(listener={"reverse_lookup": "no"},
                                     extra=lb_section(filters="helo-check")),
                ports={"pport": pport})
    c = peers.SmtpClient(pport)
    try:
        c.send(v2_tcp4("192.0.2.7", 4000, dst="198.51.100.25"))
        c.greeting()
        c.cmd("EHLO [198.51.100.25]", expect="550 5.7.1")
        c.cmd("EHLO [198.51.100.26]", expect="250")
        c.cmd("EHLO example.test", expect="550 5.7.1")
        c.cmd("EHLO localhost", expect="250")
        c.cmd("QUIT", expect="221")
    finally:
        c.close()
    assert p.wait_log(r"event=helo_refused client=192\.0\.2\.7 helo=\[198\.51\.100\.25\] "
                      r"reason=own$")


def rdns_portier(portier, dns, require=None):
    section = "[filter rdns-check]\nrequire = %s\n" % require if require else ""
    return portier(peers.portier_config(
        server={"resolver": dns.servers, "resolver_timeout": "2"},
        listener={"reverse_lookup": "yes", "filters": "rdns-check"}, extra=section))


@pytest.mark.parametrize("require", [None, "fcrdns", "ptr"])
def test_rdns_check(portier, unbound, client, require):
    """127.0.0.2 (verified) is greeted; 127.0.0.3 (a PTR that does not map back) only with
    require = ptr; 127.0.0.5 (no PTR) gets 550 5.7.25; 127.0.0.6 (SERVFAIL) 450 4.7.25."""
    dns = unbound(zones=ZONES, servfail=["6.0.0.127.in-addr.arpa."])
    p = rdns_portier(portier, dns, require)
    rev = "reverse " if require == "ptr" else ""
    for addr, want in (("127.0.0.2", "220"),
                       ("127.0.0.3", "220" if require == "ptr" else "550 5.7.25"),
                       ("127.0.0.5", "550 5.7.25"), ("127.0.0.6", "450 4.7.25")):
        c = client(p.port, source=addr)
        r = c.read_reply()
        peers.expect_reply(r, want, "greeting of %s" % addr)
        if r.code == 220:
            c.cmd("QUIT", expect="221")
            continue
        assert r.texts()[0] == "%s Client host rejected: cannot find your %shostname, [%s]" % (
            want.split()[1], rev, addr), r
        c.expect_closed()
        assert p.wait_log(r"event=rdns_refused client=%s .*require=%s$" % (
            pattern(addr), require or "fcrdns"))


def test_rdns_check_localhost(portier, unbound, client):
    """127.0.0.1 is "localhost", verified without a query: greeted."""
    dns = unbound(zones=ZONES)
    p = rdns_portier(portier, dns)
    c = client(p.port)
    c.greeting()
    c.cmd("QUIT", expect="221")


HC = "[listener mx] filters: filter \"helo-check\": "
RC = "[listener mx] filters: filter \"rdns-check\": "


@pytest.mark.parametrize("listener,extra,key,want", [
    ({"filters": "helo-check"}, "[filter helo-check]\nreject_own = maybe\n", HC,
     "reject_own = \"maybe\" at line"),
    ({"filters": "helo-check"}, "[filter helo-check]\nexempt = 10.0.0.0/33\n", HC,
     "\"10.0.0.0/33\" is not an address or network"),
    ({"filters": "helo-check"}, "[filter helo-check]\ntimeout = 3\n", HC,
     "unknown key \"timeout\""),
    ({"filters": "rdns-check"}, "[filter rdns-check]\nrequire = name\n", RC,
     "require = \"name\" at line"),
    ({"filters": "rdns-check", "reverse_lookup": "no"}, "", "[listener mx] reverse_lookup",
     "rdns-check needs the client's reverse lookup"),
])
def test_check_refuses(tmpdir_0755, listener, extra, key, want):
    rc, out = run_check(tmpdir_0755, peers.portier_config(listener=listener, extra=extra))
    assert rc == 2, out
    assert key in out and want in out, out


def test_check_accepts(tmpdir_0755):
    rc, out = run_check(tmpdir_0755, peers.portier_config(
        listener={"filters": "helo-check rdns-check"},
        extra="[filter helo-check]\nreject_invalid = yes\nreject_non_fqdn = no\n"
              "reject_own = yes\nexempt = 127.0.0.0/8 ::1 10.0.0.0/8\n"
              "[filter rdns-check]\nrequire = ptr\n"))
    assert rc == 0, out

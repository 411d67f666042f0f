"""The spf filter (filters/spf.c, RFC 7208 over libspf2) in full SMTP sessions, its records
served by a private unbound (peers.Unbound).

Clients connect from loopback addresses (127.0.0.2 is permitted by the test records, 127.0.0.3
is not).  Through the wire: pass, fail -> 550 5.7.23 (with the record's exp= text), softfail
delivered and tagged, temperror -> 451 4.7.24 when the DNS server stalls (bounded by
resolver_timeout), the null sender judged by its HELO name, Authentication-Results and
Received-SPF in the delivered message, and -t refusing unknown keys and bad values.  The
portier fixture fails a test on any sanitizer report.
"""
import os
import re
import time

import peers
from peers import make_message

GOOD, BAD = "127.0.0.2", "127.0.0.3"
TIMEOUT = 1

ZONES = [
    'local-zone: "pass.test." static',
    'local-zone: "soft.test." static',
    'local-zone: "helo.test." static',
    'local-zone: "perm.test." static',
    "local-data: 'pass.test. 300 IN TXT \"v=spf1 ip4:%s -all exp=why.pass.test\"'" % GOOD,
    "local-data: 'why.pass.test. 300 IN TXT \"%{i} may not send for %{d}\"'",
    "local-data: 'soft.test. 300 IN TXT \"v=spf1 ip4:%s ~all\"'" % GOOD,
    "local-data: 'helo.test. 300 IN TXT \"v=spf1 a -all\"'",
    "local-data: 'helo.test. 300 IN A %s'" % GOOD,
    "local-data: 'perm.test. 300 IN TXT \"v=spf1 ip4:%s foo:bar -all\"'" % GOOD,
]
STALL = ["stall.test."]


def start(make_pair, unbound, section=""):
    """A portier whose mx listener runs spf, [filter spf] holding `section`."""
    dns = unbound(zones=ZONES, stall=STALL)
    srv = {"resolver": dns.servers, "resolver_timeout": str(TIMEOUT), "workers": "1"}
    extra = "[filter spf]\n%s\n" % section if section else ""
    return make_pair(server=srv, listener={"filters": "spf"}, extra=extra)


def header_values(msg, name):
    """The unfolded values of every `name` field in a stored message."""
    text = msg.raw.decode("utf-8", "replace").replace("\r\n", "\n")
    head = text.split("\n\n", 1)[0]
    head = re.sub(r"\n[ \t]+", " ", head)
    return [l.split(":", 1)[1].strip() for l in head.split("\n")
            if l.lower().startswith(name.lower() + ":")]


def mail(c, sender, expect):
    return c.cmd("MAIL FROM:<%s>" % sender, expect=expect)


def test_pass_delivered_with_results(make_pair, unbound, client):
    """pass: delivered; Authentication-Results carries spf=pass smtp.mailfrom=..., the HELO
    check (check_helo = yes) its own spf=... smtp.helo=...; no Received-SPF by default."""
    p, s = start(make_pair, unbound)
    c = client(p.port, source=GOOD)
    c.start("helo.test")
    c.transaction("alice@pass.test", ["bob@example.test"], make_message())
    c.quit()
    msg = s.wait_messages(1)[0]
    ar = header_values(msg, "Authentication-Results")
    assert len(ar) == 1, msg.raw
    assert "spf=pass smtp.mailfrom=alice@pass.test" in ar[0], ar
    assert "spf=pass smtp.helo=helo.test" in ar[0], ar
    assert header_values(msg, "Received-SPF") == []
    m = p.wait_log(r"event=spf identity=mailfrom domain=pass\.test client=127\.0\.0\.2 "
                   r"result=pass .*")
    assert m, p.log_text()


def test_fail_rejected_with_explanation(make_pair, unbound, client):
    """fail: 550 5.7.23 at MAIL naming the domain and the client, with the exp= text."""
    p, s = start(make_pair, unbound)
    c = client(p.port, source=BAD)
    c.start("client.test")
    r = mail(c, "alice@pass.test", "550 5.7.23")
    text = r.text
    assert "pass.test" in text and BAD in text, text
    assert "127.0.0.3 may not send for pass.test" in text, text
    c.quit()
    assert p.wait_log(r"event=spf identity=mailfrom domain=pass\.test client=127\.0\.0\.3 "
                      r"result=fail action=reject"), p.log_text()


def test_softfail_tagged(make_pair, unbound, client):
    """softfail: delivered (tag is its default), spf=softfail recorded."""
    p, s = start(make_pair, unbound)
    c = client(p.port, source=BAD)
    c.start("client.test")
    c.transaction("alice@soft.test", ["bob@example.test"], make_message())
    c.quit()
    ar = header_values(s.wait_messages(1)[0], "Authentication-Results")
    assert ar and "spf=softfail smtp.mailfrom=alice@soft.test" in ar[0], ar


def test_temperror_when_dns_stalls(make_pair, unbound, client):
    """The record's lookup never answered: 451 4.7.24 after about resolver_timeout."""
    p, s = start(make_pair, unbound)
    c = client(p.port, source=GOOD)
    c.start("client.test")
    t0 = time.monotonic()
    mail(c, "alice@stall.test", "451 4.7.24")
    assert time.monotonic() - t0 < TIMEOUT + 2.5
    # the session goes on: the next transaction is judged on its own
    c.transaction("alice@pass.test", ["bob@example.test"], make_message())
    c.quit()
    assert len(s.wait_messages(1)) == 1


def test_permerror_tagged_and_configurable(make_pair, unbound, client):
    """A record with a syntax error: permerror, tagged by default; permerror = reject
    refuses it with 550 5.7.24."""
    p, s = start(make_pair, unbound)
    c = client(p.port, source=GOOD)
    c.start("client.test")
    c.transaction("alice@perm.test", ["bob@example.test"], make_message())
    c.quit()
    ar = header_values(s.wait_messages(1)[0], "Authentication-Results")
    assert ar and "spf=permerror smtp.mailfrom=alice@perm.test" in ar[0], ar
    p2, _ = start(make_pair, unbound, section="permerror = reject\n")
    c = client(p2.port, source=GOOD)
    c.start("client.test")
    mail(c, "alice@perm.test", "550 5.7.24")
    c.quit()


def test_null_sender_uses_helo(make_pair, unbound, client):
    """MAIL FROM:<>: the HELO identity counts; pass from the permitted address (smtp.helo),
    550 5.7.23 from another one."""
    p, s = start(make_pair, unbound, section="received_spf = yes\n")
    c = client(p.port, source=GOOD)
    c.start("helo.test")
    c.transaction("", ["bob@example.test"], make_message())
    c.quit()
    msg = s.wait_messages(1)[0]
    ar = header_values(msg, "Authentication-Results")
    assert ar and "spf=pass smtp.helo=helo.test" in ar[0], ar
    assert "smtp.mailfrom" not in ar[0], ar
    rs = header_values(msg, "Received-SPF")
    assert len(rs) == 1 and rs[0].startswith("pass ") and "identity=helo" in rs[0], rs
    c = client(p.port, source=BAD)
    c.start("helo.test")
    mail(c, "", "550 5.7.23")
    c.quit()


def test_received_spf(make_pair, unbound, client):
    """received_spf = yes: one Received-SPF at the top with client-ip and envelope-from."""
    p, s = start(make_pair, unbound, section="received_spf = yes\nsoftfail = tag\n")
    c = client(p.port, source=BAD)
    c.start("client.test")
    c.transaction("alice@soft.test", ["bob@example.test"], make_message())
    c.quit()
    rs = header_values(s.wait_messages(1)[0], "Received-SPF")
    assert len(rs) == 1, rs
    assert rs[0].startswith("softfail ") and "client-ip=%s;" % BAD in rs[0], rs
    assert "envelope-from=alice@soft.test;" in rs[0] and "identity=mailfrom" in rs[0], rs


def check_config(tmpdir, section):
    path = os.path.join(tmpdir, "spf.conf")
    with open(path, "w") as f:
        f.write(peers.portier_config("smtp:127.0.0.1:%d" % peers.free_port(),
                                     listener={"filters": "spf"},
                                     extra="[filter spf]\n%s\n" % section)
                .replace("{port}", str(peers.free_port())))
    return peers.run_portier_check(path)


def test_check_refuses_unknown_keys_and_values(portier_bin, tmpdir_0755):
    """-t: every documented key passes; an unknown key or a bad value is refused by name."""
    rc, out = check_config(tmpdir_0755, "fail = reject\nsoftfail = quarantine\nneutral = tag\n"
                           "none = tag\npass = tag\ntemperror = tempfail\npermerror = tag\n"
                           "check_helo = no\nreceived_spf = yes\ntimeout = 30\n")
    assert rc == 0, out
    rc, out = check_config(tmpdir_0755, "fial = reject\n")
    assert rc != 0 and "fial" in out, out
    rc, out = check_config(tmpdir_0755, "fail = bounce\n")
    assert rc != 0 and "bounce" in out, out
    rc, out = check_config(tmpdir_0755, "received_spf = maybe\n")
    assert rc != 0 and "maybe" in out, out

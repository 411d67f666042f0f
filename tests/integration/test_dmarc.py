"""The dmarc filter (filters/dmarc.c, RFC 7489 over libopendmarc) in full SMTP sessions, after
spf and dkim-verify in the chain, its DMARC and SPF records and DKIM keys served by a private
unbound (peers.Unbound).

Every outcome goes through the wire: pass (SPF-aligned, DKIM-aligned with a message signed by
dkimpy), fail -> reject (550 5.7.1 naming the policy), quarantine (X-Portier-Quarantine on the
delivered message), none (tag only), no record (dmarc=none), the organizational domain's record
(sp), From: problems (RFC 7489 6.6.1), malformed and several records, a record split over TXT
strings past 255 octets, DNS that stalls (bounded by resolver_timeout; a client leaving during
the wait), and -t refusing unknown keys.  The portier fixture fails a test on any sanitizer
report.
"""
import base64
import os
import re
import subprocess
import time

import pytest

import peers
from peers import make_message

ENV_SPF = '"v=spf1 ip4:127.0.0.0/8 -all"'     # the client connects from 127.0.0.1
LONG = "a" * 200                               # a TXT string of the split record

STATIC = ["aligned.test", "reject.test", "quar.test", "none.test", "norec.test", "org.test",
          "bad.test", "two.test", "split.test", "dk.test", "other.test", "client.test",
          "env.test"]

ZONES = ['local-zone: "%s." static' % z for z in STATIC] + [
    "local-data: 'aligned.test. 300 IN TXT %s'" % ENV_SPF,
    "local-data: 'other.test. 300 IN TXT %s'" % ENV_SPF,
    "local-data: 'env.test. 300 IN TXT %s'" % ENV_SPF,
    "local-data: 'org.test. 300 IN TXT %s'" % ENV_SPF,
    "local-data: 'norec.test. 300 IN A 192.0.2.1'",
    "local-data: '_dmarc.aligned.test. 300 IN TXT \"v=DMARC1; p=reject\"'",
    "local-data: '_dmarc.reject.test. 300 IN TXT \"v=DMARC1; p=reject\"'",
    "local-data: '_dmarc.quar.test. 300 IN TXT \"v=DMARC1; p=quarantine\"'",
    "local-data: '_dmarc.none.test. 300 IN TXT \"v=DMARC1; p=none\"'",
    "local-data: '_dmarc.org.test. 300 IN TXT \"v=DMARC1; p=none; sp=reject\"'",
    "local-data: '_dmarc.bad.test. 300 IN TXT \"v=DMARC1; p=bogus\"'",
    "local-data: '_dmarc.two.test. 300 IN TXT \"v=DMARC1; p=reject\"'",
    "local-data: '_dmarc.two.test. 300 IN TXT \"v=DMARC1; p=none\"'",
    "local-data: '_dmarc.split.test. 300 IN TXT \"v=DMARC1; rua=mailto:%s@split.test; p=rej\" "
    "\"ect; ruf=mailto:%s@split.test\"'" % (LONG, LONG),
    "local-data: '_dmarc.dk.test. 300 IN TXT \"v=DMARC1; p=reject\"'",
]
TIMEOUT = 1


def spf_usable():
    path = os.path.join(os.environ.get("SRCDIR", "."), "filters", "spf.c")
    try:
        with open(path) as f:
            return "SKELETON" not in f.read(200)
    except OSError:
        return False


def start(make_pair, unbound, filters="spf dmarc", section="", zones=(), stall=(), **server):
    """A portier whose mx listener runs `filters`, [filter dmarc] holding `section`."""
    dns = unbound(zones=ZONES + list(zones), stall=list(stall))
    srv = {"resolver": dns.servers, "resolver_timeout": str(TIMEOUT), "workers": "1"}
    srv.update(server)
    extra = "[filter dmarc]\n%s\n" % section if section else ""
    return make_pair(server=srv, listener={"filters": filters}, extra=extra)


def unfolded(raw):
    return re.sub(rb"\r?\n[ \t]+", b" ", raw)


def auth_results(msg):
    m = re.search(rb"^Authentication-Results: (.*)$", unfolded(msg.raw), re.M)
    assert m, msg.raw
    return m.group(1).decode()


def send(p, sender, frm=None, msg=None, expect="250"):
    """One transaction; returns the reply after the final dot."""
    c = peers.SmtpClient(p.port)
    try:
        c.start()
        c.cmd("MAIL FROM:<%s>" % sender, expect="250")
        c.cmd("RCPT TO:<alice@example.test>", expect="250")
        r = c.send_message(msg if msg is not None else make_message(frm=frm), expect=expect)
        c.quit()
    finally:
        c.close()
    return r


@pytest.fixture
def env(make_pair, unbound):
    if not spf_usable():
        pytest.skip("filters/spf.c is still a skeleton")
    return start(make_pair, unbound)


def test_pass_spf_aligned(env):
    """MAIL FROM in the From: domain, SPF pass: dmarc=pass, delivered untouched."""
    p, s = env
    send(p, "bounce@aligned.test", "a@aligned.test")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    ar = auth_results(msgs[0])
    assert "spf=pass smtp.mailfrom=bounce@aligned.test" in ar, ar
    assert "dmarc=pass (p=reject dis=none) header.from=aligned.test" in ar, ar
    assert b"X-Portier-Quarantine" not in msgs[0].raw
    m = p.wait_log(r"event=dmarc result=pass from_domain=aligned\.test .*spf_aligned=yes")
    assert m, p.log_text()


def test_fail_reject(env):
    """SPF passes for another domain: not aligned, p=reject -> 550 5.7.1 naming the policy."""
    p, s = env
    r = send(p, "bounce@other.test", "a@reject.test", expect="550 5.7.1")
    assert "DMARC policy of reject.test (p=reject)" in r.text, r.text
    s.assert_nothing(portier=p)
    assert p.wait_log(r"event=dmarc result=fail from_domain=reject\.test .*disposition=reject")


def test_quarantine(env):
    """p=quarantine: delivered with the X-Portier-Quarantine mark naming the policy."""
    p, s = env
    send(p, "bounce@other.test", "a@quar.test")
    msgs = s.wait_messages(1)
    assert b"X-Portier-Quarantine: dmarc: policy of quar.test is p=quarantine" in msgs[0].raw, \
        msgs[0].raw
    ar = auth_results(msgs[0])
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test" in ar, ar


def test_none_policy_and_no_record(env):
    """p=none only tags; a domain without a record gets dmarc=none."""
    p, s = env
    send(p, "bounce@other.test", "a@none.test")
    send(p, "bounce@other.test", "a@norec.test")
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    ars = sorted(auth_results(m) for m in msgs)
    assert any("dmarc=fail (p=none dis=none) header.from=none.test" in a for a in ars), ars
    assert any("dmarc=none header.from=norec.test" in a for a in ars), ars
    assert all(b"X-Portier-Quarantine" not in m.raw for m in msgs)


def test_organizational_domain(env):
    """No record at mail.org.test: org.test's applies, with its sp=reject."""
    p, s = env
    r = send(p, "bounce@other.test", "a@mail.org.test", expect="550 5.7.1")
    assert "DMARC policy of org.test (sp=reject)" in r.text, r.text
    # aligned (relaxed) with the organizational domain: pass
    send(p, "bounce@org.test", "a@mail.org.test", expect="250")
    msgs = s.wait_messages(1)
    assert "dmarc=pass (p=none sp=reject dis=none) header.from=mail.org.test" in \
        auth_results(msgs[0])


@pytest.mark.parametrize("headers,why", [
    ([("To", "<alice@example.test>"), ("Subject", "no from")], "no From: header field"),
    ([("From", "<a@aligned.test>"), ("From", "<b@aligned.test>"), ("Subject", "two")],
     "several From: header fields"),
    ([("From", "a@aligned.test, b@other.test"), ("Subject", "two addresses")],
     "several addresses in From:"),
    ([("From", "No Body"), ("Subject", "no address")], "From: cannot be parsed"),
])
def test_from_problems(make_pair, unbound, headers, why):
    """RFC 7489 6.6.1: refused by default; with bad_from = tag delivered with dmarc=permerror."""
    msg = b"".join(("%s: %s\r\n" % h).encode() for h in headers) + b"\r\nbody\r\n"
    p, s = start(make_pair, unbound, filters="dmarc")
    r = send(p, "bounce@aligned.test", msg=msg, expect="550 5.7.1")
    assert why in r.text, r.text
    s.assert_nothing(portier=p)
    p2, s2 = start(make_pair, unbound, filters="dmarc", section="bad_from = tag")
    send(p2, "bounce@aligned.test", msg=msg)
    assert "dmarc=permerror (%s)" % why in auth_results(s2.wait_messages(1)[0])


def test_display_name_comment_quoted(make_pair, unbound):
    """The From: domain is read past display names, comments and quoted strings."""
    p, s = start(make_pair, unbound, filters="dmarc")
    frm = '"Doe, John (a@aligned.test)" (x@aligned.test) <a@Quar.Test>'
    msg = make_message().replace(b"From: <sender@origin.test>", ("From: %s" % frm).encode())
    send(p, "bounce@env.test", msg=msg)
    assert "header.from=quar.test" in auth_results(s.wait_messages(1)[0])


def test_records_malformed_several_split(make_pair, unbound):
    """A broken record and several records: permerror, delivered; a record split over TXT
    strings (466 octets) is read whole: its p=reject holds."""
    p, s = start(make_pair, unbound, filters="dmarc")
    send(p, "bounce@env.test", "a@bad.test")
    send(p, "bounce@env.test", "a@two.test")
    r = send(p, "bounce@env.test", "a@split.test", expect="550 5.7.1")
    assert "split.test (p=reject)" in r.text
    ars = [auth_results(m) for m in s.wait_messages(2)]
    assert sorted(re.search(r"dmarc=\S+ header.from=\S+", a).group(0) for a in ars) == [
        "dmarc=permerror header.from=bad.test", "dmarc=permerror header.from=two.test"], ars
    assert p.wait_log(r'event=dmarc result=permerror from_domain=two\.test .*'
                      r'why="several DMARC records"')


def test_actions_configured(make_pair, unbound):
    """reject = quarantine marks instead; monitor = yes only tags."""
    p, s = start(make_pair, unbound, filters="dmarc", section="reject = quarantine")
    send(p, "bounce@env.test", "a@reject.test")
    m = s.wait_messages(1)[0]
    assert b"X-Portier-Quarantine: dmarc: policy of reject.test is p=reject" in m.raw
    assert "dmarc=fail (p=reject dis=quarantine)" in auth_results(m)
    p2, s2 = start(make_pair, unbound, filters="dmarc", section="monitor = yes")
    send(p2, "bounce@env.test", "a@reject.test")
    m2 = s2.wait_messages(1)[0]
    assert b"X-Portier-Quarantine" not in m2.raw
    assert "dmarc=fail (p=reject dis=none)" in auth_results(m2)


def test_stalled_dns(make_pair, unbound, client):
    """A _dmarc lookup that is never answered: temperror after resolver_timeout and the mail is
    delivered (our DNS trouble rejects nothing); meanwhile another client's mail on the same
    (only) loop goes through."""
    p, s = start(make_pair, unbound, filters="dmarc", stall=["drop.test."])
    slow = client(p.port)
    slow.start()
    slow.cmd("MAIL FROM:<bounce@env.test>", expect="250")
    slow.cmd("RCPT TO:<alice@example.test>", expect="250")
    slow.cmd("DATA", expect="354")
    t0 = time.monotonic()
    slow.send(make_message(frm="a@x.drop.test") + b".\r\n")
    time.sleep(0.1)
    send(p, "bounce@env.test", "a@none.test")
    assert time.monotonic() - t0 < TIMEOUT, "the other client waited for the stalled lookup"
    r = slow.read_reply(timeout=TIMEOUT + 3)
    waited = time.monotonic() - t0
    assert r.code == 250, r.text
    assert TIMEOUT - 0.2 <= waited < TIMEOUT + 2, waited
    ars = sorted(auth_results(m) for m in s.wait_messages(2))
    assert any("dmarc=temperror header.from=x.drop.test" in a for a in ars), ars


def test_stalled_dns_tempfail(make_pair, unbound):
    """temperror = tempfail: 451 4.4.3 instead."""
    p, s = start(make_pair, unbound, filters="dmarc", section="temperror = tempfail",
                 stall=["drop.test."])
    r = send(p, "bounce@env.test", "a@x.drop.test", expect="451 4.4.3")
    assert "x.drop.test" in r.text


def test_client_leaves_during_lookup(make_pair, unbound, client):
    """The client closes while its lookup stalls: the wait is cancelled (no event=dmarc line
    comes for it), nothing crashes, and the next client is served."""
    p, s = start(make_pair, unbound, filters="dmarc", stall=["drop.test."])
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<bounce@env.test>", expect="250")
    c.cmd("RCPT TO:<alice@example.test>", expect="250")
    c.cmd("DATA", expect="354")
    c.send(make_message(frm="a@x.drop.test") + b".\r\n")
    time.sleep(0.2)
    c.close()
    assert p.wait_log(r"event=disconnect"), p.log_text()
    time.sleep(TIMEOUT + 0.5)
    assert "from_domain=x.drop.test" not in p.log_text()
    send(p, "bounce@env.test", "a@quar.test")
    assert b"X-Portier-Quarantine" in s.wait_messages(1)[0].raw


def dkim_key(tmp):
    """An RSA key (PEM) and its DKIM TXT record data split in strings."""
    key = os.path.join(tmp, "dkim.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", key], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    p = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    txt = " ".join('"%s"' % p[i:i + 200] for i in range(0, len(p), 200))
    with open(key, "rb") as f:
        return f.read(), txt


def test_dkim_aligned(make_pair, unbound, tmpdir_0755):
    """Signed by dkimpy with d=dk.test, MAIL FROM elsewhere: the DKIM pass aligns -> pass; the
    same signed with d=other.test does not -> 550."""
    dkim = pytest.importorskip("dkim")
    pem, txt = dkim_key(tmpdir_0755)
    zones = ["local-data: 'sel._domainkey.dk.test. 300 IN TXT %s'" % txt,
             "local-data: 'sel._domainkey.other.test. 300 IN TXT %s'" % txt]
    p, s = start(make_pair, unbound, filters="dkim-verify dmarc", zones=zones)

    def signed(d):
        msg = make_message(frm="a@dk.test")
        sig = dkim.sign(msg, b"sel", d.encode(), pem,
                        include_headers=[b"from", b"to", b"subject", b"date"])
        return sig + msg

    send(p, "bounce@env.test", msg=signed("dk.test"))
    ar = auth_results(s.wait_messages(1)[0])
    assert "dkim=pass" in ar and "header.d=dk.test" in ar, ar
    assert "dmarc=pass (p=reject dis=none) header.from=dk.test" in ar, ar
    r = send(p, "bounce@env.test", msg=signed("other.test"), expect="550 5.7.1")
    assert "DMARC policy of dk.test (p=reject)" in r.text


@pytest.mark.parametrize("key,value,msg", [
    ("policy", "strict", 'unknown key "policy" (line 2)'),
    ("reject", "drop", 'reject = "drop" (line 2): expected reject | quarantine | tag'),
    ("public_suffix_list", "/nonexistent.dat", 'public_suffix_list "/nonexistent.dat" (line 2)'),
])
def test_config_refused(tmpdir_0755, key, value, msg):
    """portier -t refuses a bad [filter dmarc] key, naming it and its line."""
    conf = os.path.join(tmpdir_0755, "portier.conf")
    text = peers.portier_config(listener={"filters": "dmarc"}).replace("{port}", "2525")
    with open(conf, "w") as f:
        f.write("[filter dmarc]\n%s = %s\n" % (key, value) + text)
    rc, out = peers.run_portier_check(conf)
    assert rc != 0, out
    assert msg in out, out

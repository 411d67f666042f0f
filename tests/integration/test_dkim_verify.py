"""The dkim-verify filter (filters/dkim_verify.c) through full SMTP sessions, its keys served by a
private unbound (peers.Unbound).

Keys are made at run time: RSA 2048 by opendkim-genkey, Ed25519 by openssl genpkey.  Their
records go into unbound as TXT records of several strings (the RSA key's record is longer than
255 octets, as real ones are).  Messages are signed by dkimpy (RSA and Ed25519, relaxed and
simple), by opendkim-testmsg (OpenDKIM's signer, rsa-sha1 only), and the RFC 8463 example comes
from tests/suites/dkim/rfc8463.  Each result is read from the Authentication-Results the
backend received and from the event=dkim_verify log lines.
"""
import base64
import os
import re
import subprocess
import time

import pytest

import peers
from peers import make_message

dkim = pytest.importorskip("dkim")

TIMEOUT = 2                                 # resolver_timeout of these tests
SUITE = os.path.join(os.environ.get("SRCDIR", os.path.join(os.path.dirname(__file__), "..", "..")),
                     "tests", "suites", "dkim", "rfc8463")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """{'rsa': (private PEM bytes, record), 'ed': (private seed b64 bytes, record)}."""
    d = tmp_path_factory.mktemp("dkimkeys")
    subprocess.run(["opendkim-genkey", "-b", "2048", "-d", "sign.test", "-s", "rsa1", "-D", str(d)],
                   check=True, capture_output=True)
    pem = (d / "rsa1.private").read_bytes()
    txt = (d / "rsa1.txt").read_text()
    p = re.search(r'p=([A-Za-z0-9+/="\s]+)\)', txt).group(1)
    p = re.sub(r'["\s]', "", p)
    ed = d / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(ed), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    pub = subprocess.run(["openssl", "pkey", "-in", str(ed), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return {"rsa": (pem, "v=DKIM1; k=rsa; p=" + p), "rsa_path": str(d / "rsa1.private"),
            "ed": (base64.b64encode(der[-32:]), "v=DKIM1; k=ed25519; p=" +
                   base64.b64encode(pub[-32:]).decode())}


def txt(name, record, size=200):
    """A local-data TXT line, the record split into strings of size octets."""
    strings = " ".join('"%s"' % record[i:i + size] for i in range(0, len(record), size))
    return "local-data: '%s. 300 IN TXT %s'" % (name, strings)


def zones(keys):
    return [
        'local-zone: "sign.test." static',
        txt("rsa1._domainkey.sign.test", keys["rsa"][1]),
        txt("ed1._domainkey.sign.test", keys["ed"][1], 20),
        txt("revoked._domainkey.sign.test", "v=DKIM1; k=rsa; p="),
    ]


def start(make_pair, dns, section=None):
    extra = ""
    if section is not None:
        extra = "[filter dkim-verify]\n" + "".join("%s = %s\n" % kv for kv in section.items())
    return make_pair(server={"resolver": dns.servers, "resolver_timeout": str(TIMEOUT),
                             "workers": "1"},
                     listener={"filters": "dkim-verify"}, extra=extra)


def message(case=0):
    """A message marked with its case (X-Case, never signed): the sink's order is not ours."""
    msg = make_message(frm="sender@sign.test", headers=[("X-Case", str(case))])
    return msg.encode() if isinstance(msg, str) else msg


def sign(keys, msg, selector=b"rsa1", alg=b"rsa-sha256", canon=(b"relaxed", b"relaxed"),
         headers=(b"from", b"to", b"subject"), domain=b"sign.test"):
    key = keys["ed"][0] if alg == b"ed25519-sha256" else keys["rsa"][0]
    return dkim.sign(msg, selector, domain, key, canonicalize=canon, signature_algorithm=alg,
                     include_headers=list(headers)) + msg


def send(p, client, msgs):
    c = client(p.port)
    c.start()
    for m in msgs:
        c.transaction("sender@sign.test", ["alice@example.test"], m)
    c.quit()


def dkim_items(m):
    """The dkim= items of our Authentication-Results, each as one normalized string."""
    head = m.content.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    fields = re.split(r"\n(?![ \t])", head)
    ours = [" ".join(h.split()) for h in fields
            if h.lower().startswith("authentication-results: " + peers.HOSTNAME.lower())]
    assert len(ours) == 1, head
    return [i.strip() for i in ours[0].split(";") if i.strip().startswith("dkim=")]


def results(s, n):
    """The dkim= items of each of n messages, in the order of their cases."""
    msgs = s.wait_messages(n)
    assert len(msgs) == n, msgs
    def case(m):
        c = re.search(rb"(?m)^X-Case: (\d+)", m.content)
        return int(c.group(1)) if c else b"We won" in m.content
    return [dkim_items(m) for m in sorted(msgs, key=case)]


def test_dkimpy_rsa_ed25519_relaxed_simple_pass(make_pair, unbound, client, keys):
    """What dkimpy signs verifies: RSA and Ed25519, relaxed and simple; both at once; a
    record split over strings (the RSA one over 255 octets, the Ed25519 one in 20-octet
    strings)."""
    dns = unbound(zones=zones(keys))
    p, s = start(make_pair, dns)
    cases = [(b"rsa1", b"rsa-sha256", (b"relaxed", b"relaxed")),
             (b"rsa1", b"rsa-sha256", (b"simple", b"simple")),
             (b"ed1", b"ed25519-sha256", (b"relaxed", b"relaxed")),
             (b"ed1", b"ed25519-sha256", (b"simple", b"simple"))]
    msgs = [sign(keys, message(i), sel, alg, canon) for i, (sel, alg, canon) in enumerate(cases)]
    both = sign(keys, sign(keys, message(4), b"ed1", b"ed25519-sha256"), b"rsa1")
    send(p, client, msgs + [both])
    got = results(s, 5)
    for (sel, alg, _), items in zip(cases, got):
        assert len(items) == 1, items
        assert re.match(r"dkim=pass header\.d=sign\.test header\.s=%s header\.a=%s header\.b=\S{8}"
                        % (sel.decode(), alg.decode()), items[0]), items
    assert [i.split()[0] for i in got[4]] == ["dkim=pass", "dkim=pass"], got[4]
    assert "header.s=rsa1" in got[4][0] and "header.s=ed1" in got[4][1], got[4]
    assert p.wait_log(r"event=dkim_verify result=pass d=sign\.test s=ed1 a=ed25519-sha256")


def test_changed_body_or_header_fails(make_pair, unbound, client, keys):
    """A changed body, a changed signed header, an added over-signed header, a header that was
    absent when signed and is now there: fail.  An unsigned header may be added."""
    dns = unbound(zones=zones(keys))
    p, s = start(make_pair, dns)
    def good(i):
        return sign(keys, message(i), headers=(b"from", b"to", b"subject", b"reply-to"))
    oversigned = sign(keys, message(2), b"ed1", b"ed25519-sha256",
                      headers=(b"from", b"from", b"to", b"subject", b"subject"))
    msgs = [
        good(0).replace(b"\r\n\r\n", b"\r\n\r\nChanged.\r\n", 1),
        re.sub(rb"(?m)^Subject: [^\r]*", b"Subject: changed", good(1), count=1),
        oversigned.replace(b"\r\n\r\n", b"\r\nSubject: second\r\n\r\n", 1),
        good(3).replace(b"\r\n\r\n", b"\r\nReply-To: other@evil.test\r\n\r\n", 1),
        good(4).replace(b"\r\n\r\n", b"\r\nX-Unsigned: fine\r\n\r\n", 1),
        good(5),
    ]
    send(p, client, msgs)
    got = [items[0].split()[0] for items in results(s, 6)]
    assert got == ["dkim=fail"] * 4 + ["dkim=pass"] * 2, got


def test_rfc8463_example(make_pair, unbound, client):
    """The RFC 8463 A.3 message: its Ed25519 and RSA signatures both pass."""
    with open(os.path.join(SUITE, "keys.opendkim-queryfile")) as f:
        qf = dict(l.rstrip("\n").split("\t", 1) for l in f if "\t" in l)
    z = ['local-zone: "football.example.com." static'] + \
        [txt(n, r) for n, r in qf.items()]
    dns = unbound(zones=z)
    p, s = start(make_pair, dns)
    with open(os.path.join(SUITE, "rfc8463-A3-signed.eml"), "rb") as f:
        msg = f.read()
    send(p, client, [msg])
    items = results(s, 1)[0]
    assert len(items) == 2, items
    assert items[0].startswith("dkim=pass header.d=football.example.com header.s=brisbane "
                               "header.a=ed25519-sha256 header.b=\"/gCrinpc\""), items
    assert items[1].startswith("dkim=pass header.d=football.example.com header.s=test "
                               "header.a=rsa-sha256 header.b=F45dVWDf"), items


def test_opendkim_testmsg_signature(make_pair, unbound, client, keys):
    """OpenDKIM's own signer (opendkim-testmsg signs rsa-sha1 only): the signature verifies,
    and is given "policy" as RFC 8301 has it (rsa-sha1 is not accepted); changed, it fails."""
    with open(os.path.join(SUITE, "rfc6376-A-unsigned.eml"), "rb") as f:
        raw = f.read().replace(b"\r\n", b"\n")
    out = subprocess.run(["opendkim-testmsg", "-C", "-d", "sign.test", "-s", "rsa1", "-k",
                          keys["rsa_path"]], input=raw, check=True, capture_output=True).stdout
    signed = out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert signed.startswith(b"DKIM-Signature:"), signed[:200]
    dns = unbound(zones=zones(keys))
    p, s = start(make_pair, dns)
    send(p, client, [signed, signed.replace(b"We lost the game", b"We won the game")])
    got = results(s, 2)
    assert got[0][0].startswith('dkim=policy reason="rsa-sha1 is not accepted (RFC 8301)" '
                                'header.d=sign.test header.s=rsa1 header.a=rsa-sha1'), got
    assert got[1][0].startswith("dkim=fail"), got


def test_unsigned_and_key_errors(make_pair, unbound, client, keys):
    """dkim=none without a signature; no key (NXDOMAIN) and a revoked key: permerror; a
    SERVFAIL and a stalled server: temperror (the stalled one after resolver_timeout)."""
    dns = unbound(zones=zones(keys), servfail=["broken.test."], stall=["stall.test."])
    p, s = start(make_pair, dns)
    msgs = [message(0),
            sign(keys, message(1), b"nosuch"),
            sign(keys, message(2), b"revoked"),
            sign(keys, message(3), domain=b"broken.test"),
            sign(keys, message(4), domain=b"stall.test")]
    t0 = time.monotonic()
    send(p, client, msgs)
    assert time.monotonic() - t0 >= TIMEOUT - 0.3
    got = [items[0].split()[0] if items else None for items in results(s, 5)]
    assert got == ["dkim=none", "dkim=permerror", "dkim=permerror", "dkim=temperror",
                   "dkim=temperror"], got
    assert p.wait_log(r"event=dkim_verify result=none")


def test_many_signatures_bounded(make_pair, unbound, client, keys):
    """100 signatures on one message: max_signatures (here 10) are evaluated, the rest
    skipped and counted in the log."""
    dns = unbound(zones=zones(keys))
    p, s = start(make_pair, dns, {"max_signatures": "10"})
    msg = sign(keys, message(), b"ed1", b"ed25519-sha256")
    sig = msg[:msg.index(b"From:")]
    msg = sig * 99 + msg
    send(p, client, [msg])
    items = results(s, 1)[0]
    assert len(items) == 10 and all(i.startswith("dkim=pass") for i in items), items
    assert p.wait_log(r"event=dkim_verify_skipped signatures=90 max=10"), p.log_text()


def test_client_leaves_while_key_lookup_stalls(make_pair, unbound, client, keys):
    """The client disconnects right after its message while the key lookup stalls: the wait
    is cancelled (no event=dkim_verify line ever comes for it), nothing touches freed memory
    (the fixture fails on any sanitizer report), and the next client is served."""
    dns = unbound(zones=zones(keys), stall=["stall.test."])
    p, s = start(make_pair, dns)
    c = client(p.port)
    c.start()
    assert c.cmd("MAIL FROM:<sender@sign.test>").code == 250
    assert c.cmd("RCPT TO:<alice@example.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(peers.dot_stuff(sign(keys, message(), domain=b"stall.test")) + b".\r\n")
    time.sleep(0.3)
    c.close()
    assert p.wait_log(r"event=disconnect"), p.log_text()
    time.sleep(TIMEOUT + 0.5)
    assert "result=temperror" not in p.log_text()
    send(p, client, [sign(keys, message())])
    assert results(s, 1)[0][0].startswith("dkim=pass")


def test_check_refuses_unknown_key(tmpdir_0755):
    """-t names an unknown key of [filter dkim-verify] and its line; a bad value too."""
    conf = os.path.join(tmpdir_0755, "portier.conf")
    for body, want in (("max_signature = 3\n", 'unknown key "max_signature"'),
                       ("clock_skew = soon\n", 'clock_skew "soon"'),
                       ("min_key_bits = 512\n", 'min_key_bits "512"')):
        with open(conf, "w") as f:
            f.write(peers.portier_config(listener={"filters": "dkim-verify"},
                                         extra="[filter dkim-verify]\n" + body)
                    .replace("{port}", "2525"))
        rc, out = peers.run_portier_check(conf)
        assert rc != 0 and want in out and "dkim-verify" in out and "line" in out, out

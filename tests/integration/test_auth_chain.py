"""The message-authentication chain as a whole: "spf dkim-verify dmarc" over one resolver, one
Authentication-Results per message, and no event loop waiting on DNS.

A private unbound (peers.Unbound) serves origin.test (SPF for 127.0.0.0/8, the DKIM key of
selector "s1", DMARC p=reject) and stall.test, whose every query is dropped: a lookup there waits
for resolver_timeout.  Messages are signed by dkimpy (/usr/bin/python3) with a key the test makes.
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

TIMEOUT = 5         # resolver_timeout: the stall each test waits through
CHAIN = "spf dkim-verify dmarc"


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    """(private PEM, the DKIM record's p=) of a fresh 2048-bit RSA key."""
    d = tmp_path_factory.mktemp("dkimkey")
    pem = d / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(pem)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return pem.read_bytes(), base64.b64encode(der).decode()


def zones(pub):
    rec = "v=DKIM1; k=rsa; p=" + pub
    strings = " ".join('"%s"' % rec[i:i + 200] for i in range(0, len(rec), 200))
    return [
        'local-zone: "origin.test." static',
        "local-data: 'origin.test. 300 IN TXT \"v=spf1 ip4:127.0.0.0/8 -all\"'",
        "local-data: 's1._domainkey.origin.test. 300 IN TXT %s'" % strings,
        "local-data: '_dmarc.origin.test. 300 IN TXT \"v=DMARC1; p=reject\"'",
    ]


def signed(key, domain=b"origin.test", frm="sender@origin.test", extra_headers=None):
    msg = make_message(frm=frm, headers=extra_headers)
    if isinstance(msg, str):
        msg = msg.encode()
    sig = dkim.sign(msg, b"s1", domain, key, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject"])
    return sig + msg


def start(portier, sink, dns, listener_filters=CHAIN, plain=False, **server):
    s = sink()
    srv = {"resolver": dns.servers, "resolver_timeout": str(TIMEOUT), "workers": "1"}
    srv.update(server)
    ports = {}
    extra = ""
    if plain:
        ports["plain"] = peers.free_port()
        extra = "[listener plain]\nlisten = 127.0.0.1:{plain}\nrole = mx\ntls = none\n"
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server=srv,
                                     listener={"filters": listener_filters}, extra=extra),
                ports=ports)
    return p, s, ports


def ar_headers(m):
    """The Authentication-Results fields of a stored message's header, unfolded."""
    head = m.raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    head = re.sub(rb"\n[ \t]+", b" ", head).decode("utf-8", "replace")
    return [l for l in head.split("\n") if l.lower().startswith("authentication-results:")]


def test_one_authentication_results(portier, sink, unbound, client, rsa_key):
    """spf, dkim and dmarc results in one Authentication-Results whose authserv-id is the
    hostname; an incoming one claiming that id is removed, another host's is kept."""
    key, pub = rsa_key
    dns = unbound(zones=zones(pub))
    p, s, _ = start(portier, sink, dns)
    forged = "Authentication-Results: %s; spf=pass smtp.mailfrom=forged@origin.test" % peers.HOSTNAME
    other = "Authentication-Results: other.example; dkim=fail header.d=origin.test"
    msg = signed(key)
    msg = (forged + "\r\n" + other + "\r\n").encode() + msg
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], msg)
    c.quit()
    m = s.wait_messages(1)
    assert len(m) == 1
    ars = ar_headers(m[0])
    ours = [h for h in ars if h.split(":", 1)[1].strip().lower().startswith(peers.HOSTNAME.lower())]
    assert len(ours) == 1, ars
    text = " ".join(ours[0].split())
    assert "spf=pass smtp.mailfrom=sender@origin.test" in text, text
    assert "dkim=pass header.d=origin.test header.s=s1" in text, text
    assert "dmarc=pass" in text and "header.from=origin.test" in text, text
    assert "forged@" not in text
    assert any("other.example" in h for h in ars), ars


def test_unsigned_from_other_ip_rejected_by_dmarc(portier, sink, unbound, client, rsa_key):
    """The same domain, unsigned, from an address its SPF does not list: SPF fails first."""
    key, pub = rsa_key
    z = [l.replace("ip4:127.0.0.0/8", "ip4:192.0.2.1") for l in zones(pub)]
    dns = unbound(zones=z)
    p, s, _ = start(portier, sink, dns)
    c = client(p.port)
    c.start()
    r = c.cmd("MAIL FROM:<sender@origin.test>")
    assert r.code == 550 and "5.7.23" in r.text, r
    c.quit()


@pytest.mark.parametrize("case", ["spf", "dkim"])
def test_stalled_dns_other_mail_flows(portier, sink, unbound, client, rsa_key, case):
    """A DNS server that stalls for resolver_timeout (5 s) on one client's lookups: on the same,
    only event loop another client's mail without these filters goes through at once; the
    stalled one gets its answer after about resolver_timeout.
      spf:  the sender's domain stalls (SPF runs on the filter pool): 451 4.7.24 at MAIL.
      dkim: the signature's key stalls (dkim-verify waits on the loop): the message is
            answered after the wait, its dkim result temperror."""
    key, pub = rsa_key
    dns = unbound(zones=zones(pub), stall=["stall.test."])
    p, s, ports = start(portier, sink, dns, plain=True)
    slow = client(p.port)
    slow.start()
    t0 = time.monotonic()
    if case == "spf":
        slow.sendline("MAIL FROM:<someone@stall.test>")
    else:
        msg = signed(key, domain=b"stall.test")
        r = slow.cmd("MAIL FROM:<sender@origin.test>")
        assert r.code == 250, r
        assert slow.cmd("RCPT TO:<alice@example.test>").code == 250
        assert slow.cmd("DATA").code == 354
        t0 = time.monotonic()
        slow.send(peers.dot_stuff(msg) + b".\r\n")
    time.sleep(0.3)
    fast = client(ports["plain"])
    fast.start()
    fast.transaction("other@elsewhere.test", ["bob@example.test"], make_message(subject="fast-one"))
    fast.quit()
    assert time.monotonic() - t0 < TIMEOUT - 1.5, "the other client waited for the stalled DNS"
    m = s.wait_messages(1)
    assert len(m) == 1 and b"fast-one" in m[0].raw, m   # the slow one is not there yet
    r = slow.read_reply(timeout=TIMEOUT + 10)
    waited = time.monotonic() - t0
    assert TIMEOUT - 0.5 <= waited < TIMEOUT + 5, waited
    if case == "spf":
        assert r.code == 451 and "4.7.24" in r.text, r
    else:
        # spf passed (aligned: dmarc passes), the key of d=stall.test timed out
        assert r.code == 250, r
        m = [x for x in s.wait_messages(2) if b"fast-one" not in x.raw]
        assert len(m) == 1, m
        text = " ".join(" ".join(ar_headers(m[0])).split())
        assert re.search(r"dkim=temperror [^;]*header\.d=stall\.test", text), text
        assert "dmarc=pass" in text, text
    slow.quit()


@pytest.fixture(scope="module")
def ed_key(tmp_path_factory):
    """(path of a fresh Ed25519 private key, the DKIM record's p=: the raw public key)."""
    d = tmp_path_factory.mktemp("edkey")
    pem = d / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return pem, base64.b64encode(der[-32:]).decode()


def sink_message_bytes(m):
    """What portier sent the sink, CRLF again: the sink's X- lines and its own Received
    dropped (the sink stores LF line ends and one extra empty line at the end)."""
    fields, _ = peers.split_header_fields(m.raw, b"\n")
    skip = 0
    for name, raw in fields:
        if name.startswith("x-") or (name == "received" and b"smtp-sink" in raw):
            skip += len(raw)
            continue
        break
    body = m.raw[skip:]
    if body.endswith(b"\n\n"):
        body = body[:-1]
    return body.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
def test_libopendkim_signs_portier_verifies(portier, sink, unbound, client, rsa_key, ed_key,
                                             tmp_path, canon):
    """What libopendkim signs (portier's dkim-sign, RSA-SHA256 and Ed25519-SHA256 at once)
    verifies in portier's dkim-verify (libopendkim too, keys through the resolver): a second
    portier receives what the first one sent its backend."""
    rsa_pem, rsa_pub = rsa_key
    ed_path, ed_pub = ed_key
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(rsa_pem)
    for f in (rsa_path, ed_path):
        os.chmod(str(f), 0o644)
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(ed_path.parent), 0o755)
    z = zones(rsa_pub) + ["local-data: 'e1._domainkey.origin.test. 300 IN TXT "
                          "\"v=DKIM1; k=ed25519; p=%s\"'" % ed_pub]
    dns = unbound(zones=z)
    sink_a = sink()
    signer = portier(peers.portier_config(
        "smtp:127.0.0.1:%d" % sink_a.port, listener={"filters": "dkim-sign"},
        extra="[filter dkim-sign]\nkeys = origin.test:s1:%s origin.test:e1:%s\n"
              "sign_unauthenticated = yes\ncanonicalization = %s\n" % (rsa_path, ed_path, canon)))
    c = client(signer.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c.quit()
    got = sink_a.wait_messages(1)
    assert len(got) == 1
    signed_msg = sink_message_bytes(got[0])
    assert signed_msg.count(b"DKIM-Signature:") == 2, signed_msg[:600]
    sink_b = sink()
    verifier = portier(peers.portier_config(
        "smtp:127.0.0.1:%d" % sink_b.port, server={"resolver": dns.servers},
        listener={"filters": "dkim-verify"}))
    c = client(verifier.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], signed_msg)
    c.quit()
    got = sink_b.wait_messages(1)
    assert len(got) == 1
    text = " ".join(" ".join(ar_headers(got[0])).split())
    assert re.search(r"dkim=pass header\.d=origin\.test header\.s=s1 header\.a=rsa-sha256", text), text
    assert re.search(r"dkim=pass header\.d=origin\.test header\.s=e1 header\.a=ed25519-sha256",
                     text), text

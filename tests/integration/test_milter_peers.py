"""The milter client, milter:NAME (issue #11), against real third-party milters (milterpeers.py):
rspamd's proxy worker (milter = yes, self_scan) rejects GTUBE with its own reply and adds its
headers to clean mail; OpenDKIM (Mode sv) signs mail From: its domain so that dkimpy verifies the
signature on what the backend got, and verifies a signature made here with dkimpy (pass, and
fail once the body is changed) in an Authentication-Results it writes as portier's authserv-id,
which portier keeps while it drops a forged one.  Then portier's own dkim-sign after a milter
that edits headers (the test milter changes Subject and adds a field; rspamd adds its folded
headers): the signature covers the edited block exactly as delivered.  And every milter
connection ends with QUIT, as Postfix ends them (rspamd logs a hang-up as an error).

rspamd and OpenDKIM start once per module (rspamd: ~1 s on a warm hyperscan cache, ~12 s on a
cold one; its start deadline is milterpeers.RSPAMD_START_DEADLINE, in fixture setup, which the
per-test alarm does not cover).  A milter that cannot start here fails these tests."""
import re
import shutil

import dkim
import pytest

import peers
from conftest import _cleanup_dir
from peers import make_message
from milterpeers import Rspamd, OpenDkim, KeyRecords, genkey
from test_milter import start_with, send, header_values, content_headers, milter  # noqa: F401
from test_dkim_sign import (keys, received, sig_fields, tags, dkimpy_results,  # noqa: F401
                            section as dkim_section)

SENDER = "alice@example.test"
RCPT = "bob@example.test"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def stop_peer(peer):
    rc = peer.stop()
    assert rc == 0, "%s exited with status %r on SIGTERM; log:\n%s" % (peer.name, rc,
                                                                      peer.log_text()[-5000:])


@pytest.fixture(scope="module")
def rspamd(request):
    r = Rspamd()
    yield r
    try:
        stop_peer(r)
    finally:
        _cleanup_dir(request, r.tmp)


@pytest.fixture(scope="module")
def signer():
    """A key of signer.test (selector sel2) to sign with dkimpy: (private key, KeyRecords)."""
    d = peers.make_tempdir("signer")
    path, name, record = genkey(d, "signer.test", "sel2")
    with open(path, "rb") as f:
        key = f.read()
    yield key, KeyRecords({name: record})
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def opendkim(request, signer):
    o = OpenDkim("example.test", "sel1", records=signer[1].records)
    yield o
    try:
        stop_peer(o)
    finally:
        _cleanup_dir(request, o.tmp)


def deliver(portier, sink, client, sections, filters, msgs, sender=SENDER, expect=250):
    """portier (filters) relaying to a fresh smtp-sink; each message in its own transaction of
    one session, its final reply expected to have code `expect` (None: any); returns
    (portier, sink, the final replies)."""
    p, s = start_with(portier, sink, sections, filters)
    c = client(p.port)
    c.start()
    replies = [send(c, rcpts=(RCPT,), msg=m, sender=sender) for m in msgs]
    c.quit()
    for r in replies:
        assert expect is None or r.code == expect, r
    return p, s, replies


def field_values(raw, name):
    """Every header field `name` of raw (CRLF, as portier sent it), unfolded values."""
    fields, _ = peers.split_header_fields(raw, b"\r\n")
    return [peers.unfold(f).split(":", 1)[1].strip() for n, f in fields if n == name.lower()]


# ---------------------------------------------------------------------------------------------
# rspamd
# ---------------------------------------------------------------------------------------------

def rspamd_task(rspamd, qid, timeout=5.0):
    """rspamd's log line for the task of portier's queue id qid (the {i} macro)."""
    rx = re.compile(r"rspamd_task_write_log: .*qid: <%s>.*$" % re.escape(qid), re.M)
    m = peers.wait_until(lambda: rx.search(rspamd.log_text()), timeout)
    assert m, "rspamd logged no task with qid %s:\n%s" % (qid, rspamd.log_text()[-5000:])
    return m.group(0)


def test_rspamd_rejects_gtube(portier, sink, client, rspamd):
    """GTUBE: rspamd's own reject (554 5.7.1 Gtube pattern) reaches the client at the final
    dot, the log names the milter, the backend gets nothing."""
    msg = make_message(frm=SENDER, to=RCPT, subject="GTUBE test", body_lines=[GTUBE])
    p, s, [r] = deliver(portier, sink, client, [rspamd.section("rspamd")], ["milter:rspamd"],
                        [msg], expect=None)
    assert r.code // 100 == 5 and "Gtube" in r.text, r            # rspamd 3.4: 554 5.7.1
    assert p.wait_log(r"event=milter milter=rspamd stage=eom action=reject")
    s.assert_nothing(portier=p)
    [txn] = p.txns()
    qid = "%s.%s" % (txn["id"], txn["txn"])          # as in portier's Received: id
    assert "(default: S (reject): " in rspamd_task(rspamd, qid)


def test_rspamd_headers_on_clean_mail(portier, sink, client, rspamd):
    """A clean message is delivered with the headers milter_headers.conf asks for, the body
    unchanged.  rspamd got what Postfix would give it: the client's address, the envelope
    (one recipient, From: equal to MAIL FROM) and portier's queue id in X-Rspamd-Queue-Id;
    it made no DNS request."""
    msg = make_message(frm=SENDER, to=RCPT, subject="meeting",
                       body_lines=["Just a normal message about the meeting tomorrow."])
    p, s, _ = deliver(portier, sink, client, [rspamd.section("rspamd")], ["milter:rspamd"], [msg])
    [got] = s.wait_messages(1)
    [result] = header_values(got, "X-Spamd-Result")
    assert result.startswith("default: False ["), result
    assert "RCPT_COUNT_ONE(0.00)[1]" in result and "FROM_EQ_ENVFROM" in result, result
    [status] = header_values(got, "X-Spam-Status")
    assert status.startswith("No, score="), status
    qid = peers.check_portier_received(got.portier_received()[0]).group("id")
    assert header_values(got, "X-Rspamd-Queue-Id") == [qid], content_headers(got)
    assert received(s).split(b"\r\n\r\n", 1)[1] == msg.split(b"\r\n\r\n", 1)[1]
    line = rspamd_task(rspamd, qid)
    for want in ("ip: 127.0.0.1,", "from: <%s>," % SENDER, "rcpts: <%s>," % RCPT,
                 "dns req: 0,"):
        assert want in line, (want, line)


def test_rspamd_sees_quit(portier, sink, client, rspamd):
    """Every milter connection portier opens (its start-up probe's session, a session with a
    message) ends with QUIT, as Postfix ends them: rspamd logs each as finished, none as
    closed abnormally (its "Unexpected EOF" when the MTA just hangs up)."""
    before = len(rspamd.log_text())
    msg = make_message(frm=SENDER, to=RCPT, subject="quit")
    p, s, _ = deliver(portier, sink, client, [rspamd.section("rspamd")], ["milter:rspamd"], [msg])
    s.wait_messages(1)
    p.wait_log(r"event=disconnect client=127.0.0.1 transactions=1")

    def ends():
        log = rspamd.log_text()[before:]
        return (log.count("accepted milter connection"), log.count("finished milter connection"),
                log.count("abnormally closing milter connection"))
    peers.wait_until(lambda: ends()[0] >= 2 and sum(ends()[1:]) == ends()[0], 5)
    accepted, finished, abnormal = ends()
    assert accepted >= 2 and finished == accepted and abnormal == 0, (
        "milter connections accepted %d, finished %d, closed abnormally %d:\n%s"
        % (accepted, finished, abnormal, rspamd.log_text()[before:][-5000:]))


# ---------------------------------------------------------------------------------------------
# OpenDKIM
# ---------------------------------------------------------------------------------------------

def test_opendkim_signs(portier, sink, client, opendkim):
    """From: example.test from 127.0.0.1 (OpenDKIM's InternalHosts): OpenDKIM signs it
    (relaxed/simple, its key sel1); dkimpy verifies the signature on what the backend got, and
    refuses it once the body is changed.  Signed, not verified: no Authentication-Results."""
    msg = make_message(frm=SENDER, to=RCPT, subject="signed by opendkim")
    p, s, _ = deliver(portier, sink, client, [opendkim.section("opendkim")], ["milter:opendkim"],
                      [msg])
    raw = received(s)
    [sig] = sig_fields(raw)
    t = tags(sig)
    assert (t["d"], t["s"], t["c"]) == ("example.test", "sel1", "relaxed/simple"), t
    assert "subject" in t["h"].lower().split(":"), t
    assert dkimpy_results(opendkim.keys, raw) == [True]
    head, body = raw.split(b"\r\n\r\n", 1)
    assert dkimpy_results(opendkim.keys, head + b"\r\n\r\n" + body + b"tampered\r\n") == [False]
    assert field_values(raw, "Authentication-Results") == []


def signed_by_signer(signer, body_line, forged_ar):
    """A message From: signer.test signed with dkimpy (relaxed/simple) below a forged
    Authentication-Results claiming portier's authserv-id (not in h=)."""
    key, _ = signer
    msg = make_message(frm="bob@signer.test", to=RCPT, subject="pre-signed",
                       body_lines=[body_line])
    sig = dkim.sign(msg, b"sel2", b"signer.test", key, canonicalize=(b"relaxed", b"simple"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return forged_ar + sig + msg


def test_opendkim_verifies(portier, sink, client, opendkim, signer):
    """A message signed by signer.test (dkimpy): OpenDKIM's Authentication-Results says
    dkim=pass header.d=signer.test; a copy whose body was changed after signing gets dkim=fail.
    OpenDKIM writes as portier's authserv-id (mx.example.test): portier keeps the milter's
    field and drops the forged one the client sent."""
    forged = ("Authentication-Results: %s; dkim=pass header.d=forged.test\r\n"
              % peers.HOSTNAME).encode()
    good = signed_by_signer(signer, "hello from signer.test", forged)
    bad = good.replace(b"hello from signer.test", b"tampered body")
    p, s, _ = deliver(portier, sink, client, [opendkim.section("opendkim")], ["milter:opendkim"],
                      [good, bad], sender="bob@signer.test")
    s.wait_messages(2)
    results = {}
    for n in (1, 2):
        raw = received(s, n)
        [ar] = field_values(raw, "Authentication-Results")
        assert ar.startswith(peers.HOSTNAME + ";") and "forged.test" not in ar, ar
        results[b"tampered body" in raw] = (ar, dkimpy_results(signer[1], raw))
    ar, verdict = results[False]
    assert "dkim=pass" in ar and "header.d=signer.test" in ar and "header.s=sel2" in ar, ar
    assert verdict == [True]
    ar, verdict = results[True]
    assert "dkim=fail" in ar and "header.d=signer.test" in ar, ar
    assert verdict == [False]


# ---------------------------------------------------------------------------------------------
# portier's dkim-sign after a milter's edits
# ---------------------------------------------------------------------------------------------

def test_dkim_sign_after_test_milter_edits(portier, sink, client, milter, keys):
    """filters = milter:tm dkim-sign: the test milter changes Subject and adds X-Added; the
    delivered message carries both, signed (h= covers them): dkimpy verifies it, and refuses
    it with the original Subject put back or X-Added taken out."""
    m = milter()
    msg = make_message(frm=SENDER, to=RCPT, subject="original subject",
                       headers=[("X-Test-Milter", "chgheader Subject 1 changed by the milter"),
                                ("X-Test-Milter", "addheader X-Added added by the milter")])
    sign = dkim_section("example.test:rsa:%s" % keys.rsa,
                        headers="from to subject date message-id x-added")
    _, s, _ = deliver(portier, sink, client, [m.section(), sign], ["milter:tm", "dkim-sign"],
                      [msg])
    raw = received(s)
    assert field_values(raw, "Subject") == ["changed by the milter"], raw
    assert field_values(raw, "X-Added") == ["added by the milter"], raw
    [sig] = sig_fields(raw)
    h = tags(sig)["h"].lower().split(":")
    assert "subject" in h and "x-added" in h, h
    assert dkimpy_results(keys, raw) == [True]
    assert dkimpy_results(keys, raw.replace(b"Subject: changed by the milter",
                                            b"Subject: original subject")) == [False]
    assert dkimpy_results(keys, raw.replace(b"X-Added: added by the milter\r\n", b"")) == [False]


def test_dkim_sign_after_rspamd_headers(portier, sink, client, rspamd, keys):
    """filters = milter:rspamd dkim-sign, h= naming rspamd's fields: the folded X-Spamd-Result
    and X-Spam-Status rspamd added are signed as delivered; dkimpy verifies."""
    sign = dkim_section("example.test:ed:%s" % keys.ed,
                        headers="from subject date x-spamd-result x-spam-status")
    msg = make_message(frm=SENDER, to=RCPT, subject="signed after rspamd")
    _, s, _ = deliver(portier, sink, client, [rspamd.section("rspamd"), sign],
                      ["milter:rspamd", "dkim-sign"], [msg])
    raw = received(s)
    assert field_values(raw, "X-Spamd-Result") and field_values(raw, "X-Spam-Status"), raw
    [sig] = sig_fields(raw)
    h = tags(sig)["h"].lower().split(":")
    assert "x-spamd-result" in h and "x-spam-status" in h, h
    assert dkimpy_results(keys, raw) == [True]
    assert dkimpy_results(keys, raw.replace(b"X-Spam-Status: No", b"X-Spam-Status: Yes")) \
        == [False]

"""test_testmilter_probe.py - tests/milters/testmilter does what tests/milters/README says, driven
by tests/milters/probe.py (a minimal MTA side of the milter protocol, not portier's client): the
negotiation options, every HELO/MAIL/RCPT/header/body trigger, every end-of-message command, the
log lines.  The milter client's tests (test_milter.py) rely on this tool; a change to it that
breaks a trigger shows up here first, without portier in between."""
import hashlib
import os
import shutil
import struct
import sys

import pytest

import peers
from milters import SRCDIR, TestMilter

sys.path.insert(0, os.path.join(SRCDIR, "tests", "milters"))
import probe  # noqa: E402
from probe import cstr  # noqa: E402

CONNECT4 = cstr("client.example") + b"4" + struct.pack(">H", 4711) + cstr("192.0.2.1")
NOSKIP = probe.PROTO_ALL & ~0x400


def stop_checked(m):
    """Stop by PID: SIGTERM must end it at once with status 0 and no sanitizer report."""
    rc = m.stop(timeout=3)
    out = m.log_text()
    shutil.rmtree(m.tmp, ignore_errors=True)
    assert rc == 0, "testmilter exited with %r on SIGTERM:\n%s" % (rc, out)
    assert not any(mark in out for mark in peers.SANITIZER_MARKS), out


@pytest.fixture(scope="module")
def tm():
    """One testmilter with the default options, for the tests that only read replies."""
    m = TestMilter("tm")
    yield m
    stop_checked(m)


@pytest.fixture
def milter():
    """Factory: testmilter NAME with extra options, stopped (and checked) after the test."""
    started = []

    def start(*args, name="tm"):
        started.append(TestMilter(name, args))
        return started[-1]

    yield start
    for m in started:
        stop_checked(m)


def session(m, actions=probe.ACTIONS_ALL, proto=probe.PROTO_ALL):
    p = probe.Probe("inet:%d@127.0.0.1" % m.port, timeout=5)
    return p, p.negotiate(actions, proto)


def shown(replies):
    return [probe.show(c, d) for c, d in replies]


def message(p, helo="client.test", sender="<a@x.test>", rcpts=("<b@y.test>",), headers=(),
            body=b"hello\r\n"):
    """C H M R... T L... N B E, every reply but E's CONTINUE (or none); E's replies."""
    for cmd, data in [("C", CONNECT4), ("H", cstr(helo)), ("M", cstr(sender))] + \
            [("R", cstr(r)) for r in rcpts] + [("T", b"")] + \
            [("L", cstr(*h.split(": ", 1))) for h in headers] + [("N", b""), ("B", body)]:
        assert shown(p.command(cmd, data)) in (["c"], []), cmd    # []: no reply negotiated
    return shown(p.command("E"))


def test_negotiate_default(tm):
    p, neg = session(tm)
    p.close()
    assert neg == (6, 0x1ff, 0x400, {})          # every action offered, SKIP, nothing else
    p, neg = session(tm, actions=0x3f, proto=NOSKIP)
    p.close()
    assert neg == (6, 0x3f, 0, {})
    lines = tm.wait_event("negotiate", 2)
    assert lines[0][0] == "f0=0x1ff f1=0x1fffff f2=0x0 f3=0x0 req_f0=0x1ff req_f1=0x400"


def test_negotiate_options(milter):
    m = milter("-A", "3", "-P", "0x80", "-L", "-S", "connect:j {client_addr}",
               "-S", "mail:{auth_authen}")
    p, neg = session(m)
    p.close()
    assert neg == (6, 0x103, 0x100480, {0: "j {client_addr}", 2: "{auth_authen}"})
    p, neg = session(m, actions=0xff)                   # no SETSYMLIST offered: no lists
    p.close()
    assert neg == (6, 0x3, 0x100480, {})


@pytest.mark.parametrize("verdict,code", [("reject", "r"), ("tempfail", "t"), ("accept", "a"),
                                          ("discard", "d"), ("continue", "c")])
def test_connect_verdict(milter, verdict, code):
    p, _ = session(milter("-c", verdict))
    assert shown(p.command("C", CONNECT4)) == [code]
    p.close()


@pytest.mark.parametrize("name,reply", [
    ("reject.helo.test", "r"), ("tempfail.helo.test", "t"), ("accept.helo.test", "a"),
    ("discard.helo.test", "d"), ("reply.helo.test", "y 554 5.7.0 helo refused by testmilter"),
    ("other.helo.test", "c")])
def test_helo(tm, name, reply):
    p, _ = session(tm)
    p.command("C", CONNECT4)
    assert shown(p.command("H", cstr(name))) == [reply]
    p.close()


@pytest.mark.parametrize("local,reply", [
    ("mreject", "r"), ("mtempfail", "t"), ("mdiscard", "d"), ("maccept", "a"),
    ("mreply", "y 553 5.1.8 sender refused by testmilter"),
    ("mmulti", "y 550-5.7.1 first line\\r\\n550-5.7.1 second line\\r\\n550 5.7.1 third line"),
    ("MTreply-x", "y 451 4.7.1 try later (testmilter)"), ("plain", "c")])
def test_mail(tm, local, reply):
    p, _ = session(tm)
    p.command("C", CONNECT4)
    p.command("H", cstr("client.test"))
    assert shown(p.command("M", cstr("<@relay.test:%s@x.test>" % local, "SIZE=10"))) == [reply]
    p.close()


@pytest.mark.parametrize("local,reply", [
    ("rreject", "r"), ("rtempfail", "t"), ("rdiscard", "d"), ("raccept", "a"),
    ("rreply", "y 550 5.1.1 no such user here (testmilter)")])
def test_rcpt(tm, local, reply):
    p, _ = session(tm)
    for cmd, data in (("C", CONNECT4), ("H", cstr("client.test")), ("M", cstr("<a@x.test>"))):
        p.command(cmd, data)
    assert shown(p.command("R", cstr("<%s@y.test>" % local, "NOTIFY=NEVER"))) == [reply]
    if reply != "a":                # a refused recipient leaves the transaction going
        assert shown(p.command("R", cstr("<ok@y.test>"))) == ["c"]
    p.close()


def test_header_reject(tm, milter):
    p, _ = session(tm)
    for cmd, data in (("C", CONNECT4), ("H", cstr("c.test")), ("M", cstr("<a@x.test>")),
                      ("R", cstr("<b@y.test>")), ("T", b"")):
        p.command(cmd, data)
    assert shown(p.command("L", cstr("X-Reject-At-Header", "1"))) == ["r"]
    p.close()
    # without replies to headers it cannot reject there
    p, neg = session(milter("-P", "80"))
    assert neg[2] & 0x80
    assert message(p, headers=["X-Reject-At-Header: 1"]) == ["c"]
    p.close()


def test_body_skip(tm):
    p, _ = session(tm)
    for cmd, data in (("C", CONNECT4), ("H", cstr("c.test")), ("M", cstr("<a@x.test>")),
                      ("R", cstr("<b@y.test>")), ("T", b""), ("N", b"")):
        p.command(cmd, data)
    assert shown(p.command("B", b"abc")) == ["c"]
    assert shown(p.command("B", b"xxSKIPMExx")) == ["s"]
    assert shown(p.command("E")) == ["c"]
    p.close()
    p, _ = session(tm, proto=NOSKIP)                   # the MTA cannot skip: no 's'
    for cmd, data in (("C", CONNECT4), ("H", cstr("c.test")), ("M", cstr("<a@x.test>")),
                      ("R", cstr("<b@y.test>")), ("T", b""), ("N", b"")):
        p.command(cmd, data)
    assert shown(p.command("B", b"xxSKIPMExx")) == ["c"]
    p.close()


def test_eom_modifications(milter):
    m = milter(name="one")
    p, _ = session(m)
    got = message(p, headers=[
        "X-Test-Milter: addheader X-A one\\n\ttwo",
        "X-Test-Milter: insheader 0 X-First 1",
        "X-Test-Milter: one: chgheader Subject 1 new subject",
        "X-Test-Milter: two: addheader X-Not-Me 1",
        "X-Test-Milter: delheader X-Gone 2",
        "X-Test-Milter: addrcpt <c@z.test>",
        "X-Test-Milter: addrcpt_par <d@z.test> NOTIFY=NEVER ORCPT=rfc822;d@z.test",
        "X-Test-Milter: delrcpt <b@y.test>",
        "X-Test-Milter: chgfrom <new@x.test> SIZE=5",
        "X-Test-Milter: chgfrom <>",
        "X-Test-Milter: replbody new\\nbody\\n",
        "X-Test-Milter: quarantine held by test",
        "X-Test-Milter: no-such-command x",
    ])
    p.close()
    assert got == [
        "h X-A: one\\r\\n\\ttwo", "i 0 X-First: 1", "m 1 Subject: new subject", "m 2 X-Gone: ",
        "+ <c@z.test>", "2 <d@z.test> NOTIFY=NEVER ORCPT=rfc822;d@z.test", "- <b@y.test>",
        "e <new@x.test> SIZE=5", "e <>", "b 5 b'new\\r\\n'", "b 6 b'body\\r\\n'",
        "q held by test", "c"]
    did = [a for a, _ in m.events("did")]
    assert len(did) == 11 and all(a.endswith(" rc=0") for a in did), did
    assert "chgheader Subject 1 new subject rc=0" in did
    assert not any("X-Not-Me" in a for a in did)
    assert [a for a, _ in m.events("bad-command")] == ["no-such-command x rc=-1"]


@pytest.mark.parametrize("command,replies", [
    ("reject", ["r"]), ("tempfail", ["t"]), ("discard", ["d"]), ("accept", ["a"]),
    ("replycode 451 4.3.2 wait a bit", ["y 451 4.3.2 wait a bit"]),
    ("replycode 550 5.7.1 no\\nway", ["r"]),                  # CRLF in text: libmilter refuses
    ("replycode 250 2.0.0 ok", ["r"]),                        # not 4xx/5xx: plain reject
    ("mlreply 451 4.7.1 a|b", ["y 451-4.7.1 a\\r\\n451 4.7.1 b"]),
    ("progress 1", ["p", "c"]), ("sleep 0", ["c"])])
def test_eom_verdicts(tm, command, replies):
    p, _ = session(tm)
    assert message(p, headers=["X-Test-Milter: " + command]) == replies
    p.close()


def test_action_not_negotiated(milter):
    m = milter("-A", "1")
    p, neg = session(m)
    assert neg[1] == 0x1
    assert message(p, headers=["X-Test-Milter: chgfrom <n@x.test>",
                               "X-Test-Milter: addheader X-Ok 1"]) == ["h X-Ok: 1", "c"]
    p.close()
    assert [a for a, _ in m.wait_event("did", 2)] == ["chgfrom <n@x.test> rc=-1",
                                                        "addheader X-Ok 1 rc=0"]


def test_log_lines(milter):
    m = milter("-L", name="log")
    p, _ = session(m)
    p.macros("C", [("j", "mx.test"), ("{client_addr}", "192.0.2.1"), ("{daemon_name}", "a b\tc")])
    p.command("C", CONNECT4)
    p.command("H", cstr("client.test"))
    p.macros("M", [("i", "QID1"), ("{auth_authen}", "alice\\")])
    p.command("M", cstr("<>", "BODY=8BITMIME"))
    p.command("R", cstr("<b@y.test>"))
    p.command("T")
    p.command("L", cstr("Subject", " caf\xe9\x01 \\x"))
    p.command("N")
    body = bytes(range(256)) * 300
    for i in range(0, len(body), 65535):
        p.command("B", body[i:i + 65535])
    p.command("E")
    p.send("K")                 # next SMTP session on this milter connection (only after a message)
    assert shown(p.command("C", cstr("v6.example") + b"6" + struct.pack(">H", 25) +
                           cstr("2001:db8::1"))) == ["c"]
    p.send("Q")
    p.close()
    for c in (cstr("local.example") + b"L" + struct.pack(">H", 0) + cstr("/run/sock"),
              cstr("[unknown]") + b"U"):
        p, _ = session(m)
        assert shown(p.command("C", c)) == ["c"]
        p.close()
    m.wait_event("close", 4)
    lines = m.lines()
    macros = " | j=mx.test {daemon_name}=a b\\tc {client_addr}=192.0.2.1"
    assert lines[1:8] == [
        "log connect host=client.example family=4 addr=192.0.2.1 port=4711" + macros,
        "log helo client.test" + macros,
        "log mail <> BODY=8BITMIME" + macros + " {auth_authen}=alice\\\\ i=QID1",
        "log rcpt <b@y.test>" + macros + " {auth_authen}=alice\\\\ i=QID1",
        "log data" + macros + " {auth_authen}=alice\\\\ i=QID1",
        "log header Subject  caf\\xc3\\xa9\\x01 \\\\x" + macros + " {auth_authen}=alice\\\\ i=QID1",
        "log eoh" + macros + " {auth_authen}=alice\\\\ i=QID1"]
    assert [a for a, _ in m.events("body")] == ["65535", "11265"]
    assert m.events("eom")[0][0] == "bodylen=%d bodysha256=%s" % (
        len(body), hashlib.sha256(body).hexdigest())
    assert [a for a, _ in m.events("connect")][1:] == [
        "host=v6.example family=6 addr=2001:db8::1 port=25",
        "host=local.example family=unix addr=/run/sock port=0",
        "host=[unknown] family=unknown addr= port=0"]
    assert len(m.events("negotiate")) == 3 and len(m.events("close")) == 4

"""The milter client, milter:NAME (issue #11): every reply and every modification action through
a full SMTP session against tests/milters/testmilter, a milter built with libmilter, with
smtp-sink as the backend; negotiation options, macros, timeouts and progress; two milters in
one chain; and a milter that misbehaves (tests/milters/rawmilter.py) or is not there at all:
default_action, a log line naming the milter, and the other sessions unaffected."""
import hashlib
import signal
import re
import time

import pytest

import peers
from peers import make_message
from milters import TestMilter, RawMilter
from tlsauth import (certs, tls_server, users_file, tls_context, starttls, auth_plain,  # noqa: F401
                     ALICE, ALICE_PW)

SENDER = "sender@origin.test"
RCPT = "alice@example.test"


@pytest.fixture
def milter(request):
    started = []

    def start(name="tm", args=()):
        m = TestMilter(name=name, args=args)
        started.append(m)
        return m

    request.addfinalizer(lambda: [m.stop() for m in started])
    return start


@pytest.fixture
def rawmilter(request):
    started = []

    def start(mode):
        m = RawMilter(mode)
        started.append(m)
        return m

    request.addfinalizer(lambda: [m.stop() for m in started])
    return start


def start_with(portier, sink, sections, names, listener=None, server=None):
    """portier relaying to a fresh smtp-sink, filters = names, with the [milter] sections."""
    s = sink()
    lst = {"filters": " ".join(names)}
    lst.update(listener or {})
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port, listener=lst, server=server,
                                     extra="".join(sections)))
    return p, s


def one(portier, sink, m, extra=None, **kw):
    return start_with(portier, sink, [m.section(extra)], ["milter:" + m.mname], **kw)


def send(c, rcpts=(RCPT,), msg=None, sender=SENDER, mail_params=""):
    c.cmd("MAIL FROM:<%s>%s" % (sender, " " + mail_params if mail_params else ""),
          expect="250 2.1.0")
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, expect="250 2.1.5")
    return c.send_message(msg or make_message())


def header_values(m, name):
    return [h.split(":", 1)[1].strip() for h in m.headers + content_headers(m)
            if h.split(":", 1)[0].lower() == name.lower()]


def content_headers(m):
    """The header fields below the trace headers, unfolded."""
    head = m.content.split(m.nl + m.nl, 1)[0].decode("utf-8", "replace")
    out = []
    for line in head.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] += " " + line.strip()
        elif line:
            out.append(line)
    return out


def body_of(m):
    return m.content.split(m.nl + m.nl, 1)[1] if (m.nl + m.nl) in m.content else b""


def connect(client, p):
    c = client(p.port)
    c.lport = c.sock.getsockname()[1]
    return c


def mine(events, c):
    """The calls of client c's session: portier's own readiness probe makes a session too."""
    port = "port=%d" % c.lport
    return [e for e in events if port in e[0] or e[1].get("{client_port}") == port[5:]]


def milter_msg(*commands, body_lines=None, headers=()):
    hs = [("X-Test-Milter", c) for c in commands] + list(headers)
    return make_message(headers=hs, body_lines=body_lines)


# ---------------------------------------------------------------------------------------------
# The conversation: macros, stages, connection reuse
# ---------------------------------------------------------------------------------------------

def test_macros_and_stages(portier, sink, client, milter):
    """One message: the milter sees connect (host, family, port), HELO, MAIL and RCPT with their
    ESMTP arguments, DATA, every header as received (no space after the colon), EOH, the body
    (its SHA-256 equal to what the sink got) and EOM, with Postfix's macros at each stage."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start("helo.client.test")
    r = send(c, mail_params="BODY=8BITMIME SIZE=500",
             msg=make_message(headers=[("X-Fold", "first\r\n\tsecond")]))
    assert r.is_(250), r
    c.quit()
    [msg] = s.wait_messages(1)
    [(cargs, cmac)] = mine(m.wait_event("connect"), c)
    assert "family=4" in cargs and "addr=127.0.0.1" in cargs, cargs
    assert cmac["j"] == peers.HOSTNAME and cmac["{daemon_name}"] == "mx", cmac
    assert cmac["{client_addr}"] == "127.0.0.1" and cmac["{daemon_addr}"] == "127.0.0.1", cmac
    assert cmac["{daemon_port}"] == str(p.port), cmac
    assert int(cmac["{client_port}"]) > 0, cmac
    [(hargs, _)] = m.events("helo")
    assert hargs == "helo.client.test"
    [(margs, mmac)] = m.events("mail")
    assert margs.split()[0] == "<%s>" % SENDER and set(margs.split()[1:]) >= {"BODY=8BITMIME"}
    assert mmac["{mail_addr}"] == SENDER and mmac["i"], mmac
    assert "{auth_authen}" not in mmac, mmac    # no login: the macro is not sent
    [(rargs, rmac)] = m.events("rcpt")
    assert rargs == "<%s>" % RCPT and rmac["{rcpt_addr}"] == RCPT, rmac
    assert rmac["{rcpt_host}"] == "example.test" and rmac["{rcpt_mailer}"] == "smtp", rmac
    assert m.events("data") and m.events("eoh")
    hdrs = [a for a, _ in m.events("header")]
    assert any(a.startswith("Subject ") and not a.startswith("Subject  ") for a in hdrs), hdrs
    assert "X-Fold first\\n\\tsecond" in hdrs, hdrs      # folded with LF alone, as Postfix
    [(eargs, emac)] = m.wait_event("eom")
    want = hashlib.sha256(body_of(msg).replace(b"\n", b"\r\n")
                          if msg.nl == b"\n" else body_of(msg)).hexdigest()
    assert "bodysha256=%s" % want in eargs, (eargs, body_of(msg))
    assert emac["i"] == mmac["i"]


def test_tls_and_auth_macros(tls_server, client, certs, milter):
    """A submission session: HELO again after STARTTLS with {tls_version} and {cipher}, and at
    MAIL the login in {auth_authen} and its mechanism in {auth_type}."""
    m = milter()
    srv = tls_server(listener={"role": "submission", "tls": "starttls",
                               "filters": "milter:tm"}, auth="default", extra=m.section())
    c = client(srv.port)
    c.lport = c.sock.getsockname()[1]
    c.start()
    starttls(c, tls_context(certs))
    c.ehlo()
    auth_plain(c, ALICE, ALICE_PW)
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250")
    helos = mine(m.wait_event("helo", 2), c)
    assert len(helos) == 2, m.lines()
    assert "{tls_version}" not in helos[0][1] and helos[1][1]["{tls_version}"] == "TLSv1.3", \
        helos
    assert helos[1][1]["{cipher}"], helos
    [(_, mac)] = mine(m.wait_event("mail"), c)
    assert mac["{auth_authen}"] == ALICE and mac["{auth_type}"] == "PLAIN", mac


def test_connection_kept_across_transactions(portier, sink, client, milter):
    """Two transactions and an RSET in one SMTP session: one milter connection (one connect,
    one close), an abort for the transaction the client reset, two messages delivered."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c).is_(250)
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250")
    c.cmd("RSET", expect="250")
    assert send(c).is_(250)
    c.quit()
    s.wait_messages(2)
    assert peers.wait_until(lambda: mine(m.events("close"), c), 10), m.lines()
    assert len(mine(m.events("connect"), c)) == 1, m.lines()
    assert len(mine(m.events("close"), c)) == 1, m.lines()
    assert len(m.events("mail")) == 3 and len(m.events("eom")) == 2, m.lines()
    assert len(m.events("abort")) >= 1, m.lines()


# ---------------------------------------------------------------------------------------------
# Replies at each stage
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict,code", [("reject", 5), ("tempfail", 4)])
def test_connect_refused(portier, sink, client, milter, verdict, code):
    """A reject or tempfail at connect refuses the session with that class; the log names the
    milter."""
    m = milter(args=("-c", verdict))
    p, s = one(portier, sink, m)
    c = connect(client, p)
    r = c.read_reply()
    if r.code == 220:
        r = c.cmd("EHLO client.test")
    assert r.code // 100 == code, r
    assert p.wait_log(r"event=milter milter=tm stage=connect action=%s" % verdict)


@pytest.mark.parametrize("helo,reply", [
    ("reject.helo.test", "550 5.7.1"),
    ("tempfail.helo.test", "451 4.7.1"),
    ("reply.helo.test", "554 5.7.0 helo refused by testmilter"),
])
def test_helo_replies(portier, sink, client, milter, helo, reply):
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.greeting()
    r = c.cmd("EHLO " + helo)
    assert r.text.startswith(reply), r.text


@pytest.mark.parametrize("local,reply", [
    ("mreject", "550 5.7.1 Command rejected"),
    ("mtempfail", "451 4.7.1"),
    ("mreply", "553 5.1.8 sender refused by testmilter"),
    ("mtreply", "451 4.7.1 try later (testmilter)"),
])
def test_mail_replies(portier, sink, client, milter, local, reply):
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    r = c.cmd("MAIL FROM:<%s@origin.test>" % local)
    assert r.text.startswith(reply), r.text
    # the session goes on: the next transaction reaches the milter after an abort
    assert send(c).is_(250)
    c.quit()
    s.wait_messages(1)


def test_mail_multiline_reply(portier, sink, client, milter):
    """smfi_setmlreply: the client gets the three lines, each with the code and enhanced code."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    r = c.cmd("MAIL FROM:<mmulti@origin.test>")
    assert r.code == 550 and len(r.lines) == 3, r.lines
    assert [l.decode() for l in r.lines] == ["550-5.7.1 first line", "550-5.7.1 second line",
                                             "550 5.7.1 third line"], r.lines


def test_mail_accept_skips_milter_for_message(portier, sink, client, milter):
    """ACCEPT at MAIL: the milter sees nothing more of that message; it is delivered."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c, sender="maccept@origin.test").is_(250)
    c.quit()
    s.wait_messages(1)
    assert peers.wait_until(lambda: mine(m.events("close"), c), 10), m.lines()
    assert not m.events("rcpt") and not m.events("eom"), m.lines()


def test_mail_discard(portier, sink, client, milter):
    """DISCARD at MAIL: the client is told 250, the backend gets nothing."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    c.cmd("MAIL FROM:<mdiscard@origin.test>", expect="250")
    c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
    assert c.send_message(make_message()).is_(250)
    c.quit()
    s.assert_nothing(portier=p)


def test_rcpt_reject_one_recipient(portier, sink, client, milter):
    """A reject at RCPT refuses that recipient only; the reply text as the milter set it."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250")
    r = c.cmd("RCPT TO:<rreply@example.test>")
    assert r.text.startswith("550 5.1.1 no such user here (testmilter)"), r.text
    r = c.cmd("RCPT TO:<rtempfail@example.test>")
    assert r.code == 451, r.text
    c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
    assert c.send_message(make_message()).is_(250)
    c.quit()
    [msg] = s.wait_messages(1)
    assert msg.rcpts == [RCPT]


@pytest.mark.parametrize("command,reply", [
    ("reject", "550 5.7.1 Command rejected"),
    ("tempfail", "451 4.7.1"),
    ("replycode 554 5.7.9 no thanks", "554 5.7.9 no thanks"),
])
def test_eom_replies(portier, sink, client, milter, command, reply):
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    r = send(c, msg=milter_msg(command))
    assert r.text.startswith(reply), r.text
    c.quit()
    s.assert_nothing(portier=p)
    assert p.wait_log(r"event=milter milter=tm stage=eom action=")


def test_eom_mlreply(portier, sink, client, milter):
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    r = send(c, msg=milter_msg("mlreply 450 4.7.2 one|two|three"))
    assert [l.decode() for l in r.lines] == ["450-4.7.2 one", "450-4.7.2 two", "450 4.7.2 three"]


def test_eom_discard(portier, sink, client, milter):
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c, msg=milter_msg("discard")).is_(250)
    c.quit()
    s.assert_nothing(portier=p)


def test_header_reject(portier, sink, client, milter):
    """A reject answered to one header field refuses the message."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    r = send(c, msg=make_message(headers=[("X-Reject-At-Header", "yes")]))
    assert r.code == 550, r.text
    c.quit()
    s.assert_nothing(portier=p)


# ---------------------------------------------------------------------------------------------
# Modifications
# ---------------------------------------------------------------------------------------------

def test_header_modifications(portier, sink, client, milter):
    """addheader, insheader (index 0: the top of the header block), chgheader, delheader: the
    backend gets the block as edited, folds kept, and the milter's log shows rc=0 for each."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    msg = milter_msg("addheader X-Added hello world",
                     "insheader 0 X-Top first\\n\tfolded",
                     "chgheader Subject 1 changed subject",
                     "delheader X-Gone 1",
                     headers=[("X-Gone", "bye")])
    assert send(c, msg=msg).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    hs = content_headers(got)
    names = [h.split(":", 1)[0] for h in hs]
    assert names[0] == "X-Top" and hs[0] == "X-Top: first folded", hs
    assert "X-Added: hello world" in hs and "X-Gone" not in names, hs
    assert header_values(got, "Subject") == ["changed subject"], hs
    assert b"X-Top: first\r\n\tfolded" in got.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert all("rc=0" in a for a, _ in m.events("did")), m.lines()


def test_envelope_modifications(portier, sink, client, milter):
    """chgfrom with arguments, addrcpt, addrcpt_par with NOTIFY, delrcpt: the backend gets the
    edited envelope."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    msg = milter_msg("chgfrom <new@origin.test> RET=HDRS",
                     "addrcpt <bob@example.test>",
                     "addrcpt_par <carol@example.test> NOTIFY=NEVER",
                     "delrcpt <%s>" % RCPT)
    assert send(c, rcpts=(RCPT, "dave@example.test"), msg=msg).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert got.mail_from == "new@origin.test" and "RET=HDRS" in got.mail_args, got.mail_args
    assert sorted(got.rcpts) == ["bob@example.test", "carol@example.test",
                                 "dave@example.test"], got.rcpts
    assert any("NOTIFY=NEVER" in a for a in got.rcpt_args), got.rcpt_args


def test_replace_body(portier, sink, client, milter):
    """replbody (sent in two pieces): the backend gets the new body, CRLF line ends."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c, msg=milter_msg("replbody new body line 1\\nline 2\\n")).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert body_of(got).replace(b"\r\n", b"\n") == b"new body line 1\nline 2\n", got.content


def test_quarantine(portier, sink, client, milter):
    """quarantine: delivered, marked X-Portier-Quarantine with the milter's reason."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c, msg=milter_msg("quarantine looks like spam")).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert any("looks like spam" in v for v in header_values(got, "X-Portier-Quarantine")), \
        content_headers(got)


def test_action_not_negotiated_fails(portier, sink, client, milter):
    """A milter that asked only for ADDHDRS (-A 0x01): its chgheader is refused by libmilter
    itself (rc=-1), the rest goes through."""
    m = milter(args=("-A", "0x01"))
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c, msg=milter_msg("chgheader Subject 1 x", "addheader X-Ok yes")).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert "X-Ok: yes" in content_headers(got)
    did = [a for a, _ in m.events("did")]
    assert any(a.startswith("chgheader") and "rc=-1" in a for a in did), did


def test_two_milters_see_each_others_edits(portier, sink, client, milter):
    """Two milters in one chain: the second sees the header the first added and the body it
    replaced; both edits reach the backend; then dkim-style final filters would see them too."""
    m1 = milter(name="m1")
    m2 = milter(name="m2")
    p, s = start_with(portier, sink, [m1.section(), m2.section()], ["milter:m1", "milter:m2"])
    c = connect(client, p)
    c.start()
    msg = milter_msg("m1: addheader X-From-M1 one", "m1: replbody replaced by m1\\n",
                     "m2: addheader X-From-M2 two")
    assert send(c, msg=msg).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    hs = content_headers(got)
    assert "X-From-M1: one" in hs and "X-From-M2: two" in hs, hs
    seen = [a for a, _ in m2.wait_event("header")]
    assert "X-From-M1 one" in seen, seen
    [(eargs, _)] = m2.wait_event("eom")
    assert "bodysha256=%s" % hashlib.sha256(b"replaced by m1\r\n").hexdigest() in eargs, eargs


# ---------------------------------------------------------------------------------------------
# Negotiation options
# ---------------------------------------------------------------------------------------------

def test_no_reply_and_skipped_steps(portier, sink, client, milter):
    """-P 0x80|0x10 (NR_HDR, NOBODY): headers go without replies, no body is sent; the message
    is delivered and the milter's edits at EOM still apply."""
    m = milter(args=("-P", "0x90"))
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c, msg=milter_msg("addheader X-Nr yes")).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert "X-Nr: yes" in content_headers(got)
    assert m.events("header") and not m.events("body"), m.lines()


def test_skip(portier, sink, client, milter):
    """SKIP after the first body chunk: the rest of a 200 KB body is not sent, EOM is."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    lines = ["SKIPME"] + ["x" * 998] * 200
    assert send(c, msg=make_message(body_lines=lines)).is_(250)
    c.quit()
    s.wait_messages(1)
    [(eargs, _)] = m.wait_event("eom")
    assert len(m.events("body")) == 1, m.lines()
    assert int(re.search(r"bodylen=(\d+)", eargs).group(1)) <= 65535


def test_header_leading_space(portier, sink, client, milter):
    """-L (SMFIP_HDR_LEADSPC): the milter gets each value with the space after the colon."""
    m = milter(args=("-L",))
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c).is_(250)
    c.quit()
    s.wait_messages(1)
    hdrs = [a for a, _ in m.wait_event("header")]
    assert any(a.startswith("Subject  ") for a in hdrs), hdrs


def test_symlist_requested_macros(portier, sink, client, milter):
    """The milter's own macro list for MAIL (-S 'mail:{mail_addr} {client_addr}') is honoured:
    at MAIL it gets those and not the default list's {mail_host}."""
    m = milter(args=("-S", "mail:{mail_addr} {client_addr}"))
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    assert send(c).is_(250)
    c.quit()
    s.wait_messages(1)
    [(_, mac)] = m.wait_event("mail")
    assert mac.get("{mail_addr}") == SENDER and "{mail_host}" not in mac, mac


def test_big_body_in_chunks(portier, sink, client, milter):
    """A 3 MB message (over spool_memory: read back from its temp file) reaches the milter in
    chunks of at most 64 KB, whole (the SHA-256 of the body agrees)."""
    m = milter()
    p, s = one(portier, sink, m, server={"spool_memory": "65536"})
    c = connect(client, p)
    c.start()
    body = ["%06d " % i + "y" * 90 for i in range(30000)]
    msg = make_message(body_lines=body)
    assert send(c, msg=msg).is_(250)
    c.quit()
    s.wait_messages(1)
    [(eargs, _)] = m.wait_event("eom")
    want = hashlib.sha256(msg.split(b"\r\n\r\n", 1)[1]).hexdigest()
    assert "bodysha256=" + want in eargs, eargs
    assert all(int(a) <= 65535 for a, _ in m.events("body"))


# ---------------------------------------------------------------------------------------------
# Timeouts and progress
# ---------------------------------------------------------------------------------------------

def test_progress_extends_content_timeout(portier, sink, client, milter):
    """content_timeout = 2 and a milter that takes 4 s at EOM but sends progress every second:
    the message is delivered."""
    m = milter()
    p, s = one(portier, sink, m, extra={"content_timeout": "2"})
    c = connect(client, p)
    c.start()
    assert send(c, msg=milter_msg("progress 4", "addheader X-Slow yes")).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert "X-Slow: yes" in content_headers(got)


@pytest.mark.parametrize("action,code", [("tempfail", 451), ("reject", 550), ("accept", 250)])
def test_content_timeout_default_action(portier, sink, client, milter, action, code):
    """A milter silent for 4 s at EOM with content_timeout = 2: the stage gets default_action,
    the log names the milter and the timeout; with accept the message goes on unedited."""
    m = milter()
    p, s = one(portier, sink, m, extra={"content_timeout": "2", "default_action": action})
    c = connect(client, p)
    c.start()
    t0 = time.monotonic()
    r = send(c, msg=milter_msg("sleep 4", "addheader X-Late yes"))
    assert r.code == code, r.text
    assert time.monotonic() - t0 < 3.8
    assert p.wait_log(r"event=filter_timeout filter=milter:tm stage=data error=\"no answer in 2s\"")
    c.quit()
    if code == 250:
        [got] = s.wait_messages(1)
        assert "X-Late: yes" not in content_headers(got)


def test_connect_timeout(portier, sink, client):
    """A milter socket that accepts the connection but never answers the negotiation, with
    connect_timeout = 1: the session's connect stage fails after 1 s with default_action."""
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    try:
        p, s = start_with(portier, sink, ["[milter mute]\nsocket = inet:127.0.0.1:%d\n"
                                          "connect_timeout = 1\ndefault_action = accept\n"
                                          % ls.getsockname()[1]], ["milter:mute"])
        c = connect(client, p)
        t0 = time.monotonic()
        c.start()
        assert 0.8 < time.monotonic() - t0 < 3.0
        assert p.wait_log(r"event=filter_timeout filter=milter:mute stage=connect "
                          r"error=\"no answer in 1s\" action=accept")
        assert send(c).is_(250)
    finally:
        ls.close()


def test_command_timeout(portier, sink, client, rawmilter):
    """A milter that never answers MAIL: after timeout = 1 the MAIL gets default_action
    (tempfail), and the session's next MAIL too (the milter sits the session out)."""
    m = rawmilter("stall_mail")
    p, s = start_with(portier, sink, [m.section("raw", {"timeout": "1"})], ["milter:raw"])
    c = connect(client, p)
    c.start()
    r = c.cmd("MAIL FROM:<%s>" % SENDER)
    assert r.code == 451, r.text
    assert p.wait_log(r"event=filter_timeout filter=milter:raw stage=mail")
    r = c.cmd("MAIL FROM:<%s>" % SENDER)
    assert r.code == 451, r.text


# ---------------------------------------------------------------------------------------------
# Bad milters: default_action, a log line naming the milter, the other sessions unaffected
# ---------------------------------------------------------------------------------------------

def second_session_flows(p, s, client, n):
    """Another client's mail through the same portier with its other listener free of milters
    is not possible here (one listener): instead, a session that the broken milter accepts by
    default_action = accept is delivered; used by the tests that set accept."""
    c = client(p.port)
    c.start()
    assert send(c).is_(250)
    c.quit()
    s.wait_messages(n)


@pytest.mark.parametrize("mode,stage,why", [
    ("garbage", "mail", r"mail"),
    ("huge_len", "mail", r"packet longer than the limit"),
    ("close_mid", "data", r"closed the connection after body"),
    ("bad_action", "data", r"did not negotiate"),
    ("neg_garbage", "connect", r"negotiation reply too short"),
    ("unknown_reply", "helo", r"unknown reply command"),
    ("bad_y", "rcpt", r"reply code not 4xx or 5xx"),
])
def test_bad_milter(portier, sink, client, rawmilter, mode, stage, why):
    """Each misbehaviour fails the milter at its stage: with default_action = tempfail that
    stage gets 451 4.7.1 and every later one too; the log line names the milter and says why;
    portier stays up (another session works)."""
    m = rawmilter(mode)
    p, s = start_with(portier, sink, [m.section("raw", {"default_action": "tempfail"})],
                      ["milter:raw"])
    c = connect(client, p)
    replies = [c.read_reply()]
    if replies[-1].code == 220:
        replies.append(c.cmd("EHLO client.test"))
    if replies[-1].code == 250:
        replies.append(c.cmd("MAIL FROM:<%s>" % SENDER))
    if replies[-1].code == 250:
        replies.append(c.cmd("RCPT TO:<%s>" % RCPT))
    if replies[-1].code == 250:
        replies.append(c.send_message(make_message(body_lines=["x"] * 10)))
    assert replies[-1].code == 451 and replies[-1].enhanced == "4.7.1", \
        [r.text for r in replies]
    line = p.wait_log(r"event=filter_failed filter=milter:raw stage=%s error=\"[^\"]*%s"
                      % (stage, why))
    assert line, p.log_text()[-3000:]
    c.close()
    c2 = connect(client, p)
    assert c2.read_reply().code in (220, 451)      # portier still serves
    s.assert_nothing(portier=p, txns=0)


def test_milter_not_listening(portier, sink, client):
    """socket = a port nobody listens on, default_action = accept: mail flows, and each session
    logs that the milter failed at connect, naming it and the refusal."""
    port = peers.free_port()
    p, s = start_with(portier, sink,
                      ["[milter gone]\nsocket = inet:127.0.0.1:%d\ndefault_action = accept\n"
                       % port], ["milter:gone"])
    c = connect(client, p)
    c.start()
    assert send(c).is_(250)
    c.quit()
    s.wait_messages(1)
    assert p.wait_log(r"event=filter_failed filter=milter:gone stage=connect "
                      r"error=\"connect to inet:127.0.0.1:%d: Connection refused\" action=accept"
                      % port)


def test_milter_not_listening_tempfail(portier, sink, client):
    """The same with the default default_action: tempfail, 451 at the first stage the client
    can be told (EHLO)."""
    port = peers.free_port()
    p, s = start_with(portier, sink, ["[milter gone]\nsocket = inet:127.0.0.1:%d\n" % port],
                      ["milter:gone"])
    c = connect(client, p)
    r = c.read_reply()
    if r.code == 220:
        r = c.cmd("EHLO client.test")
    assert r.code // 100 == 4, r.text


@pytest.mark.parametrize("mode", ["oldver2", "oldver4"])
def test_old_protocol_version(portier, sink, client, rawmilter, mode):
    """A milter of version 2 or 4 is accepted: its header reaches the backend."""
    m = rawmilter(mode)
    p, s = start_with(portier, sink, [m.section("old")], ["milter:old"])
    c = connect(client, p)
    c.start()
    assert send(c).is_(250)
    c.quit()
    [got] = s.wait_messages(1)
    assert "X-Old-Milter: v%s" % mode[-1] in content_headers(got), content_headers(got)


def test_raw_multiline_reply(portier, sink, client, rawmilter):
    """A 'y' reply of three lines at RCPT: the client gets the three lines."""
    m = rawmilter("multiline_y")
    p, s = start_with(portier, sink, [m.section("raw")], ["milter:raw"])
    c = connect(client, p)
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250")
    r = c.cmd("RCPT TO:<%s>" % RCPT)
    assert [l.decode() for l in r.lines] == ["550-5.7.1 first", "550-5.7.1 second",
                                             "550 5.7.1 third"], r.lines


def test_client_leaves_during_eom(portier, sink, client, milter):
    """The client disconnects while the milter sleeps at EOM: no crash, no leak (ASan), the
    session is logged as ended, and the next client's mail is delivered."""
    m = milter()
    p, s = one(portier, sink, m)
    c = connect(client, p)
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250")
    c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
    c.cmd("DATA", expect="354")
    c.send(peers.dot_stuff(milter_msg("sleep 2")) + b".\r\n")
    time.sleep(0.5)
    c.close()
    assert p.wait_log(r"event=disconnect client=127.0.0.1", timeout=10)
    c2 = connect(client, p)
    c2.start()
    assert send(c2).is_(250)
    c2.quit()
    s.wait_messages(1)


# ---------------------------------------------------------------------------------------------
# Each milter wait against each interruption (the fixture fails on any sanitizer report)
# ---------------------------------------------------------------------------------------------

MILTER_WAITS = {
    # wait point: (rawmilter mode, what the client sends to reach it)
    "mail": ("stall_mail", ["MAIL FROM:<%s>" % SENDER]),
    "eom": ("stall_eom", None),
}


def reach_milter_wait(c, point):
    c.start()
    if point == "mail":
        c.sendline("MAIL FROM:<%s>" % SENDER)
    else:
        c.cmd("MAIL FROM:<%s>" % SENDER, expect="250")
        c.cmd("RCPT TO:<%s>" % RCPT, expect="250")
        c.cmd("DATA", expect="354")
        c.send(peers.dot_stuff(make_message()) + b".\r\n")
    time.sleep(0.5)


@pytest.mark.parametrize("interruption", ["eof", "sigterm", "sighup"])
@pytest.mark.parametrize("point", sorted(MILTER_WAITS))
def test_milter_wait_interrupted(portier, sink, client, rawmilter, point, interruption):
    """A session waits on a silent milter (at MAIL, or at EOM) when the client leaves, portier
    is told to stop (SIGTERM: drain_timeout = 1 and its grace, exit 0 long before the milter's
    timeout of 30 s) or to
    reload (SIGHUP: the waiting session keeps its milter and times out with default_action, the
    next session runs on the new configuration)."""
    m = rawmilter(MILTER_WAITS[point][0])
    limit = "30" if interruption == "sigterm" else "3"
    p, s = start_with(portier, sink, [m.section("raw", {"timeout": limit,
                                                        "content_timeout": limit})],
                      ["milter:raw"], server={"drain_timeout": "1"})
    c = connect(client, p)
    reach_milter_wait(c, point)
    if interruption == "eof":
        c.close()
        assert p.wait_log(r"event=disconnect client=127.0.0.1", timeout=10)
        still = connect(client, p)
        still.start()
        still.quit()
    elif interruption == "sigterm":
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 0, p.log_text()[-3000:]
        # drain_timeout 1 + the 5 s of grace for a session in a wait, not the milter's 30 s
        assert time.monotonic() - t0 < 10, "drain waited for the milter"
    else:
        p.reload(peers.portier_config("smtp:127.0.0.1:%d" % s.port,
                                      server={"drain_timeout": "1", "max_recipients": 7}))
        r = c.read_reply(timeout=12)
        assert r.code == 451, r.text
        c.close()
        c2 = connect(client, p)
        c2.start()
        assert send(c2).is_(250)        # the new configuration has no milter
        c2.quit()
        s.wait_messages(1)


# ---------------------------------------------------------------------------------------------
# portier -t
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section,why", [
    ("", r"\[milter m\] has no socket ="),
    ("socket = tcp:127.0.0.1:1\n", r'socket "tcp:127.0.0.1:1": write inet:HOST:PORT'),
    ("socket = inet:127.0.0.1:70000\n", r"the port a number from 1 to 65535 \(line \d+\)"),
    ("socket = inet:127.0.0.1\n", r"write inet:HOST:PORT"),
    ("socket = unix:\n", r"the socket path is empty"),
    ("socket = inet6:[::1:25\n", r"write inet6:\[ADDRESS\]:PORT"),
    ("socket = inet:25@\n", r"write inet:HOST:PORT"),
    ("socket = inet:127.0.0.1:25\nconnect_timeout = 0\n", r'connect_timeout "0" at line \d+'),
    ("socket = inet:127.0.0.1:25\ncontent_timeout = x\n", r'content_timeout "x" at line \d+'),
    ("socket = inet:127.0.0.1:25\nthreads = 2\n", r"threads: this filter never blocks a thread"),
    ("socket = inet:127.0.0.1:25\nsockett = x\n", r'unknown key "sockett" at line \d+'),
])
def test_milter_section_refused(tmpdir_0755, section, why):
    """portier -t refuses a [milter NAME] it cannot use, naming the key, and exits 2; the
    accepted forms (inet:PORT@HOST, inet6:[::1]:PORT, unix:PATH) pass."""
    import os
    path = os.path.join(tmpdir_0755, "portier.conf")
    cfg = peers.portier_config("smtp:127.0.0.1:25", listener={"filters": "milter:m"},
                               extra="[milter m]\n" + section).replace("{port}", "2525")
    with open(path, "w") as f:
        f.write(cfg)
    rc, out = peers.run_portier_check(path)
    assert rc == 2 and re.search(why, out), (rc, out)


@pytest.mark.parametrize("spec", ["inet:25@127.0.0.1", "inet6:[::1]:25", "unix:/run/m.sock",
                                  "inet:localhost:25"])
def test_milter_socket_forms(tmpdir_0755, spec):
    import os
    path = os.path.join(tmpdir_0755, "portier.conf")
    cfg = peers.portier_config("smtp:127.0.0.1:25", listener={"filters": "milter:m"},
                               extra="[milter m]\nsocket = %s\n" % spec).replace("{port}", "2525")
    with open(path, "w") as f:
        f.write(cfg)
    rc, out = peers.run_portier_check(path)
    assert rc == 0, out

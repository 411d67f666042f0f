"""The SMTP dialogue: banner, EHLO, simple commands, command order, syntax, parameters,
recipient policy.  Backend: smtp-sink."""
import pytest

import peers
from peers import HOSTNAME, make_message

EXPECTED_EXTENSIONS = {"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                       "CHUNKING", "DSN"}


def test_greeting(relay_pair, client):
    """The banner is exactly '220 HOSTNAME ESMTP portier'."""
    p, s = relay_pair
    c = client(p.port)
    r = c.greeting()
    assert r.lines == [("220 %s ESMTP portier" % HOSTNAME).encode()]


def test_ehlo_advertises_exactly_the_extensions(make_pair, client):
    """EHLO answers 250-HOSTNAME and the set PIPELINING, SIZE <max_message_size>, 8BITMIME,
    ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, DSN (no STARTTLS with tls = none, no AUTH on mx)."""
    p, s = make_pair(server={"max_message_size": 123456})
    c = client(p.port)
    c.greeting()
    r = c.ehlo("client.test")
    assert r.code == 250
    assert r.texts()[0].split()[0] == HOSTNAME, r.text
    kw = peers.ehlo_keywords(r)
    assert set(kw) == EXPECTED_EXTENSIONS, r.text
    assert kw["SIZE"] == "123456", r.text


def test_helo_reply(relay_pair, client):
    """HELO answers exactly '250 HOSTNAME'."""
    p, s = relay_pair
    c = client(p.port)
    c.greeting()
    r = c.cmd("HELO client.test")
    assert r.lines == [("250 %s" % HOSTNAME).encode()]


def test_simple_commands(relay_pair, client):
    """NOOP and RSET -> 250 2.0.0, VRFY -> 252 2.5.0, HELP -> 214 2.0.0, QUIT -> 221 2.0.0 and
    the server closes the connection."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("NOOP", expect="250 2.0.0")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("VRFY alice", expect="252 2.5.0")
    c.cmd("HELP", expect="214 2.0.0")
    c.cmd("QUIT", expect="221 2.0.0")
    c.expect_closed()


def test_simple_commands_before_helo(relay_pair, client):
    """NOOP, RSET, HELP and QUIT work before HELO/EHLO."""
    p, s = relay_pair
    c = client(p.port)
    c.greeting()
    c.cmd("NOOP", expect="250 2.0.0")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("HELP", expect="214 2.0.0")
    c.cmd("QUIT", expect="221 2.0.0")
    c.expect_closed()


@pytest.mark.parametrize("line", ["XYZZY", "FOO bar", "MAILFROM:<a@origin.test>", "HELLO there"])
def test_unknown_command(relay_pair, client, line):
    """An unknown verb gets 500 5.5.2 and the session goes on."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd(line, expect="500 5.5.2")
    c.cmd("NOOP", expect="250 2.0.0")


def test_commands_are_case_insensitive(relay_pair, client):
    """Verbs and FROM:/TO: are case-insensitive (RFC 5321 2.4); the message is delivered."""
    p, s = relay_pair
    c = client(p.port)
    c.greeting()
    c.cmd("ehlo client.test", expect="250")
    c.cmd("mail from:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("rCpT tO:<alice@example.test>", expect="250 2.1.5")
    msg = make_message()
    c.cmd("data", expect="354")
    c.send(peers.dot_stuff(msg) + b".\r\n")
    peers.expect_reply(c.read_reply(), "250")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].rcpts == ["alice@example.test"]


@pytest.mark.parametrize("helo,cmds", [
    (False, ["MAIL FROM:<sender@origin.test>"]),
    (False, ["RCPT TO:<alice@example.test>"]),
    (False, ["DATA"]),
    (True, ["RCPT TO:<alice@example.test>"]),
    (True, ["DATA"]),
    (True, ["BDAT 0 LAST"]),
    (True, ["MAIL FROM:<sender@origin.test>", "DATA"]),
    (True, ["MAIL FROM:<sender@origin.test>", "MAIL FROM:<sender@origin.test>"]),
], ids=["mail-before-helo", "rcpt-before-helo", "data-before-helo", "rcpt-before-mail",
        "data-before-mail", "bdat-before-mail", "data-before-rcpt", "nested-mail"])
def test_bad_sequence(relay_pair, client, helo, cmds):
    """Commands out of order get 503 5.5.1 (the earlier commands succeed); the session goes on."""
    p, s = relay_pair
    c = client(p.port)
    c.greeting()
    if helo:
        c.ehlo()
    for line in cmds[:-1]:
        c.cmd(line, expect="250")
    c.cmd(cmds[-1], expect="503 5.5.1")
    c.cmd("NOOP", expect="250 2.0.0")


@pytest.mark.parametrize("addr", ["<user@@origin.test>", "<user@origin..test>", "<@origin.test>"])
def test_bad_sender_syntax(relay_pair, client, addr):
    """A syntactically invalid reverse-path gets 501 5.1.7; the session goes on."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:" + addr, expect="501 5.1.7")
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")


@pytest.mark.parametrize("addr", ["<user@@example.test>", "<user@example..test>", "<>"])
def test_bad_recipient_syntax(relay_pair, client, addr):
    """A syntactically invalid forward-path gets 501 5.1.3; the transaction goes on."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:" + addr, expect="501 5.1.3")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")


@pytest.mark.parametrize("line,expect", [
    ("MAIL FROM:<sender@origin.test> FOO=bar", "555 5.5.4"),
    ("MAIL FROM:<sender@origin.test> XTRACE", "555 5.5.4"),
    ("MAIL FROM:<sender@origin.test> BODY=9BITMIME", "501 5.5.4"),
])
def test_unknown_mail_parameter(relay_pair, client, line, expect):
    """An unknown MAIL parameter gets 555 5.5.4; a known one with a bad value 501 5.5.4."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd(line, expect=expect)
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")


def test_unknown_rcpt_parameter(relay_pair, client):
    """An unknown RCPT parameter gets 555 5.5.4; known DSN parameters are accepted."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test> FOO=bar", expect="555 5.5.4")
    c.cmd("RCPT TO:<alice@example.test> NOTIFY=FAILURE,DELAY", expect="250 2.1.5")


def utf8_backend_pair(portier, minismtpd):
    """portier relaying to minismtpd.py offering SMTPUTF8 and DSN (so that forwarding those
    parameters is never the question)."""
    b = minismtpd(ext=["SMTPUTF8", "DSN", "SIZE"])
    return portier(peers.portier_config("smtp:127.0.0.1:%d" % b.port)), b


def test_known_mail_parameters(portier, minismtpd, client):
    """SIZE, BODY=8BITMIME, BODY=7BIT, SMTPUTF8, RET and ENVID are accepted on MAIL."""
    p, b = utf8_backend_pair(portier, minismtpd)
    c = client(p.port)
    c.start()
    for params in ("SIZE=1000", "BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8", "RET=HDRS ENVID=abc123"):
        c.cmd("MAIL FROM:<sender@origin.test> " + params, expect="250 2.1.0")
        c.cmd("RSET", expect="250 2.0.0")


def test_size_parameter_over_limit(make_pair, client):
    """MAIL ... SIZE=n with n over max_message_size gets 552 5.3.4; n at the limit is accepted."""
    p, s = make_pair(server={"max_message_size": 20000})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test> SIZE=20001", expect="552 5.3.4")
    c.cmd("MAIL FROM:<sender@origin.test> SIZE=999999999999", expect="552 5.3.4")
    c.cmd("MAIL FROM:<sender@origin.test> SIZE=20000", expect="250 2.1.0")


def test_non_local_domain_refused(relay_pair, client):
    """mx role: a recipient outside local_domains gets 550 5.7.1; local ones (any case) pass."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<someone@other.test>", expect="550 5.7.1")
    c.cmd("RCPT TO:<someone@sub.example.test>", expect="550 5.7.1")
    c.cmd("RCPT TO:<alice@EXAMPLE.Test>", expect="250 2.1.5")


def test_too_many_recipients(make_pair, client):
    """Recipients past max_recipients get 452 4.5.3; the message goes to the accepted ones."""
    p, s = make_pair(server={"max_recipients": 3})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    for i in range(3):
        c.cmd("RCPT TO:<r%d@example.test>" % i, expect="250 2.1.5")
    c.cmd("RCPT TO:<r3@example.test>", expect="452 4.5.3")
    c.cmd("RCPT TO:<r4@example.test>", expect="452 4.5.3")
    c.send_message(make_message(), expect="250")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    assert msgs[0].rcpts == ["r0@example.test", "r1@example.test", "r2@example.test"]


def test_rset_clears_the_transaction(relay_pair, client):
    """After RSET, RCPT and DATA need a new MAIL (503 5.5.1); nothing reaches the backend."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("DATA", expect="503 5.5.1")
    c.cmd("RCPT TO:<alice@example.test>", expect="503 5.5.1")
    c.quit()
    s.assert_nothing(portier=p, txns=1)        # aborted by RSET


def test_several_transactions_in_one_session(relay_pair, client):
    """Three transactions in one session, including the null sender, each reach the backend
    with their own envelope."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    envs = [("sender@origin.test", ["alice@example.test"]),
            ("", ["bob@example.test"]),
            ("other@origin.test", ["alice@example.test", "bob@example.test"])]
    ids = []
    for frm, rcpts in envs:
        m = make_message()
        ids.append(m)
        c.transaction(frm, rcpts, m)
    c.quit()
    msgs = s.wait_messages(3)
    assert len(msgs) == 3
    got = sorted((m.mail_from, tuple(m.rcpts), m.content) for m in msgs)
    want = sorted((f, tuple(r), m.replace(b"\r\n", b"\n")) for (f, r), m in zip(envs, ids))
    assert got == want


def test_non_ascii_address_needs_smtputf8(portier, minismtpd, client):
    """A non-ASCII address without the SMTPUTF8 parameter gets 553 5.6.7 (smtp_reply.c)."""
    p, b = utf8_backend_pair(portier, minismtpd)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<j\u00f6ran@origin.test>", expect="553 5.6.7")
    c.cmd("MAIL FROM:<j\u00f6ran@origin.test> SMTPUTF8", expect="250 2.1.0")

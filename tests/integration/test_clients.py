"""Real clients against portier: swaks, Python smtplib, Postfix smtp-source, and a raw
pipelining client."""
import os
import smtplib
from email.message import EmailMessage

import pytest

import peers
from peers import make_message


def swaks(port, *args):
    argv = [peers.SWAKS, "--server", "127.0.0.1:%d" % port, "--timeout", "20"] + list(args)
    p = peers.run(argv, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def test_swaks_pipelined(relay_pair):
    """swaks --pipeline (MAIL/RCPT/RCPT/DATA in one write) delivers to both recipients."""
    p, s = relay_pair
    marker = peers.unique_id("swaks")
    rc, out = swaks(p.port, "--pipeline", "--helo", "swaks.test", "--from", "sender@origin.test",
                    "--to", "alice@example.test,bob@example.test", "--header", "Subject: " + marker,
                    "--body", "body of " + marker)
    assert rc == 0, out
    assert "PIPELINING" in out
    msgs = s.wait_messages(1)
    assert len(msgs) == 1, out
    m = msgs[0]
    assert m.rcpts == ["alice@example.test", "bob@example.test"]
    assert m.mail_from == "sender@origin.test"
    assert ("Subject: " + marker).encode() in m.content
    assert ("body of " + marker).encode() in m.content
    peers.check_portier_received(m.portier_received()[0], helo="swaks.test", proto="ESMTP")


def test_swaks_data_file(relay_pair, tmpdir_0755):
    """swaks --data @FILE with leading-dot lines: they arrive unstuffed, exactly as in the file."""
    p, s = relay_pair
    path = os.path.join(tmpdir_0755, "msg.txt")
    marker = peers.unique_id("swaksdata")
    body = ("From: <sender@origin.test>\nTo: <bob@example.test>\nSubject: %s\n\n"
            ".leading dot\n.\n..\nlast line\n" % marker)
    with open(path, "w") as f:
        f.write(body)
    rc, out = swaks(p.port, "--from", "sender@origin.test", "--to", "bob@example.test",
                    "--data", "@" + path)
    assert rc == 0, out
    msgs = s.wait_messages(1)
    assert len(msgs) == 1, out
    assert msgs[0].content.startswith(body.encode()), msgs[0].content


def test_swaks_refused_recipient(relay_pair):
    """swaks to a non-local domain fails at RCPT with 550 5.7.1 and nothing is delivered."""
    p, s = relay_pair
    rc, out = swaks(p.port, "--from", "sender@origin.test", "--to", "someone@other.test")
    assert rc != 0, out
    assert "550 5.7.1" in out, out
    s.assert_nothing(portier=p, txns=1)        # MAIL accepted, aborted when swaks quit


def test_smtplib_sendmail(relay_pair):
    """smtplib.sendmail to two local and one non-local recipient: the non-local one is reported
    refused with (550, 5.7.1 ...), the message goes to the other two."""
    p, s = relay_pair
    msg = make_message(body_lines=peers.tricky_body())
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="smtplib.test", timeout=20) as c:
        refused = c.sendmail("sender@origin.test",
                             ["alice@example.test", "x@other.test", "bob@example.test"], msg)
    assert set(refused) == {"x@other.test"}, refused
    code, text = refused["x@other.test"]
    assert code == 550 and text.startswith(b"5.7.1"), refused
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    assert msgs[0].rcpts == ["alice@example.test", "bob@example.test"]
    peers.assert_same_message(msg, msgs[0].content)


def test_smtplib_send_message_8bitmime(relay_pair):
    """smtplib.send_message with an 8-bit UTF-8 body and BODY=8BITMIME: the 8-bit bytes arrive
    intact and BODY=8BITMIME is passed on to the backend."""
    p, s = relay_pair
    m = EmailMessage()
    m["From"] = "sender@origin.test"
    m["To"] = "alice@example.test"
    m["Subject"] = "8bit " + peers.unique_id("s")
    text = "Gr\u00fc\u00dfe aus K\u00f6ln \u2013 \u65e5\u672c\u8a9e\n.\n..leading dots\n"
    m.set_content(text, cte="8bit")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="smtplib.test", timeout=20) as c:
        c.ehlo()
        assert c.has_extn("8bitmime")
        c.send_message(m, mail_options=["BODY=8BITMIME"])
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    got = msgs[0]
    assert text.encode("utf-8") in got.content.replace(b"\r\n", b"\n")
    assert "BODY=8BITMIME" in got.mail_args.upper(), got.mail_args


def test_smtplib_smtputf8(portier, minismtpd):
    """smtplib.send_message with internationalised addresses uses SMTPUTF8; the backend (which
    offers SMTPUTF8) gets the UTF-8 envelope with SMTPUTF8 and the UTF-8 headers intact."""
    b = minismtpd(ext=["SMTPUTF8"])
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % b.port))
    m = EmailMessage()
    m["From"] = "J\u00f6ran <j\u00f6ran@origin.test>"
    m["To"] = "\u00c5sa <\u00e5sa@example.test>"
    m["Subject"] = "utf8 \u00e9t\u00e9"
    m.set_content("h\u00e9llo\n")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="smtplib.test", timeout=20) as c:
        c.ehlo()
        assert c.has_extn("smtputf8")
        c.send_message(m)
    ts = b.wait_transactions(1)
    assert len(ts) == 1
    t = ts[0]
    assert t["mail_from"] == "j\u00f6ran@origin.test"
    assert t["rcpts"] == ["\u00e5sa@example.test"]
    assert "SMTPUTF8" in t["mail_params"].upper(), t["mail_params"]
    assert "\u00e5sa@example.test".encode("utf-8") in t["data"]
    assert "utf8 \u00e9t\u00e9".encode("utf-8") in t["data"]


@pytest.mark.parametrize("extra", [[], ["-d", "-r", "2"]], ids=["conn-per-msg", "reuse-2rcpt"])
def test_smtp_source_load(relay_pair, extra):
    """Postfix smtp-source, 5 parallel sessions, 50 messages of 2000 bytes: exit 0 and the sink
    has all 50 (with -d: sessions reused; -r 2: two recipients each)."""
    p, s = relay_pair
    argv = [peers.SMTP_SOURCE, "-s", "5", "-m", "50", "-l", "2000", "-f", "a@x.test",
            "-t", "b@example.test", "-M", "source.test"] + extra + ["127.0.0.1:%d" % p.port]
    r = peers.run(argv, timeout=120)
    assert r.returncode == 0, r.stdout.decode("utf-8", "replace")
    msgs = s.wait_messages(50, timeout=20)
    assert len(msgs) == 50
    nrcpt = 2 if "-r" in extra else 1
    assert all(len(m.rcpts) == nrcpt for m in msgs)
    assert all(len(m.portier_received()) == 1 for m in msgs)


def test_raw_pipelining_two_messages(relay_pair, client):
    """EHLO/MAIL/RCPT/RCPT/DATA in one write, then message + dot + RSET/MAIL/RCPT/DATA in one
    write, then message + dot + QUIT: exactly one reply per command, in order; both messages
    arrive with their own envelopes."""
    p, s = relay_pair
    c = client(p.port)
    c.greeting()
    m1 = make_message()
    m2 = make_message(body_lines=[".dotted", "second"])
    c.send(b"EHLO pipe.test\r\nMAIL FROM:<one@origin.test>\r\nRCPT TO:<alice@example.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    rs = c.read_replies(5)
    assert rs[0].code == 250 and "PIPELINING" in peers.ehlo_keywords(rs[0]), rs[0]
    assert [(r.code, r.enhanced) for r in rs[1:]] == [(250, "2.1.0"), (250, "2.1.5"),
                                                      (250, "2.1.5"), (354, None)], rs
    c.send(peers.dot_stuff(m1) + b".\r\nRSET\r\nMAIL FROM:<two@origin.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    rs = c.read_replies(5)
    assert [r.code for r in rs] == [250, 250, 250, 250, 354], rs
    assert [r.enhanced for r in rs[1:4]] == ["2.0.0", "2.1.0", "2.1.5"], rs
    c.send(peers.dot_stuff(m2) + b".\r\nQUIT\r\n")
    rs = c.read_replies(2)
    assert [(r.code, r.enhanced) for r in rs][1] == (221, "2.0.0"), rs
    assert rs[0].code == 250, rs
    c.expect_closed()
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    by_from = {m.mail_from: m for m in msgs}
    assert by_from["one@origin.test"].rcpts == ["alice@example.test", "bob@example.test"]
    assert by_from["two@origin.test"].rcpts == ["bob@example.test"]
    peers.assert_same_message(m1, by_from["one@origin.test"].content)
    peers.assert_same_message(m2, by_from["two@origin.test"].content)

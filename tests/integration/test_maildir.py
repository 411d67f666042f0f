"""The embedded Maildir backend (relay = maildir:DIR)."""
import os

import peers
from peers import make_message


def maildir_setup(portier, tmpdir_0755):
    root = os.path.join(tmpdir_0755, "maildirs")
    os.mkdir(root)
    os.chown(root, peers.NOBODY.pw_uid, peers.NOBODY.pw_gid)
    p = portier(peers.portier_config("maildir:%s" % root))
    return root, p


def test_maildir_one_copy_per_recipient(portier, tmpdir_0755, client):
    """Each recipient gets its own Maildir at DIR/<domain>/<local>/ (tmp, new, cur); new/ holds
    one file: portier's Return-Path (optional) and exactly one Received, then the message
    exactly as sent, CRLF line ends kept."""
    root, p = maildir_setup(portier, tmpdir_0755)
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=peers.tricky_body())
    c.transaction("sender@origin.test", ["alice@example.test", "bob@example.test"], msg)
    c.quit()
    for user in ("alice", "bob"):
        md = os.path.join(root, "example.test", user)
        assert peers.wait_until(lambda: peers.maildir_files(md), 5), "nothing in %s/new" % md
        for sub in ("tmp", "new", "cur"):
            assert os.path.isdir(os.path.join(md, sub)), "%s/%s missing" % (md, sub)
        files = peers.maildir_files(md)
        assert len(files) == 1, files
        assert os.listdir(os.path.join(md, "tmp")) == []
        with open(files[0], "rb") as f:
            raw = f.read()
        hdrs, rest = peers.strip_trace(raw, b"\r\n", ("return-path", "received"))
        pr = [h for h in hdrs if peers.is_portier_received(h)]
        assert len(pr) == 1, hdrs
        peers.check_portier_received(pr[0], helo="client.test", proto="ESMTP")
        rp = [h for h in hdrs if h.lower().startswith("return-path:")]
        assert len(rp) <= 1 and len(hdrs) == 1 + len(rp), hdrs
        if rp:
            assert rp[0] == "Return-Path: <sender@origin.test>", rp
        peers.assert_same_message(msg, rest, nl=b"\r\n")


def test_maildir_several_messages_unique_files(portier, tmpdir_0755, client):
    """Five messages to the same mailbox give five distinct files in new/."""
    root, p = maildir_setup(portier, tmpdir_0755)
    c = client(p.port)
    c.start()
    sent = [make_message() for _ in range(5)]
    for m in sent:
        c.transaction("sender@origin.test", ["carol@example.test"], m)
    c.quit()
    md = os.path.join(root, "example.test", "carol")
    peers.wait_until(lambda: len(peers.maildir_files(md)) >= 5, 5)
    files = peers.maildir_files(md)
    assert len(files) == 5, files
    got = []
    for fn in files:
        with open(fn, "rb") as f:
            got.append(peers.strip_trace(f.read(), b"\r\n", ("return-path", "received"))[1])
    assert sorted(got) == sorted(sent)


def test_maildir_client_gone_after_dot(portier, tmpdir_0755):
    """A client that closes the socket right after the final dot of a large (spooled to a temp
    file) message: the worker writing the Maildir copies must still read the body it was given
    (the session's own copy is freed when the session ends).  Every message arrives whole and
    the sanitizer build reports nothing (the fixture fails the test on a report)."""
    root, p = maildir_setup(portier, tmpdir_0755)
    body = [("line %06d " % i) + "x" * 88 for i in range(30000)]      # ~3 MB, past spool_memory
    msg = make_message(body_lines=body)
    n = 4
    for _ in range(n):
        c = peers.SmtpClient(p.port)
        c.start()
        c.sendline("MAIL FROM:<sender@origin.test>")
        assert c.read_reply().is_(250)
        for user in ("dave", "erin"):
            c.sendline("RCPT TO:<%s@example.test>" % user)
            assert c.read_reply().is_(250)
        c.sendline("DATA")
        assert c.read_reply().is_(354)
        c.send(msg + b".\r\n")
        c.close()                   # gone before the reply
    for user in ("dave", "erin"):
        md = os.path.join(root, "example.test", user)
        assert peers.wait_until(lambda: len(peers.maildir_files(md)) >= n, 20), md
        for fn in peers.maildir_files(md):
            with open(fn, "rb") as f:
                rest = peers.strip_trace(f.read(), b"\r\n", ("return-path", "received"))[1]
            peers.assert_same_message(msg, rest, nl=b"\r\n")
    p.wait_log(r"event=txn .*to=<dave@example\.test>,<erin@example\.test>", timeout=20)

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

"""Envelope edits by filters at end of message (issue #9): the test filter test-edit
(tests/filters/tf_edit.c) changes the sender, adds and deletes recipients and replaces the body;
portier replays the edited envelope to the backend before the body.  Real peers: smtp-sink,
Dovecot LMTP, the embedded Maildir backend, and minismtpd.py where a recipient must be refused
by address."""
import os
import re
import signal
import subprocess
import time

import pytest

import peers
from peers import make_message

SENDER = "sender@origin.test"


def edit_config(relay, edits, backend=None, server=None):
    """portier on relay with the test-edit filter configured by the dict edits."""
    extra = "[filter test-edit]\n%s\n" % "".join("%s = %s\n" % kv for kv in edits.items())
    return peers.portier_config(relay, listener={"filters": "test-edit"}, backend=backend,
                                server=server, extra=extra)


def start_edit(portier, relay, edits, **kw):
    return portier(edit_config(relay, edits, **kw), test_filters=True)


def send(c, rcpts, msg=None, sender=SENDER, mail_params=""):
    """One transaction, every RCPT accepted; the reply after the data."""
    c.cmd("MAIL FROM:<%s>%s" % (sender, " " + mail_params if mail_params else ""),
          expect="250 2.1.0")
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, expect="250 2.1.5")
    return c.send_message(msg or make_message())


def sink_relay(s):
    return "smtp:127.0.0.1:%d" % s.port


def dovecot_relay(d):
    return "lmtp:127.0.0.1:%d" % d.port


def field(p, event):
    """The fields of the first log line with event=EVENT (waits for it)."""
    m = p.wait_log(r"^.*\bevent=%s\b.*$" % event)
    assert m, "no event=%s in portier's log:\n%s" % (event, p.log_text()[-5000:])
    return peers.parse_log_fields(m.group(0))


@pytest.mark.parametrize("key,value,why", [
    ("add_rcpts", "a@example.test", r'filter "test-edit": unknown key "add_rcpts"'),
    ("add_header", "no colon", r'filter "test-edit": add_header "no colon": bad value'),
])
def test_filter_section_refused(tmpdir_0755, key, value, why):
    """test-edit refuses a key it does not know, or a value it cannot use: portier -t names
    it and exits 2."""
    path = os.path.join(tmpdir_0755, "portier.conf")
    with open(path, "w") as f:
        f.write(edit_config("smtp:127.0.0.1:25", {key: value}).replace("{port}", "2525"))
    p = subprocess.run([peers.portier_binary(test_filters=True), "-t", "-c", path],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 2 and re.search(why, out), (p.returncode, out)


# ---------------------------------------------------------------------------------------------
# SMTP backend (smtp-sink)
# ---------------------------------------------------------------------------------------------

def test_change_from_smtp(portier, sink, client):
    """change_from with RET and ENVID: smtp-sink gets MAIL FROM the new sender with those
    parameters and the client's BODY=8BITMIME kept; the recipients as sent; the log names old
    and new sender; the summary line has the new one."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"change_from": "new@origin.test RET=HDRS ENVID=e1"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"], mail_params="BODY=8BITMIME")
    assert r.is_(250), r
    c.quit()
    [m] = s.wait_messages(1)
    assert m.mail_from == "new@origin.test", m.mail_args
    assert set(m.mail_args.split()[1:]) == {"BODY=8BITMIME", "RET=HDRS", "ENVID=e1"}, m.mail_args
    assert m.rcpts == ["alice@example.test"]
    ev = field(p, "envelope_edit")
    assert ev["from"] == "<sender@origin.test>" and ev["new_from"] == "<new@origin.test>", ev
    assert ev["added"] == "none" and ev["deleted"] == "none", ev
    [t] = p.wait_txns(1)
    assert t["from"] == "<new@origin.test>" and t["result"] == "delivered", t


def test_add_rcpt_with_notify_orcpt_smtp(portier, sink, client):
    """add_rcpt with NOTIFY and ORCPT: smtp-sink gets the original recipient, then the added one
    with exactly those parameters; an added recipient the client already named is not sent
    twice."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {
        "add_rcpt": "carol@example.test NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol@example.test"
                    " | Alice@example.test"})
    c = client(p.port)
    c.start()
    assert send(c, ["alice@example.test"]).is_(250)
    c.quit()
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test", "carol@example.test"], m.rcpt_args
    assert m.rcpt_args[1] == "<carol@example.test> NOTIFY=SUCCESS,FAILURE " \
                             "ORCPT=rfc822;carol@example.test", m.rcpt_args
    ev = field(p, "envelope_edit")
    assert ev["added"] == "<carol@example.test>" and ev["rcpts"] == "2", ev
    assert p.wait_txns(1)[0]["to"] == "<alice@example.test>,<carol@example.test>"


def test_added_rcpts_held_to_max_recipients(portier, sink, client):
    """A filter cannot take a message past max_recipients: with max_recipients = 2, two
    recipients of the client's plus one added by test-edit is 451 4.3.0 and nothing reaches the
    sink (event=filter_error naming the limit); one of the client's plus the added one passes."""
    s = sink()
    p = portier(peers.portier_config(sink_relay(s), listener={"filters": "test-edit"},
                                     server={"max_recipients": "2"},
                                     extra="[filter test-edit]\nadd_rcpt = carol@example.test\n"),
                test_filters=True)
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test", "bob@example.test"])
    assert r.is_(451, "4.3.0"), r.text
    ev = field(p, "filter_error")
    assert (ev["rcpts"], ev["max_recipients"]) == ("3", "2"), ev
    assert send(c, ["alice@example.test"]).is_(250)
    c.quit()
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test", "carol@example.test"], m.rcpts


def test_delete_rcpt_smtp(portier, sink, client):
    """delete_rcpt: of alice and bob, only alice reaches smtp-sink; the summary line says so."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"delete_rcpt": "bob@example.test"})
    c = client(p.port)
    c.start()
    assert send(c, ["alice@example.test", "bob@example.test"]).is_(250)
    c.quit()
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test"], m.rcpt_args
    assert field(p, "envelope_edit")["deleted"] == "<bob@example.test>"
    assert p.wait_txns(1)[0]["to"] == "<alice@example.test>"


def test_body_replaced_with_envelope_edit_smtp(portier, sink, client):
    """replace_body, add_header and an added recipient together: smtp-sink gets the new body,
    the added header and both recipients."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"replace_body": "new body\\nsecond line",
                                            "add_header": "X-Edited: yes",
                                            "add_rcpt": "bob@example.test"})
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=[b"old body"])
    assert send(c, ["alice@example.test"], msg=msg).is_(250)
    c.quit()
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test", "bob@example.test"]
    head, _, body = m.content.partition(b"\n\n")
    assert b"\nX-Edited: yes" in b"\n" + head, m.content
    assert body.rstrip(b"\n") == b"new body\nsecond line", m.content
    assert b"old body" not in m.content


def test_no_change_no_replay(portier, sink, client):
    """Edits that leave the envelope as it was (delete a recipient nobody named, add one already
    there) replay nothing: no event=envelope_replay, the message is delivered."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"delete_rcpt": "nobody@example.test",
                                            "add_rcpt": "alice@example.test"})
    c = client(p.port)
    c.start()
    assert send(c, ["alice@example.test"]).is_(250)
    c.quit()
    [m] = s.wait_messages(1)
    assert m.rcpts == ["alice@example.test"]
    p.wait_txns(1)
    assert "event=envelope_replay" not in p.log_text()
    assert "event=envelope_edit" not in p.log_text()


def test_all_recipients_deleted_is_discarded(portier, sink, client):
    """Every recipient deleted: as Postfix with a milter that deletes them all, the message is
    accepted toward the client (250) and delivered nowhere (result=discarded)."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"delete_rcpt": "alice@example.test bob@example.test"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test", "bob@example.test"])
    assert r.is_(250), r
    c.quit()
    [t] = p.wait_txns(1)
    assert t["result"] == "discarded", t
    assert p.wait_log(r"event=discard reason=all_recipients_deleted")
    s.assert_nothing(portier=p)


def test_bad_edit_tempfails(portier, sink, client):
    """An added recipient no RCPT could carry (a parameter RCPT does not take) is the filter's
    fault: 451 4.3.0, event=filter_error, nothing delivered."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"add_rcpt": "carol@example.test SIZE=10"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"])
    assert r.is_(451, "4.3.0"), r
    c.quit()
    assert p.wait_log(r"event=filter_error error=\"envelope edit with a bad address")
    s.assert_nothing(portier=p)


def restart_sink_during_data(s, c, rcpts, args):
    """MAIL and RCPTs accepted by the sink, DATA begun; then the sink restarts on its port with
    args (the backend changed its mind meanwhile); returns the reply after the data."""
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    time.sleep(0.5)                     # the backend's own 354 to the early DATA is back
    s.stop()
    s.args = list(args)
    s.restart()
    c.send(peers.dot_stuff(make_message()) + b".\r\n")
    return c.read_reply(timeout=20)


REPLAY_REFUSALS = {
    # smtp-sink restarted with: (its option, the client's reply, the log's field, result)
    "every-recipient": (["-f", "RCPT"], (500, "5.3.0"), ("rcpt", "<alice@example.test>"),
                        "rejected"),
    "sender": (["-f", "MAIL"], (451, "4.1.0"), ("from", "<new@origin.test>"), "tempfail"),
}


@pytest.mark.parametrize("case", sorted(REPLAY_REFUSALS))
def test_smtp_refused_on_replay(portier, sink, client, case):
    """The backend refuses on the replay what it took at MAIL/RCPT time (smtp-sink restarted
    with -f RCPT or -f MAIL during the data).  Every recipient refused: nobody is left, so
    the end of data gets the backend's refusal (500 5.3.0) and the client bounces it.  The new
    sender refused: the client has our 250 for its own, so 451 4.1.0 and it retries.  Either
    way event=replay_refused names what was refused, and nothing is delivered."""
    args, (code, ecode), (key, value), result = REPLAY_REFUSALS[case]
    s = sink()
    p = start_edit(portier, sink_relay(s), {"change_from": "new@origin.test"})
    c = client(p.port)
    c.start()
    r = restart_sink_during_data(s, c, ["alice@example.test"], args)
    assert r.is_(code, ecode), r
    ev = field(p, "replay_refused")
    assert ev[key] == value and ev["reply"].startswith("500 5.3.0"), ev
    assert p.wait_txns(1)[0]["result"] == result
    s.assert_nothing(portier=p)


def test_smtp_added_rcpt_refused_is_dropped(portier, minismtpd, client):
    """An added recipient the backend refuses (minismtpd, by address) is logged
    (event=added_rcpt_dropped with the backend's reply) and dropped; the original recipient
    gets the message and the client 250."""
    m = minismtpd(ext=["PIPELINING"], rcpt_reply={r"^gone@": "550 5.1.1 <gone@example.test> no such user"})
    p = start_edit(portier, "smtp:127.0.0.1:%d" % m.port, {"add_rcpt": "gone@example.test"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"])
    assert r.is_(250), r
    c.quit()
    [t] = m.wait_transactions(1)
    assert t["rcpts"] == ["alice@example.test"], t
    ev = field(p, "added_rcpt_dropped")
    assert ev["rcpt"] == "<gone@example.test>" and ev["reply"].startswith("550 5.1.1"), ev
    assert p.wait_txns(1)[0]["to"] == "<alice@example.test>"


def test_lmtp_added_refused_after_data_maps_to_edited_list(portier, minismtpd, sink, client):
    """LMTP per-recipient replies after the data map to the edited list: the client's alice,
    then gone@ (added, refused at RCPT on the replay: dropped) and carol@ (added, taken at RCPT,
    refused after the data).  The client gets 250, and the DSN (lmtp_mixed = dsn) names carol
    alone: a dropped recipient shifting the replies would name gone@ or alice."""
    lmtp = minismtpd(lmtp=True, ext=["PIPELINING"],
                     rcpt_reply={r"^gone@": "550 5.1.1 <gone@example.test> no such user"},
                     data_reply={r"^carol@": "550 5.2.1 <carol@example.test> mailbox disabled"})
    bounce = sink()
    p = start_edit(portier, "lmtp:127.0.0.1:%d" % lmtp.port,
                   {"add_rcpt": "gone@example.test | carol@example.test"},
                   backend={"bounce_relay": "smtp:127.0.0.1:%d" % bounce.port,
                            "lmtp_mixed": "dsn"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"])
    assert r.is_(250), r
    c.quit()
    ts = lmtp.wait_transactions(2)
    assert ts[-1]["rcpts"] == ["alice@example.test", "carol@example.test"], ts[-1]
    [t] = p.wait_txns(1)
    assert t["result"] == "delivered" and t["to"] == "<alice@example.test>,<carol@example.test>", t
    [dsn] = bounce.wait_messages(1)
    text = dsn.content.decode("utf-8", "replace")
    assert re.findall(r"(?im)^Final-Recipient:\s*rfc822;\s*<?([^>\s]+)>?", text) == [
        "carol@example.test"], text
    assert re.findall(r"(?im)^Status:\s*(\S+)", text) == ["5.2.1"], text


def test_replay_rcpt_reply_neither_taken_nor_refused(portier, minismtpd, client):
    """A backend answering an RCPT of the replay with a code that is neither 2xx, 4xx nor 5xx
    (354 here) is garbled, not a verdict: the filter's only recipient counts as refused 451
    4.4.0, so the client gets 451 4.4.0 at the end of data, never a 3xx."""
    m = minismtpd(ext=["PIPELINING"], rcpt_reply={r"^odd@": "354 4.0.0 what"})
    p = start_edit(portier, "smtp:127.0.0.1:%d" % m.port, {"delete_rcpt": "alice@example.test",
                                                            "add_rcpt": "odd@example.test"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"])
    assert r.is_(451, "4.4.0"), r
    c.quit()
    assert p.wait_txns(1)[0]["result"] == "tempfail"
    assert field(p, "added_rcpt_dropped")["reply"].startswith("451 4.4.0")


def test_replay_after_rset_on_the_same_connection(portier, minismtpd, client):
    """A backend that refused the early DATA leaves its connection idle: the replay of an
    edited envelope resets it with RSET and sends MAIL, RCPT and DATA on that same connection
    (one greeting), and the message is delivered from the new sender.  Without an edit, the
    early refusal is the answer (451 4.3.0)."""
    m = minismtpd(data_cmd_reply="451 4.3.0 not now")
    p = start_edit(portier, "smtp:127.0.0.1:%d" % m.port, {"change_from": "new@origin.test"})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    assert peers.wait_until(lambda: "S: 451 4.3.0 not now" in m.log_text(), 5)
    time.sleep(0.3)                     # portier has read the refusal: its link is idle
    c.send(peers.dot_stuff(make_message()) + b".\r\n")
    r = c.read_reply()
    assert r.is_(250), r
    c.quit()
    [t] = m.wait_transactions(1)
    assert t["mail_from"] == "new@origin.test" and t["rcpts"] == ["alice@example.test"], t
    log = m.log_text()
    assert log.count("C: EHLO ") == 1, log      # one backend connection
    assert re.search(r"C: RSET\n.*S: 250 2.0.0 Ok\n.*C: MAIL FROM:<new@origin.test>", log, re.S), log
    m2 = minismtpd(data_cmd_reply="451 4.3.0 not now")
    p2 = start_edit(portier, "smtp:127.0.0.1:%d" % m2.port, {"add_header": "X-A: b"})
    c2 = client(p2.port)
    c2.start()
    r = send(c2, ["alice@example.test"])
    assert r.is_(451, "4.3.0") and "not now" in r.text, r


# ---------------------------------------------------------------------------------------------
# LMTP backend (Dovecot)
# ---------------------------------------------------------------------------------------------

def test_lmtp_dovecot_change_from_delete_add(portier, dovecot, client):
    """Dovecot LMTP: the client names alice; the filter changes the sender and moves the message
    from alice to bob.  bob's Maildir has it with Dovecot's Return-Path the new sender; alice's
    has nothing; the client gets Dovecot's 250 for bob."""
    d = dovecot()
    p = start_edit(portier, dovecot_relay(d), {"change_from": "new@origin.test",
                                               "delete_rcpt": "alice@example.test",
                                               "add_rcpt": "bob@example.test"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"])
    assert r.is_(250) and "Saved" in r.text, r
    c.quit()
    [m] = d.wait_messages("bob", 1)
    assert m.mail_from == "new@origin.test", m.headers
    p.wait_txns(1)
    assert d.messages("alice") == []


def test_lmtp_dovecot_added_unknown_user_dropped(portier, dovecot, client):
    """An added recipient Dovecot does not know (550 5.1.1 on the replay) is logged and dropped:
    alice gets the message, the client 250."""
    d = dovecot()
    p = start_edit(portier, dovecot_relay(d), {"add_rcpt": "nobody@example.test"})
    c = client(p.port)
    c.start()
    assert send(c, ["alice@example.test"]).is_(250)
    c.quit()
    assert len(d.wait_messages("alice", 1)) == 1
    ev = field(p, "added_rcpt_dropped")
    assert ev["rcpt"] == "<nobody@example.test>" and ev["reply"].startswith("550 5.1.1"), ev
    assert p.wait_txns(1)[0]["to"] == "<alice@example.test>"


def test_lmtp_dovecot_only_added_refused(portier, dovecot, client):
    """The filter moves the message from alice to a user Dovecot does not know: nobody is left,
    so the end of data gets Dovecot's verdict (550 5.1.1) in our words, which do not name the
    filter's address; nothing is delivered."""
    d = dovecot()
    p = start_edit(portier, dovecot_relay(d), {"delete_rcpt": "alice@example.test",
                                               "add_rcpt": "nobody@example.test"})
    c = client(p.port)
    c.start()
    r = send(c, ["alice@example.test"])
    assert r.is_(550, "5.1.1") and "nobody" not in r.text, r
    c.quit()
    assert p.wait_txns(1)[0]["result"] == "rejected"
    assert field(p, "added_rcpt_dropped")["rcpt"] == "<nobody@example.test>"
    assert d.messages("alice") == []


def dovecot_forget(d, user):
    """Dovecot's passwd-file loses user (it rereads the changed file at the next lookup)."""
    path = os.path.join(d.tmp, "users")
    with open(path) as f:
        lines = [ln for ln in f if not ln.startswith(user + "@")]
    time.sleep(1.1)                     # a new mtime second
    with open(path, "w") as f:
        f.writelines(lines)


def original_refused_setup(portier, dovecot, sink, mode):
    d = dovecot()
    bounce = sink()
    p = start_edit(portier, dovecot_relay(d), {"change_from": "new@origin.test"},
                   backend={"bounce_relay": "smtp:127.0.0.1:%d" % bounce.port,
                            "lmtp_mixed": mode})
    return d, bounce, p


def send_forgetting(c, d, user):
    """alice and bob accepted at RCPT; bob is forgotten by Dovecot while the data comes."""
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    dovecot_forget(d, user)
    c.send(peers.dot_stuff(make_message()) + b".\r\n")
    return c.read_reply(timeout=20)


def test_lmtp_original_refused_on_replay_gets_dsn(portier, dovecot, sink, client):
    """A recipient the client has our 250 for and that Dovecot refuses on the replay (user gone
    meanwhile) is not lost: lmtp_mixed = dsn, alice gets the message, the client 250, and a DSN
    for bob (5.1.1) goes through bounce_relay to the sender the filter set."""
    d, bounce, p = original_refused_setup(portier, dovecot, sink, "dsn")
    c = client(p.port)
    r = send_forgetting(c, d, "bob")
    assert r.is_(250), r
    assert len(d.wait_messages("alice", 1)) == 1
    ev = field(p, "replay_refused")
    assert ev["rcpt"] == "<bob@example.test>" and ev["reply"].startswith("550 5.1.1"), ev
    [dsn] = bounce.wait_messages(1)
    assert dsn.mail_from == "" and dsn.rcpts == ["new@origin.test"], dsn.mail_args
    text = dsn.content.decode("utf-8", "replace")
    assert re.findall(r"(?im)^Final-Recipient:\s*rfc822;\s*<?([^>\s]+)>?", text) == [
        "bob@example.test"], text
    assert re.findall(r"(?im)^Status:\s*(\S+)", text) == ["5.1.1"], text
    assert p.wait_txns(1)[0]["result"] == "delivered"


def test_lmtp_original_refused_on_replay_tempfail(portier, dovecot, sink, client):
    """The same with lmtp_mixed = tempfail: 451 4.3.0 for the whole message before any copy
    went out (alice gets nothing, no duplicate on the retry), event=replay_tempfail."""
    d, bounce, p = original_refused_setup(portier, dovecot, sink, "tempfail")
    c = client(p.port)
    r = send_forgetting(c, d, "bob")
    assert r.is_(451, "4.3.0"), r
    ev = field(p, "replay_tempfail")
    assert ev["reason"] == "lmtp_mixed" and ev["refused"] == "1" and ev["delivered"] == "0", ev
    assert p.wait_txns(1)[0]["result"] == "tempfail"
    assert d.messages("alice") == []
    bounce.assert_nothing(portier=p)


# ---------------------------------------------------------------------------------------------
# the embedded Maildir backend
# ---------------------------------------------------------------------------------------------

def test_maildir_edits(portier, tmpdir_0755, client):
    """Maildir: the edited list is delivered: of alice and bob, bob deleted and carol added;
    each copy's Return-Path is the new sender, the body the filter's."""
    root = os.path.join(tmpdir_0755, "maildirs")
    os.mkdir(root)
    os.chown(root, peers.NOBODY.pw_uid, peers.NOBODY.pw_gid)
    p = start_edit(portier, "maildir:%s" % root, {
        "change_from": "new@origin.test", "delete_rcpt": "bob@example.test",
        "add_rcpt": "carol@example.test NOTIFY=NEVER", "replace_body": "replaced"})
    c = client(p.port)
    c.start()
    assert send(c, ["alice@example.test", "bob@example.test"]).is_(250)
    c.quit()
    p.wait_txns(1)
    for user in ("alice", "carol"):
        files = peers.maildir_files(os.path.join(root, "example.test", user))
        assert len(files) == 1, (user, files)
        with open(files[0], "rb") as f:
            raw = f.read()
        assert raw.startswith(b"Return-Path: <new@origin.test>\r\n"), raw[:200]
        assert raw.endswith(b"\r\n\r\nreplaced\r\n"), raw[-200:]
    assert peers.maildir_files(os.path.join(root, "example.test", "bob")) == []


# ---------------------------------------------------------------------------------------------
# interruptions while the replay waits for the backend
# ---------------------------------------------------------------------------------------------

DELAY = 2


def replay_waiting(portier, sink, client, **server):
    """portier in front of an smtp-sink that holds each RCPT reply DELAY s, with a filter that
    changes the sender; the client's message is sent and portier is in the middle of the replay
    (event=envelope_replay logged).  One recipient only: smtp-sink -W answers no second
    pipelined RCPT (seen with Postfix 3.7's)."""
    s = sink(args=("-W", "rcpt:%d" % DELAY))
    srv = {"command_timeout": "1", "max_pipelined": "5", "drain_timeout": "1"}
    srv.update(server)
    p = start_edit(portier, sink_relay(s), {"change_from": "new@origin.test"},
                   backend={"relay_timeout": "10"}, server=srv)
    c = client(p.port, timeout=20)
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    c.send(peers.dot_stuff(make_message()) + b".\r\n")
    assert p.wait_log(r"event=envelope_replay", timeout=5)
    time.sleep(0.3)                     # the replay's RCPTs are out, their replies held
    return p, s, c


def test_replay_client_eof(portier, sink, client):
    """The client leaves during the replay: the transaction is dropped with the backend
    transaction (result=aborted), nothing is delivered, no crash or sanitizer report, and
    portier goes on serving."""
    p, s, c = replay_waiting(portier, sink, client)
    c.close()
    [t] = p.wait_txns(1, timeout=DELAY + 3)
    assert t["result"] == "aborted", t
    time.sleep(DELAY)                   # the backend's late replies find nobody
    s.assert_nothing(portier=p)
    c2 = client(p.port)
    c2.start()
    c2.quit()


def test_replay_sigterm(portier, sink, client):
    """SIGTERM during the replay: the session is spared until the backend answered, the client
    gets 250 and then 421 4.3.2, nothing after it; the message went out from the new sender;
    portier exits 0."""
    p, s, c = replay_waiting(portier, sink, client)
    p.signal(signal.SIGTERM)
    replies, closed = c.replies_until_closed(15)
    assert [(r.code, r.enhanced) for r in replies] == [(250, replies[0].enhanced),
                                                       (421, "4.3.2")], replies
    assert closed
    assert p.wait(10) == 0, p.log_text()
    [m] = s.messages()
    assert m.mail_from == "new@origin.test" and m.rcpts == ["alice@example.test"], m.raw


def test_replay_sighup(portier, sink, client):
    """SIGHUP with a changed configuration during the replay: the session keeps its snapshot
    and finishes (250, its filter's edit) and its next message too; a new session gets the
    new filter."""
    p, s, c = replay_waiting(portier, sink, client)
    p.reload(edit_config(sink_relay(s), {"delete_rcpt": "alice@example.test"},
                         backend={"relay_timeout": "10"}))
    r = c.read_reply(timeout=DELAY * 3)
    assert r.is_(250), r
    [m] = s.wait_messages(1)
    assert m.mail_from == "new@origin.test" and m.rcpts == ["alice@example.test"], m.raw
    assert send(c, ["alice@example.test"]).is_(250)      # still its own snapshot
    c.quit()
    assert [m.mail_from for m in s.wait_messages(2)] == ["new@origin.test"] * 2
    c2 = client(p.port)                 # a new session has the new filter: alice deleted
    c2.start()
    assert send(c2, ["alice@example.test"]).is_(250)
    c2.quit()
    assert p.wait_txns(3)[2]["result"] == "discarded"


def test_replay_flood(portier, sink, client):
    """More pipelined commands than max_pipelined arrive during the replay: 421 4.7.0 is the
    last reply, the connection closes, and nothing is delivered."""
    p, s, c = replay_waiting(portier, sink, client)
    c.send(b"NOOP\r\n" * 20)
    replies, closed = c.replies_until_closed(DELAY + 6)
    codes = [r.code for r in replies]
    assert codes and codes[-1] == 421 and replies[-1].enhanced == "4.7.0", replies
    assert 421 not in codes[:-1] and closed, replies
    s.assert_nothing(portier=p)


def test_replay_command_timeout(portier, sink, client):
    """command_timeout = 1 while the replay takes 2 s: the client's clock does not run during
    the wait; it gets 250, then 421 4.4.2 for the silence after."""
    p, s, c = replay_waiting(portier, sink, client)
    replies, closed = c.replies_until_closed(DELAY * 3 + 4)
    assert [r.code for r in replies] == [250, 421], replies
    assert replies[1].enhanced == "4.4.2" and closed, replies
    assert len(s.wait_messages(1)) == 1


def test_replay_forced_drain(portier, sink, client):
    """SIGTERM while the replay waits longer than drain_timeout and its grace (the restarted
    smtp-sink holds the RCPT reply 8 s): the session is ended with 421 4.3.2 and nothing
    after it, the backend transaction is dropped (nothing delivered), portier exits 0."""
    s = sink()
    p = start_edit(portier, sink_relay(s), {"change_from": "new@origin.test"},
                   backend={"relay_timeout": "30"}, server={"drain_timeout": "1"})
    c = client(p.port, timeout=30)
    c.start()
    c.cmd("MAIL FROM:<%s>" % SENDER, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    time.sleep(0.5)
    s.stop()
    s.args = ["-W", "rcpt:8"]
    s.restart()
    c.send(peers.dot_stuff(make_message()) + b".\r\n")
    assert p.wait_log(r"event=envelope_replay", timeout=5)
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    replies, closed = c.replies_until_closed(15)
    assert [(r.code, r.enhanced) for r in replies] == [(421, "4.3.2")], replies
    assert closed
    assert p.wait(10) == 0, p.log_text()
    assert p.txns()[0]["result"] == "aborted"
    time.sleep(1)
    assert s.messages() == []

"""The role policies as filters (issue #9): port25 on mx listeners, auth-enforce on submission
and submissions listeners.  Each role runs its safety filter first whether or not `filters =`
lists it, the summary line (event=txn ... filters=) names it, `portier -t` refuses another
role's filter (or a removal) naming file, line and key, and an mx listener with an empty
`filters =` still refuses relay and AUTH in the words it always used.  Backend: smtp-sink."""
import os
import re

import pytest

import peers
from peers import make_message
from tlsauth import (certs, users_file, tls_server, ALICE, ALICE_PW,  # noqa: F401
                     tls_context, starttls, wrap_implicit, auth_plain)

SUBMISSION = {"role": "submission", "tls": "starttls"}
SUBS = {"subs": {"role": "submissions"}}


def summary(p, n=1):
    """The first n transaction summary lines, once logged."""
    return p.wait_txns(n)[:n]


@pytest.mark.parametrize("filters", [None, "", "port25"], ids=["unset", "empty", "listed"])
def test_mx_summary_names_port25(make_pair, client, filters):
    """An mx listener runs port25 whatever `filters =` says (unset, empty, or port25 itself,
    which runs once): the delivered message's summary line says filters=port25."""
    p, s = make_pair(listener={"filters": filters} if filters is not None else None)
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    assert len(s.wait_messages(1)) == 1
    t = summary(p)[0]
    assert t["result"] == "delivered" and t["filters"] == "port25", t


def test_mx_empty_filters_still_refuses_relay(make_pair, client):
    """filters = (empty) on mx: a foreign recipient, a percent hack and a quoted '@' get
    550 5.7.1 relay access denied, in the same words as ever; AUTH gets 503 5.5.1; a local
    recipient passes; the refusals count toward max_errors, as the AUTH does (max_errors = 4:
    the 3rd denial is the 4th error and brings 421 4.7.0)."""
    p, s = make_pair(server={"max_errors": 4}, listener={"filters": ""})
    c = client(p.port)
    c.start()
    r = c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", expect="503 5.5.1")
    assert r.texts() == ["5.5.1 Error: authentication not enabled"], r
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    r = c.cmd("RCPT TO:<user@foreign.test>", expect="550 5.7.1")
    assert r.texts() == ["5.7.1 Error: relay access denied"], r
    assert p.wait_log(r"event=relay_denied client=127\.0\.0\.1 rcpt=<user@foreign\.test>")
    assert p.wait_log(r"event=filter_reject filter=port25 ")
    c.cmd("RCPT TO:<user%foreign.test@example.test>", expect="550 5.7.1")
    c.sendline('RCPT TO:<"user@foreign.test"@example.test>')
    peers.expect_reply(c.read_reply(), "550 5.7.1", "quoted '@' (the 4th error)")
    peers.expect_reply(c.read_reply(), "421 4.7.0", "after max_errors = 4")
    c.expect_closed()
    s.assert_nothing(portier=p, txns=1)


def _submission_session(srv, client, certs, mode):
    ctx = tls_context(certs)
    if mode == "submission":
        c = client(srv.port)
        c.start()
        starttls(c, ctx)
        c.ehlo()
    else:
        c = wrap_implicit(client(srv.subs), ctx)
        c.start()
    return c


@pytest.mark.parametrize("mode", ["submission", "submissions"])
def test_submission_summary_names_auth_enforce(tls_server, client, certs, mode):
    """submission and submissions run auth-enforce with no `filters =` at all: MAIL before
    AUTH gets 530 5.7.0, the refused transaction's summary line and the delivered one's both
    say filters=auth-enforce; a sender the login does not own gets 553 5.7.1."""
    srv = tls_server(listener=SUBMISSION, listeners=SUBS, auth="default")
    p = srv.portier
    c = _submission_session(srv, client, certs, mode)
    r = c.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    assert r.texts() == ["5.7.0 Error: authentication required"], r
    auth_plain(c, ALICE, ALICE_PW)
    r = c.cmd("MAIL FROM:<bob@example.test>", expect="553 5.7.1")
    assert r.texts() == ["5.7.1 Error: sender address not owned by the authenticated user"], r
    c.transaction(ALICE, ["r@foreign.test"], make_message(frm=ALICE))
    assert len(srv.sink.wait_messages(1)) == 1
    txns = summary(p, 3)
    assert [t["result"] for t in txns] == ["rejected", "rejected", "delivered"], txns
    assert all(t["filters"] == "auth-enforce" for t in txns), txns
    assert p.wait_log(r"event=sender_login_mismatch user=alice@example\.test "
                      r"from=<bob@example\.test>")


def test_submission_from_header_refused(tls_server, client, certs):
    """auth-enforce at end of data: a From: the login does not own gets 553 5.7.1 in the
    session's words; nothing reaches the backend; the session goes on."""
    srv = tls_server(listener=SUBMISSION, listeners=SUBS, auth="default")
    c = _submission_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, ALICE_PW)
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("RCPT TO:<r@foreign.test>", expect="250 2.1.5")
    marker = peers.unique_id("policy-from")
    r = c.send_message(make_message(subject=marker, frm="bob@example.test"), expect="553 5.7.1")
    assert r.texts() == ["5.7.1 Error: From: header address not owned by the authenticated "
                         "user"], r
    c.cmd("NOOP", expect="250 2.0.0")
    srv.sink.assert_nothing(marker=marker, portier=srv.portier, txns=1)
    assert srv.portier.wait_log(r"event=from_login_mismatch user=alice@example\.test "
                                r"result=MISMATCH")
    assert summary(srv.portier)[0]["filters"] == "auth-enforce"


def _check(tmpdir, text):
    path = os.path.join(tmpdir, "policy.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    return path, rc, out


# (the listener's section text after its header, the line of its "filters =" in the file,
#  the message that -t must print for it)
WRONG_ROLE = [
    ("mx-auth-enforce", "[listener mx]\nlisten = 127.0.0.1:{port}\nrole = mx\n"
     "filters = auth-enforce\n",
     '[listener mx] filters: "auth-enforce" is the safety filter of role submission; this '
     'listener has role mx, which runs port25 first'),
    ("sub-port25", "[listener sub]\nlisten = 127.0.0.1:{port}\nrole = submission\n"
     "tls = starttls\nfilters = port25\n",
     '[listener sub] filters: "port25" is the safety filter of role mx; this listener has '
     'role submission, which runs auth-enforce first'),
    ("subs-port25", "[listener subs]\nlisten = 127.0.0.1:{port}\nrole = submissions\n"
     "filters = port25\n",
     '[listener subs] filters: "port25" is the safety filter of role mx; this listener has '
     'role submissions, which runs auth-enforce first'),
    ("mx-removal", "[listener mx]\nlisten = 127.0.0.1:{port}\nrole = mx\nfilters = -port25\n",
     '[listener mx] filters: "-port25": a role\'s safety filter cannot be removed; role mx '
     'always runs port25 first'),
]


@pytest.mark.parametrize("listener,message", [(l, m) for _, l, m in WRONG_ROLE],
                         ids=[i for i, _, _ in WRONG_ROLE])
def test_check_refuses_wrong_role_filter(portier_bin, tmpdir_0755, certs, users_file, listener,
                                         message):
    """`portier -t` exits 2 naming file, line and key when a listener lists the other role's
    safety filter, or tries to remove its own: no mx listener runs without port25, no
    submission listener without auth-enforce."""
    head = "[server]\nhostname = %s\nlocal_domains = example.test\n" % peers.HOSTNAME
    tail = ("[tls]\ncert = %s\nkey = %s\n[auth]\npasswd_file = %s\n[backend]\n"
            "relay = smtp:127.0.0.1:9\n" % (certs.cert, certs.key, users_file()))
    text = head + listener + tail
    line = 3 + next(i for i, l in enumerate(listener.splitlines(), 1) if l.startswith("filters"))
    path, rc, out = _check(tmpdir_0755, text)
    assert rc == 2, out
    assert re.search("^" + re.escape("%s:%d: %s" % (path, line, message)) + "$", out, re.M), out


def test_check_accepts_own_role_filter(portier_bin, tmpdir_0755, certs, users_file):
    """Listing a listener's own safety filter is allowed (it still runs once, first)."""
    text = ("[server]\nhostname = %s\nlocal_domains = example.test\n"
            "[listener mx]\nlisten = 127.0.0.1:{port}\nrole = mx\nfilters = port25\n"
            "[listener subs]\nlisten = 127.0.0.1:%d\nrole = submissions\n"
            "filters = auth-enforce\n"
            "[tls]\ncert = %s\nkey = %s\n[auth]\npasswd_file = %s\n[backend]\n"
            "relay = smtp:127.0.0.1:9\n" % (peers.HOSTNAME, peers.free_port(), certs.cert,
                                            certs.key, users_file()))
    path, rc, out = _check(tmpdir_0755, text)
    assert rc == 0, out

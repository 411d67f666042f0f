"""Relay control: an mx listener (local_domains = example.test) must never relay.  The classic
open-relay battery: each RCPT form has its one right outcome, a refusal (550 5.7.1, or a
501/553 syntax reply) or delivery to one LOCAL example.test recipient with no foreign domain
anywhere in it.  Table-driven; a summary of what happened to each form is printed (and shown
in the failure message).  Backend: smtp-sink, whose X-Rcpt-Args records what portier sent."""
import os
import shutil

import pytest

import peers
from peers import make_message

LOCAL = "example.test"
# Anything that must never show up in a recipient handed to the backend.
FOREIGN_MARKS = ("foreign.test", "127.0.0.1", "::1", "localhost", "sub.example.test",
                 "example.test.foreign")

DENIED = "550 5.7.1"
BAD_ADDR = "501 5.1.3"

# (id, the whole RCPT command line, the one right outcome): a refusal's code and enhanced
# code, or "-> ADDR" (accepted, and the backend gets exactly the recipient ADDR).
RCPT_FORMS = [
    ("plain-foreign", "RCPT TO:<user@foreign.test>", DENIED),
    ("percent-hack", "RCPT TO:<user%foreign.test@example.test>", DENIED),
    ("bang-path", "RCPT TO:<foreign.test!user@example.test>", DENIED),
    ("quoted-at", "RCPT TO:<\"user@foreign.test\"@example.test>", DENIED),
    ("quoted-percent", "RCPT TO:<\"user%foreign.test\"@example.test>", DENIED),
    ("source-route-local-first", "RCPT TO:<@example.test:user@foreign.test>", DENIED),
    # RFC 5321 4.1.1.3: a source route is accepted and ignored
    ("source-route-foreign-first", "RCPT TO:<@foreign.test:user@example.test>",
     "-> user@example.test"),
    ("ipv4-literal", "RCPT TO:<user@[127.0.0.1]>", DENIED),
    ("ipv6-literal", "RCPT TO:<user@[IPv6:::1]>", DENIED),
    # a root dot ("example.test.") is the same domain: accepted and passed on without it
    ("trailing-dot", "RCPT TO:<user@example.test.>", "-> user@example.test"),
    ("postmaster-trailing-dot", "RCPT TO:<postmaster@example.test.>",
     "-> postmaster@example.test"),
    ("trailing-dot-foreign", "RCPT TO:<user@foreign.test.>", DENIED),
    ("two-trailing-dots", "RCPT TO:<user@example.test..>", BAD_ADDR),
    ("upper-case", "RCPT TO:<USER@EXAMPLE.TEST>", "-> USER@example.test"),
    ("double-at-local-last", "RCPT TO:<user@foreign.test@example.test>", BAD_ADDR),
    ("double-at-foreign-last", "RCPT TO:<user@example.test@foreign.test>", BAD_ADDR),
    ("quoted-local-foreign", "RCPT TO:<\"user\"@foreign.test>", DENIED),
    ("subdomain", "RCPT TO:<user@sub.example.test>", DENIED),
    ("suffix-domain", "RCPT TO:<user@example.test.foreign.test>", DENIED),
    ("postmaster-foreign", "RCPT TO:<postmaster@foreign.test>", DENIED),
    ("postmaster-bare", "RCPT TO:<postmaster>", "-> postmaster@example.test"),
    ("localhost", "RCPT TO:<user@localhost>", DENIED),
    ("bare-ip", "RCPT TO:<user@127.0.0.1>", DENIED),
    ("space-after-colon", "RCPT TO: <user@foreign.test>", DENIED),
    ("mixed-case-verb", "RcPt To:<user@foreign.test>", DENIED),
    ("no-angle-brackets", "RCPT TO:user@foreign.test", BAD_ADDR),
    ("percent-hack-upper", "RCPT TO:<user%FOREIGN.TEST@EXAMPLE.TEST>", DENIED),
    ("double-percent", "RCPT TO:<user%foreign.test%example.test@example.test>", DENIED),
    ("bang-and-percent", "RCPT TO:<foreign.test!user%foreign.test@example.test>", DENIED),
    ("empty-label", "RCPT TO:<user@example..test>", BAD_ADDR),
    ("leading-dot-domain", "RCPT TO:<user@.example.test>", BAD_ADDR),
    ("homoglyph", "RCPT TO:<user@ex\u0430mple.test>", "553 5.6.7"),
    ("backslash-quoted", "RCPT TO:<\"user\\@foreign.test\"@example.test>", DENIED),
    ("comment-in-path", "RCPT TO:<user@foreign.test (example.test)>", BAD_ADDR),
    ("two-paths", "RCPT TO:<user@example.test> <user@foreign.test>", "501 5.5.4"),
    # ORCPT is only a record of the original address: it routes nothing
    ("orcpt-param", "RCPT TO:<user@example.test> ORCPT=rfc822;user@foreign.test",
     "-> user@example.test"),
]
EXPECT = {f: e for f, _, e in RCPT_FORMS}


def rcpt_domain(addr):
    i = addr.rfind("@")
    return addr[i + 1:] if i >= 0 else ""


def run_case(p, s, form_id, line):
    """One session: MAIL, the RCPT line, and DATA if it was accepted.  Returns a dict whose
    "outcome" is the reply code and enhanced code of a refusal, or "-> ADDR" for a delivered
    message (ADDR: the one recipient the backend got), or what went wrong."""
    c = peers.SmtpClient(p.port)
    try:
        c.start("relay-test.client")
        c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
        r = c.cmd(line)
        res = {"id": form_id, "line": line, "reply": r.text.splitlines()[0]}
        if r.code != 250:
            res["outcome"] = "%d %s" % (r.code, r.enhanced)
            c.quit()
            return res
        marker = peers.unique_id("relay-" + form_id)
        fr = c.send_message(make_message(subject=marker, to="user@example.test"))
        res["data_reply"] = fr.text.splitlines()[0]
        c.quit()
    finally:
        c.close()
    if fr.code != 250:
        res["outcome"] = "ACCEPTED, THEN %s AFTER THE DATA" % res["data_reply"]
        return res
    found = peers.wait_until(
        lambda: [m for m in s.messages() if marker.encode() in m.content], 5) or []
    if len(found) != 1:
        res["outcome"] = "ACCEPTED-BUT-NOT-DELIVERED (%d copies)" % len(found)
        return res
    m = found[0]
    res["backend_rcpts"] = m.rcpt_args
    bad = []
    for arg in m.rcpt_args:
        addr = peers.angle_addr(arg)
        if rcpt_domain(addr).lower() != LOCAL:
            bad.append("domain of %r is not %s" % (addr, LOCAL))
        low = addr.lower()          # the address; parameters (ORCPT=) route nothing
        bad += ["%r appears in %r" % (f, addr) for f in FOREIGN_MARKS if f in low]
    res["outcome"] = ("-> " + ", ".join(m.rcpts)) if not bad else "RELAYED: " + "; ".join(bad)
    return res


@pytest.fixture(scope="module")
def battery_server():
    """One smtp-sink and one portier (mx, tls = none) for the whole battery; stopped by PID at
    the end of the module, and a crash, a sanitizer report or a bad exit fails the last test."""
    stmp = peers.make_tempdir("sink")
    ptmp = peers.make_tempdir("portier")
    s = peers.Sink(tmp=stmp)
    p = None
    try:
        p = peers.Portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port), tmp=ptmp)
        yield p, s
    finally:
        problems = []
        if p is not None:
            crashed = p.returncode()
            rc = p.stop()
            if crashed is not None:
                problems.append("portier exited on its own with status %r" % crashed)
            elif rc != 0:
                problems.append("portier exited with status %r on SIGTERM" % rc)
            if p.sanitizer_report():
                problems.append("sanitizer report in portier's log")
            if problems:
                problems.append(p.log_text()[-20000:])
        s.stop()
        if os.environ.get("PORTIER_KEEP") != "1" and not problems:
            shutil.rmtree(stmp, ignore_errors=True)
            shutil.rmtree(ptmp, ignore_errors=True)
        if problems:
            pytest.fail("battery server: " + "\n".join(problems))


RESULTS = {}


def outcome_ok(r):
    return r["outcome"] == EXPECT[r["id"]]


@pytest.mark.parametrize("form_id,line", [(f, l) for f, l, _ in RCPT_FORMS],
                         ids=[f for f, _, _ in RCPT_FORMS])
def test_rcpt_form(battery_server, form_id, line):
    """One RCPT form (see RCPT_FORMS) has its one right outcome: its refusal (550 5.7.1 for a
    foreign domain, 501 for bad syntax, 553 5.6.7 for a non-ASCII address without SMTPUTF8),
    or, for the local forms (USER@EXAMPLE.TEST, <postmaster>, a root dot, a source route,
    ORCPT), delivery to exactly that local example.test recipient."""
    p, s = battery_server
    r = RESULTS[form_id] = run_case(p, s, form_id, line)
    assert outcome_ok(r), "%s: %s, want %s\n  sent %r\n  reply %r\n  backend recipients %r" % (
        form_id, r["outcome"], EXPECT[form_id], line, r["reply"], r.get("backend_rcpts"))


def test_rcpt_form_summary(battery_server, capsys):
    """Print the battery's table (running any form not run yet) and fail on any form whose
    outcome is not the one it must have."""
    p, s = battery_server
    for fid, line, _ in RCPT_FORMS:
        if fid not in RESULTS:
            RESULTS[fid] = run_case(p, s, fid, line)
    lines = ["%-28s %-5s %-58s %s" % ("form", "ok", "reply", "backend recipients")]
    for fid, _, _ in RCPT_FORMS:
        r = RESULTS[fid]
        lines.append("%-28s %-5s %-58s %s" % (fid, "ok" if outcome_ok(r) else "FAIL",
                                               r["reply"][:58],
                                               ", ".join(r.get("backend_rcpts", []))))
        if not outcome_ok(r):
            lines.append("    ^ %s, want %s  (sent %r)" % (r["outcome"], EXPECT[fid], r["line"]))
    bad = [fid for fid, _, _ in RCPT_FORMS if not outcome_ok(RESULTS[fid])]
    lines.append("%d forms, %d violations" % (len(RCPT_FORMS), len(bad)))
    with capsys.disabled():
        print("\nopen-relay battery (mx, local_domains = example.test):\n" + "\n".join(lines))
    assert not bad, "\n".join(lines)


def test_foreign_recipient_dropped_from_mixed_list(relay_pair, client):
    """A transaction with local and foreign recipients: the foreign ones get 550 5.7.1 and the
    backend sees only the local ones."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<alice@foreign.test>", expect="550 5.7.1")
    c.cmd("RCPT TO:<bob@EXAMPLE.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="250")
    m = s.wait_messages(1)[0]
    for a in m.rcpts:
        assert rcpt_domain(a).lower() == LOCAL and "foreign" not in a.lower(), m.rcpts


def test_trailing_dot_is_the_same_domain(relay_pair, client):
    """One root dot ends a domain (portier.conf(5)): <user@example.test.> is the local
    example.test, and both it and the sender reach the backend without the dot; two dots are a
    syntax error (501)."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@Origin.test.>", expect="250 2.1.0")
    c.cmd("RCPT TO:<user@example.test..>", expect="501")
    c.cmd("RCPT TO:<user@example.test.>", expect="250 2.1.5")
    c.cmd("RCPT TO:<postmaster@EXAMPLE.test.>", expect="250 2.1.5")
    c.send_message(make_message(), expect="250")
    m = s.wait_messages(1)[0]
    assert m.mail_from == "sender@origin.test", m.mail_from
    assert sorted(m.rcpts) == ["postmaster@example.test", "user@example.test"], m.rcpts


def test_null_sender_cannot_relay(relay_pair, client):
    """MAIL FROM:<> (a bounce) does not open relaying either."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<>", expect="250 2.1.0")
    c.cmd("RCPT TO:<user@foreign.test>", expect="550 5.7.1")


def test_local_sender_cannot_relay(relay_pair, client):
    """A sender in a local domain gets no relaying on mx (no AUTH there)."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<alice@example.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<user@foreign.test>", expect="550 5.7.1")
    c.cmd("RCPT TO:<user@[127.0.0.1]>", expect="550 5.7.1")
    c.cmd("RSET", expect="250 2.0.0")
    s.assert_nothing(portier=p)

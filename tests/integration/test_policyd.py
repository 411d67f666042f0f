"""The policyd filter (filters/policyd.c): portier as a client of Postfix's SMTP access policy
delegation protocol, in whole SMTP sessions.

Real policy servers from Debian (../shared/recipes/policyd-spf.md): postfix-policyd-spf-python on
TCP through socat, resolving through a private unbound (peers.Unbound), and postgrey greylisting
the first attempt and passing the retry.  A policy server written here (PolicyServer: scripted
per connection, recording every request) for the attributes sent at every stage, connection
reuse (several recipients, two sessions, a pooled connection the server closed), the actions
(PREPEND, REDIRECT, BCC, DISCARD, HOLD, codes) and servers that misbehave: an unknown action, a
line over max_reply, garbage, no reply (timeout), a close, nothing listening; each gets
default_action, a log line naming the policyd, and the next client's mail still flows.  The
client leaving, SIGHUP and SIGTERM during a request.  The portier fixture fails a test on any
sanitizer report.
"""
import os
import re
import shutil
import signal
import socket
import threading
import time

import pytest

import peers
from peers import make_message

PYTHON = peers.PYTHON
SOCAT = shutil.which("socat") or "/usr/bin/socat"
POSTGREY = shutil.which("postgrey") or "/usr/sbin/postgrey"

# Every attribute Postfix 3.8 sends (SMTPD_POLICY_README), in its order.
ATTRIBUTES = [
    "request", "protocol_state", "protocol_name", "helo_name", "queue_id", "sender", "recipient",
    "recipient_count", "client_address", "client_name", "reverse_client_name", "instance",
    "sasl_method", "sasl_username", "sasl_sender", "size", "ccert_subject", "ccert_issuer",
    "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol", "encryption_cipher",
    "encryption_keysize", "etrn_domain", "stress", "client_port", "policy_context",
    "server_address", "server_port", "compatibility_level", "mail_version",
]


class PolicyServer:
    """A policy server in a thread of the test, on a free 127.0.0.1 port (or a unix socket).

    plan: one list per connection, in the order portier opens them, of what to do with each
    request on it: an action ("DUNNO" -> "action=DUNNO\\n\\n"), or
      ("close",)        close without replying
      ("hang",)         never reply (until portier closes)
      ("raw", text)     send text as it is (("raw", text, "close"): then close)
      ("delay", s, a)   reply action a after s seconds
    Requests past a connection's list get `default`.  Records each connection's requests (dicts
    of their attributes, in order) and whether portier closed it."""

    def __init__(self, plan=(), default="DUNNO", path=None, port=0):
        self.plan = [list(p) for p in plan]
        self.default = default
        self.conns = []             # per connection: {"requests": [...], "closed": bool}
        self.lock = threading.Lock()
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            os.chmod(path, 0o666)
            self.socket = "unix:%s" % path
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", port))
            self.port = self.sock.getsockname()[1]
            self.socket = "inet:127.0.0.1:%d" % self.port
        self.sock.listen(64)
        self.stopping = False
        self.clients = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                index = len(self.conns)
                rec = {"requests": [], "closed": False}
                self.conns.append(rec)
                steps = self.plan[index] if index < len(self.plan) else []
                self.clients.append(conn)
            threading.Thread(target=self._serve, args=(conn, rec, steps), daemon=True).start()

    def _serve(self, conn, rec, steps):
        f = conn.makefile("rb")
        attrs = {}
        n = 0
        try:
            while True:
                line = f.readline()
                if not line:
                    break
                line = line.decode("utf-8", "replace").rstrip("\n")
                if line:
                    k, _, v = line.partition("=")
                    attrs[k] = v
                    continue
                with self.lock:
                    rec["requests"].append(attrs)
                attrs = {}
                step = steps[n] if n < len(steps) else self.default
                n += 1
                if isinstance(step, str):
                    conn.sendall(("action=%s\n\n" % step).encode())
                elif step[0] == "close":
                    break
                elif step[0] == "hang":
                    continue
                elif step[0] == "raw":
                    conn.sendall(step[1].encode())
                    if len(step) > 2:
                        break
                elif step[0] == "delay":
                    time.sleep(step[1])
                    conn.sendall(("action=%s\n\n" % step[2]).encode())
        except OSError:
            pass
        finally:
            with self.lock:
                rec["closed"] = True
            try:
                conn.close()
            except OSError:
                pass

    def requests(self):
        with self.lock:
            return [r for c in self.conns for r in c["requests"]]

    def connections(self):
        with self.lock:
            return len(self.conns)

    def closed(self, i):
        with self.lock:
            return i < len(self.conns) and self.conns[i]["closed"]

    def stop(self):
        self.stopping = True
        self.sock.close()
        with self.lock:
            for c in self.clients:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def policy_server(request):
    started = []

    def start(*a, **kw):
        s = PolicyServer(*a, **kw)
        started.append(s)
        return s

    request.addfinalizer(lambda: [s.stop() for s in started])
    return start


def section(socket_spec, **keys):
    keys = dict({"socket": socket_spec, "timeout": "10"}, **keys)
    return "[policyd p]\n%s\n" % "".join("%s = %s\n" % kv for kv in keys.items())


def start(make_pair, socket_spec, filters="policyd:p", server=None, **keys):
    """portier (one loop) with policyd:p asking socket_spec, relaying to an smtp-sink."""
    srv = {"workers": "1"}
    srv.update(server or {})
    return make_pair(server=srv, listener={"filters": filters}, extra=section(socket_spec, **keys))


def send(p, rcpts=("alice@example.test",), sender="sender@origin.test", msg=None,
         expect="250", rcpt_expect=None):
    """One session, one transaction; returns the replies to RCPT and the final one (or None)."""
    c = peers.SmtpClient(p.port)
    try:
        c.start()
        c.cmd("MAIL FROM:<%s>" % sender, expect="250")
        rr = [c.cmd("RCPT TO:<%s>" % r, expect=rcpt_expect) for r in rcpts]
        final = None
        if any(r.code == 250 for r in rr):
            final = c.send_message(msg or make_message(), expect=expect)
        c.quit()
    finally:
        c.close()
    return rr, final


def session_requests(srv):
    """The requests of the last session that started a transaction (portier's start-up probe
    is a session too: it connects and quits)."""
    reqs = srv.requests()
    sid = [r["instance"].split(".")[0] for r in reqs if r["protocol_state"] == "MAIL"][-1]
    return [r for r in reqs if r["instance"].split(".")[0] == sid]


def log_lines(p, pattern):
    return [l for l in p.log_text().splitlines() if re.search(pattern, l)]


# ---------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------

def test_attributes_at_every_stage(make_pair, policy_server):
    """stages = connect helo mail rcpt data: one request per stage, each with every attribute
    Postfix sends, the values portier has (client, helo, sender, recipient, counts, instance,
    size, ports, policy_context), empty ones where it has none, and a log line per request."""
    srv = policy_server()
    p, s = start(make_pair, srv.socket, stages="connect helo mail rcpt data",
                 policy_context="ctx-test")
    send(p, rcpts=("alice@example.test", "bob@example.test"), sender="a@origin.test")
    s.wait_messages(1)
    reqs = session_requests(srv)
    assert [r["protocol_state"] for r in reqs] == [
        "CONNECT", "HELO", "MAIL", "RCPT", "RCPT", "END-OF-MESSAGE"], reqs
    for r in reqs:
        assert list(r) == ATTRIBUTES, r
        assert r["request"] == "smtpd_access_policy"
        assert r["client_address"] == "127.0.0.1"
        assert r["server_address"] == "127.0.0.1"
        assert r["server_port"] == str(p.port)
        assert int(r["client_port"]) > 0
        assert r["policy_context"] == "ctx-test"
        assert r["sasl_username"] == "" and r["encryption_protocol"] == ""
        assert r["encryption_keysize"] == "0" and r["ccert_subject"] == ""
        assert r["reverse_client_name"] and r["client_name"]
    connect, helo, mail, rcpt1, rcpt2, eom = reqs
    assert connect["helo_name"] == "" and connect["sender"] == "" and connect["queue_id"] == ""
    assert helo["helo_name"] == "client.test"
    assert mail["sender"] == "a@origin.test" and mail["recipient"] == ""
    assert mail["helo_name"] == "client.test"
    assert rcpt1["recipient"] == "alice@example.test" and rcpt1["recipient_count"] == "0"
    assert rcpt2["recipient"] == "bob@example.test"
    assert eom["recipient"] == "" and eom["recipient_count"] == "2"   # several: none named
    assert int(eom["size"]) > 100
    # One instance per transaction, the same from MAIL to END-OF-MESSAGE; the queue id too.
    assert mail["instance"] == rcpt1["instance"] == rcpt2["instance"] == eom["instance"]
    assert mail["queue_id"] == eom["queue_id"] == mail["instance"] != ""
    assert connect["instance"] != mail["instance"]
    for st in ("connect", "helo", "mail", "rcpt", "data"):
        assert log_lines(p, r"event=policyd name=p stage=%s action=\"DUNNO\" verdict=continue "
                         r"delay=\d+\.\d{3}" % st), p.log_text()


def test_unix_socket_and_one_recipient_at_eom(make_pair, policy_server, tmpdir_0755):
    """socket = unix:PATH; at END-OF-MESSAGE a single recipient is named; a second transaction
    of the session has a new instance."""
    srv = policy_server(path=os.path.join(tmpdir_0755, "policy.sock"))
    p, s = start(make_pair, srv.socket, stages="rcpt data")
    c = peers.SmtpClient(p.port)
    c.start()
    c.transaction("a@origin.test", ["alice@example.test"], make_message())
    c.transaction("b@origin.test", ["bob@example.test"], make_message())
    c.quit()
    reqs = srv.requests()
    assert [r["protocol_state"] for r in reqs] == ["RCPT", "END-OF-MESSAGE"] * 2
    assert reqs[1]["recipient"] == "alice@example.test" and reqs[1]["recipient_count"] == "1"
    assert reqs[0]["instance"] == reqs[1]["instance"] != reqs[2]["instance"] == reqs[3]["instance"]
    assert len(s.wait_messages(2)) == 2


def test_connection_reused(make_pair, policy_server):
    """One connection serves three recipients and then a second session (the loop's pool)."""
    srv = policy_server()
    p, s = start(make_pair, srv.socket)
    send(p, rcpts=("alice@example.test", "bob@example.test", "carol@example.test"))
    send(p)
    assert len(s.wait_messages(2)) == 2
    assert len(srv.requests()) == 4
    assert srv.connections() == 1, srv.conns


def test_reused_connection_closed_is_retried(make_pair, policy_server):
    """The server closes a pooled connection when the next request comes: portier sends it again
    once on a fresh connection, and nothing fails."""
    srv = policy_server(plan=[["DUNNO", ("close",)]])
    p, s = start(make_pair, srv.socket)
    rr, _ = send(p, rcpts=("alice@example.test", "bob@example.test"), rcpt_expect="250")
    assert srv.connections() == 2
    assert len(srv.requests()) == 3          # the second one twice
    assert "filter_failed" not in p.log_text()
    assert len(s.wait_messages(1)) == 1


def test_idle_timeout_closes_pooled_connection(make_pair, policy_server):
    """idle_timeout = 1: the idle connection is closed after a second; the next session opens a
    new one."""
    srv = policy_server()
    p, s = start(make_pair, srv.socket, idle_timeout="1")
    send(p)
    assert peers.wait_until(lambda: srv.closed(0), 5), "idle connection still open"
    send(p)
    assert srv.connections() == 2


# ---------------------------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------------------------

def test_reply_codes_and_words(make_pair, policy_server):
    """Each RCPT gets another action: the reply code, enhanced code and text it maps to."""
    cases = [
        ("REJECT go away", "554 5.7.1", "go away"),
        ("reject", "554 5.7.1", "Access denied"),
        ("450 4.2.0 try later", "450 4.2.0", "try later"),
        ("550 5.7.23 SPF says no", "550 5.7.23", "SPF says no"),
        ("551 no ecode here", "551 5.7.1", "no ecode here"),
        ("DEFER_IF_PERMIT Greylisted", "450 4.7.1", "Greylisted"),
        ("DEFER 4.3.5 busy", "450 4.3.5", "busy"),
        ("DEFER_IF_REJECT maybe", "250", None),
        ("OK", "250", None),
        ("dunno", "250", None),
        ("", "250", None),
        ("12345", "250", None),
        ("WARN look at this", "250", None),
        ("INFO fyi", "250", None),
        ("FILTER smtp:[127.0.0.1]:10025", "250", None),
    ]
    srv = policy_server(plan=[[a for a, _, _ in cases]])
    p, s = start(make_pair, srv.socket)
    c = peers.SmtpClient(p.port)
    c.start()
    c.cmd("MAIL FROM:<a@origin.test>", expect="250")
    for i, (action, expect, text) in enumerate(cases):
        r = c.cmd("RCPT TO:<u%d@example.test>" % i)
        peers.expect_reply(r, expect, "RCPT for action %r" % action)
        if text is not None:
            assert r.text.endswith(text), (action, r.text)
    c.quit()
    assert log_lines(p, r"event=policyd .*action=\"FILTER .* note=not_supported")
    assert log_lines(p, r"warning: .*event=policyd .*action=\"WARN look at this\"")
    assert log_lines(p, r"event=policyd .*action=\"DEFER_IF_REJECT maybe\" verdict=continue "
                     r"note=ignored")
    assert "filter_failed" not in p.log_text()


def test_prepend(make_pair, policy_server):
    """PREPEND at RCPT: the field is at the top of the delivered header block (after portier's
    Received:), once per PREPEND, in the order given; one given at CONNECT comes first and in
    every transaction of the session."""
    # The first request is the CONNECT of portier's start-up probe (a session too).
    srv = policy_server(plan=[["DUNNO", "PREPEND X-Session: at-connect",
                               "PREPEND X-Policy-A: one", "PREPEND X-Policy-B: two", "DUNNO"]])
    p, s = start(make_pair, srv.socket, stages="connect rcpt")
    c = peers.SmtpClient(p.port)
    c.start()
    c.transaction("a@origin.test", ["alice@example.test", "bob@example.test"],
                  make_message(subject="first"))
    c.transaction("a@origin.test", ["alice@example.test"], make_message(subject="second"))
    c.quit()
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    msgs.sort(key=lambda m: b"Subject: second" in m.raw)
    first = msgs[0].content.decode()
    assert first.startswith("X-Session: at-connect\nX-Policy-A: one\nX-Policy-B: two\nFrom:"), \
        first[:300]
    second = msgs[1].content.decode()
    assert second.startswith("X-Session: at-connect\nFrom:"), second[:300]


def test_redirect(make_pair, policy_server):
    """REDIRECT: the message goes to that address only."""
    srv = policy_server(default="REDIRECT audit@example.test")
    p, s = start(make_pair, srv.socket)
    send(p, rcpts=("alice@example.test", "bob@example.test"))
    msgs = s.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].rcpts == ["audit@example.test"], msgs[0].raw[:500]


def test_bcc(make_pair, policy_server):
    """BCC: one more recipient (once, however many RCPTs asked for it)."""
    srv = policy_server(default="BCC copy@example.test")
    p, s = start(make_pair, srv.socket)
    send(p, rcpts=("alice@example.test", "bob@example.test"))
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    assert sorted(msgs[0].rcpts) == ["alice@example.test", "bob@example.test",
                                     "copy@example.test"], msgs[0].rcpts


def test_discard(make_pair, policy_server):
    """DISCARD: the client is told 250, nothing is delivered."""
    srv = policy_server(default="DISCARD spam")
    p, s = start(make_pair, srv.socket)
    send(p)
    s.assert_nothing(portier=p)
    assert p.txns()[0]["result"] == "discarded", p.txns()


@pytest.mark.parametrize("word", ["HOLD", "QUARANTINE"])
def test_hold_quarantines(make_pair, policy_server, word):
    """HOLD / QUARANTINE text: delivered with X-Portier-Quarantine: text."""
    srv = policy_server(default="%s looks odd" % word)
    p, s = start(make_pair, srv.socket)
    send(p)
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    assert b"X-Portier-Quarantine: looks odd" in msgs[0].raw, msgs[0].raw[:500]


def test_prepend_applied_when_eom_reply_rejects_not(make_pair, policy_server):
    """stages = rcpt data: a PREPEND at RCPT and one at END-OF-MESSAGE both land; a REJECT at
    END-OF-MESSAGE refuses the message (554) and nothing is delivered."""
    srv = policy_server(plan=[["PREPEND X-R: rcpt", "PREPEND X-E: eom",
                               "PREPEND X-R: again", "REJECT 5.7.0 not this one"]])
    p, s = start(make_pair, srv.socket, stages="rcpt data")
    send(p)
    send(p, expect="554 5.7.0")
    msgs = s.wait_messages(1)
    time.sleep(0.3)
    msgs = s.messages()
    assert len(msgs) == 1
    assert msgs[0].content.decode().startswith("X-R: rcpt\nX-E: eom\nFrom:"), msgs[0].content


# ---------------------------------------------------------------------------------------------
# servers that fail
# ---------------------------------------------------------------------------------------------

BAD = {
    "unknown_action": ([("raw", "action=FROBNICATE now\n\n")],
                       r"unknown action \\x22FROBNICATE now\\x22"),
    "garbage": ([("raw", "hello world\n\n")], r"not name=value"),
    "no_action": ([("raw", "other=1\n\n")], r"without action"),
    "too_long": ([("raw", "action=REJECT %s\n\n" % ("x" * 200))], r"over max_reply \(64\)"),
    "too_long_no_lf": ([("raw", "action=" + "y" * 500)], r"over max_reply \(64\)"),
    "closed": ([("close",)], r"closed the connection without a reply"),
    "closed_mid_reply": ([("raw", "action=DUN", "close")], r"in the middle of a reply"),
    "bad_prepend": (["PREPEND no header"], r"unknown action"),
    "bad_redirect": (["REDIRECT"], r"unknown action"),
    "bad_code": (["250 fine"], r"unknown action"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_server(make_pair, policy_server, case):
    """The server's first connection misbehaves: default_action (tempfail: 451 4.7.1) for that
    RCPT, a log line naming the policyd and why; the next client's mail flows (a new
    connection, a sane reply)."""
    steps, why = BAD[case]
    srv = policy_server(plan=[steps])
    p, s = start(make_pair, srv.socket, max_reply="64", default_action="tempfail")
    send(p, rcpt_expect="451 4.7.1")
    lines = log_lines(p, r"event=policyd name=p stage=rcpt action=failed")
    assert lines, p.log_text()
    if why:
        assert re.search(why, lines[0]), lines
    assert log_lines(p, r"event=filter_failed filter=policyd:p stage=rcpt .*action=tempfail")
    send(p)
    assert len(s.wait_messages(1)) == 1
    # A reply out of the protocol costs the connection; a complete one with a bad action not.
    assert srv.connections() == (1 if why and "unknown action" in why else 2)


def test_no_reply_times_out(make_pair, policy_server):
    """A server that never answers: the chain's timeout (1 s) applies default_action (reject:
    550 5.7.1), the request is logged cancelled, the connection closed; the next client's mail
    flows."""
    srv = policy_server(plan=[[("hang",)]])
    p, s = start(make_pair, srv.socket, timeout="1", default_action="reject")
    t0 = time.monotonic()
    send(p, rcpt_expect="550 5.7.1")
    assert time.monotonic() - t0 < 5
    assert log_lines(p, r"event=filter_timeout filter=policyd:p stage=rcpt")
    assert log_lines(p, r"event=policyd name=p stage=rcpt action=cancelled")
    assert peers.wait_until(lambda: srv.closed(0), 5), "portier kept the silent connection"
    send(p)
    assert len(s.wait_messages(1)) == 1


def test_not_listening(make_pair, policy_server):
    """Nothing listens on the port: default_action (accept here: the mail flows, logged);
    once a server listens there, it is asked."""
    port = peers.free_port()
    p, s = start(make_pair, "inet:127.0.0.1:%d" % port, default_action="accept")
    send(p)
    assert log_lines(p, r"event=policyd name=p stage=rcpt action=failed error=\".*"
                     r"127\.0\.0\.1:%d" % port), p.log_text()
    assert log_lines(p, r"event=filter_failed filter=policyd:p .*action=accept")
    assert len(s.wait_messages(1)) == 1
    srv = policy_server(port=port, default="REJECT now listening")
    send(p, rcpt_expect="554 5.7.1")
    assert len(srv.requests()) == 1


def test_unix_socket_missing(make_pair, tmpdir_0755):
    """unix:PATH that does not exist: default_action at once (tempfail)."""
    p, s = start(make_pair, "unix:%s/none.sock" % tmpdir_0755)
    send(p, rcpt_expect="451 4.7.1")
    assert log_lines(p, r"event=policyd name=p stage=rcpt action=failed error=\"cannot connect")


# ---------------------------------------------------------------------------------------------
# interruptions: every wait is owned
# ---------------------------------------------------------------------------------------------

def wait_request(srv, n=1, timeout=5):
    assert peers.wait_until(lambda: len(srv.requests()) >= n, timeout), srv.conns


def test_client_leaves_during_request(make_pair, policy_server):
    """The client goes away while its RCPT waits for the server: the request is cancelled, the
    connection closed; the next client is served on a new one."""
    srv = policy_server(plan=[[("hang",)]])
    p, s = start(make_pair, srv.socket, timeout="30")
    c = peers.SmtpClient(p.port)
    c.start()
    c.cmd("MAIL FROM:<a@origin.test>", expect="250")
    c.sendline("RCPT TO:<alice@example.test>")
    wait_request(srv)
    c.close()
    assert p.wait_log(r"event=policyd name=p stage=rcpt action=cancelled", timeout=5), \
        p.log_text()
    assert peers.wait_until(lambda: srv.closed(0), 5)
    send(p)
    assert len(s.wait_messages(1)) == 1


def test_sighup_during_request(make_pair, policy_server):
    """SIGHUP while a request waits (the answer comes 1.5 s later): the session finishes on its
    own configuration (the answer counts), the next session uses the new one."""
    srv = policy_server(plan=[[("delay", 1.5, "REJECT old config")]], default="REJECT new")
    p, s = start(make_pair, srv.socket)
    c = peers.SmtpClient(p.port)
    c.start()
    c.cmd("MAIL FROM:<a@origin.test>", expect="250")
    c.sendline("RCPT TO:<alice@example.test>")
    wait_request(srv)
    p.reload(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={"workers": "1"},
                                  listener={"filters": "policyd:p"},
                                  extra=section(srv.socket, stages="mail")))
    assert p.wait_log(r"event=reload", timeout=5)
    r = c.read_reply(timeout=10)
    peers.expect_reply(r, "554 5.7.1", "RCPT answered after the reload")
    c.quit()
    before = len(srv.requests())
    c = peers.SmtpClient(p.port)
    c.start()
    c.cmd("MAIL FROM:<a@origin.test>", expect="554 5.7.1")
    c.quit()
    assert srv.requests()[before]["protocol_state"] == "MAIL"


def test_sigterm_during_request(make_pair, policy_server):
    """SIGTERM while a request hangs: the drain ends the session (421) after drain_timeout,
    the request is cancelled, portier exits 0 (the fixture checks the sanitizers)."""
    srv = policy_server(plan=[[("hang",)]])
    p, s = start(make_pair, srv.socket, server={"drain_timeout": "1"}, timeout="30")
    c = peers.SmtpClient(p.port)
    c.start()
    c.cmd("MAIL FROM:<a@origin.test>", expect="250")
    c.sendline("RCPT TO:<alice@example.test>")
    wait_request(srv)
    p.signal(signal.SIGTERM)
    replies, closed = c.replies_until_closed(10)
    assert closed and replies and replies[-1].code == 421, replies
    assert p.wait(10) == 0, p.log_text()
    assert "action=cancelled" in p.log_text()


def test_pooled_connections_closed_at_exit(make_pair, policy_server):
    """An idle pooled connection is closed when portier stops (no leak report either)."""
    srv = policy_server()
    p, s = start(make_pair, srv.socket)
    send(p)
    assert not srv.closed(0)
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert peers.wait_until(lambda: srv.closed(0), 5)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keys,expect", [
    ({}, r"socket is required"),
    ({"socket": "tcp:127.0.0.1:1"}, r"write inet:HOST:PORT"),
    ({"socket": "inet:127.0.0.1:0"}, r"port a number from 1 to 65535"),
    ({"socket": "inet6:::1:10"}, r"inet6:\[ADDRESS\]:PORT"),
    ({"socket": "inet:127.0.0.1:10023", "stages": "rcpt quit"}, r"\\?\"quit\\?\" is no stage"),
    ({"socket": "inet:127.0.0.1:10023", "max_reply": "5"},
     r"max_reply \\?\"5\\?\" at line \d+: expected 16 to"),
    ({"socket": "inet:127.0.0.1:10023", "idle_timeout": "x"}, r"idle_timeout"),
    ({"socket": "inet:127.0.0.1:10023", "colour": "red"}, r"unknown key \\?\"colour"),
])
def test_config_errors(tmpdir_0755, keys, expect):
    """portier -t refuses a bad [policyd NAME] and says why."""
    rc, out = check_config(tmpdir_0755,
                           "[policyd p]\n%s\n" % "".join("%s = %s\n" % kv for kv in keys.items()))
    assert rc != 0 and re.search(expect, out), out


def test_config_ok(tmpdir_0755):
    """Every key, and a plain "policyd" without a section is refused (socket is required)."""
    rc, out = check_config(tmpdir_0755, section(
        "inet6:[::1]:10023", stages="connect, helo mail rcpt data", max_reply="100",
        idle_timeout="0", policy_context="x", default_action="accept"))
    assert rc == 0, out
    rc, out = check_config(tmpdir_0755, "", filters="policyd")
    assert rc != 0 and "socket is required" in out, out


def check_config(tmp, extra, filters="policyd:p"):
    """portier -t on a config whose listener runs filters: (status, output)."""
    conf = os.path.join(tmp, "p.conf")
    with open(conf, "w") as f:
        f.write(peers.portier_config(listener={"filters": filters},
                                     extra=extra).replace("{port}", "2525"))
    return peers.run_portier_check(conf)


# ---------------------------------------------------------------------------------------------
# real policy servers
# ---------------------------------------------------------------------------------------------

SPF_ZONES = [
    'local-zone: "pass.test." static',
    "local-data: 'pass.test. 300 IN TXT \"v=spf1 ip4:127.0.0.0/8 -all\"'",
    'local-zone: "fail.test." static',
    "local-data: 'fail.test. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"'",
    'local-zone: "client.test." static',
]


@pytest.fixture
def policyd_spf(unbound, tmpdir_0755, request):
    """policyd-spf (postfix-policyd-spf-python) on TCP through socat, one process per
    connection, resolving through a private unbound; returns the socket spec."""
    dns = unbound(zones=SPF_ZONES)
    t = tmpdir_0755
    with open(os.path.join(t, "policyd-spf.conf"), "w") as f:
        f.write("TempError_Defer = False\nskip_addresses = 192.0.2.255/32\nLookup_Time = 5\n")
    wrapper = os.path.join(t, "policyd-spf-dns")
    with open(wrapper, "w") as f:
        f.write("#!%s\nimport dns.resolver\n"
                "r = dns.resolver.Resolver(configure=False); r.nameservers = ['127.0.0.1']; "
                "r.port = %d\ndns.resolver.default_resolver = r\n"
                "from spf_engine.policyd_spf import main\nmain()\n" % (PYTHON, dns.port))
    os.chmod(wrapper, 0o755)
    port = peers.free_port()
    proc = peers.Process("socat", [SOCAT, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % port,
                                   "EXEC:%s %s/policyd-spf.conf" % (wrapper, t)],
                         os.path.join(t, "socat.log"))

    def fin():
        # socat forks a child (and a policyd-spf) per connection, all in its process group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.stop()
    request.addfinalizer(fin)
    if not peers.wait_until(lambda: not proc.alive() or peers.port_accepts(port),
                            peers.START_DEADLINE) or not proc.alive():
        proc.fail("did not listen on 127.0.0.1:%d" % port)
    return "inet:127.0.0.1:%d" % port


def test_policyd_spf(make_pair, policyd_spf):
    """policyd-spf: SPF pass for the MAIL FROM domain -> its PREPEND Received-SPF: Pass is in the
    delivered message; SPF fail -> 550 5.7.23 at RCPT (its own code and text)."""
    p, s = start(make_pair, policyd_spf, timeout="20")
    send(p, sender="a@pass.test")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    text = msgs[0].content.decode()
    assert text.startswith("Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.1;"), \
        text[:400]
    assert "envelope-from=a@pass.test" in text.split("\n", 1)[0]
    rr, _ = send(p, sender="b@fail.test", rcpt_expect="550 5.7.23")
    assert "SPF fail" in rr[0].text, rr[0].text
    assert log_lines(p, r"event=policyd name=p stage=rcpt action=\"prepend Received-SPF: Pass")
    assert log_lines(p, r"event=policyd name=p stage=rcpt action=\"550 5\.7\.23 .*verdict=reject")


@pytest.fixture
def postgrey(tmpdir_0755, request):
    """postgrey on a free TCP port, greylisting for 1 s, nothing whitelisted; returns the
    socket spec."""
    t = tmpdir_0755
    db = os.path.join(t, "db")
    os.mkdir(db)
    shutil.chown(db, "postgrey", "postgrey")
    empty = os.path.join(t, "empty")
    open(empty, "w").close()
    port = peers.free_port()
    proc = peers.Process("postgrey", [POSTGREY, "--inet=127.0.0.1:%d" % port, "--dbdir=%s" % db,
                                      "--delay=1", "--hostname=pg-test",
                                      "--whitelist-clients=%s" % empty,
                                      "--whitelist-recipients=%s" % empty,
                                      "--auto-whitelist-clients=0"],
                         os.path.join(t, "postgrey.log"))
    request.addfinalizer(proc.stop)
    if not peers.wait_until(lambda: not proc.alive() or peers.port_accepts(port),
                            peers.START_DEADLINE) or not proc.alive():
        proc.fail("did not listen on 127.0.0.1:%d" % port)
    return "inet:127.0.0.1:%d" % port


def test_postgrey(make_pair, postgrey):
    """postgrey: the first attempt is greylisted (DEFER_IF_PERMIT -> 450 4.2.0 Greylisted), a
    retry after the delay passes with its X-Greylist header in the delivered message."""
    p, s = start(make_pair, postgrey)
    # etrn_domain is sent (empty), as by Postfix >= 2.3: postgrey answers with 4.2.0.
    rr, _ = send(p, rcpt_expect="450 4.2.0")
    assert "Greylisted" in rr[0].text, rr[0].text
    time.sleep(2.2)
    send(p)
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    text = msgs[0].content.decode()
    assert text.startswith("X-Greylist: delayed "), text[:300]
    assert "by postgrey" in text.split("\n", 1)[0]

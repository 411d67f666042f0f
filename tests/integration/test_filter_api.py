"""The filter API v2 through whole SMTP sessions, with the test filters of tests/filters
(portier-test): a filter waiting on the loop for a real socket (test-async, asking a test server
run here), a blocking filter on the filter pool (test-block), a final-stage signer (test-sign);
per-filter timeout and default_action; cancellation when the client leaves or the daemon stops;
the filter pool apart from Maildir delivery and AUTH.  Backends: smtp-sink, Dovecot LMTP, the
embedded Maildir."""
import os
import re
import signal
import socket
import threading
import time

import pytest

import peers
from peers import make_message
from tlsauth import (certs, users_file, tls_context, starttls, auth_plain,  # noqa: F401
                     portier_tls_config, ALICE, ALICE_PW, BOB, BOB_PW)


class AnswerServer:
    """The test server test-async asks: reads "STAGE ARG", answers from `answers`
    (a function (stage, arg) -> line, None to hang up without answering, "hang" to stay silent).
    Records every question and whether portier hung up on a silent connection."""

    def __init__(self, answers):
        self.answers = answers
        self.questions = []
        self.hung_up = 0            # silent connections portier closed
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            f = conn.makefile("rb")
            line = f.readline().decode().rstrip("\n")
            stage, _, arg = line.partition(" ")
            with self.lock:
                self.questions.append((stage, arg))
            ans = self.answers(stage, arg)
            if ans == "hang":
                conn.settimeout(30)
                try:
                    if conn.recv(1) == b"":
                        with self.lock:
                            self.hung_up += 1
                except OSError:
                    pass
                return
            if ans is None:
                return
            conn.sendall(ans.encode() + b"\n")

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def answer_server(request):
    servers = []

    def start(answers):
        s = AnswerServer(answers)
        servers.append(s)
        return s

    request.addfinalizer(lambda: [s.stop() for s in servers])
    return start


def filter_config(relay, filters, sections, server=None, backend=None, listener=None):
    lst = {"filters": filters}
    lst.update(listener or {})
    extra = "".join("[filter %s]\n%s\n" % (name, "".join("%s = %s\n" % kv for kv in kv_list))
                    for name, kv_list in sections.items())
    return peers.portier_config(relay, server=server, listener=lst, backend=backend, extra=extra)


def start_async(portier, relay, srv, *kv, filters="test-async"):
    """portier-test with test-async asking srv (more keys of its section in kv)."""
    return portier(filter_config(relay, filters, {"test-async": [
        ("server", "127.0.0.1:%d" % srv.port)] + list(kv)}), test_filters=True)


def hold_at_rcpt(client, port):
    """A session whose RCPT a blocking filter holds: the reply is read later."""
    held = client(port)
    held.start()
    held.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    held.sendline("RCPT TO:<held@example.test>")
    time.sleep(0.3)                     # the filter's call now sleeps on its thread
    return held


def stages(answer_by_stage, default="continue"):
    return lambda stage, arg: answer_by_stage.get(stage, default)


# ---------------------------------------------------------------------------------------------
# asynchronous on the loop
# ---------------------------------------------------------------------------------------------

def test_async_verdicts_per_stage_smtp_backend(portier, sink, client, answer_server):
    """test-async asks its server at connect, helo, mail, rcpt and data over real sockets: the
    server's reject of one recipient reaches the client word for word, the other recipient's
    message reaches smtp-sink with the header the data stage's answer added."""
    def answers(stage, arg):
        if stage == "rcpt" and arg == "bad@example.test":
            return "reject 550 5.7.9 async says no to " + arg
        if stage == "data":
            return "header X-Async-Checked yes"
        return "continue"
    srv = answer_server(answers)
    s = sink()
    p = start_async(portier, "smtp:127.0.0.1:%d" % s.port, srv)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    r = c.cmd("RCPT TO:<bad@example.test>", expect="550 5.7.9")
    assert "async says no to bad@example.test" in r.text, r
    c.cmd("RCPT TO:<good@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="250")
    c.quit()
    m = s.wait_messages(1)[0]
    assert m.rcpts == ["good@example.test"], m
    assert b"\nX-Async-Checked: yes\r\n" in m.raw or b"\nX-Async-Checked: yes\n" in m.raw, m.raw
    asked = [q[0] for q in srv.questions]
    # portier's start-up probe is a session too: count from the last connect
    last = len(asked) - 1 - asked[::-1].index("connect")
    assert asked[last:] == ["connect", "helo", "mail", "rcpt", "rcpt", "data"], asked


def test_async_lmtp_backend(portier, dovecot, client, answer_server):
    """The same through Dovecot LMTP: a recipient refused by the filter, one delivered, and a
    quarantine verdict at end of data marks the delivered copy."""
    def answers(stage, arg):
        if stage == "rcpt" and arg.startswith("bob@"):
            return "tempfail 450 4.7.8 bob later"
        if stage == "data":
            return "quarantine looks odd"
        return "continue"
    srv = answer_server(answers)
    d = dovecot()
    p = start_async(portier, "lmtp:127.0.0.1:%d" % d.port, srv, ("stages", "rcpt data"))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<bob@example.test>", expect="450 4.7.8")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="250")
    c.quit()
    msgs = d.wait_messages("alice", 1)
    assert b"X-Portier-Quarantine: looks odd" in msgs[0].content, msgs[0].content
    assert d.messages("bob") == []
    assert [q[0] for q in srv.questions] == ["rcpt", "rcpt", "data"], srv.questions


@pytest.mark.parametrize("action,expect", [("tempfail", "451 4.7.1"), ("reject", "550 5.7.1"),
                                           ("accept", "250 2.1.5")])
def test_async_timeout_default_action(portier, sink, client, answer_server, action, expect):
    """A server that never answers: after the filter's timeout the chain applies its
    default_action, logs event=filter_timeout naming the filter, hangs up on the server
    (cancel), and the filter sits out the rest of the session (the next RCPT is not asked)."""
    srv = answer_server(stages({"rcpt": "hang"}))
    s = sink()
    p = start_async(portier, "smtp:127.0.0.1:%d" % s.port, srv, ("stages", "rcpt"),
                    ("timeout", "1"), ("default_action", action))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    t0 = time.monotonic()
    c.cmd("RCPT TO:<a@example.test>", expect=expect)
    assert time.monotonic() - t0 >= 0.9
    assert p.wait_log(r"event=filter_timeout filter=test-async stage=rcpt "
                      r"error=\"no answer in 1s\" action=%s" % action)
    assert peers.wait_until(lambda: srv.hung_up == 1, 5), "the silent connection stayed open"
    c.cmd("RCPT TO:<b@example.test>", expect=expect)     # default_action again, not asked
    assert len(srv.questions) == 1, srv.questions
    if action == "accept":
        c.send_message(make_message(), expect="250")
        assert s.wait_messages(1)[0].rcpts == ["a@example.test", "b@example.test"]
    c.quit()


def test_async_server_closes_is_a_failure(portier, sink, client, answer_server):
    """The server hangs up without an answer: event=filter_failed, default_action (reject)."""
    srv = answer_server(stages({"mail": None}))
    s = sink()
    p = start_async(portier, "smtp:127.0.0.1:%d" % s.port, srv, ("stages", "mail"),
                    ("default_action", "reject"))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="550 5.7.1")
    assert p.wait_log(r"event=filter_failed filter=test-async stage=mail "
               r"error=\"test server closed the connection\" action=reject")
    c.quit()


@pytest.mark.parametrize("how", ["eof", "sigterm", "sighup"])
def test_async_wait_interrupted(portier, sink, client, answer_server, how):
    """While the data stage waits on the server: the client's EOF ends the session at once and
    hangs up on the server; SIGTERM lets the transaction finish until drain_timeout (5 s here),
    then cancels the wait, answers 421 and exits cleanly; SIGHUP changes nothing for the
    session, which gets its verdict.  No reply after a 421, nothing delivered unless the
    verdict came."""
    release = threading.Event()

    def answers(stage, arg):
        if stage == "data":
            if how == "sighup":
                release.wait(10)
                return "continue"
            return "hang"
        return "continue"
    srv = answer_server(answers)
    s = sink()
    cfg = filter_config("smtp:127.0.0.1:%d" % s.port, "test-async",
                        {"test-async": [("server", "127.0.0.1:%d" % srv.port),
                                        ("stages", "data")]})
    p = portier(cfg, test_filters=True)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<a@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    c.send(make_message() + b".\r\n")
    assert peers.wait_until(lambda: len(srv.questions) == 1, 5)
    if how == "eof":
        c.close()
        assert p.wait_log(r"event=disconnect")
        assert peers.wait_until(lambda: srv.hung_up == 1, 5), "portier kept the server waiting"
        s.assert_nothing(portier=p, txns=1)
    elif how == "sigterm":
        p.signal(signal.SIGTERM)
        replies, closed = c.replies_until_closed(20)
        assert closed and [r.code for r in replies] == [421], replies
        assert peers.wait_until(lambda: srv.hung_up == 1, 5), "portier kept the server waiting"
        assert p.wait(10) == 0
        s.assert_nothing(portier=p, txns=1)
    else:
        p.reload(cfg)
        assert p.wait_log(r"event=reload result=ok")
        release.set()
        assert c.read_reply().code == 250
        c.quit()
        assert len(s.wait_messages(1)) == 1


# ---------------------------------------------------------------------------------------------
# blocking, on the filter pool
# ---------------------------------------------------------------------------------------------

def test_block_timeout_reject_then_late_call_dropped(portier, sink, client):
    """A blocking call that outlives its 1 s timeout: default_action reject answers at once; the
    call ends later on its own copies (event=filter_late) and nothing reaches the client then."""
    s = sink()
    p = portier(filter_config("smtp:127.0.0.1:%d" % s.port, "test-block",
                              {"test-block": [("sleep", "2500"), ("stages", "rcpt"),
                                              ("timeout", "1"), ("default_action", "reject")]}),
                test_filters=True)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    t0 = time.monotonic()
    c.cmd("RCPT TO:<a@example.test>", expect="550 5.7.1")
    assert time.monotonic() - t0 < 2.0
    c.cmd("RSET", expect="250")
    # the failed filter's default action holds for the rest of the session (Postfix's rule)
    c.cmd("MAIL FROM:<sender@origin.test>", expect="550 5.7.1")
    assert p.wait_log(r"event=filter_late filter=test-block stage=rcpt", timeout=5)
    c.cmd("NOOP", expect="250")
    c.quit()
    c2 = client(p.port)                 # a new session asks the filter again
    c2.start()
    c2.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c2.quit()


def test_block_client_gone_during_call(portier, sink, client):
    """The client leaves while a blocking call runs: the session ends at once (it does not wait
    for the pool), the late call is dropped, the daemon stays clean under ASan."""
    s = sink()
    p = portier(filter_config("smtp:127.0.0.1:%d" % s.port, "test-block",
                              {"test-block": [("sleep", "1500"), ("stages", "data")]}),
                test_filters=True)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<a@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    c.send(make_message() + b".\r\n")
    time.sleep(0.3)
    c.close()
    t0 = time.monotonic()
    assert p.wait_log(r"event=disconnect", timeout=5)
    assert time.monotonic() - t0 < 1.0, "the session waited for the blocked call"
    assert p.wait_log(r"event=filter_late filter=test-block stage=data", timeout=5)
    s.assert_nothing(portier=p, txns=1)


def test_blocked_filter_pool_delays_neither_maildir_nor_auth(portier, client, certs, users_file,
                                                              tmpdir_0755):
    """filter_threads = 1, and that thread is held 6 s by test-block on the mx listener: a
    message through a listener without filters is still delivered to Maildir, and AUTH on the
    submission listener still succeeds, while the blocking call holds (the delivery and AUTH
    pools are apart).  With one shared pool both would queue behind it."""
    maildir = os.path.join(tmpdir_0755, "mail")
    lst = {"filters": "test-block"}
    listeners = {"plain": {"role": "mx", "tls": "none", "listen": "127.0.0.1:{plain}"},
                 "sub": {"role": "submission", "tls": "starttls", "listen": "127.0.0.1:{sub}"}}
    cfg = portier_tls_config("maildir:" + maildir, certs=certs, listener=lst,
                             listeners=listeners,
                             auth={"passwd_file": users_file(), "max_failures": 100},
                             server={"filter_threads": "1"})
    cfg += "[filter test-block]\nsleep = 6000\nstages = rcpt\ntimeout = 30\n"
    ports = {"plain": peers.free_port(), "sub": peers.free_port()}
    p = portier(cfg, ports=ports, test_filters=True)
    assert peers.wait_until(lambda: all(peers.port_accepts(x) for x in ports.values()), 5)
    held = hold_at_rcpt(client, p.port)     # the pool's only thread now sleeps
    t0 = time.monotonic()
    c = client(ports["plain"])
    c.start()
    c.transaction("sender@origin.test", ["carol@example.test"], make_message())
    c.quit()
    delivered = time.monotonic() - t0
    a = client(ports["sub"])
    a.start()
    starttls(a, tls_context(certs))
    a.ehlo()
    auth_plain(a, ALICE, ALICE_PW)
    a.quit()
    authed = time.monotonic() - t0
    # Ordering, not speed: both were done while the filter call still held its thread.
    r = held.read_reply()
    held_for = time.monotonic() - t0
    assert r.code == 250, r
    assert delivered < held_for and authed < held_for, (delivered, authed, held_for)
    assert held_for > 4.0, held_for
    files = os.listdir(os.path.join(maildir, "example.test", "carol", "new"))
    assert len(files) == 1, files
    held.quit()


# ---------------------------------------------------------------------------------------------
# the final stage
# ---------------------------------------------------------------------------------------------

def signature_matches(raw, nl):
    """X-Test-Signature: head=N body=M is the first field, and N and M are exactly the octets of
    the rest of the header block (its empty line included) and of the body the backend got."""
    lines = raw.split(nl)
    first = lines[0].decode()
    m = re.match(r"X-Test-Signature: head=(\d+) body=(\d+)$", first)
    assert m, raw[:300]
    rest = nl.join(lines[1:])
    head_end = rest.index(nl + nl) + 2 * len(nl)
    head, body = rest[:head_end], rest[head_end:]
    # the backend's line ends may differ from the wire's CRLF: count in CRLF
    crlf = lambda b: len(b.replace(nl, b"\r\n")) if nl != b"\r\n" else len(b)
    return int(m.group(1)) == crlf(head) and int(m.group(2)) == crlf(body), (m.groups(),
                                                                            crlf(head), crlf(body))


def test_final_stage_signs_what_the_backend_gets(portier, sink, client, answer_server):
    """test-sign runs after the data stage's edits (a header test-async adds) and after
    Authentication-Results is composed: its field is on top, and its counts are those of the
    header block and body smtp-sink received."""
    srv = answer_server(stages({"data": "header X-Edited-Before-Signing yes"}))
    s = sink()
    p = start_async(portier, "smtp:127.0.0.1:%d" % s.port, srv, ("stages", "data"),
                    filters="test-sign test-async")
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["a@example.test"], make_message())
    c.quit()
    m = s.wait_messages(1)[0]
    # smtp-sink's dump: its X- lines and Received, then what portier sent, LF line ends, and
    # one LF more at the end
    sent = m.raw[m.raw.index(b"X-Test-Signature:"):-1]
    ok, why = signature_matches(sent, b"\n")
    assert ok, why
    assert b"X-Edited-Before-Signing: yes" in m.raw


def test_final_stage_maildir_return_path_first(portier, client, tmpdir_0755):
    """With the Maildir backend the delivery's Return-Path stays the first line, above the
    signature, and the signature covers the rest exactly."""
    maildir = os.path.join(tmpdir_0755, "mail")
    p = portier(filter_config("maildir:" + maildir, "test-sign", {}), test_filters=True)
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["dave@example.test"], make_message())
    c.quit()
    d = os.path.join(maildir, "example.test", "dave", "new")
    assert peers.wait_until(lambda: len(os.listdir(d)) == 1, 5)
    raw = open(os.path.join(d, os.listdir(d)[0]), "rb").read()
    nl = b"\r\n" if b"\r\n" in raw.split(b"\n", 1)[0] + b"\n" else b"\n"
    first, rest = raw.split(nl, 1)
    assert first == b"Return-Path: <sender@origin.test>", first
    ok, why = signature_matches(rest, nl)
    assert ok, why


def test_chain_keys_checked(tmpdir_0755):
    """-t refuses a bad timeout and a bad default_action, naming the filter."""
    for kv, words in ((("timeout", "soon"), "timeout \"soon\": expected seconds"),
                      (("default_action", "discard"), "default_action \"discard\": expected")):
        cfg = filter_config("smtp:127.0.0.1:9", "test-sign", {"test-sign": [kv]})
        cfg = cfg.replace("{port}", str(peers.free_port()))
        path = os.path.join(tmpdir_0755, "p.conf")
        with open(path, "w") as f:
            f.write(cfg)
        import subprocess
        r = subprocess.run([peers.portier_binary(True), "-t", "-c", path],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert 'filter "test-sign": ' + words in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: configure() runs as root at start")
def test_reload_keeps_filter_whose_key_the_user_cannot_read(portier, sink, client, tmpdir_0755):
    """filter.h's privilege contract: configure() reads a key file as root at start, but as the
    unprivileged user (nobody) on SIGHUP.  A key only root can read: the start works, the reload
    fails with event=reload result=failed naming the filter and the file, and the old
    configuration (the old filter instance) keeps serving.  Made readable, the next reload
    applies."""
    keydir = os.path.join(tmpdir_0755, "keys")
    os.mkdir(keydir, 0o700)
    key = os.path.join(keydir, "sign.key")
    with open(key, "w") as f:
        f.write("secret\n")
    os.chmod(key, 0o600)
    s = sink()
    cfg = filter_config("smtp:127.0.0.1:%d" % s.port, "test-sign",
                        {"test-sign": [("keyfile", key)]})
    p = portier(cfg, test_filters=True)
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["a@example.test"], make_message())
    c.quit()
    mark = len(p.log_text())
    p.reload(cfg)
    m = p.wait_log(r"event=reload result=failed .*$", after=mark)
    assert m, p.log_text()[mark:]
    line = m.group(0)
    assert "test-sign" in line and "cannot read " + key in line and "Permission denied" in line
    assert "action=kept_previous" in line, line
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["b@example.test"], make_message())
    c.quit()
    msgs = s.wait_messages(2)
    assert all(b"X-Test-Signature:" in m.raw for m in msgs)
    os.chmod(keydir, 0o755)
    os.chmod(key, 0o644)
    mark = len(p.log_text())
    p.reload(cfg)
    assert p.wait_log(r"event=reload result=ok", after=mark)


def test_session_wide_discard_and_quarantine(portier, sink, client, answer_server):
    """Verdicts hold at every stage: a quarantine at connect marks every transaction of that
    session; a discard at HELO accepts every later transaction toward the client and delivers
    none (result=discarded), and the filter is asked nothing more in that session."""
    def answers(stage, arg):
        if stage == "connect":
            return "quarantine connect-time mark"
        if stage == "helo" and arg == "discard.test":
            return "discard"
        return "continue"
    srv = answer_server(answers)
    s = sink()
    p = start_async(portier, "smtp:127.0.0.1:%d" % s.port, srv)
    c = client(p.port)
    c.start("mark.test")
    c.transaction("sender@origin.test", ["a@example.test"], make_message())
    c.transaction("sender@origin.test", ["b@example.test"], make_message())
    c.quit()
    msgs = s.wait_messages(2)
    assert all(b"X-Portier-Quarantine: connect-time mark" in m.raw for m in msgs), msgs
    asked = len(srv.questions)
    d = client(p.port)
    d.start("discard.test")
    d.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    d.cmd("RCPT TO:<c@example.test>", expect="250 2.1.5")
    d.send_message(make_message(), expect="250")
    d.transaction("sender@origin.test", ["d@example.test"], make_message())
    d.quit()
    results = [t["result"] for t in p.wait_txns(4)]
    assert results == ["delivered", "delivered", "discarded", "discarded"], results
    assert [q[0] for q in srv.questions[asked:]] == ["connect", "helo"], srv.questions[asked:]
    assert len(s.messages()) == 2


def test_filter_with_own_pool_leaves_the_shared_one_free(portier, sink, client):
    """filter_threads = 1; test-block has threads = 1 (a pool of its own) and holds it 5 s at
    RCPT on the mx listener, while test-block2 on the other listener uses the shared pool: its
    session is through long before.  Without the own pool both would share the one thread."""
    s = sink()
    cfg = peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={"filter_threads": "1"},
                               listener={"filters": "test-block"},
                               extra="[listener other]\nlisten = 127.0.0.1:{other}\nrole = mx\n"
                                     "tls = none\nfilters = test-block2\n\n"
                                     "[filter test-block]\nsleep = 5000\nstages = rcpt\n"
                                     "threads = 1\n\n"
                                     "[filter test-block2]\nsleep = 0\nstages = rcpt\n")
    ports = {"other": peers.free_port()}
    p = portier(cfg, ports=ports, test_filters=True)
    assert peers.wait_until(lambda: peers.port_accepts(ports["other"]), 5)
    held = hold_at_rcpt(client, p.port)
    t0 = time.monotonic()
    c = client(ports["other"])
    c.start()
    c.transaction("sender@origin.test", ["free@example.test"], make_message())
    c.quit()
    through = time.monotonic() - t0
    r = held.read_reply()
    held_for = time.monotonic() - t0
    assert r.code == 250, r
    assert through < held_for and held_for > 3.0, (through, held_for)
    assert p.wait_log(r"event=filter_pool filter=test-block threads=1")
    held.quit()


def test_auth_stage_filter_can_take_the_login_back(portier, sink, client, certs, users_file,
                                                    answer_server):
    """The AUTH stage runs once the credentials are good: a filter's reject there is the
    client's reply (535 in its words) and the login is taken back (MAIL then wants one, 530);
    a filter that passes lets the 235 stand and mail flows."""
    srv = answer_server(lambda stage, arg: "reject 535 5.7.8 not from here"
                        if stage == "auth" and arg == BOB else "continue")
    s = sink()
    cfg = portier_tls_config("smtp:127.0.0.1:%d" % s.port, certs=certs,
                             listener={"role": "submission", "tls": "starttls",
                                       "filters": "test-async"},
                             auth={"passwd_file": users_file(), "max_failures": 100})
    cfg += "[filter test-async]\nserver = 127.0.0.1:%d\nstages = auth\n" % srv.port
    p = portier(cfg, test_filters=True)
    for user, pw, ok in ((BOB, BOB_PW, False), (ALICE, ALICE_PW, True)):
        c = client(p.port)
        c.start()
        starttls(c, tls_context(certs))
        c.ehlo()
        if ok:
            auth_plain(c, user, pw)
            c.transaction(user, ["x@example.test"], make_message(frm=user))
        else:
            r = auth_plain(c, user, pw, expect="535 5.7.8")
            assert "not from here" in r.text, r
            c.cmd("MAIL FROM:<%s>" % user, expect="530 5.7.0")
        c.quit()
    assert p.wait_log(r"event=auth result=refused client=127\.0\.0\.1 user=bob@example\.test "
                      r"filter=test-async")
    assert p.wait_log(r"event=auth result=ok client=127\.0\.0\.1 user=alice@example\.test")
    assert [q for q in srv.questions if q[0] == "auth"] == [("auth", BOB), ("auth", ALICE)]
    assert len(s.wait_messages(1)) == 1

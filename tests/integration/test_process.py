"""The process: SIGTERM (idle, draining, drain timeout), SIGHUP reload, logging."""
import signal
import time

import peers
from peers import ConnectionClosed, make_message


def test_sigterm_idle_exits_0_quickly(relay_pair):
    """SIGTERM with no session open: exit status 0 within 3 s, and the port is closed."""
    p, s = relay_pair
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(10)
    assert rc == 0, "exit status %r\n%s" % (rc, p.log_text())
    assert time.monotonic() - t0 < 3.0
    assert not peers.port_accepts(p.port)


def new_connection_refused(port):
    """True if a new client is refused: connection refused, or a 421 greeting and close."""
    try:
        c = peers.SmtpClient(port, timeout=3)
    except OSError:
        return True
    try:
        r = c.read_reply()
    except (ConnectionClosed, OSError):
        return True
    finally:
        c.close()
    return r.code == 421


def test_sigterm_drains_open_session(make_pair, client):
    """SIGTERM during an open session: new connections are refused, the open session still
    finishes its message (delivered, 250) and QUIT, then portier exits 0."""
    p, s = make_pair(server={"drain_timeout": 10})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    p.signal(signal.SIGTERM)
    assert peers.wait_until(lambda: new_connection_refused(p.port), 5, interval=0.2), \
        "new connections still served after SIGTERM"
    msg = make_message()
    c.send_message(msg, expect="250")
    c.cmd("QUIT", expect="221 2.0.0")
    rc = p.wait(8)
    assert rc == 0, "exit status %r after the drained session ended\n%s" % (rc, p.log_text())
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    peers.assert_same_message(msg, msgs[0].content)


def test_sigterm_drain_timeout(make_pair, client):
    """A session still open when drain_timeout runs out is ended (421 4.3.2 or a close) and
    portier exits 0 soon after the timeout."""
    p, s = make_pair(server={"drain_timeout": 2})
    c = client(p.port)
    c.start()
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(12)
    elapsed = time.monotonic() - t0
    assert rc == 0, "exit status %r\n%s" % (rc, p.log_text())
    assert elapsed < 8, "took %.1fs with drain_timeout = 2" % elapsed
    try:
        r = c.read_reply(timeout=2)
        peers.expect_reply(r, "421 4.3.2", "reply when the drain timeout ends the session")
    except ConnectionClosed:
        pass


def test_sighup_reload_applies_to_new_sessions_only(make_pair, client):
    """SIGHUP re-reads the config: new sessions get the new max_recipients, a session opened
    before keeps the old one, and nothing is dropped."""
    p, s = make_pair(server={"max_recipients": 2})
    old = client(p.port)
    old.start()
    old.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    old.cmd("RCPT TO:<r1@example.test>", expect="250 2.1.5")
    log_mark = len(p.log_text())
    p.reload(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={"max_recipients": 4}))

    def new_limit_seen():
        c = client(p.port)
        c.start()
        c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
        n = 0
        for i in range(5):
            r = c.cmd("RCPT TO:<n%d@example.test>" % i)
            if r.code != 250:
                peers.expect_reply(r, "452 4.5.3")
                break
            n += 1
        c.quit()
        return n == 4
    assert peers.wait_until(new_limit_seen, 8, interval=0.3), \
        "new sessions do not see max_recipients = 4 after SIGHUP\n" + p.log_text()[log_mark:]
    old.cmd("RCPT TO:<r2@example.test>", expect="250 2.1.5")
    old.cmd("RCPT TO:<r3@example.test>", expect="452 4.5.3")
    old.send_message(make_message(), expect="250")
    old.quit()
    assert p.alive()



def test_debug_flag_logs_debug_lines(portier, sink, client):
    """-d turns on debug lines (level 'debug' in the log); the server works as usual."""
    s = sink()
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port), args=["-d"])
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c.quit()
    assert p.wait_log(r": debug: ", timeout=3), p.log_text()

"""Limits and misbehaving clients: line lengths, bare CR/LF and NUL in commands, message size,
error count, pipelining flood, timeouts, session count, listener-level overrides, running out
of file descriptors."""
import os
import pwd
import resource
import subprocess
import time

import pytest

import peers
from peers import ConnectionClosed, make_message


def test_command_line_length_limit(make_pair, client):
    """A command line of exactly max_command_line octets (CRLF included) is accepted; one octet
    more gets 500 5.5.2, the rest of that line is discarded, and the session goes on."""
    p, s = make_pair(server={"max_command_line": 512})
    c = client(p.port)
    c.start()
    line = "NOOP " + "x" * (512 - 2 - 5)
    assert len(line) + 2 == 512
    c.cmd(line, expect="250 2.0.0")
    c.cmd(line + "x", expect="500 5.5.2")
    c.cmd("NOOP", expect="250 2.0.0")
    # A much longer line, arriving in several reads, is still one error.
    c.cmd("NOOP " + "y" * 20000 + " QUIT", expect="500 5.5.2")
    c.cmd("NOOP", expect="250 2.0.0")
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")


@pytest.mark.parametrize("bad", [b"NOOP\n", b"NO\rOP\r\n", b"NO\x00OP\r\n", b"NOOP\x00\r\n",
                                 b"MAIL FROM:<a@origin.test>\n"],
                         ids=["bare-lf", "bare-cr", "nul", "nul-at-end", "mail-bare-lf"])
def test_bad_bytes_in_command(relay_pair, client, bad):
    """A bare CR or LF or a NUL in a command gets 500 5.5.2 and nothing else happens: the next
    proper command gets its own reply.  A bare LF ends the (refused) line, so what follows it
    is a line of its own: here an unknown command, with its own 500 5.5.2."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    bare_lf = not bad.endswith(b"\r\n")
    c.send(bad + (b"XYZZY\r\n" if bare_lf else b"") + b"NOOP\r\n")
    r = c.read_reply()
    peers.expect_reply(r, "500 5.5.2", "reply to %r" % bad)
    assert "not recognized" not in r.text, r      # the bad line's own error
    if bare_lf:
        r = c.read_reply()
        peers.expect_reply(r, "500 5.5.2", "reply to XYZZY after the bare LF")
        assert "not recognized" in r.text, r
    peers.expect_reply(c.read_reply(), "250 2.0.0", "reply to NOOP")
    # The bad MAIL must not have opened a transaction.
    c.cmd("RCPT TO:<alice@example.test>", expect="503 5.5.1")


def data_and_stall(c, payload):
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    c.send(payload)


def test_text_line_length_limit(make_pair, client):
    """A message line of exactly max_text_line octets (CRLF included) is delivered intact;
    one octet more gets 554 5.6.0 after the final dot, nothing is delivered, the session goes on."""
    p, s = make_pair(server={"max_text_line": 1000})
    c = client(p.port)
    c.start()
    ok = make_message(body_lines=["a" * 998, "end"])
    c.transaction("sender@origin.test", ["alice@example.test"], ok)
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    peers.assert_same_message(ok, msgs[0].content)
    marker = peers.unique_id("toolong")
    bad = make_message(subject=marker, body_lines=["b" * 999, "end"])
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(bad, expect="554 5.6.0")
    c.cmd("NOOP", expect="250 2.0.0")
    s.assert_nothing(marker=marker, portier=p, txns=2)     # delivered, rejected
    assert len(s.messages()) == 1


def test_long_header_line_rejected(make_pair, client):
    """The text line limit applies to header lines too: 554 5.6.0, nothing delivered."""
    p, s = make_pair(server={"max_text_line": 1000})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("longhdr")
    bad = make_message(subject=marker, headers=[("X-Long", "h" * 2000)])
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(bad, expect="554 5.6.0")
    c.cmd("NOOP", expect="250 2.0.0")
    s.assert_nothing(marker=marker, portier=p, txns=1)     # rejected


def test_message_size_limit(make_pair, client):
    """A message over max_message_size gets 552 5.3.4 after the final dot and is not delivered;
    the next (small) message in the same session is."""
    p, s = make_pair(server={"max_message_size": 20000})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("big")
    big = make_message(subject=marker, body_lines=["z" * 70] * 500)    # ~36 KB
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(big, expect="552 5.3.4")
    small = make_message(body_lines=["z" * 70] * 100)                  # ~7.5 KB
    c.transaction("sender@origin.test", ["alice@example.test"], small)
    msgs = s.wait_messages(1)
    s.assert_nothing(marker=marker, portier=p, txns=2)     # rejected, delivered
    assert len(msgs) == 1
    peers.assert_same_message(small, msgs[0].content)


def test_too_many_errors(make_pair, client):
    """After max_errors client errors the session ends with 421 4.7.0 and a close: the
    max_errors-th error gets its own 5xx reply, then the 421 follows."""
    n = 3
    p, s = make_pair(server={"max_errors": n})
    c = client(p.port)
    c.start()
    errors = 0
    final = None
    bad_cmds = ["XYZZY", "RCPT TO:<alice@example.test>", "MAIL FROM:<bad@@origin.test>"]
    for i in range(n + 2):
        try:
            c.sendline(bad_cmds[i % len(bad_cmds)])
        except OSError:
            pass
        try:
            r = c.read_reply()
        except ConnectionClosed:
            pytest.fail("connection closed without a 421 after %d errors" % errors)
        if r.code == 421:
            final = r
            break
        assert 500 <= r.code < 600, r
        errors += 1
    assert final is not None, "no 421 after %d errors" % errors
    peers.expect_reply(final, "421 4.7.0")
    assert errors == n, "421 came after %d errors, max_errors = %d" % (errors, n)
    c.expect_closed()


def test_pipelining_flood(make_pair, client):
    """More than max_pipelined complete commands buffered at once -> 421 4.7.0 and close."""
    p, s = make_pair(server={"max_pipelined": 5})
    c = client(p.port)
    c.start()
    c.send(b"NOOP\r\n" * 60)
    replies = []
    while True:
        try:
            r = c.read_reply()
        except ConnectionClosed:
            break
        replies.append(r)
        if r.code == 421:
            break
    assert replies and replies[-1].is_(421, "4.7.0"), replies
    assert all(r.is_(250, "2.0.0") for r in replies[:-1]), replies
    assert len(replies) - 1 < 60
    c.expect_closed()


def test_pipelining_at_the_limit_is_fine(make_pair, client):
    """Exactly max_pipelined commands in one write are all answered, in order."""
    p, s = make_pair(server={"max_pipelined": 5})
    c = client(p.port)
    c.start()
    c.send(b"NOOP\r\nRSET\r\nNOOP\r\nVRFY alice\r\nNOOP\r\n")
    rs = c.read_replies(5)
    assert [(r.code, r.enhanced) for r in rs] == [
        (250, "2.0.0"), (250, "2.0.0"), (250, "2.0.0"), (252, "2.5.0"), (250, "2.0.0")]
    c.cmd("NOOP", expect="250 2.0.0")


def expect_timeout_421(c, limit):
    t0 = time.monotonic()
    r = c.read_reply(timeout=limit + 8)
    elapsed = time.monotonic() - t0
    peers.expect_reply(r, "421 4.4.2", "timeout reply")
    assert elapsed >= limit - 0.6, "421 after %.1fs, limit %ds" % (elapsed, limit)
    c.expect_closed()
    return elapsed


def test_command_timeout_idle_after_greeting(make_pair, client):
    """A client silent for command_timeout seconds gets 421 4.4.2 and is disconnected."""
    p, s = make_pair(server={"command_timeout": 2})
    c = client(p.port)
    c.greeting()
    expect_timeout_421(c, 2)


def test_command_timeout_mid_transaction(make_pair, client):
    """A client silent after RCPT gets 421 4.4.2; the backend receives no message."""
    p, s = make_pair(server={"command_timeout": 2})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    expect_timeout_421(c, 2)
    s.assert_nothing(portier=p, txns=1)        # aborted by the timeout


def test_command_timeout_restarts_with_each_command(make_pair, client):
    """The command timeout is per command: commands every second keep a 2 s session alive."""
    p, s = make_pair(server={"command_timeout": 2})
    c = client(p.port)
    c.start()
    for _ in range(4):
        time.sleep(1)
        c.cmd("NOOP", expect="250 2.0.0")


def test_data_timeout(make_pair, client):
    """A client that stops sending mid-DATA gets 421 4.4.2 after data_timeout and is
    disconnected; the backend receives nothing."""
    p, s = make_pair(server={"data_timeout": 2, "command_timeout": 30})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("stall")
    data_and_stall(c, ("Subject: %s\r\n\r\nhalf a mess" % marker).encode())
    expect_timeout_421(c, 2)
    s.assert_nothing(marker=marker, portier=p, txns=1)     # aborted by the timeout
    s.assert_nothing(portier=p, txns=1)


def served(port):
    """A new client gets the 220 greeting."""
    try:
        c = peers.SmtpClient(port, timeout=5)
    except OSError:
        return False
    try:
        return c.read_reply().code == 220
    except (ConnectionClosed, OSError):
        return False
    finally:
        c.close()


def test_max_sessions(make_pair, client):
    """With max_sessions = 2, a third simultaneous client gets 421 4.7.0 and a close; once a
    session ends a new client is served again."""
    p, s = make_pair(server={"max_sessions": 2, "workers": 1})
    time.sleep(0.3)                 # let the start-up probe session finish on the server side
    c1 = client(p.port)
    c1.greeting()
    c2 = client(p.port)
    c2.greeting()
    c3 = client(p.port)
    r = c3.read_reply()
    peers.expect_reply(r, "421 4.7.0", "greeting of the session over the limit")
    c3.expect_closed()
    c1.quit()
    assert peers.wait_until(lambda: served(p.port), 5, interval=0.2), \
        "no session admitted after one ended"
    c2.cmd("NOOP", expect="250 2.0.0")


def test_listener_overrides_server_limits(portier, sink, client):
    """A limit set in [listener NAME] overrides [server] for that listener only."""
    s = sink()
    port2 = peers.free_port()
    extra = "[listener other]\nlisten = 127.0.0.1:{port2}\nrole = mx\ntls = none\n"
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port,
                                     server={"max_recipients": 4},
                                     listener={"max_recipients": 2}, extra=extra),
                ports={"port2": port2})
    assert peers.wait_until(lambda: peers.port_accepts(port2), 5), "second listener not up"
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<r1@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<r2@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<r3@example.test>", expect="452 4.5.3")
    c2 = client(port2)
    c2.start()
    c2.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    for i in range(4):
        c2.cmd("RCPT TO:<r%d@example.test>" % i, expect="250 2.1.5")
    c2.cmd("RCPT TO:<r9@example.test>", expect="452 4.5.3")


NOFILE_WRAPPER = ("import os, resource, sys; "
                  "resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
                  "os.execv(sys.argv[1], sys.argv[1:])")


def start_with_nofile(portier, config_text, nofile):
    """portier started with RLIMIT_NOFILE = nofile (soft and hard), set in a Python wrapper
    that then execs it (the same PID)."""
    p = portier(config_text, start=False)
    real = p.binary
    p.binary = peers.PYTHON
    p.extra_args = ["-c", NOFILE_WRAPPER % (nofile, nofile), real]
    p._start_with_retries()
    return p


def set_nofile(pid, soft):
    """Set the soft RLIMIT_NOFILE of a running process (hard unchanged); returns the old
    (soft, hard).  prlimit(2) on another user's process needs CAP_SYS_RESOURCE, which a
    container's root may lack: it is done from a child running as the target's user."""
    with open("/proc/%d/status" % pid) as f:
        uid = int(next(l for l in f if l.startswith("Uid:")).split()[1])
    with open("/proc/%d/limits" % pid) as f:
        hard = next(l for l in f if l.startswith("Max open files")).split()[4]
    hard = str(resource.RLIM_INFINITY) if hard == "unlimited" else hard
    code = ("import resource, sys; print(*resource.prlimit(int(sys.argv[1]), "
            "resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[3]))))")

    def become_target():
        if os.geteuid() != uid:
            pw = pwd.getpwuid(uid)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(uid)
    out = subprocess.run([peers.PYTHON, "-c", code, str(pid), str(soft), hard],
                         preexec_fn=become_target, stdout=subprocess.PIPE, check=True,
                         timeout=20).stdout.split()
    return int(out[0]), int(out[1])


def open_clients(port, n):
    out = []
    for _ in range(n):
        out.append(peers.SmtpClient(port, timeout=5))
    return out


@pytest.mark.timeout(90)
def test_max_sessions_derived_from_rlimit_nofile(portier, sink):
    """Started with RLIMIT_NOFILE = 64, portier lowers max_sessions to what the descriptors
    allow (logged once at startup); clients beyond it get 421 4.7.0, accept(2) never fails
    (no accept_paused line), the log stays small, and once they leave a new client is
    served."""
    s = sink()
    text = peers.portier_config("smtp:127.0.0.1:%d" % s.port,
                                server={"workers": 1, "filter_threads": 1,
                                        "auth_threads": 1, "delivery_threads": 1},
                                backend={"relay_pool": 0})
    p = start_with_nofile(portier, text, 64)
    m = p.wait_log(r"event=max_sessions_lowered configured=5000 max_sessions=(\d+) nofile=64 ")
    assert m, "no max_sessions_lowered line at startup:\n" + p.log_text()
    limit = int(m.group(1))
    assert 1 <= limit < 20, m.group(0)
    time.sleep(0.3)                 # let the start-up probe session end
    mark = len(p.log_text().splitlines())
    clients = open_clients(p.port, limit + 10)
    try:
        codes = []
        for c in clients:
            try:
                codes.append(c.read_reply().code)
            except (ConnectionClosed, OSError):
                codes.append(None)
        assert codes[:limit] == [220] * limit, codes
        assert all(code == 421 for code in codes[limit:]), codes
    finally:
        for c in clients:
            c.close()
    assert peers.wait_until(lambda: served(p.port), 5, interval=0.2), p.log_text()[-3000:]
    lines = p.log_text().splitlines()[mark:]
    assert not [l for l in lines if "accept_paused" in l], "\n".join(lines)
    assert len(lines) < 10 * (limit + 12), "%d log lines for %d clients" % (len(lines), limit + 11)


@pytest.mark.timeout(90)
def test_descriptor_exhaustion_pauses_accepting(make_pair):
    """When accept(2) fails with EMFILE (RLIMIT_NOFILE lowered under a running portier), the
    loop stops accepting for a while and says so once, instead of retrying in a loop (which
    wrote hundreds of thousands of lines); once the clients leave, new ones are served."""
    p, s = make_pair(server={"workers": 1})
    time.sleep(0.3)                 # let the start-up probe session end
    fds = [int(n) for n in os.listdir("/proc/%d/fd" % p.pid)]
    old = set_nofile(p.pid, max(fds) + 1 + 3)
    mark = len(p.log_text().splitlines())
    clients = []
    try:
        clients = open_clients(p.port, 12)
        time.sleep(2.5)             # more than two pauses
        lines = p.log_text().splitlines()[mark:]
        assert len(lines) < 100, "%d log lines in 2.5 s:\n%s" % (len(lines), "\n".join(lines[:50]))
        paused = [l for l in lines if "accept_paused" in l]
        assert len(paused) == 1, "%d accept_paused lines:\n%s" % (len(paused), "\n".join(lines))
        assert 'error="Too many open files"' in paused[0], paused[0]
    finally:
        for c in clients:
            c.close()
    assert peers.wait_until(lambda: served(p.port), 8, interval=0.2), \
        "no client served after the others left:\n" + p.log_text()[-3000:]
    lines = p.log_text().splitlines()[mark:]
    assert len([l for l in lines if "accept_paused" in l]) == 1, "\n".join(lines)
    set_nofile(p.pid, old[0])

"""Every asynchronous wait of a session against every interruption, with real peers, under the
sanitizer build (the portier fixture fails a test on any sanitizer report or crash):

  wait points: the backend's reply to RCPT and to the end of data (smtp-sink -W delays them)
  interruptions: client EOF, the command timeout, a pipelining flood, SIGTERM drain, SIGHUP

and the client's deadlines: per command line (a client dribbling one octet at a time is ended
at command_timeout however often it sends), per block of content, and the bound on replies
queued for a client that does not read them (max_output).  The filter wait points are driven
the same way in tests/unit/check_session.c (no blocking filter is built into the daemon yet).
"""
import signal
import socket
import time

import pytest

import peers
from peers import ConnectionClosed, make_message

DELAY = 2           # seconds smtp-sink holds its reply at the wait point

WAIT_POINTS = {
    # name: (smtp-sink option, what the client sends to reach the wait)
    "rcpt": ("rcpt:%d" % DELAY, ["RCPT TO:<alice@example.test>"]),
    "dot": (".:%d" % DELAY, ["RCPT TO:<alice@example.test>", "DATA"]),
}


def waiting_pair(make_pair, point, **server):
    """portier in front of an smtp-sink that delays its reply at point."""
    opt, _ = WAIT_POINTS[point]
    srv = {"command_timeout": "1", "max_pipelined": "5", "drain_timeout": "1"}
    srv.update(server)
    return make_pair(server=srv, backend={"relay_timeout": "10"}, sink_args=("-W", opt))


def reach(c, point, msg):
    """Drive a session up to the wait point; the backend is now holding its reply."""
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    lines = WAIT_POINTS[point][1]
    for line in lines[:-1]:
        c.cmd(line, expect="250")
    if lines[-1] == "DATA":
        c.cmd("DATA", expect="354")
        c.send(peers.dot_stuff(msg) + b".\r\n")
    else:
        c.sendline(lines[-1])
    time.sleep(0.3)             # portier is waiting for the backend now


def still_serves(p):
    c = peers.SmtpClient(p.port)
    try:
        c.start()
        c.quit()
    finally:
        c.close()


@pytest.mark.parametrize("point", sorted(WAIT_POINTS))
def test_wait_client_eof(make_pair, point):
    """The client leaves while portier waits for the backend: the wait is cancelled with the
    transaction, nothing it reads is freed under it, and portier goes on serving."""
    p, s = waiting_pair(make_pair, point)
    c = peers.SmtpClient(p.port)
    reach(c, point, make_message())
    c.close()
    p.wait_log(r"event=txn .*result=aborted", timeout=DELAY + 3)
    time.sleep(DELAY)           # the backend's late reply finds no transaction
    still_serves(p)


@pytest.mark.parametrize("point", sorted(WAIT_POINTS))
def test_wait_command_timeout(make_pair, client, point):
    """command_timeout = 1 while the backend takes 2 s: the client's clock does not run while
    portier waits for the backend, so the wait ends with the backend's answer, not a 421; the
    silence after it is what times out."""
    p, s = waiting_pair(make_pair, point)
    c = client(p.port)
    msg = make_message()
    reach(c, point, msg)
    replies, closed = c.replies_until_closed(DELAY + 4)
    assert [r.code for r in replies] == [250, 421], replies
    assert replies[1].enhanced == "4.4.2", replies
    assert closed
    if point == "dot":
        assert len(s.wait_messages(1)) == 1


@pytest.mark.parametrize("point", sorted(WAIT_POINTS))
def test_wait_pipelining_flood(make_pair, client, point):
    """More pipelined commands than max_pipelined arrive during the wait: 421 4.7.0 and the
    connection closes; no reply of the transaction follows the 421."""
    p, s = waiting_pair(make_pair, point)
    c = client(p.port)
    reach(c, point, make_message())
    c.send(b"NOOP\r\n" * 20)
    replies, closed = c.replies_until_closed(DELAY + 4)
    codes = [r.code for r in replies]
    assert codes and codes[-1] == 421 and replies[-1].enhanced == "4.7.0", replies
    assert 421 not in codes[:-1] and closed, replies
    p.wait_log(r"event=pipeline_flood")


@pytest.mark.parametrize("point", sorted(WAIT_POINTS))
def test_wait_sigterm_drain(make_pair, client, point):
    """SIGTERM during the wait: the session waiting on the backend is spared until it answers
    (drain_timeout = 1 < the backend's 2 s, the first drain pass spares it), the client gets the
    backend's verdict, then 421 4.3.2 at the next pass; portier exits 0."""
    p, s = waiting_pair(make_pair, point)
    c = client(p.port)
    reach(c, point, make_message())
    p.signal(signal.SIGTERM)
    replies, closed = c.replies_until_closed(12)
    codes = [(r.code, r.enhanced) for r in replies]
    assert codes == [(250, replies[0].enhanced), (421, "4.3.2")], replies
    assert closed
    assert p.wait(10) == 0, p.log_text()


@pytest.mark.parametrize("point", sorted(WAIT_POINTS))
def test_wait_sighup(make_pair, client, point):
    """SIGHUP with a changed configuration during the wait: the session keeps its own snapshot
    and finishes normally (250), the next session gets the new one."""
    p, s = waiting_pair(make_pair, point)
    c = client(p.port)
    msg = make_message()
    reach(c, point, msg)
    p.reload(peers.portier_config("smtp:127.0.0.1:%d" % s.port,
                                  server={"max_recipients": 7}))
    r = c.read_reply(timeout=DELAY + 3)
    assert r.code == 250, r
    if point == "dot":
        assert len(s.wait_messages(1)) == 1
    else:
        c.send_message(msg, expect="250")
    c.quit()
    still_serves(p)


def test_command_line_deadline_not_reset_by_dribble(make_pair, client):
    """A client sending one octet of a command every 0.4 s never completes a line in
    command_timeout = 2: it is ended at about 2 s (before, every octet restarted the clock)."""
    p, s = make_pair(server={"command_timeout": "2"})
    c = client(p.port)
    c.start()
    t0 = time.monotonic()
    ended = None
    for ch in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP":
        try:
            c.send(bytes([ch]))
        except OSError:
            ended = time.monotonic() - t0
            break
        if c.is_closed(timeout=0.4):
            ended = time.monotonic() - t0
            break
    assert ended is not None and ended < 3.5, "still open after %.1f s" % (time.monotonic() - t0)
    p.wait_log(r"event=timeout .*state=command")


def test_data_block_deadline(make_pair, client):
    """data_timeout bounds each 64 KiB of content, not each read: a client dribbling its
    message one short line every 0.5 s with data_timeout = 2 is ended (421 4.4.2) once 2 s pass
    without a whole block; a fast message of 300 KiB in the same setting goes through."""
    p, s = make_pair(server={"data_timeout": "2"})
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"],
                  make_message(body_lines=["x" * 70] * 4300))
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
    c.cmd("RCPT TO:<bob@example.test>", expect="250")
    c.cmd("DATA", expect="354")
    t0 = time.monotonic()
    r = None
    while time.monotonic() - t0 < 8:
        try:
            c.send(b"slow line\r\n")
        except OSError:
            break
        try:
            r = c.read_reply(timeout=0.5)
            break
        except socket.timeout:
            pass
        except ConnectionClosed:
            break
    assert r is not None and r.code == 421 and r.enhanced == "4.4.2", r
    assert time.monotonic() - t0 < 4
    assert len(s.wait_messages(1)) == 1


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_output_bounded_for_client_that_does_not_read(make_pair):
    """Clients that keep sending commands (in bursts below max_pipelined) and never read the
    replies: past max_output queued octets portier stops reading them (event=output_full) and
    ends them at command_timeout; its memory stays bounded (before, 10 such clients took it from
    5 to 139 MB in 20 s)."""
    p, s = make_pair(server={"command_timeout": "3", "max_output": "65536",
                             "max_pipelined": "200"})
    socks = []
    for _ in range(6):
        so = socket.create_connection(("127.0.0.1", p.port))
        so.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        so.setblocking(False)
        socks.append(so)
    before = rss_kib(p.pid)
    burst = b"EHLO client.test\r\n" * 100
    sent = [0] * len(socks)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        for i, so in enumerate(socks):
            try:
                sent[i] += so.send(burst)
            except (BlockingIOError, OSError):
                pass
        time.sleep(0.01)
    grown = rss_kib(p.pid) - before
    p.wait_log(r"event=output_full")
    p.wait_log(r"event=timeout .*state=output", timeout=8)
    for so in socks:
        so.close()
    # 6 clients x (max_output + a turn's replies): a few MB at most, ASan included.
    assert grown < 40 * 1024, "portier grew by %d KiB (sent %r)" % (grown, sent)

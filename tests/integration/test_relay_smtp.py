"""Relaying to an SMTP backend (smtp-sink): byte-exact delivery, the backend's verdicts reach
the client at the right time, and a backend that is down, dies or is slow never yields a 250
for mail the backend does not have."""
import random
import re
import signal
import socket
import threading
import time

import pytest

import peers
from peers import ConnectionClosed, make_message


@pytest.mark.parametrize("greet,proto", [("EHLO", "ESMTP"), ("HELO", "SMTP")])
def test_message_arrives_byte_identical(relay_pair, client, greet, proto):
    """What the client sent arrives unchanged (header-block and body digests) apart from exactly
    one Received header prepended by portier, in the documented form; the envelope (sender,
    recipients in order) is passed on; dot-stuffed lines arrive unstuffed."""
    p, s = relay_pair
    c = client(p.port)
    c.greeting()
    c.cmd("%s client.test" % greet, expect="250")
    msg = make_message(body_lines=peers.tricky_body(),
                       headers=[("X-Folded", "first part\r\n\tsecond part"),
                                ("MIME-Version", "1.0"),
                                ("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Transfer-Encoding", "8bit")])
    params = " BODY=8BITMIME" if greet == "EHLO" else ""
    c.cmd("MAIL FROM:<sender@origin.test>%s" % params, expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="250 2.1.5")
    c.send_message(msg, expect="250")
    c.quit()
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    m = msgs[0]
    assert m.mail_from == "sender@origin.test"
    assert m.rcpts == ["alice@example.test", "bob@example.test"]
    assert len(m.headers) == 2, m.headers          # smtp-sink's own, then portier's
    assert "smtp-sink" in m.headers[0]
    peers.check_portier_received(m.headers[1], helo="client.test", proto=proto)
    peers.assert_same_message(msg, m.content)


def test_large_message_arrives_intact(relay_pair, client):
    """A 3 MB message (bigger than any in-memory bound) arrives byte-identical."""
    p, s = relay_pair
    c = client(p.port, timeout=30)
    c.start()
    lines = ["%06d %s" % (i, "abcdefghij" * 7) for i in range(40000)]
    msg = make_message(body_lines=lines)
    c.transaction("sender@origin.test", ["alice@example.test"], msg)
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    peers.assert_same_message(msg, msgs[0].content)


@pytest.mark.parametrize("sink_args,expect", [
    (["-r", "RCPT", "-b", "451 4.7.1 greylisted"], "451 4.7.1"),
    (["-f", "RCPT", "-B", "550 5.1.1 no such user"], "550 5.1.1"),
], ids=["4xx", "5xx"])
def test_backend_rcpt_refusal_reaches_client_at_rcpt(make_pair, client, sink_args, expect):
    """RCPT is forwarded as it arrives: the backend's refusal reaches the client as the RCPT
    reply with the backend's code and enhanced code; with no recipient accepted DATA is 503 5.5.1
    and nothing is delivered."""
    p, s = make_pair(sink_args=sink_args)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect=expect)
    c.cmd("DATA", expect="503 5.5.1")
    c.quit()
    s.assert_nothing(portier=p)


def test_backend_mail_refusal_reaches_client(make_pair, client):
    """A backend refusing MAIL: MAIL goes to the backend with the first RCPT, so the client
    gets 250 for MAIL and the backend's 451 4.3.5 for that RCPT (and each later one); DATA is
    then 503 5.5.1."""
    p, s = make_pair(sink_args=["-r", "MAIL", "-b", "451 4.3.5 try later"])
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="451 4.3.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="451 4.3.5")
    c.cmd("DATA", expect="503 5.5.1")


@pytest.mark.parametrize("sink_args,expect", [
    (["-f", ".", "-B", "554 5.7.1 content rejected"], "554 5.7.1"),
    (["-r", ".", "-b", "452 4.3.1 insufficient storage"], "452 4.3.1"),
], ids=["5xx", "4xx"])
def test_backend_data_verdict_reaches_client(make_pair, client, sink_args, expect):
    """After the final dot the client's reply is the backend's (code and enhanced code)."""
    p, s = make_pair(sink_args=sink_args)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect=expect)
    c.cmd("NOOP", expect="250 2.0.0")


def test_backend_down(portier, client):
    """No backend listening: MAIL gets 250 (it goes with the first RCPT), the RCPT 451 4.4.1,
    DATA 503 5.5.1."""
    dead = peers.free_port()
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % dead))
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="451 4.4.1")
    c.cmd("DATA", expect="503 5.5.1")


def test_backend_accepts_but_never_speaks(portier, client):
    """A backend whose TCP port accepts but which never sends a greeting: MAIL gets 250 (it
    goes with the first RCPT), the RCPT 451 4.4.2 after relay_connect_timeout (2 s; the
    greeting is part of connecting)."""
    mute = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)                     # the kernel completes handshakes; nobody answers
        p = portier(peers.portier_config("smtp:127.0.0.1:%d" % mute.getsockname()[1],
                                         backend={"relay_timeout": 2, "relay_connect_timeout": 2}))
        c = client(p.port)
        c.start()
        c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
        t0 = time.monotonic()
        c.cmd("RCPT TO:<alice@example.test>", expect="451 4.4.2", timeout=12)
        elapsed = time.monotonic() - t0
        assert 1.5 < elapsed < 5, "took %.1fs" % elapsed
        c.cmd("DATA", expect="503 5.5.1")
    finally:
        mute.close()


def test_backend_killed_after_rcpt(relay_pair, client):
    """The backend dies after RCPT was accepted: DATA still gets 354 (portier answers it
    itself), the final dot 451 4.4.1, never 250."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    s.stop(signal.SIGKILL)
    c.send_message(make_message(), expect="451 4.4.1", timeout=20)
    c.cmd("NOOP", expect="250 2.0.0")


def test_backend_killed_during_data(relay_pair, client):
    """The backend dies while the client is sending the message: the envelope cannot go again
    (nothing listens any more), so the final reply is 451 4.4.1, never 250."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    msg = peers.dot_stuff(make_message(body_lines=["line %d" % i for i in range(2000)]))
    c.send(msg[:len(msg) // 2])
    time.sleep(0.3)
    s.stop(signal.SIGKILL)
    c.send(msg[len(msg) // 2:] + b".\r\n")
    peers.expect_reply(c.read_reply(timeout=20), "451 4.4.1")


@pytest.mark.parametrize("sink_args,expect", [(["-q", "."], "451 4.4.1"),
                                              (["-Q", "."], "451 4.0.0")], ids=["eof", "421-close"])
def test_backend_disconnects_instead_of_final_reply(make_pair, client, sink_args, expect):
    """The backend takes the whole message and then drops the connection without a verdict
    (smtp-sink -q .: EOF, portier's 451 4.4.1; -Q .: '421 Server closing connection' and close,
    passed on as 451 4.0.0: the backend's 421 is not portier closing the session), never 250;
    the session goes on."""
    p, s = make_pair(sink_args=sink_args)
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect=expect, timeout=20)
    c.cmd("NOOP", expect="250 2.0.0")


def test_backend_slow_data_reply(make_pair, client):
    """A backend slower than relay_timeout (smtp-sink -w 6 delays its DATA reply, relay_timeout
    is 2 s) gives the client 451 4.4.2, within a few seconds, never 250."""
    p, s = make_pair(sink_args=["-w", "6"], backend={"relay_timeout": 2})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")             # portier's own; its DATA went to the backend
    t0 = time.monotonic()
    c.send(peers.dot_stuff(make_message()) + b".\r\n")
    r = c.read_reply(timeout=20)
    peers.expect_reply(r, "451 4.4.2", "reply with a backend slower than relay_timeout")
    assert time.monotonic() - t0 < 5.5, "the 451 should come after relay_timeout, not the backend"
    s.assert_nothing(portier=p)


def test_slow_upload_longer_than_relay_timeout(make_pair, client):
    """A client that takes about 5 s to upload its message (a write every 0.5 s) while
    relay_timeout is 2 s: DATA went to the backend early and its 354 came back at once, but
    portier expects nothing of the backend while the client uploads, so the client gets 250
    and the backend has the message as sent."""
    p, s = make_pair(backend={"relay_timeout": 2})
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=["slow line %d" % i for i in range(20)])
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    t0 = time.monotonic()
    r = c.send_message_paced(msg, 5.0)
    assert time.monotonic() - t0 > 4.5
    assert r.is_(250, "2.0.0"), r
    [m] = s.wait_messages(1)
    peers.assert_same_message(msg, m.content)
    c.quit()


@pytest.mark.parametrize("backend", ["eof", "eof-no-pipelining", "421"])
def test_backend_idles_out_during_slow_upload(portier, sink, minismtpd, client, backend):
    """The backend itself gives up on the early DATA while the client is still uploading (its
    own 2 s timeout; the upload takes 5 s): smtp-sink -t 2 closes (with and without
    PIPELINING), minismtpd --data-idle 2 says 421 4.4.2 and closes.  portier sends the envelope
    again on a new connection once the message is complete (MAIL with its parameters, both
    RCPTs, DATA: one write with PIPELINING, one command at a time without) and the client gets
    250: the backend has one complete message, for both recipients."""
    if backend == "421":
        b = minismtpd(data_idle=2)
    else:
        b = sink(args=["-t", "2"] + (["-p"] if backend == "eof-no-pipelining" else []))
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % b.port))
    c = client(p.port)
    c.start()
    msg = make_message(body_lines=["slow line %d" % i for i in range(20)])
    c.cmd("MAIL FROM:<sender@origin.test> BODY=8BITMIME", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<bob@example.test>", expect="250 2.1.5")
    r = c.send_message_paced(msg, 5.0)
    assert r.is_(250, "2.0.0"), r
    assert p.wait_log(r"event=relay_closed_during_upload relay=\S+ action=replay_envelope")
    if backend == "421":
        [t] = b.wait_transactions(1)
        assert (t["mail_from"], t["mail_params"]) == ("sender@origin.test", "BODY=8BITMIME"), t
        assert t["rcpts"] == ["alice@example.test", "bob@example.test"], t
        hdrs, rest = peers.strip_trace(t["data"], b"\r\n", ("received",))
        peers.assert_same_message(msg, rest, nl=b"\r\n")
    else:
        [m] = b.wait_messages(1)
        assert m.mail_from == "sender@origin.test" and "BODY=8BITMIME" in m.mail_args, m
        assert m.rcpts == ["alice@example.test", "bob@example.test"]
        peers.assert_same_message(msg, m.content)
    c.quit()


def test_client_disconnect_mid_data(relay_pair, client):
    """A client that disconnects mid-DATA: the backend receives no message, and portier keeps
    serving (the next client's message is delivered)."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    marker = peers.unique_id("dropped")
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    c.send(("Subject: %s\r\n\r\nsome of the body\r\n" % marker).encode())
    c.close()
    s.assert_nothing(marker=marker, portier=p)     # the cut transaction's line: aborted
    c2 = client(p.port)
    c2.start()
    c2.transaction("sender@origin.test", ["alice@example.test"], make_message())
    assert len(s.wait_messages(1)) == 1
    s.assert_nothing(marker=marker, portier=p, txns=2)
    assert [t["result"] for t in p.txns()] == ["aborted", "delivered"], p.txns()


def test_client_gone_before_final_reply(relay_pair, client):
    """A client that sends the final dot and closes without reading: whatever portier does, it
    keeps serving and logs the transaction (no crash, no hang)."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.cmd("DATA", expect="354")
    c.send(peers.dot_stuff(make_message()) + b".\r\nQUIT\r\n")
    c.close()
    c2 = client(p.port)
    c2.start()
    c2.transaction("sender@origin.test", ["bob@example.test"], make_message())
    c2.quit()


@pytest.mark.timeout(150)
def test_integrity_while_backend_restarts(relay_pair, client):
    """Messages sent in a loop while the backend is killed and restarted on the same port:
    every message the client got 250 for is in the backend's store (complete), none is lost."""
    p, s = relay_pair
    stop = threading.Event()
    kills = [0]
    errors = []

    def killer():
        rnd = random.Random(12345)
        try:
            while not stop.is_set():
                time.sleep(rnd.uniform(0.2, 0.6))
                if stop.is_set():
                    break
                s.stop(signal.SIGKILL)
                kills[0] += 1
                time.sleep(rnd.uniform(0.05, 0.3))
                s.restart()
        except Exception as e:          # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=killer, daemon=True)
    accepted, refused = [], []
    t.start()
    try:
        deadline = time.monotonic() + 40
        i = 0
        while time.monotonic() < deadline and (kills[0] < 8 or i < 100):
            i += 1
            mid = peers.unique_id("integrity%03d" % i)
            msg = make_message(msgid=mid, body_lines=["line %d of %s" % (j, mid) for j in range(50)]
                               + ["END-OF-%s" % mid])
            try:
                c = client(p.port, timeout=15)
                c.start()
                r = c.cmd("MAIL FROM:<sender@origin.test>")
                if r.code == 250:
                    r = c.cmd("RCPT TO:<alice@example.test>")
                if r.code == 250:
                    r = c.cmd("DATA")
                if r.code == 354:
                    c.send(peers.dot_stuff(msg) + b".\r\n")
                    r = c.read_reply(timeout=15)
                (accepted if r.code == 250 else refused).append((mid, r))
                c.close()
            except (ConnectionClosed, OSError) as e:
                refused.append((mid, e))
    finally:
        stop.set()
        t.join(20)
    print("integrity: %d accepted, %d refused, %d backend kills"
          % (len(accepted), len(refused), kills[0]))
    assert not errors, errors
    if not s.alive():
        s.restart()
    assert kills[0] >= 8, "the backend was killed only %d times" % kills[0]
    assert len(accepted) >= 10, "too few messages accepted (%d) to prove anything; refused: %r" % (
        len(accepted), refused[:5])

    def stored_ids():
        out = set()
        for m in s.messages(complete=False):
            mm = re.search(rb"END-OF-(integrity\d+-[0-9a-f]+)", m.raw)
            if mm:
                out.add(mm.group(1).decode())
        return out
    want = {mid for mid, _ in accepted}
    peers.wait_until(lambda: want <= stored_ids(), 10)
    missing = want - stored_ids()
    assert not missing, "%d of %d accepted messages are not at the backend (%d kills): %r" % (
        len(missing), len(want), kills[0], sorted(missing)[:10])


def test_txn_log_line(relay_pair, client):
    """After a delivered transaction the log has an event=txn line with id=, from=<...>, to=,
    size=, result=, relay= and reply=."""
    p, s = relay_pair
    c = client(p.port)
    c.start()
    sender = "logcheck-%s@origin.test" % peers.unique_id("s")
    msg = make_message()
    c.transaction(sender, ["alice@example.test"], msg)
    c.quit()
    m = p.wait_log(r"^.*event=txn\b.*from=<%s>.*$" % re.escape(sender), timeout=5)
    assert m, "no event=txn line for from=<%s> in the log:\n%s" % (sender, p.log_text())
    line = m.group(0)
    for key in ("id", "from", "to", "size", "result", "relay", "reply"):
        assert re.search(r"(^|\s)%s=\S" % key, line), "no %s= in %r" % (key, line)
    assert "alice@example.test" in line, line
    size = re.search(r"(?:^|\s)size=(\d+)", line)
    assert size and int(size.group(1)) >= len(msg) - 10, line


@pytest.mark.parametrize("io_uring", ["yes", "no"])
def test_turn_writes_batched_or_not(make_pair, client, io_uring):
    """A loop turn's writes go out in one io_uring call, or with writev(2) per socket (io_uring =
    no, or a kernel that refuses io_uring: then a warning says why); the startup line says
    which.  Either way, 12 clients at once, each pipelining its whole transaction, get every
    reply and every message arrives byte-identical."""
    p, s = make_pair(server={"io_uring": io_uring})
    m = p.wait_log(r"event=startup loops=.* writes=(\S+)")
    assert m, p.log_text()
    line, writes = m.group(0), m.group(1)
    if io_uring == "no":
        assert writes == "writev", line
        assert "io_uring=unavailable" not in p.log_text()
    elif writes != "io_uring":
        assert writes == "writev", line
        assert re.search(r'io_uring=unavailable reason="[^"]+" writes=writev', p.log_text())
    n = 12
    msgs = {i: make_message(body_lines=["client %d line %d" % (i, k) for k in range(200)])
            for i in range(n)}
    errors = []

    def one(i):
        try:
            c = client(p.port)
            c.start()
            c.send(b"MAIL FROM:<sender%d@origin.test>\r\nRCPT TO:<rcpt%d@example.test>\r\n"
                   b"DATA\r\n" % (i, i))
            codes = [r.code for r in c.read_replies(3)]
            assert codes == [250, 250, 354], codes
            c.send(peers.dot_stuff(msgs[i]) + b".\r\nQUIT\r\n")
            codes = [r.code for r in c.read_replies(2)]
            assert codes == [250, 221], codes
        except Exception as e:          # reported below, with the client's number
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    got = s.wait_messages(n)
    assert len(got) == n
    for m in got:
        i = int(re.match(r"rcpt(\d+)@", m.rcpts[0]).group(1))
        assert m.mail_from == "sender%d@origin.test" % i
        peers.assert_same_message(msgs[i], m.content)

"""Session rules at the edges of the envelope: RCPT after BDAT content began, and recipients
refused by the backend counting toward max_errors (no unlimited address harvesting)."""
import peers
from peers import make_message


def test_rcpt_after_bdat_refused(relay_pair, client):
    """RFC 3030: once BDAT content began the envelope is closed: RCPT gets 503 5.5.1 at once
    (before, portier waited for the backend that was already in DATA until the timeout), and
    the message still completes with BDAT LAST."""
    p, s = relay_pair
    c = client(p.port, timeout=5)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
    c.cmd("RCPT TO:<alice@example.test>", expect="250")
    msg = make_message()
    half = len(msg) // 2
    c.send(b"BDAT %d\r\n" % half + msg[:half])
    peers.expect_reply(c.read_reply(), "250", "first chunk")
    c.cmd("RCPT TO:<bob@example.test>", expect="503 5.5.1")
    c.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
    peers.expect_reply(c.read_reply(), "250", "last chunk")
    msgs = s.wait_messages(1)
    assert msgs[0].rcpts == ["alice@example.test"], msgs[0].rcpts
    c.quit()


def test_backend_rcpt_refusals_count_toward_max_errors(make_pair, client):
    """Each recipient the backend refuses with 5xx is a client error: with max_errors = 3 the
    third refusal is followed by 421 4.7.0 and the connection closes."""
    p, s = make_pair(server={"max_errors": "3"}, sink_args=("-f", "rcpt"))
    c = client(p.port, timeout=5)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
    for i in range(3):
        r = c.cmd("RCPT TO:<user%d@example.test>" % i)
        assert r.code // 100 == 5, r
    peers.expect_reply(c.read_reply(), "421 4.7.0", "after max_errors")
    assert c.is_closed(timeout=2)
    p.wait_log(r"event=too_many_errors")

"""The fleet, end to end: a real HAProxy (send-proxy-v2, balance roundrobin) in front of TWO
portier nodes sharing one redis-server, relaying to smtp-sink.  Each node has a PROXY listener
lb (proxy_protocol = yes, proxy_trusted = 127.0.0.1: haproxy connects from there) next to the
plain mx listener the portier fixture probes.  Clients connect to haproxy from distinct
loopback addresses (127.0.0.2, 127.0.0.3), so each node sees the real client in the PROXY
header; which node took a session is read from the nodes' logs (event=connect client=ADDR
listener=lb proxy=127.0.0.1), and consecutive sessions must alternate between the nodes.
  - greylist (delay 2): deferred as a new triplet on one node, the early retry deferred on the
    other (it knows the triplet from Redis), after the delay the retry passes on the node that
    never saw the triplet as new; the message is in the sink;
  - AUTH failures (submission, STARTTLS, max_failures = 2): one failure on each node trips the
    limit; then that client is refused (421 4.7.0) on both nodes, another address is not;
  - ratelimit client_messages = 2/60: the 3rd message of a client is refused on both nodes,
    another client is served."""
import re
import time

import pytest

import peers
from peers import make_message
from test_proxy import config as proxy_config, haproxy  # noqa: F401  (fixture)
from test_ratelimit import ratelimit_section, redis_section, refused, send, mail, sender
from test_greylist import greylisted
from tlsauth import (certs, users_file, tls_server, tls_context, starttls,  # noqa: F401
                     plain_b64, ALICE, ALICE_PW)

A, B = "127.0.0.2", "127.0.0.3"
RCPT = "bob@" + peers.LOCAL_DOMAIN
LB = {"proxy_trusted": "127.0.0.1"}


class Fleet:
    """nodes (peers.Portier) behind a haproxy (fixture) frontend on port .front, balancing
    round-robin over their PROXY listeners (lb_ports) with send-proxy-v2."""

    def __init__(self, haproxy, nodes, lb_ports):  # noqa: F811
        self.nodes = nodes
        self.haproxy = haproxy([(lb_ports, "send-proxy-v2")])
        self.front = self.haproxy.ports[0]
        self.marks = [len(n.log_text()) for n in nodes]
        self.taken = []                 # the node index of each session, in order

    def connect(self, source):
        """A client from source through haproxy that got the banner: (client, node index)."""
        c = peers.SmtpClient(self.front, source=source)
        c.greeting()
        rx = re.compile(r"event=connect client=%s listener=lb proxy=127\.0\.0\.1 "
                        r"proxy_version=2 proxy_kind=TCP4$" % re.escape(source), re.M)

        def hits():
            return [i for i, n in enumerate(self.nodes)
                    if rx.search(n.log_text()[self.marks[i]:])]
        got = peers.wait_until(hits, 5)
        assert len(got) == 1, "session from %s on nodes %r" % (source, got)
        self.marks = [len(n.log_text()) for n in self.nodes]
        if self.taken:
            assert got[0] != self.taken[-1], "not round-robin: %r then %d; haproxy:\n%s" % (
                self.taken, got[0], self.haproxy.log_text())
        self.taken.append(got[0])
        return c, got[0]

    def count(self, i, pattern):
        return len(re.findall(pattern, self.nodes[i].log_text(), re.M))


def two_nodes(portier, haproxy, sink_port, extra, filters=None):  # noqa: F811
    """Two portier nodes alike (test_proxy.config: mx on {port}, lb on {pport} running
    filters, extra appended), relaying to sink_port, behind one haproxy: a Fleet."""
    nodes, ports = [], []
    for _ in range(2):
        pport = peers.free_port()
        nodes.append(portier(proxy_config(sink_port, filters=filters, extra=extra, lb=LB),
                             ports={"pport": pport}))
        ports.append(pport)
    return Fleet(haproxy, nodes, ports)


@pytest.mark.timeout(30)
def test_greylist_across_nodes(portier, sink, redis, haproxy):  # noqa: F811
    """New on node X (451 4.7.1), early on node Y, early on X, passed on Y after the delay:
    Y never logs the triplet as new; every line names the real client 127.0.0.2."""
    r = redis()
    s = sink()
    fl = two_nodes(portier, haproxy, s.port, "[filter greylist]\ndelay = 2\n" +
                   redis_section(r), filters="greylist")

    def try_once():
        c, i = fl.connect(A)
        c.ehlo()
        c.cmd("MAIL FROM:<%s>" % ALICE, expect="250")
        return c, i, c.cmd("RCPT TO:<%s>" % RCPT)

    c, x, rep = try_once()
    t0 = time.monotonic()
    greylisted(rep)
    c.quit()
    y = 1 - x
    for _ in range(2):                              # early, on Y then on X
        c, _i, rep = try_once()
        greylisted(rep)
        c.quit()
    time.sleep(max(0.0, t0 + 2.3 - time.monotonic()))
    c, i, rep = try_once()
    assert i == y and rep.is_(250), (i, y, rep)
    tag = peers.unique_id("fleet")
    c.send_message(make_message(subject=tag, frm=ALICE), expect="250")
    c.quit()
    assert fl.taken == [x, y, x, y], fl.taken

    msgs = [m for m in s.wait_messages(1) if tag.encode() in m.raw]
    assert len(msgs) == 1 and msgs[0].rcpts == [RCPT], s.messages()
    m = peers.PORTIER_RECEIVED_RE.match(msgs[0].portier_received()[0])
    assert m and m.group("addr") == A, msgs[0].headers
    line = r"event=greylist action=%s client=127\.0\.0\.2 identity=127\.0\.0\.0/24 "
    assert fl.nodes[y].wait_log(line % r"pass reason=retried"), fl.nodes[y].log_text()
    assert fl.count(x, line % r"defer triplet=new wait=2") == 1, fl.nodes[x].log_text()
    assert fl.count(x, line % r"defer triplet=early wait=[12]") == 1, fl.nodes[x].log_text()
    assert fl.count(y, line % r"defer triplet=early wait=[12]") == 1, fl.nodes[y].log_text()
    assert fl.count(y, r"triplet=new") == 0, fl.nodes[y].log_text()
    assert fl.count(x, r"event=greylist action=pass") == 0, fl.nodes[x].log_text()


@pytest.mark.timeout(30)
def test_auth_failures_across_nodes(tls_server, users_file, certs, redis, haproxy):  # noqa: F811
    """max_failures = 2: a failure on node X and one on node Y trip the limit on Y (535 then
    421 4.7.0); 127.0.0.2 then gets 421 4.7.0 for AUTH, even with the right password, on
    both nodes, while 127.0.0.3 logs in."""
    r = redis()
    auth = {"passwd_file": users_file(), "max_failures": 2, "failure_window": 60}
    lb = {"lb": dict(LB, role="submission", tls="starttls", proxy_protocol="yes",
                     reverse_lookup="no")}
    srvs = [tls_server(listeners=lb, auth=auth, extra=redis_section(r)) for _ in range(2)]
    fl = Fleet(haproxy, [s.portier for s in srvs], [s.lb for s in srvs])
    ctx = tls_context(certs)

    def auth(source, password, want, close):
        """AUTH PLAIN through haproxy under STARTTLS: the replies are want ((code, enhanced)
        ...), then the node closes (close) or QUIT ends the session; returns the node."""
        c, i = fl.connect(source)
        c.ehlo()
        starttls(c, ctx)
        c.ehlo()
        c.sendline("AUTH PLAIN " + plain_b64(ALICE, password))
        if close:
            replies, closed = c.replies_until_closed(5)
        else:
            replies, closed = [c.read_reply()], False
            c.quit()
        c.close()
        assert [(rp.code, rp.enhanced) for rp in replies] == want and closed == close, (
            i, replies, closed)
        return i

    x = auth(A, "wrong-1", [(535, "5.7.8")], False)
    assert fl.nodes[x].wait_log(r"event=auth result=failed client=127\.0\.0\.2 failures=1 ")
    y = auth(A, "wrong-2", [(535, "5.7.8"), (421, "4.7.0")], True)
    assert fl.nodes[y].wait_log(r"event=auth result=failed client=127\.0\.0\.2 failures=2 ")
    for want in (x, y):
        i = auth(A, ALICE_PW, [(421, "4.7.0")], True)
        assert i == want
        assert fl.nodes[i].wait_log(r"event=auth result=blocked client=127\.0\.0\.2 "
                                    r"failures=2$"), fl.nodes[i].log_text()
    auth(B, ALICE_PW, [(235, "2.7.0")], False)
    assert "auth:127.0.0.2#60" in r.cli("--scan", "--pattern", "portier:auth:*")


@pytest.mark.timeout(30)
def test_ratelimit_across_nodes(portier, sink, redis, haproxy):  # noqa: F811
    """client_messages = 2/60: 127.0.0.2's messages 1 and 2 pass on X and Y, the 3rd is
    refused (451 4.7.0) on X and on Y; 127.0.0.3 is served."""
    r = redis()
    s = sink()
    fl = two_nodes(portier, haproxy, s.port, ratelimit_section({"client_messages": "2/60"}) +
                   redis_section(r), filters="ratelimit")
    for _ in range(2):
        c, _i = fl.connect(A)
        c.ehlo()
        send(c, rcpts=(RCPT,))
        c.quit()
    for _ in range(2):
        c, i = fl.connect(A)
        c.ehlo()
        refused(mail(c), 451, "[127.0.0.2]", "messages")
        c.quit()
        assert fl.nodes[i].wait_log(r"event=ratelimit limit=client_messages "
                                    r"subject=\"127\.0\.0\.2\" count=[34] max=2 window=60 "
                                    r"action=tempfail"), fl.nodes[i].log_text()
    c, _i = fl.connect(B)
    c.ehlo()
    c.transaction(sender(), [RCPT], make_message())
    c.quit()
    assert len(fl.taken) == 5 and set(fl.taken) == {0, 1}, fl.taken
    assert len(s.wait_messages(3)) == 3

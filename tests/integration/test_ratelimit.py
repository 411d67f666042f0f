"""The ratelimit filter (policy/ratelimit.c) with real SMTP clients from distinct loopback
addresses (127.0.x.y: each sub-test has a /24 of its own, so the network limits stay apart),
on the memory store and on a real redis-server: connections, messages and recipients per
client and per network, sender domains, AUTH logins; two portier nodes on one Redis enforcing
one limit; Redis stopped (on_error open / closed), restarted (limits back without restarting
portier), paused (an answer after [redis] timeout, other sessions served) and a client that
leaves while a count is in flight; `portier -t` refusing bad values.  The probe that sees
portier up connects from 127.0.0.1, which every config here exempts."""
import os
import re
import select
import time

import pytest

import peers
from peers import LOCAL_DOMAIN, make_message, wait_until
from tlsauth import (certs, users_file, tls_server, ALICE, ALICE_PW, BOB, BOB_PW,  # noqa: F401
                     tls_context, starttls, auth_plain)

RCPT = "user@" + LOCAL_DOMAIN
REFUSED_RE = re.compile(r"^4\.7\.0 Rate limit exceeded: too many (\w+) from (.+), "
                        r"try again in (\d+) seconds$")


def ratelimit_section(limits, name="filter ratelimit"):
    kv = {"exempt": "127.0.0.1"}
    kv.update(limits)
    return "[%s]\n%s\n" % (name, "".join("%s = %s\n" % i for i in kv.items()))


def redis_section(r, on_error="open", timeout=1):
    return "[redis]\nserver = %s\ntimeout = %d\non_error = %s\n" % (r.server, timeout, on_error)


def start(portier, sink, limits, redis=None, on_error="open", timeout=1):
    """A sink and a portier whose mx listener runs ratelimit with these limits."""
    extra = ratelimit_section(limits)
    if redis is not None:
        extra += redis_section(redis, on_error, timeout)
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % sink.port,
                                     listener={"filters": "ratelimit"}, extra=extra))
    return p


def session(p, src, port=None):
    c = peers.SmtpClient(port or p.port, source=src)
    c.start()
    return c


def sender():
    """A sender of a domain of its own (sender_domain limits count nothing else)."""
    return "sender@%s.origin.test" % peers.unique_id("d")


def send(c, frm=None, rcpts=(RCPT,)):
    c.transaction(frm or sender(), rcpts, make_message())


def mail(c):
    return c.cmd("MAIL FROM:<%s>" % sender())


def refused(r, code, what, kind):
    """r is a rate-limit refusal (code, 4.7.0) naming what for kind; returns the retry hint."""
    assert r.code == code and r.enhanced == "4.7.0", r
    m = REFUSED_RE.match(r.texts()[0])
    assert m and m.group(1) == kind and m.group(2) == what, r
    hint = int(m.group(3))
    assert 1 <= hint <= 3600 + 3600 // 16 + 1, r      # the store counts in steps of 1/16
    return hint


ALL_KINDS = {
    "client_connections": "3/3600",
    "network_connections": "4/3600",
    "client_messages": "2/3600",
    "network_messages": "3/3600",
    "client_recipients": "3/3600",
    "sender_domain_messages": "2/3600",
}


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_each_kind(portier, sink, redis, store):
    """Every kind of limit on one server: the client and network connection limits (421 at
    connect, the session ends), messages per client and per network, recipients per client
    (refusing those recipients only), messages per sender domain (lower-cased)."""
    rds = redis() if store == "redis" else None
    s = sink()
    p = start(portier, s, ALL_KINDS, redis=rds)

    # connections: 127.0.1.2 three times, the fourth is refused; then its network is full
    for _ in range(3):
        session(p, "127.0.1.2").quit()
    c = peers.SmtpClient(p.port, source="127.0.1.2")
    refused(c.read_reply(), 421, "[127.0.1.2]", "connections")
    c.expect_closed()
    c = peers.SmtpClient(p.port, source="127.0.1.3")
    refused(c.read_reply(), 421, "network 127.0.1.0/24", "connections")
    c.expect_closed()

    # messages per client, in one session
    c = session(p, "127.0.2.2")
    send(c)
    send(c)
    refused(mail(c), 451, "[127.0.2.2]", "messages")
    c.quit()
    # messages per network: 2 + 1 fit, the 4th of 127.0.3.0/24 does not
    c = session(p, "127.0.3.2")
    send(c)
    send(c)
    c.quit()
    c = session(p, "127.0.3.3")
    send(c)
    refused(mail(c), 451, "network 127.0.3.0/24", "messages")
    c.quit()

    # recipients: the 4th and 5th are refused, the message goes to the first three
    c = session(p, "127.0.4.2")
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
    rcpts = ["u%d@%s" % (i, LOCAL_DOMAIN) for i in range(5)]
    for i, rc in enumerate(rcpts):
        r = c.cmd("RCPT TO:<%s>" % rc)
        if i < 3:
            assert r.code == 250, r
        else:
            refused(r, 451, "[127.0.4.2]", "recipients")
    c.send_message(make_message(), expect="250")
    c.quit()

    # sender domains, from three clients of one network (3 messages: its limit holds)
    for i, src in enumerate(("127.0.5.2", "127.0.5.3", "127.0.5.4")):
        c = session(p, src)
        frm = "x%d@%s" % (i, "Example.ORG" if i else "example.org")
        if i < 2:
            send(c, frm)
        else:
            refused(c.cmd("MAIL FROM:<%s>" % frm), 451, "sender domain example.org", "messages")
        c.quit()

    # one log line per refusal, with the counts
    assert p.wait_log(r"event=ratelimit limit=client_messages subject=\"127\.0\.2\.2\" count=3 "
                      r"max=2 window=3600 action=tempfail")
    log = p.log_text()
    for limit in ("client_connections", "network_connections", "network_messages",
                  "client_recipients", "sender_domain_messages"):
        assert re.search(r"event=ratelimit limit=%s .*action=tempfail" % limit, log), limit
    delivered = s.wait_messages(8)
    assert len(delivered) == 8, len(delivered)
    assert [sorted(m.rcpts) for m in delivered if len(m.rcpts) > 1] == [rcpts[:3]]
    if rds is not None:
        keys = rds.cli("KEYS", "portier:rl:*").split()
        assert any(k == "portier:rl:client_messages:127.0.2.2#3600" for k in keys), keys


def test_login(tls_server, client, certs):  # noqa: F811
    """Messages per AUTH login, whatever the address: alice's third is refused, bob's pass."""
    limits = ratelimit_section({"login_messages": "2/3600"})
    srv = tls_server(listener={"role": "submission", "tls": "starttls", "filters": "ratelimit"},
                     auth="default", extra=limits)
    ctx = tls_context(certs)

    def login(src, user, pw):
        c = client(srv.port, source=src)
        c.start()
        starttls(c, ctx)
        c.ehlo()
        auth_plain(c, user, pw)
        return c

    for src in ("127.0.9.2", "127.0.10.2"):
        c = login(src, ALICE, ALICE_PW)
        c.transaction(ALICE, [RCPT], make_message(frm=ALICE))
        c.quit()
    c = login("127.0.11.2", ALICE, ALICE_PW)
    refused(c.cmd("MAIL FROM:<%s>" % ALICE), 451, "login " + ALICE, "messages")
    c.quit()
    c = login("127.0.11.2", BOB, BOB_PW)
    c.transaction(BOB, [RCPT], make_message(frm=BOB))
    c.quit()


def test_two_nodes_one_redis(portier, sink, redis):
    """What node A counted, node B enforces: the fleet shares one limit."""
    r = redis()
    s = sink()
    limits = {"client_messages": "2/3600"}
    a = start(portier, s, limits, redis=r)
    b = start(portier, s, limits, redis=r)
    c = session(a, "127.0.12.2")
    send(c)
    send(c)
    c.quit()
    c = session(b, "127.0.12.2")
    refused(mail(c), 451, "[127.0.12.2]", "messages")
    c.quit()
    c = session(b, "127.0.12.3")
    send(c)
    c.quit()
    assert b.wait_log(r"event=ratelimit limit=client_messages subject=\"127\.0\.12\.2\" "
                      r"count=3 max=2")


def mail_reply(c):
    """MAIL's reply, and RSET after it (the session stays usable)."""
    r = mail(c)
    c.cmd("RSET", expect="250")
    return r


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_redis_stopped_then_back(portier, sink, redis, on_error):
    """Redis gone: on_error = open passes and logs it, closed answers 451 4.3.0; Redis back
    (empty): the limit holds again within a few seconds, portier not restarted."""
    r = redis()
    s = sink()
    p = start(portier, s, {"client_messages": "1/3600"}, redis=r, on_error=on_error)
    c = session(p, "127.0.13.2")
    assert mail_reply(c).code == 250
    assert mail_reply(c).code == 451
    r.stop()
    got = mail_reply(c)
    if on_error == "open":
        assert got.code == 250, got
        assert p.wait_log(r"event=ratelimit_store_error limit=client_messages "
                          r"store=\"redis [^\"]+\" error=\"redis: [^\"]+\" action=pass")
    else:
        assert got.is_(451, "4.3.0") and "state unavailable" in got.text, got
        assert p.wait_log(r"event=ratelimit_store_error .*action=tempfail")
    r.restart()
    t0 = time.monotonic()
    c2 = session(p, "127.0.13.3")
    # the first count after the restart passes (1 of 1), then the limit bites again
    seen = []
    while time.monotonic() - t0 < 5:
        seen.append(mail_reply(c2))
        if seen[-1].code == 451 and seen[-1].enhanced == "4.7.0":
            break
        time.sleep(0.2)
    assert seen[-1].is_(451, "4.7.0"), seen
    assert time.monotonic() - t0 < 4, "limit back after %.1fs" % (time.monotonic() - t0)
    assert any(x.code == 250 for x in seen), seen
    c.quit()
    c2.quit()


def test_redis_paused(portier, sink, redis):
    """A hung Redis: the MAIL gets its answer after [redis] timeout (2 s, open: 250), not a
    hang, and meanwhile another session is served."""
    r = redis()
    s = sink()
    p = start(portier, s, {"client_messages": "5/3600"}, redis=r, timeout=2)
    c = session(p, "127.0.14.2")
    send(c)                                 # the loop's connection is up
    r.pause()
    try:
        t0 = time.monotonic()
        c.sendline("MAIL FROM:<%s>" % sender())
        c2 = session(p, "127.0.14.3")       # banner and EHLO while the count hangs
        c2.cmd("NOOP", expect="250")
        assert not select.select([c.sock], [], [], 0)[0], "MAIL answered before the timeout"
        got = c.read_reply(timeout=6)
        waited = time.monotonic() - t0
        assert got.code == 250, got
        assert 1.8 <= waited <= 4.5, waited
    finally:
        r.resume()
    assert p.wait_log(r"event=ratelimit_store_error .*error=\"redis: timeout\" action=pass")
    c.cmd("RSET", expect="250")
    c.quit()
    c2.quit()


def test_client_leaves_while_pending(portier, sink, redis):
    """Redis paused, clients leave while their counts are in flight (at CONNECT, and at MAIL
    in sessions opened before the pause): no crash, no sanitizer report (the portier fixture
    checks), and once Redis is back mail flows."""
    r = redis()
    s = sink()
    p = start(portier, s, {"client_connections": "50/3600", "client_messages": "50/3600"},
              redis=r)
    c = session(p, "127.0.15.2")
    send(c)
    early = [session(p, "127.0.15.%d" % (3 + i)) for i in range(2)]
    r.pause()
    try:
        for i in range(3):
            peers.SmtpClient(p.port, source="127.0.15.%d" % (10 + i)).close()
        for e in early:
            e.sendline("MAIL FROM:<sender@origin.test>")
        time.sleep(0.3)
        for e in early:
            e.close()
        c.sendline("MAIL FROM:<sender@origin.test>")
        c.close()
    finally:
        r.resume()
    assert wait_until(lambda: _one_message(p), 8, interval=0.3), p.log_text()[-3000:]
    assert p.alive()


def _one_message(p):
    try:
        c = session(p, "127.0.15.20")
        send(c)
        c.quit()
        return True
    except (AssertionError, peers.ConnectionClosed, OSError):
        return False


BAD = [
    ("client_messages", "100", "client_messages (line"),
    ("client_messages", "0/3600", "is not N/SECONDS"),
    ("network_recipients", "10/0", "is not N/SECONDS"),
    ("login_connections", "10/60", "a connection has no login yet"),
    ("sender_domain_connections", "10/60", "a connection has no sender yet"),
    ("client_mesages", "10/60", "unknown key \"client_mesages\""),
    ("exempt", "192.0.2.0/33", "is not an address or network"),
    ("network_prefix6", "129", "network_prefix6"),
]


def test_check_refuses(tmpdir_0755):
    """portier -t names the file's bad values; a good section passes."""
    def check(kv, name="filter ratelimit", filters="ratelimit"):
        path = os.path.join(tmpdir_0755, "rl.conf")
        with open(path, "w") as f:
            f.write(peers.portier_config(listener={"listen": "127.0.0.1:2525",
                                                   "filters": filters},
                                         extra="[%s]\n%s" % (name, "".join(
                                             "%s = %s\n" % i for i in kv))))
        return peers.run_portier_check(path)

    rc, out = check([("client_messages", "100/3600"), ("exempt", "127.0.0.1 ::1")])
    assert rc == 0, out
    rc, out = check([("client_messages", "100/3600")], name="ratelimit edge",
                    filters="ratelimit:edge")
    assert rc == 0, out
    for key, value, want in BAD:
        rc, out = check([(key, value)])
        assert rc != 0 and want in out and "ratelimit" in out, (key, value, out)
    rc, out = check([("timeout", "5")])
    assert rc != 0 and "no limit set" in out, out

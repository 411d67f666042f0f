"""The greylist filter (policy/greylist.c) in full SMTP sessions, relaying to a real smtp-sink.

Clients come from distinct loopback addresses (127.0.0.2, .3 ...).  Delays are 1-2 s.
  - memory store: a new triplet gets 451 4.7.1 at RCPT (that recipient only), a retry before
    the delay still 451, after it the message is delivered;
  - network granularity: another address of the same /24 passes once the triplet passed
    (network_prefix4 = 24), not with /32; auto_allow;
  - Redis: the store key is "gl:t:" + SHA-256 of the triplet; TWO portier instances sharing
    one Redis: greylisted on A, retried on B after the delay, passes (and then on A too);
  - Redis down with [redis] on_error = open / closed, and back without a restart;
  - a client that leaves while a Redis call is pending (Redis paused), and a call timing out;
  - identity = spf with the spf filter and a private unbound: two addresses that SPF allows
    for the sender's domain share a triplet;
  - -t refusing bad keys.
The portier fixture fails a test on a crash or any sanitizer report.
"""
import hashlib
import os
import time

import pytest

import peers
from peers import make_message

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ALICE, BOB, CAROL = "alice@origin.test", "bob@example.test", "carol@example.test"


def config(s, gl=None, redis=None, on_error=None, server=None, filters="greylist"):
    """An mx listener running `filters`, [filter greylist] with gl (delay 2 unless given),
    relaying to sink s."""
    kv = {"delay": "2"}
    kv.update(gl or {})
    extra = "[filter greylist]\n" + "".join("%s = %s\n" % i for i in kv.items())
    if redis is not None:
        extra += "[redis]\nserver = %s\ntimeout = 1\n" % redis.server
        if on_error:
            extra += "on_error = %s\n" % on_error
    srv = {"workers": "2"}
    srv.update(server or {})
    return peers.portier_config("smtp:127.0.0.1:%d" % s.port, server=srv,
                                listener={"filters": filters}, extra=extra)


def rcpt(client, p, source, sender=ALICE, to=BOB):
    """A session from source up to RCPT: (the client, the RCPT reply)."""
    c = client(p.port, source=source)
    c.start()
    c.cmd("MAIL FROM:<%s>" % sender, expect="250")
    return c, c.cmd("RCPT TO:<%s>" % to)


def greylisted(r):
    assert r.is_(451, "4.7.1"), r
    assert "Greylisted, try again in" in r.text, r


def deliver(c, s, n):
    """The message of c's open transaction reaches the sink as its n-th."""
    c.send_message(make_message(), expect="250")
    c.quit()
    return s.wait_messages(n)[n - 1]


def wait_past(t0, seconds):
    time.sleep(max(0.0, t0 + seconds + 0.2 - time.monotonic()))


def defer_and_wait(client, p, source, delay, **kw):
    """A session from source is greylisted at RCPT; returns once delay has passed since."""
    c, r = rcpt(client, p, source, **kw)
    t0 = time.monotonic()
    greylisted(r)
    c.close()
    wait_past(t0, delay)


def test_memory_defer_then_pass(portier, sink, client):
    """451 4.7.1 for the new triplet, 451 on an early retry, delivered after the delay; a new
    recipient in the same transaction is deferred alone."""
    s = sink()
    p = portier(config(s))
    c, r = rcpt(client, p, A)
    t0 = time.monotonic()
    greylisted(r)
    assert "try again in 2 seconds" in r.text, r
    c.cmd("RSET", expect="250")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250")
    greylisted(c.cmd("RCPT TO:<%s>" % BOB))         # early
    assert time.monotonic() - t0 < 1.5
    wait_past(t0, 2)
    c.cmd("RSET", expect="250")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250")
    c.cmd("RCPT TO:<%s>" % BOB, expect="250")
    greylisted(c.cmd("RCPT TO:<%s>" % CAROL))       # new: that recipient only
    msg = deliver(c, s, 1)
    assert msg.rcpts == [BOB], msg
    p.wait_log(r"event=greylist action=defer triplet=new wait=2 client=127\.0\.0\.2 "
               r"identity=127\.0\.0\.0/24 from=<alice@origin\.test> to=<bob@example\.test>")
    p.wait_log(r"event=greylist action=defer triplet=early wait=[12] client=127\.0\.0\.2 ")
    p.wait_log(r"event=greylist action=pass reason=retried client=127\.0\.0\.2 ")


def test_null_sender_greylisted(portier, sink, client):
    """Bounces (MAIL FROM:<>) are greylisted too: they retry."""
    s = sink()
    p = portier(config(s, {"delay": "1"}))
    defer_and_wait(client, p, A, 1, sender="")
    c, r = rcpt(client, p, A, sender="")
    assert r.is_(250), r
    assert deliver(c, s, 1).mail_from == ""


@pytest.mark.parametrize("prefix,passes", [("24", True), ("32", False)])
def test_network_prefix(portier, sink, client, prefix, passes):
    """Once the triplet passed from 127.0.0.2, 127.0.0.3 passes with it under /24, not /32."""
    s = sink()
    p = portier(config(s, {"delay": "1", "network_prefix4": prefix}))
    defer_and_wait(client, p, A, 1)
    c, r = rcpt(client, p, A)
    assert r.is_(250), r
    c.close()
    c, r = rcpt(client, p, B)
    if passes:
        assert r.is_(250), r
        deliver(c, s, 1)
    else:
        greylisted(r)


def test_auto_allow(portier, sink, client):
    """auto_allow = 2: after two passed triplets, a new one from the network passes at once."""
    s = sink()
    p = portier(config(s, {"delay": "1", "auto_allow": "2"}))
    c, r = rcpt(client, p, A)
    greylisted(r)
    greylisted(c.cmd("RCPT TO:<%s>" % CAROL))
    t0 = time.monotonic()
    c.close()
    wait_past(t0, 1)
    c, r = rcpt(client, p, A)
    assert r.is_(250), r                             # one passed
    c.close()
    c, r = rcpt(client, p, B, sender="zed@else.test")
    greylisted(r)                                    # not yet allowed
    c.close()
    c, r = rcpt(client, p, A, to=CAROL)
    assert r.is_(250), r                             # two passed
    c.close()
    c, r = rcpt(client, p, C, sender="zed@else.test")
    assert r.is_(250), r
    c.cmd("RCPT TO:<dave@example.test>", expect="250")
    deliver(c, s, 1)
    p.wait_log(r"event=greylist action=pass reason=auto_allow client=127\.0\.0\.4 ")
    passes = [l for l in p.log_text().splitlines()
              if "event=greylist action=pass" in l and "client=127.0.0.4 " in l]
    assert len(passes) == 1, passes                  # logged once per transaction


def test_exempt(portier, sink, client):
    """exempt networks are never greylisted (logged action=skip reason=exempt); others are."""
    s = sink()
    p = portier(config(s, {"exempt": "192.0.2.0/24, 127.0.0.5 10.0.0.0/8"}))
    c, r = rcpt(client, p, "127.0.0.5")
    assert r.is_(250), r
    deliver(c, s, 1)
    p.wait_log(r"event=greylist action=skip reason=exempt client=127\.0\.0\.5")
    c, r = rcpt(client, p, "127.0.0.6")
    greylisted(r)


def test_redis_two_nodes(portier, sink, redis, client):
    """Greylisted on node A, retried on node B after the delay: passes, and then on A too.
    The store key is [redis] prefix + "gl:t:" + 32 hex digits of SHA-256(net NUL from NUL to)."""
    rd = redis()
    s = sink()
    a = portier(config(s, redis=rd))
    b = portier(config(s, redis=rd))
    c, r = rcpt(client, a, A, sender="Alice@Origin.test")
    t0 = time.monotonic()
    greylisted(r)
    c.close()
    key = "portier:gl:t:" + hashlib.sha256(
        b"127.0.0.0/24\0alice@origin.test\0bob@example.test").hexdigest()[:32]
    assert rd.cli("EXISTS", key).strip() == "1", rd.cli("KEYS", "*")
    c, r = rcpt(client, b, A)
    greylisted(r)                                    # early, on B
    c.close()
    wait_past(t0, 2)
    c, r = rcpt(client, b, B)
    assert r.is_(250), r
    deliver(c, s, 1)
    assert rd.cli("GET", key).strip() == "p"
    c, r = rcpt(client, a, A)
    assert r.is_(250), r
    deliver(c, s, 2)
    b.wait_log(r"event=greylist action=pass reason=retried client=127\.0\.0\.3 ")


def new_triplet_greylisted(client, p, timeout=5.0):
    """A fresh triplet gets 451 4.7.1 within timeout (the store is back)."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        c, r = rcpt(client, p, A, to="probe%d@example.test" % n)
        c.close()
        if r.is_(451, "4.7.1") or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_redis_down_and_back(portier, sink, redis, client, on_error):
    """Redis gone: on_error = open lets the recipient pass, closed answers 451 4.3.0, each
    logged; Redis back: greylisting works again without a restart."""
    rd = redis()
    s = sink()
    p = portier(config(s, redis=rd, on_error=on_error))
    c, r = rcpt(client, p, A)
    greylisted(r)
    c.close()
    rd.stop()
    c, r = rcpt(client, p, A, to=CAROL)
    if on_error == "open":
        assert r.is_(250), r
        deliver(c, s, 1)
        p.wait_log(r"event=greylist_store_error action=pass error=\"redis: [^\"]+\" "
                   r"client=127\.0\.0\.2")
    else:
        assert r.is_(451, "4.3.0"), r
        assert "Greylisting state unavailable" in r.text, r
        p.wait_log(r"event=greylist_store_error action=tempfail error=\"redis: [^\"]+\"")
    c.close()
    rd.restart()
    greylisted(new_triplet_greylisted(client, p))
    assert p.alive()


def test_redis_paused(portier, sink, redis, client):
    """A hung Redis: a client that leaves while its RCPT waits is let go (the call is
    cancelled), one that stays gets on_error's answer after [redis] timeout; then Redis
    continues and greylisting works again."""
    rd = redis()
    s = sink()
    p = portier(config(s, redis=rd, server={"workers": "1"}))
    c, r = rcpt(client, p, A)
    greylisted(r)                                    # connected while Redis answers
    c.close()
    rd.pause()
    try:
        c = client(p.port, source=B)
        c.start()
        c.cmd("MAIL FROM:<%s>" % ALICE, expect="250")
        c.sendline("RCPT TO:<%s>" % CAROL)
        time.sleep(0.3)
        c.close()                                    # leaves while the call is pending
        t0 = time.monotonic()
        c2, r = rcpt(client, p, C, to="dave@example.test")
        waited = time.monotonic() - t0
        assert r.is_(250), r                         # on_error = open (the default)
        assert 0.2 < waited < 5, waited          # [redis] timeout, not the filter's 60 s
        p.wait_log(r"event=greylist_store_error action=pass error=\"redis: (timeout|"
                   r"unreachable|connection lost)\"")
        c2.close()
    finally:
        rd.resume()
    greylisted(new_triplet_greylisted(client, p))
    assert p.alive()


SPF_ZONES = [
    'local-zone: "origin.test." static',
    "local-data: 'origin.test. 300 IN TXT \"v=spf1 ip4:%s ip4:%s -all\"'" % (A, B),
    'local-zone: "nospf.test." static',
    "local-data: 'nospf.test. 300 IN A 192.0.2.1'",
]


@pytest.mark.parametrize("filters", ["spf greylist", "greylist spf"])
def test_spf_identity(portier, sink, unbound, client, filters):
    """identity = spf (per-address networks): a sender whose SPF passes from both 127.0.0.2
    and 127.0.0.3 retries from the other address and passes; one without SPF does not.
    spf judges at MAIL: its place in the chain does not matter."""
    dns = unbound(zones=SPF_ZONES)
    s = sink()
    p = portier(config(s, {"delay": "1", "identity": "spf", "network_prefix4": "32"},
                       server={"resolver": dns.servers, "resolver_timeout": "1"},
                       filters=filters))
    c, r = rcpt(client, p, A)
    greylisted(r)
    c.close()
    defer_and_wait(client, p, A, 1, sender="joe@nospf.test")
    c, r = rcpt(client, p, B)
    assert r.is_(250), r
    deliver(c, s, 1)
    c, r = rcpt(client, p, B, sender="joe@nospf.test")
    greylisted(r)
    p.wait_log(r"event=greylist action=defer triplet=new wait=1 client=127\.0\.0\.2 "
               r"identity=spf:origin\.test ")
    p.wait_log(r"event=greylist action=pass reason=retried client=127\.0\.0\.3 "
               r"identity=spf:origin\.test ")
    p.wait_log(r"event=greylist action=defer triplet=new wait=1 client=127\.0\.0\.3 "
               r"identity=127\.0\.0\.3/32 from=<joe@nospf\.test>")


@pytest.mark.parametrize("kv,message", [
    ("delay = 86401", 'delay "86401" at line'),
    ("delay = 300\nretry_window = 60", "retry_window (60) must be longer than delay (300)"),
    ("identity = ip", 'identity "ip" at line'),
    ("authenticated = yes", 'authenticated "yes" at line'),
    ("exempt = 192.0.2.0/24 mx.example.test", '"mx.example.test" is not an address or network'),
    ("network_prefix4 = 4", 'network_prefix4 "4" at line'),
    ("max_age = 35", 'unknown key "max_age"'),
])
def test_check_refuses(tmpdir_0755, kv, message):
    """portier -t refuses a bad [filter greylist] and says what to fix."""
    path = os.path.join(tmpdir_0755, "portier.conf")
    text = peers.portier_config(listener={"filters": "greylist"},
                                extra="[filter greylist]\n%s\n" % kv).replace("{port}", "2525")
    with open(path, "w") as f:
        f.write(text)
    rc, out = peers.run_portier_check(path)
    assert rc != 0, out
    assert message in out, out
    assert "greylist" in out, out


def test_check_accepts(tmpdir_0755):
    """Every key with a good value passes -t."""
    path = os.path.join(tmpdir_0755, "portier.conf")
    gl = ("delay = 300\nretry_window = 172800\nlifetime = 3024000\nauto_allow = 5\n"
          "network_prefix4 = 24\nnetwork_prefix6 = 64\nidentity = spf\n"
          "exempt = 192.0.2.0/24 2001:db8::/32\nauthenticated = greylist\ntimeout = 10\n"
          "default_action = accept\n")
    text = peers.portier_config(listener={"filters": "spf greylist"},
                                extra="[filter greylist]\n" + gl).replace("{port}", "2525")
    with open(path, "w") as f:
        f.write(text)
    rc, out = peers.run_portier_check(path)
    assert rc == 0, out

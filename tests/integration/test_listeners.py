"""Listeners as the process sees them: each counts its own sessions against its max_sessions,
SIGHUP gives each bound address to the listener that lists it (never by the order of the
sections), and an address another process holds makes portier refuse to start, even when
that process set SO_REUSEPORT too."""
import os
import socket
import subprocess

import pytest

import peers
from peers import ConnectionClosed
from tlsauth import certs, users_file  # noqa: F401  (fixtures)


def greeting_code(port):
    """The code of a new client's greeting on port, or None if it was closed without one.
    The client is returned open so that its session keeps counting."""
    c = peers.SmtpClient(port, timeout=5)
    try:
        return c, c.read_reply().code
    except (ConnectionClosed, OSError):
        return c, None


def listeners_config(sink_port, certs, passwd, sections):  # noqa: F811
    """[server], the given [listener NAME] sections in that order, [tls], [auth], [backend]."""
    text = peers.portier_config("smtp:127.0.0.1:%d" % sink_port, server={"workers": 1})
    # portier_config writes [listener mx] between [server] and [backend]: replace it.
    head, rest = text.split("[listener mx]\n", 1)
    backend = rest[rest.index("[backend]"):]
    out = head
    for name, kv in sections:
        out += "[listener %s]\n%s\n" % (name, "".join("%s = %s\n" % i for i in kv.items()))
    return (out + "[tls]\ncert = %s\nkey = %s\n\n" % (certs.cert, certs.key)
            + "[auth]\npasswd_file = %s\n\n" % passwd + backend)


MX = ("mx", {"listen": "127.0.0.1:{port}", "role": "mx", "tls": "none"})
SUB = ("submission", {"listen": "127.0.0.1:{sub}", "role": "submission", "tls": "starttls"})


def mx_role(port):
    """True when the listener on port behaves as mx: MAIL without AUTH is taken, a local
    recipient too (a submission listener answers MAIL 530 5.7.0 before STARTTLS and AUTH)."""
    c = peers.SmtpClient(port)
    try:
        c.start()
        r = c.cmd("MAIL FROM:<sender@origin.test>")
        if r.code == 530:
            peers.expect_reply(r, "530 5.7.0", "MAIL before AUTH on a submission listener")
            return False
        peers.expect_reply(r, "250 2.1.0", "MAIL on an mx listener")
        c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
        c.quit()
        return True
    finally:
        c.close()


def test_max_sessions_counts_per_listener(portier, sink, client):
    """max_sessions = 1 on one listener: a session on the other listener does not use up its
    slot; its second session gets 421 4.7.0 while the other listener still takes clients."""
    s = sink()
    port2 = peers.free_port()
    extra = "[listener other]\nlisten = 127.0.0.1:{port2}\nrole = mx\ntls = none\n"
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={"workers": 1},
                                     listener={"max_sessions": 1}, extra=extra),
                ports={"port2": port2})
    assert peers.wait_until(lambda: peers.port_accepts(port2), 5), "second listener not up"
    other = client(port2)
    other.greeting()

    def first_admitted():
        # the start-up probe session on {port} may still be ending
        c, code = greeting_code(p.port)
        if code == 220:
            return c
        c.close()
        return None
    first = peers.wait_until(first_admitted, 5, interval=0.2)
    assert first, "the limited listener refused its first session while the other listener " \
        "had one:\n" + p.log_text()[-3000:]
    try:
        second = client(p.port)
        peers.expect_reply(second.read_reply(), "421 4.7.0", "second session on max_sessions = 1")
        second.expect_closed()
        more = client(port2)
        more.greeting()
        first.cmd("NOOP", expect="250 2.0.0")
        other.cmd("NOOP", expect="250 2.0.0")
    finally:
        first.close()


def test_sighup_maps_listeners_by_address_not_position(portier, sink, certs, users_file):  # noqa: F811
    """mx then submission in the config; SIGHUP after the sections were swapped: the mx port
    still takes MAIL for a local domain without AUTH, the submission port still wants AUTH."""
    s = sink()
    passwd = users_file()
    sub = peers.free_port()
    p = portier(listeners_config(s.port, certs, passwd, [MX, SUB]), ports={"sub": sub})
    assert peers.wait_until(lambda: peers.port_accepts(sub), 5), "submission listener not up"
    assert mx_role(p.port) and not mx_role(sub), "roles wrong before the reload"
    mark = len(p.log_text())
    p.reload(listeners_config(s.port, certs, passwd, [SUB, MX]))
    assert p.wait_log(r"event=reload result=ok", after=mark), p.log_text()[mark:]
    assert mx_role(p.port), "the mx port lost its role after SIGHUP:\n" + p.log_text()[mark:]
    assert not mx_role(sub), "the submission port took mail without AUTH after SIGHUP"
    assert "restart_needed=no" in p.log_text()[mark:]


def test_sighup_address_changes_are_logged(portier, sink, certs, users_file):  # noqa: F811
    """A reload that moves a listener to another address and adds one: the old address keeps
    serving its listener (by name), and the log says which addresses need a restart."""
    s = sink()
    passwd = users_file()
    sub, moved, added = peers.free_port(), peers.free_port(), peers.free_port()
    p = portier(listeners_config(s.port, certs, passwd, [MX, SUB]),
                ports={"sub": sub, "moved": moved, "added": added})
    mark = len(p.log_text())
    new_sub = ("submission", dict(SUB[1], listen="127.0.0.1:{moved}"))
    third = ("third", {"listen": "127.0.0.1:{added}", "role": "mx", "tls": "none"})
    p.reload(listeners_config(s.port, certs, passwd, [new_sub, MX, third]))
    assert p.wait_log(r"event=reload result=ok .*restart_needed=yes", after=mark), \
        p.log_text()[mark:]
    log = p.log_text()[mark:]
    assert "listener=submission listen=127.0.0.1:%d warning=" % sub in log, log
    assert "listener=submission listen=127.0.0.1:%d warning=\"not bound" % moved in log, log
    assert "listener=third listen=127.0.0.1:%d warning=\"not bound" % added in log, log
    assert not mx_role(sub), "the old submission address no longer serves submission"
    assert mx_role(p.port)
    assert not peers.port_accepts(moved) and not peers.port_accepts(added)


def run_expecting_refusal(portier_bin, tmp, listen):
    """portier with one listener on listen: (exit status, log).  Killed after 8 s if it
    starts (the bug: it shared the port); then the status is None."""
    conf = os.path.join(tmp, "portier.conf")
    with open(conf, "w") as f:
        f.write(peers.portier_config(listener={"listen": listen}))
    os.chmod(conf, 0o644)
    proc = subprocess.Popen([portier_bin, "-c", conf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=8)
        return proc.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        return None, out.decode("utf-8", "replace")


@pytest.mark.parametrize("reuseport", [True, False], ids=["holder-reuseport", "holder-plain"])
def test_refuses_an_address_held_by_another_process(portier_bin, tmpdir_0755, reuseport):
    """Another socket listens on 127.0.0.1:P (with SO_REUSEPORT, which the kernel would let
    portier's SO_REUSEPORT sockets join, or without): portier exits non-zero, naming the
    listener and the address, instead of sharing the port."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(16)
        port = holder.getsockname()[1]
        rc, log = run_expecting_refusal(portier_bin, tmpdir_0755, "127.0.0.1:%d" % port)
    finally:
        holder.close()
    assert rc is not None, "portier started on a port another process holds:\n" + log
    assert rc != 0, log
    assert ("listener=mx listen=127.0.0.1:%d error=\"address already in use by another "
            "process\"" % port) in log, log
    assert not any(m in log for m in peers.SANITIZER_MARKS), log


def ipv6_loopback():
    """True when [::1] can be bound here."""
    try:
        t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        t.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        t.close()


def test_own_addresses_on_one_port_do_not_conflict(portier, sink, client):
    """0.0.0.0:P and 127.0.0.1:P in two listeners (and [::1]:P where IPv6 works): the probe
    does not mistake portier's own sockets for another process's; 127.0.0.1 goes to the
    listener of the specific address."""
    s = sink()
    extra = "[listener wild]\nlisten = 0.0.0.0:{port}%s\nrole = mx\ntls = none\n" % (
        " [::1]:{port}" if ipv6_loopback() else "")
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port, extra=extra))
    mark = len(p.log_text())
    c = client(p.port)
    c.start()
    c.quit()
    assert p.wait_log(r"event=connect client=127\.0\.0\.1 listener=mx", after=mark), \
        p.log_text()


def test_sighup_dropped_listener_answers_421(portier, sink, client):
    """A reload without a listener: its address stays bound until a restart, and a client
    there gets 421 4.3.2 and a close instead of another listener's service."""
    s = sink()
    port2 = peers.free_port()
    extra = "[listener other]\nlisten = 127.0.0.1:{port2}\nrole = mx\ntls = none\n"
    relay = "smtp:127.0.0.1:%d" % s.port
    p = portier(peers.portier_config(relay, extra=extra), ports={"port2": port2})
    assert peers.wait_until(lambda: peers.port_accepts(port2), 5), "second listener not up"
    mark = len(p.log_text())
    p.reload(peers.portier_config(relay))
    assert p.wait_log(r"event=reload result=ok .*restart_needed=yes", after=mark), \
        p.log_text()[mark:]
    assert "listen=127.0.0.1:%d warning=\"no listener has this address" % port2 in \
        p.log_text()[mark:]
    c = client(port2)
    peers.expect_reply(c.read_reply(), "421 4.3.2", "greeting on a dropped listener's address")
    c.expect_closed()
    c = client(p.port)
    c.start()

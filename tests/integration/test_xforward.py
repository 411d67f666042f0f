"""[backend] relay_xforward: portier passes the original client's facts on with Postfix's
XFORWARD (XFORWARD_README) to a REAL private Postfix (test_portier_milter.Postfix, no milter,
smtpd_authorized_xforward_hosts = 127.0.0.0/8, client port logging on) relaying to an
smtp-sink.  The client connects from 127.0.0.2, whose PTR (a private unbound) is
good.client.test.

  - relay_xforward = yes: Postfix's maillog names the real client (name, address and source
    port, portier's transaction id as orig_queue_id) and its Received: the client's HELO, name
    and address; with and without PIPELINING at Postfix (one XFORWARD at a time then)
  - relay_xforward = no: Postfix sees portier (localhost[127.0.0.1], portier's hostname)
  - a backend that does not offer XFORWARD (smtp-sink, which answers 500 to unknown commands)
    gets none: the message is delivered
"""
import os
import re
import shutil

import pytest

import peers
from peers import make_message
from test_portier_milter import Postfix

ZONES = ['local-zone: "client.test." static',
         'local-data: "good.client.test. 300 IN A 127.0.0.2"',
         'local-zone: "2.0.0.127.in-addr.arpa." static',
         'local-data: "2.0.0.127.in-addr.arpa. 300 IN PTR good.client.test."']
PF_XFORWARD = "smtpd_authorized_xforward_hosts = 127.0.0.0/8\nsmtpd_client_port_logging = yes\n"
HELO = "helo.client.test"
POSTCAT = shutil.which("postcat") or "/usr/sbin/postcat"


@pytest.fixture
def postfix(request, sink):
    """postfix(extra="") -> (Postfix, Sink); the Postfix is stopped by its master's PID."""
    started = []

    def make(extra=""):
        s = sink()
        tmp = peers.make_tempdir("postfix")
        started.append((None, tmp))
        pf = Postfix(tmp, "", s.port, extra=PF_XFORWARD + extra)
        started[-1] = (pf, tmp)
        return pf, s

    def fin():
        for pf, tmp in started:
            if pf is not None:
                pf.stop()
            if os.environ.get("PORTIER_KEEP") != "1":
                shutil.rmtree(tmp, ignore_errors=True)

    request.addfinalizer(fin)
    return make


def start(portier, unbound, backend_port, xforward, kind="smtp"):
    """portier with one loop (so one pooled backend connection serves every session)."""
    dns = unbound(zones=ZONES)
    return portier(peers.portier_config(
        relay="%s:127.0.0.1:%d" % (kind, backend_port),
        server={"resolver": dns.servers, "workers": "1"},
        backend={"relay_xforward": xforward}))


def send(p, mark, greet="EHLO"):
    """One message from 127.0.0.2 greeting with HELO; returns the client's source port."""
    c = peers.SmtpClient(p.port, source="127.0.0.2")
    port = c.sock.getsockname()[1]
    c.greeting()
    c.cmd("%s %s" % (greet, HELO), expect="250")
    c.transaction("sender@origin.test", ["alice@example.test"],
                  make_message(subject=mark))
    c.quit()
    return port


def postfix_client_lines(pf, n=1):
    """Postfix smtpd's "QUEUEID: client=..." lines, one per message it took (n expected)."""
    def lines():
        return re.findall(r"postfix/smtpd\[\d+\]: \w+: client=.*", pf.log_text())

    peers.wait_until(lambda: len(lines()) >= n, 10)
    assert len(lines()) == n, pf.log_text()
    return lines()


def postfix_client_line(pf):
    return postfix_client_lines(pf)[0]


def txn_ids(p):
    """portier's transaction ids (as in its Received:), in log order."""
    return ["%s.%s" % m for m in re.findall(r"\bid=(\S+) event=txn txn=(\d+) ", p.log_text())]


def txn_id(p):
    ids = txn_ids(p)
    assert len(ids) == 1, p.log_text()
    return ids[0]


@pytest.mark.parametrize("pipelining", [True, False])
def test_postfix_sees_the_real_client(portier, unbound, postfix, pipelining):
    """Two sessions, the second on the pooled backend connection: each message's XFORWARD."""
    pf, s = postfix("" if pipelining else "smtpd_discard_ehlo_keywords = pipelining\n")
    p = start(portier, unbound, pf.port, "yes")
    cports = [send(p, "xforward-yes-%d" % i) for i in range(2)]
    msgs = s.wait_messages(2)
    assert len(msgs) == 2
    lines = postfix_client_lines(pf, 2)
    ids = txn_ids(p)
    assert len(ids) == 2, p.log_text()
    backend_ports = {re.search(r" client=localhost\[127.0.0.1\]:(\d+)", l).group(1) for l in lines}
    assert len(backend_ports) == 1, lines     # portier's one (pooled) connection
    for line, cport, qid in zip(lines, cports, ids):
        assert line.endswith(", orig_queue_id=%s, orig_client=good.client.test[127.0.0.2]:%d"
                             % (qid, cport)), (line, p.log_text())
    # XFORWARD overrides logging attributes only: Received: still names portier
    pf_received = [h for h in msgs[0].headers if "(Postfix)" in h]
    assert pf_received[0].startswith("Received: from %s (localhost [127.0.0.1])"
                                     % peers.HOSTNAME), pf_received[0]


@pytest.mark.parametrize("greet,proto", [("EHLO", "ESMTP"), ("HELO", "SMTP")])
def test_postfix_records_every_attribute(portier, unbound, postfix, greet, proto):
    """Postfix keeps what XFORWARD gave as the queue file's log_* attributes (the message is
    held there, and postcat shows them), next to the real connection's (portier's)."""
    pf, s = postfix("smtpd_data_restrictions = check_client_access static:HOLD\n")
    p = start(portier, unbound, pf.port, "yes")
    cport = send(p, "xforward-hold", greet)
    qid = re.search(r": (\w+): client=", postfix_client_line(pf)).group(1)
    r = peers.run([POSTCAT, "-c", pf.etc, "-q", qid], timeout=30)
    attrs = dict(re.findall(r"^named_attribute: (\w+)=(.*)$", r.stdout.decode(errors="replace"),
                            re.M))
    assert r.returncode == 0 and attrs, r.stdout
    want = {"log_client_name": "good.client.test", "log_client_address": "127.0.0.2",
            "log_client_port": str(cport), "log_helo_name": HELO,
            "log_protocol_name": proto, "log_ident": txn_id(p),
            "client_address": "127.0.0.1", "helo_name": peers.HOSTNAME}
    assert {k: attrs.get(k) for k in want} == want, attrs

def test_off_sends_nothing(portier, unbound, postfix):
    pf, s = postfix()
    p = start(portier, unbound, pf.port, "no")
    cport = send(p, "xforward-no")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    line = postfix_client_line(pf)
    assert "client=localhost[127.0.0.1]:" in line, line
    assert ":%d" % cport not in line and "orig_" not in line, line
    pf_received = [h for h in msgs[0].headers if "(Postfix)" in h]
    assert pf_received[0].startswith("Received: from %s (localhost [127.0.0.1])"
                                     % peers.HOSTNAME), pf_received[0]


def test_backend_without_xforward_gets_none(portier, unbound, sink):
    """smtp-sink does not offer XFORWARD and refuses commands it does not know: the message
    arrives, so none was sent."""
    s = sink()
    p = start(portier, unbound, s.port, "yes")
    send(p, "xforward-sink")
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    assert "relay_xforward_refused" not in p.log_text()


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
def test_refused_xforward_tempfails(portier, unbound, minismtpd, kind):
    """A backend (SMTP or LMTP) that offers XFORWARD but refuses it (minismtpd answers 502):
    the transaction is tempfailed (the RCPT its MAIL went with gets 451 4.4.0), nothing is
    delivered, and relay_xforward = no gets through the same backend."""
    m = minismtpd(lmtp=kind == "lmtp", ext=["PIPELINING", "XFORWARD NAME ADDR PROTO HELO"])
    p = start(portier, unbound, m.port, "yes", kind)
    c = peers.SmtpClient(p.port, source="127.0.0.2")
    c.start(HELO)
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250")
    c.cmd("RCPT TO:<alice@example.test>", expect="451 4.4.0")
    c.quit()
    assert "event=relay_xforward_refused" in p.log_text()
    assert os.listdir(m.dir) == []
    p2 = start(portier, unbound, m.port, "no", kind)
    send(p2, "xforward-off-minismtpd")
    assert peers.wait_until(lambda: os.listdir(m.dir), 10)

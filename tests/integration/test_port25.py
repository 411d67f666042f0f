"""port25's subscriber networks, and a PBL zone through a dnsbl instance ([filter port25] subscriber_networks and
subscriber_networks_file): on an mx listener a client inside them is refused at CONNECT with
554 5.7.1 and a pointer to submission on port 587 with AUTH (logged as
event=subscriber_refused); the same client on a submission listener logs in and sends; a client
outside them is served on mx as before.  The clients connect from 127.0.0.2 (inside) and
127.0.0.1 (outside)."""
import pytest

import peers
from peers import make_message
from tlsauth import (certs, users_file, aux_file, tls_server, tls_context,  # noqa: F401
                     starttls, plain_b64, ALICE, ALICE_PW)

REFUSAL = "554 5.7.1 Residential client; submit mail on port 587 with AUTH"


def server(tls_server, aux_file, how):
    if how == "inline":
        filt = "subscriber_networks = 2001:db8::/32, 127.0.0.2/32\n"
    else:
        path = aux_file("subscribers", "# residential pools\n2001:db8::/32\n"
                        "127.0.0.2/32   # the test's client\n")
        filt = "subscriber_networks_file = %s\n" % path
    return tls_server(listener={"tls": "none"}, auth="default",
                      listeners={"subs": {"role": "submission", "tls": "starttls"}},
                      extra="[filter port25]\n" + filt)


@pytest.mark.parametrize("how", ["inline", "file"])
def test_subscriber_refused_on_mx_only(tls_server, aux_file, certs, how):  # noqa: F811
    srv = server(tls_server, aux_file, how)
    # inside, on mx: refused at the greeting
    c = peers.SmtpClient(srv.port, source="127.0.0.2")
    r = c.read_reply()
    assert r.text == REFUSAL, r
    c.close()
    assert peers.wait_until(lambda: "event=subscriber_refused client=127.0.0.2" in
                            srv.portier.log_text(), 5), srv.portier.log_text()
    # inside, on submission: served
    c = peers.SmtpClient(srv.ports["subs"], source="127.0.0.2")
    c.start()
    starttls(c, tls_context(certs))
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="235")
    c.transaction(ALICE, ["bob@foreign.test"], make_message(subject="from-subscriber", frm=ALICE))
    c.quit()
    # outside, on mx: served
    c = peers.SmtpClient(srv.port, source="127.0.0.1")
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message(subject="outside"))
    c.quit()
    msgs = srv.sink.wait_messages(2)
    assert len(msgs) == 2
    assert srv.portier.log_text().count("event=subscriber_refused") == 1


def test_pbl_zone_refused_on_mx_only(tls_server, certs, unbound):  # noqa: F811
    """A policy block list (PBL) zone as a dnsbl instance of its own ([dnsbl pbl] with
    reply_text) on the mx listener: 127.0.0.2, listed in pbl.test by a private unbound, gets
    554 5.7.1 with the pointer to port 587 and the zone's name; the same client logs in and sends
    on the submission listener (no dnsbl:pbl there); 127.0.0.1, not listed, is served on mx."""
    dns = unbound(zones=['local-zone: "pbl.test." static',
                         "local-data: '2.0.0.127.pbl.test. 300 IN A 127.0.0.10'"])
    srv = tls_server(listener={"tls": "none", "filters": "dnsbl:pbl"}, auth="default",
                     listeners={"subs": {"role": "submission", "tls": "starttls"}},
                     server={"resolver": dns.servers, "resolver_timeout": "2"},
                     extra="[dnsbl pbl]\nzones = pbl.test=127.0.0.[10..11]\n"
                           "reply_text = Residential client; submit mail on port 587 with AUTH\n")
    c = peers.SmtpClient(srv.port, source="127.0.0.2")
    r = c.read_reply()
    assert r.text == REFUSAL + "; client [127.0.0.2] blocked using pbl.test", r
    c.close()
    assert srv.portier.wait_log(r"event=dnsbl client=127\.0\.0\.2 score=1 threshold=1 "
                                r'listed="pbl\.test" action=reject')
    c = peers.SmtpClient(srv.ports["subs"], source="127.0.0.2")
    c.start()
    starttls(c, tls_context(certs))
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="235")
    c.transaction(ALICE, ["bob@foreign.test"], make_message(subject="pbl-client", frm=ALICE))
    c.quit()
    c = peers.SmtpClient(srv.port, source="127.0.0.1")
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message(subject="outside"))
    c.quit()
    assert len(srv.sink.wait_messages(2)) == 2


@pytest.mark.parametrize("filt,ok,says", [
    ("subscriber_networks = 192.0.2.0/24, 2001:db8::/32\n", True, None),
    ("subscriber_networks = 192.0.2.0/33\n", False, '"192.0.2.0/33" is not an address'),
    ("subscriber_networks_file = {list}\n", False, 'subscriber_networks_file line 2: "bogus"'),
    ("subscriber_networks_file = /nonexistent/subscribers\n", False, "No such file"),
    ("timeout = 5\n", False, 'unknown key "timeout"'),
])
def test_check_subscriber_keys(portier_bin, aux_file, filt, ok, says):  # noqa: F811
    """portier -t takes good networks and refuses a bad one, a missing file and other keys."""
    lst = aux_file("list", "10.0.0.0/8\nbogus\n")
    conf = peers.portier_config("smtp:127.0.0.1:%d" % peers.free_port(),
                                extra="[filter port25]\n" + filt.replace("{list}", lst))
    path = aux_file("p.conf", conf.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert (rc == 0) == ok, out
    if says:
        assert says in out, out

"""SMTP AUTH (RFC 4954) and listener roles: mx never offers AUTH; submission only under TLS
and only after AUTH may mail be sent (to any domain); submissions the same over implicit TLS.
SASL PLAIN and LOGIN step by step, password hashes, the passwd-file check, a real Dovecot auth
service, the brute-force limit, real clients (swaks, msmtp, smtplib), and the sender/login
rules (envelope sender and From: must belong to the login).  Backend: smtp-sink."""
import os
import re
import signal
import smtplib
import ssl
import time
from email.message import EmailMessage

import pytest

import peers
from peers import make_message
from tlsauth import (certs, users_file, tls_server, aux_file, dovecot_auth,  # noqa: F401
                     ALICE, ALICE_PW, BOB, BOB_PW, MSMTP,
                     tls_context, starttls, wrap_implicit, check_tls_received, recv_all,
                     challenge, auth_plain, auth_login, plain_b64, b64, hash_password,
                     HashUnavailable, write_passwd, portier_tls_config, write_file)

# Both submission flavours on one server: "submission" (STARTTLS) on {port}, "subs"
# (role submissions, implicit TLS) on its own port.
SUBMISSION = {"role": "submission", "tls": "starttls"}
SUBS = {"subs": {"role": "submissions"}}
MODES = ["submission", "submissions"]


def sub_server(tls_server, auth="default", **kw):
    return tls_server(listener=SUBMISSION, listeners=SUBS, auth=auth, **kw)


def tls_session(srv, client, certs, mode, helo="client.test"):
    """A session under TLS after EHLO: STARTTLS on {port} or implicit TLS on subs."""
    ctx = tls_context(certs)
    if mode == "submission":
        c = client(srv.port)
        c.start(helo)
        starttls(c, ctx)
        c.ehlo(helo)
    else:
        c = wrap_implicit(client(srv.subs), ctx)
        c.start(helo)
    return c


def send_ok(c, mail_from, rcpts, msg):
    return c.transaction(mail_from, rcpts, msg)


# ---------------------------------------------------------------------------------------------
# roles
# ---------------------------------------------------------------------------------------------

def test_mx_never_offers_auth(tls_server, client, certs):
    """role mx (with [auth] configured for other listeners): no AUTH in EHLO before or after
    STARTTLS; AUTH -> 503 5.5.1 in both states; mail only for local_domains: a foreign
    recipient gets 550 5.7.1 under TLS as well."""
    srv = tls_server(listener={"role": "mx", "tls": "starttls"}, listeners=SUBS, auth="default")
    c = client(srv.port)
    kw = peers.ehlo_keywords(c.start())
    assert "AUTH" not in kw, kw
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="503 5.5.1")
    starttls(c, tls_context(certs))
    kw = peers.ehlo_keywords(c.ehlo())
    assert "AUTH" not in kw, kw
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="503 5.5.1")
    c.cmd("AUTH LOGIN", expect="503 5.5.1")
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<someone@foreign.test>", expect="550 5.7.1")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    c.send_message(make_message(), expect="250")
    msgs = srv.sink.wait_messages(1)
    assert [m.rcpts for m in msgs] == [["alice@example.test"]]
    check_tls_received(msgs[0].portier_received()[0], proto="ESMTPS")


def test_submission_requires_tls_then_auth(tls_server, client, certs):
    """role submission: before TLS no AUTH in EHLO, AUTH -> 530 5.7.0, MAIL -> 530 5.7.0;
    after STARTTLS EHLO has '250-AUTH PLAIN LOGIN', MAIL before AUTH -> 530 5.7.0; after AUTH
    any recipient domain is accepted and the message arrives, Received 'with ESMTPSA'."""
    srv = sub_server(tls_server)
    c = client(srv.port)
    r = c.start()
    kw = peers.ehlo_keywords(r)
    assert "AUTH" not in kw and "STARTTLS" in kw, r.text
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="530 5.7.0")
    c.cmd("AUTH LOGIN", expect="530 5.7.0")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    starttls(c, tls_context(certs))
    r = c.ehlo("sub-client.test")
    assert b"250-AUTH PLAIN LOGIN" in r.lines, r.text
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    auth_plain(c, ALICE, ALICE_PW)
    c.ehlo("sub-client.test")           # a new EHLO keeps the authentication (RFC 4954 4)
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("RCPT TO:<someone@foreign.test>", expect="250 2.1.5")
    c.cmd("RCPT TO:<other@elsewhere.example>", expect="250 2.1.5")
    msg = make_message(frm=ALICE, to="someone@foreign.test")
    c.send_message(msg, expect="250")
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1
    m = msgs[0]
    assert m.mail_from == ALICE
    assert m.rcpts == ["someone@foreign.test", "other@elsewhere.example"]
    check_tls_received(m.portier_received()[0], proto="ESMTPSA", helo="sub-client.test")
    # RFC 8601 has no TLS method: the TLS version and cipher ride along as a comment.
    assert re.search(rb"(?m)^Authentication-Results: mx\.example\.test;\s+auth=pass "
                     rb"\(TLSv1\.[23] [A-Z0-9_-]+ \d+/\d+\) smtp\.auth=alice@example\.test",
                     m.content), m.content[:2000]


def test_submissions_implicit(tls_server, client, certs):
    """role submissions: banner only after the handshake, AUTH advertised at once, MAIL before
    AUTH -> 530 5.7.0, after AUTH foreign recipients are accepted, Received 'with ESMTPSA'."""
    srv = sub_server(tls_server)
    c = client(srv.subs)
    data, closed = recv_all(c.sock, 0.5)
    assert data == b"" and not closed, data
    wrap_implicit(c, tls_context(certs))
    r = c.start("subs-client.test")
    assert b"250-AUTH PLAIN LOGIN" in r.lines, r.text
    assert "STARTTLS" not in peers.ehlo_keywords(r), r.text
    c.cmd("MAIL FROM:<%s>" % BOB, expect="530 5.7.0")
    auth_login(c, BOB, BOB_PW)
    send_ok(c, BOB, ["x@foreign.test"], make_message(frm=BOB, to="x@foreign.test"))
    m = srv.sink.wait_messages(1)[0]
    assert m.rcpts == ["x@foreign.test"] and m.mail_from == BOB
    check_tls_received(m.portier_received()[0], proto="ESMTPSA", helo="subs-client.test")


def test_submission_needs_auth_config(tmpdir_0755, certs):
    """A submission listener without [auth] is a configuration error (portier -t exit 2)."""
    cfg = portier_tls_config("smtp:127.0.0.1:9", certs=certs, listener=SUBMISSION)
    path = write_file(os.path.join(tmpdir_0755, "p.conf"), cfg.replace("{port}", "2587"))
    rc, out = peers.run_portier_check(path)
    assert rc == 2, (rc, out)
    assert "[auth]" in out or "auth" in out.lower(), out


# ---------------------------------------------------------------------------------------------
# the SASL exchange
# ---------------------------------------------------------------------------------------------

def x_plain_initial(c):
    auth_plain(c, ALICE, ALICE_PW)


def x_plain_lowercase(c):
    c.cmd("auth plain " + plain_b64(ALICE, ALICE_PW), expect="235 2.7.0")


def x_plain_no_initial(c):
    challenge(c, "AUTH PLAIN", "")
    c.cmd(plain_b64(ALICE, ALICE_PW), expect="235 2.7.0")


def x_plain_authzid_self(c):
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW, authzid=ALICE), expect="235 2.7.0")


def x_plain_authzid_other(c):
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW, authzid=BOB), expect="535 5.7.8")
    auth_plain(c, ALICE, ALICE_PW)


def x_plain_equals(c):
    # "=" is an empty response: not a PLAIN message (RFC 4616 needs two NULs).
    c.cmd("AUTH PLAIN =", expect="501 5.5.2")
    auth_plain(c, ALICE, ALICE_PW)


def x_login(c):
    auth_login(c, ALICE, ALICE_PW)


def x_login_initial(c):
    challenge(c, "AUTH LOGIN " + b64(ALICE), "UGFzc3dvcmQ6")
    c.cmd(b64(ALICE_PW), expect="235 2.7.0")


def x_cancel_plain(c):
    challenge(c, "AUTH PLAIN", "")
    c.cmd("*", expect="501 5.0.0")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    auth_plain(c, ALICE, ALICE_PW)


def x_cancel_login(c):
    challenge(c, "AUTH LOGIN", "VXNlcm5hbWU6")
    challenge(c, b64(ALICE), "UGFzc3dvcmQ6")
    c.cmd("*", expect="501 5.0.0")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    auth_login(c, ALICE, ALICE_PW)


def x_bad_base64_initial(c):
    # RFC 4954 4: a client response the server cannot base64-decode -> 501 5.5.2; the
    # initial response is a client response too.
    got = {}
    for bad in ("!!!notbase64", "YWxpY2U", "YQ==YQ==", "AGFsaWNlAHB=w"):
        got[bad] = c.cmd("AUTH PLAIN " + bad).text
    wrong = {k: v for k, v in got.items() if not v.startswith("501 5.5.2 ")}
    assert not wrong, "undecodable initial responses: expected 501 5.5.2, got %r" % wrong
    auth_plain(c, ALICE, ALICE_PW)


def x_bad_base64_response(c):
    challenge(c, "AUTH LOGIN", "VXNlcm5hbWU6")
    c.cmd("a$b%c", expect="501 5.5.2")
    c.cmd("NOOP", expect="250 2.0.0")
    auth_login(c, ALICE, ALICE_PW)


def x_wrong_password(c):
    auth_plain(c, ALICE, "wrong", expect="535 5.7.8")
    auth_login(c, ALICE, ALICE_PW + "x", expect="535 5.7.8")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    auth_plain(c, ALICE, ALICE_PW)


def x_other_users_password(c):
    auth_plain(c, ALICE, BOB_PW, expect="535 5.7.8")
    auth_plain(c, BOB, BOB_PW)


def x_unknown_user(c):
    auth_plain(c, "nobody@example.test", ALICE_PW, expect="535 5.7.8")
    auth_login(c, "nobody@example.test", ALICE_PW, expect="535 5.7.8")
    auth_plain(c, ALICE, ALICE_PW)


def x_unknown_mech(c):
    c.cmd("AUTH CRAM-MD5", expect="504 5.5.4")
    c.cmd("AUTH XOAUTH2 dGVzdA==", expect="504 5.5.4")
    auth_plain(c, ALICE, ALICE_PW)


def x_twice(c):
    auth_plain(c, ALICE, ALICE_PW)
    c.cmd("AUTH PLAIN " + plain_b64(BOB, BOB_PW), expect="503 5.5.1")
    c.cmd("AUTH LOGIN", expect="503 5.5.1")


def x_in_transaction(c):
    auth_plain(c, ALICE, ALICE_PW)
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("AUTH PLAIN " + plain_b64(BOB, BOB_PW), expect="503 5.5.1")
    c.cmd("RCPT TO:<x@foreign.test>", expect="250 2.1.5")
    c.send_message(make_message(frm=ALICE), expect="250")


def x_line_too_long(c):
    challenge(c, "AUTH PLAIN", "")
    c.sendline("A" * 13000)
    r = c.read_reply()
    peers.expect_reply(r, "500 5.5.6", "reply to a 13000-octet AUTH response line")
    c.cmd("NOOP", expect="250 2.0.0")
    auth_plain(c, ALICE, ALICE_PW)


def x_long_line_within_limit(c):
    # 12000 octets of valid base64: within the 12288 limit, so not 500 5.5.6; the decoded
    # fields are far over any sane length, so the response is refused as malformed.
    challenge(c, "AUTH PLAIN", "")
    r = c.cmd(b64(b"\0" + b"u" * 4000 + b"\0" + b"p" * 4990))
    assert r.code in (501, 535), r.text
    assert not r.is_(500), r.text
    auth_plain(c, ALICE, ALICE_PW)


def x_plain_malformed(c):
    c.cmd("AUTH PLAIN " + b64(ALICE + "\0" + ALICE_PW), expect="501 5.5.2")   # one NUL
    auth_plain(c, ALICE, ALICE_PW)


SASL_CASES = [x_plain_initial, x_plain_lowercase, x_plain_no_initial, x_plain_authzid_self,
              x_plain_authzid_other, x_plain_equals, x_login, x_login_initial, x_cancel_plain,
              x_cancel_login, x_bad_base64_initial, x_bad_base64_response, x_wrong_password,
              x_other_users_password, x_unknown_user, x_unknown_mech, x_twice,
              x_in_transaction, x_line_too_long, x_long_line_within_limit, x_plain_malformed]


@pytest.mark.parametrize("case", SASL_CASES, ids=[f.__name__[2:] for f in SASL_CASES])
def test_sasl_exchange(tls_server, client, certs, case):
    """One AUTH scenario on the submissions listener (see the x_* function); every scenario
    ends authenticated, and then a message from the login goes through."""
    srv = sub_server(tls_server)
    c = tls_session(srv, client, certs, "submissions")
    case(c)
    if case is not x_in_transaction:
        user = BOB if case is x_other_users_password else ALICE
        send_ok(c, user, ["rcpt@foreign.test"], make_message(frm=user))
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1


@pytest.mark.parametrize("mode", MODES)
def test_auth_before_ehlo(tls_server, client, certs, mode):
    """AUTH before EHLO -> 503 5.5.1 (on submissions right after the banner; on submission
    after STARTTLS, which forgot the earlier EHLO)."""
    srv = sub_server(tls_server)
    ctx = tls_context(certs)
    if mode == "submission":
        c = client(srv.port)
        c.start()
        starttls(c, ctx)
    else:
        c = wrap_implicit(client(srv.subs), ctx)
        c.greeting()
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="503 5.5.1")
    c.ehlo()
    auth_plain(c, ALICE, ALICE_PW)


# ---------------------------------------------------------------------------------------------
# password hashes and the passwd-file
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,prefix", [("yescrypt", "$y$"), ("bcrypt", "$2b$"),
                                           ("sha512", "$6$"), ("sha256", "$5$")])
def test_hash_methods(tls_server, client, certs, users_file, method, prefix):
    """passwd_file with yescrypt / bcrypt / sha512-crypt / sha256-crypt hashes: the right
    password gets 235 2.7.0, a wrong one 535 5.7.8."""
    try:
        path = users_file(method=method)
    except HashUnavailable as e:
        pytest.skip("cannot make %s hashes on this system: %s" % (method, e))
    with open(path) as f:
        assert all(l.split(":", 1)[1].startswith(prefix) for l in f), "hash is not %s" % prefix
    srv = sub_server(tls_server, auth={"passwd_file": path, "max_failures": 100})
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, ALICE_PW + "!", expect="535 5.7.8")
    auth_login(c, BOB, BOB_PW)
    c2 = tls_session(srv, client, certs, "submission")
    auth_login(c2, ALICE, "wrong", expect="535 5.7.8")
    auth_plain(c2, ALICE, ALICE_PW)


def test_passwd_dovecot_scheme_prefix(tls_server, client, certs, tmpdir_0755):
    """Dovecot-style lines ('{SHA512-CRYPT}$6$...' and extra ':'-fields) are accepted."""
    path = write_passwd(os.path.join(tmpdir_0755, "passwd"), [
        "# comment line\n",
        "\n",
        "%s:{SHA512-CRYPT}%s::5000:5000::/home/alice\n" % (ALICE, hash_password("sha512", ALICE_PW)),
        "%s:{BLF-CRYPT}%s\n" % (BOB, hash_password("bcrypt", BOB_PW)),
    ])
    srv = sub_server(tls_server, auth={"passwd_file": path})
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, ALICE_PW)
    c2 = tls_session(srv, client, certs, "submissions")
    auth_plain(c2, BOB, BOB_PW)


@pytest.mark.parametrize("bad_line", ["%s:%s\n" % (BOB, BOB_PW), "%s:secret\n" % BOB,
                                      "%s:{PLAIN}secret\n" % BOB, "%s:$1$abc$def\n" % BOB],
                         ids=["plain-password", "plain-word", "dovecot-plain", "md5-crypt"])
def test_passwd_plaintext_line_refused(tmpdir_0755, certs, bad_line):
    """A passwd-file line holding a plain-text password (or an obsolete MD5 hash) makes
    `portier -t` exit 2 naming FILE:LINE, and the password is not echoed."""
    path = write_passwd(os.path.join(tmpdir_0755, "passwd"), [
        "%s:%s\n" % (ALICE, hash_password("sha512", ALICE_PW)), bad_line])
    cfg = portier_tls_config("smtp:127.0.0.1:9", certs=certs, listener=SUBMISSION,
                             auth={"passwd_file": path})
    conf = write_file(os.path.join(tmpdir_0755, "p.conf"), cfg.replace("{port}", "2587"))
    rc, out = peers.run_portier_check(conf)
    assert rc == 2, (rc, out)
    assert "%s:2" % path in out, out
    secret = bad_line.split(":", 1)[1].strip().replace("{PLAIN}", "")
    assert secret not in out, "the password appears in the error output: %r" % out


def test_passwd_good_file_checks(tmpdir_0755, certs, users_file):
    """The same configuration with only hashes passes `portier -t` (exit 0)."""
    path = users_file()
    cfg = portier_tls_config("smtp:127.0.0.1:9", certs=certs, listener=SUBMISSION,
                             auth={"passwd_file": path})
    conf = write_file(os.path.join(tmpdir_0755, "p.conf"), cfg.replace("{port}", "2587"))
    rc, out = peers.run_portier_check(conf)
    assert rc == 0, (rc, out)


# ---------------------------------------------------------------------------------------------
# Dovecot auth backend
# ---------------------------------------------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("endpoint", ["unix", "inet"])
def test_dovecot_backend(tls_server, client, certs, dovecot_auth, endpoint):
    """[auth] dovecot = unix:PATH / inet:127.0.0.1:PORT against a real Dovecot auth service:
    good passwords via PLAIN and LOGIN (SHA512-CRYPT and BLF-CRYPT users) get 235 2.7.0, then
    one bad password 535 5.7.8 (one per Dovecot: it delays later requests from that address)."""
    dv = dovecot_auth(blf=(BOB,))
    spec = "unix:%s" % dv.socket if endpoint == "unix" else "inet:127.0.0.1:%d" % dv.port
    srv = sub_server(tls_server, auth={"dovecot": spec, "max_failures": 100})
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, ALICE_PW)
    send_ok(c, ALICE, ["x@foreign.test"], make_message(frm=ALICE))
    c2 = tls_session(srv, client, certs, "submission")
    auth_login(c2, BOB, BOB_PW)
    c3 = tls_session(srv, client, certs, "submissions")
    t0 = time.monotonic()
    if endpoint == "unix":
        auth_plain(c3, ALICE, "wrong-password", expect="535 5.7.8")
    else:
        auth_login(c3, ALICE, "wrong-password", expect="535 5.7.8")
    assert time.monotonic() - t0 < 9, "Dovecot FAIL took too long"
    c3.cmd("MAIL FROM:<%s>" % ALICE, expect="530 5.7.0")
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].mail_from == ALICE
    log = dv.log_text()
    assert "BUG" not in log, log


def test_dovecot_unreachable(tls_server, client, certs, tmpdir_0755):
    """Dovecot not listening: AUTH gets 454 4.7.0 (temporary), not 535, and no failure is
    counted (max_failures = 1 would otherwise block the next try)."""
    sock = os.path.join(tmpdir_0755, "no-such-socket")
    srv = sub_server(tls_server, auth={"dovecot": "unix:%s" % sock, "max_failures": 1})
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, ALICE_PW, expect="454 4.7.0")
    auth_plain(c, ALICE, ALICE_PW, expect="454 4.7.0")


# ---------------------------------------------------------------------------------------------
# brute force
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_failure_limit(tls_server, users_file, client, certs, mode):
    """max_failures = 3 in failure_window = 60: failures 1 and 2 get 535 5.7.8; the 3rd gets
    535 5.7.8 then 421 4.7.0 and the connection closes; a new connection from 127.0.0.1 that
    tries AUTH (even with the right password) gets 421 4.7.0 at once and is closed."""
    srv = sub_server(tls_server, auth={"passwd_file": users_file(), "max_failures": 3,
                                       "failure_window": 60})
    c = tls_session(srv, client, certs, mode)
    auth_plain(c, ALICE, "bad-1", expect="535 5.7.8")
    auth_login(c, ALICE, "bad-2", expect="535 5.7.8")
    c.sendline("AUTH PLAIN " + plain_b64(ALICE, "bad-3"))
    data, closed = recv_all(c.sock, 5)
    got = c.buf + data
    assert got.startswith(b"535 5.7.8 "), "3rd failure under %s: %r (closed=%r)" % (mode, got,
                                                                                   closed)
    lines = got.split(b"\r\n")
    assert len(lines) == 3 and lines[1].startswith(b"421 4.7.0 ") and lines[2] == b"", \
        "3rd failure under %s: expected 535 then 421 4.7.0, got %r" % (mode, got)
    assert closed, "connection left open after the 421"
    for m in MODES:
        c2 = tls_session(srv, client, certs, m)
        c2.sendline("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW))
        data, closed = recv_all(c2.sock, 5)
        got = c2.buf + data
        assert got.startswith(b"421 4.7.0 ") and closed, \
            "AUTH after the limit on %s: expected 421 4.7.0 and close, got %r (closed=%r)" % (
                m, got, closed)


def test_failure_limit_counts_across_connections(tls_server, users_file, client, certs):
    """Failures add up over connections from the same address: 2 on one connection and the
    3rd on the next one trip the limit."""
    srv = sub_server(tls_server, auth={"passwd_file": users_file(), "max_failures": 3,
                                       "failure_window": 60})
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, "bad-1", expect="535 5.7.8")
    auth_plain(c, ALICE, "bad-2", expect="535 5.7.8")
    c.close()
    c = tls_session(srv, client, certs, "submissions")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, "bad-3"), expect="535 5.7.8")
    r = c.read_reply()
    peers.expect_reply(r, "421 4.7.0", "after the 3rd failure")
    c.expect_closed()


def test_failure_window_expires(tls_server, users_file, client, certs):
    """failure_window = 2: two failures, then after the window AUTH works again."""
    srv = sub_server(tls_server, auth={"passwd_file": users_file(), "max_failures": 2,
                                       "failure_window": 2})
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, "bad-1", expect="535 5.7.8")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, "bad-2"), expect="535 5.7.8")
    peers.expect_reply(c.read_reply(), "421 4.7.0", "after the 2nd failure")
    c = tls_session(srv, client, certs, "submissions")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="421 4.7.0")
    time.sleep(3.2)
    c = tls_session(srv, client, certs, "submissions")
    auth_plain(c, ALICE, ALICE_PW)


def redis_section(r, **kw):
    kv = {"server": r.server, "timeout": "1"}
    kv.update(kw)
    return "[redis]\n" + "".join("%s = %s\n" % (k, v) for k, v in kv.items())


def test_failure_limit_shared_through_redis(tls_server, users_file, client, certs, redis):
    """Two portier nodes with one [redis] count AUTH failures together: 2 failures on node A
    trip max_failures = 2 there (421), and node B then refuses AUTH from the same address with
    421 4.7.0 before checking the (right) password; a node without [redis] does not."""
    r = redis()
    auth = {"passwd_file": users_file(), "max_failures": 2, "failure_window": 60}
    a = sub_server(tls_server, auth=auth, extra=redis_section(r))
    b = sub_server(tls_server, auth=auth, extra=redis_section(r))
    alone = sub_server(tls_server, auth=auth)
    c = tls_session(a, client, certs, "submission")
    auth_plain(c, ALICE, "bad-1", expect="535 5.7.8")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, "bad-2"), expect="535 5.7.8")
    peers.expect_reply(c.read_reply(), "421 4.7.0", "node A after the 2nd failure")
    assert a.portier.wait_log(r"event=auth result=failed client=127\.0\.0\.1 failures=2 ")
    c = tls_session(b, client, certs, "submissions")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW), expect="421 4.7.0")
    c.expect_closed()
    assert b.portier.wait_log(r"event=auth result=blocked client=127\.0\.0\.1 failures=2$")
    assert "auth:127.0.0.1#60" in r.cli("--scan", "--pattern", "portier:auth:*")
    c = tls_session(alone, client, certs, "submission")
    auth_plain(c, ALICE, ALICE_PW)


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_failure_count_when_redis_is_down(tls_server, users_file, client, certs, redis,
                                          on_error):
    """Redis gone: on_error = open checks the password anyway (235) and logs
    event=auth_store_error action=pass; closed answers 454 4.7.0 without checking it.  Redis
    back (same port, empty): counting works again without a restart of portier (each loop
    has its own connection: one that never failed logs no event=redis_up, so only the count
    is checked)."""
    r = redis()
    auth = {"passwd_file": users_file(), "max_failures": 1, "failure_window": 60}
    srv = sub_server(tls_server, auth=auth, extra=redis_section(r, on_error=on_error))
    c = tls_session(srv, client, certs, "submission")
    auth_plain(c, ALICE, ALICE_PW)                     # Redis up: the check passes
    r.stop()
    c = tls_session(srv, client, certs, "submission")
    if on_error == "open":
        auth_plain(c, ALICE, ALICE_PW)
    else:
        auth_plain(c, ALICE, ALICE_PW, expect="454 4.7.0")
    assert srv.portier.wait_log(r"event=auth_store_error client=127\.0\.0\.1 store=\"redis [^\"]+\" "
                          r"error=\"redis: [^\"]+\" action=%s" %
                          ("pass" if on_error == "open" else "tempfail"))
    assert srv.portier.wait_log(r"event=redis_down server=127\.0\.0\.1:%d " % r.port)
    r.restart()
    time.sleep(1.2)                                     # the reconnect pause
    c = tls_session(srv, client, certs, "submission")
    c.cmd("AUTH PLAIN " + plain_b64(ALICE, "bad"), expect="535 5.7.8")
    peers.expect_reply(c.read_reply(), "421 4.7.0", "max_failures = 1, counted in Redis again")
    assert r.cli("--scan", "--pattern", "portier:auth:*").strip()


@pytest.mark.parametrize("interruption", ["client_leaves", "sigterm"])
def test_pending_failure_count_interrupted(tls_server, users_file, client, certs, redis,
                                           interruption):
    """A failure count waiting on a hung Redis (SIGSTOP) when the client leaves, or SIGTERM
    comes: the session ends, the late answer (a timeout after [redis] timeout) is dropped, no
    reply after the end, no sanitizer report, a clean exit; other sessions are served."""
    r = redis()
    auth = {"passwd_file": users_file(), "max_failures": 5, "failure_window": 60}
    srv = sub_server(tls_server, auth=auth, extra=redis_section(r, timeout=2))
    c = tls_session(srv, client, certs, "submission")
    auth_plain(c, ALICE, "warm-up", expect="535 5.7.8")    # the loop's connection is up
    r.pause()
    try:
        c2 = tls_session(srv, client, certs, "submission")
        c2.sendline("AUTH PLAIN " + plain_b64(ALICE, "bad"))
        time.sleep(0.5)                                     # its count waits on Redis
        if interruption == "client_leaves":
            c2.close()
            assert srv.portier.wait_log(r"event=redis_down server=127\.0\.0\.1:%d error=\"timeout\""
                                  % r.port, timeout=10)
        else:
            srv.portier.signal(signal.SIGTERM)
            assert srv.portier.wait(20) == 0, srv.portier.log_text()[-3000:]
    finally:
        r.resume()
    if interruption == "client_leaves":
        time.sleep(1.2)
        c = tls_session(srv, client, certs, "submission")
        auth_plain(c, ALICE, ALICE_PW)


# ---------------------------------------------------------------------------------------------
# real clients
# ---------------------------------------------------------------------------------------------

def session_over(p, pattern):
    """The session that logged `pattern` (its first match) has ended: waits for that session's
    event=disconnect line and returns how many transactions it counted.  A session without a
    transaction has no event=txn line; its disconnect says portier is done with it."""
    m = p.wait_log(r"\bid=(\S+) " + pattern)
    assert m, "no %r in portier's log:\n%s" % (pattern, p.log_text()[-5000:])
    d = p.wait_log(r"\bid=%s event=disconnect .*\btransactions=(\d+)" % re.escape(m.group(1)))
    assert d, "session %s did not end:\n%s" % (m.group(1), p.log_text()[-5000:])
    return int(d.group(1))


def swaks(port, *args):
    argv = [peers.SWAKS, "--server", "127.0.0.1:%d" % port, "--timeout", "20"] + list(args)
    p = peers.run(argv, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth(tls_server, certs, mech):
    """swaks --tls --auth MECH to the submission listener: the message arrives from the login
    to a foreign recipient; Received says ESMTPSA under TLSv1.3."""
    srv = sub_server(tls_server)
    marker = peers.unique_id("swaks")
    rc, out = swaks(srv.port, "--tls", "--tls-verify", "--tls-ca-path", certs.ca,
                    "--tls-sni", "localhost", "--auth", mech, "--auth-user", ALICE,
                    "--auth-password", ALICE_PW, "--from", ALICE, "--to", "x@foreign.test",
                    "--helo", "swaks.test", "--header", "From: Alice <%s>" % ALICE,
                    "--header", "Subject: " + marker)
    assert rc == 0, out
    assert "235 2.7.0" in out, out
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1, out
    m = msgs[0]
    assert m.rcpts == ["x@foreign.test"] and m.mail_from == ALICE
    assert marker.encode() in m.content
    check_tls_received(m.portier_received()[0], proto="ESMTPSA", helo="swaks.test")


def test_swaks_implicit_auth(tls_server, certs):
    """swaks --tlsc (implicit TLS) --auth to the submissions listener."""
    srv = sub_server(tls_server)
    rc, out = swaks(srv.subs, "--tlsc", "--tls-verify", "--tls-ca-path", certs.ca,
                    "--tls-sni", "localhost", "--auth", "PLAIN", "--auth-user", BOB,
                    "--auth-password", BOB_PW, "--from", BOB, "--to", "y@foreign.test",
                    "--header", "From: <%s>" % BOB)
    assert rc == 0, out
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].rcpts == ["y@foreign.test"], out
    check_tls_received(msgs[0].portier_received()[0], proto="ESMTPSA")


def test_swaks_wrong_password(tls_server, certs):
    """swaks with a wrong password fails at AUTH with 535 5.7.8; nothing is delivered."""
    srv = sub_server(tls_server)
    rc, out = swaks(srv.subs, "--tlsc", "--tls-verify", "--tls-ca-path", certs.ca,
                    "--tls-sni", "localhost", "--auth", "LOGIN", "--auth-user", ALICE,
                    "--auth-password", "nope", "--from", ALICE, "--to", "y@foreign.test")
    assert rc != 0, out
    assert "535 5.7.8" in out, out
    assert session_over(srv.portier, r"event=auth result=failed ") == 0
    srv.sink.assert_nothing(portier=srv.portier, txns=0)


def msmtp_send(tmpdir, port, certs, starttls_on, user, password, rcpt, msg, auth="on"):
    rc_path = os.path.join(tmpdir, "msmtprc")
    write_file(rc_path, "\n".join([
        "defaults",
        "syslog off",
        "account test",
        "host 127.0.0.1",
        "port %d" % port,
        "domain msmtp.test",
        "from %s" % user,
        "tls on",
        "tls_starttls %s" % ("on" if starttls_on else "off"),
        "tls_trust_file %s" % certs.ca,
        "tls_host_override localhost",
        "auth %s" % auth,
        "user %s" % user,
        "password %s" % password,
        "timeout 20",
        "",
    ]), mode=0o600)
    p = peers.run([MSMTP, "-C", rc_path, "-a", "test", "-v", rcpt], timeout=60, stdin=None,
                  input=msg)
    return p.returncode, p.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("mode", MODES)
def test_msmtp(tls_server, certs, tmpdir_0755, mode):
    """msmtp (tls on, tls_starttls on/off, auth on) sends a message that arrives at the sink,
    with ESMTPSA under TLS in Received."""
    srv = sub_server(tls_server)
    port = srv.port if mode == "submission" else srv.subs
    msg = make_message(frm=ALICE, to="z@foreign.test")
    rc, out = msmtp_send(tmpdir_0755, port, certs, mode == "submission", ALICE, ALICE_PW,
                         "z@foreign.test", msg)
    assert rc == 0, out
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1, out
    m = msgs[0]
    assert m.rcpts == ["z@foreign.test"] and m.mail_from == ALICE
    check_tls_received(m.portier_received()[0], proto="ESMTPSA", helo="msmtp.test")
    assert m.content.startswith(b"Authentication-Results: " + peers.HOSTNAME.encode()), m.content
    sent_head = msg.split(b"\r\n\r\n")[0].replace(b"\r\n", b"\n")
    assert sent_head in m.content, m.content


def test_msmtp_wrong_password(tls_server, certs, tmpdir_0755):
    """msmtp with a wrong password: fails, says 535, nothing delivered."""
    srv = sub_server(tls_server)
    rc, out = msmtp_send(tmpdir_0755, srv.port, certs, True, ALICE, "wrong", "z@foreign.test",
                         make_message(frm=ALICE))
    assert rc != 0, out
    assert "535" in out, out
    assert session_over(srv.portier, r"event=auth result=failed ") == 0
    srv.sink.assert_nothing(portier=srv.portier, txns=0)


@pytest.mark.parametrize("mode", MODES)
def test_smtplib(tls_server, certs, mode):
    """python smtplib: starttls() + login() on submission, SMTP_SSL + login() on submissions;
    send_message arrives."""
    srv = sub_server(tls_server)
    ctx = tls_context(certs)
    msg = EmailMessage()
    msg["From"] = "Bob <%s>" % BOB
    msg["To"] = "w@foreign.test"
    msg["Subject"] = peers.unique_id("smtplib")
    msg.set_content("hello from smtplib\n")
    if mode == "submission":
        s = smtplib.SMTP("127.0.0.1", srv.port, local_hostname="smtplib.test", timeout=20)
        s.ehlo()
        assert not s.has_extn("auth")
        # smtplib's starttls() checks the host name it connected to (127.0.0.1: in the SAN)
        s.starttls(context=ctx)
    else:
        s = smtplib.SMTP_SSL("127.0.0.1", srv.subs, local_hostname="smtplib.test", timeout=20,
                             context=ctx)
    try:
        s.ehlo()
        assert s.has_extn("auth") and set(s.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        code, text = s.login(BOB, BOB_PW)
        assert code == 235 and text.startswith(b"2.7.0"), (code, text)
        refused = s.send_message(msg)
        assert refused == {}
    finally:
        try:
            s.quit()
        except (smtplib.SMTPServerDisconnected, ssl.SSLError, OSError):
            pass
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].rcpts == ["w@foreign.test"]
    check_tls_received(msgs[0].portier_received()[0], proto="ESMTPSA", helo="smtplib.test")


def test_smtplib_login_failure(tls_server, certs):
    """smtplib.login with a wrong password raises SMTPAuthenticationError(535)."""
    srv = sub_server(tls_server)
    with smtplib.SMTP_SSL("127.0.0.1", srv.subs, timeout=20, context=tls_context(certs)) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(ALICE, "wrong")
        assert e.value.smtp_code == 535


# ---------------------------------------------------------------------------------------------
# who may send as whom
# ---------------------------------------------------------------------------------------------

def authed(srv, client, certs, user=ALICE, password=ALICE_PW, mode="submissions"):
    c = tls_session(srv, client, certs, mode)
    auth_plain(c, user, password)
    return c


def test_sender_without_map(tls_server, client, certs):
    """No sender_login_map: login alice@example.test owns exactly that address (domain
    case-insensitive) and <>; MAIL FROM:<bob@example.test> -> 553 5.7.1, the session goes on."""
    srv = sub_server(tls_server)
    c = authed(srv, client, certs)
    c.cmd("MAIL FROM:<%s>" % BOB, expect="553 5.7.1")
    c.cmd("MAIL FROM:<alice@other.test>", expect="553 5.7.1")
    c.cmd("MAIL FROM:<alice@example.test.evil.test>", expect="553 5.7.1")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("MAIL FROM:<alice@EXAMPLE.TEST>", expect="250 2.1.0")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("MAIL FROM:<>", expect="250 2.1.0")
    c.cmd("RCPT TO:<x@foreign.test>", expect="250 2.1.5")
    c.send_message(make_message(frm=ALICE), expect="250")
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].mail_from == ""


def test_sender_with_map(tls_server, client, certs, users_file, aux_file):
    """sender_login_map 'alice@example.test alice@example.test, @alias.test': alice may use
    x@alias.test (any local part), not x@other.test nor x@sub.alias.test; bob, not in the map,
    owns nothing (not even his own address)."""
    mp = aux_file("senders", "# login  addresses\nalice@example.test alice@example.test, @alias.test\n")
    srv = sub_server(tls_server, auth={"passwd_file": users_file(), "sender_login_map": mp,
                                       "max_failures": 100})
    c = authed(srv, client, certs)
    c.cmd("MAIL FROM:<x@alias.test>", expect="250 2.1.0")
    c.cmd("RSET", expect="250 2.0.0")
    c.cmd("MAIL FROM:<x@other.test>", expect="553 5.7.1")
    c.cmd("MAIL FROM:<x@sub.alias.test>", expect="553 5.7.1")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("RCPT TO:<r@foreign.test>", expect="250 2.1.5")
    c.send_message(make_message(frm=ALICE), expect="250")
    c2 = authed(srv, client, certs, BOB, BOB_PW)
    c2.cmd("MAIL FROM:<%s>" % BOB, expect="553 5.7.1")
    c2.cmd("MAIL FROM:<>", expect="250 2.1.0")
    msgs = srv.sink.wait_messages(1)
    assert len(msgs) == 1 and msgs[0].mail_from == ALICE


def test_sender_map_alias_sends(tls_server, client, certs, users_file, aux_file):
    """A message from an @alias.test address, From: header at the same alias, is delivered."""
    mp = aux_file("senders", "alice@example.test alice@example.test, @alias.test\n")
    srv = sub_server(tls_server, auth={"passwd_file": users_file(), "sender_login_map": mp})
    c = authed(srv, client, certs)
    msg = make_message(frm="team@alias.test")
    send_ok(c, "team@alias.test", ["r@foreign.test"], msg)
    m = srv.sink.wait_messages(1)[0]
    assert m.mail_from == "team@alias.test"


@pytest.mark.parametrize("from_header", [
    "Bob <bob@example.test>",
    "bob@example.test",
    "Alice <alice@example.test>, Bob <bob@example.test>",
    "\"alice@example.test\" <bob@example.test>",
], ids=["bob-display", "bob-bare", "two-mailboxes", "quoted-decoy"])
def test_from_header_not_owned(tls_server, client, certs, from_header):
    """MAIL FROM is alice's own, but the From: header names someone else: 553 5.7.1 after the
    final dot, the backend gets nothing, the session goes on."""
    srv = sub_server(tls_server)
    c = authed(srv, client, certs)
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("RCPT TO:<r@foreign.test>", expect="250 2.1.5")
    marker = peers.unique_id("fromhdr")
    msg = make_message(subject=marker, frm="placeholder@x.test").replace(
        b"From: <placeholder@x.test>", ("From: %s" % from_header).encode())
    c.send_message(msg, expect="553 5.7.1")
    c.cmd("NOOP", expect="250 2.0.0")
    srv.sink.assert_nothing(marker=marker, portier=srv.portier, txns=1)    # rejected


@pytest.mark.parametrize("from_header", [
    "Alice Example <alice@example.test>",
    "\"Example, Alice\" <alice@example.test>",
    "alice@example.test",
    "=?utf-8?q?Al=C3=AFce?= <alice@EXAMPLE.test>",
], ids=["display", "quoted-comma", "bare", "encoded-word"])
def test_from_header_owned(tls_server, client, certs, from_header):
    """An owned From: (with a display name, quoted, bare) passes and is delivered unchanged."""
    srv = sub_server(tls_server)
    c = authed(srv, client, certs)
    msg = make_message(frm="placeholder@x.test").replace(
        b"From: <placeholder@x.test>", ("From: %s" % from_header).encode())
    send_ok(c, ALICE, ["r@foreign.test"], msg)
    m = srv.sink.wait_messages(1)[0]
    assert ("From: %s" % from_header).encode() in m.content, m.content[:500]


# ---------------------------------------------------------------------------------------------
# the credential check as a wait point (see test_waits.py for the backend's)
# ---------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["eof", "flood", "sigterm", "sighup"])
def test_auth_wait_interrupted(tls_server, client, certs, dovecot_auth, how):
    """AUTH waits on a frozen Dovecot (SIGSTOP) while the client leaves, floods, or portier
    drains or reloads.  EOF: the late verdict finds no session and is dropped.  Flood: 421 4.7.0
    at once and no 235 after it.  SIGTERM: the waiting session is spared until Dovecot answers,
    gets its 235, then 421 4.3.2, and portier exits 0.  SIGHUP: the session goes on (235, then
    mail is accepted).  Nothing is read after it is freed (ASan)."""
    dv = dovecot_auth()
    srv = sub_server(tls_server, auth={"dovecot": "unix:%s" % dv.socket, "max_failures": 100},
                     server={"max_pipelined": "5", "drain_timeout": "1"})
    p = srv.portier
    c = tls_session(srv, client, certs, "submissions")
    os.killpg(dv.pid, signal.SIGSTOP)
    try:
        c.sendline("AUTH PLAIN " + plain_b64(ALICE, ALICE_PW))
        time.sleep(0.5)                 # the worker now waits on the frozen Dovecot
        if how == "eof":
            c.close()
            p.wait_log(r"event=disconnect client=127\.0\.0\.1 transactions=0")
        elif how == "flood":
            c.send(b"NOOP\r\n" * 20)
            replies, closed = c.replies_until_closed(5)
            assert [(r.code, r.enhanced) for r in replies] == [(421, "4.7.0")], replies
            assert closed
        elif how == "sigterm":
            p.signal(signal.SIGTERM)
            time.sleep(1.5)             # the drain deadline passed: the session is spared
        else:
            p.reload(p.config_template)
            time.sleep(0.3)
    finally:
        os.killpg(dv.pid, signal.SIGCONT)
    if how == "sigterm":
        replies, closed = c.replies_until_closed(12)
        assert [(r.code, r.enhanced) for r in replies] == [(235, "2.7.0"), (421, "4.3.2")], \
            replies
        assert p.wait(10) == 0, p.log_text()
    elif how == "sighup":
        peers.expect_reply(c.read_reply(timeout=12), "235 2.7.0", "AUTH after SIGHUP")
        send_ok(c, ALICE, ["x@foreign.test"], make_message(frm=ALICE))
    else:
        # The verdict comes back to nobody; portier still serves.
        time.sleep(1)
        c2 = tls_session(srv, client, certs, "submissions")
        auth_plain(c2, ALICE, ALICE_PW)

"""Header integrity: what portier's checks and filters take for the header block is exactly
what the backend gets as the header block.

- The obsolete field syntax "name WSP* :" (RFC 5322 4.5.8), which backends accept, names the
  same field as "name:": a submission's From: check and the removal of forged
  Authentication-Results see it; it reaches the backend as "name:".
- The whole block is parsed, however long, up to max_header_size (also past the part of a
  message held in memory, and past 256 KiB); beyond it: 552 5.3.4 and nothing is delivered.
- A line that is neither a field nor a folded continuation ends the block, and the backend
  gets the empty separator line inserted before it (Postfix's cleanup does the same), so it
  and what follows are body for every backend.

Backend: smtp-sink (the stored message is compared byte for byte, LF line ends).
"""
import os
import re

import pytest

import peers
from peers import HOSTNAME
from tlsauth import (certs, users_file, tls_server, ALICE, tls_context,  # noqa: F401
                     wrap_implicit, auth_plain, ALICE_PW)

SUBS = {"subs": {"role": "submissions"}}
SPOOLS = {"memory": None, "file": "0"}       # spool_memory: default 1m, or a file at once


def lf(b):
    return b.replace(b"\r\n", b"\n")


def pad_lines(size, tag="Pad"):
    """Header fields of exactly size octets (CRLF included), lines well under 1000 octets."""
    out = []
    left = size
    i = 0
    while left > 0:
        n = left if left <= 950 else 900
        name = ("X-%s-%05d: " % (tag, i)).encode()
        assert n >= len(name) + 3, "pad_lines: %d octets left, too few for a field" % n
        out.append(name + b"x" * (n - len(name) - 2) + b"\r\n")
        left -= n
        i += 1
    return b"".join(out)


def message(fields, body=b"Hello.\r\n", marker=None):
    """Header fields (bytes, CRLF lines), the empty line, the body."""
    if marker is not None:
        fields = b"Subject: " + marker.encode() + b"\r\n" + fields
    return fields + b"\r\n" + body


def deliver(p, s, client, msg, expect="250"):
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], msg, expect=expect)
    return c


def stored_one(s):
    msgs = s.wait_messages(1)
    assert len(msgs) == 1, msgs
    return msgs[0]


def alice_session(tls_server, client, certs):
    """A submissions listener and a session authenticated as alice: (server, client)."""
    srv = tls_server(listener={"role": "submission", "tls": "starttls"}, listeners=SUBS,
                     auth="default")
    c = wrap_implicit(client(srv.subs), tls_context(certs))
    c.start()
    auth_plain(c, ALICE, ALICE_PW)
    return srv, c


def wait_txn(p, mark, result):
    """The summary line of the transaction, logged after mark (offset in the log)."""
    m = p.wait_log(r"event=txn .*result=%s" % result, after=mark, timeout=10)
    assert m, "no event=txn result=%s in the log:\n%s" % (result, p.log_text()[mark:])
    return m


# ---------------------------------------------------------------------------------------------
# obsolete "name WSP* :" fields
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    b"From : ceo@bank.example\r\n",
    b"From\t: CEO <ceo@bank.example>\r\n",
    b"from \t \t: ceo@bank.example\r\n",
    b"From: Alice <alice@example.test>\r\nFrom : ceo@bank.example\r\n",
    b"From: Alice <alice@example.test>\r\nX-A: 1\r\n folded\r\nFROM  :\r\n ceo@bank.example\r\n",
], ids=["space", "tab", "mixed-lower", "second-from", "folded-after-fold"])
def test_obs_from_not_owned(tls_server, client, certs, fields):
    """An authenticated alice sending "From : ceo@bank.example" (whitespace before the colon,
    which backends take as From:) is refused like a plain From: ceo@bank.example: 553 5.7.1
    after the dot, nothing reaches the backend, the session goes on."""
    srv, c = alice_session(tls_server, client, certs)
    marker = peers.unique_id("obsfrom")
    c.cmd("MAIL FROM:<%s>" % ALICE, expect="250 2.1.0")
    c.cmd("RCPT TO:<r@foreign.test>", expect="250 2.1.5")
    c.send_message(message(fields + b"To: <r@foreign.test>\r\n", marker=marker),
                   expect="553 5.7.1")
    c.cmd("NOOP", expect="250 2.0.0")
    srv.sink.assert_nothing(marker=marker, portier=srv.portier, txns=1)    # rejected


@pytest.mark.parametrize("spool", list(SPOOLS), ids=list(SPOOLS))
def test_obs_forged_results_removed(make_pair, client, spool):
    """Authentication-Results with whitespace before the colon claiming portier's hostname are
    forged and removed before the backend, like the plain ones; another authserv-id's results
    stay.  Obsolete names reach the backend as "name:", nothing else changes."""
    p, s = make_pair(server={"spool_memory": SPOOLS[spool]})
    marker = peers.unique_id("obsar")
    fields = (b"Authentication-Results : " + HOSTNAME.encode() + b"; dkim=pass\r\n"
              b"From: <sender@origin.test>\r\n"
              b"Authentication-Results\t:\r\n\t" + HOSTNAME.upper().encode() + b"; spf=pass\r\n"
              b"Authentication-Results  : other.test; dkim=pass\r\n"
              b"To : <alice@example.test>\r\n")
    deliver(p, s, client, message(fields, marker=marker))
    m = stored_one(s)
    want = lf(message(b"From: <sender@origin.test>\r\n"
                      b"Authentication-Results: other.test; dkim=pass\r\n"
                      b"To: <alice@example.test>\r\n", marker=marker))
    assert m.content == want, m.content


def test_forged_results_past_300k_removed(make_pair, client):
    """A forged Authentication-Results after 300 KiB of other fields (the message in a spool
    file) is found and removed: the whole block is parsed, not a first slice of it; every
    other octet reaches the backend unchanged."""
    p, s = make_pair(server={"spool_memory": "65536"})
    marker = peers.unique_id("deepar")
    filler = pad_lines(300 * 1024 + 17)
    forged = (b"Authentication-Results: " + HOSTNAME.encode()
              + b"; dkim=pass header.d=bank.example\r\n")
    tail = b"From: <sender@origin.test>\r\nTo: <alice@example.test>\r\n"
    deliver(p, s, client, message(filler + forged + tail, marker=marker))
    m = stored_one(s)
    assert m.content == lf(message(filler + tail, marker=marker)), m.content[-2000:]


# ---------------------------------------------------------------------------------------------
# max_header_size
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spool", list(SPOOLS), ids=list(SPOOLS))
def test_header_size_limit(make_pair, client, spool):
    """max_header_size = 65536 (on the listener): a header block of exactly 65536 octets (the
    empty line after it not counted) is delivered unchanged; one octet more gets 552 5.3.4,
    the transaction is logged rejected, nothing reaches the backend, and the session goes on."""
    p, s = make_pair(server={"spool_memory": SPOOLS[spool]},
                     listener={"max_header_size": "64k"})
    c = client(p.port)
    c.start()
    marker = peers.unique_id("hdrbig")
    head = b"Subject: " + marker.encode() + b"\r\n"
    mark = len(p.log_text())
    over = message(head + pad_lines(65536 + 1 - len(head)))
    c.transaction("sender@origin.test", ["alice@example.test"], over, expect="552 5.3.4")
    wait_txn(p, mark, "rejected")
    s.assert_nothing(marker=marker, portier=p, txns=1)
    c.cmd("NOOP", expect="250 2.0.0")

    ok_marker = peers.unique_id("hdrok")
    head = b"Subject: " + ok_marker.encode() + b"\r\n"
    exact = message(head + pad_lines(65536 - len(head)), body=b"body\r\n")
    c.transaction("sender@origin.test", ["alice@example.test"], exact)
    m = stored_one(s)
    assert m.content == lf(exact)


def test_header_size_default(make_pair, client):
    """Without max_header_size the limit is 1 MiB: a block of 1 MiB + 1 octet is refused."""
    p, s = make_pair(server={"spool_memory": "65536"})
    marker = peers.unique_id("hdrdef")
    head = b"Subject: " + marker.encode() + b"\r\n"
    mark = len(p.log_text())
    deliver(p, s, client, message(head + pad_lines(1048576 + 1 - len(head))),
            expect="552 5.3.4")
    wait_txn(p, mark, "rejected")
    s.assert_nothing(marker=marker, portier=p, txns=1)


@pytest.mark.parametrize("value,error", [
    ("1k", None), ("1g", None),
    ("1023", "1023 is out of range; use 1024 to 1073741824"),
    ("2g", "2g is out of range; use 1024 to 1073741824"),
    ("lots", "\"lots\" is not a number"),
])
def test_header_size_checked(portier_bin, tmpdir_0755, value, error):
    """portier -t accepts max_header_size from 1k to 1g, in [server] and in a [listener], and
    says what is wrong with anything else."""
    for where in ("server", "listener"):
        cfg = peers.portier_config(**{where: {"max_header_size": value}})
        path = os.path.join(tmpdir_0755, "portier.conf")
        with open(path, "w") as f:
            f.write(cfg.replace("{port}", "2525"))
        rc, out = peers.run_portier_check(path)
        if error is None:
            assert rc == 0, out
        else:
            assert rc == 2 and re.search(r"\[%s(?: mx)?\] max_header_size: %s" % (
                where, re.escape(error)), out), out


# ---------------------------------------------------------------------------------------------
# a line that is no field ends the block
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"this is not a header",
    b": starts with a colon",
    b"Two words: a name with a space",
    b"Fr\xc3\xb6m: an 8-bit name",
    b"no-colon-at-all",
], ids=["words", "colon-first", "space-in-name", "8bit-name", "no-colon"])
def test_malformed_line_gets_separator(make_pair, client, line):
    """A line that is neither "name:" / "name WSP* :" nor a continuation ends the header block:
    the backend receives the empty line inserted before it, so it and the lines after it
    (even one that looks like a field) are body, as portier's checks took them."""
    p, s = make_pair()
    marker = peers.unique_id("garbage")
    head = b"Subject: " + marker.encode() + b"\r\nFrom: <sender@origin.test>\r\n"
    rest = line + b"\r\nX-After: 1\r\n\r\nbody\r\n"
    deliver(p, s, client, head + rest)
    m = stored_one(s)
    assert m.content == lf(head + b"\r\n" + rest), m.content


def test_leading_continuation_gets_separator(make_pair, client):
    """A message whose first line starts with white space has no field to continue: the block
    is empty and the backend gets the empty line first, so the line cannot fold into
    portier's own Received header."""
    p, s = make_pair()
    marker = peers.unique_id("lead")
    msg = b" folded " + marker.encode() + b"\r\nFrom: <sender@origin.test>\r\n\r\nbody\r\n"
    deliver(p, s, client, msg)
    m = stored_one(s)
    assert len(m.portier_received()) == 1 and marker not in m.portier_received()[0], m.headers
    assert m.content == lf(b"\r\n" + msg), m.content


def test_from_after_malformed_line_is_body(tls_server, client, certs):
    """On submission, a From: after a malformed line is body for the From: check and for the
    backend alike: the message is delivered with the separator before the malformed line."""
    srv, c = alice_session(tls_server, client, certs)
    marker = peers.unique_id("bodyfrom")
    head = b"Subject: " + marker.encode() + b"\r\nFrom: <" + ALICE.encode() + b">\r\n"
    rest = b"not a header\r\nFrom: ceo@bank.example\r\n\r\nbody\r\n"
    c.transaction(ALICE, ["r@foreign.test"], head + rest)
    m = stored_one(srv.sink)
    ours, content = peers.strip_trace(m.content, b"\n", ("authentication-results",))
    assert len(ours) == 1 and "auth=pass" in ours[0], ours
    assert content == lf(head + b"\r\n" + rest), m.content

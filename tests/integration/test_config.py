"""Configuration check (-t) and privilege drop."""
import os
import re

import pytest

import peers


def test_check_accepts_valid_config(portier_bin, tmpdir_0755):
    """`portier -t -c FILE` exits 0 on a valid config (and does not start serving)."""
    path = os.path.join(tmpdir_0755, "ok.conf")
    with open(path, "w") as f:
        f.write(peers.portier_config("smtp:127.0.0.1:%d" % peers.free_port())
                .replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    assert rc == 0, out


def test_check_reports_each_error_with_file_line_section_key(portier_bin, tmpdir_0755):
    """-t exits 2 and prints one 'FILE:LINE: [section] key: message' line per error, each naming
    the right line, section and key."""
    path = os.path.join(tmpdir_0755, "bad.conf")
    text = "\n".join([
        "[server]",                         # 1
        "hostname = mx.example.test",       # 2
        "user = nobody",                    # 3
        "max_recipients = lots",            # 4  error: not a number
        "local_domains = example.test",     # 5
        "",                                 # 6
        "[listener mx]",                    # 7
        "listen = 127.0.0.1:2525",          # 8
        "role = postmaster",                # 9  error: not mx|submission|submissions
        "tls = none",                       # 10
        "",                                 # 11
        "[backend]",                        # 12
        "relay = carrier-pigeon:somewhere", # 13 error: unknown relay kind
        "",
    ])
    with open(path, "w") as f:
        f.write(text)
    rc, out = peers.run_portier_check(path)
    assert rc == 2, out
    err_lines = [l for l in out.splitlines() if l.startswith(path + ":")]
    assert len(err_lines) == 3, "expected exactly 3 error lines:\n" + out
    want = [
        (4, r"\[server\] max_recipients: \S"),
        (9, r"\[listener(?: mx)?\] role: \S"),
        (13, r"\[backend\] relay: \S"),
    ]
    for line_no, rx in want:
        pat = re.compile("^" + re.escape("%s:%d: " % (path, line_no)) + rx)
        assert any(pat.match(l) for l in err_lines), "no error line for line %d:\n%s" % (line_no, out)


def _check_text(tmpdir, text, name="t.conf"):
    """Write text (with {port} filled in) and run `portier -t -c` on it: (path, rc, output)."""
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(peers.free_port())))
    rc, out = peers.run_portier_check(path)
    return path, rc, out


def _line_of(text, needle):
    """1-based number of the first line of text that starts with needle."""
    return next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith(needle))


@pytest.mark.parametrize("section,key,value", [
    ("server", "metrics", "127.0.0.1:9125"),
    ("redis", "tls", "yes"),
])
def test_check_refuses_keys_not_implemented(portier_bin, tmpdir_0755, section, key, value):
    """A key whose feature is not built yet never loads silently: -t exits 2 with
    'FILE:LINE: [section] key: not implemented yet' on the key's own line ([redis] tls: Debian
    12's hiredis has no TLS)."""
    kw = {}
    extra = ""
    if section == "server":
        kw["server"] = {key: value}
    elif section == "listener":
        kw["listener"] = {key: value}
    else:
        extra = "[redis]\n%s = %s\n" % (key, value)
    text = peers.portier_config(**kw, extra=extra)
    path, rc, out = _check_text(tmpdir_0755, text)
    assert rc == 2, (rc, out)
    label = "[listener mx]" if section == "listener" else "[%s]" % section
    line = _line_of(text, "%s = " % key) if section != "redis" else len(text.splitlines())
    want = "%s:%d: %s %s: not implemented yet" % (path, line, label, key)
    assert want in out, "want %r in:\n%s" % (want, out)
    assert len(out.strip().splitlines()) == 1, out


def test_check_accepts_defaults_of_keys_not_implemented(portier_bin, tmpdir_0755):
    """The defaults of those keys are what portier does, so they load: proxy_protocol = no,
    empty proxy_trusted and metrics, an empty [redis] section."""
    text = peers.portier_config(server={"metrics": ""},
                                listener={"proxy_protocol": "no", "proxy_trusted": ""},
                                extra="[redis]\n")
    path, rc, out = _check_text(tmpdir_0755, text)
    assert rc == 0, out


def test_check_refuses_submission_without_tls(portier_bin, tmpdir_0755):
    """role submission with tls = none could never authenticate anybody (AUTH is offered only
    under TLS): -t exits 2 and says to set tls = starttls."""
    text = peers.portier_config(listener={"role": "submission", "tls": "none"},
                                extra="[auth]\npasswd_file = /nonexistent/passwd\n")
    path, rc, out = _check_text(tmpdir_0755, text)
    assert rc == 2, (rc, out)
    want = "%s:%d: [listener mx] tls: role submission offers AUTH only under TLS" % (
        path, _line_of(text, "tls = none"))
    assert want in out, "want %r in:\n%s" % (want, out)
    assert "tls = starttls" in out, out


def test_check_missing_file_is_an_error(portier_bin, tmpdir_0755):
    """-t on a file that does not exist exits 2 and names the file."""
    path = os.path.join(tmpdir_0755, "does-not-exist.conf")
    rc, out = peers.run_portier_check(path)
    assert rc == 2, out
    assert path in out, out


def test_drops_privileges_in_every_thread(relay_pair):
    """Started as root with user = nobody, every thread of the serving process runs with
    uid nobody (real, effective, saved, fs), a non-root gid and no root supplementary group."""
    p, s = relay_pair
    nobody = peers.NOBODY
    tasks = p.uid_lines()
    assert tasks, "no /proc/%d/task entries" % p.pid
    for tid, (uid, gid) in tasks.items():
        assert uid[0] == str(nobody.pw_uid) and uid[1] == str(nobody.pw_uid), \
            "thread %s real/effective uid %r" % (tid, uid)
        assert all(u == str(nobody.pw_uid) for u in uid), "thread %s uid line %r" % (tid, uid)
        assert all(g != "0" for g in gid), "thread %s still has gid 0: %r" % (tid, gid)
    with open("/proc/%d/status" % p.pid) as f:
        groups = re.search(r"^Groups:\s*(.*)$", f.read(), re.M).group(1).split()
    assert "0" not in groups, "supplementary groups still include root: %r" % groups


def test_never_serves_as_root(portier_bin, tmpdir_0755, sink):
    """Without `user =`, portier started as root either refuses to start (non-zero exit) or
    serves as a non-root user; it never serves as root."""
    s = sink()
    port = peers.free_port()
    text = peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={"user": None})
    path = os.path.join(tmpdir_0755, "noroot.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(port)))
    proc = peers.Process("portier", [portier_bin, "-c", path],
                         os.path.join(tmpdir_0755, "portier.log"), cwd=tmpdir_0755)
    try:
        serving = peers.wait_until(lambda: not proc.alive() or peers.port_accepts(port), 10)
        assert serving, "neither exited nor listened within 10 s"
        if not proc.alive():
            assert proc.returncode() != 0, "exited 0 instead of refusing to run as root"
            return
        with open("/proc/%d/status" % proc.pid) as f:
            uid = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
        assert "0" not in uid, "serving as root: Uid %r" % uid
    finally:
        proc.stop()

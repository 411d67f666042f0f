"""The process: SIGTERM (idle, draining, drain timeout), SIGHUP reload, logging; and how the
README starts it: the paths it shows exist, the scripts install what they tell you to run."""
import os
import re
import signal
import subprocess
import time

import peers
from peers import make_message


def test_sigterm_idle_exits_0_quickly(relay_pair):
    """SIGTERM with no session open: exit status 0 within 3 s, and the port is closed."""
    p, s = relay_pair
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(10)
    assert rc == 0, "exit status %r\n%s" % (rc, p.log_text())
    assert time.monotonic() - t0 < 3.0
    assert not peers.port_accepts(p.port)


def test_sigterm_drains_open_session(make_pair, client):
    """SIGTERM during an open session: the listeners close (a new connection is refused), the
    open session still finishes its message (delivered, 250) and QUIT, then portier exits 0."""
    p, s = make_pair(server={"drain_timeout": 10})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    p.signal(signal.SIGTERM)
    assert peers.wait_until(lambda: not peers.port_accepts(p.port), 5, interval=0.2), \
        "new connections still accepted after SIGTERM"
    msg = make_message()
    c.send_message(msg, expect="250")
    c.cmd("QUIT", expect="221 2.0.0")
    rc = p.wait(8)
    assert rc == 0, "exit status %r after the drained session ended\n%s" % (rc, p.log_text())
    msgs = s.wait_messages(1)
    assert len(msgs) == 1
    peers.assert_same_message(msg, msgs[0].content)


def test_sigterm_idle_session_ended_at_once(make_pair, client):
    """SIGTERM with a session between transactions: it loses nothing, so it gets 421 4.3.2 at
    once (not after drain_timeout) and is closed; portier exits 0."""
    p, s = make_pair(server={"drain_timeout": 10})
    c = client(p.port)
    c.start()
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    peers.expect_reply(c.read_reply(timeout=5), "421 4.3.2", "reply to an idle session")
    assert time.monotonic() - t0 < 2, "the idle session waited %.1fs" % (time.monotonic() - t0)
    c.expect_closed()
    rc = p.wait(5)
    assert rc == 0, "exit status %r\n%s" % (rc, p.log_text())


def test_sigterm_drain_timeout(make_pair, client):
    """A session still in a transaction when drain_timeout (2 s) runs out gets 421 4.3.2 then
    and is closed; portier exits 0 right after."""
    p, s = make_pair(server={"drain_timeout": 2})
    c = client(p.port)
    c.start()
    c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    c.cmd("RCPT TO:<alice@example.test>", expect="250 2.1.5")
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    r = c.read_reply(timeout=8)
    elapsed = time.monotonic() - t0
    peers.expect_reply(r, "421 4.3.2", "reply when the drain timeout ends the session")
    assert 1.5 < elapsed < 4, "421 after %.1fs with drain_timeout = 2" % elapsed
    c.expect_closed()
    rc = p.wait(5)
    assert rc == 0, "exit status %r\n%s" % (rc, p.log_text())
    s.assert_nothing(portier=p)


def test_sighup_reload_applies_to_new_sessions_only(make_pair, client):
    """SIGHUP re-reads the config: new sessions get the new max_recipients, a session opened
    before keeps the old one, and nothing is dropped."""
    p, s = make_pair(server={"max_recipients": 2})
    old = client(p.port)
    old.start()
    old.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
    old.cmd("RCPT TO:<r1@example.test>", expect="250 2.1.5")
    log_mark = len(p.log_text())
    p.reload(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server={"max_recipients": 4}))

    def new_limit_seen():
        c = client(p.port)
        c.start()
        c.cmd("MAIL FROM:<sender@origin.test>", expect="250 2.1.0")
        n = 0
        for i in range(5):
            r = c.cmd("RCPT TO:<n%d@example.test>" % i)
            if r.code != 250:
                peers.expect_reply(r, "452 4.5.3")
                break
            n += 1
        c.quit()
        return n == 4
    assert peers.wait_until(new_limit_seen, 8, interval=0.3), \
        "new sessions do not see max_recipients = 4 after SIGHUP\n" + p.log_text()[log_mark:]
    old.cmd("RCPT TO:<r2@example.test>", expect="250 2.1.5")
    old.cmd("RCPT TO:<r3@example.test>", expect="452 4.5.3")
    old.send_message(make_message(), expect="250")
    old.quit()
    assert p.alive()



def test_debug_flag_logs_debug_lines(portier, sink, client):
    """-d turns on debug lines (level 'debug' in the log); the server works as usual."""
    s = sink()
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port), args=["-d"])
    c = client(p.port)
    c.start()
    c.transaction("sender@origin.test", ["alice@example.test"], make_message())
    c.quit()
    assert p.wait_log(r": debug: ", timeout=3), p.log_text()


SRC = os.environ.get("SRCDIR") or os.path.normpath(os.path.join(peers.HERE, "..", ".."))


def read_src(path):
    with open(os.path.join(SRC, path)) as f:
        return f.read()


def code_blocks(markdown):
    """The fenced code blocks of a Markdown text, each as a list of lines."""
    return [b.splitlines() for b in re.findall(r"^```[a-z]*\n(.*?)^```", markdown, re.M | re.S)]


def built_dirs():
    """The build directories the scripts make (mkdir, then configure and make in them)."""
    out = set()
    for name in os.listdir(os.path.join(SRC, "scripts")):
        out.update(re.findall(r"mkdir (?:-p )?(build[\w-]*)", read_src("scripts/" + name)))
    return out


def test_readme_commands_use_paths_that_exist(portier_bin):
    """Every portier command in the README names the binary where a build puts it (a build
    directory that a script or the README itself makes: builds are out of tree), and every
    -c FILE it passes exists from there; the default configuration it shows checks out."""
    readme = read_src("README.md")
    dirs = built_dirs()
    seen = 0
    for block in code_blocks(readme):
        cwd = ""
        for line in block:
            cmd = line.split("#")[0].strip()
            dirs.update(re.findall(r"mkdir (?:-p )?(build[\w-]*)", cmd))
            for part in re.split(r"&&|;", cmd):
                words = part.split()
                if words[:1] == ["cd"] and len(words) > 1:
                    cwd = os.path.normpath(os.path.join(cwd, words[1]))
                    continue
                if not words or not words[0].endswith("smtpd/portier"):
                    continue
                seen += 1
                binary = os.path.normpath(os.path.join(cwd, words[0]))
                assert binary.split(os.sep)[0] in dirs and binary.count(os.sep) == 2, \
                    "README runs %r (%s from the top): no build makes it there; builds go to " \
                    "%s" % (words[0], binary, sorted(dirs))
                if "-c" in words and words.index("-c") + 1 < len(words):
                    conf = words[words.index("-c") + 1]
                    if conf != "FILE":
                        path = os.path.normpath(os.path.join(cwd, conf))
                        assert os.path.exists(os.path.join(SRC, path)), \
                            "README: %r passes -c %s, missing from the top" % (line, path)
    assert seen, "the README shows no portier command"
    r = subprocess.run([portier_bin, "-t", "-c", "etc/portier.conf"], cwd=SRC,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    assert r.returncode == 0, r.stdout.decode()


def test_readme_points_into_the_repository():
    """The files the README refers to (links, paths in backquotes) are in the repository, and
    the documents among them are in the distribution tarball (EXTRA_DIST)."""
    readme = read_src("README.md")
    refs = set(re.findall(r"\]\(([^)#\s]+)\)", readme))
    refs.update(t for t in re.findall(r"`([^`\s]+)`", readme)
                if re.search(r"\.(md|[58]|conf|example|sh)$", t))
    assert refs, "no references found in the README"
    makefile = read_src("Makefile.am").replace("\\\n", " ")
    dist = set()
    for m in re.finditer(r"^(EXTRA_DIST|dist_man_MANS)\s*=(.*)$", makefile, re.M):
        dist.update(m.group(2).split())
    for ref in sorted(refs):
        path = os.path.normpath(ref)
        assert not path.startswith(".."), "README refers outside the repository: %s" % ref
        assert os.path.exists(os.path.join(SRC, path)), "README refers to a missing %s" % ref
        if path.endswith((".md", ".5", ".8")):
            assert path in dist, "%s is not distributed (EXTRA_DIST in Makefile.am)" % ref


def test_run_default_installs_what_it_tells_you_to_run():
    """scripts/run-default.sh ends by telling the newcomer to send mail with swaks or python3:
    the packages it has scripts/install-deps.sh install (in its mode) include them."""
    script = read_src("scripts/run-default.sh")
    mode = re.search(r"^sh scripts/install-deps\.sh\b([^\n#]*)", script, re.M)
    assert mode, "run-default.sh does not run scripts/install-deps.sh"
    message = script[script.index("<<MSG"):script.index("\nMSG\n")]
    commands = {l.split()[0] for l in message.splitlines()[1:] if l.startswith("  ")}
    assert {"swaks", "python3"} <= commands, commands
    r = subprocess.run(["sh", "scripts/install-deps.sh", "--list"] + mode.group(1).split(),
                       cwd=SRC, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    listed = set(r.stdout.decode().split())
    # Here each command is named like the Debian package that has it.
    assert commands <= listed, "run-default.sh suggests %s; install-deps.sh%s installs %s" % (
        sorted(commands), mode.group(1), sorted(listed))


def test_sigterm_repeated_exits_0(relay_pair):
    """SIGTERM sent again and again while portier drains and tears down (an impatient init
    script): it still exits 0, never killed by a later SIGTERM during its own exit."""
    p, s = relay_pair
    c = peers.SmtpClient(p.port)
    c.start()
    p.signal(signal.SIGTERM)
    rc = None
    deadline = time.monotonic() + 10
    while rc is None and time.monotonic() < deadline:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        rc = p.wait(0.001)
    c.close()
    assert rc == 0, "exit status %r\n%s" % (rc, p.log_text()[-3000:])

"""conftest.py - fixtures shared by the integration tests.

Every fixture that starts a peer stops it by its PID in a finalizer and removes its temp dir
(kept when PORTIER_KEEP=1, or when the test failed and PORTIER_KEEP_FAILED=1).
A per-test wall-clock limit (SIGALRM; default 60 s, @pytest.mark.timeout(N) to change) turns a
hung server into a failure instead of a hung suite.

Factories (each returns a function):
  portier(config_text, **kw) -> peers.Portier        config_text may use {port} and {tmp}
  sink(args=(), lmtp=False)  -> peers.Sink           smtp-sink saving to $T/dump
  dovecot()                  -> peers.Dovecot
  minismtpd(**kw)            -> peers.MiniSmtpd
  client(port, **kw)         -> peers.SmtpClient     closed at the end of the test
"""
import os
import shutil
import signal

import pytest

import peers

DEFAULT_TIMEOUT = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): wall-clock limit for one test")


class HungTest(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("timeout")
    limit = int(m.args[0]) if m else DEFAULT_TIMEOUT

    def on_alarm(signum, frame):
        raise HungTest("test exceeded its %d s limit (a server or peer hung?)" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


def pytest_runtest_logreport(report):
    """Each failed phase, one line in $PORTIER_FAILED_LIST: run.py prints them last, below
    pytest's summary, whose messages (a server's whole log) can bury the names."""
    path = os.environ.get("PORTIER_FAILED_LIST")
    if path and report.failed:
        with open(path, "a") as f:
            f.write("%s %s\n" % (report.nodeid, report.when))


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


def _cleanup_dir(request, path):
    keep = os.environ.get("PORTIER_KEEP") == "1" or (
        os.environ.get("PORTIER_KEEP_FAILED") == "1" and _failed(request))
    if keep:
        print("kept %s" % path)
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def portier_bin():
    path = peers.portier_binary()
    if not path or not os.access(path, os.X_OK):
        pytest.fail("portier binary not found: PORTIER=%r (make check-integration sets it)" % path)
    return path


@pytest.fixture
def tmpdir_0755(request):
    d = peers.make_tempdir("test")
    request.addfinalizer(lambda: _cleanup_dir(request, d))
    return d


@pytest.fixture
def portier(request, portier_bin):
    """Start portier instances; each is stopped at the end, and a crash, a sanitizer report or a
    non-zero exit on SIGTERM fails the test."""
    started = []
    tmps = []

    def start(config_text, **kw):
        tmp = peers.make_tempdir("portier")
        tmps.append(tmp)                    # cleaned up even when the start fails
        p = peers.Portier(config_text, tmp=tmp, **kw)
        started.append(p)
        return p

    def fin():
        problems = []
        for p in started:
            crashed = p.returncode()
            was_stopped = p.stopped_by_us
            rc = p.stop()
            if crashed is not None and not was_stopped:
                problems.append("portier pid %d exited on its own with status %r" % (p.pid, crashed))
            elif crashed is None and rc != 0:
                problems.append("portier pid %d exited with status %r on SIGTERM" % (p.pid, rc))
            if p.sanitizer_report():
                problems.append("sanitizer report in portier's log")
            if problems and not problems[-1].startswith("log "):
                problems.append("log %s:\n%s" % (p.logfile, p.log_text()[-20000:]))
        for t in tmps:
            _cleanup_dir(request, t)
        if problems:
            pytest.fail("\n".join(problems))

    request.addfinalizer(fin)
    return start


def _peer_fixture(request, tag, cls):
    """A fixture's start(**kw) -> cls(tmp=<a temp dir>, **kw); each one started is stopped by its
    PID at the end and its temp dir removed."""
    started = []
    tmps = []

    def start(**kw):
        tmp = peers.make_tempdir(tag)
        tmps.append(tmp)
        p = cls(tmp=tmp, **kw)
        started.append(p)
        return p

    def fin():
        for p in started:
            p.stop()
        for t in tmps:
            _cleanup_dir(request, t)

    request.addfinalizer(fin)
    return start


@pytest.fixture
def sink(request):
    """sink(args=(...), lmtp=False, port=None) -> an smtp-sink (peers.Sink)."""
    return _peer_fixture(request, "sink", peers.Sink)


@pytest.fixture
def dovecot(request):
    return _peer_fixture(request, "dovecot", peers.Dovecot)


@pytest.fixture
def minismtpd(request):
    return _peer_fixture(request, "minismtpd", peers.MiniSmtpd)


@pytest.fixture
def unbound(request):
    """unbound(zones=[...], stall=[...]) -> a private DNS server (peers.Unbound)."""
    return _peer_fixture(request, "unbound", peers.Unbound)


@pytest.fixture
def redis(request):
    """redis(password=None) -> a private redis-server (peers.Redis); .server for [redis] server."""
    return _peer_fixture(request, "redis", peers.Redis)


@pytest.fixture
def client(request):
    opened = []

    def connect(port, **kw):
        c = peers.SmtpClient(port, **kw)
        opened.append(c)
        return c

    def fin():
        for c in opened:
            c.close()

    request.addfinalizer(fin)
    return connect


@pytest.fixture
def relay_pair(portier, sink):
    """The common setup: an smtp-sink and a portier relaying to it.  Returns (portier, sink).
    Use relay_pair_with(...) style by calling make_pair directly for other settings."""
    s = sink()
    p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port))
    return p, s


@pytest.fixture
def make_pair(portier, sink):
    """make_pair(server={...}, listener={...}, backend={...}, sink_args=(...)) -> (portier, sink)."""
    def make(server=None, listener=None, backend=None, sink_args=(), extra=""):
        s = sink(args=sink_args)
        p = portier(peers.portier_config("smtp:127.0.0.1:%d" % s.port, server=server,
                                         listener=listener, backend=backend, extra=extra))
        return p, s
    return make

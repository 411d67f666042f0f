"""milters.py - the milters the milter client's tests talk to (issue #11).

  TestMilter  tests/milters/testmilter, built with libmilter: what it does is chosen by the input
              (HELO names, local parts, X-Test-Milter: headers; tests/milters/README), and it logs
              every callback with the macros it was given
  RawMilter   tests/milters/rawmilter.py: a milter that misbehaves on purpose (garbage, a 4 GB
              length, an action it did not negotiate, silence, an old protocol version)

Both listen on 127.0.0.1 on a free port, in their own temp dir, and are stopped by their PID.
"""
import os
import re

import peers

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))


def testmilter_binary():
    """tests/milters/testmilter of the build under test (next to PORTIER's build)."""
    path = os.environ.get("TESTMILTER")
    if not path:
        portier = peers.portier_binary()
        path = os.path.join(os.path.dirname(os.path.dirname(portier)), "tests", "milters",
                            "testmilter")
    if not os.access(path, os.X_OK):
        raise peers.PeerError("testmilter not found at %r (set TESTMILTER=)" % path)
    return path


class TestMilter(peers.Process):
    """testmilter -p inet:PORT@127.0.0.1 -l LOG -n NAME [args]."""

    __test__ = False        # not a pytest class

    def __init__(self, name="tm", args=(), tmp=None):
        self.tmp = tmp or peers.make_tempdir("milter")
        self.port = peers.free_port()
        self.mname = name
        self.log = os.path.join(self.tmp, "calls.log")
        argv = [testmilter_binary(), "-p", "inet:%d@127.0.0.1" % self.port, "-l", self.log,
                "-n", name] + list(args)
        super().__init__("testmilter", argv, os.path.join(self.tmp, "testmilter.out"))
        if not peers.wait_until(lambda: peers.port_accepts(self.port), peers.START_DEADLINE):
            self.fail("does not accept on port %d" % self.port)

    def section(self, extra=None):
        """The [milter NAME] section that points portier here."""
        kv = {"socket": "inet:127.0.0.1:%d" % self.port}
        kv.update(extra or {})
        return "[milter %s]\n%s\n" % (self.mname, "".join("%s = %s\n" % i for i in kv.items()))

    def lines(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return [l.rstrip("\n") for l in f]
        except FileNotFoundError:
            return []

    def events(self, event):
        """The calls of one kind: [(args, {macro: value})]."""
        out = []
        for l in self.lines():
            m = re.match(r"^(\S+) (\S+)(.*?)(?: \|(.*))?$", l)
            if not m or m.group(1) != self.mname or m.group(2) != event:
                continue
            macros = dict(re.findall(r"(\S+?)=(\S*)", m.group(4) or ""))
            out.append((m.group(3).strip(), macros))
        return out

    def wait_event(self, event, n=1, timeout=10.0):
        got = peers.wait_until(lambda: len(self.events(event)) >= n, timeout)
        assert got, "testmilter %s: no %d x %s; calls:\n%s" % (self.mname, n, event,
                                                               "\n".join(self.lines()))
        return self.events(event)


class RawMilter(peers.Process):
    """rawmilter.py --mode MODE on a free port."""

    def __init__(self, mode, tmp=None):
        self.tmp = tmp or peers.make_tempdir("rawmilter")
        self.port = peers.free_port()
        self.log = os.path.join(self.tmp, "packets.log")
        argv = [peers.PYTHON, os.path.join(SRCDIR, "tests", "milters", "rawmilter.py"),
                "--port", str(self.port), "--mode", mode, "--log", self.log]
        super().__init__("rawmilter", argv, os.path.join(self.tmp, "rawmilter.out"))
        if not peers.wait_until(lambda: peers.port_accepts(self.port), peers.START_DEADLINE):
            self.fail("does not accept on port %d" % self.port)

    def section(self, name, extra=None):
        kv = {"socket": "inet:127.0.0.1:%d" % self.port}
        kv.update(extra or {})
        return "[milter %s]\n%s\n" % (name, "".join("%s = %s\n" % i for i in kv.items()))

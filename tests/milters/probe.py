#!/usr/bin/python3
"""probe.py - a minimal MTA side of the milter protocol (v6), to poke at a milter by hand.

A development tool for tests/milters/testmilter and rawmilter.py, NOT portier's milter client:
it connects, negotiates (offering actions 0x1ff and protocol 0x1fffff unless told otherwise,
then honouring the steps and no-reply bits the milter asked for), sends macros and
C/H/M/R/T/L/N/B/E (and U, A, K, Q on request) and prints every reply packet, one a line:
    <command sent> <reply code> <decoded data>
e.g.  "M y 553 5.1.8 sender refused by testmilter",  "E h X-Added: yes",  "E c".

    probe.py -c inet:PORT@127.0.0.1 --helo client.test --from '<a@x.test>' \
        --rcpt '<b@y.test>' --header 'X-Test-Milter: addheader X-A 1' --body 'hello\\n'

As a module: Probe(connspec).negotiate(); Probe.command('H', b'name\\0') -> [(code, data)...].
"""
import argparse
import socket
import struct
import sys

ACTIONS_ALL = 0x1ff
PROTO_ALL = 0x1fffff
NOT_FINAL = set(b"p+-2ebhimq")       # progress and modifications; any other reply ends a command
# step -> (SMFIP_NO* bit that skips it, SMFIP_NR_* bit that silences its reply)
STEPS = {
    "C": (0x1, 0x1000), "H": (0x2, 0x2000), "M": (0x4, 0x4000), "R": (0x8, 0x8000),
    "B": (0x10, 0x80000), "L": (0x20, 0x80), "N": (0x40, 0x40000), "U": (0x100, 0x20000),
    "T": (0x200, 0x10000), "E": (0, 0),
}
MACRO_STAGES = {"connect": "C", "helo": "H", "mail": "M", "rcpt": "R", "data": "T",
                "eoh": "N", "eom": "E"}


class ProbeClosed(Exception):
    """The milter closed the connection."""


def connect(spec, timeout):
    """A socket connected to a libmilter-style CONNSPEC: inet:PORT@HOST, inet6:PORT@HOST, unix:PATH."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(rest)
        return s
    port, _, host = rest.partition("@")
    host = (host or "127.0.0.1").strip("[]")
    family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, int(port)))
    return s


def cstr(*parts):
    """NUL-terminated strings back to back."""
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


def esc(b):
    """Bytes as one printable line: \\r \\n \\t and \\xNN escapes."""
    return "".join(chr(c) if 32 <= c < 127 and c != 92 else
                   {13: "\\r", 10: "\\n", 9: "\\t", 92: "\\\\"}.get(c, "\\x%02x" % c) for c in b)


def show(code, data):
    """A reply packet as one readable line (code, then decoded data)."""
    c = chr(code)
    if c in "h2e+-q":
        fields = [esc(f) for f in data.split(b"\0")[:-1]]
        if c == "h":
            return "h %s: %s" % (fields[0], fields[1] if len(fields) > 1 else "")
        return "%s %s" % (c, " ".join(fields))
    if c in "im":
        idx = struct.unpack(">I", data[:4])[0]
        name, _, value = data[4:].rstrip(b"\0").partition(b"\0")
        return "%s %d %s: %s" % (c, idx, esc(name), esc(value))
    if c == "y":
        return "y " + esc(data.rstrip(b"\0"))
    if c == "b":
        return "b %d %r" % (len(data), data)
    return c if not data else "%s %r" % (c, data)


class Probe:
    """One milter connection, MTA side."""

    def __init__(self, spec, timeout=10.0):
        self.sock = connect(spec, timeout)
        self.proto = 0
        self.actions = 0

    def close(self):
        self.sock.close()

    def send(self, cmd, data=b""):
        self.sock.sendall(struct.pack(">I", len(data) + 1) + cmd.encode() + data)

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ProbeClosed("milter closed the connection")
            buf += chunk
        return buf

    def read_packet(self):
        (n,) = struct.unpack(">I", self._read(4))
        if n == 0 or n > 1 << 24:
            raise ProbeClosed("bad packet length %d" % n)
        pkt = self._read(n)
        return pkt[0], pkt[1:]

    def negotiate(self, actions=ACTIONS_ALL, proto=PROTO_ALL, version=6):
        """Send 'O', return (version, actions, proto, {stage: macros}) of the milter's answer."""
        self.send("O", struct.pack(">III", version, actions, proto))
        code, data = self.read_packet()
        if code != ord("O") or len(data) < 12:
            raise ProbeClosed("negotiate answered %r" % show(code, data))
        ver, self.actions, self.proto = struct.unpack(">III", data[:12])
        symlists, rest = {}, data[12:]
        while len(rest) >= 5:
            stage = struct.unpack(">I", rest[:4])[0]
            names, _, rest = rest[4:].partition(b"\0")
            symlists[stage] = names.decode()
        return ver, self.actions, self.proto, symlists

    def skipped(self, cmd):
        return bool(self.proto & STEPS[cmd][0])

    def macros(self, cmd, pairs):
        """Send a 'D' packet for command cmd with [(name, value)...]."""
        if pairs:
            self.send("D", cmd.encode() + cstr(*[x for kv in pairs for x in kv]))

    def command(self, cmd, data=b""):
        """Send cmd unless negotiated away; return its reply packets (last one final) or None
        when it was skipped, [] when the milter negotiated no reply for it."""
        if cmd in STEPS and self.skipped(cmd):
            return None
        self.send(cmd, data)
        if cmd not in STEPS or self.proto & STEPS[cmd][1]:
            return []
        got = []
        while True:
            code, pdata = self.read_packet()
            got.append((code, pdata))
            if code not in NOT_FINAL:
                return got


def session(p, a, out):
    """Run one SMTP session's worth of commands from the options in a, printing replies."""
    macros = {}
    for m in a.macro:
        stage, _, kv = m.partition(":")
        name, _, value = kv.partition("=")
        macros.setdefault(MACRO_STAGES[stage], []).append((name, value))

    def step(cmd, data=b""):
        p.macros(cmd, macros.get(cmd))
        replies = p.command(cmd, data)
        for code, pdata in replies or []:
            out.write("%s %s\n" % (cmd, show(code, pdata)))
        if replies is None:
            out.write("%s skipped\n" % cmd)
        elif not replies:
            out.write("%s noreply\n" % cmd)
        return replies[-1][0] if replies else ord("c")

    family, _, rest = a.client.partition(":")
    if family == "U":
        cdata = cstr(a.client_name) + b"U"
    else:
        port, _, addr = rest.partition(":")
        cdata = cstr(a.client_name) + family.encode() + struct.pack(">H", int(port or 0)) + cstr(addr)
    if chr(step("C", cdata)) not in "c":
        return
    if a.helo and chr(step("H", cstr(a.helo))) not in "c":
        return
    for u in a.unknown:
        step("U", cstr(u))
    if not a.sender:
        return
    if chr(step("M", cstr(a.sender, *a.mail_arg))) not in "c":
        p.send("A")
        return
    ok = 0
    for r in a.rcpt:
        v = chr(step("R", cstr(*r.split(" "))))
        if v == "a":
            return                  # the milter is done with this message
        ok += v == "c"
    if not ok:
        p.send("A")
        return
    r = chr(step("T"))
    for h in a.header:
        if r != "c":
            break
        name, _, value = h.partition(":")
        r = chr(step("L", cstr(name, value if a.leadspc else value.lstrip(" "))))
    if r == "c":
        r = chr(step("N"))
    body = a.body.replace("\\n", "\r\n").encode()
    while r == "c" and body:
        r = chr(step("B", body[:a.chunk]))
        body = body[a.chunk:]
    if r in "cs":
        step("E")
    else:
        p.send("A")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--connect", required=True, help="inet:PORT@HOST | inet6:PORT@[::1] | unix:PATH")
    ap.add_argument("--actions", type=lambda s: int(s, 16), default=ACTIONS_ALL)
    ap.add_argument("--proto", type=lambda s: int(s, 16), default=PROTO_ALL)
    ap.add_argument("--version", type=int, default=6)
    ap.add_argument("--client", default="4:4711:192.0.2.1", help="FAMILY:PORT:ADDR, or U")
    ap.add_argument("--client-name", default="client.example")
    ap.add_argument("--helo")
    ap.add_argument("--unknown", action="append", default=[], help="an unknown SMTP command")
    ap.add_argument("--from", dest="sender")
    ap.add_argument("--mail-arg", action="append", default=[])
    ap.add_argument("--rcpt", action="append", default=[], help="'<addr> [ARG...]'")
    ap.add_argument("--header", action="append", default=[], help="'Name: value'")
    ap.add_argument("--leadspc", action="store_true", help="send header values with their leading space")
    ap.add_argument("--body", default="", help="text, \\n for CRLF")
    ap.add_argument("--chunk", type=int, default=65535)
    ap.add_argument("--macro", action="append", default=[], help="STAGE:name=value")
    ap.add_argument("--sessions", type=int, default=1, help="repeat the session, QUIT_NC between")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    p = Probe(a.connect, a.timeout)
    try:
        ver, act, proto, syms = p.negotiate(a.actions, a.proto, a.version)
        print("O version=%d actions=0x%x proto=0x%x%s" % (ver, act, proto, "".join(
            " symlist%d=%r" % (k, v) for k, v in sorted(syms.items()))))
        for i in range(a.sessions):
            if i:
                p.send("K")
            session(p, a, sys.stdout)
        p.send("Q")
    except (ProbeClosed, OSError) as e:
        print("closed: %s" % e)
        return 1
    finally:
        p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

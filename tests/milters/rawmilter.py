#!/usr/bin/python3
"""rawmilter.py - a hostile milter speaking the raw protocol (v6), for the bad-input tests of
portier's milter client.  No libmilter, no dependencies.

    rawmilter.py --port PORT --mode MODE [--log FILE]

Listens on 127.0.0.1:PORT (0: a free port) and prints the port on the first line of stdout,
flushed, once it accepts.  Serves each connection in a thread; SIGTERM exits with status 0.
It speaks just enough of the protocol to reach the point of misbehaviour: it negotiates
version 6, actions 0x1ff & offered, protocol 0 (every step, a reply to every step) and answers
CONTINUE ('c') to every command that expects a reply, unless the mode says otherwise:

  garbage        answer MAIL with 16 bytes that are no valid packet (length 5, command 'Z',
                 random junk); then answer nothing more
  close_mid      close the connection when the first BODY ('B') arrives
  bad_action     negotiate actions=0, yet at EOM send 'h' (add header) and then 'c'
  huge_len       answer MAIL with the length 0xFFFFFFF0 and a few bytes; keep the connection
                 open, answer nothing more
  stall_mail     never answer MAIL (keep reading, answer nothing)
  stall_eom      never answer EOM
  oldver2        negotiate version 2, actions 0x01 (ADDHDRS), protocol 0; at EOM add the header
                 "X-Old-Milter: v2", then 'c'
  oldver4        the same with version 4 ("X-Old-Milter: v4")
  neg_garbage    answer the negotiation with a truncated 'O' packet (6 data bytes)
  unknown_reply  answer HELO with the command byte 'Z'
  progress       at EOM send 'p' every second, 5 times, then 'c'
  multiline_y    at RCPT answer 'y' "550-5.7.1 first\\r\\n550-5.7.1 second\\r\\n550 5.7.1 third"
  bad_y          at RCPT answer 'y' "250 2.0.0 ok" (a 2xx code is no valid milter reply)

--log FILE gets one line per packet received: "cmd=X len=N", N being the packet's length field
(command byte + data), X the command byte (\\xNN when not printable).
"""
import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time

MODES = ("garbage", "close_mid", "bad_action", "huge_len", "stall_mail", "stall_eom", "oldver2",
         "oldver4", "neg_garbage", "unknown_reply", "progress", "multiline_y", "bad_y")
NO_REPLY = set(b"ADKQ")            # abort, macros, quit-new-connection, quit
MAX_PACKET = 1 << 24               # more than any MTA sends (body chunks <= 1 MB)


class Log:
    """The --log file: one line per packet, shared by the connection threads."""

    def __init__(self, path):
        self.fh = open(path, "a", buffering=1) if path else None
        self.lock = threading.Lock()

    def packet(self, cmd, length):
        if self.fh:
            c = chr(cmd) if 33 <= cmd < 127 else "\\x%02x" % cmd
            with self.lock:
                self.fh.write("cmd=%s len=%d\n" % (c, length))


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


class Session:
    """One MTA connection."""

    def __init__(self, sock, mode, log):
        self.sock = sock
        self.mode = mode
        self.log = log
        self.mute = False           # after garbage/huge_len: keep reading, answer nothing

    def send(self, data):
        self.sock.sendall(data)

    def negotiate(self, data):
        if self.mode == "neg_garbage":
            self.send(packet(b"O", struct.pack(">IH", 6, 0)))
            return
        offered = struct.unpack(">III", data[:12])[1] if len(data) >= 12 else 0
        version, actions = 6, 0x1ff & offered
        if self.mode == "bad_action":
            actions = 0
        elif self.mode in ("oldver2", "oldver4"):
            version, actions = int(self.mode[-1]), 0x01
        self.send(packet(b"O", struct.pack(">III", version, actions, 0)))

    def eom(self):
        if self.mode == "stall_eom":
            return
        if self.mode == "bad_action":
            self.send(packet(b"h", b"X-Bad-Action\0yes\0"))
        elif self.mode in ("oldver2", "oldver4"):
            self.send(packet(b"h", b"X-Old-Milter\0v%s\0" % self.mode[-1].encode()))
        elif self.mode == "progress":
            for _ in range(5):
                time.sleep(1)
                self.send(packet(b"p"))
        self.send(packet(b"c"))

    def answer(self, cmd, data):
        """React to one packet; False to close the connection."""
        c, m = chr(cmd), self.mode
        if c == "Q":
            return False
        if c == "O":
            self.negotiate(data)
        elif self.mute or cmd in NO_REPLY:
            pass
        elif c == "M" and m == "garbage":
            self.send(struct.pack(">I", 5) + b"Z" + os.urandom(11))
            self.mute = True
        elif c == "M" and m == "huge_len":
            self.send(struct.pack(">I", 0xFFFFFFF0) + b"cabc")
            self.mute = True
        elif c == "M" and m == "stall_mail":
            pass
        elif c == "B" and m == "close_mid":
            return False
        elif c == "H" and m == "unknown_reply":
            self.send(packet(b"Z"))
        elif c == "R" and m == "multiline_y":
            self.send(packet(b"y", b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\0"))
        elif c == "R" and m == "bad_y":
            self.send(packet(b"y", b"250 2.0.0 ok\0"))
        elif c == "E":
            self.eom()
        else:
            self.send(packet(b"c"))
        return True

    def run(self):
        try:
            while True:
                head = recv_exact(self.sock, 4)
                if head is None:
                    return
                (n,) = struct.unpack(">I", head)
                if n == 0 or n > MAX_PACKET:
                    return
                body = recv_exact(self.sock, n)
                if body is None:
                    return
                self.log.packet(body[0], n)
                if not self.answer(body[0], body[1:]):
                    return
        except OSError:
            pass
        finally:
            self.sock.close()


def main():
    ap = argparse.ArgumentParser(description="a hostile raw-protocol milter (see the source)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--log")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    log = Log(a.log)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(64)
    print(ls.getsockname()[1], flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=Session(conn, a.mode, log).run, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())

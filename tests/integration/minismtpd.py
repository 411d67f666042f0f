#!/usr/bin/python3
"""minismtpd.py - a tiny scripted SMTP/LMTP server for the integration tests.

Used where smtp-sink cannot do the job: per-recipient LMTP replies after DATA (smtp-sink can only
fail every recipient), and saving the exact bytes a client sent (smtp-sink drops CRs).
It is a test peer, not a mail server: no queue, no relaying, one thread per connection.

    minismtpd.py --port P --dir D [--lmtp] [--ext KEYWORD]... [--rcpt-reply REGEX=REPLY]...
                 [--data-reply REGEX=REPLY]... [--starttls-reply REPLY] [--data-idle SECONDS]
                 [--data-cmd-reply REPLY]

--rcpt-reply: a RCPT whose address matches REGEX (re.search) gets REPLY ("550 5.1.1 text").
--data-reply: after the final dot, an accepted recipient matching REGEX gets REPLY; LMTP sends
              one reply per accepted recipient, SMTP sends the first matching reply (else 250).
--starttls-reply: the reply to STARTTLS (offer it with --ext STARTTLS); there is no TLS here,
              so only a refusal makes sense (default "502 5.5.2 not implemented").
--data-idle:  while reading the data, no line for SECONDS ends the connection with
              "421 4.4.2 ... timeout exceeded" (as Postfix's smtpd does after its timeout).
--data-cmd-reply: the first DATA command of each connection gets REPLY instead of 354 (a
              backend that refuses DATA once, then takes it after RSET).
Each completed DATA is saved as D/NNNNNN-PID-SEQ.json (envelope, per-recipient results) and .eml
(the data exactly as received, dot-unstuffed, line ends untouched), written before the reply.
"""
import argparse
import json
import os
import re
import socket
import sys
import threading
import time

counter_lock = threading.Lock()
counter = [0]


def log(*a):
    sys.stderr.write("%.3f %s\n" % (time.time(), " ".join(str(x) for x in a)))
    sys.stderr.flush()


class Conn:
    def __init__(self, sock, opts):
        self.s = sock
        self.s.settimeout(120)
        self.opts = opts
        self.buf = b""
        self.reset()
        self.helo = None
        self.data_cmds = 0

    def reset(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []

    def send(self, line):
        log("S:", line)
        self.s.sendall(line.encode("utf-8") + b"\r\n")

    def readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_data(self):
        """Bytes up to CRLF.CRLF (the first line may be '.' too), dot-unstuffed; None at EOF or
        after --data-idle seconds without a line."""
        out = []
        if self.opts.data_idle:
            self.s.settimeout(self.opts.data_idle)
        while True:
            try:
                line = self.readline()
            except socket.timeout:
                self.send("421 4.4.2 minismtpd Error: timeout exceeded")
                return None
            finally:
                self.s.settimeout(120)
            if line is None:
                return None
            if line == b".":
                return b"".join(out)
            if line.startswith(b"."):
                line = line[1:]
            out.append(line + b"\r\n")

    def match(self, table, addr):
        for rx, reply in table:
            if re.search(rx, addr):
                return reply
        return None

    def save(self, data, results):
        with counter_lock:
            counter[0] += 1
            n = counter[0]
        base = os.path.join(self.opts.dir, "%06d-%d-%d" % (n, os.getpid(), int(time.time() * 1000)))
        meta = {"helo": self.helo, "mail_from": self.mail_from, "mail_params": self.mail_params,
                "rcpts": self.rcpts, "results": results, "lmtp": self.opts.lmtp}
        with open(base + ".eml.tmp", "wb") as f:
            f.write(data)
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        os.rename(base + ".json.tmp", base + ".json")

    def run(self):
        self.send("220 minismtpd ESMTP ready")
        while True:
            line = self.readline()
            if line is None:
                return
            text = line.decode("utf-8", "replace")
            log("C:", text)
            verb = text.split(" ", 1)[0].upper()
            arg = text[len(verb):].strip()
            if verb in ("EHLO", "LHLO", "HELO"):
                if (verb == "LHLO") != self.opts.lmtp:
                    self.send("500 5.5.1 wrong greeting for this protocol")
                    continue
                self.helo = arg
                self.reset()
                if verb == "HELO":
                    self.send("250 minismtpd")
                    continue
                exts = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"] + self.opts.ext
                lines = ["250-minismtpd"] + ["250-" + e for e in exts[:-1]] + ["250 " + exts[-1]]
                for l in lines:
                    self.send(l)
            elif verb == "MAIL":
                m = re.match(r"(?i)FROM:\s*<([^>]*)>\s*(.*)$", arg)
                if not m:
                    self.send("501 5.5.4 syntax")
                    continue
                self.reset()
                self.mail_from, self.mail_params = m.group(1), m.group(2)
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                m = re.match(r"(?i)TO:\s*<([^>]*)>", arg)
                if not m or self.mail_from is None:
                    self.send("503 5.5.1 need MAIL" if m else "501 5.5.4 syntax")
                    continue
                addr = m.group(1)
                reply = self.match(self.opts.rcpt_reply, addr)
                if reply:
                    self.send(reply)
                    continue
                self.rcpts.append(addr)
                self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if not self.rcpts:
                    self.send("503 5.5.1 need RCPT")
                    continue
                self.data_cmds += 1
                if self.opts.data_cmd_reply and self.data_cmds == 1:
                    self.send(self.opts.data_cmd_reply)
                    continue
                self.send("354 go ahead")
                data = self.read_data()
                if data is None:
                    log("EOF inside DATA, nothing saved")
                    return
                results = {}
                for r in self.rcpts:
                    results[r] = self.match(self.opts.data_reply, r) or \
                        ("250 2.0.0 <%s> Saved" % r if self.opts.lmtp else "250 2.0.0 Ok queued")
                ok = [v for v in results.values() if v.startswith("2")]
                if (self.opts.lmtp and ok) or len(ok) == len(results):
                    self.save(data, results)
                if self.opts.lmtp:
                    for r in self.rcpts:
                        self.send(results[r])
                else:
                    bad = [v for v in results.values() if not v.startswith("2")]
                    self.send(bad[0] if bad else "250 2.0.0 Ok queued")
                self.reset()
            elif verb == "RSET":
                self.reset()
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "STARTTLS":
                self.send(self.opts.starttls_reply)
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 not implemented")


def serve(sock, opts):
    try:
        Conn(sock, opts).run()
    except OSError as e:
        log("connection error:", e)
    finally:
        sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--lmtp", action="store_true")
    ap.add_argument("--ext", action="append", default=[])
    ap.add_argument("--rcpt-reply", action="append", default=[])
    ap.add_argument("--data-reply", action="append", default=[])
    ap.add_argument("--starttls-reply", default="502 5.5.2 not implemented")
    ap.add_argument("--data-idle", type=float, default=0)
    ap.add_argument("--data-cmd-reply", default=None)
    opts = ap.parse_args()
    opts.rcpt_reply = [tuple(x.split("=", 1)) for x in opts.rcpt_reply]
    opts.data_reply = [tuple(x.split("=", 1)) for x in opts.data_reply]
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", opts.port))
    ls.listen(64)
    log("listening on 127.0.0.1:%d lmtp=%s" % (opts.port, opts.lmtp))
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, opts), daemon=True).start()


if __name__ == "__main__":
    main()

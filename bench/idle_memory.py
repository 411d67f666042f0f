#!/usr/bin/python3
"""bench/idle_memory.py - portier's memory cost of idle sessions.

Starts portier (relay = maildir:, no mail is sent), measures its resident memory (VmRSS, summed
over portier and any child processes; threads share it), opens SESSIONS TCP sessions (10,000 by
default) that each read the 220 greeting and then stay idle, measures again, and prints the
baseline, the RSS with every session open, the cost per session and the verdict against the
target (<= 100 MB = 100,000,000 bytes of RSS with 10,000 idle sessions). Then closes every
session and stops portier by its PID.

RLIMIT_NOFILE is raised (soft = hard, as far as allowed: without CAP_SYS_RESOURCE the hard limit
stays) for this script and, inherited, for portier; it must cover SESSIONS + 1024.

Everything is bounded in time: portier must greet within 15 s, all sessions must be open and
greeted within --connect-timeout, portier must exit within 15 s of SIGTERM (else SIGKILL).
A refused or dropped session (RST, EOF, a 421 instead of 220) fails the run with the reason.

  /usr/bin/python3 bench/idle_memory.py [--sessions N] [--portier PATH] [--strict]
Environment: PORTIER (default smtpd/portier), SESSIONS, STRICT=1 (same as --strict).
Exit: 0 measured; 1 failure (portier missing, refused, died, ...); 2 over target with --strict.
"""
import argparse
import errno
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

TARGET_BYTES = 100 * 1000 * 1000      # 100 MB ...
TARGET_SESSIONS = 10000               # ... for 10,000 idle sessions
START_TIMEOUT = 15
STOP_TIMEOUT = 15


class BenchError(Exception):
    pass


def mb(n):
    return "%.1f MB" % (n / 1e6)


def descendants(pid):
    """pid and every process below it (threads are not processes: they share pid's memory)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss(pid):
    """(summed VmRSS in bytes, number of processes, threads of pid)"""
    total, procs = 0, 0
    for p in descendants(pid):
        try:
            total += benchlib.status_field(p, "VmRSS")
            procs += 1
        except (OSError, KeyError):
            pass
    return total, procs, benchlib.status_field(pid, "Threads")


def raise_nofile(want, need):
    """Raise RLIMIT_NOFILE (soft and hard) to want, or as far as allowed (without
    CAP_SYS_RESOURCE the hard limit cannot rise); portier inherits it. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in (want, hard):
        if lim == resource.RLIM_INFINITY:
            lim = want
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim, lim))
            soft = lim
            break
        except (ValueError, OSError):
            continue
    if soft < need:
        raise BenchError("RLIMIT_NOFILE is %d, %d are needed (hard limit %d, not raisable here); "
                         "use fewer --sessions or raise the hard limit" % (soft, need, hard))
    return soft


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(data[-lines:])


def open_idle_sessions(port, n, deadline, inflight_max, socks):
    """Open n sessions to 127.0.0.1:port, each reading its 220 greeting; append them to socks.
    At most inflight_max connects/greetings are pending at once (keeps the accept backlog sane).
    Raises BenchError at the first refused/dropped session or at the deadline."""
    ep = select.epoll()
    pending = {}          # fd -> [socket, state, buffer]; state "connect" | "greet"
    started = 0
    try:
        while len(socks) < n:
            while started < n and len(pending) < inflight_max:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    rc = s.connect_ex(("127.0.0.1", port))
                except OSError as e:
                    s.close()
                    raise BenchError("session %d: connect: %s" % (started + 1, e))
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    raise BenchError("session %d: connect: %s" % (started + 1, os.strerror(rc)))
                started += 1
                if rc == 0:
                    pending[s.fileno()] = [s, "greet", b""]
                    ep.register(s.fileno(), select.EPOLLIN)
                else:
                    pending[s.fileno()] = [s, "connect", b""]
                    ep.register(s.fileno(), select.EPOLLOUT)
            left = deadline - time.monotonic()
            if left <= 0:
                greeting = sum(1 for v in pending.values() if v[1] == "greet")
                raise BenchError("deadline: %d of %d sessions greeted; %d still connecting, %d "
                                 "connected but not greeted" % (len(socks), n,
                                                                len(pending) - greeting, greeting))
            for fd, ev in ep.poll(min(left, 1.0)):
                s, state, buf = pending[fd]
                if state == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise BenchError("session %d: connect: %s (portier refuses connections?)"
                                         % (len(socks) + 1, os.strerror(err)))
                    pending[fd][1] = "greet"
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    chunk = s.recv(4096)
                except OSError as e:
                    raise BenchError("session %d: reading the greeting: %s (after %d sessions "
                                     "were open)" % (len(socks) + 1, e, len(socks)))
                if not chunk:
                    raise BenchError("session %d: closed before the greeting (got %r; after %d "
                                     "sessions were open)" % (len(socks) + 1, buf[:200], len(socks)))
                buf += chunk
                pending[fd][2] = buf
                done = None
                for line in buf.split(b"\r\n")[:-1]:
                    if len(line) < 4 or line[3:4] != b"-":
                        done = line
                        break
                if done is None:
                    if len(buf) > 4096:
                        raise BenchError("greeting longer than 4096 bytes: %r" % buf[:200])
                    continue
                if not done.startswith(b"220"):
                    raise BenchError("session %d refused: %r (after %d sessions were open)"
                                     % (len(socks) + 1, done.decode("latin-1"), len(socks)))
                ep.unregister(fd)
                del pending[fd]
                socks.append(s)
    finally:
        for s, _, _ in pending.values():
            s.close()
        ep.close()


def still_idle(socks):
    """Number of sessions on which portier has sent something or closed (should be 0)."""
    ep = select.epoll(sizehint=len(socks))
    try:
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        return len(ep.poll(0, maxevents=len(socks) or 1))
    finally:
        ep.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=int(os.environ.get("SESSIONS", TARGET_SESSIONS)))
    ap.add_argument("--portier", default=os.environ.get(
        "PORTIER", os.path.join(os.path.dirname(HERE), "smtpd", "portier")))
    ap.add_argument("--connect-timeout", type=float, default=120.0,
                    help="seconds for all sessions to be open and greeted (default 120)")
    ap.add_argument("--inflight", type=int, default=256,
                    help="connects/greetings pending at once (default 256)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait before each RSS reading (default 2)")
    ap.add_argument("--strict", action="store_true", default=os.environ.get("STRICT") == "1",
                    help="exit 2 when over target")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.sessions <= 0 or args.inflight <= 0:
        ap.error("--sessions and --inflight must be > 0")

    if not (os.path.isfile(args.portier) and os.access(args.portier, os.X_OK)):
        raise BenchError("%s does not exist or is not executable (build it: ./autogen.sh && "
                         "./configure && make; or set PORTIER=/path/to/portier)" % args.portier)

    # For this script and, inherited, for portier (each needs one descriptor per session).
    nofile = raise_nofile(max(65536, 2 * args.sessions + 1024), args.sessions + 1024)

    is_root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="portier-idle.")
    os.chmod(tmp, 0o755)
    proc = None
    socks = []
    failed = True
    try:
        maildir = os.path.join(tmp, "mail")
        os.mkdir(maildir)
        if is_root:
            nobody = pwd.getpwnam("nobody")
            os.chown(maildir, nobody.pw_uid, nobody.pw_gid)
        port = benchlib.free_ports(1)[0]
        conf = os.path.join(tmp, "portier.conf")
        with open(conf, "w") as f:
            f.write("; written by bench/idle_memory.py\n"
                    "[server]\n"
                    "hostname = bench.test\n"
                    + ("user = nobody\n" if is_root else "") +
                    "workers = 0\n"
                    "log = stderr\n"
                    "local_domains = example.test\n"
                    "max_sessions = %d\n"
                    "\n"
                    "[listener bench]\n"
                    "listen = 127.0.0.1:%d\n"
                    "role = mx\n"
                    "tls = none\n"
                    "\n"
                    "[backend]\n"
                    "relay = maildir:%s\n" % (max(20000, 2 * args.sessions), port, maildir))
        os.chmod(conf, 0o644)
        log = os.path.join(tmp, "portier.log")

        with open(log, "wb") as logf:
            proc = subprocess.Popen([args.portier, "-c", conf], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT)
        why = benchlib.wait_smtp(port, START_TIMEOUT, proc.pid)
        if why:
            raise BenchError("portier (%s -c %s) did not start: %s\n---- portier's log ----\n%s"
                             % (args.portier, conf, why, tail(log)))

        print("portier idle-session memory benchmark: %d cores; %d sessions; portier %s (pid %d, "
              "RLIMIT_NOFILE %d)" % (os.cpu_count(), args.sessions, args.portier, proc.pid, nofile))
        time.sleep(args.settle)
        base, procs, threads = rss(proc.pid)

        t0 = time.monotonic()
        try:
            open_idle_sessions(port, args.sessions, t0 + args.connect_timeout, args.inflight, socks)
        except BenchError as e:
            if proc.poll() is not None:
                raise BenchError("%s; portier exited with status %s\n---- portier's log ----\n%s"
                                 % (e, proc.returncode, tail(log)))
            raise BenchError("%s\n---- portier's log ----\n%s" % (e, tail(log)))
        opened = time.monotonic() - t0
        time.sleep(args.settle)
        if proc.poll() is not None:
            raise BenchError("portier exited (status %s) with the sessions open\n---- portier's "
                             "log ----\n%s" % (proc.returncode, tail(log)))
        dropped = still_idle(socks)
        if dropped:
            raise BenchError("%d of %d idle sessions were closed or spoken to by portier before "
                             "the measurement" % (dropped, len(socks)))
        loaded, procs2, threads2 = rss(proc.pid)
        hwm = benchlib.status_field(proc.pid, "VmHWM")

        n = len(socks)
        per = (loaded - base) / n
        # Scale to the target's 10,000 sessions when a different count was measured.
        at_target = loaded if n == TARGET_SESSIONS else base + per * TARGET_SESSIONS
        ok = at_target <= TARGET_BYTES
        def what(p, t):
            return "%d process%s, %d thread%s" % (p, "" if p == 1 else "es", t, "" if t == 1 else "s")
        print("%-26s %d in %.2f s" % ("sessions open and greeted:", n, opened))
        print("%-26s %s (%s)" % ("baseline RSS:", mb(base), what(procs, threads)))
        print("%-26s %s (%s; VmHWM %s)" % ("RSS with %d idle:" % n, mb(loaded),
                                          what(procs2, threads2), mb(hwm)))
        print("%-26s %.0f bytes" % ("per idle session:", per))
        print("target: <= %s RSS with %d idle sessions: %s%s%s"
              % (mb(TARGET_BYTES), TARGET_SESSIONS, mb(at_target),
                 "" if n == TARGET_SESSIONS else " (extrapolated from %d)" % n,
                 " ok" if ok else " OVER TARGET"))
        failed = False
        return 0 if ok or not args.strict else 2
    finally:
        for s in socks:
            s.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=STOP_TIMEOUT)
                if rc != 0:
                    print("idle_memory.py: warning: portier exited with status %d after SIGTERM "
                          "(expected 0)" % rc, file=sys.stderr)
            except subprocess.TimeoutExpired:
                print("idle_memory.py: portier ignored SIGTERM for %d s, sending SIGKILL"
                      % STOP_TIMEOUT, file=sys.stderr)
                proc.kill()
                proc.wait()
        if args.keep_tmp or failed:
            print("idle_memory.py: work directory (config, log) kept: %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except BenchError as e:
        print("idle_memory.py: ERROR: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

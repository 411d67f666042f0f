#!/usr/bin/python3
"""bench/benchlib.py - small helpers shared by the benchmarks (free ports, waiting for an SMTP
greeting, timing a command on the monotonic clock, reading /proc/PID/status).

Used as a module by idle_memory.py and as a command by throughput.sh:
  benchlib.py ports N                       print N distinct free 127.0.0.1 TCP ports
  benchlib.py wait-smtp PORT SECS [PID]     wait until 127.0.0.1:PORT sends a 220 greeting;
                                            exit 1 (with the reason on stderr) if it does not
                                            within SECS, or if PID exits meanwhile
  benchlib.py timed SECS OUTFILE CMD...     run CMD in its own process group, write
                                            "ELAPSED_SECONDS EXIT_STATUS" to OUTFILE; exit status
                                            124 and the group killed if CMD outlives SECS
  benchlib.py status PID FIELD              print FIELD (e.g. VmHWM) of /proc/PID/status in bytes

Never leaves a process behind; never touches anything but what it is given.
"""
import os
import select
import signal
import socket
import subprocess
import sys
import time


def free_ports(n):
    """n distinct free ports: all sockets are held open together, so no port repeats."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_greeting(sock, deadline):
    """Read a (possibly multi-line) SMTP greeting; return its last line, or raise."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete greeting line (got %r)" % buf[:200])
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before a greeting (got %r)" % buf[:200])
        buf += chunk
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) < 4 or line[3:4] != b"-":
                return line.decode("latin-1")


def wait_smtp(port, secs, pid=None, host="127.0.0.1"):
    """Wait until host:port answers with a 220 greeting. Returns None, or a reason string."""
    deadline = time.monotonic() + secs
    last = "nothing tried"
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            return "process %d exited before greeting on %s:%d" % (pid, host, port)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(max(0.05, min(2.0, deadline - time.monotonic())))
            s.connect((host, port))
            line = read_greeting(s, min(deadline, time.monotonic() + 5))
            if line.startswith("220"):
                try:
                    s.sendall(b"QUIT\r\n")
                except OSError:
                    pass
                return None
            return "greeting on %s:%d is not 220: %r" % (host, port, line)
        except (OSError, TimeoutError, ConnectionError) as e:
            last = "%s: %s" % (type(e).__name__, e)
        finally:
            s.close()
        time.sleep(0.05)
    return "no 220 greeting on %s:%d within %g s (last: %s)" % (host, port, secs, last)


def status_field(pid, field):
    """A /proc/PID/status field in bytes (VmRSS, VmHWM, ...) or a plain number (Threads)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == field:
                parts = value.split()
                n = int(parts[0])
                if len(parts) > 1 and parts[1] == "kB":
                    n *= 1024
                return n
    raise KeyError("%s not in /proc/%d/status" % (field, pid))


def timed(secs, outfile, cmd):
    """Run cmd with a deadline, timing it on the monotonic clock.  The exit is seen through a
    pidfd the moment it happens: Popen.wait(timeout) polls with sleeps of up to 50 ms, which
    would add up to 50 ms (2-4 % of a 10,000-message run) to every measurement."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, start_new_session=True)
    try:
        pidfd = os.pidfd_open(p.pid)
        try:
            ready, _, _ = select.select([pidfd], [], [], secs)
        finally:
            os.close(pidfd)
        if not ready:
            raise subprocess.TimeoutExpired(cmd, secs)
        rc = p.wait()
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = 124
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    elapsed = time.monotonic() - t0
    with open(outfile, "w") as f:
        f.write("%.6f %d\n" % (elapsed, rc))
    return rc


def main(argv):
    # Turn SIGTERM (e.g. from the calling script's cleanup) into an exception so that
    # timed() kills the process group it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) >= 2 and argv[0] == "ports":
        print(" ".join(str(p) for p in free_ports(int(argv[1]))))
        return 0
    if len(argv) in (3, 4) and argv[0] == "wait-smtp":
        why = wait_smtp(int(argv[1]), float(argv[2]), int(argv[3]) if len(argv) == 4 else None)
        if why:
            print(why, file=sys.stderr)
            return 1
        return 0
    if len(argv) >= 4 and argv[0] == "timed":
        timed(float(argv[1]), argv[2], argv[3:])
        return 0
    if len(argv) == 3 and argv[0] == "status":
        print(status_field(int(argv[1]), argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

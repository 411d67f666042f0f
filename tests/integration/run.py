#!/usr/bin/python3
"""run.py - entry point of `make check-integration`.

Runs the integration suite (this directory) with the system pytest, names
each failed test last ("integration: FAILED <node id> <phase>"), and exits
with pytest's status.  Extra arguments are passed through, e.g.
    PORTIER=... SRCDIR=... python3 run.py -k smuggling -x
Environment: PORTIER (absolute path of smtpd/portier), SRCDIR (source tree).
"""
import os
import subprocess
import sys
import tempfile


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if "PORTIER" not in os.environ and "SRCDIR" in os.environ:
        os.environ["PORTIER"] = os.path.join(os.environ["SRCDIR"], "smtpd", "portier")
    argv = ["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--rootdir", here, here] + sys.argv[1:]
    # No __pycache__ in the source tree (it is read-only under distcheck and part of EXTRA_DIST).
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    # The failed tests' names, one per line (conftest.py writes them), printed last.
    fd, failed = tempfile.mkstemp(prefix="portier-failed.")
    os.close(fd)
    os.environ["PORTIER_FAILED_LIST"] = failed
    sys.stdout.flush()
    try:
        rc = subprocess.call(argv)
        with open(failed) as f:
            names = f.read().split("\n")
    finally:
        os.unlink(failed)
    for name in filter(None, names):
        print("integration: FAILED %s" % name)
    sys.exit(rc)


if __name__ == "__main__":
    main()

"""portier's SPF results cross-checked against pyspf (python3-spf) on the RFC 7208 suite.

tests/unit/check_spf runs the suite (tests/suites/spf/rfc7208-tests.yml) through spf_check(),
each scenario's zone served by a private unbound, and with SPF_SUITE_RESULTS set writes one
line per test: "SCENARIO<TAB>TEST<TAB>RESULT".  Here pyspf evaluates the same tests, its DNS
answered from the scenario's zonedata (spf.DNSLookup replaced, as pyspf's own test driver
testspf.py does; the suite's conventions as in tests/unit/spf_suite.py: an SPF record is a TXT
record too unless the name has TXT of its own, "TXT: NONE" is no TXT, a list is one record of
several strings, TIMEOUT makes every query of that name for a type it has no data of a
TempError; and, like the DNS portier asks, identical records of a name are one (RFC 2181 §5:
an RRset holds no duplicates)), and the two are compared:
  - where pyspf gives one of the suite's acceptable results, portier must give the same;
  - where pyspf is off the suite, the test is printed and portier must be on the suite;
  - ORDER_DEPENDENT tests, whose result depends on the order the DNS returns PTR records in
    (unbound rotates them), are printed and portier must be on the suite.
check_spf is found next to $PORTIER's build (<builddir>/tests/unit/check_spf); the test is
skipped when it is not built.
"""
import os
import subprocess

import pytest

import peers

spf = pytest.importorskip("spf", reason="pyspf (python3-spf) is not installed")
yaml = pytest.importorskip("yaml", reason="python3-yaml is not installed")

HERE = os.path.dirname(os.path.abspath(__file__))
OLD_NAMES = {"unknown": "permerror", "error": "temperror"}
# (scenario, test): the result depends on the order unbound returns the PTR records in (it
# rotates them: rrset-roundrobin), and the suite accepts either result
ORDER_DEPENDENT = {
    # the suite's comment: the 10 PTR names checked are the first 10 returned
    ("Processing limits", "ptr-limit"): "first 10 PTR names",
    # %{p} is the first validated name: libspf2 does not prefer a subdomain of <domain> (the
    # §7.3 SHOULD pyspf follows), so portier gives pass or softfail by the order
    ("Macro expansion rules", "p-macro-multiple"): "first validated PTR name",
}


def srcdir():
    return os.environ.get("SRCDIR") or os.path.dirname(os.path.dirname(HERE))


def check_spf_binary():
    portier = peers.portier_binary()
    if not portier:
        return None
    return os.path.join(os.path.dirname(os.path.dirname(portier)), "tests", "unit", "check_spf")


def zone(zonedata):
    """name (lower case, no trailing dot) -> ([(type, value)], timeout)"""
    out = {}
    for name, recs in (zonedata or {}).items():
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in recs)
        rrs, timeout = [], False
        for r in recs:
            if r == "TIMEOUT":
                timeout = True
                continue
            for typ, v in r.items():
                if typ in ("TXT", "SPF"):
                    if v == "NONE":
                        continue
                    parts = tuple(p.encode("latin-1") for p in (v if isinstance(v, list) else [v]))
                    rrs.append((typ, parts))
                    if typ == "SPF" and not has_txt:
                        rrs.append(("TXT", parts))
                elif typ == "MX":
                    rrs.append((typ, (v[0], v[1])))
                else:
                    rrs.append((typ, v))
        rrs = list(dict.fromkeys(rrs))
        out[name.lower().rstrip(".")] = (rrs, timeout)
    return out


def make_lookup(z):
    """a spf.DNSLookup answering from zone z"""
    def lookup(name, qtype, strict=True, timeout=None, level=0):
        labels = [l for l in name.split(".") if l]
        if any(len(l) > 63 for l in labels):
            raise spf.TempError("DNS label too long")
        key = ".".join(labels).lower()
        if key not in z:
            return []
        rrs, timeout_ = z[key]
        ans = []
        for typ, v in rrs:
            if typ == qtype:
                ans.append(((key, typ), v))
            elif typ == "CNAME":
                ans.append(((key, typ), v))
                if level == 0:
                    ans.extend(lookup(v, qtype, strict, timeout, 1))
        if timeout_ and not ans:
            raise spf.TempError("DNS timeout")
        return ans
    return lookup


def pyspf_results(path):
    """(scenario, test) -> (pyspf's result, the suite's acceptable results)"""
    out = {}
    saved = spf.DNSLookup
    try:
        with open(path, "rb") as f:
            for d in yaml.safe_load_all(f):
                if not d:
                    continue
                spf.DNSLookup = make_lookup(zone(d.get("zonedata")))
                for name, t in d["tests"].items():
                    want = t["result"] if isinstance(t["result"], list) else [t["result"]]
                    q = spf.query(i=t["host"], s=t.get("mailfrom", ""), h=t.get("helo", ""),
                                  strict=True)
                    res = q.check()[0]
                    out[(d.get("description", ""), name)] = (OLD_NAMES.get(res, res), want)
    finally:
        spf.DNSLookup = saved
    return out


def portier_results(binary, tmp):
    """(scenario, test) -> portier's result, from check_spf's SPF_SUITE_RESULTS file"""
    path = os.path.join(tmp, "results")
    env = dict(os.environ, srcdir=srcdir(), SPF_SUITE_RESULTS=path,
               CK_RUN_SUITE="spf", CK_RUN_CASE="rfc7208")
    p = subprocess.run([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, "check_spf failed (rc %d):\n%s" % (p.returncode, out)
    assert "Checks: 1," in out, "check_spf ran something else than the one suite test:\n" + out
    res = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            scenario, name, word = line.rstrip("\n").split("\t")
            assert (scenario, name) not in res, "twice in the results: %s / %s" % (scenario, name)
            res[(scenario, name)] = word
    return res


def test_spf_results_match_pyspf(tmpdir_0755):
    binary = check_spf_binary()
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("no unit test binary at %r (make tests/unit/check_spf in the build of "
                    "$PORTIER)" % binary)
    suite = os.path.join(srcdir(), "tests", "suites", "spf", "rfc7208-tests.yml")
    assert os.path.exists(suite), "no RFC 7208 suite at %s" % suite
    ours = portier_results(binary, tmpdir_0755)
    theirs = pyspf_results(suite)
    assert len(theirs) == 203
    assert set(ours) == set(theirs), "tests only portier ran: %s; only pyspf: %s" % (
        sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours)))
    same, off_suite, ordered, wrong = 0, [], [], []
    for key in sorted(theirs):
        py, want = theirs[key]
        got = ours[key]
        if key in ORDER_DEPENDENT:
            ordered.append("%s / %s: pyspf %s, suite %s, portier %s (%s)" % (
                key[0], key[1], py, ",".join(want), got, ORDER_DEPENDENT[key]))
            if got not in want:
                wrong.append("%s / %s: portier %s, off the suite (%s)" % (
                    key[0], key[1], got, ",".join(want)))
        elif py in want:
            if got == py:
                same += 1
            else:
                wrong.append("%s / %s: portier %s, pyspf %s (suite: %s)" % (
                    key[0], key[1], got, py, ",".join(want)))
        else:
            off_suite.append("%s / %s: pyspf %s, suite %s, portier %s" % (
                key[0], key[1], py, ",".join(want), got))
            if got not in want:
                wrong.append("%s / %s: portier %s and pyspf %s both off the suite (%s)" % (
                    key[0], key[1], got, py, ",".join(want)))
    if off_suite:
        print("pyspf off the suite on:\n  " + "\n  ".join(off_suite))
    print("record order decides (not compared):\n  " + "\n  ".join(ordered))
    print("pyspf cross-check: %d tests, portier == pyspf on %d, pyspf off-suite on %d "
          "(portier on-suite), order-dependent %d (portier on-suite)" % (
              len(theirs), same, len(off_suite), len(ordered)))
    assert not wrong, "portier differs:\n  " + "\n  ".join(wrong)
    assert len(ordered) == len(ORDER_DEPENDENT), "ORDER_DEPENDENT names tests the suite lacks"
    assert same + len(off_suite) + len(ordered) == len(theirs)

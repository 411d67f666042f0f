#!/usr/bin/python3
"""spf_suite.py - the openspf YAML suite (rfc7208-tests.yml) as lines check_spf reads.

Usage: spf_suite.py SUITE.yml > lines

Output, one item per line, fields separated by TAB, every field escaped so
that it holds no TAB, newline or backslash of its own: a byte outside
0x21..0x7e (and the space, kept as is) or a backslash is written \\xHH.

  scenario  DESCRIPTION
  data      an unbound "server:" line (local-zone: / local-data:)
  servfail  NAME            every query of a type without local-data: SERVFAIL
  test      NAME HELO HOST MAILFROM RESULTS EXPLANATION
            RESULTS: the acceptable results, comma-separated;
            EXPLANATION: expected exp text, "" when the test names none
  end                       (after each scenario's tests)

The reference driver's conventions (suites/README.md): a record of type SPF
is served as TXT too unless the name has TXT records of its own, "TXT: NONE"
means no TXT record at all, a list is one record of several strings, and
TIMEOUT makes every other query of that name fail (here: SERVFAIL, which the
SPF code must take as temperror just like a timeout).  Strings are bytes:
the YAML holds them as Latin-1 characters (the suite's "ï»¿" is the UTF-8 BOM).
"""
import sys

import yaml


def esc(s):
    if isinstance(s, str):
        s = s.encode('latin-1')
    out = []
    for b in s:
        if b == 0x5c or b < 0x20 or b > 0x7e or b == 0x09:
            out.append('\\x%02x' % b)
        else:
            out.append(chr(b))
    return ''.join(out)


def zone_str(s):
    """one character-string for unbound's local-data: \\DDD for what is not plain"""
    if isinstance(s, str):
        s = s.encode('latin-1')
    out = []
    for b in s:
        if b < 0x20 or b > 0x7e or b in (0x22, 0x27, 0x5c, 0x3b):
            out.append('\\%03d' % b)
        else:
            out.append(chr(b))
    return '"' + ''.join(out) + '"'


def txt_rdata(v):
    """a TXT record's rdata: a list is several strings; a long string is cut at 255"""
    parts = v if isinstance(v, list) else [v]
    strs = []
    for p in parts:
        b = p.encode('latin-1')
        if not b:
            strs.append(b'')
        while b:
            strs.append(b[:255])
            b = b[255:]
    if not strs:
        strs = [b'']
    return ' '.join(zone_str(x) for x in strs)


def fqdn(name):
    """a name in zone-file form: absolute, what is not a plain label octet as \\DDD"""
    name = name if name.endswith('.') else name + '.'
    out = []
    for b in name.encode('latin-1'):
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in '.-_*'):
            out.append(c)
        else:
            out.append('\\%03d' % b)
    return ''.join(out)


def zone_lines(zonedata):
    lines, servfail = [], []
    for name, recs in (zonedata or {}).items():
        has_txt = any(isinstance(r, dict) and 'TXT' in r for r in recs)
        n = fqdn(name)
        for r in recs:
            if r == 'TIMEOUT':
                servfail.append(n)
                continue
            for typ, v in r.items():
                if typ == 'TXT' and v == 'NONE':
                    continue
                if typ in ('SPF', 'TXT'):
                    if typ == 'SPF' and has_txt:
                        continue
                    lines.append("local-data: '%s 300 IN TXT %s'" % (n, txt_rdata(v)))
                elif typ == 'MX':
                    lines.append("local-data: '%s 300 IN MX %d %s'" % (n, v[0], fqdn(v[1])))
                elif typ in ('PTR', 'CNAME'):
                    lines.append("local-data: '%s 300 IN %s %s'" % (n, typ, fqdn(v)))
                elif typ in ('A', 'AAAA'):
                    lines.append("local-data: '%s 300 IN %s %s'" % (n, typ, v))
                else:
                    raise SystemExit('spf_suite.py: unknown record type %s' % typ)
    # TIMEOUT is for that one name: its subdomains with data get zones of their own
    for name in zonedata or {}:
        n = fqdn(name)
        if any(n != t and n.lower().endswith('.' + t.lower()) for t in servfail):
            lines.append('local-zone: "%s" static' % n)
    return lines, servfail


def main():
    with open(sys.argv[1], 'rb') as f:
        docs = list(yaml.safe_load_all(f))
    w = sys.stdout.write
    for d in docs:
        if not d:
            continue
        w('scenario\t%s\n' % esc(d.get('description', '')))
        lines, servfail = zone_lines(d.get('zonedata'))
        for line in lines:
            w('data\t%s\n' % esc(line))
        for n in servfail:
            w('servfail\t%s\n' % esc(n))
        for name, t in d['tests'].items():
            res = t['result']
            res = res if isinstance(res, list) else [res]
            w('test\t%s\t%s\t%s\t%s\t%s\t%s\n' % (esc(name), esc(t.get('helo', '')),
              esc(t['host']), esc(t.get('mailfrom', '')), ','.join(res),
              esc(t.get('explanation', ''))))
        w('end\n')


if __name__ == '__main__':
    main()

#!/bin/sh
# run.sh - run every built libFuzzer target for a while on a copy of its seed corpus.
#
# Usage: tests/fuzz/run.sh BUILDDIR   (FUZZ_SECONDS, default 30, per fuzzer)
# For each BUILDDIR/tests/fuzz/fuzz_* binary, copies tests/fuzz/corpus/<name>/
# from this script's own directory into a scratch directory and fuzzes there,
# so the seeds in the source tree are never modified.  Crash inputs are kept as
# BUILDDIR/tests/fuzz/<name>-crash-* (and leak-/timeout-/oom-).  Exits non-zero
# if any fuzzer fails.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILDDIR" >&2
	exit 2
fi
builddir=$1
srcdir=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/portier-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

failed=""
ran=0
for bin in "$builddir"/tests/fuzz/fuzz_*; do
	if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
		continue
	fi
	name=$(basename "$bin")
	case "$name" in
	*.*) continue ;;	# objects, sources, logs
	esac
	corpus="$work/$name"
	mkdir -p "$corpus"
	if [ -d "$srcdir/corpus/$name" ]; then
		cp "$srcdir/corpus/$name"/* "$corpus"/ 2>/dev/null || true
	fi
	echo "fuzz: $name for ${seconds}s ($(find "$corpus" -type f | wc -l) seeds)"
	if "$bin" -max_total_time="$seconds" -print_final_stats=1 \
	    -artifact_prefix="$builddir/tests/fuzz/$name-" "$corpus" \
	    >"$work/$name.log" 2>&1; then
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' \
		    "$work/$name.log" || true
	else
		echo "fuzz: $name FAILED; log follows" >&2
		tail -n 60 "$work/$name.log" >&2
		failed="$failed $name"
	fi
	ran=$((ran + 1))
done

if [ "$ran" -eq 0 ]; then
	echo "fuzz: no fuzzers in $builddir/tests/fuzz (configure --enable-fuzzers CC=clang)"
	exit 0
fi
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed" >&2
	exit 1
fi
echo "fuzz: $ran fuzzer(s) passed"

#!/usr/bin/env bash
# test-all.sh - install what the build and the tests need, build with
# ASan+UBSan, run every test: unit (Check), integration (real peers on
# loopback), a short bounded fuzz run, then make distcheck.
# This is the README's second command and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

echo "== installing dependencies"
sh scripts/install-deps.sh test

echo "== building with sanitizers"
if [ -f config.status ]; then
	# The builds below are out of tree; an in-tree configure would make them fail.
	echo "(removing the in-tree build: make distclean)"
	make distclean >/dev/null 2>&1 || true
fi
./autogen.sh >/dev/null 2>&1
rm -rf build-san && mkdir build-san && cd build-san
../configure --enable-sanitizers --enable-werror >/dev/null
make -j"$jobs" >/dev/null
export ASAN_OPTIONS=abort_on_error=0:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# unit_ran_all - every program of UNIT_TESTS passed and ran checks: none skipped, none empty
unit_ran_all() {
	want=$(sed -n '/^UNIT_TESTS = /,/^$/p' "$top/Makefile.am" | grep -c 'tests/unit/check_')
	for k in TOTAL PASS SKIP XFAIL FAIL XPASS ERROR; do
		got=$(sed -n "s/^# $k: *//p" test-suite.log)
		case $k in TOTAL|PASS) exp=$want ;; *) exp=0 ;; esac
		if [ "$got" != "$exp" ]; then
			echo "unit tests: $k ${got:-missing}, want $exp ($want programs in UNIT_TESTS)"
			exit 1
		fi
	done
	for log in tests/unit/check_*.log; do
		if ! grep -Eq '^100%: Checks: [1-9][0-9]*, Failures: 0, Errors: 0$' "$log"; then
			echo "unit tests: $log ran no checks"; cat "$log"; exit 1
		fi
	done
	echo "unit tests: $want programs, $(awk '/^100%: Checks:/ { n += $3 } END { print n }' \
	    tests/unit/check_*.log) checks"
}

echo "== unit tests"
make -j"$jobs" check || { cat tests/unit/*.log; exit 1; }
unit_ran_all

echo "== integration tests"
# pytest -q ends with "N passed[, M skipped] in ...": fewer than the suite has is a failure
min_integration=280
make check-integration 2>&1 | tee integration.log
passed=$(tail -n 1 integration.log | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)
if [ "$passed" -lt "$min_integration" ]; then
	echo "integration tests: $passed passed, want at least $min_integration"
	exit 1
fi

echo "== fuzzers (bounded run)"
cd "$top"
rm -rf build-fuzz && mkdir build-fuzz && cd build-fuzz
../configure CC=clang --enable-fuzzers \
	CFLAGS="-g -O1 -fsanitize=fuzzer-no-link,address,undefined" >/dev/null
make -j"$jobs" tests/fuzz/fuzz_smtp_parse tests/fuzz/fuzz_data_reader \
	tests/fuzz/fuzz_from tests/fuzz/fuzz_sasl tests/fuzz/fuzz_headers \
	tests/fuzz/fuzz_dmarc_from tests/fuzz/fuzz_spf_record \
	tests/fuzz/fuzz_milter_reply tests/fuzz/fuzz_dnsbl_sites tests/fuzz/fuzz_proxy \
	tests/fuzz/fuzz_policyd_reply >/dev/null
FUZZ_SECONDS=${FUZZ_SECONDS:-15} make fuzz-run

echo "== distcheck"
cd "$top"
rm -rf build-dist && mkdir build-dist && cd build-dist
../configure >/dev/null
make -j"$jobs" distcheck >/dev/null
echo "== all tests passed"

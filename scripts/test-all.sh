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

echo "== unit tests"
make -j"$jobs" check || { cat tests/unit/*.log; exit 1; }

echo "== integration tests"
make check-integration

echo "== fuzzers (bounded run)"
cd "$top"
rm -rf build-fuzz && mkdir build-fuzz && cd build-fuzz
../configure CC=clang --enable-fuzzers \
	CFLAGS="-g -O1 -fsanitize=fuzzer-no-link,address,undefined" >/dev/null
make -j"$jobs" tests/fuzz/fuzz_smtp_parse tests/fuzz/fuzz_data_reader \
	tests/fuzz/fuzz_from tests/fuzz/fuzz_sasl tests/fuzz/fuzz_headers >/dev/null
FUZZ_SECONDS=${FUZZ_SECONDS:-15} make fuzz-run

echo "== distcheck"
cd "$top"
rm -rf build-dist && mkdir build-dist && cd build-dist
../configure >/dev/null
make -j"$jobs" distcheck >/dev/null
echo "== all tests passed"

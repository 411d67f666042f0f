/*
 * fuzz.h - what the libFuzzer targets share: the entry point's prototype and
 * FUZZ_CHECK, an assertion that holds with NDEBUG too (a violated property
 * aborts, for libFuzzer to report with its input).
 */
#ifndef PORTIER_FUZZ_H
#define PORTIER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK - abort with the failed condition; independent of NDEBUG */
#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,	\
		    __LINE__, #cond);					\
		abort();						\
	}								\
} while (0)

#endif
